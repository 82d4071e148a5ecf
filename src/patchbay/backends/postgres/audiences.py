"""The audience store on PostgreSQL: audiences, their connections to outputs and the segment
stage's state, shared by every Patchbay process of a deployment.

Same records and behaviour as :mod:`patchbay.backends.sqlite.audiences` (the reference);
what differs is that several processes write at once, so what SQLite's single writer
serialised is serialised here by PostgreSQL. Every method is one transaction.

* **Audience ids** come from an ``INTEGER`` identity column: a sequence, so processes adding
  audiences at once never get the same id, ids increase and a deleted one is never given
  again (a failed insert also uses one up). The column is int32 as Firehose carries it:
  past :data:`~patchbay.backends.records.MAX_AUDIENCE_ID` the sequence refuses, and that is
  a :class:`~patchbay.errors.PatchbayError`. Names are unique by constraint
  (:class:`~patchbay.backends.records.DuplicateName`, also between racing processes).
* **The version** is a row of ``segment_meta`` incremented in the transaction of every
  owner's write, not a sequence: a sequence moves before the write commits, so a reader
  could see the new version with the old records and never reload.
* **Owner's writes against the stage's commits.** A commit takes ``FOR KEY SHARE`` locks on
  the audiences it joins, leaves or builds, and on the connections it adds pending changes
  to: a concurrent :meth:`~PostgresAudienceStore.delete_audience` or
  :meth:`~PostgresAudienceStore.remove_audience_connection` waits for the commit and then
  removes what it wrote, or removed the row first and the commit leaves those changes out.
  Neither leaves memberships, member counts, builds or pending changes behind. Updates of
  an audience or of a connection's document take no conflicting lock (``FOR NO KEY
  UPDATE``): the stage's commits never wait for them, nor they for the commits.
  :meth:`~PostgresAudienceStore.put_audience_connection` and
  :meth:`~PostgresAudienceStore.subscribed` lock the connection they read and rewrite, so
  the partner's answer is never lost to a concurrent put.
* **Pending seqs** are allocated from the ``pending_seq`` row of ``segment_meta``, locked
  until the commit ends: commits adding pending changes are serialised there, so seqs are
  visible in the order they were given (a reader never sees a seq appear below one it has
  already read), and never reused, also after a reset.
* **Set-based commits.** A commit is a handful of statements whatever its size: user
  states, memberships, conditions, builds and the checkpoint are ``unnest``-ed arrays,
  upserted with ``ON CONFLICT ... DO UPDATE``. Joins, leaves and the member counts of
  ``audience_sizes`` are one statement (data-modifying CTEs) that updates the counts in
  audience order. Rows are sorted by key in every statement, so that concurrent commits
  lock rows in one order; should PostgreSQL still find a deadlock, it fails one commit
  whole, which the stage makes again like any failed commit. Documents are sent as binary
  parameters (``%b``): as text, their hex escaping took most of a commit's time.
* **Fenced checkpoints.** A commit given the positions it started from (``since``) locks
  the stage's checkpoint rows of those partitions first and applies only if they did not
  move (:mod:`.fencing`): a processor that lost a partition to another never counts its
  batches a second time.
* **What is not serialised**: the read-modify-write of a user's state (``users`` then
  ``commit``) across processes. The segment stage must give each user one writer.
* **Durability.** Every commit is durable when it returns (PostgreSQL's ``COMMIT``), so
  :meth:`~PostgresAudienceStore.sync` has nothing to do.

Connections are msgpack documents sealed with :mod:`patchbay.secretbox` (they hold the
subscription settings and the partner's answer); user states, conditions and builds are
plain msgpack ``bytea``; MPIDs and times are ``BIGINT``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import cast

import msgspec
import psycopg
from psycopg.rows import TupleRow

from patchbay.backends.postgres.db import Connection, PostgresDatabase
from patchbay.backends.postgres.fencing import fence
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
)
from patchbay.backends.sqlite.audiences import net_memberships
from patchbay.errors import PatchbayError
from patchbay.secretbox import SecretBox

MIGRATIONS = [
    """
    CREATE TABLE audiences (
        -- int32 ids (MAX_AUDIENCE_ID), from a sequence that refuses to go past it
        id INTEGER GENERATED ALWAYS AS IDENTITY (MAXVALUE 2147483647) PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        definition BYTEA NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        version BIGINT NOT NULL
    );
    CREATE TABLE segment_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO segment_meta (name, value) VALUES ('version', 0), ('pending_seq', 0);
    CREATE TABLE audience_connections (
        audience_id INTEGER NOT NULL,
        output TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (audience_id, output)
    );
    CREATE TABLE segment_conditions (id BIGINT PRIMARY KEY, doc BYTEA NOT NULL);
    CREATE TABLE audience_builds (audience_id INTEGER PRIMARY KEY, doc BYTEA NOT NULL);
    CREATE TABLE segment_users (
        mpid BIGINT PRIMARY KEY,
        doc BYTEA NOT NULL,
        next_check_ms BIGINT
    );
    CREATE INDEX segment_users_due ON segment_users (next_check_ms, mpid)
        WHERE next_check_ms IS NOT NULL;
    CREATE TABLE memberships (
        audience_id INTEGER NOT NULL,
        mpid BIGINT NOT NULL,
        PRIMARY KEY (audience_id, mpid)
    );
    CREATE TABLE audience_sizes (audience_id INTEGER PRIMARY KEY, members BIGINT NOT NULL);
    CREATE TABLE pending_changes (
        seq BIGINT PRIMARY KEY,
        output TEXT NOT NULL,
        audience_id INTEGER NOT NULL,
        mpid BIGINT NOT NULL,
        action TEXT NOT NULL,
        at_ms BIGINT NOT NULL
    );
    CREATE INDEX pending_changes_output ON pending_changes (output, seq);
    CREATE TABLE segment_checkpoint (part INTEGER PRIMARY KEY, seq BIGINT NOT NULL);
    """,
]

_AUDIENCE_COLUMNS = "id, name, description, definition, created_at_ms, updated_at_ms, version"
_PENDING_COLUMNS = "seq, output, audience_id, mpid, action, at_ms"

#: Every write of the owner's records runs this in its transaction.
_BUMP_VERSION = "UPDATE segment_meta SET value = value + 1 WHERE name = 'version'"

#: Joins and leaves (disjoint: :func:`net_memberships`) and the member counts they change,
#: in one statement; the counts are updated in audience order.
_MEMBERSHIPS = """
WITH joined AS (
    INSERT INTO memberships (audience_id, mpid)
    SELECT a, m FROM unnest(%(ja)s::int[], %(jm)s::bigint[]) AS j(a, m)
    ON CONFLICT DO NOTHING
    RETURNING audience_id
), removed AS (
    DELETE FROM memberships USING unnest(%(la)s::int[], %(lm)s::bigint[]) AS l(a, m)
    WHERE memberships.audience_id = l.a AND memberships.mpid = l.m
    RETURNING memberships.audience_id
), delta AS (
    SELECT audience_id, sum(n) AS n FROM (
        SELECT audience_id, 1 AS n FROM joined
        UNION ALL SELECT audience_id, -1 FROM removed
    ) AS changes GROUP BY audience_id
)
INSERT INTO audience_sizes (audience_id, members)
SELECT audience_id, n FROM delta WHERE n <> 0 ORDER BY audience_id
ON CONFLICT (audience_id) DO UPDATE SET members = audience_sizes.members + EXCLUDED.members
"""

_encode = msgspec.msgpack.Encoder().encode
_decode_user = msgspec.msgpack.Decoder(SegmentUser).decode
_decode_connection = msgspec.msgpack.Decoder(AudienceConnection).decode
_decode_condition = msgspec.msgpack.Decoder(ConditionRecord).decode
_decode_build = msgspec.msgpack.Decoder(AudienceBuild).decode


class PostgresAudienceStore:
    """Audiences, their connections and the segment stage's state in PostgreSQL."""

    def __init__(self, db: PostgresDatabase, box: SecretBox) -> None:
        self._db = db
        self._box = box
        db.migrate("audiences", MIGRATIONS)

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[TupleRow]:
        """The rows of one query, in a transaction of its own."""
        with self._db.transaction() as conn:
            return conn.execute(sql, params).fetchall()

    def _connection(self, doc: str) -> AudienceConnection:
        return _decode_connection(self._box.open_bytes(doc))

    # -- audiences -----------------------------------------------------------------------

    def add_audience(self, audience: AudienceRecord) -> AudienceRecord:
        """Store a new audience under the next id of the sequence; raises
        :class:`DuplicateName` if the name is taken, :class:`PatchbayError` once the ids
        reached :data:`MAX_AUDIENCE_ID`."""
        try:
            with self._db.transaction() as conn:
                row = conn.execute(
                    "INSERT INTO audiences (name, description, definition, created_at_ms,"
                    " updated_at_ms, version) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        audience.name,
                        audience.description,
                        audience.definition,
                        audience.created_at_ms,
                        audience.updated_at_ms,
                        audience.version,
                    ),
                ).fetchone()
                conn.execute(_BUMP_VERSION)
        except psycopg.errors.UniqueViolation:
            raise DuplicateName(f"an audience named {audience.name!r} already exists") from None
        except psycopg.errors.SequenceGeneratorLimitExceeded:
            raise PatchbayError(f"no audience id is left (ids stop at {MAX_AUDIENCE_ID})") from None
        assert row is not None
        return msgspec.structs.replace(audience, id=int(row[0]))

    def update_audience(self, audience: AudienceRecord) -> bool:
        """Replace the audience's name, description, definition, version and
        ``updated_at_ms`` (``created_at_ms`` stays); whether it existed."""
        try:
            with self._db.transaction() as conn:
                changed = conn.execute(
                    "UPDATE audiences SET name = %s, description = %s, definition = %s,"
                    " version = %s, updated_at_ms = %s WHERE id = %s",
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
        except psycopg.errors.UniqueViolation:
            raise DuplicateName(f"an audience named {audience.name!r} already exists") from None
        return changed > 0

    def get_audience(self, name_or_id: str | int) -> AudienceRecord | None:
        """The audience with this name (``str``) or id (``int``)."""
        column = "name" if isinstance(name_or_id, str) else "id"
        rows = self._read(
            f"SELECT {_AUDIENCE_COLUMNS} FROM audiences WHERE {column} = %s", (name_or_id,)
        )
        return _audience(rows[0]) if rows else None

    def list_audiences(self) -> list[AudienceRecord]:
        """Every audience, by id."""
        return [
            _audience(r)
            for r in self._read(f"SELECT {_AUDIENCE_COLUMNS} FROM audiences ORDER BY id")
        ]

    def delete_audience(self, audience_id: int) -> bool:
        """Remove an audience with its connections, build, memberships, member count and
        pending changes, in one transaction (a commit holding the audience finishes
        first); whether it existed."""
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM audiences WHERE id = %s", (audience_id,)).rowcount
            if deleted:
                for table in (
                    "audience_connections",
                    "audience_builds",
                    "memberships",
                    "audience_sizes",
                    "pending_changes",
                ):
                    conn.execute(f"DELETE FROM {table} WHERE audience_id = %s", (audience_id,))
                conn.execute(_BUMP_VERSION)
        return deleted > 0

    def version(self) -> int:
        """The count of the owner's writes so far (0: none)."""
        rows = self._read("SELECT value FROM segment_meta WHERE name = 'version'")
        return int(rows[0][0])

    # -- connections ---------------------------------------------------------------------

    def put_audience_connection(self, connection: AudienceConnection) -> None:
        """Create or replace a connection, keeping ``partner_settings`` and
        ``subscribed_at_ms`` of the one it replaces; raises :class:`PatchbayError` if the
        audience does not exist."""
        audience_id, output = connection.audience_id, connection.output
        with self._db.transaction() as conn:
            if not conn.execute(
                "SELECT 1 FROM audiences WHERE id = %s FOR KEY SHARE", (audience_id,)
            ).fetchone():
                raise PatchbayError(f"no audience with id {audience_id}")
            old = _locked_connection(conn, audience_id, output)
            if old is not None:
                kept = self._connection(old)
                connection = msgspec.structs.replace(
                    connection,
                    partner_settings=kept.partner_settings,
                    subscribed_at_ms=kept.subscribed_at_ms,
                )
            conn.execute(
                "INSERT INTO audience_connections (audience_id, output, doc) VALUES (%s, %s, %s)"
                " ON CONFLICT (audience_id, output) DO UPDATE SET doc = EXCLUDED.doc",
                (audience_id, output, self._box.seal_bytes(_encode(connection))),
            )
            conn.execute(_BUMP_VERSION)

    def list_audience_connections(self) -> list[AudienceConnection]:
        """Every audience connection, by audience then output."""
        rows = self._read("SELECT doc FROM audience_connections ORDER BY audience_id, output")
        return [self._connection(r[0]) for r in rows]

    def remove_audience_connection(self, audience_id: int, output: str) -> bool:
        """Remove a connection and its pending changes (a commit holding the connection
        finishes first); whether it existed."""
        with self._db.transaction() as conn:
            removed = conn.execute(
                "DELETE FROM audience_connections WHERE audience_id = %s AND output = %s",
                (audience_id, output),
            ).rowcount
            if removed:
                conn.execute(
                    "DELETE FROM pending_changes WHERE output = %s AND audience_id = %s",
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
            old = _locked_connection(conn, audience_id, output)
            if old is None:
                return False
            connection = msgspec.structs.replace(
                self._connection(old),
                partner_settings=dict(partner_settings),
                subscribed_at_ms=at_ms,
            )
            conn.execute(
                "UPDATE audience_connections SET doc = %s WHERE audience_id = %s AND output = %s",
                (self._box.seal_bytes(_encode(connection)), audience_id, output),
            )
            conn.execute(_BUMP_VERSION)
        return True

    # -- the segment stage's state -------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The stage's checkpoint, by partition."""
        rows = self._read("SELECT part, seq FROM segment_checkpoint")
        return {int(p): LogPosition(int(p), int(o)) for p, o in rows}

    def conditions(self) -> list[ConditionRecord]:
        """Every registered condition, by id."""
        rows = self._read("SELECT doc FROM segment_conditions ORDER BY id")
        return [_decode_condition(r[0]) for r in rows]

    def builds(self) -> list[AudienceBuild]:
        """Every build, by audience id."""
        rows = self._read("SELECT doc FROM audience_builds ORDER BY audience_id")
        return [_decode_build(r[0]) for r in rows]

    def users(self, mpids: Collection[int]) -> dict[int, SegmentUser]:
        """The states of those of ``mpids`` that have one (one statement)."""
        if not mpids:
            return {}
        rows = self._read(
            "SELECT mpid, doc FROM segment_users WHERE mpid = ANY(%s::bigint[])", (list(mpids),)
        )
        return {int(m): _decode_user(doc) for m, doc in rows}

    def scan_users(self, after: int | None, limit: int) -> list[SegmentUser]:
        """Up to ``limit`` user states above ``after`` (from the lowest MPID when ``None``:
        MPIDs may be negative), by MPID."""
        above, value = _above(after)
        rows = self._read(
            f"SELECT doc FROM segment_users WHERE {above} ORDER BY mpid LIMIT %s",
            (value, max(limit, 0)),
        )
        return [_decode_user(r[0]) for r in rows]

    def count_users(self) -> int:
        """How many users have a state."""
        return int(self._read("SELECT count(*) FROM segment_users")[0][0])

    def due_users(self, now_ms: int, limit: int) -> list[int]:
        """Up to ``limit`` MPIDs due at ``now_ms``, earliest first (then by MPID)."""
        rows = self._read(
            "SELECT mpid FROM segment_users WHERE next_check_ms <= %s"
            " ORDER BY next_check_ms, mpid LIMIT %s",
            (now_ms, max(limit, 0)),
        )
        return [int(r[0]) for r in rows]

    def commit(
        self,
        changes: SegmentChanges,
        checkpoint: Checkpoint | None = None,
        since: Since | None = None,
    ) -> None:
        """Apply ``changes`` and ``checkpoint`` in one transaction (with ``since``, fenced
        first: :mod:`.fencing`), a statement per kind of
        record: user states written (the last of an MPID wins), then dropped; memberships
        joined and left (see :func:`net_memberships`) with the member counts; pending
        changes added under the next seqs, then flushed; conditions and builds written; the
        checkpoint's partitions moved. Joins, leaves and builds of audiences that do not
        exist, and pending changes of connections that do not exist, are left out."""
        if not changes and not checkpoint:
            return
        # rows first, sorted by key: concurrent commits lock rows in the same order
        users = sorted({u.mpid: u for u in changes.users}.items())
        conditions = sorted({c.id: c for c in changes.conditions}.items())
        builds = sorted(
            (a, _encode(b)) for a, b in {b.audience_id: b for b in changes.builds}.items()
        )
        encoded_users = [_encode(u) for _, u in users]
        encoded_conditions = [_encode(c) for _, c in conditions]
        joined, left = (sorted(p) for p in net_memberships(changes.joined, changes.left))
        parts = sorted((checkpoint or {}).items())
        with self._db.transaction() as conn:
            fence(conn, "segment stage", "segment_checkpoint", since, checkpoint or {})
            audiences = _held_audiences(conn, {a for a, _ in (*joined, *left, *builds)})
            if users:
                conn.execute(
                    "INSERT INTO segment_users (mpid, doc, next_check_ms)"
                    " SELECT * FROM unnest(%s::bigint[], %b::bytea[], %s::bigint[])"
                    " ON CONFLICT (mpid) DO UPDATE"
                    " SET doc = EXCLUDED.doc, next_check_ms = EXCLUDED.next_check_ms",
                    ([m for m, _ in users], encoded_users, [u.next_check_ms for _, u in users]),
                )
            if changes.dropped_users:
                conn.execute(
                    "DELETE FROM segment_users WHERE mpid = ANY(%s::bigint[])",
                    (sorted(set(changes.dropped_users)),),
                )
            joined = [p for p in joined if p[0] in audiences]
            left = [p for p in left if p[0] in audiences]
            if joined or left:
                conn.execute(
                    _MEMBERSHIPS,
                    {
                        "ja": [a for a, _ in joined],
                        "jm": [m for _, m in joined],
                        "la": [a for a, _ in left],
                        "lm": [m for _, m in left],
                    },
                )
            if changes.pending:
                _add_pending(conn, changes)
            if changes.flushed:
                conn.execute(
                    "DELETE FROM pending_changes WHERE seq = ANY(%s::bigint[])",
                    (sorted(set(changes.flushed)),),
                )
            if conditions:
                conn.execute(
                    "INSERT INTO segment_conditions (id, doc)"
                    " SELECT * FROM unnest(%s::bigint[], %b::bytea[])"
                    " ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc",
                    ([i for i, _ in conditions], encoded_conditions),
                )
            builds = [b for b in builds if b[0] in audiences]
            if builds:
                conn.execute(
                    "INSERT INTO audience_builds (audience_id, doc)"
                    " SELECT * FROM unnest(%s::int[], %b::bytea[])"
                    " ON CONFLICT (audience_id) DO UPDATE SET doc = EXCLUDED.doc",
                    ([a for a, _ in builds], [doc for _, doc in builds]),
                )
            if parts:
                conn.execute(
                    "INSERT INTO segment_checkpoint (part, seq)"
                    " SELECT * FROM unnest(%s::int[], %s::bigint[])"
                    " ON CONFLICT (part) DO UPDATE SET seq = EXCLUDED.seq",
                    ([p for p, _ in parts], [pos.offset for _, pos in parts]),
                )

    def sync(self) -> None:
        """Nothing to do: unlike the embedded store's, every :meth:`commit` is durable
        when it returns (PostgreSQL syncs its WAL at ``COMMIT``, as configured on the
        server: ``synchronous_commit``)."""

    def members(self, audience_id: int, after: int | None, limit: int) -> list[int]:
        """Up to ``limit`` members above ``after`` (from the lowest when ``None``),
        ascending."""
        above, value = _above(after)
        rows = self._read(
            f"SELECT mpid FROM memberships WHERE audience_id = %s AND {above}"
            " ORDER BY mpid LIMIT %s",
            (audience_id, value, max(limit, 0)),
        )
        return [int(r[0]) for r in rows]

    def sizes(self) -> dict[int, int]:
        """How many members each audience has (those without members left out)."""
        rows = self._read("SELECT audience_id, members FROM audience_sizes WHERE members > 0")
        return {int(a): int(n) for a, n in rows}

    def memberships(self, mpid: int) -> list[int]:
        """The audiences ``mpid`` belongs to, ascending (a primary-key look-up per audience:
        there is no index by mpid)."""
        rows = self._read(
            "SELECT id FROM audiences a WHERE EXISTS (SELECT 1 FROM memberships m"
            " WHERE m.audience_id = a.id AND m.mpid = %s) ORDER BY id",
            (mpid,),
        )
        return [int(r[0]) for r in rows]

    def pending(self, output: str, limit: int) -> list[PendingChange]:
        """Up to ``limit`` changes waiting for ``output``, by seq."""
        rows = self._read(
            f"SELECT {_PENDING_COLUMNS} FROM pending_changes WHERE output = %s"
            " ORDER BY seq LIMIT %s",
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
        rows = self._read(
            "SELECT output, count(*), min(at_ms) FROM pending_changes GROUP BY output"
        )
        return {str(o): (int(n), int(at)) for o, n, at in rows}

    def reset(self) -> None:
        """Forget the stage's records (the audiences and their connections stay; the
        pending seqs go on: their counter is in ``segment_meta``)."""
        with self._db.transaction() as conn:
            conn.execute(
                "TRUNCATE segment_conditions, audience_builds, segment_users, memberships,"
                " audience_sizes, pending_changes, segment_checkpoint"
            )

    def close(self) -> None:
        """Nothing to release: the connections are the shared database's."""


def _above(after: int | None) -> tuple[str, int]:
    """The condition on ``mpid`` of a page after ``after`` (from the lowest when ``None``)
    and its parameter: a plain range either way, which the primary key's index serves
    (``%s IS NULL OR mpid > %s`` would not, once the statement is prepared)."""
    return ("mpid > %s", after) if after is not None else ("mpid >= %s", -(2**63))


def _locked_connection(conn: Connection, audience_id: int, output: str) -> str | None:
    """The sealed document of a connection, locked against other writers of it until the
    transaction ends (not against the stage's commits: ``FOR NO KEY UPDATE``)."""
    row = conn.execute(
        "SELECT doc FROM audience_connections WHERE audience_id = %s AND output = %s"
        " FOR NO KEY UPDATE",
        (audience_id, output),
    ).fetchone()
    return str(row[0]) if row else None


def _held_audiences(conn: Connection, ids: set[int]) -> set[int]:
    """Those of ``ids`` that are audiences, held against deletion until the transaction
    ends (not against updates: ``FOR KEY SHARE``)."""
    if not ids:
        return set()
    rows = conn.execute(
        "SELECT id FROM audiences WHERE id = ANY(%s::bigint[]) ORDER BY id FOR KEY SHARE",
        (sorted(ids),),
    )
    return {int(r[0]) for r in rows}


def _add_pending(conn: Connection, changes: SegmentChanges) -> None:
    """Insert the pending changes of connections that exist (held against removal) under
    the next seqs, taken from the ``pending_seq`` counter (locked until the commit ends)."""
    rows = conn.execute(
        "SELECT audience_id, output FROM audience_connections"
        " WHERE audience_id = ANY(%s::bigint[]) ORDER BY audience_id, output FOR KEY SHARE",
        (sorted({p.audience_id for p in changes.pending}),),
    )
    connected = {(int(a), str(o)) for a, o in rows}
    kept = [p for p in changes.pending if (p.audience_id, p.output) in connected]
    if not kept:
        return
    row = conn.execute(
        "UPDATE segment_meta SET value = value + %s WHERE name = 'pending_seq' RETURNING value",
        (len(kept),),
    ).fetchone()
    assert row is not None
    first = int(row[0]) - len(kept) + 1
    conn.execute(
        "INSERT INTO pending_changes (seq, output, audience_id, mpid, action, at_ms)"
        " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::bigint[],"
        " %s::text[], %s::bigint[])",
        (
            list(range(first, first + len(kept))),
            [p.output for p in kept],
            [p.audience_id for p in kept],
            [p.mpid for p in kept],
            [p.action for p in kept],
            [p.at_ms for p in kept],
        ),
    )


def _audience(row: TupleRow) -> AudienceRecord:
    return AudienceRecord(
        id=int(row[0]),
        name=str(row[1]),
        description=str(row[2]),
        definition=bytes(row[3]),
        created_at_ms=int(row[4]),
        updated_at_ms=int(row[5]),
        version=int(row[6]),
    )
