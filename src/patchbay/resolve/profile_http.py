"""The Profile API: a user's profile by MPID or by identity, in mParticle's shape.

``GET /userprofile/v1/{org}/{account}/{workspace}/{mpid}?fields=...`` and
``POST /userprofile/v1/resolve/{org}/{account}/{workspace}?fields=...`` with
``{"environment_type": ..., "identity": {"type": "customer_id", "value": "..."}}``.
The org, account and workspace ids are accepted and ignored (one Patchbay is one workspace).

Authentication: mParticle's OAuth2 client-credentials flow (``POST /oauth/token`` with an
input's key as ``client_id`` and its secret as ``client_secret``; the bearer token lasts
8 hours and lives in memory only), or HTTP Basic with the same key and secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.backends.abstract import InputStore
from patchbay.clock import Clock
from patchbay.collect.http import WRONG_CREDENTIALS, basic_auth_problem, parse_basic_auth
from patchbay.collect.inputs import authenticate
from patchbay.http.auth import auth_failed
from patchbay.http.errors import HttpError, error_response
from patchbay.resolve.identities import Identity, canonical_type
from patchbay.resolve.profile import Profile
from patchbay.resolve.profile_view import PROFILE_FIELDS, profile_document
from patchbay.resolve.service import ResolveService

TOKEN_LIFETIME_S = 8 * 3600

#: The audiences a user (by MPID) belongs to: ``audience_id`` and ``audience_name`` each.
Memberships = Callable[[int], Sequence[Mapping[str, Any]]]


class TokenRequest(msgspec.Struct):
    """The body of ``POST /oauth/token``."""

    client_id: str
    client_secret: str
    grant_type: str = "client_credentials"
    audience: str | None = None


class ResolveIdentity(msgspec.Struct):
    """The identity of a resolve request."""

    type: str
    value: str


class ResolveRequest(msgspec.Struct):
    """The body of ``POST /userprofile/v1/resolve/...``."""

    identity: ResolveIdentity
    environment_type: str | None = None


class BearerTokens:
    """Bearer tokens issued to inputs; only their hashes are kept, in memory."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, input_id: str) -> str:
        """A new token for ``input_id``."""
        token = secrets.token_urlsafe(32)
        expires = self._clock.monotonic() + TOKEN_LIFETIME_S
        with self._lock:
            now = self._clock.monotonic()
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
            self._tokens[_hash(token)] = (input_id, expires)
        return token

    def check(self, token: str) -> str | None:
        """The input a valid token belongs to."""
        with self._lock:
            found = self._tokens.get(_hash(token))
        if found is None or found[1] <= self._clock.monotonic():
            return None
        return found[0]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


class ProfileApi:
    """The Profile API's handlers (errors raised as :class:`HttpError` need the app's
    :data:`~patchbay.http.EXCEPTION_HANDLERS`)."""

    def __init__(
        self,
        inputs: InputStore,
        service: ResolveService,
        clock: Clock,
        memberships: Memberships | None = None,
    ) -> None:
        self._inputs = inputs
        self._service = service
        self._tokens = BearerTokens(clock)
        self._memberships = memberships

    def _document(self, profile: Profile, fields: tuple[str, ...]) -> dict[str, Any]:
        """The profile's document (run on a thread: it reads the audience memberships)."""
        memberships: Sequence[Mapping[str, Any]] = ()
        if self._memberships is not None and "audience_memberships" in fields:
            memberships = self._memberships(profile.mpid)
        return profile_document(profile, fields, memberships)

    def routes(self) -> list[Route]:
        """The Starlette routes."""
        return [
            Route("/oauth/token", self.token, methods=["POST"]),
            Route(
                "/userprofile/v1/resolve/{org}/{account}/{workspace}",
                self.resolve,
                methods=["POST"],
            ),
            Route(
                "/userprofile/v1/{org}/{account}/{workspace}/{mpid}",
                self.by_mpid,
                methods=["GET", "POST"],
            ),
        ]

    async def token(self, request: Request) -> Response:
        """``POST /oauth/token``: a bearer token for an input's key and secret."""
        try:
            body = msgspec.json.decode(await request.body(), type=TokenRequest)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return error_response(400, "BAD_REQUEST", f"$: {exc}")
        if body.grant_type != "client_credentials":
            return error_response(400, "BAD_REQUEST", "grant_type: expected client_credentials")
        item = authenticate(self._inputs, body.client_id, body.client_secret)
        if item is None:
            auth_failed(request, "profile", WRONG_CREDENTIALS, body.client_id)
            return error_response(401, "UNAUTHORIZED", "client_id or client_secret is wrong")
        token = self._tokens.issue(item.id)
        return _json(
            {"access_token": token, "expires_in": TOKEN_LIFETIME_S, "token_type": "Bearer"}
        )

    def _authorize(self, request: Request) -> None:
        """Raise the 401 or 403 of a request without a valid token or key and secret."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            if self._tokens.check(value.strip()) is not None:
                return
            auth_failed(request, "profile", "invalid or expired bearer token")
            raise HttpError(401, "UNAUTHORIZED", "Authorization: invalid or expired token")
        credentials = parse_basic_auth(header)
        if credentials is None:
            auth_failed(request, "profile", basic_auth_problem(header))
            raise HttpError(
                401, "UNAUTHORIZED", "Authorization: use a bearer token from /oauth/token"
            )
        if authenticate(self._inputs, *credentials) is None:
            auth_failed(request, "profile", WRONG_CREDENTIALS, credentials[0])
            raise HttpError(403, "FORBIDDEN", "Authorization: wrong key or secret")

    @staticmethod
    def _fields(request: Request) -> tuple[str, ...]:
        """The ``fields`` asked for (all by default); a 400 for an unknown one."""
        raw = request.query_params.get("fields")
        if raw is None:
            return PROFILE_FIELDS
        fields = tuple(f.strip() for f in raw.split(",") if f.strip())
        unknown = [f for f in fields if f not in PROFILE_FIELDS]
        if unknown:
            allowed = ", ".join(PROFILE_FIELDS)
            raise HttpError(
                400, "BAD_REQUEST", f"fields: unknown {', '.join(unknown)}; expected {allowed}"
            )
        return fields

    async def by_mpid(self, request: Request) -> Response:
        """A profile by MPID."""
        self._authorize(request)
        fields = self._fields(request)
        try:
            mpid = int(request.path_params["mpid"])
        except ValueError:
            return error_response(400, "BAD_REQUEST", "mpid: expected a signed 64-bit integer")
        profile = await asyncio.to_thread(self._service.profile, mpid)
        if profile is None:
            return error_response(404, "NOT_FOUND", f"mpid: no user {mpid}")
        return _json(await asyncio.to_thread(self._document, profile, fields))

    async def resolve(self, request: Request) -> Response:
        """A profile by an identity."""
        self._authorize(request)
        fields = self._fields(request)
        try:
            body = msgspec.json.decode(await request.body(), type=ResolveRequest)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return error_response(400, "BAD_REQUEST", f"$: {exc}")
        kind = canonical_type(body.identity.type)
        if kind is None:
            return error_response(
                400, "BAD_REQUEST", f"identity.type: unknown identity type {body.identity.type!r}"
            )
        profile = await asyncio.to_thread(self._service.find, Identity(kind, body.identity.value))
        if profile is None:
            return error_response(404, "NOT_FOUND", "identity: no user has this identity")
        return _json(await asyncio.to_thread(self._document, profile, fields))
