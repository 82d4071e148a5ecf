"""The embedded backend of the kit store: the ``kits``, ``kit_connections``,
``kit_forwarded`` and ``kit_version`` tables in ``patchbay.db``.

Kits and connections are JSON documents (read whole, never queried) beside the columns that
key them and the ones a replacement keeps (``created_at_ms``, ``event_subscription_id``).
The values of a connection's confidential settings are kept apart, in ``secrets``, sealed
with the secrets key (:mod:`patchbay.secretbox`). ``kit_version`` is one counter, raised in
the transaction of every change of kits or connections.

:class:`SqlKitStore` is written once for both SQL backends: the PostgreSQL store
(:mod:`patchbay.backends.postgres.kits`) is the same class with its own placeholders.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import msgspec

from patchbay.backends.records import KitConnection, KitForwarded, KitRecord
from patchbay.backends.sqlite.db import SqliteDatabase
from patchbay.backends.sqlite.sealed import open_text
from patchbay.secretbox import SecretBox

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kits (
    key TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kit_connections (
    kit TEXT NOT NULL,
    input_id TEXT NOT NULL,
    development INTEGER NOT NULL,
    doc TEXT NOT NULL,
    secrets TEXT,
    event_subscription_id INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (kit, input_id, development)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kit_forwarded (
    kit TEXT PRIMARY KEY,
    events INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kit_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
"""

_BUMP = (
    "INSERT INTO kit_version (id, version) VALUES (1, 1)"
    " ON CONFLICT (id) DO UPDATE SET version = kit_version.version + 1"
)
_CONNECTIONS = (
    "SELECT doc, secrets, event_subscription_id, created_at_ms FROM kit_connections"
    " ORDER BY kit, input_id, development"
)


