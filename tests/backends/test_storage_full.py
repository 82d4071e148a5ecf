"""A full store, for real: SQLite's own ``SQLITE_FULL`` (``PRAGMA max_page_count`` caps the
databases, :func:`~tests.backends.helpers.fill`) becomes :class:`~patchbay.errors.StorageFull`
at the edge of the embedded backend, writes nothing, and the store works again once there is
room; the group-commit appender fails its waiting requests and goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchbay.backends.abstract import Backend
from patchbay.backends.sqlite import open_sqlite
from patchbay.backends.sqlite.db import SqliteDatabase
from patchbay.collect.appender import GroupCommitAppender, append_new
from patchbay.errors import StorageFull
from tests.backends.helpers import ALL, batch, fill

BIG = b"x" * 200_000  # more than a capped database has room for


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Backend]:
    backend = open_sqlite(tmp_path / "data")
    yield backend
    backend.close()


def test_sqlite_full_is_storage_full_and_rolled_back(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db")
    db.create("CREATE TABLE IF NOT EXISTS t (v BLOB)")
    fill(db)
    with (
        pytest.raises(StorageFull, match="database or disk is full") as caught,
        db.transaction() as conn,
    ):
        conn.execute("INSERT INTO t VALUES (?)", (b"small",))
        conn.execute("INSERT INTO t VALUES (?)", (BIG,))
    assert str(tmp_path / "t.db") in str(caught.value)
    with pytest.raises(StorageFull):
        db.write("INSERT INTO t VALUES (?)", (BIG,))
    conn = db.conn()
    assert not conn.in_transaction  # rolled back, and no transaction left open
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    db.write("INSERT INTO t VALUES (?)", (b"fits",))  # what fits still goes in
    fill(db, full=False)
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (?)", (BIG,))
    assert db.conn().execute("SELECT count(*) FROM t").fetchone() == (2,)
    db.close()


def test_a_full_log_appends_nothing(sqlite: Backend) -> None:
    sqlite.log.append([batch("before")])
    fill(sqlite)
    with pytest.raises(StorageFull):
        sqlite.log.append([batch(str(i), body=BIG[:5000]) for i in range(100)])
    assert [s.body for s in sqlite.log.read(0, None, ALL)] == [b'{"tag":"before"}']
    fill(sqlite, full=False)
    assert len(sqlite.log.append([batch("after", body=BIG)])) == 1


def test_the_appender_fails_every_waiting_request_then_goes_on(sqlite: Backend) -> None:
    appender = GroupCommitAppender(sqlite.log, sqlite.dedup)

    async def appends(tag: str) -> list[object]:
        calls = [
            appender.append([batch(f"{tag}{i}", srid=f"{tag}{i}", body=BIG[:20_000])], 0)
            for i in range(8)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        fill(sqlite)
        refused = asyncio.run(appends("a"))
        assert all(isinstance(r, StorageFull) for r in refused)
        assert sqlite.log.read(0, None, ALL) == []
        fill(sqlite, full=False)
        accepted = asyncio.run(appends("a"))  # the same requests, retried: none is a duplicate
        assert [getattr(r, "stored", None) for r in accepted] == [1] * 8
    finally:
        appender.close()
    assert len(sqlite.log.read(0, None, ALL)) == 8


def test_keys_the_index_had_no_room_for_are_recorded_before_the_next_append(
    sqlite: Backend,
) -> None:
    """The log took the batches, then the index had no room for their keys: the requests
    are answered (their batches are stored), and a retry is still known as a duplicate."""
    news = [batch(str(i), srid=f"r{i}") for i in range(300)]
    assert append_new(sqlite.log, sqlite.dedup, news[:1], 0).unrecorded is False
    appender = GroupCommitAppender(sqlite.log, sqlite.dedup)
    try:
        fill(sqlite.dedup)  # only the index's connections are capped
        stored = asyncio.run(appender.append(news[1:], 0))
        assert stored.stored == 299
        assert sqlite.dedup.seen({("input-1", "r1")}, 0) == set()
        fill(sqlite.dedup, full=False)
        retried = asyncio.run(appender.append(news, 0))
    finally:
        appender.close()
    assert retried.duplicates == 300
    assert len(sqlite.log.read(0, None, ALL)) == 300
