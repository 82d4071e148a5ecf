"""Send one Firehose message to a partner and get its answer, over HTTPS or AWS Lambda.

Both transports take a request message, write it with :func:`patchbay.firehose.dumps`, send it
once (no retries: retrying is the caller's policy, see :attr:`TransportError.retryable`) and
return a :class:`Reply`: the parsed response message and the :class:`Response` it came in
(status, headers, body up to ``max_response_bytes``, latency). Errors carry the
:class:`Response` too when there was one (``TransportError.response``), e.g. for a
``Retry-After``. The targets (:class:`HttpTarget`, :class:`LambdaTarget`) live in
:mod:`patchbay.partner.targets` and are re-exported here.

* :class:`HttpTransport` POSTs the JSON with ``aiohttp``: ``Content-Type:
  application/json`` and, when the target has a token, ``Authorization: Token <token>``.
  Redirects are not followed (the token must not travel to another host). One
  ``aiohttp.ClientSession`` is reused for every call; pass your own to share a pool. Given a
  :class:`~patchbay.activate.targets.TargetPolicy`, it checks the URL before each call and,
  through a resolver hook, every address the host name resolves to before connecting to it
  (so a DNS answer cannot change between the check and the connect): a refused target
  raises :class:`TargetRefusedError`.
* :class:`LambdaTransport` calls the Lambda Invoke API synchronously (``RequestResponse``)
  with boto3 (imported when the first call is made), in a worker thread: the event
  loop's default pool, or a pool of the transport's own (``threads``). ``endpoint_url`` points
  it at a local Lambda emulator; with an endpoint and no AWS credentials configured, requests
  are sent unsigned.

Failures raise typed :class:`TransportError` subclasses. Messages never contain the token.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult

from patchbay import __version__
from patchbay.activate.targets import TargetError, TargetPolicy, has_userinfo
from patchbay.errors import PatchbayError
from patchbay.firehose import (
    AudienceMembershipChangeRequest,
    AudienceMembershipChangeResponse,
    AudienceSubscriptionRequest,
    AudienceSubscriptionResponse,
    BaseMessage,
    DsrProcessingRequest,
    DsrProcessingResponse,
    EventProcessingRequest,
    EventProcessingResponse,
    FirehoseError,
    Message,
    ModuleRegistrationRequest,
    ModuleRegistrationResponse,
    dumps,
    parse,
)
from patchbay.partner.targets import DEFAULT_LAMBDA_REGION, HttpTarget, LambdaTarget, Target

__all__ = [
    "DEFAULT_LAMBDA_REGION",
    "RETRYABLE_STATUSES",
    "HttpTarget",
    "HttpTransport",
    "InvalidResponseError",
    "LambdaTarget",
    "LambdaTransport",
    "PartnerConnectionError",
    "PartnerFunctionError",
    "PartnerStatusError",
    "PartnerThrottledError",
    "PartnerTimeoutError",
    "Reply",
    "Response",
    "Target",
    "TargetRefusedError",
    "Timeouts",
    "Transport",
    "TransportConfigError",
    "TransportError",
    "UnexpectedResponseTypeError",
    "excerpt",
    "open_transport",
    "response_type_for",
    "response_type_named",
]

#: HTTP statuses the newer mParticle docs retry; everything else is final.
RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})

#: Answers larger than this are refused (a Firehose response is a few hundred bytes).
DEFAULT_MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024

_EXCERPT_CHARS: Final = 300

#: The response type each request is answered with.
_RESPONSE_TYPES: Final[dict[type[BaseMessage], type[BaseMessage]]] = {
    ModuleRegistrationRequest: ModuleRegistrationResponse,
    EventProcessingRequest: EventProcessingResponse,
    AudienceSubscriptionRequest: AudienceSubscriptionResponse,
    AudienceMembershipChangeRequest: AudienceMembershipChangeResponse,
    DsrProcessingRequest: DsrProcessingResponse,
}


def response_type_for(request: BaseMessage) -> type[BaseMessage]:
    """The message type a partner must answer ``request`` with."""
    try:
        return _RESPONSE_TYPES[type(request)]
    except KeyError:
        raise ValueError(f"{request.type} is not a request the platform sends") from None


#: The same, by the request's ``type`` literal.
_RESPONSE_TYPES_BY_TAG: Final[dict[str, type[BaseMessage]]] = {
    str(request.__struct_config__.tag): response for request, response in _RESPONSE_TYPES.items()
}


def response_type_named(request_type: str | None) -> type[BaseMessage] | None:
    """The message type a partner must answer a request of type ``request_type`` (its
    ``type`` literal) with; ``None`` for anything else."""
    return _RESPONSE_TYPES_BY_TAG.get(request_type) if request_type is not None else None


def excerpt(body: bytes | str, limit: int = _EXCERPT_CHARS) -> str:
    """The start of ``body`` on one line, for error messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait: ``connect`` to open a connection, ``total`` for the whole call
    (Lambda: for the answer once connected)."""

    total: float = 10.0
    connect: float = 5.0


@dataclass(frozen=True, slots=True)
class Response:
    """What a partner answered, as received.

    ``status`` is the HTTP status, or the Lambda ``StatusCode``; ``headers`` the response
    headers with lower-cased names (repeated headers joined with ``", "``; for Lambda, those
    of the Invoke API); ``body`` the answer, at most the transport's ``max_response_bytes``
    (for a Lambda service error, its code and message). ``latency_ms`` covers sending the
    request and reading the answer.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    latency_ms: float

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), if the answer has it."""
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Reply:
    """A partner's answer to a Firehose request: the parsed ``message`` and the
    :class:`Response` it came in.

    ``message`` is ``None`` only when an HTTP partner accepted the request with a non-200
    success status (e.g. 202) and an empty body.
    """

    message: Message | None
    response: Response

    @property
    def status(self) -> int:
        """The HTTP status, or the Lambda ``StatusCode``."""
        return self.response.status

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers, names lower-cased."""
        return self.response.headers

    @property
    def body(self) -> bytes:
        """The raw answer."""
        return self.response.body

    @property
    def latency_ms(self) -> float:
        """Sending the request and reading the answer, in milliseconds."""
        return self.response.latency_ms

    def json(self) -> dict[str, Any] | None:
        """The answer as decoded JSON (``None`` for an empty body)."""
        if not self.body:
            return None
        value = msgspec.json.decode(self.body)
        return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------- errors

