"""The batch log and the de-duplication index in memory."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence

from patchbay.backends.records import (
    Checkpoint,
    DedupKey,
    LogEntry,
    LogExtent,
    LogPosition,
    NewBatch,
    StoredBatch,
    advance,
)


class MemoryBatchLog:
    """A partitioned log in lists; a batch goes to the partition of a hash of its user's
    key (:meth:`NewBatch.partition`: one user's batches stay in order). Offsets start at 1
    in every partition; the batch at offset ``n`` is at index ``n - 1 - removed``
    (``removed``: how many retention took from the front)."""

    def __init__(self, partitions: int = 1) -> None:
        if partitions < 1:
            raise ValueError("a log needs at least one partition")
        self._parts: list[list[StoredBatch]] = [[] for _ in range(partitions)]
        self._removed = [0] * partitions
        self._sizes = [0] * partitions
        self._lock = threading.Lock()

    @property
    def partitions(self) -> int:
        """How many partitions the log has."""
        return len(self._parts)

    def append(self, batches: Sequence[NewBatch]) -> list[LogPosition]:
        """Append ``batches`` (all or nothing: they are built before any is added)."""
        with self._lock:
            sizes = [len(p) + r for p, r in zip(self._parts, self._removed, strict=True)]
            placed: list[tuple[int, StoredBatch]] = []
            for b in batches:
                part = b.partition(len(self._parts))
                sizes[part] += 1
                stored = StoredBatch(
                    offset=sizes[part],
                    batch_id=b.batch_id,
                    input_id=b.input_id,
                    received_at_ms=b.received_at_ms,
                    channel=b.channel,
                    body=b.body,
                    ip=b.ip,
                    historical=b.historical,
                    partition=part,
                    source_request_id=b.source_request_id,
                )
                placed.append((part, stored))
            for part, stored in placed:
                self._parts[part].append(stored)
                self._sizes[part] += len(stored.body)
        return [stored.position for _, stored in placed]

    def unsettled(self) -> int:
        """Nothing: an append stores everything or nothing before it returns or raises."""
        return 0

    def read(self, partition: int, after: LogPosition | None, limit: int) -> list[StoredBatch]:
        """Batches of ``partition`` after ``after``, oldest first."""
        if not 0 <= partition < len(self._parts):
            return []
        with self._lock:
            start = 0 if after is None else max(after.offset - self._removed[partition], 0)
            return self._parts[partition][start : start + max(limit, 0)]

    def end(self, partition: int) -> LogPosition | None:
        """The newest position of ``partition``, removed or not."""
        if not 0 <= partition < len(self._parts):
            return None
        with self._lock:
            newest = len(self._parts[partition]) + self._removed[partition]
            return LogPosition(partition, newest) if newest else None

    def oldest(self, partition: int, limit: int) -> list[LogEntry]:
        """The oldest batches of ``partition`` as retention sees them."""
        if not 0 <= partition < len(self._parts):
            return []
        with self._lock:
            page = self._parts[partition][: max(limit, 0)]
        return [LogEntry(s.position, s.received_at_ms, len(s.body)) for s in page]

    def remove(self, partition: int, upto: LogPosition) -> int:
        """Drop the batches at or before ``upto`` from the front of ``partition``."""
        if not 0 <= partition < len(self._parts):
            return 0
        with self._lock:
            part = self._parts[partition]
            count = min(max(upto.offset - self._removed[partition], 0), len(part))
            self._sizes[partition] -= sum(len(s.body) for s in part[:count])
            del part[:count]
            self._removed[partition] += count
            return count

    def extent(self, partition: int) -> LogExtent:
        """What ``partition`` retains."""
        if not 0 <= partition < len(self._parts):
            return LogExtent(0, 0)
        with self._lock:
            removed = self._removed[partition]
            return LogExtent(
                len(self._parts[partition]),
                self._sizes[partition],
                LogPosition(partition, removed) if removed else None,
            )

    def close(self) -> None:
        """Nothing to release."""


class MemoryDedupIndex:
    """Recent keys in a dict."""

    def __init__(self) -> None:
        self._keys: dict[DedupKey, int] = {}
        self._recorded: Checkpoint = {}
        self._lock = threading.Lock()

    def seen(self, keys: Collection[DedupKey], since_ms: int) -> set[DedupKey]:
        """The keys recorded since ``since_ms``."""
        with self._lock:
            return {k for k in keys if self._keys.get(k, since_ms - 1) >= since_ms}

    def record(
        self, entries: Sequence[tuple[DedupKey, int, LogPosition]], upto: Checkpoint
    ) -> None:
        """Remember the keys, and how far the log is recorded."""
        with self._lock:
            for key, received_at_ms, _ in entries:
                self._keys[key] = received_at_ms
            self._recorded = advance(self._recorded, list(upto.values()))

    def recorded(self) -> Checkpoint:
        """How far the log's keys are recorded."""
        with self._lock:
            return dict(self._recorded)

    def forget_before(self, before_ms: int, limit: int | None = None) -> int:
        """Drop old keys, the oldest first."""
        with self._lock:
            old = sorted((at, k) for k, at in self._keys.items() if at < before_ms)
            for _, key in old[:limit]:
                del self._keys[key]
            return len(old[:limit])

    def close(self) -> None:
        """Nothing to release."""
