"""The contract of :class:`~patchbay.backends.abstract.BatchLog`, on every backend and on
a log of several partitions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.abstract import Backend, BatchLog
from patchbay.backends.records import LogEntry, LogExtent, LogPosition, NewBatch, StoredBatch
from tests.backends.conftest import spec_of
from tests.backends.helpers import (
    ALL,
    as_stored,
    batch,
    bodies,
    everything,
    increasing_per_partition,
)
from tests.deployments import BACKENDS, PARTITIONED, BackendSpec, Stores

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS + PARTITIONED, ids=lambda s: s.name)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """Every backend, and logs of several partitions."""
    return spec_of(request)


@pytest.fixture
def log(backend: Backend) -> BatchLog:
    return backend.log


def test_empty_log(log: BatchLog) -> None:
    """A new log has at least one partition, each empty: no end, nothing to read."""
    assert log.partitions >= 1
    for partition in range(log.partitions):
        assert log.end(partition) is None
        assert log.read(partition, None, 10) == []


def test_partitions_that_do_not_exist_are_empty(log: BatchLog) -> None:
    """Reading or asking the end of a partition out of range gives nothing, not an error."""
    log.append([batch(str(i), input_id=f"input-{i}") for i in range(6)])
    for partition in (-1, log.partitions, log.partitions + 5):
        assert log.read(partition, None, 10) == []
        assert log.end(partition) is None


def test_append_returns_positions_in_order(log: BatchLog) -> None:
    """An append returns one position per batch, in order; reading gives the batches back."""
    news = [batch(f"b{i}") for i in range(5)]
    positions = log.append(news)
    assert len(positions) == 5
    assert all(0 <= p.partition < log.partitions for p in positions)
    assert increasing_per_partition(positions)
    assert everything(log) == [as_stored(p, n) for p, n in zip(positions, news, strict=True)]
    assert log.end(positions[-1].partition) == positions[-1]


def test_positions_strictly_increase_across_appends(log: BatchLog) -> None:
    """Within a partition, positions only grow from one append to the next, and ``end`` is
    always the newest."""
    positions: list[LogPosition] = []
    for size in [1, 3, 0, 7, 1, 2, 0, 5]:
        appended = log.append([batch(f"{len(positions)}-{i}") for i in range(size)])
        assert len(appended) == size
        positions += appended
        if positions:
            assert log.end(positions[-1].partition) == positions[-1]
    assert len(positions) == 19
    assert increasing_per_partition(positions)
    assert [s.position for s in everything(log)] == positions


def test_empty_append_changes_nothing(log: BatchLog) -> None:
    """Appending no batch returns no position and moves no end."""
    log.append([batch("a")])
    before = [log.end(p) for p in range(log.partitions)]
    assert log.append([]) == []
    assert [log.end(p) for p in range(log.partitions)] == before
    assert bodies(log) == [b'{"tag":"a"}']


def test_stored_fields_round_trip(log: BatchLog) -> None:
    """Every field of a batch comes back as appended: unicode, large bodies, ip, flags."""
    news = [
        batch("plain"),
        batch("ip", ip="2001:db8::1", channel="partner", historical=True, at=1_234_567_890_123),
        batch(body='{"name":"Zoë 🎉","n":[1,2.5,null]}'.encode()),
        batch(body=b"[]" * 50_000),  # 100 kB
        batch(body=b""),
        batch(input_id="input-2", ip="10.0.0.1"),
    ]
    positions = log.append(news)
    found = {s.position: s for s in everything(log)}
    assert found == {p: as_stored(p, n) for p, n in zip(positions, news, strict=True)}
    assert all(s.position == p for p, s in found.items())


def test_read_pages_in_order(log: BatchLog) -> None:
    """Reading page after page from the last position read gives every batch once, in
    order; ``after`` is exclusive and ``limit`` caps a page."""
    news = [batch(f"b{i}") for i in range(25)]
    positions: list[LogPosition] = []
    for start in range(0, 25, 4):
        positions += log.append(news[start : start + 4])
    (partition,) = {p.partition for p in positions}  # one input's key: one partition

    pages: list[list[StoredBatch]] = []
    after: LogPosition | None = None
    while page := log.read(partition, after, 7):
        assert len(page) <= 7
        pages.append(page)
        after = page[-1].position
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    read = [s for p in pages for s in p]
    assert [s.position for s in read] == positions
    assert [s.batch_id for s in read] == [n.batch_id for n in news]

    assert [s.batch_id for s in log.read(partition, positions[9], 5)] == [
        n.batch_id for n in news[10:15]
    ]
    assert [s.position for s in log.read(partition, positions[8], 1)] == [positions[9]]
    assert [s.position for s in log.read(partition, None, 1)] == [positions[0]]


def test_read_boundaries(log: BatchLog) -> None:
    """``limit`` 0 reads nothing; reading after the end, or after a position past it, reads
    nothing; ``None`` reads from the start."""
    positions = log.append([batch(f"b{i}") for i in range(3)])
    partition = positions[0].partition
    end = log.end(partition)
    assert end == positions[-1]
    assert log.read(partition, None, 0) == []
    assert log.read(partition, positions[0], 0) == []
    assert log.read(partition, end, 10) == []
    assert log.read(partition, LogPosition(partition, end.offset + 1000), 10) == []
    assert [s.position for s in log.read(partition, None, ALL)] == positions


def test_failed_append_stores_nothing(log: BatchLog) -> None:
    """An append that fails part way (a bad batch after many good ones, past any
    statement or chunk size) stores none of its batches."""
    log.append([batch("before")])
    ends = [log.end(p) for p in range(log.partitions)]
    broken = NewBatch(
        batch_id="broken",
        input_id=None,  # type: ignore[arg-type]  # not a string: the backend must refuse it
        received_at_ms=1_000,
        channel="server_to_server",
        body=b"{}",
    )
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own error type
        log.append([*(batch(f"good-{i}") for i in range(70)), broken])
    assert [log.end(p) for p in range(log.partitions)] == ends
    assert bodies(log) == [b'{"tag":"before"}']
    assert log.unsettled() == 0  # refused before anything was sent: nothing to come


def test_nothing_is_unsettled_after_appends_that_returned(log: BatchLog) -> None:
    """Only an append that raised may leave batches to be stored later."""
    assert log.unsettled() == 0
    log.append([batch("one", srid="r1"), batch("two", user="u2")])
    log.append([batch("three")])
    assert log.unsettled() == 0


def test_one_users_batches_stay_in_one_partition_in_order(log: BatchLog) -> None:
    """All batches with one partition key (one user's) go to the same partition, in the
    order appended, whatever input sent them and whatever they are appended with."""
    users = [f"email:user{i}@example.com" for i in range(12)]
    appended: dict[str, list[LogPosition]] = {u: [] for u in users}
    ids: dict[str, list[str]] = {u: [] for u in users}
    for round_ in range(4):
        news = [
            batch(f"{round_}-{u}-{n}", input_id=f"input-{n}", user=u) for u in users for n in (1, 2)
        ]
        for new, position in zip(news, log.append(news), strict=True):
            assert new.partition_key is not None
            appended[new.partition_key].append(position)
            ids[new.partition_key].append(new.batch_id)
    for user, positions in appended.items():
        assert len({p.partition for p in positions}) == 1
        assert positions == sorted(positions)
        read = [s for s in everything(log) if s.batch_id in ids[user]]
        assert [s.batch_id for s in read] == ids[user]
        assert [s.position for s in read] == positions


def test_concurrent_appends_from_threads(log: BatchLog) -> None:
    """Appends from several threads at once: every position is unique, each thread sees its
    positions grow within each partition, and nothing is lost."""
    threads, rounds = 4, 15
    results: dict[int, list[tuple[NewBatch, LogPosition]]] = {t: [] for t in range(threads)}
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            start.wait()
            for n in range(rounds):
                news = [batch(f"{thread}-{n}-{i}", input_id=f"input-{i}") for i in range(3)]
                results[thread] += zip(news, log.append(news), strict=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    for done in results.values():
        assert increasing_per_partition(p for _, p in done)
    appended = {p: as_stored(p, n) for done in results.values() for n, p in done}
    assert len(appended) == threads * rounds * 3
    read = everything(log)
    assert len(read) == len(appended)
    assert {s.position: s for s in read} == appended
    assert increasing_per_partition(s.position for s in read)


@pytest.mark.persists
def test_batches_persist_across_reopen(stores: Stores, backend: Backend) -> None:
    """What was appended before closing is there after reopening, and new positions come
    after the old ones."""
    news = [batch(f"b{i}") for i in range(3)]
    positions = backend.log.append(news)
    reopened = stores.reopen(backend).log
    assert everything(reopened) == [as_stored(p, n) for p, n in zip(positions, news, strict=True)]
    assert reopened.end(positions[-1].partition) == positions[-1]
    (later,) = reopened.append([batch("later")])
    assert later.partition == positions[-1].partition
    assert later > positions[-1]


# -- crash ---------------------------------------------------------------------------------

#: Appends forever to the backend named argv[1] at argv[2], printing the number of each
#: append once it returned. Append n holds n % 3 + 1 batches with ids "n-i", of one user.
_APPENDER = """
import sys
from pathlib import Path
from patchbay.backends.records import NewBatch
from tests.deployments import BACKENDS, PARTITIONED

spec = next(s for s in BACKENDS + PARTITIONED if s.name == sys.argv[1])
log = spec.open(Path(sys.argv[2])).log
n = 0
while True:
    log.append([
        NewBatch(
            f"{n}-{i}", "crash", n, "server_to_server", b'{"pad":"%s"}' % (b"x" * 500),
            partition_key="user-1",
        )
        for i in range(n % 3 + 1)
    ])
    print(n, flush=True)
    n += 1
"""

#: Appends acknowledged before the child is killed.
_ACKED_BEFORE_KILL = 40


def _batch_ids(appends: int) -> list[str]:
    return [f"{n}-{i}" for n in range(appends) for i in range(n % 3 + 1)]


@pytest.mark.persists
@pytest.mark.slow
def test_sigkill_keeps_exactly_the_returned_appends(stores: Stores) -> None:
    """A process killed (SIGKILL) while appending in a loop leaves a log holding every
    append that returned, whole and in order, plus at most the one in flight: whole, or
    a prefix of it where appends are not atomic (all its batches are of one user)."""
    location = stores.location
    backend = stores.open()  # the store exists, on a server the child shares (tests/infra.py)
    child = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, stores.spec.name, str(location)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])},
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        while (line := child.stdout.readline()) and int(line) + 1 < _ACKED_BEFORE_KILL:
            pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    # every number printed before the kill, including any still buffered here
    acked = int(line) + 1 + len(child.stdout.read().split()) if line else 0
    errors = child.stderr.read().decode()
    child.stdout.close()
    child.stderr.close()
    assert acked >= _ACKED_BEFORE_KILL, errors
    assert child.returncode == -signal.SIGKILL

    found = [s.batch_id for s in everything(stores.reopen(backend).log)]
    if stores.spec.atomic:
        assert found in (_batch_ids(acked), _batch_ids(acked + 1))
    else:
        assert found == _batch_ids(acked + 1)[: len(found)]
        assert len(found) >= len(_batch_ids(acked))


# -- property ------------------------------------------------------------------------------

_operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(st.integers(0, 5), max_size=6)),
        st.tuples(st.just("read"), st.integers(0, 3), st.integers(0, 4)),
    ),
    max_size=12,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=_operations)
def test_any_appends_and_reads_give_each_batch_once_in_order(
    spec: BackendSpec, operations: list[tuple[object, ...]]
) -> None:
    """Whatever appends (of batches of any inputs) and reads (of any partition and limit)
    interleave, a reader that continues from its last position gets every batch of each
    partition exactly once, in the order appended."""
    with tempfile.TemporaryDirectory() as location:
        backend = spec.open(Path(location))
        try:
            log = backend.log
            appended: dict[int, list[str]] = {p: [] for p in range(log.partitions)}
            read: dict[int, list[StoredBatch]] = {p: [] for p in range(log.partitions)}

            def read_some(partition: int, limit: int) -> None:
                done = read[partition]
                page = log.read(partition, done[-1].position if done else None, limit)
                assert len(page) <= limit
                done += page

            for operation in operations:
                if operation[0] == "append":
                    inputs = operation[1]
                    assert isinstance(inputs, list)
                    news = [batch(input_id=f"input-{i}") for i in inputs]
                    for new, position in zip(news, log.append(news), strict=True):
                        appended[position.partition].append(new.batch_id)
                else:
                    partition, limit = operation[1], operation[2]
                    assert isinstance(partition, int) and isinstance(limit, int)
                    read_some(partition % log.partitions, limit)
            for partition in range(log.partitions):
                read_some(partition, ALL)
                assert [s.batch_id for s in read[partition]] == appended[partition]
                assert increasing_per_partition(s.position for s in read[partition])
        finally:
            backend.close()


# -- retention: oldest, remove, extent ---------------------------------------------------


def _by_partition(positions: list[LogPosition]) -> dict[int, list[LogPosition]]:
    parts: dict[int, list[LogPosition]] = {}
    for position in positions:
        parts.setdefault(position.partition, []).append(position)
    return parts


def test_a_new_log_retains_nothing(log: BatchLog) -> None:
    """An empty partition has no oldest batch, an extent of zero, nothing removed."""
    for partition in range(log.partitions):
        assert log.oldest(partition, 10) == []
        assert log.extent(partition) == LogExtent(0, 0, None)
        assert log.remove(partition, LogPosition(partition, 10**9)) == 0
        assert log.end(partition) is None


def test_oldest_and_extent_follow_appends(log: BatchLog) -> None:
    """``oldest`` gives the first batches with their time and body size; ``extent`` counts
    every batch and byte retained."""
    news = [batch(input_id=f"input-{i % 4}", at=1_000 + i, body=b"x" * (10 + i)) for i in range(12)]
    positions = log.append(news)
    for partition, mine in _by_partition(positions).items():
        entries = [
            LogEntry(p, n.received_at_ms, len(n.body))
            for p, n in zip(positions, news, strict=True)
            if p.partition == partition
        ]
        assert log.oldest(partition, 2) == entries[:2]
        assert log.oldest(partition, ALL) == entries
        assert log.extent(partition) == LogExtent(len(mine), sum(e.size for e in entries), None)


def test_remove_takes_the_oldest_up_to_a_position(log: BatchLog) -> None:
    """``remove`` deletes exactly the batches at or before the position, counts them, and
    leaves every later batch readable (also after a removed position); the extent and
    ``end`` follow; positions keep growing."""
    news = [batch(f"b{i}", input_id=f"input-{i % 3}", body=b"y" * (i + 1)) for i in range(15)]
    positions = log.append(news)
    sizes = {p: len(n.body) for p, n in zip(positions, news, strict=True)}
    for partition, mine in _by_partition(positions).items():
        cut = mine[len(mine) // 2]
        kept = [p for p in mine if p > cut]
        assert log.remove(partition, cut) == len(mine) - len(kept)
        assert [s.position for s in log.read(partition, None, ALL)] == kept
        assert [s.position for s in log.read(partition, mine[0], ALL)] == kept
        assert [e.position for e in log.oldest(partition, ALL)] == kept
        assert log.extent(partition) == LogExtent(len(kept), sum(sizes[p] for p in kept), cut)
        assert log.end(partition) == mine[-1]
        assert log.remove(partition, cut) == 0  # nothing left at or before it
    ends = {p: mine[-1] for p, mine in _by_partition(positions).items()}
    more = log.append([batch("late", input_id=f"input-{i}") for i in range(3)])
    assert all(p > ends[p.partition] for p in more if p.partition in ends)


def test_removing_everything_keeps_the_end(log: BatchLog) -> None:
    """A partition emptied by retention still has its end, and the next batch comes after it."""
    first = log.append([batch("a"), batch("b")])
    partition = first[-1].partition
    assert log.remove(partition, first[-1]) == 2
    assert log.read(partition, None, ALL) == []
    assert log.end(partition) == first[-1]
    assert log.extent(partition) == LogExtent(0, 0, first[-1])
    later = log.append([batch("c")])
    assert later[0] > first[-1]
    assert log.end(partition) == later[0]
    assert [s.position for s in log.read(partition, None, ALL)] == later


@pytest.mark.persists
def test_removal_persists_across_reopen(stores: Stores, backend: Backend) -> None:
    """What was removed stays removed, and the extent is the same after reopening."""
    positions = backend.log.append([batch(str(i), body=b"z" * 7) for i in range(5)])
    partition = positions[0].partition  # one input's key: one partition
    backend.log.remove(partition, positions[1])
    extent = backend.log.extent(partition)
    assert extent == LogExtent(3, 21, positions[1])
    reopened = stores.reopen(backend)
    assert reopened.log.extent(partition) == extent
    assert [s.position for s in reopened.log.read(partition, None, ALL)] == positions[2:]
