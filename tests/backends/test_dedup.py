"""The contract of :class:`~patchbay.backends.abstract.DedupIndex`, and of appending with
de-duplication over a log and an index (:func:`~patchbay.collect.appender.append_new` and
:class:`~patchbay.collect.appender.GroupCommitAppender`), on every backend."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.abstract import Backend, BatchLog, DedupIndex
from patchbay.backends.records import (
    DedupKey,
    LogEntry,
    LogExtent,
    LogPosition,
    NewBatch,
    StoredBatch,
)
from patchbay.collect.appender import (
    AppendResult,
    GroupCommitAppender,
    append_new,
    recover_dedup,
)
from tests.backends.conftest import spec_of
from tests.backends.helpers import (
    as_stored,
    batch,
    bodies,
    everything,
    increasing_per_partition,
    stored,
)
from tests.deployments import BACKENDS, PARTITIONED, BackendSpec, Stores

POSITION = LogPosition(0, 1)


@pytest.fixture(params=BACKENDS + PARTITIONED, ids=lambda s: s.name)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """Every backend, and logs of several partitions."""
    return spec_of(request)


@pytest.fixture
def dedup(backend: Backend) -> DedupIndex:
    return backend.dedup


def append(backend: Backend, news: Sequence[NewBatch], since_ms: int) -> AppendResult:
    return append_new(backend.log, backend.dedup, news, since_ms)


# -- the index -----------------------------------------------------------------------------


def test_empty_index(dedup: DedupIndex) -> None:
    """A new index has seen nothing and forgets nothing."""
    assert dedup.seen([("input-1", "a")], 0) == set()
    assert dedup.seen([], 0) == set()
    assert dedup.forget_before(10**15) == 0
    dedup.record([], {})
    assert dedup.seen([("input-1", "a")], 0) == set()


def test_seen_since_is_inclusive(dedup: DedupIndex) -> None:
    """A key counts as seen from ``since_ms`` at or before the time it was recorded."""
    dedup.record([(("input-1", "a"), 1_000, POSITION)], {})
    assert dedup.seen([("input-1", "a")], 999) == {("input-1", "a")}
    assert dedup.seen([("input-1", "a")], 1_000) == {("input-1", "a")}
    assert dedup.seen([("input-1", "a")], 1_001) == set()


def test_seen_is_per_input_and_returns_only_recorded_keys(dedup: DedupIndex) -> None:
    """Keys are (input, request id) pairs; only those asked about and recorded come back,
    however many are asked at once."""
    recorded: list[DedupKey] = [(f"input-{i % 3}", f"r{i}") for i in range(0, 500, 2)]
    dedup.record([(k, 1_000, POSITION) for k in recorded], {})
    asked: list[DedupKey] = [(f"input-{i % 3}", f"r{i}") for i in range(300)]
    asked += [("input-9", "r0"), ("input-1", "r0")]  # r0 was recorded for input-0 only
    assert dedup.seen(asked, 0) == set(recorded[:150])


def test_recording_a_key_again_keeps_the_newest(dedup: DedupIndex) -> None:
    """Recording a key twice (in two calls or in one) keeps the last time recorded."""
    key = ("input-1", "a")
    dedup.record([(key, 1_000, POSITION)], {})
    dedup.record([(key, 5_000, POSITION)], {})
    assert dedup.seen([key], 3_000) == {key}
    assert dedup.forget_before(3_000) == 0
    other = ("input-1", "b")
    dedup.record([(other, 5_000, POSITION), (other, 1_000, POSITION)], {})
    assert dedup.seen([other], 3_000) == set()
    assert dedup.forget_before(3_000) == 1
    assert dedup.seen([key, other], 0) == {key}


def test_forget_before_drops_strictly_older_keys(dedup: DedupIndex) -> None:
    """``forget_before`` drops the keys received strictly before it, and counts them."""
    dedup.record([((f"input-{t}", "r"), t, POSITION) for t in (1_000, 2_000, 3_000)], {})
    assert dedup.forget_before(1_000) == 0
    assert dedup.forget_before(2_000) == 1
    assert dedup.forget_before(2_000) == 0
    assert dedup.seen([("input-1000", "r"), ("input-2000", "r")], 0) == {("input-2000", "r")}
    assert dedup.forget_before(3_001) == 2
    assert dedup.seen([("input-2000", "r"), ("input-3000", "r")], 0) == set()


def test_forget_before_with_a_limit_drops_the_oldest_first(dedup: DedupIndex) -> None:
    """With ``limit``, at most that many keys go, the oldest first (retention deletes in
    short steps)."""
    times = (4_000, 1_000, 3_000, 2_000, 9_000)
    dedup.record([((f"input-{t}", "r"), t, POSITION) for t in times], {})
    assert dedup.forget_before(5_000, limit=2) == 2
    left = dedup.seen([(f"input-{t}", "r") for t in times], 0)
    assert left == {("input-3000", "r"), ("input-4000", "r"), ("input-9000", "r")}
    assert dedup.forget_before(5_000, limit=10) == 2
    assert dedup.forget_before(5_000, limit=10) == 0
    assert dedup.seen([("input-9000", "r")], 0) == {("input-9000", "r")}


@pytest.mark.persists
def test_keys_persist_across_reopen(stores: Stores, backend: Backend) -> None:
    """Recorded keys are still seen after reopening."""
    backend.dedup.record([(("input-1", "a"), 1_000, POSITION)], {})
    backend.log.append([batch("commit")])  # the log's commit makes the keys durable too
    reopened = stores.reopen(backend)
    assert reopened.dedup.seen([("input-1", "a"), ("input-1", "b")], 0) == {("input-1", "a")}


def test_recorded_progress_only_moves_forward(dedup: DedupIndex) -> None:
    """``record`` keeps, per partition, the furthest position the log is recorded up to."""
    assert dedup.recorded() == {}
    dedup.record([], {0: LogPosition(0, 5)})
    dedup.record([(("input-1", "a"), 1_000, LogPosition(1, 2))], {1: LogPosition(1, 2)})
    dedup.record([], {0: LogPosition(0, 3)})  # an older position does not move it back
    assert dedup.recorded() == {0: LogPosition(0, 5), 1: LogPosition(1, 2)}


def test_append_new_records_progress_past_batches_without_keys(backend: Backend) -> None:
    """The progress covers every appended batch, keyed or not."""
    positions = stored(append(backend, [batch("a"), batch("b", srid="s")], 0).positions)
    recorded = backend.dedup.recorded()
    for position in positions:
        assert recorded[position.partition] >= position


def test_recover_dedup_records_what_an_append_left_unrecorded(backend: Backend) -> None:
    """Keys of batches appended without being recorded (a crash in between) are recorded
    from the log, and only those after the progress are read."""
    append(backend, [batch("first", srid="s1")], 0)
    lost = [batch(f"lost{i}", srid=f"l{i}", at=2_000 + i) for i in range(3)] + [batch("nokey")]
    backend.log.append(lost)  # appended, then "crashed" before recording
    assert backend.dedup.seen([("input-1", "l0")], 0) == set()
    assert recover_dedup(backend.log, backend.dedup, page=2) == 3
    assert backend.dedup.seen([("input-1", f"l{i}") for i in range(3)], 2_000) == {
        ("input-1", "l0"),
        ("input-1", "l1"),
        ("input-1", "l2"),
    }
    assert backend.dedup.seen([("input-1", "l0")], 2_001) == set()  # with its own time
    assert recover_dedup(backend.log, backend.dedup) == 0  # nothing left to record
    again = append(backend, [batch("retry", srid="l1", at=9_000)], 0)
    assert again.duplicates == 1


@pytest.mark.persists
def test_recover_dedup_after_reopen(stores: Stores, backend: Backend) -> None:
    """The progress persists: after a reopen only the unrecorded tail is read."""
    append(backend, [batch(f"b{i}", srid=f"s{i}") for i in range(4)], 0)
    backend.log.append([batch("tail", srid="t")])
    reopened = stores.reopen(backend)
    assert recover_dedup(reopened.log, reopened.dedup) == 1
    assert reopened.dedup.seen([("input-1", "t"), ("input-1", "s0")], 0) == {
        ("input-1", "t"),
        ("input-1", "s0"),
    }


# -- append_new ----------------------------------------------------------------------------


def test_append_new_without_duplicates(backend: Backend) -> None:
    """With nothing to skip, every batch is stored and its position returned."""
    news = [batch(f"b{i}", srid=f"s{i}") for i in range(5)]
    result = append(backend, news, 0)
    positions = stored(result.positions)
    assert (result.stored, result.duplicates) == (5, 0)
    assert everything(backend.log) == [
        as_stored(p, n) for p, n in zip(positions, news, strict=True)
    ]
    assert append(backend, [], 0).positions == []


def test_dedup_within_the_window(backend: Backend) -> None:
    """A batch whose key was stored within the window is skipped (position ``None``)."""
    assert append(backend, [batch("first", srid="req-1", at=1_000)], 0).stored == 1
    again = append(backend, [batch("again", srid="req-1", at=2_000)], 500)
    assert again.positions == [None]
    assert (again.stored, again.duplicates) == (0, 1)
    assert bodies(backend.log) == [b'{"tag":"first"}']


def test_dedup_window_includes_its_start(backend: Backend) -> None:
    """The window starts at ``dedup_since_ms`` inclusive."""
    append(backend, [batch("first", srid="req-1", at=1_000)], 0)
    assert append(backend, [batch("again", srid="req-1", at=2_000)], 1_000).positions == [None]
    assert append(backend, [batch("later", srid="req-1", at=2_000)], 1_001).stored == 1


def test_dedup_outside_the_window_stores_again(backend: Backend) -> None:
    """A key older than the window is stored again, and the window is then measured from
    the batch stored again."""
    (old,) = stored(append(backend, [batch("old", srid="req-1", at=1_000)], 0).positions)
    (new,) = stored(append(backend, [batch("new", srid="req-1", at=5_000)], 2_000).positions)
    assert new.partition == old.partition
    assert new > old
    assert append(backend, [batch("dup", srid="req-1", at=6_000)], 4_000).positions == [None]
    assert bodies(backend.log) == [b'{"tag":"old"}', b'{"tag":"new"}']


def test_dedup_within_one_append(backend: Backend) -> None:
    """A key repeated in the same append is stored once, the first time; keys are per
    input; batches without a request id are never duplicates."""
    news = [
        batch("a", srid="x"),
        batch("a-again", srid="x"),
        batch("b", srid="y"),
        batch("no-id-1"),
        batch("no-id-2"),
        batch("b-again", srid="y"),
        batch("x-other-input", srid="x", input_id="input-2"),
    ]
    result = append(backend, news, 0)
    assert [p is None for p in result.positions] == [False, True, False, False, False, True, False]
    assert (result.stored, result.duplicates) == (5, 2)
    assert increasing_per_partition(p for p in result.positions if p is not None)
    assert sorted(bodies(backend.log)) == sorted(
        [
            b'{"tag":"a"}',
            b'{"tag":"b"}',
            b'{"tag":"no-id-1"}',
            b'{"tag":"no-id-2"}',
            b'{"tag":"x-other-input"}',
        ]
    )
    one_input = [s.body for s in everything(backend.log) if s.input_id == "input-1"]
    assert one_input == [b'{"tag":"a"}', b'{"tag":"b"}', b'{"tag":"no-id-1"}', b'{"tag":"no-id-2"}']


def test_dedup_is_per_input(backend: Backend) -> None:
    """The same request id from two inputs is two batches."""
    append(backend, [batch("one", srid="same", input_id="input-1")], 0)
    assert append(backend, [batch("two", srid="same", input_id="input-2")], 0).stored == 1
    assert append(backend, [batch("three", srid="same", input_id="input-1")], 0).stored == 0
    assert append(backend, [batch("four", srid="same", input_id="input-2")], 0).stored == 0


def test_batches_without_source_request_id_are_never_duplicates(backend: Backend) -> None:
    """Without a ``source_request_id`` a batch is always stored."""
    for _ in range(3):
        assert append(backend, [batch("same"), batch("same")], 0).stored == 2
    assert len(everything(backend.log)) == 6


def test_forgotten_keys_are_stored_again(backend: Backend) -> None:
    """Keys forgotten (strictly older than the cut) no longer make duplicates; the others
    still do; forgetting drops no batch."""
    append(backend, [batch("a", srid="a", at=1_000), batch("b", srid="b", at=2_000)], 0)
    append(backend, [batch("c", srid="c", at=3_000)], 0)
    assert backend.dedup.forget_before(2_000) == 1
    assert backend.dedup.forget_before(2_000) == 0
    assert append(backend, [batch("a2", srid="a", at=4_000)], 0).stored == 1
    assert append(backend, [batch("b2", srid="b", at=4_000), batch("c2", srid="c")], 0).stored == 0
    assert len(everything(backend.log)) == 4
    assert backend.dedup.forget_before(10_000) == 3
    assert append(backend, [batch("b3", srid="b"), batch("c3", srid="c")], 0).stored == 2


def test_failed_append_records_no_key(backend: Backend) -> None:
    """When the log refuses an append, nothing is stored and no key is recorded: the batch
    sent again is stored."""
    append(backend, [batch("before")], 0)
    broken = NewBatch(
        batch_id="broken",
        input_id=None,  # type: ignore[arg-type]  # not a string: the log must refuse it
        received_at_ms=1_000,
        channel="server_to_server",
        body=b"{}",
    )
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own error type
        append(backend, [batch("good", srid="good"), broken], 0)
    assert bodies(backend.log) == [b'{"tag":"before"}']
    assert backend.dedup.seen([("input-1", "good")], 0) == set()
    assert append(backend, [batch("good", srid="good")], 0).stored == 1


@pytest.mark.persists
def test_duplicates_are_skipped_after_reopen(stores: Stores, backend: Backend) -> None:
    """Keys recorded by appends survive a reopen, and new positions follow the old ones."""
    news = [batch(f"b{i}", srid=f"s{i}") for i in range(3)]
    positions = stored(append(backend, news, 0).positions)
    reopened = stores.reopen(backend)
    assert append(reopened, [batch("dup", srid="s0")], 0).positions == [None]
    (later,) = stored(append(reopened, [batch("later")], 0).positions)
    assert later > positions[-1]


#: Few distinct times, so that a key often falls on the window's start.
_times = st.sampled_from([0, 1_000, 2_000, 3_000])
_appends = st.lists(
    st.tuples(
        _times,  # the window's start
        st.lists(  # the batches: input, request id (or none), received at
            st.tuples(st.integers(0, 1), st.none() | st.integers(0, 3), _times),
            max_size=5,
        ),
    ),
    max_size=8,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(appends=_appends)
def test_append_new_stores_what_the_window_allows(
    spec: BackendSpec, appends: list[tuple[int, list[tuple[int, int | None, int]]]]
) -> None:
    """Over any appends, a batch is skipped exactly when its key was stored at or after the
    window's start, or earlier in the same append; the log holds exactly the others."""
    with tempfile.TemporaryDirectory() as location:
        backend = spec.open(Path(location))
        try:
            last_stored: dict[DedupKey, int] = {}
            expected: list[str] = []
            for since_ms, specs in appends:
                news = [
                    batch(input_id=f"input-{i}", srid=None if r is None else f"r{r}", at=at)
                    for i, r, at in specs
                ]
                in_this: set[DedupKey] = set()
                wanted: list[bool] = []
                for new in news:
                    key = (
                        None
                        if new.source_request_id is None
                        else (new.input_id, new.source_request_id)
                    )
                    duplicate = key is not None and (
                        key in in_this or last_stored.get(key, since_ms - 1) >= since_ms
                    )
                    wanted.append(not duplicate)
                    if key is not None:
                        in_this.add(key)
                result = append(backend, news, since_ms)
                assert [p is not None for p in result.positions] == wanted
                for new, keep in zip(news, wanted, strict=True):
                    if keep:
                        expected.append(new.batch_id)
                        if new.source_request_id is not None:
                            last_stored[(new.input_id, new.source_request_id)] = new.received_at_ms
            assert sorted(s.batch_id for s in everything(backend.log)) == sorted(expected)
        finally:
            backend.close()


