"""IDSync's HMAC signatures, as the mParticle mobile SDKs send them: pure functions.

A signed request carries ``x-mp-key``, ``Date`` and ``x-mp-signature``::

    x-mp-signature = hex(HMAC-SHA256(secret, METHOD + "\\n" + DATE + "\\n" + PATH + BODY))

``DATE`` is the ``Date`` header as sent (ISO 8601 basic, ``20170712T224127Z``, or an HTTP
date, ``Wed, 12 Jul 2017 22:41:27 GMT``), ``PATH`` the request's path with its query if it
has one, ``BODY`` the body. The SDKs sign the path of mParticle's identity host
(``/v1/identify``); Patchbay also serves the API under ``/identity/v1/...`` and the alias
request under ``/webevents/v1/...``, so a signature over the path the client called or over
its ``/v1/...`` form is accepted. A ``Date`` more than :data:`REPLAY_WINDOW_MS` away from the
server's clock is refused: a captured request cannot be replayed later than that.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: How far a signed request's ``Date`` may be from the server's clock, either way.
REPLAY_WINDOW_MS = 15 * 60 * 1000

#: The prefixes under which Patchbay serves a ``/v1/...`` path of mParticle's API.
SERVED_PREFIXES = ("/identity", "/webevents")

_ISO_BASIC = re.compile(r"\d{8}T\d{6}Z")

#: What a ``Date`` must look like, for error messages.
DATE_FORMATS = "ISO 8601 basic (20170712T224127Z) or an HTTP date (Wed, 12 Jul 2017 22:41:27 GMT)"


def parse_date(value: str) -> int | None:
    """The time of a ``Date`` header in Unix milliseconds, or ``None`` if it is neither ISO
    8601 basic in UTC nor an HTTP date (RFC 7231, with its obsolete forms)."""
    value = value.strip()
    if _ISO_BASIC.fullmatch(value):
        try:
            moment = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return None
        return int(moment.timestamp() * 1000)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, as RFC 5322 reads it
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def date_problem(value: str | None, now_ms: int) -> str | None:
    """What is wrong with a signed request's ``Date`` header, or ``None``."""
    if value is None or not value.strip():
        return "Date: required with x-mp-signature"
    when = parse_date(value)
    if when is None:
        return f"Date: expected {DATE_FORMATS}"
    if abs(now_ms - when) > REPLAY_WINDOW_MS:
        minutes = REPLAY_WINDOW_MS // 60_000
        return (
            f"Date: more than {minutes} minutes from the server's clock; sign with the current"
            " time (and check the device's clock)"
        )
    return None


def signature(secret: str, method: str, date: str, path: str, body: bytes) -> str:
    """The hex HMAC-SHA256 a client sends for this request."""
    message = f"{method.upper()}\n{date}\n{path}".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_paths(path: str, query: str) -> list[str]:
    """The paths a client may have signed: the one it called and its ``/v1/...`` form,
    each with ``?query`` when the request has a query."""
    paths = [path]
    for prefix in SERVED_PREFIXES:
        if path.startswith(prefix + "/v1/"):
            paths.append(path[len(prefix) :])
    return [p + "?" + query if query else p for p in paths]


def signature_matches(
    secret: str, method: str, date: str, path: str, query: str, body: bytes, given: str
) -> bool:
    """Whether ``given`` is the signature of the request over one of :func:`signed_paths`
    (compared in constant time; hex in either case)."""
    given = given.strip().lower()
    found = False
    for candidate in signed_paths(path, query):
        expected = signature(secret, method, date, candidate, body)
        found |= hmac.compare_digest(expected.encode(), given.encode("ascii", "replace"))
    return found
