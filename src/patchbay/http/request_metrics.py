"""Request count, status and latency of every route, measured in one ASGI middleware.

The ``route`` label is the route's template (``/v1/{mpid}/modify``), never the raw path, so
its values are bounded; requests no route matches share :data:`UNMATCHED`.
"""

from __future__ import annotations

import time

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patchbay.metrics import Metrics

#: The ``route`` label of a request that matches no route.
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route that handled (or would handle) the request."""
    route = scope.get("route")
    if route is None:  # answered before routing (a CORS preflight), or no route matched
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            if candidate.matches(scope)[0] is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """Counts each HTTP request by route template and status, and observes its latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception the error handler answers

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = route_template(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
