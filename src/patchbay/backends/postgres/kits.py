"""The kit store on PostgreSQL: the embedded store's tables and statements
(:class:`~patchbay.backends.sqlite.kits.SqlKitStore`) with ``%s`` placeholders.

Concurrency: every call is one transaction; a replacement locks the row it replaces
(``SELECT ... FOR UPDATE``) so that it reports truthfully whether it replaced one, and
keeps the first ``created_at_ms`` and ``event_subscription_id`` (the upsert never changes
them). A kit is deleted only if no connection names it, in the same statement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from patchbay.backends.postgres.db import PostgresDatabase
from patchbay.backends.sqlite.kits import SqlKitStore
from patchbay.secretbox import SecretBox

MIGRATIONS = [
    """
    CREATE TABLE kits (
        key TEXT COLLATE "C" PRIMARY KEY,
        doc TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE kit_connections (
        kit TEXT COLLATE "C" NOT NULL,
        input_id TEXT COLLATE "C" NOT NULL,
        development BOOLEAN NOT NULL,
        doc TEXT NOT NULL,
        secrets TEXT,
        event_subscription_id BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (kit, input_id, development)
    );
    CREATE TABLE kit_forwarded (
        kit TEXT COLLATE "C" PRIMARY KEY,
        events BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL
    );
    CREATE TABLE kit_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    );
    """
]


class PostgresKitStore(SqlKitStore):
    """Kits in PostgreSQL."""

    greatest = "GREATEST"

    def __init__(self, db: PostgresDatabase, box: SecretBox) -> None:
        super().__init__(db, box)
        db.migrate("kits", MIGRATIONS)

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Any]:
        with self._db.transaction() as conn:
            yield conn
