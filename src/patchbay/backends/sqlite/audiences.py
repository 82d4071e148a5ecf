"""The embedded audience store: ``segment.db`` in the data directory.

A file of its own, so that the segment stage's commits (thousands of user states at a time)
never wait on the resolve state's or the log's write lock. The owner's records (audiences,
their connections to outputs) and the stage's records (conditions, builds, user states,
memberships, pending membership changes, its checkpoint) live side by side, so that a
commit of the stage can leave out what belongs to an audience deleted meanwhile.

Audience ids come from an ``AUTOINCREMENT`` sequence (a deleted id is never given again) and
stop at :data:`~patchbay.backends.records.MAX_AUDIENCE_ID`. The ``version`` row of
``segment_meta`` grows with every write of the owner's records. Connections, conditions,
builds and user states are msgpack documents (a connection's encrypted, as it holds the
subscription settings and the partner's answer: :mod:`patchbay.secretbox`); a user's
``next_check_ms`` is also a column, and an entry of the schedule (by second) that
:meth:`SqliteAudienceStore.due_users` reads. Memberships are keyed by (MPID, audience):
what one batch changes, one user's, is one page; :meth:`~SqliteAudienceStore.members`
scans them in MPID order, and the size of each audience is kept by the commits that change
them (what their statements inserted and deleted, read back by ``RETURNING``); pending
changes are numbered by an ``AUTOINCREMENT`` ``seq`` (never reused, also after a reset)
and indexed by (output, seq).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Collection, Sequence
from typing import cast

import msgspec

from patchbay.backends.records import (
    MAX_AUDIENCE_ID,
    AudienceAction,
    AudienceBuild,
    AudienceConnection,
    AudienceRecord,
    Checkpoint,
    ConditionRecord,
    DuplicateName,
    LogPosition,
    PendingChange,
    SegmentChanges,
    SegmentUser,
    Since,
    check_since,
)
from patchbay.backends.sqlite.db import SqliteDatabase, docs_by_mpid, insert_rows, rows_returning
from patchbay.backends.sqlite.sealed import seal_plain_columns
from patchbay.errors import PatchbayError
from patchbay.secretbox import SecretBox

SEGMENT_FILE = "segment.db"
#: Entries of the schedule :meth:`SqliteAudienceStore.due_users` reads at a time, and the
#: most pages it reads in one call.
SCHEDULE_PAGE = 1000
SCHEDULE_PAGES = 20

#: Pragmas of ``segment.db``: like ``state.db``'s (a bigger page cache and rarer WAL
#: checkpoints), as the segment stage also commits a chunk of users at a time.
SEGMENT_PRAGMAS = ("PRAGMA cache_size = -65536",)
#: ``segment.db``'s write-ahead log is checkpointed by a thread of its own this often (the
#: stage's commits would otherwise stop for it: :class:`SqliteDatabase`).
SEGMENT_CHECKPOINT_EVERY_S = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audiences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    definition BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS segment_meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audience_connections (
    audience_id INTEGER NOT NULL,
    output TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (audience_id, output)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segment_conditions (
    id INTEGER PRIMARY KEY,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audience_builds (
    audience_id INTEGER PRIMARY KEY,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS segment_users (
    mpid INTEGER PRIMARY KEY,
    doc BLOB NOT NULL,
    next_check_ms INTEGER
);
-- when users are due (next_check_ms), to the second: see due_users()
CREATE TABLE IF NOT EXISTS segment_schedule (
    at_s INTEGER NOT NULL,
    mpid INTEGER NOT NULL,
    PRIMARY KEY (at_s, mpid)
) WITHOUT ROWID;
-- keyed by user first: a batch's joins and leaves, all of one user, write one page (keyed
-- by audience, each was a random page of its own); the members of an audience are read
-- by a scan in MPID order (members())
CREATE TABLE IF NOT EXISTS memberships (
    mpid INTEGER NOT NULL,
    audience_id INTEGER NOT NULL,
    PRIMARY KEY (mpid, audience_id)
) WITHOUT ROWID;
DROP INDEX IF EXISTS memberships_mpid;
-- the members of each audience, kept by each commit (counting millions of memberships for
-- /metrics would take the stage's thread for a second)
CREATE TABLE IF NOT EXISTS audience_sizes (
    audience_id INTEGER PRIMARY KEY,
    members INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    audience_id INTEGER NOT NULL,
    mpid INTEGER NOT NULL,
    action TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_changes_output ON pending_changes (output, seq);
CREATE TABLE IF NOT EXISTS segment_checkpoint (
    part INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL
);
"""

