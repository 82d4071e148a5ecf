"""The de-duplication index on PostgreSQL: the ``dedup`` table (one row per input and
``source_request_id``) and ``dedup_recorded`` (how far each partition of the log has its
keys recorded).

It is on the Events API's hot path (a look-up and a record per group commit), so each call
is one set-based statement whatever the number of keys: :meth:`PostgresDedupIndex.seen`
joins the table with the keys passed as two arrays (``unnest``), and
:meth:`PostgresDedupIndex.record` upserts every key and moves the progress in one
statement (a data-modifying ``WITH``), one transaction.

Concurrency: several server processes record at once. Keys are upserted in sorted order
and the progress rows after them, in partition order, so two transactions recording
overlapping keys lock them in the same order and wait for each other instead of
deadlocking; a key recorded twice keeps the last recording (as the embedded index does);
the progress only moves forward (``GREATEST``). Retention deletes the oldest keys with
``FOR UPDATE SKIP LOCKED``: it never waits for, nor holds up, a key being recorded.

What the index cannot serialise is the gap between ``seen`` and ``record`` in two
processes: the same ``source_request_id`` received by two servers within that gap (the
duration of one append) is stored twice. A retry sent after the first request was answered
is always found.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from patchbay.backends.postgres.db import PostgresDatabase
from patchbay.backends.records import Checkpoint, DedupKey, LogPosition

MIGRATIONS = [
    """
    CREATE TABLE dedup (
        input_id TEXT NOT NULL,
        source_request_id TEXT NOT NULL,
        received_at_ms BIGINT NOT NULL,
        part INTEGER NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (input_id, source_request_id)
    );
    CREATE INDEX dedup_age ON dedup (received_at_ms);
    CREATE TABLE dedup_recorded (
        part INTEGER PRIMARY KEY,
        seq BIGINT NOT NULL
    );
    """
]

_SEEN = (
    "SELECT input_id, source_request_id FROM dedup"
    " JOIN unnest(%s::text[], %s::text[]) AS k (input_id, source_request_id)"
    " USING (input_id, source_request_id) WHERE received_at_ms >= %s"
)
_RECORD = (
    "WITH keys AS ("
    " INSERT INTO dedup (input_id, source_request_id, received_at_ms, part, seq)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::integer[], %s::bigint[])"
    " ON CONFLICT (input_id, source_request_id) DO UPDATE SET"
    " received_at_ms = EXCLUDED.received_at_ms, part = EXCLUDED.part, seq = EXCLUDED.seq"
    " RETURNING 1)"
    " INSERT INTO dedup_recorded (part, seq)"
    # reading ``keys`` first upserts every key before the progress row is locked
    " SELECT * FROM unnest(%s::integer[], %s::bigint[]) WHERE (SELECT count(*) FROM keys) >= 0"
    " ON CONFLICT (part) DO UPDATE SET seq = GREATEST(dedup_recorded.seq, EXCLUDED.seq)"
)
_FORGET = (
    "DELETE FROM dedup WHERE (input_id, source_request_id) IN ("
    " SELECT input_id, source_request_id FROM dedup WHERE received_at_ms < %s"
    " ORDER BY received_at_ms LIMIT %s FOR UPDATE SKIP LOCKED)"
)


class PostgresDedupIndex:
    """Recent (input, ``source_request_id``) keys in PostgreSQL."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        db.migrate("dedup", MIGRATIONS)

    def seen(self, keys: Collection[DedupKey], since_ms: int) -> set[DedupKey]:
        """The keys recorded since ``since_ms``, in one query."""
        if not keys:
            return set()
        inputs, request_ids = _columns(set(keys))
        with self._db.transaction() as conn:
            rows = conn.execute(_SEEN, (inputs, request_ids, since_ms)).fetchall()
        return {(str(i), str(r)) for i, r in rows}

    def record(
        self, entries: Sequence[tuple[DedupKey, int, LogPosition]], upto: Checkpoint
    ) -> None:
        """Remember the keys (a later entry replaces an earlier one of the same key) and
        how far the log is recorded, in one statement."""
        if not entries and not upto:
            return
        latest = {key: (at, position) for key, at, position in entries}
        keys = sorted(latest)
        inputs, request_ids = _columns(keys)
        parts = sorted(upto)
        self._db.write(
            _RECORD,
            (
                inputs,
                request_ids,
                [latest[k][0] for k in keys],
                [latest[k][1].partition for k in keys],
                [latest[k][1].offset for k in keys],
                parts,
                [upto[p].offset for p in parts],
            ),
        )

    def recorded(self) -> Checkpoint:
        """How far the log's keys are recorded."""
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT part, seq FROM dedup_recorded").fetchall()
        return {int(p): LogPosition(int(p), int(o)) for p, o in rows}

    def forget_before(self, before_ms: int, limit: int | None = None) -> int:
        """Drop old keys, the oldest first (a limit keeps each transaction short)."""
        return self._db.write(_FORGET, (before_ms, limit))

    def close(self) -> None:
        """Nothing to release: the database is the backend's (closing twice is harmless)."""


def _columns(keys: Collection[DedupKey]) -> tuple[list[str], list[str]]:
    """The inputs and the request ids of ``keys``, as two arrays in the same order."""
    return [k[0] for k in keys], [k[1] for k in keys]
