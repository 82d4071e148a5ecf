"""Retention (:mod:`patchbay.retention`): the log keeps what its limits say and never a
batch a stage has not passed; the dedup index keeps its window; freed space is reused or
given back, so a store under steady load stops growing."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchbay import server as server_module
from patchbay.backends import Backend
from patchbay.backends.memory import open_memory
from patchbay.backends.records import (
    Checkpoint,
    Delivery,
    LogExtent,
    LogPosition,
    StateChanges,
)
from patchbay.backends.sqlite import DB_FILE, DELIVERIES_FILE, open_sqlite
from patchbay.backends.sqlite.db import SqliteDatabase
from patchbay.clock import ManualClock
from patchbay.collect.appender import append_new
from patchbay.partner.lambda_local import BackgroundServer
from patchbay.pipeline import Pipeline, StageElsewhere
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.retention import Retention, RetentionPolicy, retained
from patchbay.server import create_app
from patchbay.settings import Settings
from tests.backends.helpers import ALL, batch
from tests.conftest import Server, run_cli

DAY_MS = 24 * 3600 * 1000
WEEK = RetentionPolicy(max_age_ms=7 * DAY_MS, max_bytes=None, dedup_window_ms=30 * DAY_MS)
#: A week of batches, two of de-duplication keys.
WEEKS = RetentionPolicy(max_age_ms=7 * DAY_MS, max_bytes=None, dedup_window_ms=14 * DAY_MS)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened = open_memory() if request.param == "memory" else open_sqlite(tmp_path / "data")
    yield opened
    opened.close()


def everything_passed(backend: Backend) -> Checkpoint:
    """Every stage is at the end of the log."""
    return {
        p: end for p in range(backend.log.partitions) if (end := backend.log.end(p)) is not None
    }


def retention(
    backend: Backend,
    clock: ManualClock,
    policy: RetentionPolicy = WEEK,
    passed: Checkpoint | None = None,
    step: int = 3,
) -> Retention:
    """Retention with ``passed`` as every stage's checkpoint (default: the end of the log);
    a small ``step`` so that the tests go through several delete transactions."""
    return Retention(
        backend,
        policy,
        clock,
        lambda: everything_passed(backend) if passed is None else passed,
        step=step,
    )


def append_at(
    backend: Backend, *times_ms: int, size: int = 10, body: bytes | None = None
) -> list[LogPosition]:
    """One batch received at each time, with ``body`` (default: ``size`` bytes); their
    keys recorded."""
    content = b"x" * size if body is None else body
    news = [batch(body=content, at=t, srid=f"r{t}-{i}") for i, t in enumerate(times_ms)]
    result = append_new(backend.log, backend.dedup, news, 0)
    return [p for p in result.positions if p is not None]


def kept(backend: Backend) -> list[LogPosition]:
    return [s.position for s in backend.log.read(0, None, ALL)]


def test_age_removes_exactly_the_batches_older_than_the_limit(backend: Backend) -> None:
    clock = ManualClock()
    now = clock.now_ms()
    cutoff = now - 7 * DAY_MS
    positions = append_at(backend, now - 10 * DAY_MS, now - 8 * DAY_MS, cutoff - 1, cutoff, now)
    report = retention(backend, clock, step=2).run()
    assert report.removed == {0: 3}
    assert report.upto == {0: positions[2]}
    assert kept(backend) == positions[3:]  # the batch received at the cutoff stays
    assert backend.log.extent(0) == LogExtent(2, 20, positions[2])
    assert retention(backend, clock).run().removed == {}
    clock.advance(1.0)  # 1 ms past: the batch at the old cutoff is now older than a week
    assert retention(backend, clock).run().removed == {0: 1}
    assert kept(backend) == positions[4:]


def test_size_removes_the_oldest_batches_beyond_the_limit(backend: Backend) -> None:
    clock = ManualClock()
    positions = append_at(backend, *range(10), size=100)
    policy = RetentionPolicy(max_age_ms=None, max_bytes=450, dedup_window_ms=DAY_MS)
    assert retention(backend, clock, policy).run().removed == {0: 6}
    assert kept(backend) == positions[6:]
    assert backend.log.extent(0).size == 400
    positions += append_at(backend, 20, size=100)
    assert retention(backend, clock, policy).run().removed == {0: 1}
    assert kept(backend) == positions[7:]


def test_no_limit_keeps_everything(backend: Backend) -> None:
    clock = ManualClock()
    positions = append_at(backend, 0, 1, 2)
    forever = RetentionPolicy(max_age_ms=None, max_bytes=None, dedup_window_ms=DAY_MS)
    assert retention(backend, clock, forever).run().removed == {}
    assert kept(backend) == positions


def test_never_a_batch_a_stage_has_not_passed(backend: Backend) -> None:
    """However old, a batch after the lowest checkpoint stays; none goes while a stage
    has no checkpoint at all."""
    clock = ManualClock()
    positions = append_at(backend, *range(8))
    assert retention(backend, clock, passed={}).run().removed == {}
    assert kept(backend) == positions
    assert retention(backend, clock, passed={0: positions[4]}).run().removed == {0: 5}
    assert kept(backend) == positions[5:]


def test_the_lowest_of_every_stage_checkpoint_bounds_removal() -> None:
    """:meth:`Pipeline.passed` is the lowest of resolve's, each stage's here and each
    stage's elsewhere: retention through it stops at the slowest."""
    backend = open_memory()
    clock = ManualClock()
    positions = append_at(backend, *range(8))
    backend.state.commit(StateChanges(), {0: positions[6]})  # resolve
    backend.positions.commit("fast", {0: positions[5]})
    backend.positions.commit("slow", {0: positions[2]})  # segment, in another process

    class Stage:
        name = "fast"

        def handle(self, batches: object) -> None: ...

    service = ResolveService(backend.state, Resolver(IdentityStrategy()), clock)
    pipeline = Pipeline(backend, service, [Stage()], elsewhere=[StageElsewhere("slow", True)])
    assert pipeline.passed() == {0: positions[2]}
    with_pipeline = Retention(backend, WEEK, clock, pipeline.passed)
    assert with_pipeline.run().removed == {0: 3}
    assert kept(backend) == positions[3:]
    backend.positions.commit("slow", {0: positions[7]})
    assert with_pipeline.run().removed == {0: 3}  # up to "fast", now the slowest
    assert kept(backend) == positions[6:]


