"""The data directory's permissions: owner only, like PostgreSQL's data directory.

Everything Patchbay keeps (personal data in the databases, the key of the stored partner
tokens) is in the data directory, so it and every file in it are for the user who runs
Patchbay alone:

* :func:`owner_only_umask` sets the process umask to ``0o077`` (every command and child
  process does it first), so what the process creates (SQLite's ``-wal`` and ``-shm`` files,
  file outputs, the key file) is ``0600`` and directories ``0700``;
* :func:`prepare_data_dir` creates the directory ``0700``, refuses one that group or others
  can access (with the ``chmod 700`` to run), and makes the files already in it ``0600``
  (those an earlier version created ``0644``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from patchbay.errors import PatchbayError

#: The umask of every Patchbay process: nothing for group or others.
OWNER_ONLY_UMASK = 0o077
#: Mode of the data directory and of every file in it.
DIR_MODE = 0o700
FILE_MODE = 0o600


class DataDirError(PatchbayError):
    """The data directory cannot be used as it is; the message says what to run."""


def owner_only_umask() -> None:
    """Set this process's umask to ``0o077`` (inherited by the processes it starts)."""
    os.umask(OWNER_ONLY_UMASK)


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (mode ``0700``) if missing; refuse it if group or others have any
    access to it (:class:`DataDirError`); make the files in it owner-only. A path that
    cannot be a directory raises the ``OSError`` (the callers say which store it is)."""
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & 0o077:
        raise DataDirError(
            f"data directory {data_dir} has mode {mode:04o}: group or others can access it;"
            f" run: chmod 700 {data_dir}"
        )
    for entry in data_dir.iterdir():
        secure_file(entry)


def secure_file(path: Path) -> None:
    """Make the regular file ``path`` owner-only (``0600``) if it is not (missing: nothing)."""
    try:
        info = path.lstat()
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
            path.chmod(FILE_MODE)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DataDirError(
            f"{path} can be read by group or others and cannot be made owner-only"
            f" ({exc.strerror or exc}); run: chmod 600 {path}"
        ) from None


def create_owner_only(path: Path) -> None:
    """Create ``path`` empty and ``0600`` if missing, or make it ``0600`` (a SQLite database:
    its ``-wal`` and ``-shm`` files get the database's permissions).

    An existing file is never opened here: closing a descriptor of a database file would
    release the POSIX locks that this process's SQLite connections hold on it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        except OSError as exc:
            raise DataDirError(f"cannot create {path}: {exc.strerror or exc}") from None
        return
    except OSError as exc:
        raise DataDirError(f"{path}: {exc.strerror or exc}") from None
    if mode & 0o077:
        secure_file(path)
