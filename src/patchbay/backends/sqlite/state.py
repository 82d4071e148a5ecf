"""The embedded resolve state: ``state.db`` beside the batch log.

A separate file from the log, so that ingestion and resolution never wait on each other's
write lock. Profiles are stored as msgpack documents; identity links are a table indexed by
(type, value); the user each batch resolved to and the resolve checkpoint live in the same
file and are committed in the same transaction as the state they describe. The checkpoints
of the later stages (:class:`SqliteStagePositions`) are kept here too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterator

import msgspec

from patchbay.backends.records import (
    Checkpoint,
    LogPosition,
    MergeRecord,
    Since,
    StateChanges,
    check_since,
)
from patchbay.backends.sqlite.db import (
    SqliteDatabase,
    chunks,
    docs_by_mpid,
    insert_rows,
    marks,
)
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile

STATE_FILE = "state.db"

#: Pragmas of ``state.db``: a bigger page cache and rarer checkpoints (every ~40 MiB of WAL,
#: not ~4 MiB): the stage commits a chunk at a time and the checkpoints were a third of its
#: commits.
STATE_PRAGMAS = ("PRAGMA cache_size = -65536", "PRAGMA wal_autocheckpoint = 10000")

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
CREATE TABLE IF NOT EXISTS resolved (
    part INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    mpid INTEGER NOT NULL,
    PRIMARY KEY (part, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stage_positions (
    stage TEXT NOT NULL,
    part INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (stage, part)
) WITHOUT ROWID;
"""

_encode = msgspec.msgpack.Encoder().encode
_decode_profile = msgspec.msgpack.Decoder(Profile).decode


def _checkpoint(rows: Iterator[tuple[int, int]]) -> Checkpoint:
    return {int(p): LogPosition(int(p), int(o)) for p, o in rows}


