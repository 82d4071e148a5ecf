"""A batch log that cannot be reached (a Kafka cluster down): the Events API answers 503
``LOG_UNAVAILABLE`` with ``Retry-After`` in the one error shape, counted, and accepts again
once the log answers (any other route answers the same); the appender recognises a retry
of the batches the failed append stored in part."""

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
from tests.backends.helpers import ALL
from tests.backends.helpers import batch as batch_of
from tests.collect.test_storage_full_http import Running, batch, serving


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
