"""The ASGI application: the collect API plus health, metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.activate.admin_http import AdminApi
from patchbay.activate.engine import DeliveryEngine, EngineConfig
from patchbay.activate.process import DeliveryProcess
from patchbay.activate.service import ActivateService
from patchbay.activate.stage import ActivateStage
from patchbay.backends import Backend, open_backend
from patchbay.backoff import StorageBackoff
from patchbay.clock import Clock, SystemClock
from patchbay.collect.appender import GroupCommitAppender, recover_dedup
from patchbay.collect.http import EventsApi
from patchbay.config import ConfigError
from patchbay.http import EXCEPTION_HANDLERS, middleware
from patchbay.http.auth import BearerToken, auth_failed
from patchbay.http.cors import CorsPolicy
from patchbay.http.errors import error_response
from patchbay.http.health import Health
from patchbay.metrics import (
    CONTENT_TYPE_LATEST,
    DeliveryMetrics,
    Metrics,
    SegmentMetrics,
    StorageMetrics,
)
from patchbay.openapi import build_openapi
from patchbay.pipeline import Pipeline, Stage, StageElsewhere
from patchbay.resolve.idsync_http import BROWSER_PATH_PREFIXES, IdentityApi
from patchbay.resolve.profile_http import ProfileApi
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.retention import RETENTION_INTERVAL_S, Retention, RetentionPolicy
from patchbay.secretbox import SecretBox, key_path
from patchbay.segment.admin_http import AudienceAdminApi
from patchbay.segment.process import SegmentProcess
from patchbay.segment.service import AudienceService
from patchbay.segment.stage import SegmentStage
from patchbay.settings import Settings
from patchbay.summary import Throughput

log = structlog.get_logger("patchbay.server")

#: Requests in flight from which collecting counts as busy: the resolve stage then pauses
#: after each chunk as long as the chunk took (:class:`~patchbay.resolve.stage.StageRunner`).
INGEST_BUSY_REQUESTS = 8


def create_app(
    settings: Settings,
    backend: Backend | None = None,
    clock: Clock | None = None,
    strategy: IdentityStrategy | None = None,
    admin_token: str | None = None,
    extra_stages: Sequence[Stage] = (),
) -> Starlette:
    """The Patchbay ASGI app over ``backend`` (by default the one ``settings`` names): the
    HTTP APIs, and the pipeline (collect -> resolve -> activate and segment, plus
    ``extra_stages``).

    It runs the resolve stage and each later stage on threads of their own, and the
    delivery engine on the event loop; with ``settings.delivery_process`` the delivery
    engine, and with ``settings.segment_process`` the segment stage, run in child processes
    instead (:mod:`patchbay.child`). On shutdown it stops them and closes the backend. The
    admin API is enabled by ``admin_token`` (default ``settings.admin_token``; ``""``
    disables it); ``/metrics`` requires ``settings.metrics_token`` when it is set.
    """
    if backend is None:
        backend = open_backend(settings)
    for process in ("delivery", "segment"):
        if getattr(settings, f"{process}_process") and backend.name == "memory":
            raise ConfigError(
                f"backend = memory cannot be shared with the {process} process:"
                f" set {process}_process = false (--no-{process}-process)"
            )
    clock = clock or SystemClock()
    metrics = Metrics()
    recovered = recover_dedup(backend.log, backend.dedup)
    if recovered:
        log.info("dedup_recovered", keys=recovered)
    appender = GroupCommitAppender(backend.log, backend.dedup)
    service = ResolveService(backend.state, Resolver(strategy or IdentityStrategy()), clock)
    api = EventsApi(backend.inputs, appender, settings, clock, metrics)
    child_settings = msgspec.structs.replace(  # the children need none of the tokens
        settings,
        admin_token=None,
        admin_token_file=None,
        metrics_token=None,
        metrics_token_file=None,
    )
    engine: DeliveryEngine | None = None
    children: list[DeliveryProcess | SegmentProcess] = []
    if settings.delivery_process:
        delivery = DeliveryProcess(child_settings, metrics.registry)
        children.append(delivery)
        notify = delivery.notify
    else:
        engine_config = EngineConfig.from_settings(settings)
        engine = DeliveryEngine(
            backend,
            clock,
            engine_config,
            DeliveryMetrics(metrics.registry),
            backoff=StorageBackoff("delivery", clock, metrics.registry),
        )
        notify = engine.notify
    # The pipeline: every stage after resolve, each with its own checkpoint and thread.
    activate = ActivateStage(backend.outputs, backend.outbox, backend.modules, clock, notify)
    stages: list[Stage] = [activate, *extra_stages]
    elsewhere: list[StageElsewhere] = []
    if settings.segment_process:
        children.append(SegmentProcess(child_settings, metrics.registry, notify))
        elsewhere.append(SegmentProcess.stage)
    else:
        stages.append(
            SegmentStage(backend, clock, notify, metrics=SegmentMetrics(metrics.registry))
        )
    pipeline = Pipeline(
        backend,
        service,
        stages,
        busy=lambda: api.in_flight >= INGEST_BUSY_REQUESTS,
        elsewhere=elsewhere,
        clock=clock,
        registry=metrics.registry,
    )
    api.on_append = pipeline.wake
    throughput = Throughput(
        metrics.registry,
        backend,
        clock,
        {"resolve": lambda: pipeline.resolve.processed, "activate": lambda: activate.handled},
    )
    retention = Retention(
        backend,
        RetentionPolicy.from_settings(settings),
        clock,
        pipeline.passed,
        StorageMetrics(metrics.registry),
    )
    if admin_token is None and settings.admin_token is not None:
        admin_token = settings.admin_token.reveal()
    admin_api = AdminApi(
        ActivateService.from_settings(backend, clock, settings),
        admin_token,
        max_body_bytes=settings.max_request_bytes,
    )
    audience_service = AudienceService(backend, clock)
    audience_admin_api = AudienceAdminApi(audience_service, admin_api)
    profile_api = ProfileApi(
        backend.api_clients,
        service,
        clock,
        audience_service.memberships,
        max_body_bytes=settings.max_request_bytes,
    )
    identity_api = IdentityApi(
        backend.inputs,
        appender,
        service,
        clock,
        metrics,
        SecretBox(key_path(settings.data_dir, settings.secrets_key_file)),
    )

    def last_offset() -> int:
        ends = [backend.log.end(p) for p in range(backend.log.partitions)]
        return sum(e.offset for e in ends if e is not None)

    async def healthz(request: Request) -> Response:
        offset = await asyncio.to_thread(last_offset)
        return Response(
            msgspec.json.encode(Health("ok", offset)),
            media_type="application/json",
        )

    metrics_token = BearerToken(settings.metrics_token.reveal()) if settings.metrics_token else None

    async def metrics_endpoint(request: Request) -> Response:
        if metrics_token is not None:
            reason = metrics_token.check(request.headers.get("authorization"))
            if reason is not None:
                auth_failed(request, "metrics", reason)
                return error_response(
                    401,
                    "UNAUTHORIZED",
                    "Authorization: /metrics requires the metrics token (Bearer)",
                    {"WWW-Authenticate": 'Bearer realm="patchbay-metrics"'},
                )
        await asyncio.to_thread(retention.observe)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def openapi_endpoint(request: Request) -> Response:
        document = build_openapi(str(request.base_url))  # its token URL is absolute
        return Response(msgspec.json.encode(document), media_type="application/json")

    async def retain() -> None:
        """The log's retention, the dedup window and space given back, in the background."""
        while True:
            await asyncio.sleep(RETENTION_INTERVAL_S)
            try:
                await asyncio.to_thread(retention.run)
            except Exception:
                log.exception("retention_failed")  # tried again at the next pass

    async def summarize(interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(throughput.log)
            except Exception:  # a store that does not answer now: try again next time
                log.exception("throughput_summary_failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(retain())]
        if settings.log_summary_interval_s > 0:
            tasks.append(asyncio.create_task(summarize(settings.log_summary_interval_s)))
        if engine is not None:
            await engine.start()
        for child in children:
            child.start()
        pipeline.start()
        log.info("serving", backend=backend.name, last_offset=last_offset())
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.to_thread(appender.close)
            await asyncio.to_thread(pipeline.stop)
            if engine is not None:
                await engine.stop()
            for child in children:
                await asyncio.to_thread(child.stop)
            backend.close()
            log.info("stopped")

    routes = [
        *api.routes(),
        *profile_api.routes(),
        *identity_api.routes(),
        *audience_admin_api.routes(),  # before admin_api's catch-all 404
        *admin_api.routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware(metrics, CorsPolicy(BROWSER_PATH_PREFIXES)),
        exception_handlers=EXCEPTION_HANDLERS,
    )
