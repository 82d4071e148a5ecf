"""Per-input rate limits in batches per second, as token buckets."""

from __future__ import annotations

import math
from dataclasses import dataclass

from patchbay.clock import Clock


@dataclass(slots=True)
class _Bucket:
    rate: float
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may go on; if not, how long to wait; and how full the bucket is."""

    allowed: bool
    retry_after_s: int = 0
    percent_used: int = 0


class RateLimiter:
    """One token bucket per input; a bucket holds one second's worth of batches.

    A request of ``n`` batches takes ``n`` tokens. A bulk request larger than one second's
    worth is let through when the bucket is full, so that small limits never block a
    100-batch request for good.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, input_id: str, rate: float, batches: int) -> Decision:
        """Take ``batches`` tokens from ``input_id``'s bucket (``rate`` 0: unlimited)."""
        if rate <= 0:
            return Decision(True)
        now = self._clock.monotonic()
        bucket = self._buckets.get(input_id)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[input_id] = _Bucket(rate, rate, now)
        bucket.tokens = min(rate, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        need = min(float(batches), rate)
        if bucket.tokens + 1e-9 < need:
            wait = (need - bucket.tokens) / rate
            return Decision(False, retry_after_s=max(1, math.ceil(wait)), percent_used=100)
        bucket.tokens -= batches
        used = 100 - max(0.0, bucket.tokens) * 100 / rate
        return Decision(True, percent_used=min(100, max(0, round(used))))
