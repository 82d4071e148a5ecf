"""The Profile API: a user's profile by MPID or by identity, in mParticle's shape.

``GET /userprofile/v1/{org}/{account}/{workspace}/{mpid}?fields=...`` and
``POST /userprofile/v1/resolve/{org}/{account}/{workspace}?fields=...`` with
``{"environment_type": ..., "identity": {"type": "customer_id", "value": "..."}}``.
The org, account and workspace ids are accepted and ignored (one Patchbay is one workspace).

Authentication: only API clients (:mod:`patchbay.api_clients`) holding the
``profiles:read`` scope, never an input's key and secret (those ship inside apps). Either
mParticle's OAuth2 client-credentials flow (``POST /oauth/token`` with the client's id and
secret, form-encoded as RFC 6749 has it or as JSON as mParticle's clients send it, or with
HTTP Basic; answered by oauthlib's :class:`~oauthlib.oauth2.BackendApplicationServer`),
whose bearer token lasts 8 hours and lives in memory only, or HTTP Basic with the client's
id and secret on every request. Bodies are read by :func:`patchbay.http.body.read_json`: a
``Content-Type`` other than JSON (or, for the token endpoint, a form) is a 415, a repeated
JSON key a 400. A token is checked against its client on every use: once the client is
disabled, removed or its secret rotated, the token gets 401.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth2 import BackendApplicationServer, InvalidClientError, RequestValidator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.api_clients import PROFILES_READ, authenticate_client
from patchbay.backends.abstract import ApiClientStore
from patchbay.backends.records import ApiClient
from patchbay.clock import Clock
from patchbay.collect.fields import parse_mpid
from patchbay.collect.http import parse_basic_auth
from patchbay.http.auth import auth_failed
from patchbay.http.body import FORM, BodyError, check_unique_keys, read_json
from patchbay.http.errors import HttpError, error_response
from patchbay.resolve.identities import Identity, canonical_type
from patchbay.resolve.profile import Profile
from patchbay.resolve.profile_view import PROFILE_FIELDS, profile_document
from patchbay.resolve.service import ResolveService
from patchbay.settings import DEFAULT_MAX_REQUEST_BYTES

if TYPE_CHECKING:  # a type of the stubs only
    from oauthlib.oauth2.rfc6749.request_validator import _BearerToken

TOKEN_LIFETIME_S = 8 * 3600

#: The audiences a user (by MPID) belongs to: ``audience_id`` and ``audience_name`` each.
Memberships = Callable[[int], Sequence[Mapping[str, Any]]]

#: How a refused client is told to migrate.
_USE_AN_API_CLIENT = (
    "use an API client's id and secret with the profiles:read scope"
    " (`patchbay api-clients add NAME --scope profiles:read`); input keys are not accepted"
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="patchbay", Basic realm="patchbay"'}


class ResolveIdentity(msgspec.Struct):
    """The identity of a resolve request."""

    type: str
    value: str


class ResolveRequest(msgspec.Struct):
    """The body of ``POST /userprofile/v1/resolve/...``."""

    identity: ResolveIdentity
    environment_type: str | None = None


class OAuthErrorBody(msgspec.Struct, omit_defaults=True):
    """An error answer of the token endpoint (RFC 6749 section 5.2)."""

    error: str
    error_description: str | None = None
    error_uri: str | None = None


class IssuedToken(msgspec.Struct, frozen=True):
    """What a bearer token was issued to: the client, the hash of the client's secret at that
    moment (a rotation changes it), the scopes granted, when it expires (monotonic)."""

    client_id: str
    secret_hash: str
    scopes: tuple[str, ...]
    expires: float


class BearerTokens:
    """Bearer tokens issued to API clients; only their hashes are kept, in memory."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._tokens: dict[str, IssuedToken] = {}
        self._lock = threading.Lock()

    def save(self, token: str, client: ApiClient, scopes: Sequence[str]) -> None:
        """Remember ``token`` as issued to ``client`` now, for :data:`TOKEN_LIFETIME_S`."""
        now = self._clock.monotonic()
        issued = IssuedToken(client.id, client.secret_hash, tuple(scopes), now + TOKEN_LIFETIME_S)
        with self._lock:
            self._tokens = {k: v for k, v in self._tokens.items() if v.expires > now}
            self._tokens[_hash(token)] = issued

    def check(self, token: str) -> IssuedToken | None:
        """What a token that has not expired was issued to."""
        with self._lock:
            found = self._tokens.get(_hash(token))
        if found is None or found.expires <= self._clock.monotonic():
            return None
        return found


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def _oauth_error(status: int, error: str, description: str) -> Response:
    """An RFC 6749 error answer of the token endpoint."""
    return Response(
        msgspec.json.encode(OAuthErrorBody(error, description)),
        status,
        {"Cache-Control": "no-store", "Pragma": "no-cache"},
        media_type="application/json",
    )


