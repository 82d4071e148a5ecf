"""Where file outputs (``patchbay outputs add NAME --file PATH``) may write: inside the
outputs directory (the ``outputs_dir`` setting, by default ``<data_dir>/outputs``), never
anywhere else the process can write (the live data directory above all).

* When an output is added, :meth:`OutputsDir.place` takes a relative path inside the
  directory and an absolute one only when it resolves, after symbolic links and ``..``,
  inside it; the resolved path is what is stored.
* When a delivery is written, :meth:`OutputsDir.open_append` checks the stored path again and
  opens it one component at a time from the directory, following no symbolic link
  (``O_NOFOLLOW``) and taking only a regular file with a single link: a path changed on disk
  since (a symlink or a hard link planted, a directory swapped) is refused, never written.
* The directory is created owner-only (``0700``) when missing, files ``0600``; a directory
  that contains the data directory is refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Final

from patchbay.errors import PatchbayError
from patchbay.settings import Settings

__all__ = ["OutputPathError", "OutputsDir"]

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS: Final = (
    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
)
#: What ``open`` answers for a symbolic link with ``O_NOFOLLOW`` (or a file where a
#: directory was).
_CHANGED: Final = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EMLINK})


class OutputPathError(PatchbayError):
    """A file output's path that is, or has become, outside the outputs directory (or not a
    plain file in it). The message names the path and says how to fix it."""


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


@dataclass(frozen=True, slots=True)
class OutputsDir:
    """The outputs directory ``root``; ``data_dir`` (the live store) must not be in it."""

    root: Path
    data_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OutputsDir:
        """The outputs directory the settings give (``outputs_dir``, else
        ``<data_dir>/outputs``)."""
        root = settings.outputs_dir or settings.data_dir / "outputs"
        return cls(root.absolute(), settings.data_dir.absolute())

    def ensure(self) -> Path:
        """The directory's real path, created ``0700`` when missing."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputPathError(
                f"cannot create the outputs directory {self.root} (outputs_dir):"
                f" {exc.strerror or exc}"
            ) from None
        real = _real(self.root)
        if not real.is_dir():
            raise OutputPathError(
                f"the outputs directory {self.root} (outputs_dir) is not a directory"
            )
        if self.data_dir is not None:
            data = _real(self.data_dir)
            if data == real or data.is_relative_to(real):
                raise OutputPathError(
                    f"the outputs directory {self.root} (outputs_dir) holds the data directory"
                    f" {self.data_dir}: file outputs could overwrite the live store; give"
                    " outputs_dir (PATCHBAY_OUTPUTS_DIR) a directory of its own"
                )
        return real

    def place(self, path: str) -> Path:
        """Where a new file output given ``path`` writes: a relative path inside the
        directory, an absolute one if it resolves inside it (after symlinks and ``..``)."""
        if not path.strip() or "\0" in path:
            raise OutputPathError(f"invalid file output path {path!r}")
        root = self.ensure()
        given = Path(path)
        resolved = _real(given if given.is_absolute() else root / given)
        if resolved == root or not resolved.is_relative_to(root):
            raise OutputPathError(
                f"file output path {path!r} resolves to {resolved}, outside the outputs"
                f" directory {root}: give a path inside it, or a relative one (taken inside"
                " it); outputs_dir (PATCHBAY_OUTPUTS_DIR) sets the directory"
            )
        if resolved.is_dir():
            raise OutputPathError(f"file output path {path!r} is a directory")
        return resolved

    def _inside(self, path: Path, root: Path) -> PurePath:
        """``path`` relative to the directory (its real or its configured path)."""
        if ".." not in path.parts and path.is_absolute():
            for base in (root, self.root):
                if path.is_relative_to(base) and path != base:
                    return path.relative_to(base)
        raise OutputPathError(
            f"file output path {path} is outside the outputs directory {root}: set"
            " outputs_dir (PATCHBAY_OUTPUTS_DIR) to a directory that holds it, or add a new"
            f" output with a path inside {root}; then replay the parked deliveries"
            " (`patchbay deliveries replay --output OUTPUT`)"
        )

    def open_append(self, path: str) -> int:
        """A descriptor open for appending to the file output at ``path`` (created ``0600``),
        refusing (:class:`OutputPathError`) a path outside the directory, a symbolic link
        anywhere below it, and anything but a regular file with one link."""
        root = self.ensure()
        relative = self._inside(Path(path), root)
        *dirs, name = relative.parts
        directory = os.open(root, _DIR_FLAGS)
        try:
            for part in dirs:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=directory)
                below = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=directory)
                os.close(directory)
                directory = below
            fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=directory)
        except OSError as exc:
            if exc.errno in _CHANGED:
                what = "a symbolic link or a file where a directory was"
                raise self._changed(path, what) from None
            if exc.errno == errno.ENXIO:  # a FIFO or socket (O_NONBLOCK: no waiting on it)
                raise self._changed(path, "not a regular file") from None
            raise
        finally:
            os.close(directory)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            what = "not a regular file" if not stat.S_ISREG(info.st_mode) else "a hard link"
            raise self._changed(path, what)
        return fd

    @staticmethod
    def _changed(path: str, what: str) -> OutputPathError:
        return OutputPathError(
            f"file output path {path} changed on disk ({what} is in its way): nothing was"
            " written; remove it, then replay the parked deliveries"
            " (`patchbay deliveries replay --output OUTPUT`)"
        )
