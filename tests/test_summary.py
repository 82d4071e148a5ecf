"""The throughput summary counts what each stage did since the line before, from the
metrics registry (children's metrics included) and the stages' own counters."""

from __future__ import annotations

import msgspec
from prometheus_client import CollectorRegistry

from patchbay.backends.memory import open_memory
from patchbay.backends.records import NewBatch
from patchbay.child import ChildMetrics
from patchbay.clock import ManualClock
from patchbay.metrics import DeliveryMetrics, Metrics, SegmentMetrics
from patchbay.summary import Throughput


def test_each_line_counts_the_interval_only() -> None:
    backend = open_memory()
    clock = ManualClock()
    metrics = Metrics()
    delivery = DeliveryMetrics(metrics.registry)
    done = {"resolve": 0, "activate": 0}
    # The segment stage runs in a child: its metrics reach the server as a ChildMetrics.
    child_registry = CollectorRegistry()
    segment = SegmentMetrics(child_registry)
    from_child = ChildMetrics()
    metrics.registry.register(from_child)
    throughput = Throughput(
        metrics.registry,
        backend,
        clock,
        {"resolve": lambda: done["resolve"], "activate": lambda: done["activate"]},
    )
    metrics.requests.labels("/v2/bulkevents", "202").inc(3)
    metrics.requests.labels("/v2/events", "401").inc()
    metrics.requests.labels("/healthz", "200").inc(5)  # not collect's
    metrics.batches.labels("web").inc(4)
    metrics.batches.labels("ios").inc(2)
    metrics.duplicates.labels("web").inc()
    metrics.events.labels("web").inc(12)
    metrics.rejects.labels("rate_limited").inc(2)
    done["resolve"], done["activate"] = 6, 5
    segment.batches.inc(6)
    from_child.families = list(child_registry.collect())
    for ok in (True, True, False):
        delivery.attempt("hook", ok, 0.01)
    delivery.parked("hook")
    delivery.attempt("file", True, 0.01)
    backend.log.append([NewBatch(f"b{i}", "web", clock.now_ms(), "events", b"{}") for i in (1, 2)])
    clock.advance(60)

    lines = {line["stage"]: line for line in throughput.lines()}

    assert lines == {
        "collect": {
            "stage": "collect",
            "requests_accepted": 3,
            "requests_refused": 1,
            "batches_accepted": 6,
            "batches_duplicate": 1,
            "events_accepted": 12,
            "refused": {"rate_limited": 2},
            "interval_s": 60.0,
        },
        # nothing resolved yet in the store: the oldest batch waits since a minute
        "resolve": {"stage": "resolve", "batches": 6, "lag_s": 60.0, "interval_s": 60.0},
        "activate": {"stage": "activate", "batches": 5, "lag_s": 60.0, "interval_s": 60.0},
        "segment": {"stage": "segment", "batches": 6, "lag_s": 60.0, "interval_s": 60.0},
        "delivery": {
            "stage": "delivery",
            "sent": 4,
            "succeeded": 3,
            "failed": 1,
            "parked": 1,
            "outputs": {
                "file": {"sent": 1, "succeeded": 1, "failed": 0, "parked": 0},
                "hook": {"sent": 3, "succeeded": 2, "failed": 1, "parked": 1},
            },
            "interval_s": 60.0,
        },
    }

    # The next line counts only what happened since; a caught-up stage has no lag.
    metrics.batches.labels("web").inc()
    segment.batches.inc(2)
    from_child.families = list(child_registry.collect())
    last = backend.log.end(0)
    assert last is not None
    backend.positions.commit("activate", {0: last})
    clock.advance(30)
    again = {line["stage"]: line for line in throughput.lines()}
    assert again["collect"]["batches_accepted"] == 1
    assert again["collect"]["requests_accepted"] == 0
    assert again["collect"]["refused"] == {}
    assert again["activate"] == {
        "stage": "activate",
        "batches": 0,
        "lag_s": 0.0,
        "interval_s": 30.0,
    }
    assert again["segment"]["batches"] == 2
    assert again["resolve"]["lag_s"] == 90.0
    assert again["delivery"]["sent"] == 0 and again["delivery"]["outputs"] == {}


def test_each_stage_s_lag_in_batches_is_a_gauge() -> None:
    """``patchbay_stage_lag_batches``: per stage, the batches of every partition after its
    checkpoint (all of them before it handled any), set when ``/metrics`` is read."""
    backend = open_memory(partitions=2)
    metrics = Metrics()
    throughput = Throughput(metrics.registry, backend, ManualClock(), {})
    news = [
        msgspec.structs.replace(NewBatch(f"b{i}", "web", 0, "events", b"{}"), partition_key=f"u{i}")
        for i in range(10)
    ]
    placed = backend.log.append(news)
    by_partition = {p: [x for x in placed if x.partition == p] for p in (0, 1)}
    assert all(by_partition.values())  # (both partitions hold some)
    backend.positions.commit("activate", {0: by_partition[0][0]})
    backend.positions.commit("segment", {p: found[-1] for p, found in by_partition.items()})
    throughput.observe()

    def lag(stage: str) -> float | None:
        return metrics.registry.get_sample_value("patchbay_stage_lag_batches", {"stage": stage})

    assert lag("resolve") == 10
    assert lag("activate") == 10 - 1
    assert lag("segment") == 0
