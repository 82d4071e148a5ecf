"""The ASGI application of ``serve``: health and metrics, plus what its roles run: the HTTP
APIs (``ingest``), the pipeline (``process``), the delivery engine (``deliver``), or all
three (docs/scale-out.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from patchbay.activate.admin_http import AdminApi
from patchbay.activate.engine import DeliveryEngine, EngineConfig
from patchbay.activate.process import DeliveryProcess
from patchbay.activate.service import ActivateService
from patchbay.activate.stage import ActivateStage
from patchbay.assignment import open_assignment
from patchbay.backends import EMBEDDED_BACKENDS, Backend, open_backend
from patchbay.backoff import StorageBackoff
from patchbay.clock import Clock, SystemClock
from patchbay.collect.appender import GroupCommitAppender, recover_dedup
from patchbay.collect.http import EventsApi
from patchbay.collect.inputs import origin_check
from patchbay.collect.web import WebEventsApi
from patchbay.config import ConfigError
from patchbay.http import EXCEPTION_HANDLERS, middleware
from patchbay.http.auth import BearerToken, auth_failed
from patchbay.http.cors import WEB_SDK_PATH_PREFIXES, CorsPolicy
from patchbay.http.errors import error_response
from patchbay.http.health import Health
from patchbay.kits.admin_http import KitAdminApi
from patchbay.kits.http import KitsApi
from patchbay.kits.service import KitService
from patchbay.metrics import (
    CONTENT_TYPE_LATEST,
    DeliveryMetrics,
    Metrics,
    ResolveConflicts,
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
from patchbay.segment.web_http import WebAudienceApi
from patchbay.settings import ROLES, Settings
from patchbay.summary import Throughput

log = structlog.get_logger("patchbay.server")

#: Requests in flight from which collecting counts as busy: the resolve stage then pauses
#: after each chunk as long as the chunk took (:class:`~patchbay.resolve.stage.StageRunner`).
INGEST_BUSY_REQUESTS = 8

Notify = Callable[[set[str]], None]
Step = Callable[[], Awaitable[None]]


def check_roles(settings: Settings, backend_name: str) -> None:
    """Refuse roles other than ``all`` on an embedded backend: its store is one process's
    (the data directory's lock, the log's group commit and recovery, the children that
    ``serve`` starts and wakes), which several ``serve`` processes cannot share."""
    if settings.scaled_roles and backend_name in EMBEDDED_BACKENDS:
        raise ConfigError(
            f"roles = {','.join(settings.roles)}: the {backend_name} backend's store belongs"
            " to one patchbay serve, which cannot share it with other Patchbay processes; run"
            " every role in one process (roles = all, the default), or use the scale-out"
            " mode (--log kafka://... --state postgresql://..., docs/scale-out.md)"
        )


@dataclass
class Part:
    """What one role adds to the app: its routes, the steps that start and stop it (in
    order), background loops (cancelled first at shutdown), what ``/metrics`` refreshes
    first, its stages' counts of handled batches (for the throughput summary), and its
    counts of resolve commits refused for a conflict (``patchbay_resolve_conflicts``)."""

    routes: list[BaseRoute] = field(default_factory=list)
    start: list[Step] = field(default_factory=list)
    stop: list[Step] = field(default_factory=list)
    loops: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    observe: list[Callable[[], None]] = field(default_factory=list)
    processed: dict[str, Callable[[], int]] = field(default_factory=dict)
    conflicts: dict[str, Callable[[], int]] = field(default_factory=dict)


@dataclass
class Shared:
    """What the roles of one process share."""

    settings: Settings
    backend: Backend
    clock: Clock
    metrics: Metrics
    service: ResolveService

    @property
    def child_settings(self) -> Settings:
        """The settings of the child processes: they need none of the tokens."""
        return msgspec.structs.replace(
            self.settings,
            admin_token=None,
            admin_token_file=None,
            metrics_token=None,
            metrics_token_file=None,
        )


def _in_thread(function: Callable[[], object]) -> Step:
    async def step() -> None:
        await asyncio.to_thread(function)

    return step


def _now(function: Callable[[], object]) -> Step:
    async def step() -> None:
        function()

    return step


def create_app(
    settings: Settings,
    backend: Backend | None = None,
    clock: Clock | None = None,
    strategy: IdentityStrategy | None = None,
    admin_token: str | None = None,
    extra_stages: Sequence[Stage] = (),
) -> Starlette:
    """The Patchbay ASGI app over ``backend`` (by default the one ``settings`` names), with
    what ``settings.roles`` run (:func:`deliver_part`, :func:`ingest_part`,
    :func:`process_part`), and ``/healthz`` and ``/metrics`` whatever they are (any other
    path is the usual JSON 404 in a process without the HTTP APIs).

    With ``settings.delivery_process`` the delivery engine, and with
    ``settings.segment_process`` the segment stage, run in child processes
    (:mod:`patchbay.child`). On shutdown it stops everything and closes the backend. The
    admin API is enabled by ``admin_token`` (default ``settings.admin_token``; ``""``
    disables it); ``/metrics`` requires ``settings.metrics_token`` when it is set.
    """
    scale_out = settings.state is not None or settings.log is not None
    check_roles(settings, backend.name if backend else "" if scale_out else settings.backend)
    if scale_out and settings.runs("process") and not settings.segment_process:
        raise ConfigError(
            "segment_process = false: in the scale-out mode the segment stage runs in its"
            " child process, led by one processor at a time (docs/scale-out.md)"
        )
    if backend is None:
        backend = open_backend(settings)
    for child in ("delivery", "segment"):
        if getattr(settings, f"{child}_process") and backend.name == "memory":
            raise ConfigError(
                f"backend = memory cannot be shared with the {child} process:"
                f" set {child}_process = false (--no-{child}-process)"
            )
    clock = clock or SystemClock()
    shared = Shared(
        settings,
        backend,
        clock,
        Metrics(),
        ResolveService(backend.state, Resolver(strategy or IdentityStrategy()), clock),
    )
    roles: list[str] = [role for role in ROLES if settings.runs(role)]
    # Assembled in this order: the pipeline wakes the engine, and collecting wakes (and
    # slows) the pipeline, when they run in the same process.
    deliver, notify = deliver_part(shared) if settings.runs("deliver") else (Part(), None)
    ingest, api = ingest_part(shared, admin_token) if settings.runs("ingest") else (Part(), None)
    process = (
        process_part(shared, notify, api, extra_stages) if settings.runs("process") else Part()
    )
    return _app(shared, roles, [deliver, process, ingest])


def deliver_part(shared: Shared) -> tuple[Part, Notify]:
    """``deliver``: the delivery engine, on the event loop or in its child process; and the
    function that wakes it."""
    settings = shared.settings
    if settings.delivery_process:
        delivery = DeliveryProcess(shared.child_settings, shared.metrics.registry)
        part = Part(start=[_now(delivery.start)], stop=[_in_thread(delivery.stop)])
        return part, delivery.notify
    engine = DeliveryEngine(
        shared.backend,
        shared.clock,
        EngineConfig.from_settings(settings),
        DeliveryMetrics(shared.metrics.registry),
        backoff=StorageBackoff("delivery", shared.clock, shared.metrics.registry),
    )
    return Part(start=[engine.start], stop=[engine.stop]), engine.notify


def ingest_part(shared: Shared, admin_token: str | None) -> tuple[Part, EventsApi]:
    """``ingest``: the Events API (and the appender behind it), IDSync, the Profile API, the
    admin APIs and the OpenAPI document."""
    settings, backend, clock, metrics = (
        shared.settings,
        shared.backend,
        shared.clock,
        shared.metrics,
    )
    recovered = recover_dedup(backend.log, backend.dedup)
    if recovered:
        log.info("dedup_recovered", keys=recovered)
    appender = GroupCommitAppender(backend.log, backend.dedup)
    api = EventsApi(backend.inputs, appender, settings, clock, metrics)
    if admin_token is None and settings.admin_token is not None:
        admin_token = settings.admin_token.reveal()
    admin_api = AdminApi(
        ActivateService.from_settings(backend, clock, settings),
        admin_token,
        max_body_bytes=settings.max_request_bytes,
    )
    audience_service = AudienceService(backend, clock)
    audience_admin_api = AudienceAdminApi(audience_service, admin_api)
    kit_service = KitService(backend, clock)
    kits_api = KitsApi(kit_service, clock, metrics, settings.max_request_bytes)
    kit_admin_api = KitAdminApi(kit_service, admin_api)
    profile_api = ProfileApi(
        backend.api_clients,
        shared.service,
        clock,
        audience_service.memberships,
        max_body_bytes=settings.max_request_bytes,
    )
    identity_api = IdentityApi(
        backend.inputs,
        appender,
        shared.service,
        clock,
        metrics,
        SecretBox(key_path(settings.data_dir, settings.secrets_key_file)),
    )

    web_events = WebEventsApi(backend.inputs, api, settings.max_request_bytes, clock, metrics)
    web_audience = WebAudienceApi(
        backend.inputs, shared.service, audience_service.memberships, clock, metrics
    )

    async def openapi_endpoint(request: Request) -> Response:
        document = build_openapi(str(request.base_url))  # its token URL is absolute
        return Response(msgspec.json.encode(document), media_type="application/json")

    routes: list[BaseRoute] = [
        *api.routes(),
        *profile_api.routes(),
        *identity_api.routes(),
        *web_events.routes(),
        *web_audience.routes(),
        *kits_api.routes(),
        *audience_admin_api.routes(),  # before admin_api's catch-all 404
        *kit_admin_api.routes(),
        *admin_api.routes(),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
    ]
    part = Part(routes=routes, stop=[_in_thread(appender.close), _in_thread(kits_api.flush)])
    part.loops.append(kits_api.flush_loop)
    part.conflicts["idsync"] = lambda: shared.service.conflicts
    return part, api


def process_part(
    shared: Shared, notify: Notify | None, api: EventsApi | None, extra_stages: Sequence[Stage]
) -> Part:
    """``process``: the pipeline (resolve, then activate, segment and ``extra_stages``,
    each with its own checkpoint and thread; segment maybe in its child process) and the
    log's retention. ``notify`` wakes the delivery engine of this process (without one,
    deliverers find new deliveries at their next poll); ``api``, this process's Events
    API, wakes the pipeline and slows it while collecting is busy."""
    settings, backend, clock, registry = (
        shared.settings,
        shared.backend,
        shared.clock,
        shared.metrics.registry,
    )
    wake: Notify = notify or (lambda outputs: None)
    activate = ActivateStage(backend.outputs, backend.outbox, backend.modules, clock, wake)
    stages: list[Stage] = [activate, *extra_stages]
    elsewhere: list[StageElsewhere] = []
    part = Part()
    if settings.segment_process:
        segment = SegmentProcess(shared.child_settings, registry, wake)
        elsewhere.append(SegmentProcess.stage)
        part.start.append(_now(segment.start))
    else:
        stages.append(SegmentStage(backend, clock, wake, metrics=SegmentMetrics(registry)))
    # the partitions this process resolves: all of them on the embedded store, a share of
    # them, through the processors' consumer group, on Kafka
    assignment = open_assignment(
        backend,
        group=settings.kafka_group,
        session_timeout_s=settings.kafka_session_timeout_s,
        registry=registry,
    )
    pipeline = Pipeline(
        backend,
        shared.service,
        stages,
        busy=(lambda: api.in_flight >= INGEST_BUSY_REQUESTS) if api else (lambda: False),
        elsewhere=elsewhere,
        clock=clock,
        registry=registry,
        assignment=assignment,
    )
    if api is not None:
        api.on_append = pipeline.wake
    part.start.append(_now(pipeline.start))
    part.stop.append(_in_thread(pipeline.stop))
    part.stop.append(_in_thread(assignment.close))  # leaves the group: others take over
    if settings.segment_process:
        part.stop.append(_in_thread(segment.stop))
    retention = Retention(
        backend,
        RetentionPolicy.from_settings(settings),
        clock,
        pipeline.passed,
        StorageMetrics(registry),
    )

    async def retain() -> None:
        """The log's retention, the dedup window and space given back, in the background."""
        while True:
            await asyncio.sleep(RETENTION_INTERVAL_S)
            try:
                await asyncio.to_thread(retention.run)
            except Exception:
                log.exception("retention_failed")  # tried again at the next pass

    part.loops.append(retain)
    part.observe.append(retention.observe)
    part.processed.update(
        resolve=lambda: pipeline.resolve.processed, activate=lambda: activate.handled
    )
    part.conflicts["stage"] = lambda: pipeline.resolve.conflicts
    return part


