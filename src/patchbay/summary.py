"""The throughput summary: every ``log_summary_interval_s``, one ``throughput`` line per
stage with what it did since the line before (docs/operations.md shows them).

The counts come from the server's metrics registry, which holds the children's metrics too
(:class:`patchbay.child.ChildMetrics`: the delivery engine's and the segment stage's,
wherever they run), and from the counters the stages in the server's process keep (resolve,
activate). A stage's ``lag_s`` is the age of the oldest batch it has not handled yet (0 when
it is caught up), from its checkpoint in the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge

from patchbay.backends.abstract import Backend
from patchbay.backends.records import Checkpoint, StoreUnavailable
from patchbay.clock import Clock
from patchbay.errors import LogUnavailable

log = structlog.get_logger("patchbay.summary")

#: The routes of the Events API (their label in ``patchbay_http_requests``) start so.
COLLECT_ROUTES = "/v2/"
#: The delivery counters of the summary, by metric family.
DELIVERY = {
    "sent": "patchbay_delivery_attempts",
    "succeeded": "patchbay_deliveries_succeeded",
    "failed": "patchbay_delivery_failures",
    "parked": "patchbay_deliveries_parked",
}

Labels = tuple[tuple[str, str], ...]
Totals = dict[tuple[str, Labels], float]
Where = Callable[[dict[str, str]], bool]


def totals(registry: CollectorRegistry) -> Totals:
    """Every counter's value in ``registry``, by family name and labels."""
    found: Totals = {}
    for family in registry.collect():
        if family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (family.name, tuple(sorted(sample.labels.items())))
                found[key] = found.get(key, 0.0) + sample.value
    return found


class _Deltas:
    """How much the counters grew between two readings."""

    def __init__(self, before: Totals, now: Totals) -> None:
        self._before = before
        self._now = now

    def of(self, family: str, where: Where = lambda labels: True) -> int:
        """The growth of ``family``'s series whose labels ``where`` takes, added up."""
        return int(
            sum(
                value - self._before.get(key, 0.0)
                for key, value in self._now.items()
                if key[0] == family and where(dict(key[1]))
            )
        )

    def by(self, family: str, label: str) -> dict[str, int]:
        """The growth of ``family`` by the values of ``label`` (those that grew)."""
        grown: dict[str, int] = {}
        for (name, labels), value in self._now.items():
            value_of = dict(labels).get(label)
            if name == family and value_of is not None:
                change = int(value - self._before.get((name, labels), 0.0))
                grown[value_of] = grown.get(value_of, 0) + change
        return {value: n for value, n in sorted(grown.items()) if n}


def _collect_request(accepted: bool) -> Where:
    def where(labels: dict[str, str]) -> bool:
        ok = labels.get("status", "").startswith("2")
        return labels.get("route", "").startswith(COLLECT_ROUTES) and ok == accepted

    return where


class Throughput:
    """What each stage did between two calls of :meth:`lines`. ``processed`` gives, by
    stage (``resolve``, ``activate``), a count of the batches it handled that only grows;
    the segment stage's is its ``patchbay_segment_batches`` counter."""

    def __init__(
        self,
        registry: CollectorRegistry,
        backend: Backend,
        clock: Clock,
        processed: Mapping[str, Callable[[], int]],
    ) -> None:
        self._registry = registry
        self._backend = backend
        self._clock = clock
        self._processed = processed
        self._before, self._done_before = self._read()
        self._at_ms = clock.now_ms()
        self._lag_batches = Gauge(
            "patchbay_stage_lag_batches",
            "Batches in the log a stage has not handled yet, all partitions (the processors"
            " commit no offsets to Kafka: this is their consumer lag)",
            ["stage"],
            registry=registry,
        )

    def _read(self) -> tuple[Totals, dict[str, int]]:
        return totals(self._registry), {stage: count() for stage, count in self._processed.items()}

    def lines(self) -> list[dict[str, Any]]:
        """One dict per stage (``stage``, ``interval_s`` and its counts) since the last call."""
        now_ms = self._clock.now_ms()
        now, done = self._read()
        d = _Deltas(self._before, now)
        batches = {stage: n - self._done_before.get(stage, 0) for stage, n in done.items()}
        interval_s = (now_ms - self._at_ms) / 1000
        self._before, self._done_before, self._at_ms = now, done, now_ms
        by_output = {name: d.by(family, "output") for name, family in DELIVERY.items()}
        outputs = sorted(set().union(*by_output.values()))
        lags = self._lags(now_ms)
        lines: list[dict[str, Any]] = [
            {
                "stage": "collect",
                "requests_accepted": d.of("patchbay_http_requests", _collect_request(True)),
                "requests_refused": d.of("patchbay_http_requests", _collect_request(False)),
                "batches_accepted": d.of("patchbay_batches_accepted"),
                "batches_duplicate": d.of("patchbay_batches_duplicate"),
                "events_accepted": d.of("patchbay_events_accepted"),
                "refused": d.by("patchbay_rejects", "reason"),
            },
            {"stage": "resolve", "batches": batches.get("resolve", 0), "lag_s": lags["resolve"]},
            {"stage": "activate", "batches": batches.get("activate", 0), "lag_s": lags["activate"]},
            {
                "stage": "segment",
                "batches": d.of("patchbay_segment_batches"),
                "lag_s": lags["segment"],
            },
            {
                "stage": "delivery",
                **{name: d.of(family) for name, family in DELIVERY.items()},
                "outputs": {
                    output: {name: counts.get(output, 0) for name, counts in by_output.items()}
                    for output in outputs
                },
            },
        ]
        return [{**line, "interval_s": interval_s} for line in lines]

    def _checkpoints(self) -> dict[str, Checkpoint]:
        positions = self._backend.positions
        return {
            "resolve": self._backend.state.checkpoint(),
            "activate": positions.get("activate"),
            "segment": positions.get("segment"),
        }

    def _lags(self, now_ms: int) -> dict[str, float]:
        """Each stage's lag in seconds: the age of the oldest batch it has not handled."""
        checkpoints = self._checkpoints()
        return {stage: self._lag(checkpoint, now_ms) for stage, checkpoint in checkpoints.items()}

    def observe(self) -> None:
        """Set ``patchbay_stage_lag_batches`` (for ``/metrics``): per stage, the batches
        between its checkpoint and the end of each partition of the log. A log or store
        out of reach leaves them as they were (``/metrics`` answers all the same)."""
        try:
            self._observe()
        except (LogUnavailable, StoreUnavailable) as exc:
            log.debug("stage_lag_unknown", error=str(exc))

    def _observe(self) -> None:
        log_ = self._backend.log
        ends = {p: log_.end(p) for p in range(log_.partitions)}
        for stage, checkpoint in self._checkpoints().items():
            behind = 0
            for partition, end in ends.items():
                if end is None:
                    continue
                done = checkpoint.get(partition)
                if done is not None:
                    behind += end.offset - done.offset
                elif first := log_.read(partition, None, 1):  # (nothing handled yet)
                    behind += end.offset - first[0].position.offset + 1
            self._lag_batches.labels(stage).set(max(0, behind))

    def _lag(self, checkpoint: Checkpoint, now_ms: int) -> float:
        oldest = [
            page[0].received_at_ms
            for partition in range(self._backend.log.partitions)
            if (page := self._backend.log.read(partition, checkpoint.get(partition), 1))
        ]
        return max(0.0, (now_ms - min(oldest)) / 1000) if oldest else 0.0

    def log(self) -> None:
        """Log the lines (see :meth:`lines`)."""
        for line in self.lines():
            log.info("throughput", **line)
