"""The contract of :class:`~patchbay.backends.abstract.ModuleStore`, on every backend."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import msgspec
import pytest

from patchbay.backends.abstract import Backend, ModuleStore
from patchbay.backends.postgres import PostgresDatabase
from patchbay.backends.postgres.modules import PostgresModuleStore
from patchbay.backends.records import ModuleRecord, ModuleRegistrationEntry
from patchbay.backends.sqlite import DB_FILE, open_sqlite
from patchbay.partner.targets import HttpTarget, LambdaTarget
from patchbay.secretbox import PREFIX, SecretBox
from tests import infra
from tests.deployments import Stores


@pytest.fixture
def modules(backend: Backend) -> ModuleStore:
    return backend.modules


def http_module(name: str, version: str = "1.0.0", at: int = 1_000) -> ModuleRecord:
    """A module over HTTP with every field set."""
    return ModuleRecord(
        name=name,
        display_name=f"Partner {name} ✓",
        version=version,
        target=HttpTarget(f"https://{name}.example.com/firehose", "s3cret-token"),
        registration=b'{"type":"module_registration_response","version":"%s"}' % version.encode(),
        created_at_ms=at,
        updated_at_ms=at,
        description="Sends events",
        sdk_version="2.9.0",
        permissions={"device_identities": [{"type": "ios_advertising_id"}], "allow_ip": True},
        account_settings=[{"id": "apiKey", "type": "text", "confidential": True}],
        connection_settings=[{"id": "region", "type": "text"}],
        audience_subscription_settings=[{"id": "list", "type": "text"}],
        supported_event_types=["custom_event", "screen_view"],
        supported_runtime_environments=["ios", "android"],
        supported_system_notification_types=["gdpr_consent_state"],
        audience=True,
        dsr=True,
        supported_dsr_types=["erasure"],
    )


def lambda_module(name: str) -> ModuleRecord:
    """A module over Lambda with only the required fields and its transport."""
    return ModuleRecord(
        name=name,
        display_name=name,
        version="0.1",
        target=LambdaTarget("demo", "us-east-1", "http://127.0.0.1:9001"),
        registration=b"{}",
        created_at_ms=5,
        updated_at_ms=5,
    )


def entry(module: ModuleRecord) -> ModuleRegistrationEntry:
    return ModuleRegistrationEntry(
        module.name, module.version, module.updated_at_ms, module.registration
    )


def test_empty_store(modules: ModuleStore) -> None:
    """A new store has no module and no history; deleting a missing module says so."""
    assert modules.list_modules() == []
    assert modules.get_module("nope") is None
    assert modules.module_history("nope") == []
    assert not modules.delete_module("nope")


def test_every_field_round_trips(modules: ModuleStore) -> None:
    """A module comes back exactly as stored, both transports, token included."""
    for module in (http_module("demo"), lambda_module("aws")):
        assert modules.put_module(module) == module
        assert modules.get_module(module.name) == module


def test_list_by_name(modules: ModuleStore) -> None:
    """Modules are listed by name, whatever the order they were stored in."""
    for name in ("charlie", "alpha", "bravo"):
        modules.put_module(http_module(name))
    assert [m.name for m in modules.list_modules()] == ["alpha", "bravo", "charlie"]


def test_put_replaces_keeping_created_at(modules: ModuleStore) -> None:
    """Storing a module of a taken name replaces it, keeping the first ``created_at_ms``
    (in what is returned and stored), and adds to the history, oldest first."""
    first = http_module("demo", "2.1.0", at=1_000)
    second = msgspec.structs.replace(
        http_module("demo", "2.2.0", at=5_000),
        supported_event_types=["custom_event", "error"],
        target=HttpTarget("https://demo.example.com/firehose"),
    )
    modules.put_module(first)
    stored = modules.put_module(second)
    assert stored == msgspec.structs.replace(second, created_at_ms=1_000)
    assert modules.get_module("demo") == stored
    assert modules.list_modules() == [stored]
    assert modules.module_history("demo") == [entry(first), entry(second)]
    assert [(h.version, h.registered_at_ms) for h in modules.module_history("demo")] == [
        ("2.1.0", 1_000),
        ("2.2.0", 5_000),
    ]


def test_delete_removes_the_module_and_its_history(modules: ModuleStore) -> None:
    """Deleting removes one module and its history; a module stored again under the name
    starts a new history."""
    modules.put_module(http_module("a"))
    modules.put_module(http_module("b"))
    assert modules.delete_module("a")
    assert not modules.delete_module("a")
    assert [m.name for m in modules.list_modules()] == ["b"]
    assert modules.get_module("a") is None
    assert modules.module_history("a") == []
    assert modules.module_history("b") == [entry(http_module("b"))]
    again = http_module("a", "3.0", at=9_000)
    assert modules.put_module(again) == again  # created anew: its own created_at_ms
    assert modules.module_history("a") == [entry(again)]


@pytest.mark.persists
def test_modules_persist_across_reopen(stores: Stores, backend: Backend) -> None:
    """Modules and their history are there after reopening."""
    first = http_module("demo", "1", at=1)
    backend.modules.put_module(first)
    stored = backend.modules.put_module(http_module("demo", "2", at=2))
    backend.modules.put_module(lambda_module("aws"))
    modules = stores.reopen(backend).modules
    assert modules.list_modules() == [lambda_module("aws"), stored]
    assert [h.version for h in modules.module_history("demo")] == ["1", "2"]


def test_sqlite_keeps_modules_in_patchbay_db(tmp_path: Path) -> None:
    """The embedded backend keeps modules in ``patchbay.db``, beside the log."""
    backend = open_sqlite(tmp_path)
    try:
        backend.modules.put_module(lambda_module("aws"))
        assert backend.log.end(0) is None
    finally:
        backend.close()
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        assert db.execute("SELECT name FROM modules").fetchall() == [("aws",)]
        assert db.execute("SELECT count(*) FROM batches").fetchone() == (0,)
    db.close()


def test_sqlite_keeps_the_target_in_its_columns(tmp_path: Path) -> None:
    """The target is stored in the ``transport``, ``url``/``token`` (encrypted) and
    ``lambda_*`` columns (data directories written before the target was a type read the
    same); a Lambda row without a region gets the default one."""
    backend = open_sqlite(tmp_path)
    try:
        backend.modules.put_module(http_module("demo"))
        backend.modules.put_module(lambda_module("aws"))
    finally:
        backend.close()
    columns = "transport, url, lambda_function, lambda_region, lambda_endpoint_url"
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        rows = db.execute(f"SELECT name, {columns} FROM modules ORDER BY name").fetchall()
        assert rows == [
            ("aws", "lambda", None, "demo", "us-east-1", "http://127.0.0.1:9001"),
            ("demo", "http", "https://demo.example.com/firehose", None, None, None),
        ]
        tokens = db.execute("SELECT token FROM modules ORDER BY name").fetchall()
        assert tokens[0] == (None,)
        assert tokens[1][0].startswith("pbenc1:")  # encrypted (tests/backends/test_sealed.py)
        db.execute("UPDATE modules SET lambda_region = NULL WHERE name = 'aws'")
    db.close()
    backend = open_sqlite(tmp_path)
    try:
        assert backend.modules.get_module("aws") == lambda_module("aws")
        assert backend.modules.get_module("demo") == http_module("demo")
    finally:
        backend.close()


def test_postgres_keeps_the_token_sealed(tmp_path: Path) -> None:
    """The PostgreSQL store keeps the target in the same columns, the token sealed with the
    key file: no column of the row holds it in plain text."""
    db = PostgresDatabase(infra.postgres_url(), schema="m_" + uuid.uuid4().hex[:12])
    try:
        store = PostgresModuleStore(db, SecretBox(tmp_path / "secrets.key"))
        store.put_module(http_module("demo"))
        with db.transaction() as conn:
            row = conn.execute("SELECT transport, url, token, m::text FROM modules m").fetchone()
        assert row is not None
        transport, url, token, whole = row
        assert (transport, url) == ("http", "https://demo.example.com/firehose")
        assert str(token).startswith(PREFIX)
        assert "s3cret-token" not in whole
        assert store.get_module("demo") == http_module("demo")
    finally:
        db.close()
