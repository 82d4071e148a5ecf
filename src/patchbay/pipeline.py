"""The pipeline: collect -> resolve -> the stages after it, assembled in one place.

Collect appends batches to the log; the resolve stage reads the log and commits, with its
state, the user each batch resolved to. Every stage after resolve (activate now, segment
next) is a :class:`Stage` run by a :class:`StageFeed` of its own: a thread, a bounded
buffer of resolved chunks and a checkpoint in the backend's ``StagePositions``.

* Resolve offers each chunk to every feed (:class:`Fanout`) and waits, at most
  :data:`HANDOFF_WAIT_S`, for the stages that keep up to be done with it: they share one
  GIL with resolve, and running beside it would only make both wait for the GIL at every
  I/O call. A stage that is not done in time, fails, or whose buffer is full is not waited
  for again until it caught up, and drops what does not fit its buffer: a slow or failing
  stage never holds resolve or another stage up for good.
* A feed that finds a gap between its checkpoint and the next chunk (a dropped chunk, a
  restart, a stage that failed) reads what it misses back from storage: the batches from
  the log and their users from the resolved users resolve committed. So each stage gets
  every resolved batch, at least once, in log order within a partition.
* The resolved users every stage has passed are pruned (:meth:`Pipeline.prune`).
* Processors may share the log's partitions (:mod:`patchbay.assignment`): resolve and
  every feed process only the partitions the process owns now, and go on from the
  committed checkpoint of each partition they gain. Every checkpoint commit is fenced on
  the positions it started from: one refused because another processor moved the
  partition on (:class:`~patchbay.backends.records.CheckpointMoved`) drops what the stage
  did since, which it then reads again from the stored checkpoint (logged, and counted in
  ``patchbay_STAGE_chunks_fenced``).
* A full store (:class:`~patchbay.errors.StorageFull`) backs the stage that met it off
  (:mod:`patchbay.backoff`): what it is offered meanwhile is dropped, and once there is
  room it reads back from its checkpoint what it missed.

A stage may also run in another process (the segment stage does in ``patchbay serve``:
:mod:`patchbay.segment.process`): there a :class:`StageFeed` gets no hand-offs and reads
everything back from storage, and the pipeline here knows it only by name
(:class:`StageElsewhere`), so that pruning waits for it.

Adding a stage is a module with a :class:`Stage` and one entry in the list given to
:class:`Pipeline` where the server assembles it (:func:`patchbay.server.create_app`).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter

from patchbay.assignment import AllPartitions, Assignment
from patchbay.backends.abstract import Backend
from patchbay.backends.records import Checkpoint, CheckpointMoved, LogPosition, lowest
from patchbay.backoff import StorageBackoff
from patchbay.clock import Clock
from patchbay.errors import StorageFull
from patchbay.metrics import fenced_counter
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import (
    ResolvedBatch,
    ResolvedChunk,
    ResolveStage,
    StageRunner,
    decode_stored,
)

log = structlog.get_logger("patchbay.pipeline")

#: Resolved chunks a stage may have waiting before further chunks are read back later.
DEFAULT_BUFFER_CHUNKS = 16
#: How long a stage that caught a gap waits for resolve to commit what lies in it.
GAP_WAIT_S = 5.0
#: How long resolve waits for a stage that keeps up to finish a chunk before it goes on.
HANDOFF_WAIT_S = 1.0
#: How often the resolved users every stage has passed are pruned.
PRUNE_INTERVAL_S = 10.0
#: How often a stage's :meth:`Stage.tick` runs (idle or busy), when it has one.
TICK_INTERVAL_S = 0.1
#: How often at most a busy stage commits its checkpoint (an idle or stopping one at once):
#: a crash hands the chunks since over again (at least once), at no more than ten commits a
#: second per stage.
CHECKPOINT_INTERVAL_S = 0.1


class Stage(Protocol):
    """A stage after resolve."""

    #: The stage's name: the key of its checkpoint (never change it once deployed).
    name: str

    def handle(self, batches: Sequence[ResolvedBatch]) -> None:
        """Take resolved batches in log order, durably before returning (raising leaves
        them to be offered again)."""
        ...


class ResumableStage(Stage, Protocol):
    """A stage that keeps its own committed checkpoint and state in memory (the segment
    stage): its feed calls :meth:`resume` when partitions must go on from what is stored
    (gained from another processor, or moved on by one)."""

    def resume(self, partitions: Collection[int]) -> None:
        """Forget what is held in memory about ``partitions``; read it again."""
        ...


class TimedStage(Stage, Protocol):
    """A stage that also has work driven by time (the segment stage's window expiries,
    audience builds and sends). Its feed calls :meth:`tick` on the stage's thread every
    :data:`TICK_INTERVAL_S`, between chunks and when idle, so the stage never needs locks.
    A stage that reads the history of resolved users (``keeps_history``) stops the
    pipeline from pruning them."""

    keeps_history: bool

    def tick(self) -> None:
        """Do the work that is due now."""
        ...


@dataclass(frozen=True)
class StageElsewhere:
    """A stage after resolve that runs in another process, as the pipeline knows it: its
    checkpoint's name, and whether it reads the history of resolved users."""

    name: str
    keeps_history: bool


