"""The embedded backend of the resolve stage's state: ``state.db`` beside the batch log.

A separate file from the log, so that ingestion and resolution never wait on each other's
write lock. Profiles are stored as msgpack documents; identity links are a table indexed by
(type, value); the resolve offset lives in the same file and is committed in the same
transaction as the state it describes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec

from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile
from patchbay.resolve.state import MergeRecord, StateChanges
from patchbay.store.sqlite_db import Durability, SqliteDatabase, insert_rows

STATE_FILE = "state.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    mpid INTEGER PRIMARY KEY,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS identity_links (
    id INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    value TEXT NOT NULL,
    mpid INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS identity_links_key ON identity_links (type, value, mpid);
CREATE TABLE IF NOT EXISTS merges (
    id INTEGER PRIMARY KEY,
    from_mpid INTEGER NOT NULL,
    to_mpid INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    log_offset INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS merges_from ON merges (from_mpid);
CREATE INDEX IF NOT EXISTS merges_to ON merges (to_mpid);
CREATE TABLE IF NOT EXISTS resolve_offset (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
"""

_encode = msgspec.msgpack.Encoder().encode
_decode_profile = msgspec.msgpack.Decoder(Profile).decode

#: Keys per ``IN (...)`` list in the bulk look-ups.
_IN_CHUNK = 500

_T = TypeVar("_T")


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class SqliteProfileStore:
    """Profiles, identity links, merges and the resolve offset in one SQLite file."""

    def __init__(self, data_dir: Path, durability: Durability = "full") -> None:
        self.path = data_dir / STATE_FILE
        # A bigger page cache and rarer checkpoints (every ~40 MiB of WAL, not ~4 MiB): the
        # stage commits a chunk at a time and the checkpoints were a third of its commits.
        self._db = SqliteDatabase(
            self.path,
            _SCHEMA,
            durability,
            ("PRAGMA cache_size = -65536", "PRAGMA wal_autocheckpoint = 10000"),
        )

    def users_with(self, identity: Identity) -> list[int]:
        """The MPIDs linked to ``identity``, oldest link first."""
        rows = self._db.conn().execute(
            "SELECT mpid FROM identity_links WHERE type = ? AND value = ? ORDER BY id",
            (identity.type, identity.value),
        )
        return [int(r[0]) for r in rows]

    def profile(self, mpid: int) -> Profile | None:
        """The stored profile of ``mpid``."""
        row = self._db.conn().execute("SELECT doc FROM profiles WHERE mpid = ?", (mpid,)).fetchone()
        return _decode_profile(row[0]) if row else None

    def users_with_each(self, identities: Collection[Identity]) -> dict[Identity, list[int]]:
        """:meth:`users_with` of many identities, a few statements in all (one per identity
        type and 500 values); identities linked to nobody are left out."""
        by_type: defaultdict[str, list[str]] = defaultdict(list)
        for identity in identities:
            by_type[identity.type].append(identity.value)
        found: dict[Identity, list[int]] = {}
        conn = self._db.conn()
        for kind, values in by_type.items():
            for part in _chunks(values):
                rows = conn.execute(
                    "SELECT value, mpid FROM identity_links WHERE type = ? AND value IN"
                    f" ({', '.join('?' * len(part))}) ORDER BY id",
                    (kind, *part),
                )
                for value, mpid in rows:
                    found.setdefault(Identity(kind, value), []).append(int(mpid))
        return found

    def profiles(self, mpids: Collection[int]) -> dict[int, Profile]:
        """The stored profiles among ``mpids``, a statement per 500."""
        found: dict[int, Profile] = {}
        conn = self._db.conn()
        for part in _chunks(list(mpids)):
            rows = conn.execute(
                f"SELECT mpid, doc FROM profiles WHERE mpid IN ({', '.join('?' * len(part))})",
                part,
            )
            for mpid, doc in rows:
                found[int(mpid)] = _decode_profile(doc)
        return found

    def committed_offset(self) -> int:
        """The log offset included in the state."""
        row = (
            self._db.conn()
            .execute("SELECT seq FROM resolve_offset WHERE name = 'resolve'")
            .fetchone()
        )
        return int(row[0]) if row else 0

    def commit(self, changes: StateChanges, offset: int) -> None:
        """Write ``changes`` and ``offset`` in one transaction."""
        # rows first, then multi-row statements (the resolve stage runs this on a thread of
        # its own, and the rows' Python would hold the GIL in the transaction)
        profiles = [(m, _encode(changes.profiles[m])) for m in sorted(changes.profiles)]
        links = [(i.type, i.value, m) for i, mpids in changes.linked.items() for m in mpids]
        with self._db.transaction() as conn:
            insert_rows(conn, "INSERT OR REPLACE INTO profiles (mpid, doc)", profiles)
            conn.executemany(
                "DELETE FROM identity_links WHERE type = ? AND value = ? AND mpid = ?",
                [(i.type, i.value, m) for i, mpids in changes.unlinked.items() for m in mpids],
            )
            insert_rows(conn, "INSERT OR IGNORE INTO identity_links (type, value, mpid)", links)
            conn.executemany(
                "INSERT INTO merges (from_mpid, to_mpid, reason, at_ms, log_offset)"
                " VALUES (?, ?, ?, ?, ?)",
                [(m.from_mpid, m.to_mpid, m.reason, m.at_ms, m.offset) for m in changes.merges],
            )
            conn.execute(
                "INSERT INTO resolve_offset VALUES ('resolve', ?)"
                " ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                (offset,),
            )

    def merges(self, mpid: int) -> list[MergeRecord]:
        """Merges into or out of ``mpid``, oldest first."""
        rows = self._db.conn().execute(
            "SELECT from_mpid, to_mpid, reason, at_ms, log_offset FROM merges"
            " WHERE from_mpid = ? OR to_mpid = ? ORDER BY id",
            (mpid, mpid),
        )
        return [MergeRecord(*r) for r in rows]

    def count_profiles(self) -> int:
        """How many profiles are stored (merged ones included)."""
        return int(self._db.conn().execute("SELECT count(*) FROM profiles").fetchone()[0])

    def reset(self) -> None:
        """Forget all state."""
        with self._db.transaction() as conn:
            for table in ("profiles", "identity_links", "merges", "resolve_offset"):
                conn.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        """Close every connection."""
        self._db.close()
