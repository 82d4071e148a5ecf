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

from patchbay.activate.admin_http import AdminApi
from patchbay.activate.engine import DeliveryEngine, EngineConfig
from patchbay.activate.process import ChildConfig, DeliveryProcess
from patchbay.activate.service import ActivateService
from patchbay.activate.sink import ActivateSink
from patchbay.activate.store import DeliveryStore
from patchbay.clock import Clock, SystemClock
from patchbay.collect.http import EventsApi
from patchbay.metrics import CONTENT_TYPE_LATEST, DeliveryMetrics, Metrics
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
from patchbay.store.base import ModuleStore, Store
from patchbay.store.sqlite_deliveries import SqliteDeliveryStore
from patchbay.store.sqlite_modules import SqliteModuleStore

log = structlog.get_logger("patchbay.server")

#: Requests in flight from which collecting counts as busy: the resolve stage then pauses
#: after each chunk as long as the chunk took (:class:`~patchbay.resolve.stage.StageRunner`).
INGEST_BUSY_REQUESTS = 8

#: How often expired de-duplication entries are dropped.
DEDUP_PURGE_INTERVAL_S = 3600.0


def create_app(
    settings: Settings,
    store: Store,
    profiles: ProfileStore,
    clock: Clock | None = None,
    strategy: IdentityStrategy | None = None,
    deliveries: DeliveryStore | None = None,
    modules: ModuleStore | None = None,
    admin_token: str | None = None,
) -> Starlette:
    """The Patchbay ASGI app: collect into ``store``, resolve into ``profiles``, deliver
    through the outbox (``deliveries``, by default ``deliveries.db`` in the data dir).

    It runs the resolve stage on a thread and the delivery engine on the event loop (or, with
    ``settings.delivery_process``, in a child process: :mod:`patchbay.activate.process`),
    and on shutdown stops them and closes the stores. The admin API is enabled by ``admin_token``
    (default ``settings.admin_token``; ``""`` disables it).
    """
    clock = clock or SystemClock()
    metrics = Metrics()
    appender = GroupCommitAppender(store)
    service = ResolveService(profiles, Resolver(strategy or IdentityStrategy()), clock)
    stage = ResolveStage(store, profiles, service.resolver)
    service.attach(stage)
    api = EventsApi(store, appender, settings, clock, metrics)
    runner = StageRunner(
        lambda: service.step(stage), busy=lambda: api.in_flight >= INGEST_BUSY_REQUESTS
    )
    api.on_append = runner.wake
    deliveries = deliveries or SqliteDeliveryStore(settings.data_dir, settings.durability)
    modules = modules or SqliteModuleStore(settings.data_dir, settings.durability)
    delivery_metrics = DeliveryMetrics(metrics.registry)
    engine: DeliveryEngine | None = None
    child: DeliveryProcess | None = None
    if settings.delivery_process:
        # the child needs no admin token
        child_settings = msgspec.structs.replace(settings, admin_token=None)
        child = DeliveryProcess(ChildConfig(child_settings), delivery_metrics)
        notify = child.notify
    else:
        engine_config = EngineConfig.from_settings(settings)
        engine = DeliveryEngine(deliveries, modules, clock, engine_config, delivery_metrics)
        notify = engine.notify
    stage.sink = ActivateSink(deliveries, modules, clock, notify)
    if admin_token is None and settings.admin_token is not None:
        admin_token = settings.admin_token.reveal()
    admin_api = AdminApi(ActivateService(deliveries, modules, store, clock), admin_token)
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
        if engine is not None:
            await engine.start()
        if child is not None:
            child.start()
        runner.start()
        log.info("serving", data_dir=str(settings.data_dir), last_offset=store.last_offset())
        try:
            yield
        finally:
            purger.cancel()
            await asyncio.to_thread(appender.close)
            await asyncio.to_thread(runner.stop)
            await asyncio.to_thread(stage.close)
            if engine is not None:
                await engine.stop()
            if child is not None:
                await asyncio.to_thread(child.stop)
            store.close()
            profiles.close()
            deliveries.close()
            modules.close()
            log.info("stopped")

    routes = [
        *api.routes(),
        *profile_api.routes(),
        *identity_api.routes(),
        *admin_api.routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