_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


class TransportError(PatchbayError):
    """A call to a partner failed. ``target`` describes the partner (never its token),
    ``latency_ms`` is how long the call took when it got that far, ``response`` is the
    partner's answer when one was received (status, headers, capped body), and
    ``retryable`` says whether sending the same message again may succeed."""

    _RETRYABLE: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        target: str,
        latency_ms: float | None = None,
        response: Response | None = None,
    ) -> None:
        super().__init__(message)
        self.target = target
        if latency_ms is None and response is not None:
            latency_ms = response.latency_ms
        self.latency_ms = latency_ms
        self.response = response

    @property
    def headers(self) -> Mapping[str, str]:
        """The headers of the answer (names lower-cased); empty when there was none."""
        return self.response.headers if self.response is not None else _NO_HEADERS

    @property
    def retryable(self) -> bool:
        """Whether sending the same message again may succeed."""
        return self._RETRYABLE


class TransportConfigError(TransportError):
    """The target cannot be called as configured (bad URL, no AWS region...)."""


class TargetRefusedError(TransportConfigError):
    """The target's URL or an address its host resolved to may not be sent to (see
    :mod:`patchbay.activate.targets`); not retried: the message says what to change."""


class PartnerConnectionError(TransportError):
    """The partner could not be reached, or dropped the connection."""

    _RETRYABLE = True


class PartnerTimeoutError(TransportError):
    """The partner did not answer in time."""

    _RETRYABLE = True


class PartnerStatusError(TransportError):
    """The partner answered with an error status (HTTP non-2xx, or a Lambda service error).
    ``body`` is an excerpt of the answer (``response.body``: the answer up to the cap)."""

    def __init__(
        self,
        message: str,
        *,
        target: str,
        status: int,
        body: str,
        latency_ms: float | None = None,
        response: Response | None = None,
    ) -> None:
        super().__init__(message, target=target, latency_ms=latency_ms, response=response)
        self.status = status
        self.body = body

    @property
    def retryable(self) -> bool:
        """408, 429 and 5xx gateway/availability errors are retried."""
        return self.status in RETRYABLE_STATUSES


class PartnerThrottledError(PartnerStatusError):
    """The partner is throttled (HTTP 429, or Lambda ``TooManyRequestsException``): retry
    with back-off."""


