"""The contract of :class:`~patchbay.backends.abstract.InputStore`, on every backend."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from patchbay.backends.abstract import Backend, InputStore
from patchbay.backends.records import Credential, DuplicateName, Input
from tests.backends.conftest import Stores


@pytest.fixture
def inputs(backend: Backend) -> InputStore:
    return backend.inputs


def make_input(name: str, created_at_ms: int = 1_000, **changes: object) -> Input:
    item = Input(
        id=str(uuid.uuid4()),
        name=name,
        type="server",
        rate_limit=270.0,
        enabled=True,
        created_at_ms=created_at_ms,
    )
    return msgspec.structs.replace(item, **changes)


def make_credential(item: Input, created_at_ms: int = 1_000, key: str | None = None) -> Credential:
    return Credential(
        key=key or f"pk_{uuid.uuid4().hex}",
        input_id=item.id,
        secret_hash=f"sha256:{uuid.uuid4().hex}",
        created_at_ms=created_at_ms,
        enabled=True,
    )


def test_empty_store(inputs: InputStore) -> None:
    """A new store has no input and no credential."""
    assert inputs.list_inputs() == []
    assert inputs.get_input("anything") is None
    assert inputs.credentials("anything") == []
    assert inputs.find_credential("pk_anything") is None


def test_inputs_add_get_list(inputs: InputStore) -> None:
    """Inputs are found by name or id, and listed oldest first (by name on a tie)."""
    web = make_input("web", 3_000, type="web", rate_limit=0.0)
    ios = make_input("ios", 1_000, type="ios", rate_limit=12.5, enabled=False)
    feed = make_input("a-feed", 2_000, type="feed")
    tied = make_input("a-tied", 3_000)
    for item in (web, ios, feed, tied):
        inputs.add_input(item, make_credential(item))
    assert inputs.get_input("web") == web
    assert inputs.get_input(web.id) == web
    assert inputs.get_input("ios") == ios
    assert inputs.get_input("nope") is None
    assert inputs.list_inputs() == [ios, feed, tied, web]


def test_duplicate_input_name(inputs: InputStore) -> None:
    """A second input with a taken name raises ``DuplicateName`` and stores nothing of it,
    not even its credential."""
    first = make_input("server")
    inputs.add_input(first, make_credential(first))
    second = make_input("server", 2_000)
    credential = make_credential(second)
    with pytest.raises(DuplicateName):
        inputs.add_input(second, credential)
    assert inputs.list_inputs() == [first]
    assert inputs.get_input(second.id) is None
    assert inputs.find_credential(credential.key) is None
    assert inputs.credentials(second.id) == []


def test_duplicate_credential_key(inputs: InputStore) -> None:
    """A key can belong to one credential only: adding it again raises ``DuplicateName``
    (with a new input, which is then not stored either)."""
    item = make_input("server")
    first = make_credential(item)
    inputs.add_input(item, first)
    with pytest.raises(DuplicateName):
        inputs.add_credential(make_credential(item, 2_000, key=first.key))
    other = make_input("other")
    with pytest.raises(DuplicateName):
        inputs.add_input(other, make_credential(other, key=first.key))
    assert inputs.list_inputs() == [item]
    assert inputs.credentials(item.id) == [first]


def test_input_enable_disable_and_rate_limit(inputs: InputStore) -> None:
    """Enabling, disabling and the rate limit change one input only; unknown ids are
    ignored."""
    item = make_input("server")
    other = make_input("other", 2_000)
    inputs.add_input(item, make_credential(item))
    inputs.add_input(other, make_credential(other))
    inputs.set_input_enabled(item.id, False)
    assert inputs.get_input("server") == msgspec.structs.replace(item, enabled=False)
    inputs.set_rate_limit(item.id, 0.5)
    assert inputs.get_input("server") == msgspec.structs.replace(
        item, enabled=False, rate_limit=0.5
    )
    inputs.set_input_enabled(item.id, True)
    inputs.set_rate_limit(item.id, 0)
    assert inputs.get_input("server") == msgspec.structs.replace(item, rate_limit=0.0)
    assert inputs.get_input("other") == other
    inputs.set_input_enabled("no-such-input", False)
    inputs.set_rate_limit("no-such-input", 1)
    assert inputs.list_inputs() == [msgspec.structs.replace(item, rate_limit=0.0), other]


def test_credentials_add_find_enable_disable(inputs: InputStore) -> None:
    """Credentials are listed oldest first (in the order added on a tie), found by key with
    their input's current state, and enabled or disabled one by one."""
    item = make_input("server")
    other = make_input("other", 2_000)
    first = make_credential(item, 1_000)
    inputs.add_input(item, first)
    other_key = make_credential(other)
    inputs.add_input(other, other_key)
    second = make_credential(item, 2_000)
    third = make_credential(item, 2_000)  # same time: still listed in the order added
    inputs.add_credential(second)
    inputs.add_credential(third)
    assert inputs.credentials(item.id) == [first, second, third]
    assert inputs.credentials("no-such-input") == []

    assert inputs.find_credential(second.key) == (second, item)
    assert inputs.find_credential("pk_unknown") is None

    inputs.set_credential_enabled(first.key, False)
    disabled = msgspec.structs.replace(first, enabled=False)
    assert inputs.find_credential(first.key) == (disabled, item)
    assert inputs.credentials(item.id) == [disabled, second, third]
    inputs.set_credential_enabled("pk_unknown", False)

    # The credential carries its input's current state.
    inputs.set_input_enabled(item.id, False)
    found = inputs.find_credential(second.key)
    assert found is not None
    assert found[1].enabled is False
    assert inputs.credentials(other.id) == [other_key]


@pytest.mark.persists
def test_inputs_and_credentials_persist_across_reopen(stores: Stores, backend: Backend) -> None:
    """Inputs, credentials and their changes are there after reopening."""
    item = make_input("server")
    other = make_input("other", 2_000)
    first = make_credential(item, 1_000)
    second = make_credential(item, 2_000)
    backend.inputs.add_input(item, first)
    backend.inputs.add_input(other, make_credential(other))
    backend.inputs.add_credential(second)
    backend.inputs.set_input_enabled(item.id, False)
    backend.inputs.set_rate_limit(item.id, 0.5)
    backend.inputs.set_credential_enabled(second.key, False)

    reopened = stores.reopen(backend).inputs
    changed = msgspec.structs.replace(item, enabled=False, rate_limit=0.5)
    assert reopened.list_inputs() == [changed, other]
    assert reopened.find_credential(first.key) == (first, changed)
    assert reopened.credentials(item.id) == [
        first,
        msgspec.structs.replace(second, enabled=False),
    ]
