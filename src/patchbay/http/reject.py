"""Refusing a request on the ingest APIs (Events API, IDSync, the Web SDK's): counted, logged,
answered."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from patchbay.collect.ratelimit import Decision
from patchbay.http.errors import error_response
from patchbay.metrics import Metrics


class Refusals:
    """The error answers of one API: each counted in ``patchbay_rejects`` by reason and logged
    as ``request_rejected`` on the API's logger."""

    def __init__(self, metrics: Metrics, log: Any) -> None:
        self._metrics = metrics
        self._log = log

    def __call__(
        self,
        route: str,
        status: int,
        code: str,
        message: str,
        reason: str,
        headers: dict[str, str] | None = None,
        logged: bool = False,
    ) -> Response:
        """The error answer, counted, and logged unless ``logged`` (an authentication failure,
        logged by :func:`~patchbay.http.auth.auth_failed`)."""
        self._metrics.rejects.labels(reason).inc()
        if not logged:
            self._log.info(
                "request_rejected", route=route, status=status, reason=reason, error=message
            )
        return error_response(status, code, message, headers)

    def over_limit(
        self, route: str, decision: Decision, rate: float, what: str, scope: str = "app"
    ) -> Response:
        """The 429 of a request over its input's limit of ``rate`` ``what`` per second
        (``scope``: mParticle's ``X-mp-rate-limit-exceeded``, ``app`` or ``feed``)."""
        headers = {"Retry-After": str(decision.retry_after_s), "X-mp-rate-limit-exceeded": scope}
        message = f"$: over the input's limit of {rate:g} {what} per second"
        return self(route, 429, "TOO_MANY_REQUESTS", message, "rate_limited", headers)
