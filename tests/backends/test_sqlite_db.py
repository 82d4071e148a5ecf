""":class:`~patchbay.backends.sqlite.db.SqliteDatabase`'s checkpoints on a thread of their own
(``checkpoint_every_s``, as ``segment.db`` has them), and :func:`rows_returning`."""

from __future__ import annotations

import time
from pathlib import Path

from patchbay.backends.sqlite.db import SqliteDatabase, rows_returning

PAGE = 4096


def _write(db: SqliteDatabase, rows: int) -> None:
    for start in range(0, rows, 100):
        with db.transaction() as conn:
            conn.executemany(
                "INSERT INTO t (v) VALUES (?)", [(b"x" * PAGE,) for _ in range(start, start + 100)]
            )


def _wal_bytes(path: Path) -> int:
    return path.with_name(path.name + "-wal").stat().st_size


def test_commits_leave_the_checkpoints_to_the_thread(tmp_path: Path) -> None:
    """With the thread far off, no commit checkpoints: the log grows past the 1,000 pages
    at which SQLite's automatic checkpoint would have copied it into the file."""
    db = SqliteDatabase(tmp_path / "t.db", checkpoint_every_s=3600)
    db.create("CREATE TABLE IF NOT EXISTS t (v BLOB)")
    _write(db, 1500)
    assert _wal_bytes(tmp_path / "t.db") > 1500 * PAGE
    assert db.checkpointed_frames == 0
    db.close()
    # what was written is all there when the file is opened again
    again = SqliteDatabase(tmp_path / "t.db")
    assert again.conn().execute("SELECT count(*) FROM t").fetchone() == (1500,)
    again.close()


def test_the_thread_checkpoints_what_was_written(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db", checkpoint_every_s=0.02)
    db.create("CREATE TABLE IF NOT EXISTS t (v BLOB)")
    _write(db, 300)
    deadline = time.monotonic() + 30
    while db.checkpointed_frames < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert db.checkpointed_frames >= 300  # every page written went into the file
    thread = db._checkpointer
    assert thread is not None and thread.is_alive()
    db.close()
    assert not thread.is_alive()  # closing stops it


def test_no_thread_until_this_process_writes(tmp_path: Path) -> None:
    """A process that only reads the file (the server next to the segment process) runs
    no checkpoint thread of its own."""
    writer = SqliteDatabase(tmp_path / "t.db")
    writer.create("CREATE TABLE IF NOT EXISTS t (v BLOB)")
    writer.close()
    reader = SqliteDatabase(tmp_path / "t.db", checkpoint_every_s=0.01)
    assert reader.conn().execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert reader._checkpointer is None
    reader.close()


def test_rows_returning_gives_back_what_each_statement_returned(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db")
    db.create("CREATE TABLE IF NOT EXISTS m (a INTEGER, b INTEGER, PRIMARY KEY (a, b))")
    rows = [(i, i % 3) for i in range(200)]  # more than one statement's 64 rows
    with db.transaction() as conn:
        first = rows_returning(conn, "INSERT OR IGNORE INTO m (a, b)", rows, "RETURNING b")
        again = rows_returning(
            conn, "INSERT OR IGNORE INTO m (a, b)", [*rows[:10], (500, 1)], "RETURNING b"
        )
    assert sorted(r[0] for r in first) == sorted(b for _, b in rows)
    assert again == [(1,)]  # only the row it inserted
    db.close()
