"""The embedded backend: one SQLite file in WAL mode.

``synchronous=FULL`` makes every commit fsync the write-ahead log, so a batch is on disk
when :meth:`SqliteStore.append` returns, whatever happens to the process or the machine
next. Each thread gets its own connection; writers take one lock (SQLite has one writer at
a time anyway) and other processes (the CLI next to a running server) wait on
``busy_timeout``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from patchbay.store.base import (
    AppendResult,
    Credential,
    DuplicateName,
    Input,
    NewBatch,
    StoredBatch,
)
from patchbay.store.sqlite_db import Durability, SqliteDatabase, insert_rows

DB_FILE = "patchbay.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL,
    input_id TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    channel TEXT NOT NULL,
    ip TEXT,
    historical INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup (
    input_id TEXT NOT NULL,
    source_request_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (input_id, source_request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_age ON dedup (received_at_ms);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inputs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    rate_limit REAL NOT NULL,
    enabled INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    key TEXT PRIMARY KEY,
    input_id TEXT NOT NULL REFERENCES inputs (id),
    secret_hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    enabled INTEGER NOT NULL
);
"""

_BATCH_COLUMNS = "seq, batch_id, input_id, received_at_ms, channel, body, ip, historical"
_INPUT_COLUMNS = "id, name, type, rate_limit, enabled, created_at_ms"
_CREDENTIAL_COLUMNS = "key, input_id, secret_hash, created_at_ms, enabled"

#: Keys per de-duplication look-up (a fixed count: one SQL text, one prepared statement).
_DEDUP_CHUNK = 100
_RECENT_KEYS = (
    "SELECT source_request_id FROM dedup WHERE input_id = ? AND received_at_ms >= ?"
    f" AND source_request_id IN ({', '.join('?' * _DEDUP_CHUNK)})"
)

_INSERT_BATCHES = (
    "INSERT INTO batches (batch_id, input_id, received_at_ms, channel, ip, historical, body)"
)


