"""The ASGI application: the collect API plus health, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.clock import Clock, SystemClock
from patchbay.collect.http import EventsApi
from patchbay.metrics import CONTENT_TYPE_LATEST, Metrics
from patchbay.openapi import build_openapi
from patchbay.settings import Settings
from patchbay.store.appender import GroupCommitAppender
from patchbay.store.base import Store

log = structlog.get_logger("patchbay.server")

#: How often expired de-duplication entries are dropped.
DEDUP_PURGE_INTERVAL_S = 3600.0


def create_app(settings: Settings, store: Store, clock: Clock | None = None) -> Starlette:
    """The Patchbay ASGI app over ``store``; on shutdown it closes the store too."""
    clock = clock or SystemClock()
    metrics = Metrics()
    appender = GroupCommitAppender(store)
    api = EventsApi(store, appender, settings, clock, metrics)
    openapi = msgspec.json.encode(build_openapi())

    async def healthz(request: Request) -> Response:
        offset = await asyncio.to_thread(store.last_offset)
        return Response(
            msgspec.json.encode({"status": "ok", "last_offset": offset}),
            media_type="application/json",
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def openapi_endpoint(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    async def purge_dedup() -> None:
        while True:
            await asyncio.sleep(DEDUP_PURGE_INTERVAL_S)
            before = clock.now_ms() - int(settings.dedup_window_s * 1000)
            dropped = await asyncio.to_thread(store.forget_dedup_before, before)
            log.info("dedup_purged", entries=dropped)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        purger = asyncio.create_task(purge_dedup())
        log.info("serving", data_dir=str(settings.data_dir), last_offset=store.last_offset())
        try:
            yield
        finally:
            purger.cancel()
            await asyncio.to_thread(appender.close)
            store.close()
            log.info("stopped")

    routes = [
        *api.routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
