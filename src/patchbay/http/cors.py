"""CORS for the APIs browsers call (the Web SDK's): one middleware, one policy.

An ``OPTIONS`` request to a covered path is a preflight, answered 204 without
authentication; every other answer on a covered path, errors included, carries
``Access-Control-Allow-Origin``, so that the Web SDK sees the status (it retries for ever a
request whose answer the browser hides). No cookies are involved, so no
``Allow-Credentials``.

Any origin may call (``*``), unless the web input of the request's key restricts its
origins (:attr:`patchbay.backends.records.Input.allowed_origins`): the key is in the path
(``/webevents/v3/JS/{key}/events``, ``/tags/JS/v2/{key}/config``,
``/nativesdks/v1/{key}/audience``, ``/webevents/v1/identity/{key}/Alias``) or in the
``x-mp-key`` header (IDSync). Then an allowed ``Origin`` is echoed (with ``Vary: Origin``)
and a request from any other origin is refused with 403: a preflight without
``Access-Control-Allow-Origin`` (the browser then never sends the request it announced), any
other request with its ``Origin`` echoed, so that the page's SDK sees the 403 and drops the
batch instead of sending it again for ever (nothing is stored either way). A request
without ``Origin`` is not a browser's cross-origin call and is left to the route.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patchbay.http.auth import key_prefix
from patchbay.http.errors import error_response

log = structlog.get_logger("patchbay.http")

#: The paths of the Web SDK's calls (CNAME-style, as its ``domain`` option builds them).
WEB_SDK_PATH_PREFIXES = ("/webevents/", "/tags/JS/", "/identity/", "/nativesdks/")

#: The key in a Web SDK path.
_KEY_IN_PATH = re.compile(
    r"^/(?:webevents/v\d+/(?:JS|identity)|tags/JS/v\d+|nativesdks/v\d+)/(?P<key>[^/]+)/"
)

#: Whether a page of an origin may call with a key: ``None`` when the key restricts no
#: origin (or is unknown), else whether this origin is one it allows.
OriginCheck = Callable[[str, str], bool | None]


def request_key(path: str, headers: Headers) -> str | None:
    """The input key a Web SDK request carries: in its path, else in ``x-mp-key``."""
    if (match := _KEY_IN_PATH.match(path)) is not None:
        return match["key"]
    return headers.get("x-mp-key") or None


@dataclass(frozen=True)
class CorsPolicy:
    """Which paths are open cross-origin, what a preflight allows, and (``origins``) the
    check of an input's allowed origins."""

    path_prefixes: tuple[str, ...]
    allow_methods: str = "GET, POST, OPTIONS"
    allow_headers: str = "Accept, Authorization, Content-Type, Content-Encoding, X-MP-Key"
    max_age_s: int = 86400
    origins: OriginCheck | None = None

    def covers(self, path: str) -> bool:
        """Whether ``path`` is open cross-origin."""
        return path.startswith(self.path_prefixes)

    def allow_origin(self, path: str, headers: Headers) -> tuple[str | None, bool]:
        """The ``Access-Control-Allow-Origin`` of a request (``None``: refused), and whether
        the answer varies by ``Origin``."""
        origin = headers.get("origin")
        key = request_key(path, headers)
        if origin is None or key is None or self.origins is None:
            return "*", False
        allowed = self.origins(key, origin)
        if allowed is None:
            return "*", False
        return (origin if allowed else None), True


class CorsMiddleware:
    """Answers preflights, stamps ``Access-Control-Allow-Origin`` on covered paths and
    refuses origins an input does not allow."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.policy.covers(scope["path"]):
            await self.app(scope, receive, send)
            return
        policy = self.policy
        headers = Headers(scope=scope)
        allow, vary = policy.allow_origin(scope["path"], headers)
        if allow is None:
            origin = headers.get("origin")
            log.warning(
                "origin_refused",
                path=scope["path"],
                origin=origin,
                key_prefix=key_prefix(request_key(scope["path"], headers)),
            )
            seen = (
                {}
                if scope["method"] == "OPTIONS" or origin is None
                else {"Access-Control-Allow-Origin": origin}
            )
            refusal = error_response(
                403,
                "FORBIDDEN",
                f"Origin: {origin!r} is not an allowed origin of this key",
                {"Vary": "Origin", **seen},
            )
            await refusal(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            preflight = [
                (b"access-control-allow-origin", allow.encode("latin-1")),
                *([(b"vary", b"Origin")] if vary else []),
                (b"access-control-allow-methods", policy.allow_methods.encode()),
                (b"access-control-allow-headers", policy.allow_headers.encode()),
                (b"access-control-max-age", str(policy.max_age_s).encode()),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": preflight})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer["Access-Control-Allow-Origin"] = allow
                if vary:
                    answer.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_origin)