class SqliteStore:
    """The batch log and the inputs in one SQLite database under ``data_dir``."""

    def __init__(self, data_dir: Path, durability: Durability = "full") -> None:
        self.path = data_dir / DB_FILE
        self._db = SqliteDatabase(self.path, _SCHEMA, durability)

    # -- the batch log ---------------------------------------------------------------

    def append(self, batches: Sequence[NewBatch], dedup_since_ms: int) -> AppendResult:
        """Append ``batches`` in one transaction; see :class:`patchbay.store.base.BatchLog`.

        Rows go in by multi-row INSERTs, a few statements per request rather than two per
        batch: under load each statement hands the GIL over and waits to get it back.
        """
        offsets: list[int | None] = [None] * len(batches)
        seen: set[tuple[str, str]] = set()
        kept: list[int] = []  # the indexes of the batches to store
        rows: list[tuple[object, ...]] = []
        dedup_rows: list[tuple[str, str, int, int]] = []
        with self._db.transaction() as conn:
            recent = self._recent_keys(conn, batches, dedup_since_ms)
            for index, batch in enumerate(batches):
                key = batch.source_request_id
                if key is not None:
                    if (batch.input_id, key) in seen or (batch.input_id, key) in recent:
                        continue
                    seen.add((batch.input_id, key))
                kept.append(index)
                rows.append(
                    (
                        batch.batch_id,
                        batch.input_id,
                        batch.received_at_ms,
                        batch.channel,
                        batch.ip,
                        int(batch.historical),
                        batch.body,
                    )
                )
            placed = iter(kept)
            for size, last in insert_rows(conn, _INSERT_BATCHES, rows):
                # AUTOINCREMENT, one writer: the rows took consecutive offsets, in order.
                for offset in range(last - size + 1, last + 1):
                    index = next(placed)
                    offsets[index] = offset
                    batch = batches[index]
                    if (key := batch.source_request_id) is not None:
                        dedup_rows.append((batch.input_id, key, offset, batch.received_at_ms))
            insert_rows(conn, "INSERT OR REPLACE INTO dedup", dedup_rows)
        return AppendResult(offsets)

    @staticmethod
    def _recent_keys(
        conn: sqlite3.Connection, batches: Sequence[NewBatch], since_ms: int
    ) -> set[tuple[str, str]]:
        """The (input, ``source_request_id``) pairs of ``batches`` stored since ``since_ms``.

        One query per input and 100 keys rather than one per batch: under load every query
        hands the GIL over to the event loop and waits to get it back.
        """
        keys: dict[str, list[str]] = {}
        for batch in batches:
            if batch.source_request_id is not None:
                keys.setdefault(batch.input_id, []).append(batch.source_request_id)
        found: set[tuple[str, str]] = set()
        for input_id, ids in keys.items():
            for start in range(0, len(ids), _DEDUP_CHUNK):
                chunk = ids[start : start + _DEDUP_CHUNK]
                chunk += chunk[-1:] * (_DEDUP_CHUNK - len(chunk))  # same SQL, cached statement
                rows = conn.execute(_RECENT_KEYS, (input_id, since_ms, *chunk))
                found.update((input_id, str(row[0])) for row in rows)
        return found

    def read(self, after: int, limit: int) -> list[StoredBatch]:
        """Batches after offset ``after``, oldest first."""
        rows = self._db.conn().execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [
            StoredBatch(
                offset=r[0],
                batch_id=r[1],
                input_id=r[2],
                received_at_ms=r[3],
                channel=r[4],
                body=bytes(r[5]),
                ip=r[6],
                historical=bool(r[7]),
            )
            for r in rows
        ]

    def last_offset(self) -> int:
        """The newest offset, 0 for an empty log."""
        row = self._db.conn().execute("SELECT max(seq) FROM batches").fetchone()
        return int(row[0] or 0)

    def committed(self, consumer: str) -> int:
        """The last offset ``consumer`` committed."""
        row = (
            self._db.conn()
            .execute("SELECT seq FROM consumer_offsets WHERE consumer = ?", (consumer,))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def commit(self, consumer: str, offset: int) -> None:
        """Record ``consumer``'s offset."""
        self._db.write(
            "INSERT INTO consumer_offsets VALUES (?, ?)"
            " ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq",
            (consumer, offset),
        )

    def forget_dedup_before(self, before_ms: int) -> int:
        """Drop old de-duplication entries."""
        return self._db.write("DELETE FROM dedup WHERE received_at_ms < ?", (before_ms,))

    # -- inputs ----------------------------------------------------------------------

    def add_input(self, item: Input, credential: Credential) -> None:
        """Store an input and its first credential."""
        try:
            with self._db.transaction() as conn:
                conn.execute(
                    f"INSERT INTO inputs ({_INPUT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        item.id,
                        item.name,
                        item.type,
                        item.rate_limit,
                        int(item.enabled),
                        item.created_at_ms,
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
                f"SELECT {_INPUT_COLUMNS} FROM inputs WHERE name = ? OR id = ?",
                (name_or_id, name_or_id),
            )
            .fetchone()
        )
        return _input(row) if row else None

    def list_inputs(self) -> list[Input]:
        """Every input, oldest first."""
        rows = self._db.conn().execute(
            f"SELECT {_INPUT_COLUMNS} FROM inputs ORDER BY created_at_ms, name"
        )
        return [_input(r) for r in rows]

    def set_input_enabled(self, input_id: str, enabled: bool) -> None:
        """Enable or disable an input."""
        self._db.write("UPDATE inputs SET enabled = ? WHERE id = ?", (int(enabled), input_id))

    def set_rate_limit(self, input_id: str, rate_limit: float) -> None:
        """Change an input's rate limit."""
        self._db.write("UPDATE inputs SET rate_limit = ? WHERE id = ?", (rate_limit, input_id))

    def add_credential(self, credential: Credential) -> None:
        """Add a key to an input."""
        conn = self._db.conn()
        with self._db.write_lock:
            self._insert_credential(conn, credential)

    def set_credential_enabled(self, key: str, enabled: bool) -> None:
        """Enable or disable one key."""
        self._db.write("UPDATE credentials SET enabled = ? WHERE key = ?", (int(enabled), key))

    def credentials(self, input_id: str) -> list[Credential]:
        """The keys of an input, oldest first."""
        rows = self._db.conn().execute(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE input_id = ?"
            " ORDER BY created_at_ms, rowid",
            (input_id,),
        )
        return [_credential(r) for r in rows]

    def find_credential(self, key: str) -> tuple[Credential, Input] | None:
        """The credential with this key and its input."""
        row = (
            self._db.conn()
            .execute(
                "SELECT c.key, c.input_id, c.secret_hash, c.created_at_ms, c.enabled,"
                " i.id, i.name, i.type, i.rate_limit, i.enabled, i.created_at_ms"
                " FROM credentials c JOIN inputs i ON i.id = c.input_id WHERE c.key = ?",
                (key,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return _credential(row[:5]), _input(row[5:])

    # -- plumbing --------------------------------------------------------------------

    @staticmethod
    def _insert_credential(conn: sqlite3.Connection, credential: Credential) -> None:
        conn.execute(
            f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (
                credential.key,
                credential.input_id,
                credential.secret_hash,
                credential.created_at_ms,
                int(credential.enabled),
            ),
        )

    def close(self) -> None:
        """Close every connection this store opened."""
        self._db.close()


def _input(row: Sequence[object]) -> Input:
    return Input(
        id=str(row[0]),
        name=str(row[1]),
        type=str(row[2]),
        rate_limit=float(row[3]),  # type: ignore[arg-type]
        enabled=bool(row[4]),
        created_at_ms=int(row[5]),  # type: ignore[call-overload]
    )


def _credential(row: Sequence[object]) -> Credential:
    return Credential(
        key=str(row[0]),
        input_id=str(row[1]),
        secret_hash=str(row[2]),
        created_at_ms=int(row[3]),  # type: ignore[call-overload]
        enabled=bool(row[4]),
    )
