"""The Events API over HTTP: ``/v2/events``, ``/v2/bulkevents``, ``/v2/bulkevents/historical``.

Each request goes: authenticate (401/403) -> read the body: its type, the limits and repeated
keys (415/413/400) -> decode and validate (400) -> rate limit (429) -> append durably -> 202.
A rejected request writes nothing; in a bulk request the valid batches are stored and the
rejected ones are listed in the 202 body (a repeated key refuses the whole request).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.backends.abstract import InputStore
from patchbay.backends.records import Input
from patchbay.clock import Clock
from patchbay.collect.appender import GroupCommitAppender
from patchbay.collect.decode import BadInput
from patchbay.collect.ingest import (
    Prepared,
    Rejection,
    RequestStamps,
    prepare_bulk,
    prepare_single,
)
from patchbay.collect.inputs import authenticate
from patchbay.collect.ratelimit import RateLimiter
from patchbay.errors import LogUnavailable, StorageFull
from patchbay.http.auth import auth_failed
from patchbay.http.body import BodyError, read_json
from patchbay.http.errors import (
    LOG_UNAVAILABLE_MESSAGE,
    LOG_UNAVAILABLE_RETRY_AFTER_S,
    STORAGE_FULL_MESSAGE,
    STORAGE_FULL_RETRY_AFTER_S,
    ApiError,
    ErrorBody,
)
from patchbay.http.reject import Refusals
from patchbay.metrics import Metrics
from patchbay.settings import Settings

log = structlog.get_logger("patchbay.collect")

_encode = msgspec.json.Encoder().encode


class Accepted(msgspec.Struct):
    """The body of a 202: batches stored, duplicates skipped, batches rejected."""

    accepted: int
    duplicates: int
    rejected: list[Rejection]


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """The key and secret of an ``Authorization: Basic`` header, or ``None`` if malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, secret = decoded.partition(":")
    if not sep or not key:
        return None
    return key, secret


#: The reason logged when a key and secret do not authenticate.
WRONG_CREDENTIALS = "unknown or disabled key, or wrong secret"


def basic_auth_problem(header: str | None) -> str:
    """Why ``header`` gives no HTTP Basic key and secret (for the log)."""
    return "no Authorization header" if not header else "Authorization is not HTTP Basic"


