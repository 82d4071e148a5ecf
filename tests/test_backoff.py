"""How a stage waits out a full store (:mod:`patchbay.backoff`): waits doubling from 1 s to
60 s by the injected clock, one warning, one info line, a gauge in ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from patchbay.backoff import StorageBackoff
from patchbay.clock import ManualClock
from patchbay.errors import StorageFull
from tests.conftest import Lines

FULL = StorageFull("/data/patchbay.db", "database or disk is full")


def gauge(registry: CollectorRegistry) -> str:
    text = generate_latest(registry).decode()
    return next(line for line in text.splitlines() if line.startswith("patchbay_resolve_"))


def test_waits_double_up_to_a_minute_and_log_once(storage_log: Lines) -> None:
    clock = ManualClock()
    registry = CollectorRegistry()
    backoff = StorageBackoff("resolve", clock, registry)
    assert gauge(registry) == "patchbay_resolve_storage_full 0.0"
    waits = []
    for _ in range(9):
        assert backoff.wait_s() == 0  # the attempt is due
        waits.append(backoff.failed(FULL))
        clock.advance(waits[-1] / 2)
        assert backoff.wait_s() == waits[-1] / 2
        assert backoff.failed(FULL) == waits[-1] / 2  # a write begun before: no new wait
        clock.advance(waits[-1] / 2)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff.refusals == 9
    assert gauge(registry) == "patchbay_resolve_storage_full 1.0"
    assert [(level, event) for level, event, _ in storage_log.lines] == [
        ("warning", "storage_full")
    ]
    assert storage_log.lines[0][2]["error"] == str(FULL)

    clock.advance(1.5)
    backoff.succeeded()
    backoff.succeeded()  # logged once
    assert not backoff.full and backoff.wait_s() == 0
    assert gauge(registry) == "patchbay_resolve_storage_full 0.0"
    assert storage_log.lines[1][:2] == ("info", "storage_recovered")
    assert storage_log.lines[1][2]["refusals"] == 9
    assert storage_log.lines[1][2]["full_for_s"] == sum(waits) + 1.5
    assert len(storage_log.lines) == 2

    assert backoff.failed(FULL) == 1  # full again: from the first wait, warned again
    assert [event for _, event, _ in storage_log.lines] == [
        "storage_full",
        "storage_recovered",
        "storage_full",
    ]
