"""The embedded batch log: the ``batches`` table of ``patchbay.db``, one partition.

``synchronous=FULL`` makes every commit fsync the write-ahead log, so a batch is on disk
when :meth:`SqliteBatchLog.append` returns, whatever happens to the process or the machine
next. A batch's offset is its row id (``AUTOINCREMENT``: never reused, only growing).
``log_extent`` keeps how many batches the log retains and their size, updated in the
transaction of each append and each removal (retention), so neither needs a scan.
"""

from __future__ import annotations

from collections.abc import Sequence

from patchbay.backends.records import LogEntry, LogExtent, LogPosition, NewBatch, StoredBatch
from patchbay.backends.sqlite.db import SqliteDatabase, insert_rows

#: The file of the log, the de-duplication index, the inputs and the modules.
DB_FILE = "patchbay.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL,
    input_id TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    channel TEXT NOT NULL,
    ip TEXT,
    historical INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    source_request_id TEXT
);
CREATE TABLE IF NOT EXISTS log_extent (
    part INTEGER PRIMARY KEY,
    batches INTEGER NOT NULL,
    size INTEGER NOT NULL,
    removed INTEGER
);
"""
#: A log written before its extent was kept: counted once, at open (one scan of the table).
_COUNT_EXTENT = (
    "INSERT OR IGNORE INTO log_extent"
    " SELECT 0, count(*), coalesce(sum(length(body)), 0), NULL FROM batches"
)

_BATCH_COLUMNS = (
    "seq, batch_id, input_id, received_at_ms, channel, body, ip, historical, source_request_id"
)

_INSERT_BATCHES = (
    "INSERT INTO batches (batch_id, input_id, received_at_ms, channel, ip, historical, body,"
    " source_request_id)"
)


class SqliteBatchLog:
    """The batch log in one SQLite database (one partition, numbered 0)."""

    partitions = 1

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.create(SCHEMA)
        columns = {row[1] for row in db.conn().execute("PRAGMA table_info(batches)")}
        if "source_request_id" not in columns:  # a log written before the column existed
            db.write("ALTER TABLE batches ADD COLUMN source_request_id TEXT")
        if db.conn().execute("SELECT 1 FROM log_extent").fetchone() is None:
            db.write(_COUNT_EXTENT)

    def append(self, batches: Sequence[NewBatch]) -> list[LogPosition]:
        """Append ``batches`` in one transaction; see :class:`~patchbay.backends.abstract.BatchLog`.

        Rows go in by multi-row INSERTs, a few statements per request rather than one per
        batch: under load each statement hands the GIL over and waits to get it back.
        """
        rows = [
            (
                b.batch_id,
                b.input_id,
                b.received_at_ms,
                b.channel,
                b.ip,
                int(b.historical),
                b.body,
                b.source_request_id,
            )
            for b in batches
        ]
        positions: list[LogPosition] = []
        with self._db.transaction() as conn:
            for size, last in insert_rows(conn, _INSERT_BATCHES, rows):
                # AUTOINCREMENT, one writer: the rows took consecutive offsets, in order.
                positions.extend(LogPosition(0, o) for o in range(last - size + 1, last + 1))
            conn.execute(
                "UPDATE log_extent SET batches = batches + ?, size = size + ? WHERE part = 0",
                (len(rows), sum(len(b.body) for b in batches)),
            )
        return positions

    def unsettled(self) -> int:
        """Nothing: an append stores everything or nothing before it returns or raises."""
        return 0

    def read(self, partition: int, after: LogPosition | None, limit: int) -> list[StoredBatch]:
        """Batches after ``after``, oldest first."""
        if partition != 0:
            return []
        rows = self._db.conn().execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
            (0 if after is None else after.offset, limit),
        )
        return [
            StoredBatch(
                offset=r[0],
                batch_id=r[1],
                input_id=r[2],
                received_at_ms=r[3],
                channel=r[4],
                body=bytes(r[5]),
                ip=r[6],
                historical=bool(r[7]),
                source_request_id=r[8],
            )
            for r in rows
        ]

    def end(self, partition: int) -> LogPosition | None:
        """The newest batch's position (the newest removed when retention removed all)."""
        if partition != 0:
            return None
        row = (
            self._db.conn()
            .execute(
                "SELECT coalesce((SELECT max(seq) FROM batches),"
                " (SELECT removed FROM log_extent WHERE part = 0))"
            )
            .fetchone()
        )
        return None if row[0] is None else LogPosition(0, int(row[0]))

    def oldest(self, partition: int, limit: int) -> list[LogEntry]:
        """The oldest batches' positions, times and sizes (the bodies are not read)."""
        if partition != 0:
            return []
        rows = self._db.conn().execute(
            "SELECT seq, received_at_ms, length(body) FROM batches ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [LogEntry(LogPosition(0, r[0]), r[1], r[2]) for r in rows]

    def remove(self, partition: int, upto: LogPosition) -> int:
        """Delete the batches at or before ``upto`` and update the extent, in one
        transaction."""
        if partition != 0:
            return 0
        with self._db.transaction() as conn:
            count, size, newest = conn.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0), max(seq) FROM batches"
                " WHERE seq <= ?",
                (upto.offset,),
            ).fetchone()
            if not count:
                return 0
            conn.execute("DELETE FROM batches WHERE seq <= ?", (upto.offset,))
            conn.execute(
                "UPDATE log_extent SET batches = batches - ?, size = size - ?,"
                " removed = max(coalesce(removed, 0), ?) WHERE part = 0",
                (count, size, newest),
            )
        return int(count)

    def extent(self, partition: int) -> LogExtent:
        """The counts kept in ``log_extent``."""
        row = (
            self._db.conn()
            .execute("SELECT batches, size, removed FROM log_extent WHERE part = ?", (partition,))
            .fetchone()
        )
        if row is None:
            return LogExtent(0, 0)
        return LogExtent(row[0], row[1], None if row[2] is None else LogPosition(0, row[2]))

    def close(self) -> None:
        """Close every connection of the database."""
        self._db.close()