class EventsApi:
    """The request handlers of the Events API, bound to a store and an appender."""

    def __init__(
        self,
        inputs: InputStore,
        appender: GroupCommitAppender,
        settings: Settings,
        clock: Clock,
        metrics: Metrics,
        on_append: Callable[[], None] | None = None,
    ) -> None:
        self._inputs = inputs
        self.on_append = on_append
        self._appender = appender
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._limiter = RateLimiter(clock)
        self._reject = Refusals(metrics, log)
        #: Requests being handled now (read by the resolve stage to yield to collecting).
        self.in_flight = 0

    def routes(self) -> list[Route]:
        """The Starlette routes of the API."""
        return [
            Route("/v2/events", self.events, methods=["POST"]),
            Route("/v2/bulkevents", self.bulk, methods=["POST"]),
            Route("/v2/bulkevents/historical", self.historical, methods=["POST"]),
        ]

    async def events(self, request: Request) -> Response:
        """``POST /v2/events``: one batch, all or nothing."""
        return await self._handle(request, "/v2/events", bulk=False, historical=False)

    async def bulk(self, request: Request) -> Response:
        """``POST /v2/bulkevents``: up to 100 batches, each accepted or rejected on its own."""
        return await self._handle(request, "/v2/bulkevents", bulk=True, historical=False)

    async def historical(self, request: Request) -> Response:
        """``POST /v2/bulkevents/historical``: a bulk of batches older than 72 hours."""
        return await self._handle(request, "/v2/bulkevents/historical", bulk=True, historical=True)

    async def _handle(self, request: Request, route: str, bulk: bool, historical: bool) -> Response:
        self.in_flight += 1
        try:
            return await self._process(request, route, bulk, historical)
        finally:
            self.in_flight -= 1

    async def _process(
        self, request: Request, route: str, bulk: bool, historical: bool
    ) -> Response:
        header = request.headers.get("authorization")
        credentials = parse_basic_auth(header)
        if credentials is None:
            auth_failed(request, "events", basic_auth_problem(header))
            return self._reject(
                route,
                401,
                "UNAUTHORIZED",
                "Authorization: use HTTP Basic authentication with an input's key and secret",
                "unauthorized",
                {"WWW-Authenticate": 'Basic realm="patchbay"'},
                logged=True,
            )
        item = authenticate(self._inputs, *credentials)
        if item is None:
            auth_failed(request, "events", WRONG_CREDENTIALS, credentials[0])
            return self._reject(
                route,
                403,
                "FORBIDDEN",
                "Authorization: unknown or disabled key, or wrong secret",
                "forbidden",
                logged=True,
            )
        try:
            body = await read_json(request, self._settings.max_request_bytes)
        except BodyError as exc:
            return self._reject(route, exc.status, exc.code, exc.message, exc.reason)

        stamps = RequestStamps(
            input=item,
            ip=request.client.host if request.client else None,
            received_at_ms=self._clock.now_ms(),
            historical=historical,
        )
        try:
            if bulk:
                prepared = prepare_bulk(body, stamps, self._settings.max_batches_per_request)
            else:
                prepared = prepare_single(body, stamps)
        except BadInput as exc:
            return self._reject(route, 400, "BAD_REQUEST", str(exc), "bad_request")
        if prepared.rejected:
            self._metrics.rejects.labels("invalid_batch").inc(len(prepared.rejected))
            if not prepared.batches:
                return self._all_rejected(route, prepared.rejected)

        return await self.admit(route, item, prepared)

    async def admit(self, route: str, item: Input, prepared: Prepared) -> Response:
        """Rate-limit and store ``prepared`` (the batches of a request of ``item``), and
        answer: 202 once they are durable, 429 over the limit, 503 when the store cannot
        take them (every API that collects batches ends here)."""
        if not prepared.batches:  # an empty bulk request: nothing to limit or store
            return self._accepted(0, 0, [], 0)
        decision = self._limiter.take(item.id, item.rate_limit, len(prepared.batches))
        if not decision.allowed:
            scope = "feed" if item.type == "feed" else "app"
            return self._reject.over_limit(route, decision, item.rate_limit, "batches", scope)
        try:
            return await self._store(item, prepared, decision.percent_used)
        except StorageFull:  # 503: the appender wrote none of the request's batches
            return self._reject(
                route,
                503,
                "STORAGE_FULL",
                STORAGE_FULL_MESSAGE,
                "storage_full",
                {"Retry-After": str(STORAGE_FULL_RETRY_AFTER_S)},
            )
        except LogUnavailable as exc:  # 503: none acknowledged (the sender retries)
            log.warning("log_unavailable", route=route, error=str(exc))
            return self._reject(
                route,
                503,
                "LOG_UNAVAILABLE",
                LOG_UNAVAILABLE_MESSAGE,
                "log_unavailable",
                {"Retry-After": str(LOG_UNAVAILABLE_RETRY_AFTER_S)},
            )

    def _all_rejected(self, route: str, rejected: list[Rejection]) -> Response:
        log.info(
            "request_rejected", route=route, status=400, reason="bad_request", batches=len(rejected)
        )
        self._metrics.rejects.labels("bad_request").inc()
        errors = [ApiError(r.code, f"[{r.index}] {r.message}") for r in rejected]
        return Response(_encode(ErrorBody(errors)), 400, media_type="application/json")

    async def _store(self, item: Input, prepared: Prepared, percent_used: int) -> Response:
        since = self._clock.now_ms() - int(self._settings.dedup_window_s * 1000)
        result = await self._appender.append(prepared.batches, since)
        if result.stored and self.on_append is not None:
            self.on_append()  # the batches are committed: wake the resolve stage
        events = sum(
            n for n, p in zip(prepared.events, result.positions, strict=True) if p is not None
        )
        self._metrics.batches.labels(item.name).inc(result.stored)
        self._metrics.events.labels(item.name).inc(events)
        if result.duplicates:
            self._metrics.duplicates.labels(item.name).inc(result.duplicates)
        return self._accepted(result.stored, result.duplicates, prepared.rejected, percent_used)

    @staticmethod
    def _accepted(stored: int, duplicates: int, rejected: list[Rejection], used: int) -> Response:
        return Response(
            _encode(Accepted(stored, duplicates, rejected)),
            202,
            {"X-mp-rate-limit-percentage-used": str(used)},
            media_type="application/json",
        )
