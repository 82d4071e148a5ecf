"""The input store on PostgreSQL: the ``inputs`` and ``credentials`` tables.

Concurrency: every call is one transaction. Names and keys are unique constraints, so two
processes adding the same input name (or key) at once are serialised by the index: the
second waits for the first to commit, then gets :class:`DuplicateName` and stores nothing,
credential included (both rows go in one transaction). Updates touch one row each. Names
sort bytewise (``COLLATE "C"``), as in SQLite; credentials added at the same millisecond
keep the order they were added in (``ord``, an identity column).
"""

from __future__ import annotations

import psycopg

from patchbay.backends.postgres.db import Connection, PostgresDatabase
from patchbay.backends.records import Credential, DuplicateName, Input
from patchbay.backends.sqlite.inputs import (
    CREDENTIAL_COLUMNS,
    INPUT_COLUMNS,
    credential_from_row,
    encode_origins,
    input_from_row,
)

MIGRATIONS = [
    """
    CREATE TABLE inputs (
        id TEXT PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL UNIQUE,
        type TEXT NOT NULL,
        rate_limit DOUBLE PRECISION NOT NULL,
        enabled BOOLEAN NOT NULL,
        created_at_ms BIGINT NOT NULL,
        idsync_key_only BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE TABLE credentials (
        key TEXT PRIMARY KEY,
        input_id TEXT NOT NULL REFERENCES inputs (id),
        secret_hash TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        enabled BOOLEAN NOT NULL,
        secret_sealed TEXT,
        ord BIGINT GENERATED ALWAYS AS IDENTITY
    );
    CREATE INDEX credentials_input ON credentials (input_id, created_at_ms, ord);
    """,
    "ALTER TABLE inputs ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';",
]


class PostgresInputStore:
    """Inputs and their credentials in PostgreSQL."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        db.migrate("inputs", MIGRATIONS)

    def add_input(self, item: Input, credential: Credential) -> None:
        """Store an input and its first credential, in one transaction."""
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    f"INSERT INTO inputs ({INPUT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        item.id,
                        item.name,
                        item.type,
                        item.rate_limit,
                        item.enabled,
                        item.created_at_ms,
                        item.idsync_key_only,
                        encode_origins(item.allowed_origins),
                    ),
                )
                _insert_credential(conn, credential)
        except psycopg.errors.UniqueViolation:
            raise DuplicateName(item.name) from None

    def get_input(self, name_or_id: str) -> Input | None:
        """The input with this name or id."""
        with self._db.transaction() as conn:
            row = conn.execute(
                f"SELECT {INPUT_COLUMNS} FROM inputs WHERE name = %s OR id = %s",
                (name_or_id, name_or_id),
            ).fetchone()
        return input_from_row(row) if row else None

    def list_inputs(self) -> list[Input]:
        """Every input, oldest first (by name on a tie)."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {INPUT_COLUMNS} FROM inputs ORDER BY created_at_ms, name"
            ).fetchall()
        return [input_from_row(r) for r in rows]

    def set_input_enabled(self, input_id: str, enabled: bool) -> None:
        """Enable or disable an input."""
        self._db.write("UPDATE inputs SET enabled = %s WHERE id = %s", (enabled, input_id))

    def set_rate_limit(self, input_id: str, rate_limit: float) -> None:
        """Change an input's rate limit."""
        self._db.write("UPDATE inputs SET rate_limit = %s WHERE id = %s", (rate_limit, input_id))

    def set_idsync_key_only(self, input_id: str, on: bool) -> None:
        """Whether IDSync accepts the input's key alone."""
        self._db.write("UPDATE inputs SET idsync_key_only = %s WHERE id = %s", (on, input_id))

    def set_allowed_origins(self, input_id: str, origins: tuple[str, ...]) -> None:
        """The origins browsers may call with the input's key (``()``: any)."""
        self._db.write(
            "UPDATE inputs SET allowed_origins = %s WHERE id = %s",
            (encode_origins(origins), input_id),
        )

    def add_credential(self, credential: Credential) -> None:
        """Add a key to an input; raises :class:`DuplicateName` if the key exists."""
        try:
            with self._db.transaction() as conn:
                _insert_credential(conn, credential)
        except psycopg.errors.UniqueViolation:
            raise DuplicateName(f"key {credential.key!r} exists") from None

    def set_credential_enabled(self, key: str, enabled: bool) -> None:
        """Enable or disable one key."""
        self._db.write("UPDATE credentials SET enabled = %s WHERE key = %s", (enabled, key))

    def credentials(self, input_id: str) -> list[Credential]:
        """The keys of an input, oldest first (in the order added on a tie)."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE input_id = %s"
                " ORDER BY created_at_ms, ord",
                (input_id,),
            ).fetchall()
        return [credential_from_row(r) for r in rows]

    def find_credential(self, key: str) -> tuple[Credential, Input] | None:
        """The credential with this key and its input."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT c.key, c.input_id, c.secret_hash, c.created_at_ms, c.enabled,"
                " c.secret_sealed, i.id, i.name, i.type, i.rate_limit, i.enabled,"
                " i.created_at_ms, i.idsync_key_only, i.allowed_origins"
                " FROM credentials c JOIN inputs i ON i.id = c.input_id WHERE c.key = %s",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return credential_from_row(row[:6]), input_from_row(row[6:])

    def close(self) -> None:
        """Nothing to release: the database is the backend's (closing twice is harmless)."""


def _insert_credential(conn: Connection, credential: Credential) -> None:
    conn.execute(
        f"INSERT INTO credentials ({CREDENTIAL_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            credential.key,
            credential.input_id,
            credential.secret_hash,
            credential.created_at_ms,
            credential.enabled,
            credential.secret_sealed,
        ),
    )
