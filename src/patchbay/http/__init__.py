"""The HTTP layer shared by every API: one error shape, CORS and request metrics."""

from __future__ import annotations

from starlette.middleware import Middleware

from patchbay.http.cors import CorsMiddleware, CorsPolicy
from patchbay.http.errors import EXCEPTION_HANDLERS
from patchbay.http.request_metrics import RequestMetrics
from patchbay.metrics import Metrics

__all__ = ["EXCEPTION_HANDLERS", "middleware"]


def middleware(metrics: Metrics, cors: CorsPolicy) -> list[Middleware]:
    """The app's middleware, outermost first: request metrics, then CORS."""
    return [Middleware(RequestMetrics, metrics=metrics), Middleware(CorsMiddleware, policy=cors)]