def test_unrecorded_dedup_keys_hold_their_batches(backend: Backend) -> None:
    """The batches whose keys the dedup index has not recorded yet (recovered from the
    log at start) stay."""
    clock = ManualClock()
    positions = append_at(backend, 0, 1)
    late = backend.log.append([batch(at=2, srid="late")])  # appended, keys not recorded
    assert retention(backend, clock).run().removed == {0: 2}
    assert kept(backend) == late
    assert positions[-1] < late[0]


def test_derived_state_is_kept_and_resolved_users_go_with_their_batches(
    backend: Backend,
) -> None:
    """Profiles, audience state and deliveries stay; the users resolve recorded for the
    removed batches go with them, so a read-back never pairs a batch with another's."""
    clock = ManualClock()
    positions = append_at(backend, 0, 1, 2, clock.now_ms())
    delivery = Delivery("d1", "hook", "c1", positions[0].offset, b"{}", 0, 0, 0)
    backend.outbox.enqueue([delivery])
    changes = StateChanges(resolved=[(p, 100 + i) for i, p in enumerate(positions)])
    backend.state.commit(changes, {0: positions[-1]})
    profiles = backend.state.count_profiles()
    assert retention(backend, clock).run().removed == {0: 3}
    assert backend.state.resolved(0, None, ALL) == [(positions[3], 103)]
    assert backend.state.count_profiles() == profiles
    assert backend.outbox.get_delivery("d1") == delivery


