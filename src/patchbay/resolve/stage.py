"""The resolve stage: reads the batch log in order and turns batches into resolved batches.

Each step takes the next chunk of batches of a partition after the state's checkpoint,
resolves every batch to a user and updates the profiles on a staged copy of the state,
commits the state changes, the user of each batch and the chunk's last position together,
and, once the commit succeeded, offers the resolved chunk to the stages after it
(:mod:`patchbay.pipeline`), on the commit thread: the stages after see only committed
chunks. A crash before the commit replays the chunk: MPIDs are derived from batch ids, so
the replay decides the same, and a later stage may see a batch twice (at least once) but
never misses one: what it did not take from memory it reads back from the committed
resolved users.

The stage resolves only the partitions it owns (``owned``: every partition unless
processors share them, :mod:`patchbay.assignment`), and goes on from the committed
checkpoint whenever they change. A commit can be refused, applying nothing, for two
reasons, met when the next step waits for it (:meth:`ResolveStage.settle`):

* **fenced**: another processor moved the chunk's partition on meanwhile (each commit is
  fenced on the position its chunk started from;
  :class:`~patchbay.backends.records.CheckpointMoved`): the stage drops the chunk (and the
  one resolved over it), logs ``chunk_fenced`` and goes on from the stored checkpoint;
* **conflict**: another resolver changed a link or profile the chunk was resolved on
  (PostgreSQL; :class:`~patchbay.errors.ResolveConflict`): the stage resolves it again
  from the stored checkpoint on a fresh read, a bounded number of times
  (:func:`~patchbay.resolve.state.retry_conflicts`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import msgspec
import structlog

from patchbay.backends.abstract import BatchLog, StateStore
from patchbay.backends.records import (
    Checkpoint,
    CheckpointMoved,
    LogPosition,
    Since,
    StateChanges,
    StoredBatch,
)
from patchbay.backoff import CLOCK_POLL_S, StorageBackoff
from patchbay.collect.batch import Batch
from patchbay.collect.decode import BadInput, decode_batch
from patchbay.collect.events import UserIdentityChange
from patchbay.errors import StorageFull
from patchbay.resolve.identities import Identity, batch_identities, canonical_type
from patchbay.resolve.profile import Profile, apply_batch
from patchbay.resolve.resolver import Resolver, derived_mpid, live_mpid
from patchbay.resolve.state import PendingOverlay, StagedState, retry_conflicts

log = structlog.get_logger("patchbay.resolve")

#: The ``channel`` of the batches that record IDSync changes (see resolve/service.py).
IDSYNC_CHANNEL = "idsync"


class IdsyncRecord(msgspec.Struct):
    """The extra keys of an IDSync record: the users merged into the record's ``mpid``."""

    patchbay_merged_from: list[int] = []
    patchbay_merge_reason: str = "login"


_decode_record = msgspec.json.Decoder(IdsyncRecord).decode


@dataclass(frozen=True)
class ResolvedBatch:
    """A batch with its user: what the stages after resolve receive. ``profile`` is the
    user's profile once the batch was applied (read back as it is now when a stage catches
    up from storage). ``merged`` are the users folded into ``mpid`` by this batch (read
    back: every user ever folded into it)."""

    stored: StoredBatch
    batch: Batch
    mpid: int
    profile: Profile | None = None
    merged: tuple[int, ...] = ()


@dataclass(frozen=True)
class ResolvedChunk:
    """Consecutive resolved batches of one partition: those after ``after`` up to and
    including ``last`` (a batch that could not be read has no entry)."""

    partition: int
    after: LogPosition | None
    last: LogPosition
    batches: Sequence[ResolvedBatch]


class ChunkListener(Protocol):
    """Whoever takes resolved chunks as they are made (the pipeline's stage feeds)."""

    def offer(self, chunk: ResolvedChunk) -> None:
        """Take ``chunk`` without blocking (a listener that cannot keep it catches up from
        the committed resolved users later)."""
        ...


def decode_stored(stored: StoredBatch) -> Batch | None:
    """The batch a stored one holds, or ``None`` (logged) if it cannot be read: only possible
    if the model changed since it was stored; such a batch gets no user."""
    try:
        return decode_batch(stored.body)
    except BadInput as exc:
        log.error("batch_unreadable", position=str(stored.position), error=str(exc))
        return None


def _identity_changes(batch: Batch) -> list[tuple[Identity | None, Identity | None]]:
    changes: list[tuple[Identity | None, Identity | None]] = []
    for event in batch.events or ():
        if not isinstance(event, UserIdentityChange):
            continue
        pair: list[Identity | None] = []
        for side in (event.data.old, event.data.new):
            kind = canonical_type(side.identity_type or "") if side else None
            value = side.identity if side else None
            pair.append(Identity(kind, value) if kind and value else None)
        changes.append((pair[0], pair[1]))
    return changes


