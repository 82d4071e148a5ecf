"""The embedded batch log: the ``batches`` table of ``patchbay.db``, one partition.

``synchronous=FULL`` makes every commit fsync the write-ahead log, so a batch is on disk
when :meth:`SqliteBatchLog.append` returns, whatever happens to the process or the machine
next. A batch's offset is its row id (``AUTOINCREMENT``: never reused, only growing).
"""

from __future__ import annotations

from collections.abc import Sequence

from patchbay.backends.records import LogPosition, NewBatch, StoredBatch
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
"""

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
        return positions

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
        """The newest batch's position."""
        if partition != 0:
            return None
        row = self._db.conn().execute("SELECT max(seq) FROM batches").fetchone()
        return None if row[0] is None else LogPosition(0, int(row[0]))

    def close(self) -> None:
        """Close every connection of the database."""
        self._db.close()
