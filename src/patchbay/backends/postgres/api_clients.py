"""The API client store on PostgreSQL: the ``api_clients`` table (scopes as a ``TEXT[]``,
in the order given).

Concurrency: every call is one transaction on one row. Ids and names are unique
constraints: two processes adding the same name (or id) at once are serialised by the
index, and the second gets :class:`DuplicateName`. Names sort bytewise (``COLLATE "C"``),
as in SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from patchbay.backends.postgres.db import PostgresDatabase
from patchbay.backends.records import ApiClient, DuplicateName

MIGRATIONS = [
    """
    CREATE TABLE api_clients (
        id TEXT PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL UNIQUE,
        scopes TEXT[] NOT NULL,
        secret_hash TEXT NOT NULL,
        enabled BOOLEAN NOT NULL,
        created_at_ms BIGINT NOT NULL,
        secret_set_at_ms BIGINT NOT NULL
    );
    """
]

_COLUMNS = "id, name, scopes, secret_hash, enabled, created_at_ms, secret_set_at_ms"


class PostgresApiClientStore:
    """API clients in PostgreSQL."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        db.migrate("api_clients", MIGRATIONS)

    def add_client(self, client: ApiClient) -> None:
        """Store a new client; :class:`DuplicateName` if its name or id is taken."""
        try:
            self._db.write(
                f"INSERT INTO api_clients ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    client.id,
                    client.name,
                    list(client.scopes),
                    client.secret_hash,
                    client.enabled,
                    client.created_at_ms,
                    client.secret_set_at_ms,
                ),
            )
        except psycopg.errors.UniqueViolation:
            raise DuplicateName(client.name) from None

    def get_client(self, name_or_id: str) -> ApiClient | None:
        """The client with this id, else the one with this name."""
        with self._db.transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM api_clients WHERE id = %s OR name = %s"
                " ORDER BY id = %s DESC LIMIT 1",
                (name_or_id, name_or_id, name_or_id),
            ).fetchone()
        return _client(row) if row else None

    def list_clients(self) -> list[ApiClient]:
        """Every client, oldest first (by name on a tie)."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM api_clients ORDER BY created_at_ms, name"
            ).fetchall()
        return [_client(r) for r in rows]

    def set_client_enabled(self, client_id: str, enabled: bool) -> None:
        """Enable or disable a client."""
        self._db.write("UPDATE api_clients SET enabled = %s WHERE id = %s", (enabled, client_id))

    def set_client_secret(self, client_id: str, secret_hash: str, at_ms: int) -> None:
        """Replace a client's secret."""
        self._db.write(
            "UPDATE api_clients SET secret_hash = %s, secret_set_at_ms = %s WHERE id = %s",
            (secret_hash, at_ms, client_id),
        )

    def remove_client(self, client_id: str) -> bool:
        """Forget a client; whether it existed."""
        return self._db.write("DELETE FROM api_clients WHERE id = %s", (client_id,)) > 0

    def close(self) -> None:
        """Nothing to release: the database is the backend's (closing twice is harmless)."""


def _client(row: Sequence[object]) -> ApiClient:
    scopes = row[2]
    assert isinstance(scopes, list)
    return ApiClient(
        id=str(row[0]),
        name=str(row[1]),
        scopes=tuple(str(s) for s in scopes),
        secret_hash=str(row[3]),
        enabled=bool(row[4]),
        created_at_ms=int(row[5]),  # type: ignore[call-overload]
        secret_set_at_ms=int(row[6]),  # type: ignore[call-overload]
    )
