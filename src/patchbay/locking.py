"""One process at a time per data directory for work that must not run twice."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from patchbay.datadir import prepare_data_dir
from patchbay.errors import PatchbayError

LOCK_FILE = "patchbay.lock"


class AlreadyRunning(PatchbayError):
    """Another process holds the data directory's lock."""


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock (released when the process ends, even by SIGKILL).
    The directory is created, or checked, owner-only first
    (:func:`~patchbay.datadir.prepare_data_dir`)."""
    prepare_data_dir(data_dir)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"{data_dir} is in use by another patchbay process (patchbay serve?)"
            ) from None
        yield
    finally:
        os.close(fd)