def _before(a: LogPosition | None, b: LogPosition | None) -> bool:
    """Whether position ``a`` comes before ``b`` (``None``: before the first batch)."""
    if b is None:
        return False
    return a is None or a < b


class StageFeed:
    """Runs one :class:`Stage` on a thread of its own; see the module documentation."""

    def __init__(
        self,
        stage: Stage,
        backend: Backend,
        buffer_chunks: int = DEFAULT_BUFFER_CHUNKS,
        idle_s: float = 0.2,
        page: int = 1000,
        backoff: StorageBackoff | None = None,
        owned: Callable[[], Collection[int]] | None = None,
        fenced: Counter | None = None,
    ) -> None:
        self.stage = stage
        self.name = stage.name
        self.backoff = backoff or StorageBackoff(self.name)
        self._backend = backend
        self._queue: queue.Queue[tuple[ResolvedChunk, threading.Event]] = queue.Queue(buffer_chunks)
        self._in_sync = True
        self._idle = idle_s
        self._page = page
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"patchbay-{self.name}")
        self._owned_fn = owned or AllPartitions(backend.log.partitions).owned
        self._owned: frozenset[int] = frozenset(self._owned_fn())
        #: What the stage has handled, and what of it is committed (pruning goes by that),
        #: of the owned partitions.
        self.checkpoint: Checkpoint = self._stored(self._owned)
        self.committed: Checkpoint = dict(self.checkpoint)
        self._committed_at = 0.0
        self._ticked_at = 0.0
        self._tick: Callable[[], None] | None = getattr(stage, "tick", None)
        self._resume: Callable[[Collection[int]], None] | None = getattr(stage, "resume", None)
        self.dropped = 0
        #: Chunks dropped because another processor moved their partition on.
        self.fenced = 0
        self._fenced_counter = fenced
        self.error: BaseException | None = None

    def _stored(self, partitions: Collection[int]) -> Checkpoint:
        """The committed checkpoint of ``partitions``, read now."""
        stored = self._backend.positions.get(self.name)
        return {p: pos for p, pos in stored.items() if p in partitions}

    def _sync_owned(self) -> None:
        """Follow the partitions owned now: forget those lost, and go on from the
        committed checkpoint of those gained."""
        owned = frozenset(self._owned_fn())
        if owned == self._owned:
            return
        gained = owned - self._owned
        self._owned = owned
        self.checkpoint = {p: pos for p, pos in self.checkpoint.items() if p in owned}
        self.committed = {p: pos for p, pos in self.committed.items() if p in owned}
        self._restart(gained)

    def _restart(self, partitions: Collection[int]) -> None:
        """Go on from the committed checkpoint of ``partitions`` (the stage too)."""
        if not partitions:
            return
        stored = self._stored(partitions)
        # new dicts: the pipeline reads ``committed`` from another thread
        self.checkpoint = {
            **{p: pos for p, pos in self.checkpoint.items() if p not in partitions},
            **stored,
        }
        self.committed = {
            **{p: pos for p, pos in self.committed.items() if p not in partitions},
            **stored,
        }
        if self._resume is not None:
            self._resume(partitions)

    def _fenced(self, exc: CheckpointMoved) -> None:
        """Another processor moved ``exc.partitions`` on: drop what was done since the
        last commit and go on from the stored checkpoint."""
        self.fenced += 1
        if self._fenced_counter is not None:
            self._fenced_counter.inc()
        log.warning("chunk_fenced", stage=self.name, partitions=exc.partitions)
        self._restart(exc.partitions)

    def offer(self, chunk: ResolvedChunk) -> threading.Event | None:
        """Buffer ``chunk``, or drop it when the buffer is full (read back later). Returns
        what is set once the stage is done with it, when the stage keeps up (resolve then
        waits for it: see :class:`Fanout`)."""
        done = threading.Event()
        try:
            self._queue.put_nowait((chunk, done))
        except queue.Full:
            self.dropped += 1
            self._in_sync = False
            return None
        return done if self._in_sync else None

    def fell_behind(self) -> None:
        """The stage did not finish a chunk in time: stop waiting for it until it caught up."""
        self._in_sync = False

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Finish the buffered chunks and stop."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            chunk: ResolvedChunk | None = None
            done: threading.Event | None = None
            with contextlib.suppress(queue.Empty):
                chunk, done = self._queue.get(timeout=self._idle)
            try:
                self._sync_owned()
                if self.backoff.full:
                    self._in_sync = False  # what is offered meanwhile is read back later
                    if self.backoff.wait_s() > 0:
                        continue
                    chunk = None  # the next attempt reads back from the checkpoint
                self._maybe_tick()
                if chunk is None:
                    self._commit()
                    if not self._stopping.is_set():
                        self._catch_up_all()
                else:
                    self._take(chunk)
                    if self._queue.empty():
                        self._in_sync = True  # caught up with resolve
                self.backoff.succeeded()
            except CheckpointMoved as exc:
                self._in_sync = False
                self._fenced(exc)
            except StorageFull as exc:
                self._in_sync = False
                self.backoff.failed(exc)
            except Exception as exc:
                self.error = exc
                self._in_sync = False
                log.exception("stage_failed", stage=self.name)
                self._stopping.wait(1.0)  # what it missed is read back from storage
            finally:
                if done is not None:
                    done.set()
        try:
            self._commit()
        except CheckpointMoved as exc:  # another processor goes on from its own
            self._fenced(exc)
        except StorageFull as exc:  # the next start resumes from the last one committed
            self.backoff.failed(exc)

    def _maybe_tick(self) -> None:
        if self._tick is not None and time.monotonic() - self._ticked_at >= TICK_INTERVAL_S:
            self._ticked_at = time.monotonic()
            self._tick()

    def _commit(self) -> None:
        """Commit the partitions of the checkpoint that moved since the last commit,
        fenced on where they were (raises :class:`CheckpointMoved`)."""
        moved = {p: pos for p, pos in self.checkpoint.items() if self.committed.get(p) != pos}
        if moved:
            since = {p: self.committed.get(p) for p in moved}
            # a stage that commits its own checkpoint with its state (the segment stage)
            # reads again and skips what a position lost to a power failure leaves: no
            # fsync for it (nor a wait behind resolve's commits for one)
            self._backend.positions.commit(self.name, moved, since, synced=self._resume is None)
            self.committed = {**self.committed, **moved}
            self._committed_at = time.monotonic()

    def _take(self, chunk: ResolvedChunk) -> None:
        partition = chunk.partition
        if partition not in self._owned:
            return  # another processor's now
        if _before(self.checkpoint.get(partition), chunk.after):
            self._catch_up(partition, chunk.after, wait_s=GAP_WAIT_S)
        mine = self.checkpoint.get(partition)
        if _before(mine, chunk.after) or not _before(mine, chunk.last):
            return  # the gap is still open (read back later), or the chunk is done already
        fresh = (
            chunk.batches
            if mine == chunk.after
            else [b for b in chunk.batches if _before(mine, b.stored.position)]
        )
        self._handle(partition, fresh, chunk.last)

    def _handle(self, partition: int, batches: Sequence[ResolvedBatch], last: LogPosition) -> None:
        if batches:
            self.stage.handle(batches)
        self.checkpoint = {**self.checkpoint, partition: last}
        if time.monotonic() - self._committed_at >= CHECKPOINT_INTERVAL_S:
            self._commit()

    def _catch_up_all(self) -> None:
        """Read back whatever resolve committed that this stage has not handled."""
        for partition, committed in self._backend.state.checkpoint().items():
            if partition in self._owned and _before(self.checkpoint.get(partition), committed):
                self._catch_up(partition, committed, wait_s=0.0)

    def _catch_up(self, partition: int, upto: LogPosition | None, wait_s: float) -> None:
        """Handle the batches of ``partition`` after the checkpoint up to ``upto`` from
        storage, waiting up to ``wait_s`` for resolve to commit them."""
        deadline = time.monotonic() + wait_s
        while _before(self.checkpoint.get(partition), upto) and not self._stopping.is_set():
            self._sync_owned()
            if partition not in self._owned:
                return
            self._maybe_tick()  # time-driven work goes on however far behind the stage is
            committed = self._backend.state.checkpoint().get(partition)
            target = upto if not _before(committed, upto) else committed
            if not _before(self.checkpoint.get(partition), target):
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.01)
                continue
            self._read_back(partition, target)

    def _read_back(self, partition: int, upto: LogPosition | None) -> None:
        """One page of the log after the checkpoint (up to ``upto``) with its users."""
        mine = self.checkpoint.get(partition)
        batches, last = read_resolved(self._backend, partition, mine, self._page, upto)
        if last is not None:
            self._handle(partition, batches, last)