# -- group commit --------------------------------------------------------------------------


def test_group_commit_gives_each_caller_its_own_positions(backend: Backend) -> None:
    """Concurrent callers, committed in groups, each get the positions of their own
    batches, in order; together they are every batch stored."""
    appender = GroupCommitAppender(backend.log, backend.dedup, max_group_batches=40)

    async def one(caller: int) -> tuple[list[NewBatch], AppendResult]:
        news = [batch(f"{caller}-{i}", input_id=f"input-{caller % 3}") for i in range(caller % 5)]
        return news, await appender.append(news, 0)

    async def main() -> list[tuple[list[NewBatch], AppendResult]]:
        return await asyncio.gather(*(one(caller) for caller in range(300)))

    try:
        results = asyncio.run(main())
    finally:
        appender.close()

    found = {s.position: s for s in everything(backend.log)}
    seen: set[LogPosition] = set()
    for news, result in results:
        positions = stored(result.positions)
        assert len(positions) == len(news)
        assert increasing_per_partition(positions)
        for position, new in zip(positions, news, strict=True):
            assert found[position] == as_stored(position, new)
        assert seen.isdisjoint(positions)
        seen.update(positions)
    assert seen == set(found)
    assert len(seen) == sum(caller % 5 for caller in range(300))


def test_group_commit_deduplicates_across_callers(backend: Backend) -> None:
    """A request id sent by many concurrent callers is stored once."""
    appender = GroupCommitAppender(backend.log, backend.dedup)

    async def one(caller: int) -> AppendResult:
        return await appender.append(
            [batch(f"same-{caller}", srid="same"), batch(f"own-{caller}", srid=f"own-{caller}")],
            0,
        )

    async def main() -> list[AppendResult]:
        return await asyncio.gather(*(one(caller) for caller in range(50)))

    try:
        results = asyncio.run(main())
    finally:
        appender.close()
    assert sum(r.positions[0] is not None for r in results) == 1
    assert all(r.positions[1] is not None for r in results)
    assert len(everything(backend.log)) == 51


