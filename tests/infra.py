"""Real servers for the tests of the scale-out mode, started once per test session through
``scripts/infra.sh`` (as a user would) on free ports, and stopped at its end.

A process the tests start (the child a crash test kills) uses the session's servers, not
servers of its own (which nobody would stop): their URLs are passed down in the
environment (:data:`ENV`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "infra.sh"
#: By server: the environment variable that gives child processes the session's URL.
ENV = {"postgres": "PATCHBAY_TEST_POSTGRES", "kafka": "PATCHBAY_TEST_KAFKA"}

_lock = threading.Lock()
#: By server: the directory and URL of what this process started.
_started: dict[str, tuple[Path, str]] = {}


def _url(server: str, port: int) -> str:
    """The URL of the session's ``server``: the one this process started, the one its
    parent passed down, or one started now with ``scripts/infra.sh SERVER start DIR PORT``."""
    with _lock:
        if server in _started:
            return _started[server][1]
        if inherited := os.environ.get(ENV[server]):
            return inherited
        # The cluster's owner (the postgres user, when the tests run as root) must reach
        # the directory: a searchable parent outside pytest's private temporary tree.
        parent = Path(tempfile.mkdtemp(prefix="patchbay-infra-"))
        parent.chmod(0o755)
        directory = parent / server
        done = subprocess.run(
            [str(SCRIPT), server, "start", str(directory), str(port)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/infra.sh {server} start failed: {done.stderr}")
        url = done.stdout.strip().rpartition("=")[2]
        _started[server] = (directory, url)
        os.environ[ENV[server]] = url
        return url


def postgres_url() -> str:
    """The URL of this session's PostgreSQL server (started at the first call)."""
    return _url("postgres", free_port())


def _free_port_pair() -> int:
    """A port that is free, with the next one free too (a broker and its controller)."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def kafka_url() -> str:
    """The ``kafka://`` URL of this session's Kafka broker (started at the first call)."""
    return _url("kafka", _free_port_pair())


def stop_all() -> None:
    """Stop what :func:`postgres_url` and :func:`kafka_url` started."""
    with _lock:
        for server, (directory, _) in _started.items():
            subprocess.run([str(SCRIPT), server, "stop", str(directory)], check=False)
            subprocess.run(["rm", "-rf", str(directory.parent)], check=False)
            os.environ.pop(ENV[server], None)
        _started.clear()
