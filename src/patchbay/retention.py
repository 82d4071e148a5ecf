"""Retention: the batch log kept within its age and size limits, the de-duplication index
within its window, and the space they free given back to the file system.

A pass (:meth:`Retention.run`, every :data:`RETENTION_INTERVAL_S` in the server, on a
thread: collecting goes on meanwhile) removes, partition by partition, the oldest batches
that are older than ``log_retention_s`` or beyond the partition's share of
``log_retention_bytes``, but never one that a stage has not passed: resolve, every stage
after it (here or in another process) and the de-duplication index's recovery must all
have committed a checkpoint at or after it (:meth:`patchbay.pipeline.Pipeline.passed`).
Whatever the age, a batch not yet resolved, not yet copied to the outbox by activate
(its deliveries live there from then on) or not yet counted by segment stays. Only a
prefix of the log goes: a batch stays as long as an older one must.

Each step removes at most :data:`STEP_BATCHES` batches in one short transaction, with the
users resolve recorded for them (first: a batch whose user is gone is skipped by the
stages' read-backs, never given another's), so appends wait for a step at most. What is
derived from the batches (profiles, audience state, pending deliveries) is kept: only the
batches go, and with them what ``patchbay reprocess`` and audience builds can read back.

The de-duplication keys are dropped once older than ``dedup_window_s``, in steps of
:data:`STEP_KEYS`, whatever the log retention: a key is small, and a batch sent again
within the window is recognised even when the log no longer holds the first copy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from patchbay.activate.outputs import iso_ms
from patchbay.backends.abstract import Backend, BatchLog
from patchbay.backends.records import Checkpoint, LogEntry, LogPosition, lowest
from patchbay.clock import Clock
from patchbay.metrics import StorageMetrics
from patchbay.settings import Settings

log = structlog.get_logger("patchbay.retention")

#: How often the server runs a pass.
RETENTION_INTERVAL_S = 60.0
#: Batches looked at, and removed at most, per step (one short transaction).
STEP_BATCHES = 500
#: De-duplication keys dropped per step.
STEP_KEYS = 5000
#: The pause after each step: writers waiting for the file (appends, keys recorded) get it
#: before the next step, rather than racing a loop of back-to-back transactions.
STEP_PAUSE_S = 0.02
#: Free space each file keeps for reuse: at least this ...
KEEP_FREE_MIN_BYTES = 8 * 1024 * 1024
#: ... or this fraction of what the file holds (what later writes will fill again).
KEEP_FREE_FRACTION = 0.25


@dataclass(frozen=True)
class RetentionPolicy:
    """The limits: ``None`` for none."""

    max_age_ms: int | None
    max_bytes: int | None
    dedup_window_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        """``log_retention_s``, ``log_retention_bytes`` (0: no limit) and ``dedup_window_s``."""
        return cls(
            max_age_ms=int(settings.log_retention_s * 1000) or None,
            max_bytes=settings.log_retention_bytes or None,
            dedup_window_ms=int(settings.dedup_window_s * 1000),
        )


@dataclass
class RetentionReport:
    """What one pass did."""

    #: Batches removed, by partition (those where none were left out).
    removed: dict[int, int] = field(default_factory=dict)
    #: The newest batch removed, by partition.
    upto: Checkpoint = field(default_factory=dict)
    dedup_forgotten: int = 0
    reclaimed_bytes: int = 0


class Retention:
    """Applies a :class:`RetentionPolicy` to a backend; see the module documentation.

    ``passed`` says how far every stage got (:meth:`patchbay.pipeline.Pipeline.passed`);
    ``clock`` says what time it is (ages are measured against ``received_at_ms``)."""

    def __init__(
        self,
        backend: Backend,
        policy: RetentionPolicy,
        clock: Clock,
        passed: Callable[[], Checkpoint],
        metrics: StorageMetrics | None = None,
        step: int = STEP_BATCHES,
        pause_s: float = STEP_PAUSE_S,
    ) -> None:
        self._backend = backend
        self._policy = policy
        self._clock = clock
        self._passed = passed
        self._metrics = metrics
        self._step = step
        self._pause_s = pause_s

    def run(self) -> RetentionReport:
        """One pass: the log, the de-duplication index, then the space freed."""
        report = RetentionReport()
        now = self._clock.now_ms()
        log_ = self._backend.log
        safe = lowest(self._passed(), self._backend.dedup.recorded())
        for partition in range(log_.partitions):
            removed, upto = self._trim(partition, safe.get(partition), now)
            if upto is not None:
                report.removed[partition] = removed
                report.upto[partition] = upto
        report.dedup_forgotten = self._forget_keys(now - self._policy.dedup_window_ms)
        report.reclaimed_bytes = self._backend.files.reclaim(
            KEEP_FREE_MIN_BYTES, KEEP_FREE_FRACTION, self._pause_s
        )
        if report.removed or report.dedup_forgotten or report.reclaimed_bytes:
            log.info(
                "retention",
                removed=sum(report.removed.values()),
                upto=[str(p) for p in report.upto.values()],
                dedup_forgotten=report.dedup_forgotten,
                reclaimed_bytes=report.reclaimed_bytes,
            )
        if self._metrics is not None:
            self._metrics.removed.inc(sum(report.removed.values()))
            self._metrics.forgotten.inc(report.dedup_forgotten)
            self._metrics.reclaimed.inc(report.reclaimed_bytes)
        return report

    def _trim(
        self, partition: int, safe: LogPosition | None, now: int
    ) -> tuple[int, LogPosition | None]:
        """Remove the batches of ``partition`` past the limits and not after ``safe``, a
        step at a time; how many, and the newest removed."""
        log_, policy = self._backend.log, self._policy
        if safe is None or (policy.max_age_ms is None and policy.max_bytes is None):
            return 0, None
        oldest_kept = None if policy.max_age_ms is None else now - policy.max_age_ms
        share = None if policy.max_bytes is None else policy.max_bytes // log_.partitions
        removed, newest = 0, None
        while True:
            entries = log_.oldest(partition, self._step)
            excess = 0 if share is None else log_.extent(partition).size - share
            cut = None
            for entry in entries:
                expired = oldest_kept is not None and entry.received_at_ms < oldest_kept
                if entry.position > safe or not (expired or excess > 0):
                    break
                cut = entry.position
                excess -= entry.size
            if cut is None:
                return removed, newest
            self._backend.state.forget_resolved({partition: cut})
            step = log_.remove(partition, cut)
            removed, newest = removed + step, cut
            if not step or cut != entries[-1].position:  # stopped by a limit, not the step
                return removed, newest
            time.sleep(self._pause_s)

    def _forget_keys(self, before_ms: int) -> int:
        """Drop the de-duplication keys received before ``before_ms``, a step at a time."""
        forgotten = 0
        while (dropped := self._backend.dedup.forget_before(before_ms, STEP_KEYS)) > 0:
            forgotten += dropped
            if dropped < STEP_KEYS:
                break
            time.sleep(self._pause_s)
        return forgotten

    def observe(self) -> None:
        """Set the gauges of ``/metrics``: each file's size, and what the log retains."""
        if self._metrics is None:
            return
        for name, size in self._backend.files.sizes().items():
            self._metrics.file_bytes.labels(name).set(size)
        log_ = self._backend.log
        for partition in range(log_.partitions):
            label = str(partition)
            extent = log_.extent(partition)
            self._metrics.log_batches.labels(label).set(extent.batches)
            self._metrics.log_bytes.labels(label).set(extent.size)
            oldest = log_.oldest(partition, 1)
            if oldest:
                self._metrics.oldest.labels(label).set(oldest[0].received_at_ms / 1000)
            else:
                with contextlib.suppress(KeyError):
                    self._metrics.oldest.remove(label)