def _app(shared: Shared, roles: list[str], parts: list[Part]) -> Starlette:
    """The app of ``parts`` (started in this order, stopped in the reverse), with
    ``/healthz`` and ``/metrics``."""
    settings, backend, metrics = shared.settings, shared.backend, shared.metrics
    processed = {k: v for part in parts for k, v in part.processed.items()}
    throughput = Throughput(metrics.registry, backend, shared.clock, processed)
    # one family, whichever of the roles resolve (IDSync in ingest, the stage in process)
    if conflicts := {k: v for part in parts for k, v in part.conflicts.items()}:
        metrics.registry.register(ResolveConflicts(**conflicts))

    def last_offset() -> int:
        ends = [backend.log.end(p) for p in range(backend.log.partitions)]
        return sum(e.offset for e in ends if e is not None)

    async def healthz(request: Request) -> Response:
        offset = await asyncio.to_thread(last_offset)
        return Response(
            msgspec.json.encode(Health("ok", offset, roles)),
            media_type="application/json",
        )

    metrics_token = BearerToken(settings.metrics_token.reveal()) if settings.metrics_token else None

    def observe() -> None:
        throughput.observe()
        for part in parts:
            for refresh in part.observe:
                refresh()

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
        await asyncio.to_thread(observe)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def summarize(interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(throughput.log)
            except Exception:  # a store that does not answer now: try again next time
                log.exception("throughput_summary_failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(loop()) for part in parts for loop in part.loops]
        if settings.log_summary_interval_s > 0:
            tasks.append(asyncio.create_task(summarize(settings.log_summary_interval_s)))
        for part in parts:
            for step in part.start:
                await step()
        log.info("serving", backend=backend.name, roles=roles, last_offset=last_offset())
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for part in reversed(parts):
                for step in part.stop:
                    await step()
            backend.close()
            log.info("stopped")

    routes = [
        *(route for part in parts for route in part.routes),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware(
            metrics,
            CorsPolicy(
                (*BROWSER_PATH_PREFIXES, *WEB_SDK_PATH_PREFIXES),
                origins=origin_check(backend.inputs),
            ),
        ),
        exception_handlers=EXCEPTION_HANDLERS,
    )
