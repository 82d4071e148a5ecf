"""The ``patchbay`` console script (``patchbay.__main__:main``) without the ``server`` extra."""

from __future__ import annotations

import subprocess
import sys

MISSING_CLICK = (
    "import sys\n"
    "sys.modules['click'] = None  # as if the server extra were not installed\n"
    "from patchbay.__main__ import main\n"
    "main()\n"
)


def test_the_command_line_names_the_extra_it_needs() -> None:
    done = subprocess.run(
        [sys.executable, "-c", MISSING_CLICK], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "click is not installed" in done.stderr
    assert "pip install 'patchbay[server]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_command_line_runs_with_the_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "patchbay", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "Usage:" in done.stdout
