"""The pipeline of stages after resolve (:mod:`patchbay.pipeline`): every stage gets every
resolved batch, at least once and in log order, whatever another stage does; what a stage
could not take from memory it reads back from storage."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence

import pytest

from patchbay.activate.stage import ActivateStage
from patchbay.backends import Backend
from patchbay.backends.memory import open_memory
from patchbay.backends.records import (
    Checkpoint,
    Connection,
    Delivery,
    LogPosition,
    NewBatch,
    Output,
    Since,
    WebhookDestination,
)
from patchbay.clock import ManualClock
from patchbay.collect.appender import append_new
from patchbay.collect.decode import decode_batch
from patchbay.pipeline import Fanout, Pipeline, StageFeed
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolvedBatch, ResolvedChunk
from patchbay.resolve.strategy import IdentityStrategy
from tests.deployments import DEPLOYED, BackendSpec, Stores

INPUT = "input-1"


def new_batch(n: int, user: str | None = None) -> NewBatch:
    body = {
        "environment": "production",
        "user_identities": {"customer_id": user or f"c{n % 7}"},
        "events": [{"event_type": "custom_event", "data": {"event_name": f"e{n}"}}],
    }
    return NewBatch(
        str(uuid.uuid4()), INPUT, 1_000 + n, "server_to_server", json.dumps(body).encode()
    )


def append(backend: Backend, count: int, start: int = 0) -> list[LogPosition]:
    result = append_new(backend.log, backend.dedup, [new_batch(start + i) for i in range(count)], 0)
    return [p for p in result.positions if p is not None]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Recording:
    """A stage that remembers every batch it was handed (and may fail its first calls)."""

    def __init__(self, name: str = "recording", fail_first: int = 0) -> None:
        self.name = name
        self.fail_first = fail_first
        self.calls = 0
        self.seen: list[ResolvedBatch] = []
        self.lock = threading.Lock()

    def handle(self, batches: Sequence[ResolvedBatch]) -> None:
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail_first:
                raise RuntimeError("the stage failed")
            self.seen.extend(batches)

    def positions(self) -> list[LogPosition]:
        with self.lock:
            return [b.stored.position for b in self.seen]


class GatedOutbox:
    """A backend's outbox, with enqueues held at a gate: activate stalled."""

    def __init__(self, backend: Backend) -> None:
        self.inner = backend.outbox
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        self.waiting.set()
        assert self.gate.wait(60)
        return self.inner.enqueue(deliveries)


def pipeline(backend: Backend, stages: Sequence[object], **options: int) -> Pipeline:
    service = ResolveService(backend.state, Resolver(IdentityStrategy()), ManualClock(5_000))
    return Pipeline(backend, service, stages, **options)  # type: ignore[arg-type]


@pytest.fixture(params=DEPLOYED, ids=lambda s: s.name)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """Each deployment in turn: the pipeline's behaviour is the same on both."""
    spec: BackendSpec = request.param
    return spec


def connect_webhook(backend: Backend) -> None:
    backend.outputs.add_output(Output("hook", WebhookDestination("https://example.com/h"), 0, 0))
    backend.outputs.add_connection(Connection("c1", INPUT, "hook", 0))


def test_a_stage_gets_every_batch_while_activate_is_stalled(backend: Backend) -> None:
    connect_webhook(backend)
    gated = GatedOutbox(backend)
    activate = ActivateStage(backend.outputs, gated, backend.modules, ManualClock(5_000))  # type: ignore[arg-type]
    recording = Recording()
    # small chunks and buffers: the stalled stage's buffer overflows many times over
    running = pipeline(backend, [activate, recording], chunk=5, buffer_chunks=2)
    running.start()
    try:
        positions = append(backend, 100)
        running.wake()
        wait_for(lambda: recording.positions() == positions, "the recording stage")
        assert gated.waiting.is_set() and not gated.gate.is_set()  # activate is still stuck
        assert backend.outbox.stats() == {}

        gated.gate.set()  # activate resumes: it reads back what overflowed its buffer
        wait_for(lambda: backend.outbox.stats().get("hook") is not None, "deliveries")
        wait_for(lambda: backend.outbox.stats()["hook"].pending == 100, "every delivery")
    finally:
        gated.gate.set()
        running.stop()
    activate_feed = next(f for f in running.feeds if f.name == "activate")
    assert activate_feed.dropped > 0  # the read-back path was taken
    assert activate_feed.checkpoint == {0: positions[-1]}
    # every batch reached the recording stage once, in log order, with its user
    assert len({b.mpid for b in recording.seen}) == 7
    assert all(b.profile is not None for b in recording.seen)


