"""Reading the batch log as a named consumer, at least once.

A later stage (resolve, forward) owns a :class:`LogConsumer`. It polls batches after its
position, processes them, then commits the offset of the last one it finished. After a
crash it starts again from the last commit, so a batch may be seen twice but never missed.
"""

from __future__ import annotations

from patchbay.store.base import BatchLog, StoredBatch


class LogConsumer:
    """A cursor over a :class:`BatchLog` whose position survives restarts once committed."""

    def __init__(self, log: BatchLog, name: str) -> None:
        if not name:
            raise ValueError("a consumer needs a name")
        self._log = log
        self.name = name
        self._position = log.committed(name)

    @property
    def position(self) -> int:
        """The offset of the last batch handed out by :meth:`poll`."""
        return self._position

    def poll(self, max_batches: int = 500) -> list[StoredBatch]:
        """The next batches after the current position (empty when caught up)."""
        batches = self._log.read(self._position, max_batches)
        if batches:
            self._position = batches[-1].offset
        return batches

    def commit(self, offset: int | None = None) -> None:
        """Record that everything up to ``offset`` (default: the position) is processed."""
        target = self._position if offset is None else offset
        if target > self._position:
            raise ValueError(f"cannot commit offset {target}: only read up to {self._position}")
        self._log.commit(self.name, target)

    def seek(self, offset: int) -> None:
        """Move the position (for example to reprocess from an earlier offset)."""
        if offset < 0:
            raise ValueError("offsets start at 0")
        self._position = offset

    def lag(self) -> int:
        """How many offsets the log has beyond the position."""
        return max(0, self._log.last_offset() - self._position)
