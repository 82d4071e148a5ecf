"""Real servers for the tests of the scale-out mode, started once per test session through
``scripts/infra.sh`` (as a user would) on free ports, and stopped at its end."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "infra.sh"

_lock = threading.Lock()
_postgres: tuple[Path, str] | None = None


def postgres_url() -> str:
    """The URL of this session's PostgreSQL server (started at the first call)."""
    global _postgres
    with _lock:
        if _postgres is None:
            # The cluster's owner (the postgres user, when the tests run as root) must reach
            # the directory: a searchable parent outside pytest's private temporary tree.
            parent = Path(tempfile.mkdtemp(prefix="patchbay-infra-"))
            parent.chmod(0o755)
            directory = parent / "postgres"
            done = subprocess.run(
                [str(SCRIPT), "postgres", "start", str(directory), str(free_port())],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"scripts/infra.sh postgres start failed: {done.stderr}")
            url = done.stdout.strip().rpartition("=")[2]
            _postgres = (directory, url)
        return _postgres[1]


def stop_all() -> None:
    """Stop what :func:`postgres_url` started."""
    global _postgres
    with _lock:
        if _postgres is not None:
            directory, _ = _postgres
            subprocess.run([str(SCRIPT), "postgres", "stop", str(directory)], check=False)
            subprocess.run(["rm", "-rf", str(directory.parent)], check=False)
            _postgres = None
