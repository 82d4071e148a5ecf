"""The contract of :class:`~patchbay.backends.abstract.ApiClientStore`, on every backend."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from patchbay.backends.abstract import ApiClientStore, Backend
from patchbay.backends.records import ApiClient, DuplicateName
from tests.deployments import Stores


@pytest.fixture
def clients(backend: Backend) -> ApiClientStore:
    return backend.api_clients


def make_client(name: str, created_at_ms: int = 1_000, **changes: object) -> ApiClient:
    client = ApiClient(
        id=f"pc_{uuid.uuid4().hex}",
        name=name,
        scopes=("profiles:read",),
        secret_hash=f"sha256:{uuid.uuid4().hex}",
        enabled=True,
        created_at_ms=created_at_ms,
        secret_set_at_ms=created_at_ms,
    )
    return msgspec.structs.replace(client, **changes)


def test_empty_store(clients: ApiClientStore) -> None:
    assert clients.list_clients() == []
    assert clients.get_client("anything") is None
    assert clients.remove_client("pc_anything") is False


def test_add_get_list(clients: ApiClientStore) -> None:
    """Clients are found by name or id, listed oldest first (by name on a tie), and come
    back exactly as stored, scopes in order."""
    crm = make_client("crm", 3_000, scopes=("profiles:read", "other:scope"))
    bi = make_client("bi", 1_000, enabled=False)
    tied = make_client("a-tied", 3_000)
    for client in (crm, bi, tied):
        clients.add_client(client)
    assert clients.get_client("crm") == crm
    assert clients.get_client(crm.id) == crm
    assert clients.get_client("bi") == bi
    assert clients.get_client("nope") is None
    assert clients.list_clients() == [bi, tied, crm]


def test_duplicate_name_or_id(clients: ApiClientStore) -> None:
    first = make_client("crm")
    clients.add_client(first)
    with pytest.raises(DuplicateName):
        clients.add_client(make_client("crm", 2_000))
    with pytest.raises(DuplicateName):
        clients.add_client(make_client("other", id=first.id))
    assert clients.list_clients() == [first]


def test_enable_disable(clients: ApiClientStore) -> None:
    client = make_client("crm")
    clients.add_client(client)
    clients.set_client_enabled(client.id, False)
    assert clients.get_client("crm") == msgspec.structs.replace(client, enabled=False)
    clients.set_client_enabled(client.id, True)
    assert clients.get_client("crm") == client
    clients.set_client_enabled("pc_unknown", False)  # nothing to change, no error
    assert clients.list_clients() == [client]


def test_set_secret(clients: ApiClientStore) -> None:
    client = make_client("crm")
    other = make_client("other")
    clients.add_client(client)
    clients.add_client(other)
    clients.set_client_secret(client.id, "sha256:new", 5_000)
    assert clients.get_client(client.id) == msgspec.structs.replace(
        client, secret_hash="sha256:new", secret_set_at_ms=5_000
    )
    assert clients.get_client(other.id) == other


def test_remove(clients: ApiClientStore) -> None:
    client = make_client("crm")
    clients.add_client(client)
    assert clients.remove_client(client.id) is True
    assert clients.get_client("crm") is None and clients.get_client(client.id) is None
    assert clients.remove_client(client.id) is False
    clients.add_client(make_client("crm", 2_000))  # the name is free again
    assert [c.name for c in clients.list_clients()] == ["crm"]


@pytest.mark.persists
def test_clients_survive_a_reopen(stores: Stores) -> None:
    backend = stores.open()
    client = make_client("crm")
    backend.api_clients.add_client(client)
    backend.api_clients.set_client_enabled(client.id, False)
    again = stores.reopen(backend)
    assert again.api_clients.list_clients() == [msgspec.structs.replace(client, enabled=False)]
