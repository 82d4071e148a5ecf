"""The embedded de-duplication index: the ``dedup`` table of ``patchbay.db``.

It is written on a connection of its own with ``synchronous=NORMAL``: recording keys costs
no fsync of its own, and the next append's fsync makes them durable too (one write-ahead
log). ``dedup_recorded`` keeps how far the log's keys are recorded, in the same transaction
as the keys, so whatever a crash or a power cut left unrecorded is recorded again from the
log at start (:func:`patchbay.collect.appender.recover_dedup`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from patchbay.backends.records import Checkpoint, DedupKey, LogPosition
from patchbay.backends.sqlite.db import SqliteDatabase, insert_rows

SCHEMA = """
CREATE TABLE IF NOT EXISTS dedup (
    input_id TEXT NOT NULL,
    source_request_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (input_id, source_request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_age ON dedup (received_at_ms);
CREATE TABLE IF NOT EXISTS dedup_recorded (
    part INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL
);
"""

#: Keys per look-up (a fixed count: one SQL text, one prepared statement).
_CHUNK = 100
_RECENT_KEYS = (
    "SELECT source_request_id FROM dedup WHERE input_id = ? AND received_at_ms >= ?"
    f" AND source_request_id IN ({', '.join('?' * _CHUNK)})"
)


class SqliteDedupIndex:
    """Recent (input, ``source_request_id``) keys in SQLite."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.create(SCHEMA)
        # an index written before its progress was kept: recorded up to its newest key
        db.write(
            "INSERT INTO dedup_recorded SELECT 0, max(seq) FROM dedup"
            " WHERE NOT EXISTS (SELECT 1 FROM dedup_recorded) HAVING count(*) > 0"
        )

    def seen(self, keys: Collection[DedupKey], since_ms: int) -> set[DedupKey]:
        """The keys recorded since ``since_ms``: one query per input and 100 keys rather
        than one per batch (under load every query hands the GIL over and waits)."""
        by_input: dict[str, list[str]] = {}
        for input_id, request_id in keys:
            by_input.setdefault(input_id, []).append(request_id)
        found: set[DedupKey] = set()
        conn = self._db.conn()
        for input_id, ids in by_input.items():
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                chunk += chunk[-1:] * (_CHUNK - len(chunk))  # same SQL, cached statement
                rows = conn.execute(_RECENT_KEYS, (input_id, since_ms, *chunk))
                found.update((input_id, str(row[0])) for row in rows)
        return found

    def record(
        self, entries: Sequence[tuple[DedupKey, int, LogPosition]], upto: Checkpoint
    ) -> None:
        """Remember the keys (a newer entry replaces an older one of the same key) and how
        far the log is recorded, in one transaction."""
        rows = [(k[0], k[1], p.offset, at) for k, at, p in entries]
        with self._db.transaction() as conn:
            insert_rows(conn, "INSERT OR REPLACE INTO dedup", rows)
            conn.executemany(
                "INSERT INTO dedup_recorded VALUES (?, ?) ON CONFLICT (part)"
                " DO UPDATE SET seq = max(seq, excluded.seq)",
                [(p, pos.offset) for p, pos in upto.items()],
            )

    def recorded(self) -> Checkpoint:
        """How far the log's keys are recorded."""
        rows = self._db.conn().execute("SELECT part, seq FROM dedup_recorded")
        return {int(p): LogPosition(int(p), int(o)) for p, o in rows}

    def forget_before(self, before_ms: int, limit: int | None = None) -> int:
        """Drop old keys, the oldest first (a limit keeps each transaction short)."""
        return self._db.write(
            "DELETE FROM dedup WHERE (input_id, source_request_id) IN (SELECT input_id,"
            " source_request_id FROM dedup WHERE received_at_ms < ?"
            " ORDER BY received_at_ms LIMIT ?)",
            (before_ms, -1 if limit is None else limit),
        )

    def close(self) -> None:
        """Close every connection of the database."""
        self._db.close()
