"""The stages on a full store (SQLite's real ``SQLITE_FULL``, :func:`tests.backends.helpers.fill`):
each backs off by its clock, 1 s, 2 s, 4 s..., logs one warning and one info line, and once
there is room reads back from its checkpoint everything it missed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import msgspec
import pytest

from patchbay.activate.stage import ActivateStage
from patchbay.backends.abstract import Backend
from patchbay.backends.records import AudienceRecord
from patchbay.backends.sqlite import open_sqlite
from patchbay.backoff import StorageBackoff
from patchbay.collect.appender import append_new
from patchbay.pipeline import Pipeline, StageFeed
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolvedBatch, ResolveStage
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.segment.criteria import Definition, EventCondition, EventMatch
from patchbay.segment.parse import definition_document
from patchbay.segment.stage import SegmentStage
from tests.backends.helpers import fill
from tests.conftest import CountingClock, Lines
from tests.test_pipeline import append, connect_webhook, new_batch, wait_for


class Counting:
    """The activate stage, counting its attempts."""

    name = "activate"

    def __init__(self, inner: ActivateStage) -> None:
        self.inner = inner
        self.calls = 0

    def handle(self, batches: Sequence[ResolvedBatch]) -> None:
        self.calls += 1
        self.inner.handle(batches)


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Backend]:
    backend = open_sqlite(tmp_path / "data", "normal")
    connect_webhook(backend)
    yield backend
    backend.close()


def refused(backoff: StorageBackoff, count: int) -> bool:
    return backoff.refusals == count


def pending(backend: Backend) -> int:
    stats = backend.outbox.stats().get("hook")
    return stats.pending if stats is not None else 0


def test_a_stage_backs_off_from_a_full_store_and_catches_up(
    sqlite: Backend, storage_log: Lines
) -> None:
    positions = append(sqlite, 50)
    resolve = ResolveStage(sqlite.log, sqlite.state, Resolver(IdentityStrategy()))
    resolve.run_until_caught_up()
    resolve.close()
    clock = CountingClock()
    stage = Counting(ActivateStage(sqlite.outputs, sqlite.outbox, sqlite.modules, clock))
    feed = StageFeed(stage, sqlite, idle_s=0.01, backoff=StorageBackoff("activate", clock))

    def attempted(count: int) -> bool:
        return stage.calls == count

    fill(sqlite)
    feed.start()
    try:
        wait_for(lambda: feed.backoff.full, "the first refusal")
        for calls, after_s in ((1, 1.0), (2, 2.0), (3, 4.0)):
            clock.idle()
            assert stage.calls == calls  # no attempt before the wait is over...
            clock.advance(after_s - 0.5)
            clock.idle()
            assert stage.calls == calls
            clock.advance(0.5)
            wait_for(partial(attempted, calls + 1), "the next attempt")  # ...then one
            # counted as it starts: its refusal is in once the backoff has it
            wait_for(partial(refused, feed.backoff, calls + 1), "its refusal")
        assert pending(sqlite) == 0 and feed.committed == {}

        fill(sqlite, full=False)
        clock.advance(8.0)
        wait_for(lambda: pending(sqlite) == 50, "every delivery")
        wait_for(lambda: not feed.backoff.full, "the recovery")
    finally:
        feed.stop()
    assert stage.calls == 5
    assert feed.committed == {0: positions[-1]}
    assert [(level, event) for level, event, _ in storage_log.lines] == [
        ("warning", "storage_full"),
        ("info", "storage_recovered"),
    ]
    assert storage_log.lines[1][2] == {"stage": "activate", "refusals": 4, "full_for_s": 15.0}


def test_resolve_and_the_stages_lose_nothing_to_a_full_store(
    sqlite: Backend, storage_log: Lines
) -> None:
    clock = CountingClock()
    everyone = Definition("everyone", "", EventCondition(EventMatch("custom_event")))
    document = msgspec.json.encode(definition_document(everyone))
    sqlite.audiences.add_audience(AudienceRecord(0, "everyone", "", document, 0, 0))
    service = ResolveService(sqlite.state, Resolver(IdentityStrategy()), clock)
    stage = Counting(ActivateStage(sqlite.outputs, sqlite.outbox, sqlite.modules, clock))
    segment = SegmentStage(sqlite, clock)
    running = Pipeline(sqlite, service, [stage, segment], chunk=50, clock=clock)

    def logged() -> list[tuple[str, str]]:
        return [(event, fields["stage"]) for _, event, fields in storage_log.lines]

    news = [new_batch(n, user=f"user-{n}") for n in range(200)]  # a profile each
    positions = append_new(sqlite.log, sqlite.dedup, news, 0).positions
    fill(sqlite)
    running.start()
    try:
        running.wake()
        wait_for(lambda: running.backoff.full, "resolve backing off")
        clock.idle()
        assert sqlite.state.checkpoint() != {0: positions[-1]}
        # room for resolve's state, none yet for the segment stage's (which gets each chunk
        # once resolve committed it)
        fill(sqlite, full=False)
        fill(sqlite.audiences)
        clock.advance(60.0)
        wait_for(lambda: sqlite.state.checkpoint() == {0: positions[-1]}, "resolve")
        wait_for(lambda: ("storage_full", "segment") in logged(), "segment backing off")
        fill(sqlite.audiences, full=False)
        clock.advance(60.0)
        wait_for(lambda: pending(sqlite) == 200, "every delivery")
        wait_for(lambda: sum(sqlite.audiences.sizes().values()) == 200, "every member")
    finally:
        running.stop()
    events = [(level, event, fields["stage"]) for level, event, fields in storage_log.lines]
    assert ("warning", "storage_full", "resolve") in events
    assert ("info", "storage_recovered", "resolve") in events
    assert ("warning", "storage_full", "segment") in events
    assert ("info", "storage_recovered", "segment") in events
    assert len(events) == len(set(events))  # once each