def test_dedup_keeps_its_window_whatever_the_log_retention(backend: Backend) -> None:
    """A key outlives its batch when the log retention is shorter than the window (a
    repeat is still recognised), and goes once older than the window, in steps."""
    clock = ManualClock()
    now = clock.now_ms()
    policy = RetentionPolicy(max_age_ms=DAY_MS, max_bytes=None, dedup_window_ms=30 * DAY_MS)
    append_at(backend, now - 40 * DAY_MS, now - 31 * DAY_MS, now - 2 * DAY_MS, now)
    report = retention(backend, clock, policy).run()
    assert report.removed == {0: 3}
    assert report.dedup_forgotten == 2
    keys = [("input-1", f"r{now - 2 * DAY_MS}-2"), ("input-1", f"r{now}-3")]
    assert backend.dedup.seen(keys, 0) == set(keys)
    gone = [("input-1", f"r{now - 40 * DAY_MS}-0")]
    assert backend.dedup.seen(gone, 0) == set()


def test_removed_batches_are_reported(backend: Backend) -> None:
    """What reprocess and audience builds print: the range retained and what was removed."""
    clock = ManualClock()
    now = clock.now_ms()
    positions = append_at(backend, now - 8 * DAY_MS, now)
    (before,) = retained(backend.log)
    assert before.removed is None
    assert before.describe().endswith(f"to {positions[1]}")
    retention(backend, clock).run()
    (after,) = retained(backend.log)
    assert after.oldest is not None and after.oldest.position == positions[1]
    assert after.describe() == (
        f"{positions[1]} (received 2023-11-14T22:13:20+00:00) to {positions[1]};"
        f" up to {positions[0]} removed by retention"
    )
    assert after.document()["removed_upto"] == str(positions[0])


# -- space: reused or given back (SQLite) --------------------------------------------------


def pages(path: Path) -> tuple[int, int]:
    """The page count and free pages of a database file (as a reader sees it)."""
    conn = sqlite3.connect(path)
    try:
        return (
            conn.execute("PRAGMA page_count").fetchone()[0],
            conn.execute("PRAGMA freelist_count").fetchone()[0],
        )
    finally:
        conn.close()


def test_the_log_file_levels_off_under_steady_load(tmp_path: Path) -> None:
    """Write a day, retain a week (and keys for two), for several weeks: once the first
    ones are removed, the pages they freed take the next day's, and the file stops
    growing."""
    backend = open_sqlite(tmp_path / "data")
    clock = ManualClock()
    counts = []
    try:
        for _ in range(30):
            append_at(backend, *[clock.now_ms()] * 50, size=2000)
            clock.advance(24 * 3600.0)
            retention(backend, clock, WEEKS, step=100).run()
            counts.append(pages(tmp_path / "data" / DB_FILE)[0])
    finally:
        backend.close()
    assert counts[7] > counts[0] * 5  # it grew while the first week filled,
    assert counts[-1] < counts[7] * 1.05  # hardly after (the keys' second week),
    assert len(set(counts[20:])) == 1  # and not at all once both limits are reached


def test_a_drained_outbox_gives_its_space_back(tmp_path: Path) -> None:
    """deliveries.db after its backlog drained: its free pages go back to the file system
    (beyond what is kept for reuse), and the file shrinks."""
    backend = open_sqlite(tmp_path / "data")
    path = tmp_path / "data" / DELIVERIES_FILE
    try:
        backlog = [Delivery(f"d{i}", "hook", "c1", i, b"p" * 4000, 0, 0, 0) for i in range(3000)]
        backend.outbox.enqueue(backlog)
        full, _ = pages(path)
        backend.outbox.succeeded_many([d.id for d in backlog])
        assert pages(path)[1] > full * 0.9  # freed, not given back
        reclaimed = backend.files.reclaim(0, 0.0)
        assert reclaimed > 0
        after, free = pages(path)
        assert free == 0
        assert after < full * 0.05
    finally:
        backend.close()


