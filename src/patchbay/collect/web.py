"""The Web SDK's event uploads: ``POST /webevents/v3/JS/{key}/events``.

One batch per request, its JSON sent as ``text/plain`` (so that the browser needs no
preflight; ``navigator.sendBeacon`` sends the same), authenticated by a web input's key
alone, in the path. The batch is the Events API's and goes the same way: decoded and
validated, stamped (the client's address and ``User-Agent``, channel ``javascript``),
rate-limited per input, appended durably, de-duplicated on ``source_request_id``
(the SDK sends a batch again, with the same id, after a 5xx or a CORS failure), 202.

The SDK drops a batch answered 401 to 499 (but 429) and sends any other again, for ever:
so a body that cannot be stored is a 422, never a 400.
"""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.backends.abstract import InputStore
from patchbay.clock import Clock
from patchbay.collect.decode import BadInput
from patchbay.collect.http import EventsApi
from patchbay.collect.ingest import WEB_CHANNEL, RequestStamps, prepare_web
from patchbay.collect.inputs import web_input
from patchbay.http.auth import auth_failed
from patchbay.http.body import BodyError, check_unique_keys, media_type, read_json
from patchbay.http.reject import Refusals
from patchbay.metrics import Metrics

log = structlog.get_logger("patchbay.collect")

TEXT = "text/plain"
#: The reason a batch refused with 422 is counted under in ``patchbay_rejects``.
INVALID_BATCH = "invalid_batch"
#: What the Web SDK's endpoints answer to a key that is not an enabled web input's.
NOT_A_WEB_KEY = "unknown or disabled key, or not a web input's key"


def web_key_refusal(refuse: Refusals, request: Request, api: str, route: str, key: str) -> Response:
    """The 401 for a key that no enabled web input has (logged as ``auth_failed``)."""
    auth_failed(request, api, NOT_A_WEB_KEY, key)
    return refuse(route, 401, "UNAUTHORIZED", f"key: {NOT_A_WEB_KEY}", "unauthorized", logged=True)


class WebEventsApi:
    """The Web SDK's upload endpoint, storing through the Events API's :meth:`admit`."""

    ROUTE = "/webevents/v3/JS/{key}/events"

    def __init__(
        self,
        inputs: InputStore,
        events: EventsApi,
        max_request_bytes: int,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._inputs = inputs
        self._events = events
        self._max_request_bytes = max_request_bytes
        self._clock = clock
        self._reject = Refusals(metrics, log)

    def routes(self) -> list[Route]:
        """The Starlette route."""
        return [Route(self.ROUTE, self.upload, methods=["POST"])]

    async def upload(self, request: Request) -> Response:
        """``POST /webevents/v3/JS/{key}/events``: one batch."""
        self._events.in_flight += 1
        try:
            return await self._upload(request)
        finally:
            self._events.in_flight -= 1

    async def _upload(self, request: Request) -> Response:
        route = self.ROUTE
        key = request.path_params["key"]
        item = web_input(self._inputs, key)
        if item is None:
            return web_key_refusal(self._reject, request, "webevents", route, key)
        try:
            body = await read_json(request, self._max_request_bytes, others=(TEXT,))
            if media_type(request.headers.get("content-type")) == TEXT:
                check_unique_keys(body)
        except BodyError as exc:
            if exc.status != 400:  # 413, 415: dropped by the SDK as they are
                return self._reject(route, exc.status, exc.code, exc.message, exc.reason)
            return self._unprocessable(route, exc.message)
        stamps = RequestStamps(
            input=item,
            ip=request.client.host if request.client else None,
            received_at_ms=self._clock.now_ms(),
            channel=WEB_CHANNEL,
        )
        try:
            prepared = prepare_web(body, stamps, request.headers.get("user-agent"))
        except BadInput as exc:
            return self._unprocessable(route, str(exc))
        return await self._events.admit(route, item, prepared)

    def _unprocessable(self, route: str, message: str) -> Response:
        """422 (logged, counted): the SDK drops the batch rather than send it for ever."""
        return self._reject(route, 422, "UNPROCESSABLE_ENTITY", message, INVALID_BATCH)