def test_a_failing_stage_reads_back_what_it_missed(backend: Backend) -> None:
    failing = Recording("failing", fail_first=2)
    steady = Recording("steady")
    running = pipeline(backend, [failing, steady], chunk=10)
    running.start()
    try:
        positions = append(backend, 40)
        running.wake()
        wait_for(lambda: steady.positions() == positions, "the steady stage")
        wait_for(lambda: sorted(set(failing.positions())) == positions, "the failing stage")
    finally:
        running.stop()
    got = failing.positions()
    assert got == sorted(got)  # in log order, nothing skipped
    feed = next(f for f in running.feeds if f.name == "failing")
    assert isinstance(feed.error, RuntimeError)
    # what a stage reads back carries the user it resolved to and the profile as it is now
    mpids = {b.stored.position: b.mpid for b in steady.seen}
    assert all(mpids[b.stored.position] == b.mpid for b in failing.seen)


@pytest.mark.persists
def test_a_restarted_pipeline_resumes_each_stage_at_its_checkpoint(stores: Stores) -> None:
    backend = stores.open()
    first = Recording("a")
    running = pipeline(backend, [first])
    running.start()
    positions = append(backend, 30)
    running.wake()
    wait_for(lambda: first.positions() == positions, "stage a")
    running.stop()

    # more batches arrive while nothing runs; a stage "b" is added
    backend = stores.reopen(backend)
    more = append(backend, 20, start=30)
    again, added = Recording("a"), Recording("b")
    running = pipeline(backend, [again, added])
    running.start()
    try:
        running.wake()
        wait_for(lambda: again.positions() == more, "stage a, from its checkpoint")
        wait_for(lambda: added.positions() == positions + more, "the new stage, from the start")
    finally:
        running.stop()


def test_resolved_users_are_pruned_once_every_stage_has_them(backend: Backend) -> None:
    slow, fast = Recording("slow"), Recording("fast")
    running = pipeline(backend, [slow, fast])
    hold = threading.Event()
    original = slow.handle

    def held(batches: Sequence[ResolvedBatch]) -> None:
        assert hold.wait(30)
        original(batches)

    slow.handle = held  # type: ignore[method-assign]
    running.start()
    try:
        positions = append(backend, 10)
        running.wake()
        wait_for(lambda: fast.positions() == positions, "the fast stage")
        wait_for(lambda: len(backend.state.resolved(0, None, 100)) == 10, "resolve's commit")
        assert running.prune() == 0  # the slow stage has none of them yet
        assert len(backend.state.resolved(0, None, 100)) == 10
        hold.set()
        slow_feed = next(f for f in running.feeds if f.name == "slow")
        checkpoint = backend.state.checkpoint()
        wait_for(lambda: slow_feed.committed == checkpoint, "the slow stage's commit")
        assert slow.positions() == positions
        assert running.prune() == 10
        assert backend.state.resolved(0, None, 100) == []
    finally:
        hold.set()
        running.stop()


def test_a_full_buffer_drops_without_blocking(backend: Backend) -> None:
    stage = Recording()
    feed = StageFeed(stage, backend, buffer_chunks=1)
    # not started: nothing takes from the buffer, so the second offer finds it full
    chunk = ResolvedChunk(0, None, LogPosition(0, 1), [])
    feed.offer(chunk)
    feed.offer(chunk)
    assert feed.dropped == 1


def test_resolve_waits_for_a_stage_that_keeps_up_and_not_for_a_stuck_one(
    backend: Backend,
) -> None:
    """The fan-out returns once every stage that keeps up is done with the chunk (they run
    on resolve's time, not beside it); a stage that does not finish in time is not waited
    for again until it caught up."""
    steady, stuck = Recording("steady"), Recording("stuck")
    gate = threading.Event()
    original = stuck.handle

    def held(batches: Sequence[ResolvedBatch]) -> None:
        assert gate.wait(30)
        original(batches)

    stuck.handle = held  # type: ignore[method-assign]
    feeds = [StageFeed(steady, backend), StageFeed(stuck, backend)]
    fanout = Fanout(feeds, wait_s=0.5)
    for feed in feeds:
        feed.start()
    try:
        (position,) = append(backend, 1)
        stored = backend.log.read(0, None, 1)
        batch = ResolvedBatch(stored[0], decode_batch(stored[0].body), 7)
        chunk = ResolvedChunk(0, None, position, [batch])
        fanout.offer(chunk)
        assert steady.positions() == [position]  # done before the fan-out returned
        assert stuck.positions() == []
        later = ResolvedChunk(0, position, LogPosition(0, 2), [])
        assert feeds[1].offer(later) is None  # behind: not waited for
        assert feeds[0].offer(later) is not None  # still in step
        gate.set()
        wait_for(lambda: stuck.positions() == [position], "the stuck stage, released")
    finally:
        gate.set()
        for feed in feeds:
            feed.stop()


