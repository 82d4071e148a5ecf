"""The circuit breaker of one output: when its endpoint fails, stop sending and probe.

Pure logic: the caller passes the time and reports each outcome. The breaker is

* **closed** while the endpoint works: sends flow at the output's full concurrency, and
  ``failures_to_open`` retryable failures in a row (no success between them) open it;
* **open** after that: nothing is sent until the probe time, ``base_delay_s`` after
  opening, doubling with each failed probe up to ``max_delay_s`` (with jitter), and never
  before a ``Retry-After`` the endpoint gave;
* **probing** from the probe time: one send at a time tests the endpoint. Its success
  closes the breaker (everything waiting flows again at once); its failure opens it again
  with the next delay.

Failures that concern one delivery and not the endpoint (a 400, a refused target) are not
reported here: the engine parks those deliveries, and the breaker stays as it is.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class BreakerState(enum.StrEnum):
    """Where an output's breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    PROBING = "probing"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When the breaker opens and how often it probes."""

    failures_to_open: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, to be logged once and counted. ``opened_ms``: when the breaker
    left the closed state (on closing again)."""

    old: BreakerState
    new: BreakerState
    error: str | None
    retry_in_s: float | None
    opened_ms: int | None = None


class CircuitBreaker:
    """One output's breaker; ``jitter`` returns a number in [0, 1] (``random.random``)."""

    def __init__(self, policy: BreakerPolicy, jitter: Callable[[], float]) -> None:
        self.policy = policy
        self._jitter = jitter
        self.state = BreakerState.CLOSED
        self.failures = 0  # retryable failures in a row, while closed
        self.probes_failed = 0  # since the breaker last opened
        self.opened_ms: int | None = None  # when it left the closed state
        self.probe_ms = 0  # when the next probe may start (open)
        self.probe_in_flight = False
        self._probe = 0  # the number of the latest probe
        self.last_error: str | None = None

    def allowed(self, now_ms: int) -> int | None:
        """How many sends may start now: ``None`` for no limit (closed), else 0 or 1 (a
        probe; opening the probing state when its time has come)."""
        if self.state is BreakerState.CLOSED:
            return None
        if self.state is BreakerState.OPEN and now_ms >= self.probe_ms:
            self.state = BreakerState.PROBING
        if self.state is BreakerState.PROBING and not self.probe_in_flight:
            return 1
        return 0

    def probe_started(self) -> int:
        """The one send allowed while probing has started: report its outcome with the
        number returned."""
        if self.state is BreakerState.PROBING:
            self.probe_in_flight = True
        self._probe += 1
        return self._probe

    def _is_probe(self, probe: int | None) -> bool:
        """``probe`` is the probe in flight (not one from before the state changed)."""
        is_probe = probe == self._probe and self.probe_in_flight
        if is_probe:
            self.probe_in_flight = False
        return is_probe

    def wait_s(self, now_ms: int) -> float | None:
        """Seconds until the next probe may start, when the breaker is open."""
        if self.state is not BreakerState.OPEN:
            return None
        return max(0.0, (self.probe_ms - now_ms) / 1000)

    def succeeded(self, probe: int | None = None) -> Transition | None:
        """A send was accepted; ``probe``: the number :meth:`probe_started` gave it."""
        self._is_probe(probe)
        self.failures = 0
        if self.state is BreakerState.CLOSED:
            return None
        # Any success proves the endpoint works, also one sent before the breaker opened.
        old, self.state = self.state, BreakerState.CLOSED
        opened_ms, self.opened_ms = self.opened_ms, None
        self.probe_in_flight = False
        self.probes_failed = 0
        return Transition(old, BreakerState.CLOSED, None, None, opened_ms)

    def failed(
        self, now_ms: int, error: str, retry_after_s: float | None, probe: int | None = None
    ) -> Transition | None:
        """A send failed in a way that may concern the endpoint (retryable)."""
        self.last_error = error
        if self._is_probe(probe):
            self.probes_failed += 1
            return self._open(now_ms, error, retry_after_s)
        if self.state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.policy.failures_to_open:
                return self._open(now_ms, error, retry_after_s)
        elif retry_after_s is not None:
            # sent before the breaker opened: its Retry-After still holds
            self.probe_ms = max(self.probe_ms, now_ms + round(retry_after_s * 1000))
        return None

    def _open(self, now_ms: int, error: str, retry_after_s: float | None) -> Transition:
        policy = self.policy
        exponent = min(self.probes_failed, 60)
        delay = min(policy.max_delay_s, policy.base_delay_s * 2.0**exponent)
        delay *= 0.5 + 0.5 * min(max(self._jitter(), 0.0), 1.0)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        old, self.state = self.state, BreakerState.OPEN
        self.failures = 0
        if self.opened_ms is None:
            self.opened_ms = now_ms
        self.probe_ms = now_ms + max(1, round(delay * 1000))
        return Transition(old, BreakerState.OPEN, error, delay)
