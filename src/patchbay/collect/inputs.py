"""Inputs and their credentials: creating, rotating, checking.

Keys and secrets are random 256-bit tokens. A SHA-256 hash of the secret is what HTTP Basic
is checked against: a slow password hash protects guessable passwords, but these secrets are
not guessable, and the check runs on every request. Comparisons are constant-time. A client
input's secret is also kept sealed (:meth:`patchbay.secretbox.SecretBox.seal_bound`) when a
:class:`SecretBox` is given: IDSync needs the secret itself to check the mobile SDKs' HMAC
signatures. Server and feed secrets are never sealed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import urllib.parse
import uuid
from collections.abc import Callable, Iterable

import msgspec

from patchbay.backends.abstract import InputStore
from patchbay.backends.records import Credential, Input
from patchbay.clock import Clock
from patchbay.logs import config_changed
from patchbay.secretbox import SecretBox

#: Input types: mParticle's platforms, plus ``feed`` for partner feeds (inbound integrations).
PLATFORM_TYPES = (
    "ios",
    "android",
    "web",
    "server",
    "tvos",
    "roku",
    "alexa",
    "smart_tv",
    "fire_tv",
    "xbox",
    "desktop",
    "other",
)
FEED_TYPE = "feed"
INPUT_TYPES = (*PLATFORM_TYPES, FEED_TYPE)
#: Input types whose secret stays on servers: never sealed, never accepted as a key alone.
SERVER_SIDE_TYPES = ("server", FEED_TYPE)
#: The one input type whose key alone always authenticates IDSync (the Web SDK sends no
#: secret); other client types only when the input's ``idsync_key_only`` is on.
KEY_ONLY_TYPE = "web"

#: mParticle's default Events API limit, in batches per second.
DEFAULT_RATE_LIMIT = 270.0


class NewCredentials(msgspec.Struct, frozen=True):
    """A key and secret as shown once to the operator."""

    id: str
    name: str
    key: str
    secret: str


def hash_secret(secret: str) -> str:
    """The stored form of a secret."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored``, compared in constant time."""
    return hmac.compare_digest(hash_secret(secret).encode(), stored.encode())


def _new_credential(item: Input, clock: Clock, box: SecretBox | None) -> tuple[Credential, str]:
    key = "pk_" + secrets.token_urlsafe(24)
    secret = "ps_" + secrets.token_urlsafe(32)
    sealed = None
    if box is not None and item.type not in SERVER_SIDE_TYPES:
        sealed = box.seal_bound(secret, key)
    return (
        Credential(
            key=key,
            input_id=item.id,
            secret_hash=hash_secret(secret),
            created_at_ms=clock.now_ms(),
            enabled=True,
            secret_sealed=sealed,
        ),
        secret,
    )


def check_idsync_key_only(type_: str, on: bool) -> None:
    """Raise ``ValueError`` if an input of ``type_`` cannot have ``idsync_key_only`` ``on``
    (server and feed inputs) or ``off`` (web inputs: the Web SDK sends the key alone)."""
    if on and type_ in SERVER_SIDE_TYPES:
        raise ValueError(
            f"a {type_} input never accepts its key alone on IDSync: its secret is kept on"
            " servers, which send it (HTTP Basic)"
        )
    if not on and type_ == KEY_ONLY_TYPE:
        raise ValueError(
            "a web input always accepts its key alone on IDSync: the Web SDK has no secret"
        )


def key_only_allowed(item: Input) -> bool:
    """Whether IDSync accepts ``item``'s key alone: always for a web input, never for a
    server or feed input, otherwise as the input's ``idsync_key_only`` says."""
    if item.type == KEY_ONLY_TYPE:
        return True
    return item.idsync_key_only and item.type not in SERVER_SIDE_TYPES


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(text: str) -> str:
    """``text`` as the ``Origin`` header a browser sends: ``scheme://host[:port]``, lower
    case, without a default port; ``ValueError`` for anything else (a path, a query,
    credentials, a scheme other than http and https)."""
    try:
        url = urllib.parse.urlsplit(text.strip())
        port = url.port
    except ValueError:
        raise ValueError(f"not an origin: {text!r} (expected scheme://host[:port])") from None
    scheme, host = url.scheme.lower(), (url.hostname or "")
    if (
        scheme not in _DEFAULT_PORTS
        or not host
        or url.path not in ("", "/")
        or url.query
        or url.fragment
        or url.username is not None
    ):
        raise ValueError(f"not an origin: {text!r} (expected http(s)://host[:port])")
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    shown = "" if port is None or port == _DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{shown}"