class _OAuthClient:
    """The client oauthlib sees on its request (it needs ``client_id``)."""

    def __init__(self, record: ApiClient) -> None:
        self.client_id = record.id
        self.record = record


class ProfileValidator(RequestValidator):
    """oauthlib's questions about the client-credentials grant, answered from the
    :class:`ApiClientStore`."""

    def __init__(self, clients: ApiClientStore, tokens: BearerTokens) -> None:
        super().__init__()
        self._clients = clients
        self._tokens = tokens

    def client_authentication_required(
        self, request: OAuthRequest, *args: object, **kwargs: object
    ) -> bool:
        """Always: the grant is for confidential clients."""
        return True

    def authenticate_client(self, request: OAuthRequest, *args: object, **kwargs: object) -> bool:
        """The client's id and secret from HTTP Basic (RFC 6749 2.3.1) or from the body."""
        credentials = parse_basic_auth(request.headers.get("Authorization"))
        if credentials is None:
            credentials = (request.client_id or "", request.client_secret or "")
        found = authenticate_client(self._clients, *credentials)
        if found is None:
            # Raised rather than ``False``: oauthlib's own error has no description.
            raise InvalidClientError(description=_USE_AN_API_CLIENT, request=request)
        setattr(request, "client", _OAuthClient(found))  # noqa: B010 (oauthlib's attribute)
        return True

    def validate_grant_type(
        self,
        client_id: str,
        grant_type: str,
        client: Any,
        request: OAuthRequest,
        *args: object,
        **kwargs: object,
    ) -> bool:
        """Only the client-credentials grant exists."""
        return grant_type == "client_credentials"

    def get_default_scopes(
        self, client_id: str, request: OAuthRequest, *args: object, **kwargs: object
    ) -> list[str]:
        """A token asked for without ``scope`` gets every scope of the client."""
        client: _OAuthClient = request.client  # type: ignore[assignment]
        return list(client.record.scopes)

    def validate_scopes(
        self,
        client_id: str,
        scopes: list[str],
        client: Any,
        request: OAuthRequest,
        *args: object,
        **kwargs: object,
    ) -> bool:
        """A client gets only scopes it holds."""
        held: _OAuthClient = client
        return set(scopes) <= set(held.record.scopes)

    def save_bearer_token(
        self, token: _BearerToken, request: OAuthRequest, *args: object, **kwargs: object
    ) -> object:
        """Keep the token's hash with its client and the client's secret hash."""
        client: _OAuthClient = request.client  # type: ignore[assignment]
        scopes = cast(list[str], request.scopes)  # set by oauthlib's validate_scopes
        self._tokens.save(token["access_token"], client.record, scopes)
        return None


