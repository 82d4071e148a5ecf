"""API clients: creating them with scopes, rotating their secret, checking credentials."""

from __future__ import annotations

import pytest

from patchbay.api_clients import (
    SCOPES,
    ApiClientError,
    authenticate_client,
    check_scopes,
    create_client,
    rotate_secret,
)
from patchbay.backends.memory.api_clients import MemoryApiClientStore
from patchbay.backends.memory.inputs import MemoryInputStore
from patchbay.backends.records import DuplicateName
from patchbay.clock import ManualClock
from patchbay.collect.inputs import create_input


def test_scopes() -> None:
    assert "profiles:read" in SCOPES
    assert check_scopes(["profiles:read", " profiles:read "]) == ("profiles:read",)
    with pytest.raises(
        ApiClientError, match=r"unknown scope 'admin': expected one of profiles:read"
    ):
        check_scopes(["profiles:read", "admin"])
    with pytest.raises(ApiClientError, match="at least one scope"):
        check_scopes([])


def test_create_stores_only_a_hash_of_the_secret() -> None:
    store = MemoryApiClientStore()
    clock = ManualClock()
    made = create_client(store, "crm", ["profiles:read"], clock)
    client = store.get_client("crm")
    assert client is not None and client.id == made.client_id
    assert client.scopes == ("profiles:read",) and client.enabled
    assert made.client_secret not in client.secret_hash
    assert client.secret_hash.startswith("sha256:")
    assert client.created_at_ms == client.secret_set_at_ms == clock.now_ms()
    with pytest.raises(DuplicateName):
        create_client(store, "crm", ["profiles:read"], clock)
    for name in ("", " crm", "x" * 201):
        with pytest.raises(ApiClientError):
            create_client(store, name, ["profiles:read"], clock)


def test_authenticate() -> None:
    store = MemoryApiClientStore()
    clock = ManualClock()
    made = create_client(store, "crm", ["profiles:read"], clock)
    assert authenticate_client(store, made.client_id, made.client_secret) is not None
    assert authenticate_client(store, made.client_id, "wrong") is None
    assert authenticate_client(store, "crm", made.client_secret) is None  # a name is no id
    assert authenticate_client(store, "pc_nobody", made.client_secret) is None
    store.set_client_enabled(made.client_id, False)
    assert authenticate_client(store, made.client_id, made.client_secret) is None


def test_an_inputs_credentials_are_no_api_client() -> None:
    clock = ManualClock()
    ios = create_input(MemoryInputStore(), "ios", "ios", 0, clock)
    assert authenticate_client(MemoryApiClientStore(), ios.key, ios.secret) is None


def test_rotate() -> None:
    store = MemoryApiClientStore()
    clock = ManualClock()
    made = create_client(store, "crm", ["profiles:read"], clock)
    client = store.get_client("crm")
    assert client is not None
    clock.advance(5)
    rotated = rotate_secret(store, client, clock)
    assert rotated.client_id == made.client_id and rotated.client_secret != made.client_secret
    assert authenticate_client(store, made.client_id, made.client_secret) is None
    assert authenticate_client(store, made.client_id, rotated.client_secret) is not None
    after = store.get_client("crm")
    assert after is not None and after.secret_set_at_ms == clock.now_ms()