class PartnerFunctionError(TransportError):
    """The Lambda function ran but failed (``X-Amz-Function-Error``). ``kind`` is
    ``Handled`` or ``Unhandled``; ``error_type``/``error_message`` come from its payload."""

    def __init__(
        self,
        message: str,
        *,
        target: str,
        kind: str,
        error_type: str | None,
        error_message: str | None,
        body: str,
        latency_ms: float | None = None,
        response: Response | None = None,
    ) -> None:
        super().__init__(message, target=target, latency_ms=latency_ms, response=response)
        self.kind = kind
        self.error_type = error_type
        self.error_message = error_message
        self.body = body


class InvalidResponseError(TransportError):
    """The answer is not a Firehose message (not JSON, unknown type, invalid field, too
    large...). ``body`` is an excerpt, ``raw`` the answer as read (up to the cap); ``cause``
    is the parse error, if any."""

    def __init__(
        self,
        message: str,
        *,
        target: str,
        body: str,
        status: int | None = None,
        latency_ms: float | None = None,
        cause: FirehoseError | None = None,
        raw: bytes = b"",
        response: Response | None = None,
    ) -> None:
        super().__init__(message, target=target, latency_ms=latency_ms, response=response)
        self.body = body
        self.status = status
        self.cause = cause
        self.raw = raw


class UnexpectedResponseTypeError(InvalidResponseError):
    """The answer is a valid message of the wrong type (e.g. an audience response to an
    event request). ``reply`` is the answer as received."""

    def __init__(self, message: str, *, target: str, expected: str, got: str, reply: Reply) -> None:
        super().__init__(
            message,
            target=target,
            body=excerpt(reply.body),
            status=reply.status,
            raw=reply.body,
            response=reply.response,
        )
        self.expected = expected
        self.got = got
        self.reply = reply


def _invalid(message: str, where: str, response: Response, **extra: Any) -> InvalidResponseError:
    """An :class:`InvalidResponseError` about ``response``."""
    return InvalidResponseError(
        message,
        target=where,
        body=excerpt(response.body),
        status=response.status,
        raw=response.body,
        response=response,
        **extra,
    )


def _too_large(limit: int) -> str:
    return f"the answer is too large (more than {limit} bytes)"


# --------------------------------------------------------------------------- transports


class Transport(abc.ABC):
    """Sends Firehose messages to one partner. Use as an async context manager, or call
    :meth:`close` when done."""

    def __init__(self, target: Target) -> None:
        self.target = target

    async def send(
        self,
        message: BaseMessage,
        *,
        authenticate: bool = True,
        lenient: bool = False,
        check_type: bool = True,
    ) -> Reply:
        """Send ``message`` once and return the partner's answer.

        ``authenticate=False`` leaves out the token (the registration call must work without
        it). ``lenient`` is passed to :func:`patchbay.firehose.parse`. With
        ``check_type`` an answer of the wrong type raises
        :class:`UnexpectedResponseTypeError`.
        """
        return await self.send_serialized(
            dumps(message),
            _RESPONSE_TYPES.get(type(message)) if check_type else None,
            authenticate=authenticate,
            lenient=lenient,
        )

    async def send_serialized(
        self,
        body: bytes,
        expected: type[BaseMessage] | None,
        *,
        authenticate: bool = True,
        lenient: bool = False,
    ) -> Reply:
        """:meth:`send` of a message already written with :func:`patchbay.firehose.dumps`
        (``body``, sent as it is); an answer that is not an ``expected`` raises
        :class:`UnexpectedResponseTypeError` (``None``: any message type is taken)."""
        expected_name = _type_name(expected)
        response = await self._exchange(body, authenticate)
        where = self.target.describe()
        if not response.body.strip():
            if response.status != 200 and isinstance(self.target, HttpTarget):
                return Reply(None, response)  # accepted, answered later
            raise _invalid(
                f"empty answer (status {response.status}): expected a {expected_name}",
                where,
                response,
            )
        try:
            answer = parse(response.body, lenient=lenient)
        except FirehoseError as exc:
            raise _invalid(
                f"the answer is not a Firehose message: {exc}", where, response, cause=exc
            ) from None
        reply = Reply(answer, response)
        if expected is not None and not isinstance(answer, expected):
            raise UnexpectedResponseTypeError(
                f"expected {expected_name}, got {answer.type}",
                target=where,
                expected=expected_name,
                got=str(answer.type),
                reply=reply,
            )
        return reply

    @abc.abstractmethod
    async def _exchange(self, body: bytes, authenticate: bool) -> Response:
        """Send ``body``; return the partner's successful answer (errors are raised)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections (a session passed in by the caller is left open)."""

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _type_name(expected: type[BaseMessage] | None) -> str:
    return str(expected.__struct_config__.tag) if expected is not None else "response"


