"""API clients: server-side credentials for Patchbay's APIs, each with its own scopes.

An input's key and secret ship inside apps (``ios``, ``android``, ``web``): anyone can read
them out of an app, so they only ever let a client *send* data. Reading data back (the
Profile API) needs an API client, made for server use: a client id and a secret, and the
scopes it was given. As for inputs, the secret is a random 256-bit token shown once; only
its SHA-256 hash is stored, and comparisons are constant-time.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import msgspec

from patchbay.backends.abstract import ApiClientStore
from patchbay.backends.records import ApiClient
from patchbay.clock import Clock
from patchbay.collect.inputs import hash_secret, secret_matches
from patchbay.errors import PatchbayError
from patchbay.logs import config_changed

#: Every scope an API client can hold, and what it allows.
SCOPES: dict[str, str] = {
    "profiles:read": "read profiles with the Profile API (GET and resolve)",
}

#: The scope the Profile API asks for.
PROFILES_READ = "profiles:read"


class ApiClientError(PatchbayError, ValueError):
    """A client that cannot be made as asked (unknown scope, bad name)."""


class NewClientCredentials(msgspec.Struct, frozen=True):
    """A client id and secret as shown once to the operator."""

    name: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...]


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` without repeats, in the order given; refuses an unknown one and none."""
    wanted = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    known = ", ".join(SCOPES)
    if not wanted:
        raise ApiClientError(f"give at least one scope: one of {known}")
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise ApiClientError(
            f"unknown scope {', '.join(map(repr, unknown))}: expected one of {known}"
        )
    return wanted


def _new_secret() -> str:
    return "pcs_" + secrets.token_urlsafe(32)


def create_client(
    store: ApiClientStore, name: str, scopes: Iterable[str], clock: Clock
) -> NewClientCredentials:
    """Create an API client; its secret is returned only here. Raises
    :class:`ApiClientError` (bad name or scope) or
    :class:`~patchbay.backends.records.DuplicateName`."""
    if not name or len(name) > 200 or name != name.strip():
        raise ApiClientError("the name must have 1 to 200 characters, no surrounding spaces")
    held = check_scopes(scopes)
    secret = _new_secret()
    now = clock.now_ms()
    client = ApiClient(
        id="pc_" + secrets.token_urlsafe(18),
        name=name,
        scopes=held,
        secret_hash=hash_secret(secret),
        enabled=True,
        created_at_ms=now,
        secret_set_at_ms=now,
    )
    store.add_client(client)
    config_changed("api_client", name, "create", id=client.id, scopes=list(held))
    return NewClientCredentials(name, client.id, secret, held)


def rotate_secret(store: ApiClientStore, client: ApiClient, clock: Clock) -> NewClientCredentials:
    """Give a client a new secret (same id): the old one, and every bearer token issued
    with it, stop working at once."""
    secret = _new_secret()
    store.set_client_secret(client.id, hash_secret(secret), clock.now_ms())
    config_changed("api_client", client.name, "rotate", id=client.id)
    return NewClientCredentials(client.name, client.id, secret, client.scopes)


def authenticate_client(store: ApiClientStore, client_id: str, secret: str) -> ApiClient | None:
    """The enabled client that ``client_id`` and ``secret`` belong to, or ``None`` (an
    input's key and secret are never one)."""
    client = store.get_client(client_id)
    if client is None or client.id != client_id:
        # Spend the same time as a real check, so that timing does not reveal valid ids.
        secret_matches(secret, hash_secret(""))
        return None
    ok = secret_matches(secret, client.secret_hash)
    return client if ok and client.enabled else None