def test_a_store_made_before_incremental_vacuum_is_rewritten_once(tmp_path: Path) -> None:
    """An existing file without auto_vacuum is rewritten (VACUUM) the first time it is
    opened, keeping its batches and counting them; later opens leave it alone."""
    data = tmp_path / "data"
    backend = open_sqlite(data)
    positions = append_at(backend, 1, 2, 3, size=5)
    backend.close()
    conn = sqlite3.connect(data / DB_FILE, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")  # as a store made before
    conn.execute("DROP TABLE log_extent")  # and before the extent was kept
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    backend = open_sqlite(data)
    try:
        conn = sqlite3.connect(data / DB_FILE)
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
        conn.close()
        assert kept(backend) == positions
        assert backend.log.extent(0) == LogExtent(3, 15, None)
    finally:
        backend.close()
    assert not SqliteDatabase(data / DB_FILE).use_incremental_vacuum()  # done: never again


# -- what reprocess says, what /metrics shows ----------------------------------------------


def test_reprocess_says_which_range_it_covers(tmp_path: Path) -> None:
    """``patchbay reprocess`` prints the batches it replays and what retention removed."""
    data = tmp_path / "data"
    backend = open_sqlite(data)
    clock = ManualClock()
    now = clock.now_ms()
    body = b'{"user_identities": {"customer_id": "c1"}, "events": []}'
    positions = append_at(backend, now - 9 * DAY_MS, now - 8 * DAY_MS, now, now, body=body)
    assert retention(backend, clock).run().removed == {0: 2}
    backend.close()
    done = run_cli("reprocess", data_dir=data)
    assert done.returncode == 0, done.stderr
    assert (
        f"log partition 0: {positions[2]} (received 2023-11-14T22:13:20+00:00) to"
        f" {positions[3]}; up to {positions[1]} removed by retention"
    ) in done.stderr
    assert "the batches removed by retention are not replayed" in done.stderr
    assert "resolved 2 batches" in done.stderr


def test_metrics_show_store_sizes_and_the_oldest_batch(server: Server) -> None:
    assert server.post("/v2/events", b'{"events": []}')[0] == 202
    status, body = server.get("/metrics")
    assert status == 200
    text = body.decode()
    for name in ("patchbay.db", "state.db", "deliveries.db", "segment.db"):
        assert f'patchbay_store_size_bytes{{file="{name}"}}' in text
    oldest = [
        line
        for line in text.splitlines()
        if line.startswith('patchbay_log_oldest_batch_timestamp_seconds{partition="0"}')
    ]
    assert len(oldest) == 1 and float(oldest[0].split()[-1]) > 1.7e9
    assert 'patchbay_log_retained_batches{partition="0"} 1.0' in text


def test_the_server_applies_retention_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` runs passes on its own, once every stage has the batches (resolve,
    activate and segment here, on threads), and keeps what is within the limit."""
    monkeypatch.setattr(server_module, "RETENTION_INTERVAL_S", 0.05)
    backend = open_sqlite(tmp_path / "data")
    clock = ManualClock()
    now = clock.now_ms()
    body = b'{"user_identities": {"customer_id": "c1"}, "events": []}'
    positions = append_at(backend, now - 9 * DAY_MS, now - 8 * DAY_MS, now, body=body)
    settings = Settings(data_dir=tmp_path / "data", delivery_process=False, segment_process=False)
    app = create_app(settings, backend=backend, clock=clock)
    with BackgroundServer(app).start():
        deadline = time.monotonic() + 30
        while backend.log.extent(0).removed != positions[1]:
            assert time.monotonic() < deadline, "retention did not run"
            time.sleep(0.02)
        assert kept(backend) == positions[2:]
        assert backend.state.count_profiles() == 1  # what resolve derived stays
