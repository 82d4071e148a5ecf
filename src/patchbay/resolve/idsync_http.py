"""The IDSync HTTP API: ``identify``, ``search``, ``login``, ``logout``, ``modify`` and alias.

mParticle's identity API (``https://identity.mparticle.com/v1``) as the SDKs call it, under
``/v1/...`` and under ``/identity/v1/...`` (the Web SDK's path when ``domain`` is set); the
alias request under ``/v1/identity/{key}/Alias`` and ``/webevents/v1/identity/{key}/Alias``.
See docs/api/idsync.md.

A request goes: authenticate (401/403) -> read the body (415/413, 400 for a repeated key) ->
check an HMAC signature (401/403) -> rate limit (429) -> decode and validate (400) -> ask the
:class:`ResolveService` -> if the state changes, append the record of the change to the log,
*then* commit the change -> answer.

Authentication (docs/api/idsync.md): HTTP Basic with an input's key and secret; an HMAC
signature made with the secret (the mobile SDKs, :mod:`patchbay.resolve.idsync_auth`),
checked against the secret sealed at the input's creation
(:meth:`patchbay.secretbox.SecretBox.seal_bound`); or the key alone, for web inputs and for
the client inputs whose ``idsync_key_only`` is on. A caller authenticated by its key alone
may ``modify`` or alias only users its input has seen (the profile's ``inputs``). Each
input's requests are limited to its rate limit per second, in a bucket apart from its Events
API batches. Appending first means a replay of the log rebuilds what was answered. The
service lock is held from staging the change to committing it, so that neither the resolve
stage nor another identity request changes the same users in between (the append itself runs
on the event loop, which never takes the lock: every service call runs on a worker thread).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.backends.abstract import InputStore
from patchbay.backends.records import Credential, Input, NewBatch
from patchbay.clock import Clock
from patchbay.collect.appender import GroupCommitAppender
from patchbay.collect.decode import ROOT, BadInput, decode_json
from patchbay.collect.fields import Int64, parse_mpid
from patchbay.collect.http import WRONG_CREDENTIALS, basic_auth_problem, parse_basic_auth
from patchbay.collect.ingest import new_batch_ids
from patchbay.collect.inputs import SERVER_SIDE_TYPES, authenticate, key_only_allowed
from patchbay.collect.ratelimit import RateLimiter
from patchbay.collect.userkey import mpid_key
from patchbay.errors import PatchbayError
from patchbay.http.auth import auth_failed
from patchbay.http.body import BodyError, read_json
from patchbay.http.reject import Refusals
from patchbay.metrics import Metrics
from patchbay.resolve.identities import (
    ALL_IDENTITY_TYPES,
    IDSYNC_NAMES,
    Identity,
    canonical_type,
)
from patchbay.resolve.idsync_auth import date_problem, signature_matches
from patchbay.resolve.service import ChangeResult, IdentityAnswer, Pending, ResolveService
from patchbay.resolve.stage import IDSYNC_CHANNEL
from patchbay.secretbox import SecretBox, SecretsError

log = structlog.get_logger("patchbay.idsync")

#: The ``channel`` stamped on the batches that record identity changes.
CHANNEL = IDSYNC_CHANNEL

#: Identity request bodies are small; anything bigger is refused with a 413.
MAX_BODY_BYTES = 64 * 1024


#: The path prefixes of the routes below, which the Web SDK calls cross-origin (CORS).
BROWSER_PATH_PREFIXES = ("/v1/", "/identity/v1/", "/webevents/v1/")

_encode = msgspec.json.Encoder().encode

T = TypeVar("T")

Environment = Literal["production", "development"]

#: Every identity name accepted in ``known_identities``, as IDSync spells it.
IDSYNC_IDENTITY_NAMES: tuple[str, ...] = tuple(IDSYNC_NAMES.get(t, t) for t in ALL_IDENTITY_TYPES)


# --- request and response models ------------------------------------------------------------


class ClientSdk(msgspec.Struct, kw_only=True):
    """The SDK that sent the request (informational)."""

    platform: str | None = None
    sdk_vendor: str | None = None
    sdk_version: str | None = None


class _BaseRequest(msgspec.Struct, kw_only=True):
    environment: Environment
    client_sdk: ClientSdk | None = None
    context: str | None = None
    request_id: str | None = None
    request_timestamp_ms: Int64 | None = None


class IdentityRequest(_BaseRequest, kw_only=True):
    """The body of ``identify``, ``search``, ``login`` and ``logout``."""

    known_identities: dict[str, Any]  # values checked by known_identities(), naming the key
    previous_mpid: str | Int64 | None = None


class IdentityChange(msgspec.Struct, kw_only=True):
    """One change of a modify request: ``old_value`` null adds, ``new_value`` null removes."""

    identity_type: str
    old_value: str | None = None
    new_value: str | None = None


class ModifyRequest(_BaseRequest, kw_only=True):
    """The body of ``/v1/{mpid}/modify``."""

    identity_changes: list[IdentityChange]


class AliasData(msgspec.Struct, kw_only=True):
    """What to alias: the source user is folded into the destination user."""

    source_mpid: Int64 | str
    destination_mpid: Int64 | str
    start_unixtime_ms: Int64 | None = None
    end_unixtime_ms: Int64 | None = None
    scope: Literal["device", "mpid"] | None = None
    device_application_stamp: str | None = None


class AliasRequest(msgspec.Struct, kw_only=True):
    """The body of an alias request, as the Web SDK sends it."""

    environment: Environment
    data: AliasData
    request_id: str | None = None
    request_type: Literal["alias"] | None = None
    api_key: str | None = None


class IdentityResponse(msgspec.Struct):
    """The 200 answer of ``identify``, ``search``, ``login`` and ``logout``."""

    context: str
    mpid: str
    matched_identities: dict[str, str]
    is_ephemeral: bool
    is_logged_in: bool


class ChangeResultBody(msgspec.Struct, omit_defaults=True):
    """One entry of a modify answer's ``change_results``."""

    identity_type: str
    modified_mpid: str
    applied: bool
    reason: str | None = None