def check_allowed_origins(type_: str, origins: Iterable[str]) -> tuple[str, ...]:
    """``origins`` normalized (:func:`normalize_origin`) without repeats; ``ValueError`` if
    one is not an origin, or if given for an input that is not a web input."""
    found = tuple(dict.fromkeys(normalize_origin(o) for o in origins))
    if found and type_ != KEY_ONLY_TYPE:
        raise ValueError(
            f"allowed origins restrict the Web SDK's calls: a {type_} input has none"
            " (only web inputs do)"
        )
    return found


def origin_allowed(item: Input, origin: str) -> bool:
    """Whether a page of ``origin`` (an ``Origin`` header) may call with ``item``'s key:
    any origin when the input restricts none."""
    if not item.allowed_origins:
        return True
    try:
        return normalize_origin(origin) in item.allowed_origins
    except ValueError:  # "null" (sandboxed frames, file://) and other opaque origins
        return False


def origin_check(store: InputStore) -> Callable[[str, str], bool | None]:
    """The CORS check of ``store``'s inputs (:class:`patchbay.http.cors.CorsPolicy`): for a
    key and an ``Origin``, ``None`` when the key's input restricts no origin (or there is no
    such key: the route refuses it), else whether the origin is allowed."""

    def check(key: str, origin: str) -> bool | None:
        found = store.find_credential(key)
        if found is None or not found[1].allowed_origins:
            return None
        return origin_allowed(found[1], origin)

    return check


def web_input(store: InputStore, key: str) -> Input | None:
    """The enabled web input that ``key`` (an enabled key) belongs to, or ``None``: the Web
    SDK's endpoints take the key alone, which only a web input accepts."""
    found = store.find_credential(key)
    if found is None:
        return None
    credential, item = found
    if not (credential.enabled and item.enabled and item.type == KEY_ONLY_TYPE):
        return None
    return item


def check_new_input(
    name: str, type_: str, rate_limit: float, idsync_key_only: bool = False
) -> None:
    """``ValueError`` unless an input can be created with these values."""
    if type_ not in INPUT_TYPES:
        raise ValueError(f"unknown input type {type_!r}: expected one of {', '.join(INPUT_TYPES)}")
    if rate_limit < 0:
        raise ValueError("the rate limit must be 0 (unlimited) or more")
    if not name or len(name) > 200:
        raise ValueError("the name must have 1 to 200 characters")
    if idsync_key_only:
        check_idsync_key_only(type_, True)


def create_input(
    store: InputStore,
    name: str,
    type_: str,
    rate_limit: float,
    clock: Clock,
    *,
    idsync_key_only: bool = False,
    box: SecretBox | None = None,
    allowed_origins: Iterable[str] = (),
) -> NewCredentials:
    """Create an input with a first key and secret; the secret is returned only here.

    ``idsync_key_only`` lets IDSync accept the input's key alone (client inputs only; a web
    input always does). With ``box``, a client input's secret is also sealed, so that IDSync
    can check the input's HMAC signatures. ``allowed_origins`` (web inputs only) restricts
    the pages that may use the key (:func:`check_allowed_origins`).
    """
    check_new_input(name, type_, rate_limit, idsync_key_only)
    origins = check_allowed_origins(type_, allowed_origins)
    item = Input(
        id=str(uuid.uuid4()),
        name=name,
        type=type_,
        rate_limit=rate_limit,
        enabled=True,
        created_at_ms=clock.now_ms(),
        idsync_key_only=idsync_key_only,
        allowed_origins=origins,
    )
    credential, secret = _new_credential(item, clock, box)
    store.add_input(item, credential)
    shown = {"allowed_origins": list(origins)} if origins else {}
    config_changed("input", name, "create", id=item.id, type=type_, rate_limit=rate_limit, **shown)
    return NewCredentials(id=item.id, name=name, key=credential.key, secret=secret)


def rotate_credentials(
    store: InputStore, item: Input, clock: Clock, keep_old: bool, box: SecretBox | None = None
) -> NewCredentials:
    """Give an input a new key and secret; disable its other keys unless ``keep_old``.

    With ``box``, a client input's new secret is also sealed (see :func:`create_input`).
    """
    old = store.credentials(item.id)
    credential, secret = _new_credential(item, clock, box)
    store.add_credential(credential)
    if not keep_old:
        for previous in old:
            store.set_credential_enabled(previous.key, False)
    config_changed("input", item.name, "rotate", id=item.id, keep_old=keep_old)
    return NewCredentials(id=item.id, name=item.name, key=credential.key, secret=secret)


def authenticate(store: InputStore, key: str, secret: str) -> Input | None:
    """The enabled input that ``key`` and ``secret`` belong to, or ``None``."""
    found = store.find_credential(key)
    if found is None:
        # Spend the same time as a real check, so that timing does not reveal valid keys.
        secret_matches(secret, hash_secret(""))
        return None
    credential, item = found
    ok = secret_matches(secret, credential.secret_hash)
    if not (ok and credential.enabled and item.enabled):
        return None
    return item
