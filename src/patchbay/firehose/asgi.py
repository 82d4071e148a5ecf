"""Serve a :class:`~.processor.MessageProcessor` over HTTP as a plain ASGI app (no web
framework: a partner needs msgspec only, plus any ASGI server such as uvicorn)::

    app = asgi_app(MyPartner(), token=os.environ["FIREHOSE_TOKEN"])
    # uvicorn mymodule:app --port 8080

The Firehose HTTP transport: the platform POSTs one message as JSON to the
partner's URL (any path) with ``Authorization: Token <token>``, and reads the response
message from a 200 answer. What the app does:

* ``POST`` only (405 otherwise); the body is read up to ``max_body_bytes`` (413 beyond).
* With a ``token``, every request but a ``module_registration_request`` (which mParticle
  sends before it issues the token) must carry ``Authorization: Token <token>``, compared in
  constant time (401 otherwise, also for a body that is not a message). ``token=None``
  accepts every caller.
* Success: 200 with the response message (``application/json``).
* Errors are JSON ``{"error": code, "message": text}``, never a traceback: 400 for input
  that is not a request message (:class:`~.processor.InvalidMessageError`) and for invalid
  settings, 401, 405, 413, 500 when the partner's code raised (the traceback is logged to
  the ``patchbay.firehose.asgi`` logger), or the status of a
  :class:`~.processor.ProcessorError` the partner raised.

The processor runs in a worker thread (``threaded=True``, the default) so a slow hook does
not block the server's event loop; it must then be thread-safe, as a Java partner behind
Jetty must be.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from patchbay.firehose.messages import ModuleRegistrationRequest
from patchbay.firehose.processor import InvalidMessageError, MessageProcessor, ProcessorError
from patchbay.firehose.serialize import dumps

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The default body limit: 10 MiB (no size is documented; Lambda's own limit is 6 MB).
DEFAULT_MAX_BODY_BYTES: Final = 10 * 1024 * 1024

_JSON: Final = (b"content-type", b"application/json")


class _Answer(Exception):
    """An early answer: an HTTP error status with its JSON error body."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]):
        super().__init__(message)
        self.status = status
        self.body = json.dumps({"error": code, "message": message}).encode()
        self.headers = headers


class FirehoseASGIApp:
    """The ASGI app :func:`asgi_app` returns."""

    def __init__(
        self,
        processor: MessageProcessor,
        *,
        token: str | None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        threaded: bool = True,
    ) -> None:
        if token is not None and not token.strip():
            raise ValueError("token must not be empty; pass token=None to accept any caller")
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        self.processor = processor
        self.max_body_bytes = max_body_bytes
        self.threaded = threaded
        self._token_digest = _digest(token.strip().encode()) if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        try:
            status, body, headers = await self._handle(scope, receive)
        except _Answer as answer:
            status, body, headers = answer.status, answer.body, answer.headers
        except _Disconnected:
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if scope.get("method") != "POST":
            raise _Answer(
                405,
                "method_not_allowed",
                "Firehose messages are sent with POST.",
                [(b"allow", b"POST")],
            )
        headers = scope.get("headers") or []
        body = await self._read_body(headers, receive)
        authorized = self._authorized(headers)
        try:
            message = self.processor.parse(body)
        except InvalidMessageError as exc:
            if not authorized:
                raise _unauthorized() from None
            return exc.status, _error_body(exc), []
        if not authorized and not isinstance(message, ModuleRegistrationRequest):
            raise _unauthorized()
        try:
            if self.threaded:
                response = await asyncio.to_thread(self.processor.process, message)
            else:
                response = self.processor.process(message)
        except ProcessorError as exc:
            if exc.status >= 500:
                logger.error("%s: %s", message.type, exc.message, exc_info=exc)
            return exc.status, _error_body(exc), []
        except Exception as exc:
            logger.error("%s: unexpected error", message.type, exc_info=exc)
            body = json.dumps(
                {"error": "internal_error", "message": "Internal error while processing."}
            ).encode()
            return 500, body, []
        return 200, dumps(response), []

    async def _read_body(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> bytes:
        limit = self.max_body_bytes
        declared = _header(headers, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise _Answer(400, "bad_request", "Invalid Content-Length.", []) from None
            if length > limit:
                raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                raise _Disconnected
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not event.get("more_body", False):
                return b"".join(chunks)

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self._token_digest is None:
            return True
        value = _header(headers, b"authorization")
        if value is None:
            return False
        scheme, _, credentials = value.strip().partition(b" ")
        # Compare digests so neither the token nor its length leaks through timing.
        matches = hmac.compare_digest(_digest(credentials.strip()), self._token_digest)
        return scheme.lower() == b"token" and matches


def asgi_app(
    processor: MessageProcessor,
    *,
    token: str | None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    threaded: bool = True,
) -> FirehoseASGIApp:
    """An ASGI app that answers Firehose messages with ``processor`` (see the module doc).

    ``token`` is the token mParticle issued (``None`` accepts any caller, including
    requests without ``Authorization``); ``max_body_bytes`` caps the request body;
    ``threaded`` runs the processor in a worker thread.
    """
    return FirehoseASGIApp(processor, token=token, max_body_bytes=max_body_bytes, threaded=threaded)


class _Disconnected(Exception):
    """The client went away before the body was read."""


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _unauthorized() -> _Answer:
    return _Answer(
        401,
        "unauthorized",
        "Missing or wrong token: send 'Authorization: Token <token>'.",
        [(b"www-authenticate", b"Token")],
    )


def _too_large(limit: int) -> _Answer:
    return _Answer(413, "payload_too_large", f"The body is larger than {limit} bytes.", [])


def _error_body(exc: ProcessorError) -> bytes:
    return json.dumps(exc.to_dict()).encode()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
