"""Send one Firehose message to a partner and get its answer, over HTTPS or AWS Lambda.

Both transports take a request message, write it with :func:`patchbay.firehose.dumps`, send it
once (no retries: retrying is the caller's policy, see :attr:`TransportError.retryable`) and
return a :class:`Reply`: the parsed response message, the latency and the raw body.

* :class:`HttpTransport` POSTs the JSON with ``aiohttp`` (spec §5.2): ``Content-Type:
  application/json`` and, when the target has a token, ``Authorization: Token <token>``.
  Redirects are not followed (the token must not travel to another host). One
  ``aiohttp.ClientSession`` is reused for every call; pass your own to share a pool.
* :class:`LambdaTransport` calls the Lambda Invoke API synchronously (``RequestResponse``,
  spec §5.1) with boto3, in a worker thread (``asyncio.to_thread``). ``endpoint_url`` points it
  at a local Lambda emulator; with an endpoint and no AWS credentials configured, requests are
  sent unsigned.

Failures raise typed :class:`TransportError` subclasses. Messages never contain the token.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import aiohttp
import msgspec

from patchbay import __version__
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
    "Target",
    "Timeouts",
    "Transport",
    "TransportConfigError",
    "TransportError",
    "UnexpectedResponseTypeError",
    "excerpt",
    "open_transport",
    "response_type_for",
]

#: mParticle's Lambda integrations live in us-east-1 (spec §5.1).
DEFAULT_LAMBDA_REGION: Final = "us-east-1"

#: HTTP statuses the newer mParticle docs retry (spec §5.2); everything else is final.
RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})

#: Answers larger than this are refused (a Firehose response is a few hundred bytes).
DEFAULT_MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024

_EXCERPT_CHARS: Final = 300

#: The response type each request is answered with (spec §1.2).
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


def excerpt(body: bytes | str, limit: int = _EXCERPT_CHARS) -> str:
    """The start of ``body`` on one line, for error messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- targets


class HttpTarget(msgspec.Struct, frozen=True):
    """A partner's HTTPS endpoint and the token sent as ``Authorization: Token <token>``."""

    url: str
    token: str | None = None

    def describe(self) -> str:
        """The endpoint, for messages (never the token)."""
        return self.url

    def __repr__(self) -> str:
        token = "<set>" if self.token else None
        return f"HttpTarget(url={self.url!r}, token={token})"


class LambdaTarget(msgspec.Struct, frozen=True):
    """A partner's AWS Lambda function (name, ARN or ``name:alias``)."""

    function: str
    region: str = DEFAULT_LAMBDA_REGION
    endpoint_url: str | None = None

    def describe(self) -> str:
        """The function, for messages."""
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"lambda:{self.function} ({self.region}){where}"


