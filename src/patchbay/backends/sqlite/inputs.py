"""The embedded input store: the ``inputs`` and ``credentials`` tables of ``patchbay.db``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from patchbay.backends.records import Credential, DuplicateName, Input
from patchbay.backends.sqlite.db import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    rate_limit REAL NOT NULL,
    enabled INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    idsync_key_only INTEGER NOT NULL DEFAULT 0,
    allowed_origins TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS credentials (
    key TEXT PRIMARY KEY,
    input_id TEXT NOT NULL REFERENCES inputs (id),
    secret_hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    secret_sealed TEXT
);
"""

#: Columns added after the first release: (table, column, definition), added to a database
#: made before them when it is opened (existing rows get the default).
_ADDED_COLUMNS = (
    ("inputs", "idsync_key_only", "INTEGER NOT NULL DEFAULT 0"),
    ("credentials", "secret_sealed", "TEXT"),
    ("inputs", "allowed_origins", "TEXT NOT NULL DEFAULT '[]'"),
)

INPUT_COLUMNS = (
    "id, name, type, rate_limit, enabled, created_at_ms, idsync_key_only, allowed_origins"
)
CREDENTIAL_COLUMNS = "key, input_id, secret_hash, created_at_ms, enabled, secret_sealed"


class SqliteInputStore:
    """Inputs and their credentials in SQLite."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.create(SCHEMA)
        for table, column, definition in _ADDED_COLUMNS:
            columns = {row[1] for row in db.conn().execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                db.write(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def add_input(self, item: Input, credential: Credential) -> None:
        """Store an input and its first credential."""
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    f"INSERT INTO inputs ({INPUT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.id,
                        item.name,
                        item.type,
                        item.rate_limit,
                        int(item.enabled),
                        item.created_at_ms,
                        int(item.idsync_key_only),
                        encode_origins(item.allowed_origins),
                    ),
                )
                self._insert_credential(conn, credential)
        except sqlite3.IntegrityError:
            raise DuplicateName(item.name) from None

    def get_input(self, name_or_id: str) -> Input | None:
        """The input with this name or id."""
        row = (
            self._db.conn()
            .execute(
                f"SELECT {INPUT_COLUMNS} FROM inputs WHERE name = ? OR id = ?",
                (name_or_id, name_or_id),
            )
            .fetchone()
        )
        return input_from_row(row) if row else None

    def list_inputs(self) -> list[Input]:
        """Every input, oldest first."""
        rows = self._db.conn().execute(
            f"SELECT {INPUT_COLUMNS} FROM inputs ORDER BY created_at_ms, name"
        )
        return [input_from_row(r) for r in rows]

    def set_input_enabled(self, input_id: str, enabled: bool) -> None:
        """Enable or disable an input."""
        self._db.write("UPDATE inputs SET enabled = ? WHERE id = ?", (int(enabled), input_id))

    def set_rate_limit(self, input_id: str, rate_limit: float) -> None:
        """Change an input's rate limit."""
        self._db.write("UPDATE inputs SET rate_limit = ? WHERE id = ?", (rate_limit, input_id))

    def set_idsync_key_only(self, input_id: str, on: bool) -> None:
        """Whether IDSync accepts the input's key alone."""
        self._db.write("UPDATE inputs SET idsync_key_only = ? WHERE id = ?", (int(on), input_id))

    def set_allowed_origins(self, input_id: str, origins: tuple[str, ...]) -> None:
        """The origins browsers may call with the input's key (``()``: any)."""
        self._db.write(
            "UPDATE inputs SET allowed_origins = ? WHERE id = ?",
            (encode_origins(origins), input_id),
        )

    def add_credential(self, credential: Credential) -> None:
        """Add a key to an input; raises :class:`DuplicateName` if the key exists."""
        conn = self._db.conn()
        try:
            with self._db.write_lock:
                self._insert_credential(conn, credential)
        except sqlite3.IntegrityError:
            raise DuplicateName(f"key {credential.key!r} exists") from None

    def set_credential_enabled(self, key: str, enabled: bool) -> None:
        """Enable or disable one key."""
        self._db.write("UPDATE credentials SET enabled = ? WHERE key = ?", (int(enabled), key))

    def credentials(self, input_id: str) -> list[Credential]:
        """The keys of an input, oldest first."""
        rows = self._db.conn().execute(
            f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE input_id = ?"
            " ORDER BY created_at_ms, rowid",
            (input_id,),
        )
        return [credential_from_row(r) for r in rows]

    def find_credential(self, key: str) -> tuple[Credential, Input] | None:
        """The credential with this key and its input."""
        row = (
            self._db.conn()
            .execute(
                "SELECT c.key, c.input_id, c.secret_hash, c.created_at_ms, c.enabled,"
                " c.secret_sealed, i.id, i.name, i.type, i.rate_limit, i.enabled,"
                " i.created_at_ms, i.idsync_key_only, i.allowed_origins"
                " FROM credentials c JOIN inputs i ON i.id = c.input_id WHERE c.key = ?",
                (key,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return credential_from_row(row[:6]), input_from_row(row[6:])

    # -- plumbing --------------------------------------------------------------------

    @staticmethod
    def _insert_credential(conn: sqlite3.Connection, credential: Credential) -> None:
        conn.execute(
            f"INSERT INTO credentials ({CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (
                credential.key,
                credential.input_id,
                credential.secret_hash,
                credential.created_at_ms,
                int(credential.enabled),
                credential.secret_sealed,
            ),
        )

    def close(self) -> None:
        """Close every connection this store opened."""
        self._db.close()


def input_from_row(row: Sequence[object]) -> Input:
    """The input a row of :data:`INPUT_COLUMNS` holds (the PostgreSQL store's too)."""
    return Input(
        id=str(row[0]),
        name=str(row[1]),
        type=str(row[2]),
        rate_limit=float(row[3]),  # type: ignore[arg-type]
        enabled=bool(row[4]),
        created_at_ms=int(row[5]),  # type: ignore[call-overload]
        idsync_key_only=bool(row[6]),
        allowed_origins=tuple(msgspec.json.decode(str(row[7]), type=list[str])),
    )


def encode_origins(origins: tuple[str, ...]) -> str:
    """The ``allowed_origins`` column of ``origins``: a JSON array (the PostgreSQL store's too)."""
    return msgspec.json.encode(list(origins)).decode()


def credential_from_row(row: Sequence[object]) -> Credential:
    """The credential a row of :data:`CREDENTIAL_COLUMNS` holds."""
    return Credential(
        key=str(row[0]),
        input_id=str(row[1]),
        secret_hash=str(row[2]),
        created_at_ms=int(row[3]),  # type: ignore[call-overload]
        enabled=bool(row[4]),
        secret_sealed=None if row[5] is None else str(row[5]),
    )
