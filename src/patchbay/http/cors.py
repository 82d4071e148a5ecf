"""CORS for the APIs browsers call (the Web SDK's IDSync calls): one middleware, one policy.

Any origin may call (no cookies are involved, so no ``Allow-Credentials``). An ``OPTIONS``
request to a covered path is a preflight, answered 204 without authentication; every other
answer on a covered path, errors included, carries ``Access-Control-Allow-Origin``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class CorsPolicy:
    """Which paths are open cross-origin, and what a preflight allows."""

    path_prefixes: tuple[str, ...]
    allow_origin: str = "*"
    allow_methods: str = "POST, OPTIONS"
    allow_headers: str = "Accept, Authorization, Content-Type, Content-Encoding, X-MP-Key"
    max_age_s: int = 86400

    def covers(self, path: str) -> bool:
        """Whether ``path`` is open cross-origin."""
        return path.startswith(self.path_prefixes)


class CorsMiddleware:
    """Answers preflights and stamps ``Access-Control-Allow-Origin`` on covered paths."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.policy.covers(scope["path"]):
            await self.app(scope, receive, send)
            return
        policy = self.policy
        if scope["method"] == "OPTIONS":
            headers = [
                (b"access-control-allow-origin", policy.allow_origin.encode()),
                (b"access-control-allow-methods", policy.allow_methods.encode()),
                (b"access-control-allow-headers", policy.allow_headers.encode()),
                (b"access-control-max-age", str(policy.max_age_s).encode()),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Access-Control-Allow-Origin"] = policy.allow_origin
            await send(message)

        await self.app(scope, receive, send_with_origin)
