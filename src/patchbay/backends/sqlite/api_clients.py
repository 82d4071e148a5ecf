"""The embedded API client store: the ``api_clients`` table of ``patchbay.db``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from patchbay.backends.records import ApiClient, DuplicateName
from patchbay.backends.sqlite.db import SqliteDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    secret_set_at_ms INTEGER NOT NULL
);
"""

_COLUMNS = "id, name, scopes, secret_hash, enabled, created_at_ms, secret_set_at_ms"


class SqliteApiClientStore:
    """API clients in SQLite (scopes as one space-separated column)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.create(SCHEMA)

    def add_client(self, client: ApiClient) -> None:
        """Store a new client."""
        try:
            self._db.write(
                f"INSERT INTO api_clients ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    client.id,
                    client.name,
                    " ".join(client.scopes),
                    client.secret_hash,
                    int(client.enabled),
                    client.created_at_ms,
                    client.secret_set_at_ms,
                ),
            )
        except sqlite3.IntegrityError:
            raise DuplicateName(client.name) from None

    def get_client(self, name_or_id: str) -> ApiClient | None:
        """The client with this name or id."""
        row = (
            self._db.conn()
            .execute(
                f"SELECT {_COLUMNS} FROM api_clients WHERE id = ? OR name = ?"
                " ORDER BY id = ? DESC LIMIT 1",
                (name_or_id, name_or_id, name_or_id),
            )
            .fetchone()
        )
        return _client(row) if row else None

    def list_clients(self) -> list[ApiClient]:
        """Every client, oldest first."""
        rows = self._db.conn().execute(
            f"SELECT {_COLUMNS} FROM api_clients ORDER BY created_at_ms, name"
        )
        return [_client(r) for r in rows]

    def set_client_enabled(self, client_id: str, enabled: bool) -> None:
        """Enable or disable a client."""
        self._db.write("UPDATE api_clients SET enabled = ? WHERE id = ?", (int(enabled), client_id))

    def set_client_secret(self, client_id: str, secret_hash: str, at_ms: int) -> None:
        """Replace a client's secret."""
        self._db.write(
            "UPDATE api_clients SET secret_hash = ?, secret_set_at_ms = ? WHERE id = ?",
            (secret_hash, at_ms, client_id),
        )

    def remove_client(self, client_id: str) -> bool:
        """Forget a client."""
        return self._db.write("DELETE FROM api_clients WHERE id = ?", (client_id,)) > 0

    def close(self) -> None:
        """Close every connection of the database (shared with the other stores of
        ``patchbay.db``; closing twice is harmless)."""
        self._db.close()


def _client(row: Sequence[object]) -> ApiClient:
    return ApiClient(
        id=str(row[0]),
        name=str(row[1]),
        scopes=tuple(str(row[2]).split()),
        secret_hash=str(row[3]),
        enabled=bool(row[4]),
        created_at_ms=int(row[5]),  # type: ignore[call-overload]
        secret_set_at_ms=int(row[6]),  # type: ignore[call-overload]
    )