class FailingLog:
    """A batch log that waits for a gate, then fails (or passes through) every append."""

    def __init__(self, inner: BatchLog) -> None:
        self.inner = inner
        self.partitions = inner.partitions
        self.gate = threading.Event()
        self.fail = True
        self.calls = 0

    def append(self, batches: Sequence[NewBatch]) -> list[LogPosition]:
        self.calls += 1
        assert self.gate.wait(30)
        if self.fail:
            raise OSError("disk on fire")
        return self.inner.append(batches)

    def unsettled(self) -> int:
        return 0

    def read(self, partition: int, after: LogPosition | None, limit: int) -> list[StoredBatch]:
        raise NotImplementedError

    def end(self, partition: int) -> LogPosition | None:
        raise NotImplementedError

    def oldest(self, partition: int, limit: int) -> list[LogEntry]:
        raise NotImplementedError

    def remove(self, partition: int, upto: LogPosition) -> int:
        raise NotImplementedError

    def extent(self, partition: int) -> LogExtent:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def test_group_commit_propagates_a_store_error_to_every_waiter(backend: Backend) -> None:
    """When the log fails, every caller of the failed group gets the error, no key is
    recorded, and the appender keeps working once the log recovers."""
    failing = FailingLog(backend.log)
    appender = GroupCommitAppender(failing, backend.dedup)

    async def main() -> tuple[list[AppendResult | BaseException], int, AppendResult]:
        tasks = [
            asyncio.create_task(appender.append([batch(f"{i}", srid=f"s{i}")], 0))
            for i in range(20)
        ]
        while failing.calls == 0:  # the first append is in the log, the rest queued
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        failing.gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        calls = failing.calls
        failing.fail = False  # the log recovers: the appender must still work
        after = await appender.append([batch("after", srid="s0")], 0)
        return outcomes, calls, after

    try:
        outcomes, calls, after = asyncio.run(main())
    finally:
        appender.close()
    assert len(outcomes) == 20
    for outcome in outcomes:
        assert isinstance(outcome, OSError)
        assert str(outcome) == "disk on fire"
    # The callers queued behind the blocked append failed together, as one group.
    assert calls <= 2
    assert after.stored == 1
    assert bodies(backend.log) == [b'{"tag":"after"}']