class Noting:
    """A stage that notes the batches it handles, and the partitions it was told to
    resume."""

    name = "noting"

    def __init__(self) -> None:
        self.handled: list[ResolvedBatch] = []
        self.resumed: list[set[int]] = []

    def handle(self, batches: Sequence[ResolvedBatch]) -> None:
        self.handled.extend(batches)

    def resume(self, partitions: Collection[int]) -> None:
        self.resumed.append(set(partitions))


def test_a_feed_goes_on_from_the_committed_checkpoint_of_each_partition_it_gains() -> None:
    """A feed processes the partitions owned now: a partition it gains goes on from the
    checkpoint committed then (another processor moved it meanwhile), not from what it
    held before it lost it, and the stage is told to resume it; a chunk of a partition it
    does not own is left alone."""
    backend = open_memory(partitions=2)
    owned = {0}
    stage = Noting()
    feed = StageFeed(stage, backend, idle_s=0.01, owned=lambda: frozenset(owned))
    feed.start()
    try:
        backend.positions.commit("noting", {1: LogPosition(1, 5)})  # another processor
        owned.add(1)
        wait_for(lambda: feed.checkpoint == {1: LogPosition(1, 5)}, "the feed")
        assert stage.resumed == [{1}]
        owned.discard(1)
        wait_for(lambda: 1 not in feed.checkpoint, "the feed")
        feed.offer(ResolvedChunk(1, LogPosition(1, 5), LogPosition(1, 6), []))
        backend.positions.commit("noting", {1: LogPosition(1, 9)})
        owned.add(1)
        wait_for(lambda: feed.checkpoint == {1: LogPosition(1, 9)}, "the feed")
        assert stage.resumed == [{1}, {1}]
    finally:
        feed.stop()
    assert backend.positions.get("noting") == {1: LogPosition(1, 9)}
    assert feed.fenced == 0


def test_a_feed_whose_partition_moved_on_drops_what_it_did_and_goes_on_from_there() -> None:
    """A feed's checkpoint commit is refused when another processor moved the partition
    on: it is counted, and the feed (and its stage) go on from the stored checkpoint."""
    backend = open_memory(partitions=1)
    stage = Noting()
    feed = StageFeed(stage, backend, idle_s=0.01)
    backend.positions.commit("noting", {0: LogPosition(0, 7)})  # the new owner's
    feed.start()
    try:
        feed.offer(ResolvedChunk(0, None, LogPosition(0, 3), []))
        wait_for(lambda: feed.fenced == 1, "the feed")
        wait_for(lambda: feed.checkpoint == {0: LogPosition(0, 7)}, "the feed")
    finally:
        feed.stop()
    assert stage.resumed == [{0}]
    assert backend.positions.get("noting") == {0: LogPosition(0, 7)}


class SyncNoting:
    """Positions that note whether each commit was synced."""

    def __init__(self, backend: Backend) -> None:
        self._positions = backend.positions
        self.synced: list[bool] = []

    def get(self, stage: str) -> Checkpoint:
        return self._positions.get(stage)

    def commit(
        self, stage: str, checkpoint: Checkpoint, since: Since | None = None, synced: bool = True
    ) -> None:
        self.synced.append(synced)
        self._positions.commit(stage, checkpoint, since, synced)

    def close(self) -> None:
        self._positions.close()


@pytest.mark.parametrize(("stage", "synced"), [(Noting(), False), (Recording(), True)])
def test_only_a_stage_with_its_own_checkpoint_commits_its_positions_unsynced(
    stage: Noting | Recording, synced: bool
) -> None:
    """A stage that commits its own checkpoint with its state (``resume``: the segment
    stage) needs its positions only as a bound of what it reads back: its feed commits
    them without an fsync; any other stage's are synced."""
    backend = open_memory(partitions=1)
    positions = SyncNoting(backend)
    feed = StageFeed(stage, dataclasses.replace(backend, positions=positions), idle_s=0.01)
    feed.start()
    try:
        feed.offer(ResolvedChunk(0, None, LogPosition(0, 3), []))
        wait_for(lambda: backend.positions.get(feed.name) != {}, "the feed")
    finally:
        feed.stop()
    assert positions.synced and set(positions.synced) == {synced}
