"""The Web SDK's audience call: ``GET /nativesdks/v1/{key}/audience?mpid=N``.

``mParticle.getUserAudiences`` (flag ``audienceAPI``) asks which audiences a user is in and
reads ``audience_memberships[].audience_id``. The answer lists the ids only (a page holds
the key, so audience names stay private), and only for a user the key's web input has
seen: for any other MPID, known or not, the list is empty, so the key cannot tell which
users exist. A key that is not an enabled web input's is a 401, an MPID that is not a
signed 64-bit integer a 422 (the SDK does not retry either).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.backends.abstract import InputStore
from patchbay.backends.records import Input
from patchbay.clock import Clock
from patchbay.collect.fields import parse_mpid
from patchbay.collect.inputs import web_input
from patchbay.collect.ratelimit import RateLimiter
from patchbay.collect.web import web_key_refusal
from patchbay.http.reject import Refusals
from patchbay.metrics import Metrics
from patchbay.resolve.service import ResolveService

log = structlog.get_logger("patchbay.segment")

#: The audiences of an MPID (:meth:`patchbay.segment.service.AudienceService.memberships`).
Memberships = Callable[[int], Sequence[Mapping[str, Any]]]


class AudienceMembership(msgspec.Struct):
    """One audience the user is in, as mParticle's audience API gives it."""

    audience_id: int


class AudienceMemberships(msgspec.Struct):
    """The answer: ``dt`` ``cam`` (current audience memberships), when (``ct``, Unix ms),
    an id of the answer, and the memberships."""

    dt: str
    ct: int
    id: str
    audience_memberships: list[AudienceMembership]


class WebAudienceApi:
    """The handler of ``/nativesdks/v1/{key}/audience``."""

    ROUTE = "/nativesdks/v1/{key}/audience"

    def __init__(
        self,
        inputs: InputStore,
        service: ResolveService,
        memberships: Memberships,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self._inputs = inputs
        self._service = service
        self._memberships = memberships
        self._clock = clock
        self._reject = Refusals(metrics, log)
        self._limiter = RateLimiter(clock)

    def routes(self) -> list[Route]:
        """The Starlette route."""
        return [Route(self.ROUTE, self.audience, methods=["GET"])]

    async def audience(self, request: Request) -> Response:
        """The audiences of ``?mpid=``, for a user the key's input has seen."""
        key = request.path_params["key"]
        item = web_input(self._inputs, key)
        if item is None:
            return web_key_refusal(self._reject, request, "audience", self.ROUTE, key)
        decision = self._limiter.take(item.id, item.rate_limit, 1)
        if not decision.allowed:
            return self._reject.over_limit(
                self.ROUTE, decision, item.rate_limit, "audience requests"
            )
        text = request.query_params.get("mpid")
        try:
            if text is None:
                raise ValueError("required")
            mpid = parse_mpid(text)
        except ValueError as exc:
            return self._reject(
                self.ROUTE, 422, "UNPROCESSABLE_ENTITY", f"mpid: {exc}", "bad_request"
            )
        found = await asyncio.to_thread(self._audiences, item, mpid)
        answer = AudienceMemberships(
            "cam", self._clock.now_ms(), str(uuid.uuid4()), [AudienceMembership(i) for i in found]
        )
        return Response(msgspec.json.encode(answer), media_type="application/json")

    def _audiences(self, item: Input, mpid: int) -> list[int]:
        profile = self._service.profile(mpid)
        if profile is None or item.id not in profile.inputs:
            return []
        return [int(m["audience_id"]) for m in self._memberships(profile.mpid)]
