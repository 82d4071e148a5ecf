"""The space the PostgreSQL stores take, as :class:`~patchbay.backends.abstract.StoreFiles`."""

from __future__ import annotations

from patchbay.backends.postgres.db import PostgresDatabase


class PostgresFiles:
    """The database (or the tests' schema) as one store. PostgreSQL's autovacuum makes the
    space of deleted rows reusable; giving it back to the file system would need ``VACUUM
    FULL``, which locks each table while it copies it: :meth:`reclaim` never does."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def sizes(self) -> dict[str, int]:
        """The bytes of every table and index of Patchbay's schema, as ``postgresql``."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')"
            ).fetchone()
        return {"postgresql": int(row[0]) if row else 0}

    def reclaim(self, keep_min_bytes: int, keep_fraction: float, pause_s: float = 0.0) -> int:
        """Nothing: the space stays for reuse (see the class)."""
        return 0