class ModifyResponse(msgspec.Struct):
    """The 200 answer of ``modify``."""

    change_results: list[ChangeResultBody]


_IDENTITY_REQUEST = msgspec.json.Decoder(IdentityRequest)
_MODIFY_REQUEST = msgspec.json.Decoder(ModifyRequest)
_ALIAS_REQUEST = msgspec.json.Decoder(AliasRequest)


# --- decoding helpers -------------------------------------------------------------------------


def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    value = decode_json(decoder, body)
    try:
        body.decode("utf-8")  # msgspec skips unknown keys without checking their UTF-8
    except UnicodeDecodeError:
        raise BadInput(ROOT, "the body is not valid UTF-8") from None
    return value


def _type_of(name: str, path: str) -> str:
    kind = canonical_type(name)
    if kind is None:
        raise BadInput(
            path,
            f"unknown identity type {name!r}: expected one of {', '.join(IDSYNC_IDENTITY_NAMES)}",
        )
    return kind


def known_identities(known: dict[str, Any]) -> list[Identity]:
    """The identities of a request, canonical; null or empty values are left out.

    Raises :class:`BadInput` for an unknown name, a value that is not a string or null, a type
    given twice with different values, or no identity with a value.
    """
    if not known:
        raise BadInput("known_identities", "at least one identity is required")
    found: dict[str, str] = {}
    for name, value in known.items():
        kind = _type_of(name, f"known_identities.{name}")
        if value is not None and not isinstance(value, str):
            raise BadInput(f"known_identities.{name}", "expected a string or null")
        if value is None or not value.strip():
            continue
        if found.setdefault(kind, value) != value:
            raise BadInput(f"known_identities.{name}", f"a second, different value for {kind}")
    if not found:
        raise BadInput("known_identities", "at least one identity needs a value")
    return [Identity(kind, value) for kind, value in found.items()]


def _mpid(value: str | int | None, path: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return parse_mpid(value)
    except ValueError as exc:
        raise BadInput(path, str(exc)) from None


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "1", "yes", "")


def _context(mpid: int) -> str:
    """The opaque ``context`` of an answer (clients echo it; Patchbay ignores it)."""
    return base64.urlsafe_b64encode(f"patchbay:1:{mpid}".encode()).decode().rstrip("=")


def _json(value: object) -> Response:
    return Response(_encode(value), media_type="application/json")


# --- the API ----------------------------------------------------------------------------------

