"""Group commit: many concurrent appends share one durable transaction.

Requests hand their batches to :meth:`GroupCommitAppender.append` and wait. One thread
takes every append waiting at that moment, drops the batches the de-duplication index has
seen, writes the rest to the log in one transaction (one fsync), records their keys, and
wakes each request with its own positions. Under load this turns N fsyncs into one; with a
single client it costs nothing extra. The keys are recorded after the append (recording
them first could lose a batch whose append then failed); :func:`recover_dedup` records at
start the keys a crash left unrecorded, so a retry after a crash is still recognised.

A full store (:class:`~patchbay.errors.StorageFull`) fails every request of the group and
writes none of their batches; the thread goes on, and the next group is written once there is
room. Should the log take a group and the index then have no room for its keys, the requests
are answered (their batches are stored) and the keys are recorded from the log before the
next group is looked up.

A log out of reach (:class:`~patchbay.errors.LogUnavailable`) fails every request of the
group, but a log that is not atomic (Kafka) may have stored part of it, and may store more
of it later (:meth:`~patchbay.backends.abstract.BatchLog.unsettled`: a broker had written a
batch and was waiting for a replica when the append gave up). Until the log says nothing is
unsettled, the appender is *in doubt*: before each group it records the keys of what the log
holds beyond the index's progress (as :func:`recover_dedup` does), and it records the keys of
its own appends without moving that progress past them, so that a batch the log stores late,
before those appends, is still read and recorded by the next group. A retry of a batch the log
still has on its way does not store it again either: the log waits for the earlier copy (the
same batch id, derived from the ``source_request_id``). So a retry of a batch that was
stored, now or later, is answered as a duplicate.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from patchbay.backends.abstract import BatchLog, DedupIndex
from patchbay.backends.records import DedupKey, LogPosition, NewBatch, advance
from patchbay.errors import LogUnavailable, StorageFull

_STOP = object()


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: the position of each batch, in order, or ``None`` where it was
    a duplicate of a batch already stored (same input and ``source_request_id`` within the
    window, or earlier in the same append). ``unrecorded``: the batches are stored but the
    index had no room for their keys (:func:`recover_dedup` records them)."""

    positions: list[LogPosition | None] = field(default_factory=list)
    unrecorded: bool = False

    @property
    def stored(self) -> int:
        """How many batches were written."""
        return sum(1 for p in self.positions if p is not None)

    @property
    def duplicates(self) -> int:
        """How many batches were skipped as duplicates."""
        return len(self.positions) - self.stored


def append_new(
    log: BatchLog,
    dedup: DedupIndex,
    batches: Sequence[NewBatch],
    dedup_since_ms: int,
    *,
    progress: bool = True,
) -> AppendResult:
    """Append the batches of ``batches`` that are not duplicates; see the module docs.
    ``progress``: whether the index's progress moves past the batches appended (not while
    the log may store earlier batches late)."""
    keys: list[DedupKey | None] = [
        None if b.source_request_id is None else (b.input_id, b.source_request_id) for b in batches
    ]
    wanted = {k for k in keys if k is not None}
    seen = dedup.seen(wanted, dedup_since_ms) if wanted else set()
    kept: list[int] = []
    for index, key in enumerate(keys):
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        kept.append(index)
    positions: list[LogPosition | None] = [None] * len(batches)
    if kept:
        written = log.append([batches[i] for i in kept])
        entries: list[tuple[DedupKey, int, LogPosition]] = []
        for index, position in zip(kept, written, strict=True):
            positions[index] = position
            if (key := keys[index]) is not None:
                entries.append((key, batches[index].received_at_ms, position))
        try:
            dedup.record(entries, advance({}, written) if progress else {})
        except StorageFull:
            return AppendResult(positions, unrecorded=True)
    return AppendResult(positions)


def recover_dedup(log: BatchLog, dedup: DedupIndex, page: int = 1000) -> int:
    """Record the keys of the batches appended after the index's progress (a crash between
    an append and its keys); return how many. Run before collecting starts."""
    recovered = 0
    for partition in range(log.partitions):
        after = dedup.recorded().get(partition)
        while stored := log.read(partition, after, page):
            entries = [
                ((s.input_id, s.source_request_id), s.received_at_ms, s.position)
                for s in stored
                if s.source_request_id is not None
            ]
            after = stored[-1].position
            dedup.record(entries, {partition: after})
            recovered += len(entries)
    return recovered


@dataclass(slots=True)
class _Pending:
    batches: Sequence[NewBatch]
    dedup_since_ms: int
    future: asyncio.Future[AppendResult]
    loop: asyncio.AbstractEventLoop


class GroupCommitAppender:
    """Appends to a :class:`BatchLog` from asyncio code, committing in groups."""

    def __init__(self, log: BatchLog, dedup: DedupIndex, max_group_batches: int = 5000) -> None:
        self._log = log
        self._dedup = dedup
        self._max = max_group_batches
        self._unrecorded = False  # keys of stored batches the index had no room for
        self._in_doubt = False  # a failed append's batches may be stored late (module docs)
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="patchbay-appender", daemon=True)
        self._thread.start()

    async def append(self, batches: Sequence[NewBatch], dedup_since_ms: int) -> AppendResult:
        """Append ``batches``; return once they are durably committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        self._queue.put(_Pending(batches, dedup_since_ms, future, loop))
        return await future

    def close(self) -> None:
        """Finish the appends already queued and stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            assert isinstance(first, _Pending)
            group = [first]
            size = len(first.batches)
            while size < self._max:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Pending)
                group.append(item)
                size += len(item.batches)
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        batches = [b for p in group for b in p.batches]
        since = min(p.dedup_since_ms for p in group)
        try:
            if self._unrecorded or self._in_doubt:
                # before any look-up: a retry of those batches is a duplicate; what the log
                # stores after this look at unsettled() is read by the next group
                settled = not self._in_doubt or self._log.unsettled() == 0
                recover_dedup(self._log, self._dedup)
                self._unrecorded = False
                self._in_doubt = not settled
            result = append_new(self._log, self._dedup, batches, since, progress=not self._in_doubt)
            self._unrecorded = result.unrecorded
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of the failure
            if isinstance(exc, LogUnavailable):  # part of the group may be stored (Kafka)
                self._in_doubt = True
            for p in group:
                p.loop.call_soon_threadsafe(_fail, p.future, exc)
            return
        start = 0
        for p in group:
            end = start + len(p.batches)
            part = AppendResult(result.positions[start:end])
            p.loop.call_soon_threadsafe(_succeed, p.future, part)
            start = end


def _succeed(future: asyncio.Future[AppendResult], result: AppendResult) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[AppendResult], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
