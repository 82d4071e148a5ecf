"""How the stages wait out a full store: exponential back-off, one warning, one info line.

A stage that meets :class:`~patchbay.errors.StorageFull` keeps its work for later (its
checkpoint did not move, so nothing is lost) and tries again after 1 s, then 2, 4... up to
60 s between attempts, by its clock. It logs ``storage_full`` (a warning) when the store first
refuses and ``storage_recovered`` (info) at the first attempt that goes through, nothing in
between; ``patchbay_STAGE_storage_full`` in ``/metrics`` is 1 meanwhile.
"""

from __future__ import annotations

import structlog
from prometheus_client import CollectorRegistry

from patchbay.clock import Clock, SystemClock
from patchbay.errors import StorageFull
from patchbay.metrics import storage_full_gauge

log = structlog.get_logger("patchbay.storage")

#: The first wait after the store refused a write, doubled at each refusal since...
FIRST_WAIT_S = 1.0
#: ...up to this.
MAX_WAIT_S = 60.0
#: How often a stage backing off looks at its clock (a test's clock moves when told to).
CLOCK_POLL_S = 0.1


class StorageBackoff:
    """A stage's back-off from a full store; ``registry`` shows it in ``/metrics``."""

    def __init__(
        self,
        stage: str,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        first_s: float = FIRST_WAIT_S,
        max_s: float = MAX_WAIT_S,
    ) -> None:
        self.stage = stage
        self._clock = clock or SystemClock()
        self._gauge = storage_full_gauge(registry, stage) if registry is not None else None
        self._first = first_s
        self._max = max_s
        #: Attempts the store refused since it filled (0: it is not full).
        self.refusals = 0
        self._since = 0.0
        self._next = 0.0

    @property
    def full(self) -> bool:
        """Whether the last attempt found the store full."""
        return self.refusals > 0

    def wait_s(self) -> float:
        """Seconds until the next attempt is due (0: now)."""
        return max(0.0, self._next - self._clock.monotonic()) if self.full else 0.0

    def failed(self, exc: StorageFull) -> float:
        """The store refused a write: schedule the next attempt; return the wait. A refusal
        before the next attempt is due (a write begun before the last refusal) changes
        nothing."""
        now = self._clock.monotonic()
        if self.full and now < self._next:
            return self._next - now
        if not self.full:
            self._since = now
            if self._gauge is not None:
                self._gauge.set(1)
        self.refusals += 1
        wait: float = min(self._max, self._first * 2.0 ** (self.refusals - 1))
        self._next = now + wait
        if self.refusals == 1:
            log.warning("storage_full", stage=self.stage, error=str(exc), retry_in_s=wait)
        return wait

    def succeeded(self) -> None:
        """An attempt went through: the store has room again (logged once)."""
        if not self.full:
            return
        log.info(
            "storage_recovered",
            stage=self.stage,
            refusals=self.refusals,
            full_for_s=round(self._clock.monotonic() - self._since, 3),
        )
        self.refusals = 0
        if self._gauge is not None:
            self._gauge.set(0)