Handler = Callable[[Request, str], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made an authenticated request: its input, and whether its key alone vouched for
    it (such a caller may change only the users its input has seen)."""

    input: Input
    key_only: bool


@dataclass(frozen=True, slots=True)
class _Claim:
    """Credentials found but not all checked yet: a signature needs the body."""

    caller: Caller
    credential: Credential | None = None
    signature: str | None = None
    date: str = ""


class NotSeen(PatchbayError):
    """A key-only caller asked to change a user its input has not seen."""

    def __init__(self, path: str, mpid: int) -> None:
        super().__init__(
            f"{path}: user {mpid} was not seen by this input; a request authenticated by the"
            " key alone may change only the users of its own input (sign it, or use HTTP Basic)"
        )
        self.path = path


class IdentityApi:
    """The request handlers of the IDSync API, bound to the inputs, the log and the state.

    ``box`` holds the key that opens the inputs' sealed secrets (HMAC signatures); without
    it, signed requests are refused with a 401 that says so.
    """

    def __init__(
        self,
        inputs: InputStore,
        appender: GroupCommitAppender,
        service: ResolveService,
        clock: Clock,
        metrics: Metrics,
        box: SecretBox | None = None,
    ) -> None:
        self._inputs = inputs
        self._appender = appender
        self._service = service
        self._clock = clock
        self._metrics = metrics
        self._box = box
        self._limiter = RateLimiter(clock)
        self._reject = Refusals(metrics, log)

    def routes(self) -> list[Route]:
        """The Starlette routes: each endpoint under ``/v1`` and ``/identity/v1``."""
        endpoints: list[tuple[str, Handler]] = [
            ("/v1/identify", self._identify),
            ("/v1/search", self._search),
            ("/v1/login", self._login),
            ("/v1/logout", self._logout),
            ("/v1/{mpid}/modify", self._modify),
            ("/v1/identity/{key}/Alias", self._alias),
        ]
        routes = [
            Route(prefix + path, self._endpoint(path, handler), methods=["POST"])
            for prefix in ("", "/identity")
            for path, handler in endpoints
        ]
        alias = "/v1/identity/{key}/Alias"
        routes.append(
            Route(
                "/webevents" + alias,
                self._endpoint(alias, self._alias),
                methods=["POST"],
            )
        )
        return routes

    def _endpoint(self, route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(request, route)

        return endpoint

    # -- handlers ------------------------------------------------------------------------

    async def _identify(self, request: Request, route: str) -> Response:
        return await self._identity_call(request, route, "identify")

    async def _login(self, request: Request, route: str) -> Response:
        return await self._identity_call(request, route, "login")

    async def _logout(self, request: Request, route: str) -> Response:
        return await self._identity_call(request, route, "logout")

    async def _search(self, request: Request, route: str) -> Response:
        return await self._identity_call(request, route, "search")

    async def _identity_call(
        self, request: Request, route: str, kind: Literal["identify", "login", "logout", "search"]
    ) -> Response:
        admitted = await self._admit(request, route)
        if isinstance(admitted, Response):
            return admitted
        caller, body = admitted
        try:
            parsed = _decode(_IDENTITY_REQUEST, body)
            identities = known_identities(parsed.known_identities)
            previous = _mpid(parsed.previous_mpid, "previous_mpid")
        except BadInput as exc:
            return self._reject(route, 400, "BAD_REQUEST", str(exc), "bad_request")

        service = self._service
        if kind == "search":
            found = await asyncio.to_thread(service.search, identities)
            if found is None:
                return self._reject(
                    route, 404, "NOT_FOUND", "$: no user has these identities", "not_found"
                )
            return _json(_identity_response(found, ephemeral=False))

        seed = new_batch_ids(1)[0]

        def stage() -> tuple[Pending, None]:
            if kind == "logout":
                return service.logout(identities, seed), None
            return service.identify(identities, seed, previous, login=kind == "login"), None

        if _flag(request.query_params.get("read_only")):
            pending, _ = await asyncio.to_thread(stage)
            answer = pending.answer
            return _json(_identity_response(answer, ephemeral=answer.created))
        done = await self._commit(stage, caller.input, seed, request)
        assert done is not None
        return _json(_identity_response(done[0].answer, ephemeral=False))

    async def _modify(self, request: Request, route: str) -> Response:
        admitted = await self._admit(request, route)
        if isinstance(admitted, Response):
            return admitted
        caller, body = admitted
        try:
            mpid = _mpid(request.path_params["mpid"], "mpid (in the path)")
            if mpid is None:
                raise BadInput("mpid (in the path)", "expected a signed 64-bit integer")
            parsed = _decode(_MODIFY_REQUEST, body)
            changes: list[tuple[str, str | None, str | None]] = []
            for i, change in enumerate(parsed.identity_changes):
                path = f"identity_changes[{i}]"
                kind = _type_of(change.identity_type, f"{path}.identity_type")
                if change.old_value is None and change.new_value is None:
                    raise BadInput(path, "old_value and new_value are both null")
                changes.append((kind, change.old_value, change.new_value))
        except BadInput as exc:
            return self._reject(route, 400, "BAD_REQUEST", str(exc), "bad_request")

        service, target = self._service, mpid

        def stage() -> tuple[Pending, list[ChangeResult]] | None:
            self._check_seen(caller, [("mpid (in the path)", target)])
            return service.modify(target, changes)

        try:
            done = await self._commit(stage, caller.input, new_batch_ids(1)[0], request)
        except NotSeen as exc:
            return self._forbidden(request, route, str(exc), "a user its input has not seen")
        if done is None:
            return self._reject(route, 404, "NOT_FOUND", f"mpid: no user {mpid}", "not_found")
        results: list[ChangeResult] = done[1]
        return _json(
            ModifyResponse(
                [
                    ChangeResultBody(
                        change.identity_type, str(r.modified_mpid), r.applied, r.reason
                    )
                    for change, r in zip(parsed.identity_changes, results, strict=True)
                ]
            )
        )

    async def _alias(self, request: Request, route: str) -> Response:
        admitted = await self._admit(request, route, request.path_params["key"])
        if isinstance(admitted, Response):
            return admitted
        caller, body = admitted
        try:
            data = _decode(_ALIAS_REQUEST, body).data
            source = _mpid(data.source_mpid, "data.source_mpid")
            destination = _mpid(data.destination_mpid, "data.destination_mpid")
            if source is None:
                raise BadInput("data.source_mpid", "expected an MPID")
            if destination is None:
                raise BadInput("data.destination_mpid", "expected an MPID")
            if source == destination:
                raise BadInput("data.source_mpid", "the same user as data.destination_mpid")
            start, end = data.start_unixtime_ms, data.end_unixtime_ms
            if start is not None and end is not None and end < start:
                raise BadInput("data.end_unixtime_ms", "before data.start_unixtime_ms")
        except BadInput as exc:
            return self._reject(route, 400, "BAD_REQUEST", str(exc), "bad_request")

        service = self._service

        def stage() -> tuple[Pending, None] | None:
            self._check_seen(
                caller, [("data.source_mpid", source), ("data.destination_mpid", destination)]
            )
            pending = service.alias(source, destination)
            return None if pending is None else (pending, None)

        try:
            done = await self._commit(stage, caller.input, new_batch_ids(1)[0], request)
        except NotSeen as exc:
            return self._forbidden(request, route, str(exc), "a user its input has not seen")
        if done is None:
            return self._reject(
                route,
                404,
                "NOT_FOUND",
                "data: no user with this source or destination mpid",
                "not_found",
            )
        return Response(status_code=202)

    # -- steps ---------------------------------------------------------------------------

    async def _commit(
        self,
        stage: Callable[[], tuple[Pending, T] | None],
        item: Input,
        batch_id: str,
        request: Request,
    ) -> tuple[Pending, T] | None:
        """Stage a change, append its record to the log, then commit it: under the lock, and
        again while another resolver's commit changed what it read (see
        :meth:`ResolveService.apply`)."""
        loop = asyncio.get_running_loop()
        ip = request.client.host if request.client else None
        service, appender = self._service, self._appender

        def attempt() -> tuple[Pending, T] | None:
            with service.lock:
                staged = stage()
                if staged is None:
                    return None
                service.seen_by(staged[0], item.id)
                answer = staged[0].answer
                record = answer.record

                def append() -> None:
                    if record is None:
                        return
                    now = self._clock.now_ms()
                    batch = NewBatch(
                        batch_id=batch_id,
                        input_id=item.id,
                        received_at_ms=now,
                        channel=CHANNEL,
                        body=record,
                        ip=ip,
                        partition_key=mpid_key(answer.mpid),
                    )
                    future = appender.append([batch], now)
                    asyncio.run_coroutine_threadsafe(future, loop).result()

                service.apply(staged[0], append)
                return staged

        return await asyncio.to_thread(service.retrying, attempt)

    def _check_seen(self, caller: Caller, users: Sequence[tuple[str, int]]) -> None:
        """Raise :class:`NotSeen` if ``caller`` is key-only and one of ``users`` (JSON path,
        MPID) exists but its input has not seen it (an unknown user is the handler's 404).
        Runs under the service lock, with the change it guards."""
        if not caller.key_only:
            return
        profiles = [(path, mpid, self._service.profile(mpid)) for path, mpid in users]
        if any(profile is None for _, _, profile in profiles):
            return
        for path, mpid, profile in profiles:
            if profile is not None and caller.input.id not in profile.inputs:
                raise NotSeen(path, mpid)

    async def _admit(
        self, request: Request, route: str, path_key: str | None = None
    ) -> tuple[Caller, bytes] | Response:
        """The caller and body of a request whose credentials hold and that is within its
        input's rate limit, or the 401/403/413/415/429 answer."""
        claim = self._authenticate(request, route, path_key)
        if isinstance(claim, Response):
            return claim
        body = await self._body(request, route)
        if isinstance(body, Response):
            return body
        if claim.signature is not None:
            refused = self._check_signature(request, route, claim, body)
            if refused is not None:
                return refused
        item = claim.caller.input
        decision = self._limiter.take(item.id, item.rate_limit, 1)
        if not decision.allowed:
            return self._reject.over_limit(route, decision, item.rate_limit, "IDSync requests")
        return claim.caller, body

    def _authenticate(
        self, request: Request, route: str, path_key: str | None = None
    ) -> _Claim | Response:
        """The caller that the request's credentials name, or the 401/403 answer.

        HTTP Basic (key and secret) first; then an HMAC signature (``x-mp-signature``, checked
        once the body is read); otherwise the key alone, from ``x-mp-key`` or the alias path,
        for the inputs that accept it (:func:`key_only_allowed`).
        """
        header = request.headers.get("authorization")
        if header is not None:
            credentials = parse_basic_auth(header)
            if credentials is None:
                return self._unauthorized(
                    request,
                    route,
                    "Authorization: use HTTP Basic with an input's key and secret",
                    basic_auth_problem(header),
                )
            item = authenticate(self._inputs, *credentials)
            if item is None:
                return self._forbidden(
                    request,
                    route,
                    "Authorization: unknown or disabled key, or wrong secret",
                    WRONG_CREDENTIALS,
                    credentials[0],
                )
            return self._check_path_key(
                request, route, Caller(item, False), credentials[0], path_key
            )
        given = request.headers.get("x-mp-signature")
        if given is not None:
            return self._signed(request, route, given, path_key)
        key = request.headers.get("x-mp-key") or path_key
        if not key:
            return self._unauthorized(
                request,
                route,
                "Authorization: use HTTP Basic with an input's key and secret, or x-mp-key",
                "no credentials",
            )
        found = self._inputs.find_credential(key)
        if found is None or not found[0].enabled or not found[1].enabled:
            return self._forbidden(
                request, route, "x-mp-key: unknown or disabled key", "unknown or disabled key", key
            )
        item = found[1]
        if item.type in SERVER_SIDE_TYPES:
            return self._forbidden(
                request,
                route,
                f"x-mp-key: a key alone does not authenticate a {item.type} input;"
                " use HTTP Basic with its secret",
                f"a key alone for a {item.type} input",
                key,
            )
        if not key_only_allowed(item):
            return self._forbidden(
                request,
                route,
                f"x-mp-key: this {item.type} input does not accept its key alone on IDSync;"
                " sign the request (x-mp-signature), use HTTP Basic, or turn key-only on with"
                " `patchbay inputs set-idsync-key-only`",
            )
        return self._check_path_key(request, route, Caller(item, True), key, path_key)

    def _signed(
        self, request: Request, route: str, given: str, path_key: str | None
    ) -> _Claim | Response:
        """The claim of a signed request (key and ``Date`` checked; the signature is not)."""
        key = request.headers.get("x-mp-key")
        if not key:
            return self._unauthorized(request, route, "x-mp-key: required with x-mp-signature")
        date = request.headers.get("date")
        problem = date_problem(date, self._clock.now_ms())
        if problem is not None:
            return self._unauthorized(request, route, problem)
        assert date is not None
        found = self._inputs.find_credential(key)
        if found is None or not found[0].enabled or not found[1].enabled:
            return self._forbidden(request, route, "x-mp-key: unknown or disabled key")
        credential, item = found
        if item.type in SERVER_SIDE_TYPES:
            return self._unauthorized(
                request,
                route,
                f"x-mp-signature: a {item.type} input does not sign IDSync requests;"
                " use HTTP Basic with its key and secret",
            )
        claim = _Claim(Caller(item, False), credential, given, date)
        checked = self._check_path_key(request, route, claim.caller, key, path_key)
        return claim if isinstance(checked, _Claim) else checked

    def _check_signature(
        self, request: Request, route: str, claim: _Claim, body: bytes
    ) -> Response | None:
        """``None`` if the claim's signature is the request's, else the 401/403/500 answer."""
        credential = claim.credential
        assert credential is not None and claim.signature is not None
        secret = None
        if credential.secret_sealed is not None and self._box is not None:
            try:
                secret = self._box.open_bound(credential.secret_sealed, credential.key)
            except SecretsError as exc:
                log.error("secrets_key_unusable", error=str(exc))
                return self._reject(
                    route,
                    500,
                    "INTERNAL_SERVER_ERROR",
                    "x-mp-signature: the server cannot check signatures now (see its log)",
                    "server_error",
                )
            if secret is None:
                log.error(
                    "sealed_secret_does_not_open",
                    input=claim.caller.input.name,
                    key_file=str(self._box.key_file),
                )
        if secret is None:
            return self._unauthorized(
                request,
                route,
                "x-mp-signature: this key cannot be checked: its secret was not kept sealed"
                " (a key made before signatures were supported); rotate the input's key"
                " (`patchbay inputs rotate NAME --keep-old`) or use HTTP Basic",
            )
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"").decode("latin-1")
        if not signature_matches(
            secret,
            request.method,
            claim.date,
            raw_path.decode("latin-1"),
            query,
            body,
            claim.signature,
        ):
            return self._forbidden(
                request,
                route,
                "x-mp-signature: does not match the request signed with the key's secret",
            )
        return None

    def _check_path_key(
        self, request: Request, route: str, caller: Caller, key: str, path_key: str | None
    ) -> _Claim | Response:
        if path_key is None or path_key == key:
            return _Claim(caller)
        found = self._inputs.find_credential(path_key)
        if found is None or found[1].id != caller.input.id:
            return self._forbidden(request, route, "the key in the path is not a key of this input")
        return _Claim(caller)

    async def _body(self, request: Request, route: str) -> bytes | Response:
        try:
            return await read_json(request, MAX_BODY_BYTES)
        except BodyError as exc:
            return self._reject(route, exc.status, exc.code, exc.message, exc.reason)

    def _unauthorized(
        self,
        request: Request,
        route: str,
        message: str,
        reason: str | None = None,
        key: str | None = None,
    ) -> Response:
        auth_failed(request, "idsync", reason or message, key)
        return self._reject(
            route,
            401,
            "UNAUTHORIZED",
            message,
            "unauthorized",
            {"WWW-Authenticate": 'Basic realm="patchbay"'},
            logged=True,
        )

    def _forbidden(
        self,
        request: Request,
        route: str,
        message: str,
        reason: str | None = None,
        key: str | None = None,
    ) -> Response:
        auth_failed(request, "idsync", reason or message, key)
        return self._reject(route, 403, "FORBIDDEN", message, "forbidden", logged=True)


def _identity_response(answer: IdentityAnswer, ephemeral: bool) -> IdentityResponse:
    return IdentityResponse(
        context=_context(answer.mpid),
        mpid=str(answer.mpid),
        matched_identities=answer.matched,
        is_ephemeral=ephemeral,
        is_logged_in=answer.is_logged_in,
    )
