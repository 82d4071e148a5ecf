"""Columns of the embedded stores that hold secrets encrypted (:mod:`patchbay.secretbox`).

:func:`seal_plain_columns` is the migration every such store runs when it opens: the values
an earlier version stored in plain text are encrypted in one transaction with
``secure_delete`` on (the plain text is overwritten, not left in free pages), and the WAL is
then checkpointed and truncated so that no copy of it stays there either.
"""

from __future__ import annotations

from collections.abc import Sequence

from patchbay.backends.sqlite.db import SqliteDatabase
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
    conn = db.conn()
    conn.execute("PRAGMA secure_delete = ON")
    try:
        with db.transaction() as tx:
            rows = tx.execute(select).fetchall()
            match = " AND ".join(f"{key} = ?" for key in keys)
            for *key_values, value in rows:
                if binary:
                    sealed = box.seal_bytes(value.encode() if isinstance(value, str) else value)
                else:
                    sealed = box.seal(value if isinstance(value, str) else bytes(value).decode())
                tx.execute(f"UPDATE {table} SET {column} = ? WHERE {match}", (sealed, *key_values))
    finally:
        conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return len(rows)


def open_text(box: SecretBox, value: object) -> str:
    """The plain text of a stored value (encrypted, or plain text not yet migrated)."""
    if isinstance(value, bytes | memoryview):
        value = bytes(value).decode("utf-8")
    assert isinstance(value, str)
    return box.open(value)