def read_resolved(
    backend: Backend,
    partition: int,
    after: LogPosition | None,
    limit: int,
    upto: LogPosition | None = None,
) -> tuple[list[ResolvedBatch], LogPosition | None]:
    """Up to ``limit`` resolved batches of ``partition`` after ``after`` (and not after
    ``upto``; ``None``: no bound) read back from storage: the batches from the log, their
    users from the resolved users resolve committed, each with its user's profile as it is
    now and the users ever merged into it. Also returns the position of the last batch
    read (``None``: nothing there); batches whose user is not kept, or that cannot be read,
    are left out."""
    page = backend.log.read(partition, after, limit)
    if upto is not None:
        page = [s for s in page if not _before(upto, s.position)]
    if not page:
        return [], None
    state = backend.state
    users = dict(state.resolved(partition, after, len(page)))
    profiles = state.profiles(set(users.values()))
    merged = state.merged_into(set(users.values()))
    batches = []
    for stored in page:
        mpid = users.get(stored.position)
        batch = decode_stored(stored) if mpid is not None else None
        if mpid is not None and batch is not None:
            absorbed = tuple(merged.get(mpid, ()))
            batches.append(ResolvedBatch(stored, batch, mpid, profiles.get(mpid), absorbed))
    return batches, page[-1].position