class SqliteStateStore:
    """Profiles, identity links, merges, resolved users and the resolve checkpoint."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.create(_SCHEMA)

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
            for part in chunks(values):
                rows = conn.execute(
                    "SELECT value, mpid FROM identity_links WHERE type = ? AND value IN"
                    f" ({marks(len(part))}) ORDER BY id",
                    (kind, *part),
                )
                for value, mpid in rows:
                    found.setdefault(Identity(kind, value), []).append(int(mpid))
        return found

    def profiles(self, mpids: Collection[int]) -> dict[int, Profile]:
        """The stored profiles among ``mpids``, a statement per 500."""
        rows = docs_by_mpid(self._db.conn(), "profiles", mpids)
        return {mpid: _decode_profile(doc) for mpid, doc in rows}

    def checkpoint(self) -> Checkpoint:
        """The log positions included in the state (``resolve/P`` rows; the embedded log's
        one partition was once stored as ``resolve``)."""
        rows = self._db.conn().execute(
            "SELECT CASE name WHEN 'resolve' THEN 0 ELSE substr(name, 9) END, seq"
            " FROM resolve_offset WHERE name = 'resolve' OR name LIKE 'resolve/%'"
        )
        return _checkpoint(rows)

    def commit(
        self,
        changes: StateChanges,
        checkpoint: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Write ``changes`` and ``checkpoint`` in one transaction (if the checkpoint is
        still at ``since``: read in the transaction, which holds the write lock).

        The reads the changes were decided on are not checked: the store has one writer
        (the process's resolve stage and identity operations, under one lock). ``before``
        runs after the fence is checked, outside the write lock (it may wait for the event
        loop: IDSync appends its record there)."""
        if before is not None:
            check_since("resolve state", self.checkpoint(), since)
            before()
        # rows first, then multi-row statements (the resolve stage runs this on a thread of
        # its own, and the rows' Python would hold the GIL in the transaction)
        profiles = [(m, _encode(changes.profiles[m])) for m in sorted(changes.profiles)]
        links = [(i.type, i.value, m) for i, mpids in changes.linked.items() for m in mpids]
        with self._db.transaction() as conn:
            if since is not None:
                check_since("resolve state", self.checkpoint(), since)
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
            insert_rows(
                conn,
                "INSERT OR REPLACE INTO resolved (part, seq, mpid)",
                [(p.partition, p.offset, m) for p, m in changes.resolved],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO resolve_offset VALUES (?, ?)",
                [(_partition_key(p), pos.offset) for p, pos in checkpoint.items()],
            )

    def resolved(
        self, partition: int, after: LogPosition | None, limit: int
    ) -> list[tuple[LogPosition, int]]:
        """Resolved users after ``after``, in log order."""
        rows = self._db.conn().execute(
            "SELECT seq, mpid FROM resolved WHERE part = ? AND seq > ? ORDER BY seq LIMIT ?",
            (partition, -1 if after is None else after.offset, limit),
        )
        return [(LogPosition(partition, int(o)), int(m)) for o, m in rows]

    def forget_resolved(self, upto: Checkpoint) -> int:
        """Drop resolved users at or before ``upto``."""
        with self._db.transaction() as conn:
            return sum(
                conn.execute(
                    "DELETE FROM resolved WHERE part = ? AND seq <= ?", (p, pos.offset)
                ).rowcount
                for p, pos in upto.items()
            )

    def merges(self, mpid: int) -> list[MergeRecord]:
        """Merges into or out of ``mpid``, oldest first."""
        rows = self._db.conn().execute(
            "SELECT from_mpid, to_mpid, reason, at_ms, log_offset FROM merges"
            " WHERE from_mpid = ? OR to_mpid = ? ORDER BY id",
            (mpid, mpid),
        )
        return [MergeRecord(*r) for r in rows]

    def merged_into(self, mpids: Collection[int]) -> dict[int, list[int]]:
        """The MPIDs each of ``mpids`` absorbed directly, oldest merge first (each once), a
        statement per 500 (by the ``merges_to`` index); those that absorbed none left out."""
        found: dict[int, list[int]] = {}
        conn = self._db.conn()
        for part in chunks(list(set(mpids))):
            rows = conn.execute(
                "SELECT to_mpid, from_mpid FROM merges"
                f" WHERE to_mpid IN ({marks(len(part))}) ORDER BY id",
                part,
            )
            for to_mpid, from_mpid in rows:
                absorbed = found.setdefault(int(to_mpid), [])
                if int(from_mpid) not in absorbed:
                    absorbed.append(int(from_mpid))
        return found

    def count_profiles(self) -> int:
        """How many profiles are stored (merged ones included)."""
        return int(self._db.conn().execute("SELECT count(*) FROM profiles").fetchone()[0])

    def reset(self) -> None:
        """Forget all state."""
        with self._db.transaction() as conn:
            for table in ("profiles", "identity_links", "merges", "resolve_offset", "resolved"):
                conn.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        """Close every connection."""
        self._db.close()


def _partition_key(partition: int) -> str:
    return "resolve" if partition == 0 else f"resolve/{partition}"


class SqliteStagePositions:
    """The checkpoints of the stages after resolve, in ``state.db``."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.create(_SCHEMA)

    def get(self, stage: str) -> Checkpoint:
        """``stage``'s checkpoint."""
        rows = self._db.conn().execute(
            "SELECT part, seq FROM stage_positions WHERE stage = ?", (stage,)
        )
        return _checkpoint(rows)

    def commit(
        self,
        stage: str,
        checkpoint: Checkpoint,
        since: Since | None = None,
        synced: bool = True,
    ) -> None:
        """Record ``stage``'s checkpoint (if still at ``since``); ``synced=False``: without
        the fsync of ``synchronous = FULL``."""
        with self._db.transaction(synced=synced) as conn:
            if since is not None:
                check_since(f"stage {stage}", self.get(stage), since)
            conn.executemany(
                "INSERT OR REPLACE INTO stage_positions VALUES (?, ?, ?)",
                [(stage, p, pos.offset) for p, pos in checkpoint.items()],
            )

    def close(self) -> None:
        """Close every connection of the database."""
        self._db.close()
