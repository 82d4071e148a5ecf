"""The contract of :class:`~patchbay.backends.abstract.InputStore`, on every backend."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import msgspec
import pytest

from patchbay.backends.abstract import Backend, InputStore
from patchbay.backends.records import Credential, DuplicateName, Input
from patchbay.backends.sqlite import DB_FILE, open_sqlite
from tests.deployments import Stores


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


def make_credential(
    item: Input, created_at_ms: int = 1_000, key: str | None = None, sealed: str | None = None
) -> Credential:
    return Credential(
        key=key or f"pk_{uuid.uuid4().hex}",
        input_id=item.id,
        secret_hash=f"sha256:{uuid.uuid4().hex}",
        created_at_ms=created_at_ms,
        enabled=True,
        secret_sealed=sealed,
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


def test_idsync_key_only_and_sealed_secrets(inputs: InputStore) -> None:
    """``idsync_key_only`` is stored with the input (off unless given) and changed for one
    input only; a credential's sealed secret is kept as given, ``None`` included."""
    ios = make_input("ios", type="ios", idsync_key_only=True)
    android = make_input("android", 2_000, type="android")
    assert android.idsync_key_only is False
    sealed = make_credential(ios, sealed="aesgcm1:c2VhbGVk")
    plain = make_credential(android)
    inputs.add_input(ios, sealed)
    inputs.add_input(android, plain)
    assert inputs.get_input("ios") == ios
    assert inputs.find_credential(sealed.key) == (sealed, ios)
    assert inputs.find_credential(plain.key) == (plain, android)
    assert inputs.credentials(ios.id) == [sealed]

    inputs.set_idsync_key_only(ios.id, False)
    inputs.set_idsync_key_only(android.id, True)
    inputs.set_idsync_key_only("no-such-input", True)
    off = msgspec.structs.replace(ios, idsync_key_only=False)
    on = msgspec.structs.replace(android, idsync_key_only=True)
    assert inputs.list_inputs() == [off, on]
    assert inputs.find_credential(plain.key) == (plain, on)
    rotated = make_credential(ios, 3_000, sealed="aesgcm1:b3RoZXI")
    inputs.add_credential(rotated)
    assert inputs.credentials(ios.id) == [sealed, rotated]


@pytest.mark.persists
def test_idsync_key_only_and_sealed_secrets_persist(stores: Stores, backend: Backend) -> None:
    item = make_input("ios", type="ios")
    credential = make_credential(item, sealed="aesgcm1:c2VhbGVk")
    backend.inputs.add_input(item, credential)
    backend.inputs.set_idsync_key_only(item.id, True)
    reopened = stores.reopen(backend).inputs
    changed = msgspec.structs.replace(item, idsync_key_only=True)
    assert reopened.find_credential(credential.key) == (credential, changed)


def test_allowed_origins(inputs: InputStore) -> None:
    """``allowed_origins`` is stored with the input (none unless given: any origin), in
    order, and replaced for one input only, by id, through every read."""
    shop = make_input("shop", type="web", allowed_origins=("https://shop.example", "http://a:81"))
    blog = make_input("blog", 2_000, type="web")
    assert blog.allowed_origins == ()
    shop_key, blog_key = make_credential(shop), make_credential(blog)
    inputs.add_input(shop, shop_key)
    inputs.add_input(blog, blog_key)
    assert inputs.get_input("shop") == shop
    assert inputs.find_credential(shop_key.key) == (shop_key, shop)
    assert inputs.list_inputs() == [shop, blog]

    inputs.set_allowed_origins(shop.id, ())
    inputs.set_allowed_origins(blog.id, ("https://blog.example",))
    inputs.set_allowed_origins("no-such-input", ("https://x.example",))
    opened = msgspec.structs.replace(shop, allowed_origins=())
    closed = msgspec.structs.replace(blog, allowed_origins=("https://blog.example",))
    assert inputs.list_inputs() == [opened, closed]
    assert inputs.find_credential(blog_key.key) == (blog_key, closed)
    assert inputs.get_input(blog.id) == closed


@pytest.mark.persists
def test_allowed_origins_persist(stores: Stores, backend: Backend) -> None:
    item = make_input("shop", type="web")
    credential = make_credential(item)
    backend.inputs.add_input(item, credential)
    backend.inputs.set_allowed_origins(item.id, ("https://shop.example",))
    reopened = stores.reopen(backend).inputs
    changed = msgspec.structs.replace(item, allowed_origins=("https://shop.example",))
    assert reopened.find_credential(credential.key) == (credential, changed)


def test_sqlite_opens_an_input_store_made_before_the_idsync_columns(tmp_path: Path) -> None:
    """A ``patchbay.db`` whose tables predate ``idsync_key_only``, ``secret_sealed`` and
    ``allowed_origins`` gets the columns when opened; its rows read with the feature off, no
    sealed secret and any origin allowed."""
    tmp_path.mkdir(exist_ok=True)
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        db.executescript(
            """
            CREATE TABLE inputs (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                type TEXT NOT NULL, rate_limit REAL NOT NULL, enabled INTEGER NOT NULL,
                created_at_ms INTEGER NOT NULL);
            CREATE TABLE credentials (key TEXT PRIMARY KEY,
                input_id TEXT NOT NULL REFERENCES inputs (id), secret_hash TEXT NOT NULL,
                created_at_ms INTEGER NOT NULL, enabled INTEGER NOT NULL);
            INSERT INTO inputs VALUES ('i1', 'app', 'ios', 5.0, 1, 1000);
            INSERT INTO credentials VALUES ('pk_old', 'i1', 'sha256:00', 1000, 1);
            """
        )
    db.close()
    old = Input(id="i1", name="app", type="ios", rate_limit=5.0, enabled=True, created_at_ms=1000)
    old_key = Credential(
        key="pk_old", input_id="i1", secret_hash="sha256:00", created_at_ms=1000, enabled=True
    )
    for _ in range(2):  # the second opening finds the columns there
        backend = open_sqlite(tmp_path)
        try:
            assert backend.inputs.find_credential("pk_old") == (old_key, old)
            assert old.idsync_key_only is False and old_key.secret_sealed is None
            assert old.allowed_origins == ()
        finally:
            backend.close()
    backend = open_sqlite(tmp_path)
    try:
        backend.inputs.set_idsync_key_only("i1", True)
        new_key = make_credential(old, 2_000, sealed="aesgcm1:c2VhbGVk")
        backend.inputs.add_credential(new_key)
        turned_on = msgspec.structs.replace(old, idsync_key_only=True)
        assert backend.inputs.find_credential(new_key.key) == (new_key, turned_on)
    finally:
        backend.close()
