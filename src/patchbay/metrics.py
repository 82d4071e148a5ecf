"""Prometheus metrics of a Patchbay server, in a registry of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from patchbay.activate.breaker import BreakerState

#: The values of ``patchbay_output_circuit_state``, by their index.
CIRCUIT_STATES = tuple(BreakerState)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "DeliveryMetrics",
    "Metrics",
    "ResolveConflicts",
    "SegmentMetrics",
    "StorageMetrics",
    "fenced_counter",
    "leader_gauge",
    "owned_partitions_gauge",
    "storage_full_gauge",
]


class Metrics:
    """The counters and histograms of the collect stage."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "patchbay_http_requests",
            "HTTP requests by route template and status code (patchbay.http.request_metrics).",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "patchbay_http_request_duration_seconds",
            "Time from request to response sent, by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.batches = Counter(
            "patchbay_batches_accepted",
            "Batches durably stored, by input.",
            ["input"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "patchbay_batches_duplicate",
            "Batches skipped as repeats of a source_request_id, by input.",
            ["input"],
            registry=self.registry,
        )
        self.events = Counter(
            "patchbay_events_accepted",
            "Events in the batches stored, by input.",
            ["input"],
            registry=self.registry,
        )
        self.rejects = Counter(
            "patchbay_rejects",
            "Requests or batches refused, by reason.",
            ["reason"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class DeliveryMetrics:
    """Per-output delivery metrics of the activate stage, in a registry shared with
    :class:`Metrics` (``/metrics``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "patchbay_delivery_attempts",
            "Delivery attempts (sends), by output.",
            ["output"],
            registry=registry,
        )
        self.succeeded = Counter(
            "patchbay_deliveries_succeeded",
            "Deliveries the output accepted, by output.",
            ["output"],
            registry=registry,
        )
        self.failed = Counter(
            "patchbay_delivery_failures",
            "Failed delivery attempts, by output.",
            ["output"],
            registry=registry,
        )
        self.retrying = Counter(
            "patchbay_delivery_retries",
            "Failed attempts scheduled for a retry, by output.",
            ["output"],
            registry=registry,
        )
        self.parked_total = Counter(
            "patchbay_deliveries_parked",
            "Deliveries parked after their last attempt, by output.",
            ["output"],
            registry=registry,
        )
        self.pending = Gauge(
            "patchbay_delivery_queue_depth",
            "Deliveries waiting to be sent, by output.",
            ["output"],
            registry=registry,
        )
        self.parked_now = Gauge(
            "patchbay_delivery_parked_current",
            "Deliveries parked now, by output.",
            ["output"],
            registry=registry,
        )
        self.queue_age = Gauge(
            "patchbay_delivery_queue_age_seconds",
            "Age of the oldest delivery waiting to be sent, by output.",
            ["output"],
            registry=registry,
        )
        self.paused = Gauge(
            "patchbay_output_paused",
            "1 when the output is paused, by output.",
            ["output"],
            registry=registry,
        )
        self.circuit_state = Gauge(
            "patchbay_output_circuit_state",
            "The output's circuit breaker: 0 closed, 1 open, 2 probing, by output.",
            ["output"],
            registry=registry,
        )
        self.circuit_opened = Counter(
            "patchbay_output_circuit_opened",
            "Times the output's circuit breaker opened after failures in a row, by output.",
            ["output"],
            registry=registry,
        )
        self.latency = Histogram(
            "patchbay_delivery_duration_seconds",
            "Time of one delivery attempt, by output.",
            ["output"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )

    def attempt(self, output: str, ok: bool, seconds: float) -> None:
        """One attempt and its latency."""
        self.sent.labels(output).inc()
        (self.succeeded if ok else self.failed).labels(output).inc()
        self.latency.labels(output).observe(seconds)

    def retry(self, output: str) -> None:
        """A failed attempt that will be retried."""
        self.retrying.labels(output).inc()

    def parked(self, output: str) -> None:
        """A delivery parked."""
        self.parked_total.labels(output).inc()

    def circuit(self, output: str, state: str, opened: bool) -> None:
        """The output's circuit breaker changed to ``state`` (``opened``: from closed)."""
        self.circuit_state.labels(output).set(CIRCUIT_STATES.index(state))
        if opened:
            self.circuit_opened.labels(output).inc()

    def queue(self, output: str, pending: int, parked: int, age_s: float, paused: bool) -> None:
        """The state of an output's queue."""
        self.pending.labels(output).set(pending)
        self.parked_now.labels(output).set(parked)
        self.queue_age.labels(output).set(age_s)
        self.paused.labels(output).set(1 if paused else 0)

    def forget(self, output: str) -> None:
        """Drop the series of a removed output."""
        for metric in (
            self.sent,
            self.succeeded,
            self.failed,
            self.retrying,
            self.parked_total,
            self.pending,
            self.parked_now,
            self.queue_age,
            self.paused,
            self.circuit_state,
            self.circuit_opened,
            self.latency,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(output)


class SegmentMetrics:
    """The segment stage's metrics, in a registry shared with :class:`Metrics`
    (``/metrics``): memberships by audience, builds, and membership changes waiting."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.joins = Counter(
            "patchbay_audience_joins",
            "Users who joined an audience, by audience.",
            ["audience"],
            registry=registry,
        )
        self.leaves = Counter(
            "patchbay_audience_leaves",
            "Users who left an audience, by audience.",
            ["audience"],
            registry=registry,
        )
        self.members = Gauge(
            "patchbay_audience_members",
            "Members of an audience now, by audience.",
            ["audience"],
            registry=registry,
        )
        self.built = Gauge(
            "patchbay_audience_build_ratio",
            "How far an audience's build over the stored history got (1 when live).",
            ["audience"],
            registry=registry,
        )
        self.pending = Gauge(
            "patchbay_audience_changes_pending",
            "Membership changes waiting to be sent, by output.",
            ["output"],
            registry=registry,
        )
        self.batches = Counter(
            "patchbay_segment_batches",
            "Resolved batches the segment stage counted and evaluated.",
            registry=registry,
        )
        self.expired = Counter(
            "patchbay_segment_window_checks",
            "Users re-evaluated because an event left a window.",
            registry=registry,
        )

    def forget(self, audience: str) -> None:
        """Drop the series of an audience that is gone."""
        for metric in (self.joins, self.leaves, self.members, self.built):
            with contextlib.suppress(KeyError):
                metric.remove(audience)


class ResolveConflicts(Collector):
    """``patchbay_resolve_conflicts_total``: resolve commits refused because another
    resolver changed what they were decided on (and done again), by ``where`` they were
    resolved (``stage``, ``idsync``), read from the counts given (``conflicts`` of
    :class:`~patchbay.resolve.stage.ResolveStage` and
    :class:`~patchbay.resolve.service.ResolveService`). Register it in the registry."""

    def __init__(self, **counts: Callable[[], int]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "patchbay_resolve_conflicts",
            "Resolve commits refused for a conflict with another resolver, and done again.",
            labels=["where"],
        )
        for where, count in self._counts.items():
            family.add_metric([where], count())
        return [family]


def storage_full_gauge(registry: CollectorRegistry, stage: str) -> Gauge:
    """``patchbay_STAGE_storage_full``: 1 while ``stage`` waits for room in the store. A
    family per stage, as the stages in child processes show theirs from registries apart."""
    return Gauge(
        f"patchbay_{stage}_storage_full",
        f"1 while the {stage} stage backs off from a full store (storage full), else 0.",
        registry=registry,
    )


def fenced_counter(registry: CollectorRegistry, stage: str) -> Counter:
    """``patchbay_STAGE_chunks_fenced``: the chunks ``stage`` dropped because another
    processor moved their partition's checkpoint on (it owns the partition now). A family
    per stage, as :func:`storage_full_gauge`."""
    return Counter(
        f"patchbay_{stage}_chunks_fenced",
        f"Chunks the {stage} stage dropped: another processor moved their partition on.",
        registry=registry,
    )


def leader_gauge(registry: CollectorRegistry, work: str) -> Gauge:
    """``patchbay_WORK_leader``: 1 while this process leads ``work`` (which runs in one
    process at a time: :mod:`patchbay.leadership`), else 0."""
    return Gauge(
        f"patchbay_{work}_leader",
        f"1 while this process leads the {work} work (one process at a time), else 0.",
        registry=registry,
    )


def owned_partitions_gauge(registry: CollectorRegistry) -> Gauge:
    """``patchbay_partitions_owned``: the partitions of the log this process processes."""
    return Gauge(
        "patchbay_partitions_owned",
        "Partitions of the batch log this process processes now.",
        registry=registry,
    )


class StorageMetrics:
    """What the data takes and what retention removes, in a registry shared with
    :class:`Metrics` (``/metrics``); set by :mod:`patchbay.retention`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.file_bytes = Gauge(
            "patchbay_store_size_bytes",
            "Bytes a store's file takes on disk (with its write-ahead log), by file.",
            ["file"],
            registry=registry,
        )
        self.oldest = Gauge(
            "patchbay_log_oldest_batch_timestamp_seconds",
            "When the oldest batch the log retains was received (Unix time), by partition.",
            ["partition"],
            registry=registry,
        )
        self.log_bytes = Gauge(
            "patchbay_log_retained_bytes",
            "Bytes of the batches the log retains (their bodies), by partition.",
            ["partition"],
            registry=registry,
        )
        self.log_batches = Gauge(
            "patchbay_log_retained_batches",
            "Batches the log retains, by partition.",
            ["partition"],
            registry=registry,
        )
        self.removed = Counter(
            "patchbay_log_batches_removed",
            "Batches removed from the log by retention.",
            registry=registry,
        )
        self.forgotten = Counter(
            "patchbay_dedup_keys_forgotten",
            "De-duplication keys dropped once older than the window.",
            registry=registry,
        )
        self.reclaimed = Counter(
            "patchbay_store_reclaimed_bytes",
            "Bytes of freed space given back to the file system.",
            registry=registry,
        )
