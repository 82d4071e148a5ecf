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
from patchbay.resolve.idsync_http import IdentityApi
from patchbay.resolve.profile_http import ProfileApi
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolveStage, StageRunner
from patchbay.resolve.state import ProfileStore
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.settings import Settings
from patchbay.store.appender import GroupCommitAppender
from patchbay.store.base import Store

log = structlog.get_logger("patchbay.server")

#: How often expired de-duplication entries are dropped.
DEDUP_PURGE_INTERVAL_S = 3600.0


def create_app(
    settings: Settings,
    store: Store,
    profiles: ProfileStore,
    clock: Clock | None = None,
    strategy: IdentityStrategy | None = None,
) -> Starlette:
    """The Patchbay ASGI app: collect into ``store``, resolve into ``profiles``.

    It runs the resolve stage on a thread, and on shutdown stops it and closes both stores.
    """
    clock = clock or SystemClock()
    metrics = Metrics()
    appender = GroupCommitAppender(store)
    api = EventsApi(store, appender, settings, clock, metrics)
    service = ResolveService(profiles, Resolver(strategy or IdentityStrategy()), clock)
    stage = ResolveStage(store, profiles, service.resolver)
    runner = StageRunner(lambda: service.step(stage))
    profile_api = ProfileApi(store, service, clock)
    identity_api = IdentityApi(store, appender, service, clock, metrics)
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
        runner.start()
        log.info("serving", data_dir=str(settings.data_dir), last_offset=store.last_offset())
        try:
            yield
        finally:
            purger.cancel()
            await asyncio.to_thread(appender.close)
            await asyncio.to_thread(runner.stop)
            store.close()
            profiles.close()
            log.info("stopped")

    routes = [
        *api.routes(),
        *profile_api.routes(),
        *identity_api.routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
