"""The contract of :class:`~patchbay.backends.abstract.KitStore`, on every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from patchbay.backends.abstract import Backend, KitStore
from patchbay.backends.records import KitConnection, KitFilters, KitForwarded, KitRecord
from patchbay.backends.sqlite import DB_FILE, open_sqlite
from patchbay.secretbox import PREFIX
from tests.deployments import Stores


@pytest.fixture
def kits(backend: Backend) -> KitStore:
    return backend.kits


def kit(key: str = "Appboy-v4", at: int = 1_000, description: str = "Braze") -> KitRecord:
    name, _, suffix = key.partition("-")
    return KitRecord(
        key=key,
        name=name,
        suffix=suffix or None,
        module_id=28,
        description=description,
        settings=[{"type": "text", "id": "apiKey", "name": "API key", "confidential": True}],
        created_at_ms=at,
        updated_at_ms=at,
    )


def connection(
    input_id: str = "in-1", development: bool = False, at: int = 2_000, esid: int = 7
) -> KitConnection:
    return KitConnection(
        kit="Appboy-v4",
        input_id=input_id,
        development=development,
        event_subscription_id=esid,
        created_at_ms=at,
        updated_at_ms=at,
        settings={"cluster": "EU"},
        secrets={"apiKey": "s3cret-key"},
        filters=KitFilters(event_types=["Navigation"], user_identities=["email"]),
    )


def test_put_get_list_replace(kits: KitStore) -> None:
    assert kits.get_kit("Appboy-v4") is None and kits.list_kits() == []
    assert kits.put_kit(kit()) is False
    assert kits.put_kit(kit("Amplitude")) is False
    assert kits.get_kit("Appboy-v4") == kit()
    assert [k.key for k in kits.list_kits()] == ["Amplitude", "Appboy-v4"]
    assert kits.put_kit(kit(at=5_000, description="new")) is True
    stored = kits.get_kit("Appboy-v4")
    assert stored is not None
    assert (stored.description, stored.created_at_ms, stored.updated_at_ms) == ("new", 1_000, 5_000)


def test_connections_keep_id_and_creation(kits: KitStore) -> None:
    kits.put_kit(kit())
    assert kits.put_kit_connection(connection()) is False
    assert kits.put_kit_connection(connection(development=True, esid=8)) is False
    assert kits.list_kit_connections() == [connection(), connection(development=True, esid=8)]
    changed = msgspec.structs.replace(
        connection(at=9_000, esid=99), settings={"cluster": "01"}, secrets={}
    )
    assert kits.put_kit_connection(changed) is True
    first = kits.list_kit_connections()[0]
    assert first.settings == {"cluster": "01"} and first.secrets == {}
    assert (first.created_at_ms, first.updated_at_ms, first.event_subscription_id) == (
        2_000,
        9_000,
        7,
    )
    assert kits.remove_kit_connection("Appboy-v4", "in-1", True) is True
    assert kits.remove_kit_connection("Appboy-v4", "in-1", True) is False
    assert len(kits.list_kit_connections()) == 1


def test_delete_refused_while_connected(kits: KitStore) -> None:
    kits.put_kit(kit())
    kits.put_kit_connection(connection())
    assert kits.delete_kit("Appboy-v4") is False
    assert kits.get_kit("Appboy-v4") is not None
    kits.remove_kit_connection("Appboy-v4", "in-1", False)
    assert kits.delete_kit("Appboy-v4") is True
    assert kits.delete_kit("Appboy-v4") is False
    assert kits.list_kits() == []


def test_version_changes_with_every_change(kits: KitStore) -> None:
    seen = [kits.version()]

    def changed() -> None:
        assert kits.version() not in seen
        seen.append(kits.version())

    kits.put_kit(kit())
    changed()
    kits.put_kit_connection(connection())
    changed()
    kits.remove_kit_connection("Appboy-v4", "in-1", False)
    changed()
    kits.delete_kit("Appboy-v4")
    changed()
    kits.add_forwarded({"Appboy": 1}, 5)  # stats are not configuration
    assert kits.version() == seen[-1]


def test_forwarded_totals_add_up(kits: KitStore) -> None:
    assert kits.forwarded() == []
    kits.add_forwarded({"Appboy": 2, "module 99": 1}, 1_000)
    kits.add_forwarded({"Appboy": 3}, 3_000)
    kits.add_forwarded({"Appboy": 0}, 2_000)
    kits.add_forwarded({}, 4_000)
    assert kits.forwarded() == [
        KitForwarded("Appboy", 5, 3_000),
        KitForwarded("module 99", 1, 1_000),
    ]


@pytest.mark.persists
def test_survives_reopen(stores: Stores) -> None:
    first = stores.open()
    first.kits.put_kit(kit())
    first.kits.put_kit_connection(connection())
    first.kits.add_forwarded({"Appboy": 4}, 1_000)
    version = first.kits.version()
    again = stores.reopen(first)
    assert again.kits.get_kit("Appboy-v4") == kit()
    assert again.kits.list_kit_connections() == [connection()]
    assert again.kits.forwarded() == [KitForwarded("Appboy", 4, 1_000)]
    assert again.kits.version() == version


def test_sqlite_seals_secrets(tmp_path: Path) -> None:
    backend = open_sqlite(tmp_path)
    backend.kits.put_kit(kit())
    backend.kits.put_kit_connection(connection())
    backend.close()
    raw = sqlite3.connect(tmp_path / DB_FILE)
    doc, secrets = raw.execute("SELECT doc, secrets FROM kit_connections").fetchone()
    raw.close()
    assert "s3cret-key" not in doc and str(secrets).startswith(PREFIX)
    assert "s3cret-key" not in str(secrets)
