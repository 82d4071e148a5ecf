"""What every API shares about authentication: the log line of a failure, and bearer tokens.

:func:`auth_failed` is called once for each request refused for its credentials, on every
API (Events API, IDSync, Profile API, admin API, ``/metrics``): one ``auth_failed`` line at
``warning`` with the API, the path, the source address and the reason. It never holds a
secret, a token or a whole key: at most the first :data:`KEY_PREFIX_CHARS` characters of
the key that was given (enough to tell which input a client thinks it uses).

:class:`BearerToken` checks ``Authorization: Bearer <token>`` against a token kept only as
its SHA-256 digest, in constant time (the admin API's token, the metrics token).
"""

from __future__ import annotations

import hashlib
import hmac

import structlog
from starlette.requests import Request

log = structlog.get_logger("patchbay.auth")

#: How much of a key a log line may show.
KEY_PREFIX_CHARS = 4


def key_prefix(key: str | None) -> str | None:
    """The start of ``key`` a log line may show (``None`` without a key)."""
    if not key:
        return None
    return key[:KEY_PREFIX_CHARS] + "..."


def source_address(request: Request) -> str | None:
    """The address the request came from (the peer's; a proxy's own if there is one)."""
    return request.client.host if request.client else None


def auth_failed(request: Request, api: str, reason: str, key: str | None = None) -> None:
    """Log that ``request`` was refused for its credentials (see the module documentation).

    ``reason`` says what was wrong without quoting it; ``key`` is the key given, if any (only
    its prefix is logged)."""
    log.warning(
        "auth_failed",
        api=api,
        path=request.url.path,
        source=source_address(request),
        reason=reason,
        key_prefix=key_prefix(key),
    )


class BearerToken:
    """A token that a request must carry as ``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()

    def check(self, header: str | None) -> str | None:
        """``None`` when ``header`` carries the token, else the reason it does not."""
        scheme, _, given = (header or "").strip().partition(" ")
        if not scheme:
            return "no Authorization header"
        if scheme.lower() != "bearer" or not given.strip():
            return "not a Bearer token"
        supplied = hashlib.sha256(given.strip().encode()).digest()
        if not hmac.compare_digest(supplied, self._digest):
            return "wrong token"
        return None