class ResolveStage:
    """Resolves the batch log into profiles, a chunk at a time."""

    def __init__(
        self,
        log_: BatchLog,
        state: StateStore,
        resolver: Resolver,
        listeners: Sequence[ChunkListener] = (),
        chunk: int = 1000,
        owned: Callable[[], Collection[int]] | None = None,
        fenced: Callable[[], None] | None = None,
    ) -> None:
        self._log = log_
        self._state = state
        self._resolver = resolver
        self._listeners = tuple(listeners)
        self._chunk = chunk
        self.processed = 0
        #: How many commits were refused for a conflict with another resolver (and redone).
        self.conflicts = 0
        # The commit of the last chunk runs on this thread while the next chunk is resolved
        # on top of it (``_overlay``); at most one commit is in flight.
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="patchbay-resolve-commit")
        self._commit: Future[None] | None = None
        self._overlay: PendingOverlay | None = None
        self._checkpoint: Checkpoint = {}
        self._next_partition = 0
        self._owned_fn = owned or (lambda: range(log_.partitions))
        self._owned: list[int] = []
        #: How many chunks were dropped because another processor moved their partition
        #: on (``fenced`` is called for each too).
        self.fenced = 0
        self._on_fenced = fenced

    def step(self) -> int:
        """Resolve the next chunk and start its commit (the previous chunk's commit is
        waited for first); return how many batches it held. A step that finds nothing new
        waits for the last commit, so when it returns 0 everything resolved is committed.

        A commit refused because another resolver changed what it read
        (:class:`~patchbay.errors.ResolveConflict`) is done again from the stored
        checkpoint, a bounded number of times (counted in :attr:`conflicts`)."""
        return retry_conflicts(self._step, self._conflicted)

    def _conflicted(self) -> None:
        self.conflicts += 1

    def _step(self) -> int:
        owned = sorted(self._owned_fn())
        if owned != self._owned:
            self.settle()  # the partitions gained go on from their committed checkpoint
            self._owned = owned
        if self._commit is None:
            self._checkpoint = self._state.checkpoint()
        partition, stored = self._next_chunk()
        if not stored:
            self.settle()
            return 0
        after = self._checkpoint.get(partition)
        try:
            decoded = [
                (s, b, list(batch_identities(b)))
                for s in stored
                if (b := decode_stored(s)) is not None
            ]
            staged = StagedState(self._overlay or self._state)
            self._prefetch(staged, decoded)
            resolved = [self._resolve(staged, s, batch, ids) for s, batch, ids in decoded]
            staged.changes.resolved = [(r.stored.position, r.mpid) for r in resolved]
            chunk = ResolvedChunk(partition, after, stored[-1].position, resolved)
        except BaseException:
            with contextlib.suppress(Exception):  # no commit goes on after a failed step
                self.settle()
            raise
        if not self.settle():  # resolved over a chunk whose commit was fenced: drop it
            return self._step()  # again from the stored checkpoint
        self._checkpoint = {**self._checkpoint, partition: chunk.last}
        self._commit = self._committer.submit(
            self._commit_and_offer,
            staged.changes,
            {partition: chunk.last},
            {partition: after},
            chunk,
        )
        self._overlay = PendingOverlay(staged, self._state)
        self.processed += len(stored)
        return len(stored)

    def _commit_and_offer(
        self, changes: StateChanges, checkpoint: Checkpoint, since: Since, chunk: ResolvedChunk
    ) -> None:
        """Commit a chunk (fenced on ``since``), then offer it: on the commit thread, so
        that a chunk whose commit is refused is never seen by the stages after."""
        self._state.commit(changes, checkpoint, since)
        for listener in self._listeners:
            listener.offer(chunk)

    def _next_chunk(self) -> tuple[int, list[StoredBatch]]:
        """The next batches to resolve, taking the owned partitions in turn."""
        owned = self._owned
        for turn in range(len(owned)):
            index = (self._next_partition + turn) % len(owned)
            partition = owned[index]
            stored = self._log.read(partition, self._checkpoint.get(partition), self._chunk)
            if stored:
                self._next_partition = index + 1
                return partition, stored
        return 0, []

    def settle(self) -> bool:
        """Wait for the commit in flight; raise its error (the next step then starts again
        from the stored checkpoint: a :class:`~patchbay.errors.ResolveConflict` resolves
        the chunk again). A commit refused because another processor moved its partition
        on is dropped, logged and counted, not raised: then ``False``. Call before reading
        or writing the state elsewhere."""
        commit, self._commit = self._commit, None
        if commit is None:
            return True
        try:
            commit.result()
        except CheckpointMoved as exc:
            self._overlay = None
            self.fenced += 1
            if self._on_fenced is not None:
                self._on_fenced()
            log.warning("chunk_fenced", stage="resolve", partitions=exc.partitions)
            return False
        except BaseException:
            self._overlay = None
            raise
        if self._overlay is not None:
            self._overlay.detach()
        return True

    def run_until_caught_up(self) -> int:
        """Step until the log is exhausted and committed; return how many batches were
        resolved."""
        total = 0
        while n := self.step():
            total += n
        return total

    def close(self) -> None:
        """Wait for the last commit and stop the commit thread."""
        try:
            self.settle()
        finally:
            self._committer.shutdown(wait=True)

    @staticmethod
    def _prefetch(
        staged: StagedState, decoded: list[tuple[StoredBatch, Batch, list[Identity]]]
    ) -> None:
        """Read what the chunk will look up in two bulk steps: the links of every identity,
        then the profiles of the users they point at, of the batches' MPIDs, and of the MPIDs
        that batches matching nobody would be given (checked for absence)."""
        staged.prefetch_links(i for _, _, ids in decoded for i in ids)
        mpids: set[int] = set()
        for stored, batch, ids in decoded:
            linked = [m for i in ids for m in staged.users_with(i)]
            mpids.update(linked)
            if batch.user_id:
                mpids.add(batch.user_id)
            elif not linked:
                mpids.add(derived_mpid(stored.batch_id))
        staged.prefetch_profiles(mpids)

    def _resolve(
        self, staged: StagedState, stored: StoredBatch, batch: Batch, identities: list[Identity]
    ) -> ResolvedBatch:
        mpid = batch.user_id or None
        resolution = self._resolver.resolve(
            staged,
            identities,
            mpid,
            seed=stored.batch_id,
            seen_ms=stored.received_at_ms,
            offset=stored.offset,
        )
        if stored.channel == IDSYNC_CHANNEL:
            record = _decode_record(stored.body)
            for absorbed in record.patchbay_merged_from:
                live = live_mpid(staged, absorbed)
                if live is not None and self._resolver.merge(
                    staged,
                    live,
                    resolution.mpid,
                    record.patchbay_merge_reason,
                    stored.received_at_ms,
                    stored.offset,
                ):
                    resolution.merged.append(live)
        profile = staged.profile(resolution.mpid)
        assert profile is not None
        for old, new in _identity_changes(batch):
            if old is not None and (new is None or new.type == old.type):
                self._resolver.unlink_identity(staged, profile, old)
            if new is not None:
                self._resolver.link_identity(
                    staged, profile, new, stored.received_at_ms, resolution.skipped
                )
        apply_batch(profile, batch, stored.input_id, stored.received_at_ms)
        staged.put(profile)
        return ResolvedBatch(stored, batch, resolution.mpid, profile, tuple(resolution.merged))