# -- what the log retains, for reports (reprocess, audience builds) ------------------------


@dataclass(frozen=True)
class Retained:
    """What one partition of the log holds: its oldest batch, its newest position, and the
    newest batch retention removed (``None``: none ever)."""

    partition: int
    oldest: LogEntry | None
    newest: LogPosition | None
    removed: LogPosition | None

    def describe(self) -> str:
        """One line: ``0:1235 (received 2026-11-30T10:00:00+00:00) to 0:5000; up to
        0:1234 removed by retention``."""
        if self.oldest is None or self.newest is None:
            held = "no batches"
        else:
            held = (
                f"{self.oldest.position} (received {iso_ms(self.oldest.received_at_ms)})"
                f" to {self.newest}"
            )
        if self.removed is None:
            return held
        return f"{held}; up to {self.removed} removed by retention"

    def document(self) -> dict[str, Any]:
        """The same as JSON: ``from``, ``from_received_at``, ``to``, ``removed_upto``."""
        return {
            "partition": self.partition,
            "from": None if self.oldest is None else str(self.oldest.position),
            "from_received_at": None if self.oldest is None else iso_ms(self.oldest.received_at_ms),
            "to": None if self.newest is None else str(self.newest),
            "removed_upto": None if self.removed is None else str(self.removed),
        }


def retained(log_: BatchLog) -> list[Retained]:
    """What each partition of ``log_`` holds (see :class:`Retained`)."""
    found = []
    for partition in range(log_.partitions):
        oldest = log_.oldest(partition, 1)
        found.append(
            Retained(
                partition,
                oldest[0] if oldest else None,
                log_.end(partition) if oldest else None,
                log_.extent(partition).removed,
            )
        )
    return found