class ProfileApi:
    """The Profile API's handlers (errors raised as :class:`HttpError` need the app's
    :data:`~patchbay.http.EXCEPTION_HANDLERS`)."""

    def __init__(
        self,
        clients: ApiClientStore,
        service: ResolveService,
        clock: Clock,
        memberships: Memberships | None = None,
        max_body_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self._clients = clients
        self._service = service
        self._tokens = BearerTokens(clock)
        self._memberships = memberships
        self._max_body_bytes = max_body_bytes
        self._oauth = BackendApplicationServer(
            ProfileValidator(clients, self._tokens),
            token_generator=lambda _request: secrets.token_urlsafe(32),
            token_expires_in=TOKEN_LIFETIME_S,
        )

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
        """``POST /oauth/token``: a bearer token for an API client's id and secret.

        Errors are RFC 6749's (``{"error": "invalid_client", ...}``, 401 for bad client
        credentials), as mParticle's token endpoint answers."""
        try:
            raw = await read_json(request, self._max_body_bytes, others=(FORM,))
            form = _form_body(raw)
        except BodyError as exc:
            return _oauth_error(exc.status, "invalid_request", exc.message.removeprefix("$: "))
        headers = {"Content-Type": FORM}
        if "authorization" in request.headers:
            headers["Authorization"] = request.headers["authorization"]
        uri = str(request.url)
        answer_headers, body, status = await asyncio.to_thread(
            self._oauth.create_token_response, uri, "POST", form, headers
        )
        if status == 401:
            credentials = parse_basic_auth(headers.get("Authorization"))
            given = urllib.parse.parse_qs(form).get("client_id", [None])[0]
            client_id = credentials[0] if credentials else given
            auth_failed(request, "profile", "wrong client id or secret", client_id)
        return Response(body, status, dict(answer_headers), media_type="application/json")

    async def _client(self, request: Request) -> ApiClient:
        """The API client of ``request`` (:meth:`_authorize`); a refusal is logged with the
        source address (never the secret or the token)."""
        header = request.headers.get("authorization", "")
        try:
            return await asyncio.to_thread(self._authorize, header)
        except HttpError as exc:
            credentials = parse_basic_auth(header)
            auth_failed(request, "profile", exc.message, credentials[0] if credentials else None)
            raise

    def _authorize(self, header: str) -> ApiClient:
        """The API client of a request's ``Authorization`` (a bearer token or HTTP Basic);
        401 without valid credentials of an enabled client, 403 without ``profiles:read``."""
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            issued = self._tokens.check(value.strip())
            if issued is None:
                raise _unauthorized("invalid or expired token: ask /oauth/token for a new one")
            client = self._clients.get_client(issued.client_id)
            if client is None or client.id != issued.client_id:
                raise _unauthorized("the token's API client was removed")
            if not client.enabled:
                raise _unauthorized("the token's API client is disabled")
            if not secrets.compare_digest(client.secret_hash, issued.secret_hash):
                raise _unauthorized(
                    "the token's API client has a new secret: ask /oauth/token for a new token"
                )
            if PROFILES_READ not in issued.scopes:
                raise _forbidden("the token was not granted the profiles:read scope")
        else:
            credentials = parse_basic_auth(header)
            if credentials is None:
                raise _unauthorized(
                    f"send a bearer token from /oauth/token or HTTP Basic: {_USE_AN_API_CLIENT}"
                )
            found = authenticate_client(self._clients, *credentials)
            if found is None:
                raise _unauthorized(
                    f"wrong client id or secret, or a disabled client: {_USE_AN_API_CLIENT}"
                )
            client = found
        if PROFILES_READ not in client.scopes:
            raise _forbidden(f"the API client {client.name!r} lacks the profiles:read scope")
        return client

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
        await self._client(request)
        fields = self._fields(request)
        text = request.path_params["mpid"]
        try:
            mpid = parse_mpid(text)
        except ValueError as exc:
            return error_response(400, "BAD_REQUEST", f"mpid: {text!r}: {exc}")
        profile = await asyncio.to_thread(self._service.profile, mpid)
        if profile is None:
            return error_response(404, "NOT_FOUND", f"mpid: no user {mpid}")
        return _json(await asyncio.to_thread(self._document, profile, fields))

    async def resolve(self, request: Request) -> Response:
        """A profile by an identity."""
        await self._client(request)
        fields = self._fields(request)
        try:
            raw = await read_json(request, self._max_body_bytes)
        except BodyError as exc:
            return error_response(exc.status, exc.code, exc.message)
        try:
            body = msgspec.json.decode(raw, type=ResolveRequest)
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


def _unauthorized(reason: str) -> HttpError:
    return HttpError(401, "UNAUTHORIZED", f"Authorization: {reason}", dict(_CHALLENGE))


def _forbidden(reason: str) -> HttpError:
    return HttpError(403, "FORBIDDEN", f"Authorization: {reason}")


def _form_body(raw: bytes) -> str:
    """The token request as the form oauthlib reads: a JSON object (mParticle's clients
    send one, whatever their Content-Type says) is turned into one; a form is kept. A
    :class:`BodyError` (400) for a body that is neither."""
    if raw.lstrip()[:1] == b"{":
        try:
            fields = msgspec.json.decode(raw, type=dict[str, Any])
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise _invalid(f"the JSON body is invalid: {exc}") from None
        check_unique_keys(raw)  # JSON under a form Content-Type (curl -d) is checked here
        for name, value in fields.items():
            if not isinstance(value, str):
                raise _invalid(f"{name}: expected a string")
        return urllib.parse.urlencode(fields)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("the body is not UTF-8") from None


def _invalid(message: str) -> BodyError:
    return BodyError(400, "BAD_REQUEST", message)
