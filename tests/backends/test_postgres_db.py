"""The PostgreSQL database layer: migrations per component, applied once and refused when
newer than the code; errors named without the password."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from patchbay.backends.postgres import PostgresDatabase, SchemaTooNew, masked
from patchbay.backends.records import StoreUnavailable
from tests import infra
from tests.conftest import free_port


@pytest.fixture
def db() -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(infra.postgres_url(), schema="m_" + uuid.uuid4().hex[:12])
    yield database
    database.close()


SCRIPTS = [
    "CREATE TABLE things (id INTEGER PRIMARY KEY); CREATE INDEX things_id ON things (id)",
    "ALTER TABLE things ADD COLUMN name TEXT",
]


def test_migrations_apply_once_in_order(db: PostgresDatabase) -> None:
    assert db.versions() == {}
    assert db.migrate("things", SCRIPTS[:1]) == 1
    assert db.migrate("things", SCRIPTS) == 1
    assert db.migrate("things", SCRIPTS) == 0
    assert db.versions() == {"things": 2}
    with db.transaction() as conn:
        conn.execute("INSERT INTO things (id, name) VALUES (1, 'a')")
    with db.transaction() as conn:
        assert conn.execute("SELECT name FROM things").fetchall() == [("a",)]


def test_two_processes_starting_at_once_apply_each_script_once(db: PostgresDatabase) -> None:
    other = PostgresDatabase(db.url, schema=db.where.rpartition("schema ")[2].rstrip(")"))
    errors: list[BaseException] = []

    def run(database: PostgresDatabase) -> None:
        try:
            database.migrate("things", SCRIPTS)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in (db, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert errors == []
    assert db.versions() == {"things": 2}


def test_a_newer_schema_is_refused(db: PostgresDatabase) -> None:
    db.migrate("things", SCRIPTS)
    with pytest.raises(SchemaTooNew, match="version 2; this Patchbay knows 1"):
        db.migrate("things", SCRIPTS[:1])


def test_a_failed_transaction_changes_nothing(db: PostgresDatabase) -> None:
    db.migrate("things", SCRIPTS)
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO things (id) VALUES (1)")
        raise RuntimeError("boom")
    with db.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM things").fetchone() == (0,)


def test_an_unreachable_server_is_unavailable_without_the_password() -> None:
    url = f"postgresql://me:hunter2@127.0.0.1:{free_port()}/x?connect_timeout=1"
    with pytest.raises(StoreUnavailable) as caught:
        PostgresDatabase(url)
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


def test_masked() -> None:
    assert masked("postgresql://u:p@h:5/d") == "postgresql://u:***@h:5/d"
    assert masked("postgresql://u@h/d") == "postgresql://u@h/d"
