"""The Web SDK's kit endpoints: its config and its forwarding statistics.

``GET /tags/JS/v2/{key}/config?env=0|1`` answers a web input's key with the config the SDK
merges into its own: the input's name, a stable ``workspaceToken``, the :data:`FLAGS`, and
the kits connected to the input in production (``env=0``) or development (``env=1``). Any
other key gets 401 (the SDK then carries on with the page's config). Patchbay has no data
plans: ``plan_id`` and ``plan_version`` are ignored and no ``dataPlanResult`` is sent. The
answer is cached per key and environment; the whole cache is dropped when the kits version
changes (:meth:`~patchbay.backends.abstract.KitStore.version`, read at most once a second,
so a change made by ``patchbay kits`` shows within about a second), and each entry expires
after :data:`CACHE_TTL_S` (an input disabled or a key retired).

``POST /webevents/v1/JS/{key}/Forwarding`` (one statistic) and
``POST /webevents/v2/JS/{key}/Forwarding`` (``{"uuid", "data": [...]}``) are what kits
report for each event they forwarded: 202, counted in ``patchbay_kit_forwarded_events``
by kit, input and event type, and added to the kit's stored totals (flushed every second).
A body that cannot be read is a 422 (never a 400: the SDK resends a 400 forever).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Final

import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.backends.records import Input
from patchbay.clock import Clock
from patchbay.collect.ratelimit import RateLimiter
from patchbay.collect.web import web_key_refusal
from patchbay.http.body import BodyError, read_body
from patchbay.http.reject import Refusals
from patchbay.kits.service import KitService, workspace_token
from patchbay.metrics import Metrics

log = structlog.get_logger("patchbay.kits")

CONFIG_ROUTE: Final = "/tags/JS/v2/{key}/config"
FORWARDING_V1_ROUTE: Final = "/webevents/v1/JS/{key}/Forwarding"
FORWARDING_V2_ROUTE: Final = "/webevents/v2/JS/{key}/Forwarding"

#: The SDK flags every config carries: uploads batched every 5 seconds (commerce events,
#: identity changes and page unloads are sent at once whatever this says). Never
#: ``directURLRouting``, which would send the SDK to mParticle's hosts.
FLAGS: Final = {"eventBatchingIntervalMillis": "5000"}
#: The oldest a cached config may be (seconds).
CACHE_TTL_S: Final = 10.0
#: How often the kits version is read (seconds).
VERSION_CHECK_S: Final = 1.0
#: How often forwarding totals are written to the store (seconds).
FLUSH_INTERVAL_S: Final = 1.0
#: Distinct unknown module ids counted under their own id; any more under ``other``.
MAX_UNKNOWN_MODULES: Final = 32
#: The SDK's message types (``dt``), as event types.
MESSAGE_TYPES: Final = {
    1: "session_start",
    2: "session_end",
    3: "screen_view",
    4: "custom_event",
    5: "crash_report",
    6: "opt_out",
    10: "application_state_transition",
    14: "profile",
    16: "commerce_event",
    17: "user_attribute_change",
    18: "user_identity_change",
    20: "media",
}


class ForwardingStat(msgspec.Struct):
    """One statistic: ``mid`` (the kit's module id) is all Patchbay needs; ``dt`` gives the
    event type."""

    mid: int
    dt: int | None = None
    esid: Any = None
    n: Any = None
    et: Any = None


class ForwardingBatch(msgspec.Struct):
    """The batched form."""

    data: list[ForwardingStat]
    uuid: str | None = None


class KitMetrics:
    """``patchbay_kit_forwarded_events_total``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.forwarded = Counter(
            "patchbay_kit_forwarded_events",
            "Events the Web SDK reported its kits forwarded, by kit, input and event type.",
            ["kit", "input", "event_type"],
            registry=registry,
        )


class _Cached(msgspec.Struct):
    body: bytes
    at: float


class KitsApi:
    """The config and forwarding routes over a :class:`KitService`."""

    def __init__(
        self,
        service: KitService,
        clock: Clock,
        metrics: Metrics,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self._service = service
        self._clock = clock
        self._metrics = KitMetrics(metrics.registry)
        self._reject = Refusals(metrics, log)
        self._max_body = max_body_bytes
        self._cache: dict[tuple[str, bool], _Cached] = {}
        self._inputs: dict[str, tuple[Input | None, float]] = {}
        self._limiter = RateLimiter(clock)
        self._modules: dict[int, str] = {}
        self._unknown: set[int] = set()
        self._version: int | None = None
        self._checked = float("-inf")
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- the cache -------------------------------------------------------------------------

    def _fresh(self) -> None:
        """Drop what was cached if the kits changed (read at most once a second)."""
        now = self._clock.monotonic()
        if now - self._checked < VERSION_CHECK_S:
            return
        version = self._service.kits.version()
        self._checked = now
        if version != self._version:
            self._version = version
            self._cache.clear()
            self._modules = self._service.module_names()

    def _cached(self, key: str, development: bool) -> bytes | None:
        """The config of ``key``'s input (``None``: no enabled web input's key)."""
        input_ = self._input(key)  # (which reads the kits version)
        if input_ is None:
            return None
        now = self._clock.monotonic()
        hit = self._cache.get((key, development))
        if hit is not None and now - hit.at < CACHE_TTL_S:
            return hit.body
        body = self._build(input_, development)
        self._cache[(key, development)] = _Cached(body, now)
        return body

    def _build(self, input_: Input, development: bool) -> bytes:
        config: dict[str, Any] = {
            "appName": input_.name,
            "workspaceToken": workspace_token(input_.id),
            "minWebviewBridgeVersion": 2,
            "flags": FLAGS,
            "kitConfigs": self._service.kit_configs(input_.id, development),
            "pixelConfigs": [],
        }
        return msgspec.json.encode(config)

    def _input(self, key: str) -> Input | None:
        """The enabled web input of ``key`` (kept :data:`CACHE_TTL_S`, as the configs)."""
        self._fresh()
        now = self._clock.monotonic()
        hit = self._inputs.get(key)
        if hit is not None and now - hit[1] < CACHE_TTL_S:
            return hit[0]
        found = self._service.web_input(key)
        self._inputs[key] = (found, now)
        return found

    async def _admitted(self, request: Request, route: str, what: str) -> Input | Response:
        """The web input of the request's key, or its refusal (counted and logged as the
        Web SDK's other routes refuse): 401 for any other key, 429 over the input's rate
        limit (the one its uploads have)."""
        key = request.path_params["key"]
        found = await asyncio.to_thread(self._input, key)
        if found is None:
            return web_key_refusal(self._reject, request, "kits", route, key)
        decision = self._limiter.take(found.id, found.rate_limit, 1)
        if not decision.allowed:
            return self._reject.over_limit(route, decision, found.rate_limit, what)
        return found

    # -- routes ----------------------------------------------------------------------------

    async def config(self, request: Request) -> Response:
        found = await self._admitted(request, CONFIG_ROUTE, "config requests")
        if isinstance(found, Response):
            return found
        development = request.query_params.get("env") == "1"
        key = request.path_params["key"]
        body = await asyncio.to_thread(self._cached, key, development)
        if body is None:  # (its input went in between)
            return web_key_refusal(self._reject, request, "kits", CONFIG_ROUTE, key)
        return Response(body, 200, media_type="application/json")

    async def forwarding_v1(self, request: Request) -> Response:
        return await self._forwarding(
            request, FORWARDING_V1_ROUTE, lambda raw: [_decode(raw, ForwardingStat)]
        )

    async def forwarding_v2(self, request: Request) -> Response:
        return await self._forwarding(
            request, FORWARDING_V2_ROUTE, lambda raw: _decode(raw, ForwardingBatch).data
        )

    async def _forwarding(
        self, request: Request, route: str, decode: Callable[[bytes], list[ForwardingStat]]
    ) -> Response:
        found = await self._admitted(request, route, "forwarding reports")
        if isinstance(found, Response):
            return found
        try:
            raw = await read_body(
                request.stream(),
                request.headers.get("content-length"),
                request.headers.get("content-encoding"),
                self._max_body,
            )
            stats = decode(raw)
        except BodyError as exc:
            if exc.status != 400:  # 413, 415: the SDK drops them as they are
                return self._reject(route, exc.status, exc.code, exc.message, exc.reason)
            return self._unprocessable(route, exc.message)
        except msgspec.MsgspecError as exc:
            return self._unprocessable(route, str(exc))
        self.count(found.name, stats)
        return Response(status_code=202)

    def _unprocessable(self, route: str, message: str) -> Response:
        """422, never 400: the SDK sends a report answered 400 again for ever."""
        return self._reject(route, 422, "UNPROCESSABLE_ENTITY", message, "bad_request")

    def count(self, input_name: str, stats: list[ForwardingStat]) -> None:
        """Count ``stats`` of the input ``input_name``."""
        with self._lock:
            for stat in stats:
                kit = self._kit_name(stat.mid)
                event_type = MESSAGE_TYPES.get(stat.dt or 0, "other")
                self._metrics.forwarded.labels(kit, input_name, event_type).inc()
                self._pending[kit] = self._pending.get(kit, 0) + 1

    def _kit_name(self, module_id: int) -> str:
        name = self._modules.get(module_id)
        if name is not None:
            return name
        if module_id in self._unknown or len(self._unknown) < MAX_UNKNOWN_MODULES:
            self._unknown.add(module_id)
            return str(module_id)
        return "other"

    def flush(self) -> None:
        """Add the counts since the last flush to the stored totals."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            self._service.kits.add_forwarded(pending, self._clock.now_ms())
        except BaseException:
            with self._lock:  # counted again at the next flush
                for kit, events in pending.items():
                    self._pending[kit] = self._pending.get(kit, 0) + events
            raise

    async def flush_loop(self) -> None:
        """:meth:`flush` every :data:`FLUSH_INTERVAL_S`."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await asyncio.to_thread(self.flush)
            except Exception:  # a store that does not answer now: kept for the next time
                log.exception("kit_forwarding_flush_failed")

    def routes(self) -> list[Route]:
        """The config and forwarding routes."""
        return [
            Route(CONFIG_ROUTE, self.config, methods=["GET"]),
            Route(FORWARDING_V1_ROUTE, self.forwarding_v1, methods=["POST"]),
            Route(FORWARDING_V2_ROUTE, self.forwarding_v2, methods=["POST"]),
        ]


def _decode(raw: bytes, kind: type[Any]) -> Any:
    return msgspec.json.decode(raw, type=kind)
