"""The HTTP/1.1 protocol of ``patchbay serve``: uvicorn's httptools protocol with limits.

httptools keeps a header of any size and uvicorn waits for a request's headers and body
for ever, so this subclass adds, from :class:`~patchbay.settings.Settings`:

- ``max_header_bytes``: a request whose request line and headers are larger is answered
  431 and the connection closed. The bytes received while the headers are incomplete are
  counted before they are parsed, so no more than that plus one read (uvloop reads 250 KB
  at most) is ever buffered.
- ``header_timeout_s``: the request line and headers must be complete within this many
  seconds of the connection's start (first request) or of their first byte (later
  requests on a kept-alive connection, whose idle time is uvicorn's keep-alive timeout).
  A partial request is then answered 408, a connection that sent nothing just closed.
- ``body_timeout_s``: the whole body must be in within this many seconds of the end of
  the headers (with ``max_request_bytes`` that is a floor on the average rate). Then the
  application, still reading the body, reads a disconnect and whatever it sends is
  dropped; the client gets 408 and the connection is closed.
- ``max_connections``: one connection more than this is answered 503 with ``Retry-After``
  as soon as it is accepted, and closed (uvicorn's ``limit_concurrency`` counts requests
  whose headers are complete, so it never sees a slow client's connection).

Error bodies are the JSON shape of every API (:func:`patchbay.http.errors.error_body`),
uvicorn's own 400 for a malformed request included. A refusal behind pipelined requests
waits for their answers. Besides one timer per connection, timers are armed only when a
request spans several reads, so a request that arrives in one read costs none.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httptools
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from patchbay.http.errors import error_body, status_code
from patchbay.settings import Settings

log = structlog.get_logger("patchbay.http")

# Where the parser is: between requests, in a request's line and headers, in its body.
_IDLE, _HEADERS, _BODY = 0, 1, 2


class _HeadersTooLarge(Exception):
    """Raised in the parser's callback to stop at a request whose headers are too large."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :attr:`settings`."""

    settings: ClassVar[Settings] = Settings()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase = _IDLE
        #: Bytes received since the last request's headers were complete, in the reads that
        #: began before a body: at least the current request's header bytes if ``_counted``.
        self._header_bytes = 0
        #: Whether the current request began in a read counted whole in ``_header_bytes``
        #: (not after another request's headers in the same read, or after a body).
        self._counted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        #: A refusal waiting for the answers of earlier (pipelined) requests; nothing more
        #: is read meanwhile.
        self._refusal: tuple[int, str, tuple[bytes, ...]] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.settings.max_connections
        if len(self.connections) > limit:
            log.warning(
                "http_refused",
                status=503,
                reason="too_many_connections",
                limit=limit,
                **self._peer(),
            )
            self._refuse(
                503,
                f"over the limit of {limit} open connections: try again later",
                b"retry-after: 1\r\n",
            )
            return
        self._header_timer = self.loop.call_later(
            self.settings.header_timeout_s, self._header_timeout
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._phase != _BODY:
            self._header_bytes += len(data)
            if self._phase == _IDLE:
                self._counted = True
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadersTooLarge):
                self._headers_too_large()
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self.transport.is_closing():
            return
        if self._phase == _HEADERS:
            if self._header_bytes > self.settings.max_header_bytes:
                self._headers_too_large()
            elif self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    self.settings.header_timeout_s, self._header_timeout
                )
        elif self._phase == _BODY and self._body_timer is None:
            self._body_timer = self.loop.call_later(
                self.settings.body_timeout_s, self._body_timeout
            )

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, msg)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None and not self.transport.is_closing():
            status, message, headers = self._refusal
            self._refuse(status, message, *headers)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEADERS

    def on_headers_complete(self) -> None:
        limit = self.settings.max_header_bytes
        if not self._counted or self._header_bytes > limit:  # else they are within it
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > limit:
                raise _HeadersTooLarge
        self._phase = _BODY
        self._header_bytes = 0
        self._counted = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # Limits

    def _headers_too_large(self) -> None:
        limit = self.settings.max_header_bytes
        log.info(
            "http_refused", status=431, reason="headers_too_large", limit=limit, **self._peer()
        )
        self._refuse(431, f"the request line and headers are over the limit of {limit} bytes")

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._phase != _HEADERS:  # nothing of a request yet: close, as an idle connection
            self.transport.close()
            return
        timeout = self.settings.header_timeout_s
        log.info(
            "http_refused", status=408, reason="header_timeout", timeout_s=timeout, **self._peer()
        )
        self._refuse(408, f"the request line and headers took over {timeout:g} s")

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        timeout = self.settings.body_timeout_s
        log.info(
            "http_refused", status=408, reason="body_timeout", timeout_s=timeout, **self._peer()
        )
        self._refuse(408, f"the request body took over {timeout:g} s", current=True)

    def _refuse(self, status: int, message: str, *headers: bytes, current: bool = False) -> None:
        """Answer ``status`` in the JSON error shape and close.

        The request refused is ``self.cycle``'s if ``current``: it is answered only if
        nothing of its answer was sent and no earlier request awaits one, and closed
        without an answer otherwise; its application reads a disconnect. Else it has no
        cycle yet, and the answer waits for the earlier requests' answers.
        """
        cycle = self.cycle
        if current:
            answer = not cycle.response_started and not self.pipeline
        elif cycle is not None and not cycle.response_complete:
            self._refusal = (status, message, headers)  # see on_response_complete
            self._cancel_timers()
            self.transport.pause_reading()
            return
        else:
            answer = True
        if answer:
            body = error_body(status_code(status), message)
            content = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                content += [name, b": ", value, b"\r\n"]
            content += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                *headers,
                b"connection: close\r\n\r\n",
                body,
            ]
            self.transport.write(b"".join(content))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # its send() now writes nothing
            cycle.message_event.set()
        self._cancel_timers()
        self.transport.close()

    def _peer(self) -> dict[str, str]:
        """The log field of the connection's peer (a proxy's address behind a proxy)."""
        return {"peer": f"{self.client[0]}:{self.client[1]}"} if self.client else {}

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None


def protocol_class(settings: Settings) -> type[LimitedHttpProtocol]:
    """The protocol class for uvicorn's ``Config(http=...)``, with the limits of ``settings``."""

    class Configured(LimitedHttpProtocol):
        pass

    Configured.settings = settings
    return Configured