class SqlKitStore:
    """The kit store over a SQL database; ``?`` placeholders (see :meth:`_q`)."""

    #: The SQL function of the larger of two values.
    greatest = "max"

    def __init__(self, db: Any, box: SecretBox) -> None:
        self._db = db
        self._box = box

    def _q(self, sql: str) -> str:
        return sql

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Any]:
        yield self._db.conn()

    def put_kit(self, kit: KitRecord) -> bool:
        """Store ``kit`` (keeping the first ``created_at_ms``); whether it replaced one."""
        with self._db.transaction() as conn:
            old = conn.execute(
                self._q("SELECT created_at_ms FROM kits WHERE key = ? FOR UPDATE"), (kit.key,)
            ).fetchone()
            conn.execute(
                self._q(
                    "INSERT INTO kits (key, doc, created_at_ms) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET doc = excluded.doc"
                ),
                (kit.key, msgspec.json.encode(kit).decode(), kit.created_at_ms),
            )
            conn.execute(_BUMP)
        return old is not None

    def get_kit(self, key: str) -> KitRecord | None:
        """The kit with this key."""
        with self._reading() as conn:
            row = conn.execute(
                self._q("SELECT doc, created_at_ms FROM kits WHERE key = ?"), (key,)
            ).fetchone()
        return _kit(row) if row else None

    def list_kits(self) -> list[KitRecord]:
        """Every kit, by key."""
        with self._reading() as conn:
            rows = conn.execute("SELECT doc, created_at_ms FROM kits ORDER BY key").fetchall()
        return [_kit(r) for r in rows]

    def delete_kit(self, key: str) -> bool:
        """Remove a kit that has no connections."""
        with self._db.transaction() as conn:
            deleted = conn.execute(
                self._q(
                    "DELETE FROM kits WHERE key = ? AND NOT EXISTS"
                    " (SELECT 1 FROM kit_connections WHERE kit = ?)"
                ),
                (key, key),
            ).rowcount
            if deleted:
                conn.execute(_BUMP)
        return bool(deleted > 0)

    def put_kit_connection(self, connection: KitConnection) -> bool:
        """Create or replace a connection (keeping its creation time and subscription id)."""
        secrets = (
            self._box.seal(msgspec.json.encode(connection.secrets).decode())
            if connection.secrets
            else None
        )
        doc = msgspec.json.encode(msgspec.structs.replace(connection, secrets={})).decode()
        where = (connection.kit, connection.input_id, connection.development)
        with self._db.transaction() as conn:
            old = conn.execute(
                self._q(
                    "SELECT 1 FROM kit_connections"
                    " WHERE kit = ? AND input_id = ? AND development = ? FOR UPDATE"
                ),
                where,
            ).fetchone()
            conn.execute(
                self._q(
                    "INSERT INTO kit_connections (kit, input_id, development, doc, secrets,"
                    " event_subscription_id, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (kit, input_id, development)"
                    " DO UPDATE SET doc = excluded.doc, secrets = excluded.secrets"
                ),
                (*where, doc, secrets, connection.event_subscription_id, connection.created_at_ms),
            )
            conn.execute(_BUMP)
        return old is not None

    def list_kit_connections(self) -> list[KitConnection]:
        """Every connection, by kit, input, then production before development."""
        with self._reading() as conn:
            rows = conn.execute(_CONNECTIONS).fetchall()
        return [self._connection(r) for r in rows]

    def remove_kit_connection(self, kit: str, input_id: str, development: bool) -> bool:
        """Remove one connection."""
        with self._db.transaction() as conn:
            deleted = conn.execute(
                self._q(
                    "DELETE FROM kit_connections WHERE kit = ? AND input_id = ? AND development = ?"
                ),
                (kit, input_id, development),
            ).rowcount
            if deleted:
                conn.execute(_BUMP)
        return bool(deleted > 0)

    def add_forwarded(self, counts: dict[str, int], at_ms: int) -> None:
        """Add to the totals, in one transaction."""
        if not counts:
            return
        with self._db.transaction() as conn:
            for kit in sorted(counts):  # one lock order for concurrent writers
                conn.execute(
                    self._q(
                        "INSERT INTO kit_forwarded (kit, events, last_seen_ms) VALUES (?, ?, ?)"
                        " ON CONFLICT (kit) DO UPDATE SET"
                        " events = kit_forwarded.events + excluded.events,"
                        f" last_seen_ms = {self.greatest}(kit_forwarded.last_seen_ms,"
                        " excluded.last_seen_ms)"
                    ),
                    (kit, counts[kit], at_ms),
                )

    def forwarded(self) -> list[KitForwarded]:
        """The totals, by kit name."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT kit, events, last_seen_ms FROM kit_forwarded ORDER BY kit"
            ).fetchall()
        return [KitForwarded(str(k), int(e), int(t)) for k, e, t in rows]

    def version(self) -> int:
        """Changes with every change of kits or connections."""
        with self._reading() as conn:
            row = conn.execute("SELECT version FROM kit_version WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Nothing to release: the database is the backend's (closing twice is harmless)."""

    def _connection(self, row: Any) -> KitConnection:
        doc, sealed, subscription, created = row
        connection = msgspec.json.decode(doc, type=KitConnection)
        secrets = {} if sealed is None else msgspec.json.decode(open_text(self._box, sealed))
        return msgspec.structs.replace(
            connection,
            secrets=secrets,
            event_subscription_id=int(subscription),
            created_at_ms=int(created),
        )


def _kit(row: Any) -> KitRecord:
    kit = msgspec.json.decode(row[0], type=KitRecord)
    return msgspec.structs.replace(kit, created_at_ms=int(row[1]))


class SqliteKitStore(SqlKitStore):
    """Kits in ``patchbay.db``."""

    def __init__(self, db: SqliteDatabase, box: SecretBox) -> None:
        super().__init__(db, box)
        db.create(_SCHEMA)

    def _q(self, sql: str) -> str:
        return sql.replace(" FOR UPDATE", "")  # a write transaction locks the database
