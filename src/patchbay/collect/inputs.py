"""Inputs and their credentials: creating, rotating, checking.

Keys and secrets are random 256-bit tokens. Only a SHA-256 hash of the secret is stored: a
slow password hash protects guessable passwords, but these secrets are not guessable, and
the check runs on every request. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

import msgspec

from patchbay.backends.abstract import InputStore
from patchbay.backends.records import Credential, Input
from patchbay.clock import Clock

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


def _new_credential(input_id: str, clock: Clock) -> tuple[Credential, str]:
    key = "pk_" + secrets.token_urlsafe(24)
    secret = "ps_" + secrets.token_urlsafe(32)
    return (
        Credential(
            key=key,
            input_id=input_id,
            secret_hash=hash_secret(secret),
            created_at_ms=clock.now_ms(),
            enabled=True,
        ),
        secret,
    )


def check_new_input(name: str, type_: str, rate_limit: float) -> None:
    """``ValueError`` unless an input can be created with these values."""
    if type_ not in INPUT_TYPES:
        raise ValueError(f"unknown input type {type_!r}: expected one of {', '.join(INPUT_TYPES)}")
    if rate_limit < 0:
        raise ValueError("the rate limit must be 0 (unlimited) or more")
    if not name or len(name) > 200:
        raise ValueError("the name must have 1 to 200 characters")


def create_input(
    store: InputStore, name: str, type_: str, rate_limit: float, clock: Clock
) -> NewCredentials:
    """Create an input with a first key and secret; the secret is returned only here."""
    check_new_input(name, type_, rate_limit)
    item = Input(
        id=str(uuid.uuid4()),
        name=name,
        type=type_,
        rate_limit=rate_limit,
        enabled=True,
        created_at_ms=clock.now_ms(),
    )
    credential, secret = _new_credential(item.id, clock)
    store.add_input(item, credential)
    return NewCredentials(id=item.id, name=name, key=credential.key, secret=secret)


def rotate_credentials(
    store: InputStore, item: Input, clock: Clock, keep_old: bool
) -> NewCredentials:
    """Give an input a new key and secret; disable its other keys unless ``keep_old``."""
    old = store.credentials(item.id)
    credential, secret = _new_credential(item.id, clock)
    store.add_credential(credential)
    if not keep_old:
        for previous in old:
            store.set_credential_enabled(previous.key, False)
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
