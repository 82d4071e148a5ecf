"""The checkpoints of the stages after resolve on PostgreSQL: the ``stage_positions`` table,
one row per stage and partition.

Concurrency: a commit is one transaction (``INSERT ... ON CONFLICT DO UPDATE`` over the
partitions given, in partition order, so two commits of one stage lock its rows in the
same order and never deadlock). Processors of one stage that own different partitions
commit independently. A commit given the positions it started from (``since``) is fenced
(:mod:`.fencing`): it applies only if the stage's rows of those partitions did not move,
so a processor that lost a partition to another cannot move it back. Without ``since``,
two commits of the same partition are serialised on its row and the last one wins,
whether it moves forward or back (a stage may rewind to reprocess).
"""

from __future__ import annotations

from patchbay.backends.postgres.db import PostgresDatabase
from patchbay.backends.postgres.fencing import fence
from patchbay.backends.records import Checkpoint, LogPosition, Since

MIGRATIONS = [
    """
    CREATE TABLE stage_positions (
        stage TEXT NOT NULL,
        part INTEGER NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (stage, part)
    );
    """
]


class PostgresStagePositions:
    """The checkpoints of the stages after resolve, in PostgreSQL."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        db.migrate("positions", MIGRATIONS)

    def get(self, stage: str) -> Checkpoint:
        """``stage``'s checkpoint."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT part, seq FROM stage_positions WHERE stage = %s", (stage,)
            ).fetchall()
        return {int(p): LogPosition(int(p), int(o)) for p, o in rows}

    def commit(
        self,
        stage: str,
        checkpoint: Checkpoint,
        since: Since | None = None,
        synced: bool = True,
    ) -> None:
        """Record ``stage``'s checkpoint (the partitions it names; the others are kept);
        with ``since``, fenced first; ``synced=False``: ``synchronous_commit = off`` for
        this transaction."""
        if not checkpoint and not since:
            return
        parts = sorted(checkpoint)
        with self._db.transaction() as conn:
            if not synced:
                conn.execute("SET LOCAL synchronous_commit = off")
            fence(conn, f"stage {stage}", "stage_positions", since, checkpoint, ("stage", stage))
            if parts:
                conn.execute(
                    "INSERT INTO stage_positions (stage, part, seq)"
                    " SELECT %s, part, seq FROM unnest(%s::integer[], %s::bigint[])"
                    " AS u (part, seq) ORDER BY part"
                    " ON CONFLICT (stage, part) DO UPDATE SET seq = EXCLUDED.seq",
                    (stage, parts, [checkpoint[p].offset for p in parts]),
                )

    def close(self) -> None:
        """Nothing to release: the database is the backend's (closing twice is harmless)."""