class Fanout:
    """What the resolve stage offers its chunks to: every feed, then a wait (up to
    ``wait_s`` in all) until the feeds that keep up are done with the chunk.

    Waiting runs the stages after resolve on its time rather than beside it: they share one
    GIL, and two busy threads would each wait for it at every I/O call. A stage that is not
    done in time, fails, or whose buffer is full is not waited for again until it caught up
    (it reads back from storage what it dropped), so it holds resolve up once, for at most
    ``wait_s``, never for good."""

    def __init__(self, feeds: Sequence[StageFeed], wait_s: float = HANDOFF_WAIT_S) -> None:
        self._feeds = tuple(feeds)
        self._wait_s = wait_s

    def offer(self, chunk: ResolvedChunk) -> None:
        """Offer ``chunk`` to every feed and wait for those that keep up."""
        waiting = [(f, done) for f in self._feeds if (done := f.offer(chunk)) is not None]
        deadline = time.monotonic() + self._wait_s
        for feed, done in waiting:
            if not done.wait(max(0.0, deadline - time.monotonic())):
                feed.fell_behind()


class Pipeline:
    """The resolve stage and a feed for each stage after it, started and stopped together.

    ``stages`` are the stages after resolve, in no particular order: each runs on its own.
    ``elsewhere`` are the stages after resolve that run in other processes (pruning waits
    for them). ``busy`` tells the resolve stage that collecting is busy (it then yields the
    GIL after each chunk; see :class:`~patchbay.resolve.stage.StageRunner`). Each stage backs
    off from a full store by ``clock``, shown in ``registry`` (:mod:`patchbay.backoff`).
    ``assignment`` gives the partitions this process owns (every one by default; the
    caller closes it, after :meth:`stop`).
    """

    def __init__(
        self,
        backend: Backend,
        service: ResolveService,
        stages: Sequence[Stage],
        busy: Callable[[], bool] | None = None,
        chunk: int = 1000,
        buffer_chunks: int = DEFAULT_BUFFER_CHUNKS,
        elsewhere: Sequence[StageElsewhere] = (),
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        assignment: Assignment | None = None,
    ) -> None:
        self._backend = backend
        self._elsewhere = tuple(elsewhere)
        owned = (assignment or AllPartitions(backend.log.partitions)).owned
        self.feeds = [
            StageFeed(
                s,
                backend,
                buffer_chunks,
                backoff=StorageBackoff(s.name, clock, registry),
                owned=owned,
                fenced=fenced_counter(registry, s.name) if registry is not None else None,
            )
            for s in stages
        ]
        fenced = fenced_counter(registry, "resolve") if registry is not None else None
        self.resolve = ResolveStage(
            backend.log,
            backend.state,
            service.resolver,
            [Fanout(self.feeds)],
            chunk,
            owned=owned,
            fenced=fenced.inc if fenced is not None else None,
        )
        service.attach(self.resolve)
        self._service = service
        self._runner = StageRunner(
            self._step, busy=busy, backoff=StorageBackoff("resolve", clock, registry)
        )
        self._pruned_at = time.monotonic()

    def _step(self) -> int:
        done = self._service.step(self.resolve)
        if time.monotonic() - self._pruned_at >= PRUNE_INTERVAL_S:
            self.prune()
        return done

    def prune(self) -> int:
        """Drop the resolved users every stage has handled; return how many. Nothing is
        dropped while a stage keeps the history (it reads it to build what is new)."""
        self._pruned_at = time.monotonic()
        if any(getattr(feed.stage, "keeps_history", False) for feed in self.feeds) or any(
            stage.keeps_history for stage in self._elsewhere
        ):
            return 0
        upto = self.passed()
        return self._backend.state.forget_resolved(upto) if upto else 0

    def passed(self) -> Checkpoint:
        """How far every stage got, by partition: the lowest of the committed checkpoints
        of resolve and of each stage after it, here or elsewhere (a partition one of them
        has no checkpoint of is left out). What retention may remove from the log."""
        return lowest(
            self._backend.state.checkpoint(),
            *(feed.committed for feed in self.feeds),
            *(self._backend.positions.get(stage.name) for stage in self._elsewhere),
        )

    @property
    def error(self) -> BaseException | None:
        """The last error of the resolve stage."""
        return self._runner.error

    @property
    def backoff(self) -> StorageBackoff:
        """The resolve stage's back-off from a full store."""
        return self._runner.backoff

    def wake(self) -> None:
        """New batches are in the log (callable from any thread)."""
        self._runner.wake()

    def start(self) -> None:
        """Start the stages after resolve, then resolve."""
        for feed in self.feeds:
            feed.start()
        self._runner.start()

    def stop(self) -> None:
        """Stop resolve (its last commit included), then every stage after it."""
        try:
            self._runner.stop()
            self.resolve.close()
        finally:
            for feed in self.feeds:
                feed.stop()
