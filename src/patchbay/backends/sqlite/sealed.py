"""Columns of the embedded stores that hold secrets encrypted (:mod:`patchbay.secretbox`).

:func:`seal_plain_columns` is the migration every such store runs when it opens: the values
an earlier version stored in plain text are encrypted in one transaction with
``secure_delete`` on (the plain text is overwritten, not left in free pages), and the WAL is
then checkpointed and truncated so that no copy of it stays there either.
:func:`seal_plain_payloads` does the same, once, for the payloads of queued deliveries.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence

from patchbay.backends.sqlite.db import SqliteDatabase, chunks, marks
from patchbay.secretbox import PREFIX, SecretBox


def seal_plain_columns(
    db: SqliteDatabase,
    box: SecretBox,
    table: str,
    keys: Sequence[str],
    column: str,
    binary: bool = False,
) -> int:
    """Encrypt the plain-text values of ``table.column`` (rows found by ``keys``; ``binary``:
    the values are bytes, sealed with :meth:`SecretBox.seal_bytes`); return how many there
    were."""
    where = f"{column} IS NOT NULL AND CAST({column} AS TEXT) NOT LIKE '{PREFIX}%'"
    select = f"SELECT {', '.join(keys)}, {column} FROM {table} WHERE {where}"
    if db.conn().execute(select + " LIMIT 1").fetchone() is None:
        return 0
    with _scrubbed(db), db.transaction() as tx:
        rows = tx.execute(select).fetchall()
        match = " AND ".join(f"{key} = ?" for key in keys)
        for *key_values, value in rows:
            if binary:
                sealed = box.seal_bytes(value.encode() if isinstance(value, str) else value)
            else:
                sealed = box.seal(value if isinstance(value, str) else bytes(value).decode())
            tx.execute(f"UPDATE {table} SET {column} = ? WHERE {match}", (sealed, *key_values))
    return len(rows)


def seal_plain_payloads(
    db: SqliteDatabase, box: SecretBox, table: str, key: str, column: str, version: int
) -> int:
    """Seal the plain values of ``table.column`` with :meth:`SecretBox.seal_payload`, each
    bound to its row's ``key``, unless the database's ``user_version`` says it was done
    (``version``, set in the same transaction: a large outbox is read once, not at every
    open); return how many were plain."""
    if _version(db.conn()) >= version:
        return 0
    sealed = 0
    with _scrubbed(db), db.transaction() as tx:
        if _version(tx) >= version:
            return 0  # another process did it meanwhile
        keys = [row[0] for row in tx.execute(f"SELECT {key} FROM {table}")]
        for some in chunks(keys):
            rows = tx.execute(
                f"SELECT {key}, {column} FROM {table} WHERE {key} IN ({marks(len(some))})", some
            ).fetchall()
            for row_key, value in rows:
                plain = value.encode() if isinstance(value, str) else bytes(value)
                if not box.is_sealed_payload(plain):
                    sealed += 1
                    tx.execute(
                        f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                        (box.seal_payload(plain, str(row_key)), row_key),
                    )
        tx.execute(f"PRAGMA user_version = {int(version)}")
    return sealed


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


@contextlib.contextmanager
def _scrubbed(db: SqliteDatabase) -> Iterator[None]:
    """Overwrite what is deleted or replaced meanwhile (``secure_delete``), then checkpoint
    and truncate the WAL: no plain text stays in free pages or in the WAL."""
    conn = db.conn()
    conn.execute("PRAGMA secure_delete = ON")
    try:
        yield
    finally:
        conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def open_text(box: SecretBox, value: object) -> str:
    """The plain text of a stored value (encrypted, or plain text not yet migrated)."""
    if isinstance(value, bytes | memoryview):
        value = bytes(value).decode("utf-8")
    assert isinstance(value, str)
    return box.open(value)