class StageRunner:
    """Runs a stage's ``step`` on a thread until stopped. When idle it waits for
    :meth:`wake` (called after new batches are committed to the log), or at most
    ``idle_sleep_s`` as a fallback for writers that do not call it.

    While collecting is busy (``busy()``, by default: batches arrived within the last
    second), the stage pauses after each chunk for as long as the chunk took times
    ``ingest_share / (1 - ingest_share)``: the stages share one Python process and one GIL
    with the Events API, and the 202 comes first; the stage catches up when the load drops.

    A full store backs the stage off (``backoff``, :mod:`patchbay.backoff`): the step starts
    again from the committed checkpoint once there is room.
    """

    def __init__(
        self,
        step: Callable[[], int],
        idle_sleep_s: float = 0.05,
        ingest_share: float = 0.5,
        busy: Callable[[], bool] | None = None,
        backoff: StorageBackoff | None = None,
    ) -> None:
        self._step = step
        self.backoff = backoff or StorageBackoff("resolve")
        self._idle = idle_sleep_s
        self._pause_factor = ingest_share / (1.0 - ingest_share) if ingest_share < 1 else 0.0
        self._busy = busy or self._woken_lately
        self._last_wake = 0.0
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._run, name="patchbay-resolve", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def _woken_lately(self) -> bool:
        return time.monotonic() - self._last_wake < 1.0

    def stop(self) -> None:
        """Finish the current chunk and stop."""
        self._stop.set()
        self._kick.set()
        self._thread.join()

    def wake(self) -> None:
        """New batches are in the log: step now rather than at the next poll (callable from
        any thread)."""
        self._last_wake = time.monotonic()
        self._kick.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if (wait := self.backoff.wait_s()) > 0:
                self._stop.wait(min(wait, CLOCK_POLL_S))
                continue
            try:
                started = time.monotonic()
                n = self._step()
                self.backoff.succeeded()
                if n > 0 and self._pause_factor and self._busy():
                    self._stop.wait((time.monotonic() - started) * self._pause_factor)
                if n == 0:
                    # a wake-up between the step and here is kept by the event; one after
                    # the wait is seen by the next step (the batches were committed first)
                    self._kick.wait(self._idle)
                    self._kick.clear()
            except StorageFull as exc:
                self.backoff.failed(exc)
            except Exception as exc:
                self.error = exc
                log.exception("resolve_failed")
                self._stop.wait(1.0)
