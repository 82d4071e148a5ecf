"""A batch log that cannot be reached (a Kafka cluster down): the Events API answers 503
``LOG_UNAVAILABLE`` with ``Retry-After`` in the one error shape, counted, and accepts again
once the log answers (any other route answers the same); the appender recognises a retry
of the batches the failed append stored in part, or stored later (a broker that had written
a batch the producer gave up waiting for), and a batch stored twice all the same keeps one
id (so one set of delivery and event ids)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from patchbay.backends.abstract import Backend, BatchLog
from patchbay.backends.records import LogPosition, NewBatch
from patchbay.collect.appender import GroupCommitAppender
from patchbay.errors import LogUnavailable
from tests.backends.helpers import ALL, bodies
from tests.backends.helpers import batch as batch_of
from tests.collect.test_storage_full_http import Running, batch, serving


class _Late:
    """A log whose appends, while ``stalled``, fail as Kafka's do when the producer gives up
    on sends a broker has written (its leader waiting for a replica that is gone): their
    batches are stored later, before those of the next append that goes through (the
    producer keeps a partition's order). ``reported``: whether the log counts them as
    unsettled until then (the Kafka log does; a log that forgot them, as one a restarted
    process opened, does not)."""

    def __init__(self, log: BatchLog, reported: bool = True) -> None:
        self.log = log
        self.reported = reported
        self.stalled = False
        self.in_flight: list[NewBatch] = []

    def append(self, batches: Sequence[NewBatch]) -> list[LogPosition]:
        if self.stalled:
            self.in_flight.extend(batches)
            raise LogUnavailable("Kafka at 127.0.0.1:9", "append failed: no delivery report")
        late, self.in_flight = self.in_flight, []
        return self.log.append([*late, *batches])[len(late) :]

    def unsettled(self) -> int:
        return len(self.in_flight) if self.reported else 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.log, name)


class _Unreachable:
    """A log whose appends fail as Kafka's do while ``down``, after storing the first
    ``stored_before_failing`` batches."""

    def __init__(self, log: BatchLog) -> None:
        self.log = log
        self.down = False
        self.stored_before_failing = 0

    def append(self, batches: Sequence[NewBatch]) -> list[LogPosition]:
        if self.down:
            self.log.append(batches[: self.stored_before_failing])
            raise LogUnavailable("Kafka at 127.0.0.1:9", "append failed: all brokers are down")
        return self.log.append(batches)

    def end(self, partition: int) -> LogPosition | None:
        if self.down:
            raise LogUnavailable("Kafka at 127.0.0.1:9", "cannot read the watermarks")
        return self.log.end(partition)

    def __getattr__(self, name: str) -> object:
        return getattr(self.log, name)


@pytest.fixture
def running(backend: Backend, tmp_path: Path) -> Iterator[tuple[Running, _Unreachable]]:
    log = _Unreachable(backend.log)
    unreachable = dataclasses.replace(backend, log=log)  # type: ignore[arg-type]
    with serving(unreachable, tmp_path / "data") as started:
        yield started, log


def test_an_unreachable_log_answers_503_with_retry_after(
    running: tuple[Running, _Unreachable],
) -> None:
    server, log = running
    assert server.events("/v2/events", batch())[0] == 202
    log.down = True
    for path, body in [("/v2/events", batch()), ("/v2/bulkevents", [batch(), batch()])]:
        status, headers, answer = server.events(path, body)
        assert status == 503
        assert headers["retry-after"] == "5"
        assert [e["code"] for e in answer["errors"]] == ["LOG_UNAVAILABLE"]
        assert "127.0.0.1" not in answer["errors"][0]["message"]  # where is logged, not told
    _, _, metrics = server.call("GET", "/metrics")
    assert 'patchbay_rejects_total{reason="log_unavailable"} 2.0' in metrics
    status, headers, answer = server.call("GET", "/healthz")  # any route: the same answer
    assert (status, headers["retry-after"]) == (503, "5")
    assert [e["code"] for e in answer["errors"]] == ["LOG_UNAVAILABLE"]

    log.down = False
    assert server.events("/v2/events", batch())[0] == 202
    assert len(log.log.read(0, None, ALL)) == 2


def test_a_retry_after_a_failed_append_skips_what_it_stored(backend: Backend) -> None:
    log = _Unreachable(backend.log)
    appender = GroupCommitAppender(log, backend.dedup)  # type: ignore[arg-type]
    news = [batch_of(str(i), srid=f"r{i}") for i in range(5)]
    try:
        log.down, log.stored_before_failing = True, 2
        with pytest.raises(LogUnavailable):
            asyncio.run(appender.append(news, 0))
        log.down = False
        retried = asyncio.run(appender.append(news, 0))
    finally:
        appender.close()
    assert retried.duplicates == 2  # those the failed append stored
    assert [s.batch_id for s in backend.log.read(0, None, ALL)] == [n.batch_id for n in news]


def test_a_batch_stored_late_is_recognised_when_sent_again(backend: Backend) -> None:
    """The failed append's batch is stored late, before another request's batch; the retry
    that comes after that is a duplicate: the appender did not move the index's progress past
    the other batch while the log had batches on their way, so it read the late one."""
    log = _Late(backend.log)
    appender = GroupCommitAppender(log, backend.dedup)  # type: ignore[arg-type]
    first = batch_of("first", srid="r1")
    try:
        log.stalled = True
        with pytest.raises(LogUnavailable):
            asyncio.run(appender.append([first], 0))
        log.stalled = False
        other = asyncio.run(appender.append([batch_of("other", srid="r2")], 0))
        retried = asyncio.run(appender.append([first], 0))
        after = asyncio.run(appender.append([batch_of("after", srid="r3")], 0))
    finally:
        appender.close()
    assert other.stored == 1 and after.stored == 1
    assert (retried.stored, retried.duplicates) == (0, 1)
    assert bodies(backend.log) == [b'{"tag":"first"}', b'{"tag":"other"}', b'{"tag":"after"}']
    assert backend.dedup.seen({("input-1", "r1")}, 0) == {("input-1", "r1")}


def test_a_batch_stored_twice_keeps_one_id(backend: Backend, tmp_path: Path) -> None:
    """When nothing tells that a failed append's batch will still be stored, its retry is
    stored too (at least once): both copies carry one batch id, derived from the input and
    the ``source_request_id``, so its deliveries and events keep one id each."""
    log = _Late(backend.log, reported=False)
    late = dataclasses.replace(backend, log=log)  # type: ignore[arg-type]
    sent = [{**batch(), "source_request_id": "req-1"}, {**batch(), "source_request_id": "req-2"}]
    with serving(late, tmp_path / "data") as server:
        log.stalled = True
        assert server.events("/v2/bulkevents", sent)[0] == 503
        log.stalled = False
        assert server.events("/v2/bulkevents", sent)[0] == 202
        stored = log.log.read(0, None, ALL)
    ids: dict[str | None, set[str]] = {}
    for s in stored:
        ids.setdefault(s.source_request_id, set()).add(s.batch_id)
    assert len(stored) == 4  # every batch twice
    assert {r: len(i) for r, i in ids.items()} == {"req-1": 1, "req-2": 1}
    assert ids["req-1"] != ids["req-2"]