#: Earlier versions kept ``audience_sizes`` by triggers, a statement per membership: each
#: commit now adds up what its statements inserted and deleted (``RETURNING``).
_DROP_SIZE_TRIGGERS = """
DROP TRIGGER IF EXISTS memberships_added;
DROP TRIGGER IF EXISTS memberships_removed;
"""

_AUDIENCE_COLUMNS = "id, name, description, definition, created_at_ms, updated_at_ms, version"
_PENDING_COLUMNS = "seq, output, audience_id, mpid, action, at_ms"

#: Every write of the owner's records runs this in its transaction.
_BUMP_VERSION = (
    "INSERT INTO segment_meta (name, value) VALUES ('version', 1)"
    " ON CONFLICT (name) DO UPDATE SET value = value + 1"
)

_encode = msgspec.msgpack.Encoder().encode
_decode_user = msgspec.msgpack.Decoder(SegmentUser).decode
_decode_connection = msgspec.msgpack.Decoder(AudienceConnection).decode
_decode_condition = msgspec.msgpack.Decoder(ConditionRecord).decode
_decode_build = msgspec.msgpack.Decoder(AudienceBuild).decode


class SqliteAudienceStore:
    """Audiences, their connections and the segment stage's state in ``segment.db``."""

    def __init__(self, db: SqliteDatabase, box: SecretBox) -> None:
        self._db = db
        self._box = box
        db.create(_SCHEMA)
        _key_memberships_by_user(db)
        _schedule_from_index(db)
        db.create(_DROP_SIZE_TRIGGERS)
        seal_plain_columns(
            db, box, "audience_connections", ("audience_id", "output"), "doc", binary=True
        )
        with db.transaction() as conn:  # a database from before the sizes were kept
            if conn.execute("SELECT 1 FROM audience_sizes LIMIT 1").fetchone() is None:
                conn.execute(
                    "INSERT INTO audience_sizes (audience_id, members)"
                    " SELECT audience_id, count(*) FROM memberships GROUP BY audience_id"
                )

    def _connection(self, doc: object) -> AudienceConnection:
        """An audience connection from its stored document (encrypted)."""
        if isinstance(doc, str):
            return _decode_connection(self._box.open_bytes(doc))
        assert isinstance(doc, bytes)
        return _decode_connection(doc)  # plain, from before the migration

    # -- audiences -----------------------------------------------------------------------

    def add_audience(self, audience: AudienceRecord) -> AudienceRecord:
        """Store a new audience under the next id of the sequence; raises
        :class:`DuplicateName` if the name is taken, :class:`PatchbayError` once the ids
        reached :data:`MAX_AUDIENCE_ID`."""
        try:
            with self._db.transaction() as conn:
                cursor = conn.execute(
                    "INSERT INTO audiences (name, description, definition, created_at_ms,"
                    " updated_at_ms, version) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        audience.name,
                        audience.description,
                        audience.definition,
                        audience.created_at_ms,
                        audience.updated_at_ms,
                        audience.version,
                    ),
                )
                audience_id = int(cursor.lastrowid or 0)
                if audience_id > MAX_AUDIENCE_ID:  # rolled back with the transaction
                    raise PatchbayError(f"no audience id is left (ids stop at {MAX_AUDIENCE_ID})")
                conn.execute(_BUMP_VERSION)
        except sqlite3.IntegrityError:
            raise DuplicateName(f"an audience named {audience.name!r} already exists") from None
        return msgspec.structs.replace(audience, id=audience_id)

    def update_audience(self, audience: AudienceRecord) -> bool:
        """Replace the audience's name, description, definition, version and
        ``updated_at_ms`` (``created_at_ms`` stays); whether it existed."""
        try:
            with self._db.transaction() as conn:
                changed = conn.execute(
                    "UPDATE audiences SET name = ?, description = ?, definition = ?,"
                    " version = ?, updated_at_ms = ? WHERE id = ?",
                    (
                        audience.name,
                        audience.description,
                        audience.definition,
                        audience.version,
                        audience.updated_at_ms,
                        audience.id,
                    ),
                ).rowcount
                if changed:
                    conn.execute(_BUMP_VERSION)
        except sqlite3.IntegrityError:
            raise DuplicateName(f"an audience named {audience.name!r} already exists") from None
        return changed > 0

    def get_audience(self, name_or_id: str | int) -> AudienceRecord | None:
        """The audience with this name (``str``) or id (``int``)."""
        column = "name" if isinstance(name_or_id, str) else "id"
        row = (
            self._db.conn()
            .execute(f"SELECT {_AUDIENCE_COLUMNS} FROM audiences WHERE {column} = ?", (name_or_id,))
            .fetchone()
        )
        return _audience(row) if row else None

    def list_audiences(self) -> list[AudienceRecord]:
        """Every audience, by id."""
        rows = self._db.conn().execute(f"SELECT {_AUDIENCE_COLUMNS} FROM audiences ORDER BY id")
        return [_audience(r) for r in rows]

    def delete_audience(self, audience_id: int) -> bool:
        """Remove an audience with its connections, build, memberships and pending changes,
        in one transaction; whether it existed."""
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM audiences WHERE id = ?", (audience_id,)).rowcount
            if deleted:
                for table in (
                    "audience_connections",
                    "audience_builds",
                    "memberships",
                    "audience_sizes",
                ):
                    conn.execute(f"DELETE FROM {table} WHERE audience_id = ?", (audience_id,))
                conn.execute("DELETE FROM pending_changes WHERE audience_id = ?", (audience_id,))
                conn.execute(_BUMP_VERSION)
        return deleted > 0

    def version(self) -> int:
        """The count of the owner's writes so far (0: none)."""
        row = (
            self._db.conn()
            .execute("SELECT value FROM segment_meta WHERE name = 'version'")
            .fetchone()
        )
        return int(row[0]) if row else 0

    # -- connections ---------------------------------------------------------------------

    def put_audience_connection(self, connection: AudienceConnection) -> None:
        """Create or replace a connection, keeping ``partner_settings`` and
        ``subscribed_at_ms`` of the one it replaces; raises :class:`PatchbayError` if the
        audience does not exist."""
        with self._db.transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM audiences WHERE id = ?", (connection.audience_id,)
            ).fetchone():
                raise PatchbayError(f"no audience with id {connection.audience_id}")
            row = conn.execute(
                "SELECT doc FROM audience_connections WHERE audience_id = ? AND output = ?",
                (connection.audience_id, connection.output),
            ).fetchone()
            if row is not None:
                old = self._connection(row[0])
                connection = msgspec.structs.replace(
                    connection,
                    partner_settings=old.partner_settings,
                    subscribed_at_ms=old.subscribed_at_ms,
                )
            conn.execute(
                "INSERT OR REPLACE INTO audience_connections (audience_id, output, doc)"
                " VALUES (?, ?, ?)",
                (
                    connection.audience_id,
                    connection.output,
                    self._box.seal_bytes(_encode(connection)),
                ),
            )
            conn.execute(_BUMP_VERSION)

    def list_audience_connections(self) -> list[AudienceConnection]:
        """Every audience connection, by audience then output."""
        rows = self._db.conn().execute(
            "SELECT doc FROM audience_connections ORDER BY audience_id, output"
        )
        return [self._connection(r[0]) for r in rows]

    def remove_audience_connection(self, audience_id: int, output: str) -> bool:
        """Remove a connection and its pending changes; whether it existed."""
        with self._db.transaction() as conn:
            removed = conn.execute(
                "DELETE FROM audience_connections WHERE audience_id = ? AND output = ?",
                (audience_id, output),
            ).rowcount
            if removed:
                conn.execute(
                    "DELETE FROM pending_changes WHERE output = ? AND audience_id = ?",
                    (output, audience_id),
                )
                conn.execute(_BUMP_VERSION)
        return removed > 0

    def subscribed(
        self, audience_id: int, output: str, partner_settings: dict[str, str], at_ms: int
    ) -> bool:
        """Record the partner's acceptance on the connection (a change of the connection:
        the version moves); whether the connection exists."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT doc FROM audience_connections WHERE audience_id = ? AND output = ?",
                (audience_id, output),
            ).fetchone()
            if row is None:
                return False
            connection = msgspec.structs.replace(
                self._connection(row[0]),
                partner_settings=dict(partner_settings),
                subscribed_at_ms=at_ms,
            )
            conn.execute(
                "UPDATE audience_connections SET doc = ? WHERE audience_id = ? AND output = ?",
                (self._box.seal_bytes(_encode(connection)), audience_id, output),
            )
            conn.execute(_BUMP_VERSION)
        return True

    # -- the segment stage's state -------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The stage's checkpoint, by partition."""
        rows = self._db.conn().execute("SELECT part, seq FROM segment_checkpoint")
        return {int(p): LogPosition(int(p), int(o)) for p, o in rows}

    def conditions(self) -> list[ConditionRecord]:
        """Every registered condition, by id."""
        rows = self._db.conn().execute("SELECT doc FROM segment_conditions ORDER BY id")
        return [_decode_condition(r[0]) for r in rows]

    def builds(self) -> list[AudienceBuild]:
        """Every build, by audience id."""
        rows = self._db.conn().execute("SELECT doc FROM audience_builds ORDER BY audience_id")
        return [_decode_build(r[0]) for r in rows]

    def users(self, mpids: Collection[int]) -> dict[int, SegmentUser]:
        """The states of those of ``mpids`` that have one, a statement per 500."""
        rows = docs_by_mpid(self._db.conn(), "segment_users", mpids)
        return {mpid: _decode_user(doc) for mpid, doc in rows}

    def scan_users(self, after: int | None, limit: int) -> list[SegmentUser]:
        """Up to ``limit`` user states above ``after`` (from the lowest MPID when ``None``:
        MPIDs may be negative), by MPID."""
        if after is None:
            sql = "SELECT doc FROM segment_users ORDER BY mpid LIMIT ?"
            params: tuple[int, ...] = (max(limit, 0),)
        else:
            sql = "SELECT doc FROM segment_users WHERE mpid > ? ORDER BY mpid LIMIT ?"
            params = (after, max(limit, 0))
        return [_decode_user(r[0]) for r in self._db.conn().execute(sql, params)]

    def count_users(self) -> int:
        """How many users have a state."""
        return int(self._db.conn().execute("SELECT count(*) FROM segment_users").fetchone()[0])

    def due_users(self, now_ms: int, limit: int) -> list[int]:
        """Up to ``limit`` MPIDs due at ``now_ms``, earliest first (then by MPID).

        The schedule holds an entry (second, MPID) for every ``next_check_ms`` a commit
        wrote; one that is no longer the user's (rescheduled, or the user dropped) stays
        until its second has passed, and is removed here when met: a user's write never
        costs a random page of the schedule, only an entry at the end, where the others
        written then go. The entries of a due user stay until it is written again (a crash
        in between finds it due again)."""
        if limit <= 0:
            return []
        now_s = now_ms // 1000
        due: list[tuple[int, int]] = []
        after: tuple[int, int] | None = None
        for _ in range(SCHEDULE_PAGES):
            page = self._schedule_page(now_s, after)
            if not page:
                break
            stale = []
            for at_s, mpid, next_check_ms in page:
                if next_check_ms is None or next_check_ms // 1000 != at_s:
                    stale.append((at_s, mpid))
                elif next_check_ms <= now_ms:
                    due.append((next_check_ms, mpid))
            if stale:
                with self._db.transaction(synced=False) as conn:
                    conn.executemany(
                        "DELETE FROM segment_schedule WHERE at_s = ? AND mpid = ?", stale
                    )
            after = page[-1][:2]
            if len(due) >= limit or len(page) < SCHEDULE_PAGE:
                break
        return [mpid for _, mpid in sorted(due)[:limit]]

    def _schedule_page(
        self, now_s: int, after: tuple[int, int] | None
    ) -> list[tuple[int, int, int | None]]:
        """A page of the schedule's entries up to ``now_s`` (after ``after``), each with
        the user's ``next_check_ms`` now (``None``: none, or no such user)."""
        where = "s.at_s <= ?" if after is None else "s.at_s <= ? AND (s.at_s, s.mpid) > (?, ?)"
        rows = self._db.conn().execute(
            "SELECT s.at_s, s.mpid, u.next_check_ms FROM segment_schedule s"
            f" LEFT JOIN segment_users u ON u.mpid = s.mpid WHERE {where}"
            " ORDER BY s.at_s, s.mpid LIMIT ?",
            (now_s, *(after or ()), SCHEDULE_PAGE),
        )
        return [(int(a), int(m), None if n is None else int(n)) for a, m, n in rows]

    def commit(
        self,
        changes: SegmentChanges,
        checkpoint: Checkpoint | None = None,
        since: Since | None = None,
    ) -> None:
        """Apply ``changes`` and ``checkpoint`` in one transaction (if the checkpoint is
        still at ``since``): user states written,
        then dropped; memberships joined and left (see :func:`net_memberships`); pending
        changes added, then flushed; conditions and builds written; the checkpoint's
        partitions moved. Joins, leaves and builds of audiences that do not exist, and
        pending changes of connections that do not exist, are left out. Not synced on its
        own: everything here is derived from the log, and the checkpoint goes with it
        (:meth:`sync` makes it durable before it has effects elsewhere)."""
        if not changes and not checkpoint:
            return
        # rows first (the stage runs this on a thread of its own, and the rows' Python
        # would hold the GIL in the transaction)
        # by MPID: neighbouring keys one after the other down the B-tree
        users = [
            (u.mpid, _encode(u), u.next_check_ms)
            for u in sorted(changes.users, key=lambda u: u.mpid)
        ]
        conditions = [(c.id, _encode(c)) for c in changes.conditions]
        builds = [(b.audience_id, _encode(b)) for b in changes.builds]
        joined, left = net_memberships(changes.joined, changes.left)
        with self._db.transaction(synced=False) as conn:
            if since is not None:
                check_since("segment stage", self.checkpoint(), since)
            audiences = {int(r[0]) for r in conn.execute("SELECT id FROM audiences")}
            connected: set[tuple[int, str]] = set()
            if changes.pending:
                rows = conn.execute("SELECT audience_id, output FROM audience_connections")
                connected = {(int(a), str(o)) for a, o in rows}
            insert_rows(  # an upsert updates a stored user in place (REPLACE would delete
                # it and insert it again, which costs more)
                conn,
                "INSERT INTO segment_users (mpid, doc, next_check_ms)",
                users,
                "ON CONFLICT (mpid) DO UPDATE SET doc = excluded.doc,"
                " next_check_ms = excluded.next_check_ms",
            )
            insert_rows(
                conn,
                "INSERT OR IGNORE INTO segment_schedule (at_s, mpid)",
                sorted({(n // 1000, m) for m, _, n in users if n is not None}),
            )
            conn.executemany(
                "DELETE FROM segment_users WHERE mpid = ?", [(m,) for m in changes.dropped_users]
            )
            added = rows_returning(
                conn,
                "INSERT OR IGNORE INTO memberships (mpid, audience_id)",
                sorted((m, a) for a, m in joined if a in audiences),
                "RETURNING audience_id",
            )
            sizes = Counter(int(r[0]) for r in added)
            for mpid, audience_id in sorted((m, a) for a, m in left if a in audiences):
                sizes[audience_id] -= conn.execute(
                    "DELETE FROM memberships WHERE mpid = ? AND audience_id = ?",
                    (mpid, audience_id),
                ).rowcount
            conn.executemany(
                "INSERT INTO audience_sizes (audience_id, members) VALUES (?, ?)"
                " ON CONFLICT (audience_id) DO UPDATE SET members = members + excluded.members",
                [(a, n) for a, n in sorted(sizes.items()) if n],
            )
            insert_rows(
                conn,
                "INSERT INTO pending_changes (output, audience_id, mpid, action, at_ms)",
                [
                    (p.output, p.audience_id, p.mpid, p.action, p.at_ms)
                    for p in changes.pending
                    if (p.audience_id, p.output) in connected
                ],
            )
            conn.executemany(
                "DELETE FROM pending_changes WHERE seq = ?", [(s,) for s in changes.flushed]
            )
            insert_rows(conn, "INSERT OR REPLACE INTO segment_conditions (id, doc)", conditions)
            insert_rows(
                conn,
                "INSERT OR REPLACE INTO audience_builds (audience_id, doc)",
                [b for b in builds if b[0] in audiences],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO segment_checkpoint (part, seq) VALUES (?, ?)",
                [(p, pos.offset) for p, pos in (checkpoint or {}).items()],
            )

    def sync(self) -> None:
        """Make every commit so far durable: a synced commit (of a counter of its own),
        whose fsync of the WAL covers every commit before it."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO segment_meta (name, value) VALUES ('synced', 1)"
                " ON CONFLICT (name) DO UPDATE SET value = value + 1"
            )

    def members(self, audience_id: int, after: int | None, limit: int) -> list[int]:
        """Up to ``limit`` members above ``after`` (from the lowest when ``None``),
        ascending: a scan of the memberships in MPID order from ``after``, so a page of an
        audience holding a share *s* of the users reads about ``limit / s`` rows (the whole
        table, for an audience with fewer members than ``limit`` left)."""
        if after is None:
            sql = "SELECT mpid FROM memberships WHERE audience_id = ? ORDER BY mpid LIMIT ?"
            params: tuple[int, ...] = (audience_id, max(limit, 0))
        else:
            sql = (
                "SELECT mpid FROM memberships WHERE audience_id = ? AND mpid > ?"
                " ORDER BY mpid LIMIT ?"
            )
            params = (audience_id, after, max(limit, 0))
        return [int(r[0]) for r in self._db.conn().execute(sql, params)]

    def sizes(self) -> dict[int, int]:
        """How many members each audience has (those without members left out)."""
        rows = self._db.conn().execute(
            "SELECT audience_id, members FROM audience_sizes WHERE members > 0"
        )
        return {int(a): int(n) for a, n in rows}

    def memberships(self, mpid: int) -> list[int]:
        """The audiences ``mpid`` belongs to, ascending (one range of the primary key)."""
        rows = self._db.conn().execute(
            "SELECT audience_id FROM memberships"
            " WHERE mpid = ? AND audience_id IN (SELECT id FROM audiences)"
            " ORDER BY audience_id",
            (mpid,),
        )
        return [int(r[0]) for r in rows]

    def pending(self, output: str, limit: int) -> list[PendingChange]:
        """Up to ``limit`` changes waiting for ``output``, by seq."""
        rows = self._db.conn().execute(
            f"SELECT {_PENDING_COLUMNS} FROM pending_changes WHERE output = ? ORDER BY seq LIMIT ?",
            (output, max(limit, 0)),
        )
        return [
            PendingChange(
                seq=int(r[0]),
                output=str(r[1]),
                audience_id=int(r[2]),
                mpid=int(r[3]),
                action=cast(AudienceAction, str(r[4])),
                at_ms=int(r[5]),
            )
            for r in rows
        ]

    def pending_outputs(self) -> dict[str, tuple[int, int]]:
        """For each output with changes waiting: how many, and the earliest ``at_ms``."""
        rows = self._db.conn().execute(
            "SELECT output, count(*), min(at_ms) FROM pending_changes GROUP BY output"
        )
        return {str(o): (int(n), int(at)) for o, n, at in rows}

    def reset(self) -> None:
        """Forget the stage's records (the audiences and their connections stay; the
        sequence of pending seqs goes on)."""
        with self._db.transaction() as conn:
            for table in (
                "segment_conditions",
                "audience_builds",
                "segment_users",
                "segment_schedule",
                "memberships",
                "audience_sizes",
                "pending_changes",
                "segment_checkpoint",
            ):
                conn.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        """Close every connection."""
        self._db.close()


def _key_memberships_by_user(db: SqliteDatabase) -> None:
    """Rebuild a ``memberships`` table keyed by (audience, MPID), as earlier versions kept
    it, keyed by (MPID, audience): once, at open, in one transaction (the size triggers of
    those versions go with the old table)."""
    conn = db.conn()
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'memberships'").fetchone()
    if row is None or "PRIMARY KEY (audience_id, mpid)" not in str(row[0]):
        return
    with db.transaction() as tx:
        tx.execute(
            "CREATE TABLE memberships_by_user (mpid INTEGER NOT NULL,"
            " audience_id INTEGER NOT NULL, PRIMARY KEY (mpid, audience_id)) WITHOUT ROWID"
        )
        tx.execute(
            "INSERT INTO memberships_by_user (mpid, audience_id)"
            " SELECT mpid, audience_id FROM memberships ORDER BY mpid, audience_id"
        )
        tx.execute("DROP TABLE memberships")
        tx.execute("ALTER TABLE memberships_by_user RENAME TO memberships")


def _schedule_from_index(db: SqliteDatabase) -> None:
    """Fill the schedule from the users' ``next_check_ms`` in a store of an earlier version,
    which kept them in an index instead (dropped here): once, at open."""
    conn = db.conn()
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'segment_users_due'").fetchone():
        with db.transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO segment_schedule (at_s, mpid)"
                " SELECT next_check_ms / 1000, mpid FROM segment_users"
                " WHERE next_check_ms IS NOT NULL"
            )
            tx.execute("DROP INDEX segment_users_due")


def net_memberships(
    joined: Sequence[tuple[int, int]], left: Sequence[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The memberships a commit adds and removes, from the joins and leaves it lists.

    One commit may cover several evaluations of a user, so a membership may be both joined
    and left in it; its joins and leaves then alternate, in an order the lists do not keep.
    The balance says where it ends: more joins, in; more leaves, out; as many, where it
    was (out, in, out or in, out, in)."""
    balance: dict[tuple[int, int], int] = {}
    for pair in joined:
        balance[pair] = balance.get(pair, 0) + 1
    for pair in left:
        balance[pair] = balance.get(pair, 0) - 1
    return [p for p, n in balance.items() if n > 0], [p for p, n in balance.items() if n < 0]


def _audience(row: Sequence[object]) -> AudienceRecord:
    definition = row[3]
    assert isinstance(definition, bytes | memoryview)
    return AudienceRecord(
        id=int(str(row[0])),
        name=str(row[1]),
        description=str(row[2]),
        definition=bytes(definition),
        created_at_ms=int(str(row[4])),
        updated_at_ms=int(str(row[5])),
        version=int(str(row[6])),
    )
