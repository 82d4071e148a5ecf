"""Prometheus metrics of a Patchbay server, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The counters and histograms of the collect stage."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "patchbay_http_requests",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "patchbay_http_request_duration_seconds",
            "Time from request to response, by route.",
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