def _header_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers with lower-cased names, repeated ones joined with ``", "``."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


class HttpTransport(Transport):
    """POSTs messages to an HTTP(S) endpoint with ``aiohttp`` (TLS verified, redirects not
    followed, answers capped at ``max_response_bytes``).

    ``session``: an ``aiohttp.ClientSession`` to use (and not close); by default one is
    created on first use, with at most ``connections`` connections, and closed by
    :meth:`close`. :meth:`post` sends any body (e.g. a webhook's).

    ``policy``: where the transport may connect (checked on the URL before each call and on
    every resolved address before connecting; needs a session of its own). ``credentials``:
    whether the requests carry a credential (default: whether the target has a token), which
    plain http may carry only to loopback or an allow-listed host.
    """

    target: HttpTarget

    def __init__(
        self,
        target: HttpTarget,
        *,
        timeouts: Timeouts | None = None,
        session: aiohttp.ClientSession | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        connections: int = 100,
        policy: TargetPolicy | None = None,
        credentials: bool | None = None,
    ) -> None:
        super().__init__(target)
        parts = urlsplit(target.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportConfigError(
                f"not an http(s) URL: {target.describe()!r}", target=target.describe()
            )
        if policy is not None and session is not None:
            raise ValueError("a transport with a target policy needs a session of its own")
        self.timeouts = timeouts or Timeouts()
        self._session = session
        self._owns_session = session is None
        self._connections = connections
        self._max = max_response_bytes
        self._policy = policy
        self._credentials = bool(target.token) if credentials is None else credentials
        self._refused: str | None = None
        self._checked = policy is None
        self._resolver: _GuardedResolver | None = None
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"patchbay/{__version__} (Firehose)",
        }

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise TransportConfigError(
                    "the given session is closed", target=self.target.describe()
                )
            if self._policy is not None and self._resolver is None:
                self._resolver = _GuardedResolver(self._policy, self.target.url, self._credentials)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._connections, ttl_dns_cache=300, resolver=self._resolver
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _check_target(self) -> None:
        """Refuse the URL itself (scheme, metadata names, literal addresses) once, before
        the first call; the resolver checks the addresses of host names."""
        if not self._checked:
            assert self._policy is not None
            try:
                self._policy.check_url(self.target.url, credentials=self._credentials)
            except TargetError as exc:
                self._refused = str(exc)
            self._checked = True
        if self._refused is not None:
            raise TargetRefusedError(self._refused, target=self.target.describe())

    async def _exchange(self, body: bytes, authenticate: bool) -> Response:
        return await self.post(body, authenticate=authenticate)

    async def post(
        self,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        authenticate: bool = True,
    ) -> Response:
        """POST ``body`` once and return the 2xx answer.

        ``headers`` are added to (or replace) the JSON and Firehose ones; with
        ``authenticate`` the target's token is sent. A non-2xx answer raises
        :class:`PartnerStatusError` (its ``response`` holds the answer up to the cap), a
        2xx answer over the cap :class:`InvalidResponseError`.
        """
        sent = {**self._headers, **(headers or {})}
        if authenticate and self.target.token:
            sent["Authorization"] = f"Token {self.target.token}"
        timeout = aiohttp.ClientTimeout(
            total=self.timeouts.total,
            connect=self.timeouts.connect,
            sock_connect=self.timeouts.connect,
        )
        self._check_target()
        where = self.target.describe()
        session = self._get_session()
        started = time.perf_counter()
        try:
            async with session.post(
                self.target.url, data=body, headers=sent, timeout=timeout, allow_redirects=False
            ) as answer:
                content, complete = await self._read(answer)
                response = Response(
                    answer.status, _header_dict(answer.headers.items()), content, _since(started)
                )
        except TimeoutError:
            raise PartnerTimeoutError(
                f"no answer from {where} within {self.timeouts.total:g} s",
                target=where,
                latency_ms=_since(started),
            ) from None
        except TargetError as exc:  # from the resolver: an address that may not be used
            raise TargetRefusedError(str(exc), target=where, latency_ms=_since(started)) from None
        except aiohttp.ClientError as exc:
            raise PartnerConnectionError(
                f"cannot reach {where}: {_describe_client_error(exc)}",
                target=where,
                latency_ms=_since(started),
            ) from None
        status = response.status
        if not 200 <= status < 300:
            error = PartnerThrottledError if status == 429 else PartnerStatusError
            raise error(
                f"{where} answered HTTP {status}: {excerpt(content) or '(empty body)'}",
                target=where,
                status=status,
                body=excerpt(content),
                response=response,
            )
        if not complete:
            raise _invalid(_too_large(self._max), where, response)
        return response

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """The answer up to the cap, and whether that is all of it."""
        declared = response.content_length
        if declared is not None and declared > self._max:
            return b"", False
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max:
                chunks.append(chunk[: len(chunk) - (size - self._max)])
                return b"".join(chunks), False
            chunks.append(chunk)
        return b"".join(chunks), True

    async def close(self) -> None:
        """Close the session this transport created (and its resolver)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


class _GuardedResolver(AbstractResolver):
    """aiohttp's resolver, then the policy on every address found: the connector connects
    only to addresses checked here (aiohttp does not resolve literal addresses: those are
    checked on the URL, :meth:`HttpTransport._check_target`)."""

    def __init__(self, policy: TargetPolicy, url: str, credentials: bool) -> None:
        self._policy = policy
        self._url = url
        self._credentials = credentials or has_userinfo(url)
        self._inner: AbstractResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = aiohttp.DefaultResolver()
        found = await self._inner.resolve(host, port, family)
        for result in found:
            self._policy.check_connect(
                self._url, host, result["host"], credentials=self._credentials
            )
        return found

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
            self._inner = None


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    return str(exc) or type(exc).__name__


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class LambdaTransport(Transport):
    """Invokes an AWS Lambda function synchronously with boto3 (imported on first use).

    ``client``: a boto3 ``lambda`` client to use; by default one is made for the target's
    region and endpoint with the transport's timeouts and no automatic retries. The blocking
    calls run on the event loop's default threads, or with ``threads`` on a pool of that
    many threads of the transport's own (so that a slow function cannot starve others).
    """

    target: LambdaTarget

    def __init__(
        self,
        target: LambdaTarget,
        *,
        timeouts: Timeouts | None = None,
        client: Any = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        threads: int | None = None,
        policy: TargetPolicy | None = None,
    ) -> None:
        super().__init__(target)
        self._policy = policy
        self.timeouts = timeouts or Timeouts()
        self._max = max_response_bytes
        self._owns_client = client is None
        self._client: Any = client
        self._client_lock = threading.Lock()
        self._executor = (
            ThreadPoolExecutor(threads, thread_name_prefix="patchbay-lambda") if threads else None
        )

    def _get_client(self) -> Any:
        """The boto3 client, made on first use (in a worker thread: finding credentials may
        block)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        try:
            boto3 = importlib.import_module("boto3")
        except ModuleNotFoundError:
            raise TransportConfigError(
                "calling AWS Lambda needs boto3: pip install 'patchbay[lambda]'",
                target=self.target.describe(),
            ) from None
        botocore = importlib.import_module("botocore")
        config_module = importlib.import_module("botocore.config")
        session = boto3.session.Session(region_name=self.target.region)
        options: dict[str, Any] = {
            "connect_timeout": self.timeouts.connect,
            "read_timeout": self.timeouts.total,
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "user_agent_extra": f"patchbay/{__version__}",
        }
        if self.target.endpoint_url and session.get_credentials() is None:
            options["signature_version"] = botocore.UNSIGNED  # a local emulator
        try:
            return session.client(
                "lambda",
                region_name=self.target.region,
                endpoint_url=self.target.endpoint_url,
                config=config_module.Config(**options),
            )
        except Exception as exc:  # noqa: BLE001 - botocore's configuration errors
            raise TransportConfigError(
                f"cannot create a Lambda client: {exc}", target=self.target.describe()
            ) from None

    async def _exchange(self, body: bytes, authenticate: bool) -> Response:
        endpoint = self.target.endpoint_url
        if self._policy is not None and endpoint:
            try:
                self._policy.check_url(endpoint)
            except TargetError as exc:
                raise TargetRefusedError(str(exc), target=self.target.describe()) from None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._invoke, body)

    def _invoke(self, body: bytes) -> Response:
        """The blocking call, in a worker thread: the function's answer, or a raised
        :class:`TransportError` (making the client does not count in the latency)."""
        client = self._get_client()
        exceptions = importlib.import_module("botocore.exceptions")
        where = self.target.describe()
        started = time.perf_counter()
        try:
            answer = client.invoke(
                FunctionName=self.target.function,
                InvocationType="RequestResponse",
                Payload=body,
            )
            stream = answer["Payload"]
            try:
                payload: bytes = stream.read(self._max + 1)
            finally:
                stream.close()
        except exceptions.ClientError as exc:
            raise _lambda_status_error(exc.response, where, _since(started)) from None
        except (exceptions.ReadTimeoutError, exceptions.ConnectTimeoutError):
            raise PartnerTimeoutError(
                f"no answer from {where} within {self.timeouts.total:g} s",
                target=where,
                latency_ms=_since(started),
            ) from None
        except (exceptions.EndpointConnectionError, exceptions.HTTPClientError) as exc:
            raise PartnerConnectionError(
                f"cannot reach {where}: {exc}", target=where, latency_ms=_since(started)
            ) from None
        except exceptions.NoCredentialsError:
            raise TransportConfigError(
                "no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)",
                target=where,
                latency_ms=_since(started),
            ) from None
        except exceptions.BotoCoreError as exc:
            raise TransportConfigError(
                f"cannot call {where}: {exc}", target=where, latency_ms=_since(started)
            ) from None
        headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        response = Response(
            int(answer.get("StatusCode", 200)),
            _header_dict(headers.items()),
            payload[: self._max],
            _since(started),
        )
        function_error = answer.get("FunctionError")
        if function_error:
            raise _function_error(str(function_error), where, response)
        if len(payload) > self._max:
            raise _invalid(_too_large(self._max), where, response)
        return response

    async def close(self) -> None:
        """Close the boto3 client this transport created, and its own threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if not self._owns_client:
            return
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _lambda_status_error(
    answer: Mapping[str, Any], where: str, latency_ms: float
) -> PartnerStatusError:
    """The error for a Lambda service error (botocore's ``ClientError.response``)."""
    error = answer.get("Error", {})
    code = str(error.get("Code", "Error"))
    metadata = answer.get("ResponseMetadata", {})
    status = int(metadata.get("HTTPStatusCode", 0))
    text = f"{code}: {error.get('Message', '')}".rstrip(": ")
    kind = (
        PartnerThrottledError
        if code == "TooManyRequestsException" or status == 429
        else PartnerStatusError
    )
    headers = _header_dict(metadata.get("HTTPHeaders", {}).items())
    return kind(
        f"Lambda answered {status} {text}",
        target=where,
        status=status,
        body=text,
        response=Response(status, headers, text.encode(), latency_ms),
    )


def _function_error(kind: str, where: str, response: Response) -> PartnerFunctionError:
    """The error for a function that failed, from its ``errorType``/``errorMessage``."""
    error_type: str | None = None
    error_message: str | None = None
    with contextlib.suppress(msgspec.DecodeError):
        value = msgspec.json.decode(response.body)
        if isinstance(value, Mapping):
            error_type = str(value["errorType"]) if value.get("errorType") is not None else None
            if value.get("errorMessage") is not None:
                error_message = excerpt(str(value["errorMessage"]))
    detail = ": ".join(x for x in (error_type, error_message) if x) or excerpt(response.body)
    return PartnerFunctionError(
        f"the function failed ({kind}): {detail}",
        target=where,
        kind=kind,
        error_type=error_type,
        error_message=error_message,
        body=excerpt(response.body),
        response=response,
    )


def open_transport(
    target: Target,
    *,
    timeouts: Timeouts | None = None,
    session: aiohttp.ClientSession | None = None,
    connections: int = 100,
    threads: int | None = None,
    policy: TargetPolicy | None = None,
) -> Transport:
    """The transport for ``target``. ``session`` and ``connections`` are used by HTTP
    targets only, ``threads`` (see :class:`LambdaTransport`) by Lambda targets only.
    ``policy``: where HTTP targets may connect, and which Lambda endpoint URLs may be used
    (checked on the URL: boto3 resolves the name itself)."""
    if isinstance(target, HttpTarget):
        return HttpTransport(
            target, timeouts=timeouts, session=session, connections=connections, policy=policy
        )
    return LambdaTransport(target, timeouts=timeouts, threads=threads, policy=policy)