#: Where a partner is reached.
Target = HttpTarget | LambdaTarget


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait: ``connect`` to open a connection, ``total`` for the whole call
    (Lambda: for the answer once connected)."""

    total: float = 10.0
    connect: float = 5.0


@dataclass(frozen=True, slots=True)
class Reply:
    """A partner's answer.

    ``message`` is ``None`` only when an HTTP partner accepted the request with a non-200
    success status (e.g. 202) and an empty body. ``status`` is the HTTP status, or the
    Lambda ``StatusCode``. ``latency_ms`` covers sending the request and reading the answer.
    """

    message: Message | None
    latency_ms: float
    status: int
    body: bytes

    def json(self) -> dict[str, Any] | None:
        """The answer as decoded JSON (``None`` for an empty body)."""
        if not self.body:
            return None
        value = msgspec.json.decode(self.body)
        return value if isinstance(value, dict) else None


# --------------------------------------------------------------------------- errors


class TransportError(Exception):
    """A call to a partner failed. ``target`` describes the partner (never its token),
    ``latency_ms`` is how long the call took when it got that far, and ``retryable``
    says whether sending the same message again may succeed."""

    _RETRYABLE: ClassVar[bool] = False

    def __init__(self, message: str, *, target: str, latency_ms: float | None = None) -> None:
        super().__init__(message)
        self.target = target
        self.latency_ms = latency_ms

    @property
    def retryable(self) -> bool:
        """Whether sending the same message again may succeed."""
        return self._RETRYABLE


class TransportConfigError(TransportError):
    """The target cannot be called as configured (bad URL, no AWS region...)."""


class PartnerConnectionError(TransportError):
    """The partner could not be reached, or dropped the connection."""

    _RETRYABLE = True


class PartnerTimeoutError(TransportError):
    """The partner did not answer in time."""

    _RETRYABLE = True


class PartnerStatusError(TransportError):
    """The partner answered with an error status (HTTP non-2xx, or a Lambda service error).
    ``body`` is an excerpt of the answer."""

    def __init__(
        self,
        message: str,
        *,
        target: str,
        status: int,
        body: str,
        latency_ms: float | None = None,
    ) -> None:
        super().__init__(message, target=target, latency_ms=latency_ms)
        self.status = status
        self.body = body

    @property
    def retryable(self) -> bool:
        """408, 429 and 5xx gateway/availability errors are retried (spec §5.2)."""
        return self.status in RETRYABLE_STATUSES


class PartnerThrottledError(PartnerStatusError):
    """The partner is throttled (HTTP 429, or Lambda ``TooManyRequestsException``): retry
    with back-off (spec §5.1)."""


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
    ) -> None:
        super().__init__(message, target=target, latency_ms=latency_ms)
        self.kind = kind
        self.error_type = error_type
        self.error_message = error_message
        self.body = body


class InvalidResponseError(TransportError):
    """The answer is not a Firehose message (not JSON, unknown type, invalid field...).
    ``body`` is an excerpt, ``raw`` the whole answer when it was read; ``cause`` is the
    parse error, if any."""

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
    ) -> None:
        super().__init__(message, target=target, latency_ms=latency_ms)
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
            latency_ms=reply.latency_ms,
            raw=reply.body,
        )
        self.expected = expected
        self.got = got
        self.reply = reply


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
        it, spec §3.1). ``lenient`` is passed to :func:`patchbay.firehose.parse`. With
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
        status, answer_body, latency_ms = await self._exchange(body, authenticate)
        where = self.target.describe()
        if not answer_body.strip():
            if status != 200 and isinstance(self.target, HttpTarget):
                return Reply(None, latency_ms, status, answer_body)  # accepted, answered later
            raise InvalidResponseError(
                f"empty answer (status {status}): expected a {expected_name}",
                target=where,
                body="",
                status=status,
                latency_ms=latency_ms,
            )
        try:
            answer = parse(answer_body, lenient=lenient)
        except FirehoseError as exc:
            raise InvalidResponseError(
                f"the answer is not a Firehose message: {exc}",
                target=where,
                body=excerpt(answer_body),
                status=status,
                latency_ms=latency_ms,
                cause=exc,
                raw=answer_body,
            ) from None
        reply = Reply(answer, latency_ms, status, answer_body)
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
    async def _exchange(self, body: bytes, authenticate: bool) -> tuple[int, bytes, float]:
        """Send ``body``; return the success status, the answer and the latency in ms."""

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


class HttpTransport(Transport):
    """POSTs messages to an HTTP(S) endpoint with ``aiohttp``.

    ``session``: an ``aiohttp.ClientSession`` to use (and not close); by default one is
    created on first use and closed by :meth:`close`.
    """

    target: HttpTarget

    def __init__(
        self,
        target: HttpTarget,
        *,
        timeouts: Timeouts | None = None,
        session: aiohttp.ClientSession | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(target)
        parts = urlsplit(target.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportConfigError(
                f"not an http(s) URL: {target.url!r}", target=target.describe()
            )
        self.timeouts = timeouts or Timeouts()
        self._session = session
        self._owns_session = session is None
        self._max = max_response_bytes
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"patchbay/{__version__} (Firehose)",
        }

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise TransportConfigError("the given session is closed", target=self.target.url)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=300),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def _exchange(self, body: bytes, authenticate: bool) -> tuple[int, bytes, float]:
        headers = dict(self._headers)
        if authenticate and self.target.token:
            headers["Authorization"] = f"Token {self.target.token}"
        timeout = aiohttp.ClientTimeout(
            total=self.timeouts.total,
            connect=self.timeouts.connect,
            sock_connect=self.timeouts.connect,
        )
        where = self.target.url
        session = self._get_session()
        started = time.perf_counter()
        try:
            async with session.post(
                self.target.url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                answer = await self._read(response, where, started)
                status = response.status
        except TimeoutError:
            raise PartnerTimeoutError(
                f"no answer from {where} within {self.timeouts.total:g} s",
                target=where,
                latency_ms=_since(started),
            ) from None
        except aiohttp.ClientError as exc:
            raise PartnerConnectionError(
                f"cannot reach {where}: {_describe_client_error(exc)}",
                target=where,
                latency_ms=_since(started),
            ) from None
        latency_ms = _since(started)
        if not 200 <= status < 300:
            error = PartnerThrottledError if status == 429 else PartnerStatusError
            raise error(
                f"{where} answered HTTP {status}: {excerpt(answer) or '(empty body)'}",
                target=where,
                status=status,
                body=excerpt(answer),
                latency_ms=latency_ms,
            )
        return status, answer, latency_ms

    async def _read(self, response: aiohttp.ClientResponse, where: str, started: float) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self._max:
            raise InvalidResponseError(
                f"the answer is too large ({declared} bytes, at most {self._max})",
                target=where,
                body="",
                status=response.status,
                latency_ms=_since(started),
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max:
                raise InvalidResponseError(
                    f"the answer is too large (more than {self._max} bytes)",
                    target=where,
                    body=excerpt(b"".join(chunks)),
                    status=response.status,
                    latency_ms=_since(started),
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        """Close the session this transport created."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def _describe_client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    return str(exc) or type(exc).__name__


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class LambdaTransport(Transport):
    """Invokes an AWS Lambda function synchronously with boto3.

    ``client``: a boto3 ``lambda`` client to use; by default one is made for the target's
    region and endpoint with the transport's timeouts and no automatic retries.
    """

    target: LambdaTarget

    def __init__(
        self,
        target: LambdaTarget,
        *,
        timeouts: Timeouts | None = None,
        client: Any = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(target)
        self.timeouts = timeouts or Timeouts()
        self._max = max_response_bytes
        self._owns_client = client is None
        self._client: Any = client
        self._client_lock = threading.Lock()

    def _get_client(self) -> Any:
        """The boto3 client, made on first use (in a worker thread: finding credentials may
        block)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        boto3 = importlib.import_module("boto3")
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

    async def _exchange(self, body: bytes, authenticate: bool) -> tuple[int, bytes, float]:
        outcome, latency_ms = await asyncio.to_thread(self._timed_invoke, body)
        if isinstance(outcome, _Failure):
            raise outcome.error(latency_ms)
        status, function_error, payload = outcome
        where = self.target.describe()
        if function_error:
            error_type, error_message = _lambda_error(payload)
            detail = ": ".join(x for x in (error_type, error_message) if x) or excerpt(payload)
            raise PartnerFunctionError(
                f"the function failed ({function_error}): {detail}",
                target=where,
                kind=function_error,
                error_type=error_type,
                error_message=error_message,
                body=excerpt(payload),
                latency_ms=latency_ms,
            )
        if len(payload) > self._max:
            raise InvalidResponseError(
                f"the answer is too large ({len(payload)} bytes, at most {self._max})",
                target=where,
                body=excerpt(payload),
                status=status,
                latency_ms=latency_ms,
            )
        return status, payload, latency_ms

    def _timed_invoke(self, body: bytes) -> tuple[tuple[int, str | None, bytes] | _Failure, float]:
        """The blocking call, in a worker thread: its outcome and latency (without making
        the client). Errors are returned, not raised, so the latency goes with them."""
        try:
            client = self._get_client()
        except TransportConfigError as exc:
            return _Failure(TransportConfigError, str(exc), exc.target), 0.0
        started = time.perf_counter()
        outcome = self._invoke(client, body)
        return outcome, _since(started)

    def _invoke(self, client: Any, body: bytes) -> tuple[int, str | None, bytes] | _Failure:
        exceptions = importlib.import_module("botocore.exceptions")
        where = self.target.describe()
        try:
            response = client.invoke(
                FunctionName=self.target.function,
                InvocationType="RequestResponse",
                Payload=body,
            )
            payload: bytes = response["Payload"].read()
            return int(response.get("StatusCode", 200)), response.get("FunctionError"), payload
        except exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Error"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            text = f"{code}: {error.get('Message', '')}".rstrip(": ")
            kind = (
                PartnerThrottledError
                if code == "TooManyRequestsException" or status == 429
                else PartnerStatusError
            )
            return _Failure(kind, f"Lambda answered {status} {text}", where, status, text)
        except (exceptions.ReadTimeoutError, exceptions.ConnectTimeoutError):
            return _Failure(
                PartnerTimeoutError,
                f"no answer from {where} within {self.timeouts.total:g} s",
                where,
            )
        except (exceptions.EndpointConnectionError, exceptions.HTTPClientError) as exc:
            return _Failure(PartnerConnectionError, f"cannot reach {where}: {exc}", where)
        except exceptions.NoCredentialsError:
            return _Failure(
                TransportConfigError,
                "no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)",
                where,
            )
        except exceptions.BotoCoreError as exc:
            return _Failure(TransportConfigError, f"cannot call {where}: {exc}", where)

    async def close(self) -> None:
        """Close the boto3 client this transport created."""
        if not self._owns_client:
            return
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: type[TransportError]
    message: str
    target: str
    status: int = 0
    body: str = ""

    def error(self, latency_ms: float) -> TransportError:
        if issubclass(self.kind, PartnerStatusError):
            return self.kind(
                self.message,
                target=self.target,
                status=self.status,
                body=self.body,
                latency_ms=latency_ms,
            )
        return self.kind(self.message, target=self.target, latency_ms=latency_ms)


def _lambda_error(payload: bytes) -> tuple[str | None, str | None]:
    """``errorType`` and ``errorMessage`` of a Lambda error payload, when it has them."""
    try:
        value = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None, None
    if not isinstance(value, Mapping):
        return None, None
    error_type, error_message = value.get("errorType"), value.get("errorMessage")
    return (
        str(error_type) if error_type is not None else None,
        excerpt(str(error_message)) if error_message is not None else None,
    )


def open_transport(
    target: Target,
    *,
    timeouts: Timeouts | None = None,
    session: aiohttp.ClientSession | None = None,
) -> Transport:
    """The transport for ``target``. ``session`` is used by HTTP targets only."""
    if isinstance(target, HttpTarget):
        return HttpTransport(target, timeouts=timeouts, session=session)
    return LambdaTransport(target, timeouts=timeouts)
