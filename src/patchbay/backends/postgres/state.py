"""The resolve state on PostgreSQL: profiles, identity links, merges, resolved users and the
resolve checkpoint (component ``state``).

Profiles are msgpack documents (``bytea``) keyed by MPID (``bigint``); identity links are
rows unique on (type, value, MPID) whose identity column orders them (oldest link first: a
link removed and made again is the newest); merges are ordered the same way. Every call is
one statement per kind of row, over arrays sent in binary (``%b``) and read with ``= ANY``
or ``unnest``: the resolve stage's look-ups of a chunk are one round trip each, not one per
identity or profile.

What is serialised, and why:

* :meth:`PostgresStateStore.commit` is one transaction: the profiles, links, merges and
  resolved users of a chunk and the checkpoint of the log they include become visible
  together or not at all, so a resolver that restarts from the checkpoint never applies a
  chunk twice nor loses one. Links are inserted sorted by identity (``ON CONFLICT DO
  NOTHING``) and profiles upserted in MPID order, so that two commits touching the same
  rows lock them in the same order (they wait for each other, never deadlock).
* A commit given the positions it started from (``since``) is fenced
  (:mod:`.fencing`): the resolve checkpoint rows of its partitions are locked first, in
  partition order, and the commit applies only if they did not move, so a resolver that
  lost a partition to another (the log's consumer group) never applies a chunk the new
  owner applies too.
* Nothing else is locked: the store does not decide which process resolves which
  partition. Two resolvers writing the same profile would each overwrite the other's read
  (last commit wins); the users of one identity must stay on one resolver.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from patchbay.backends.postgres.db import PostgresDatabase
from patchbay.backends.postgres.fencing import fence
from patchbay.backends.records import Checkpoint, LogPosition, MergeRecord, Since, StateChanges
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile

MIGRATIONS = [
    """
    CREATE TABLE profiles (
        mpid BIGINT PRIMARY KEY,
        doc BYTEA NOT NULL
    );
    CREATE TABLE identity_links (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        type TEXT NOT NULL,
        value TEXT NOT NULL,
        mpid BIGINT NOT NULL,
        UNIQUE (type, value, mpid)
    );
    CREATE TABLE merges (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        from_mpid BIGINT NOT NULL,
        to_mpid BIGINT NOT NULL,
        reason TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        log_offset BIGINT NOT NULL
    );
    CREATE INDEX merges_from ON merges (from_mpid);
    CREATE INDEX merges_to ON merges (to_mpid);
    CREATE TABLE resolve_offset (
        part INTEGER PRIMARY KEY,
        seq BIGINT NOT NULL
    );
    CREATE TABLE resolved (
        part INTEGER NOT NULL,
        seq BIGINT NOT NULL,
        mpid BIGINT NOT NULL,
        PRIMARY KEY (part, seq)
    );
    """
]

_encode = msgspec.msgpack.Encoder().encode
_decode_profile = msgspec.msgpack.Decoder(Profile).decode

_TABLES = "profiles, identity_links, merges, resolve_offset, resolved"


class PostgresStateStore:
    """Profiles, identity links, merges, resolved users and the resolve checkpoint."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        db.migrate("state", MIGRATIONS)

    def users_with(self, identity: Identity) -> list[int]:
        """The MPIDs linked to ``identity``, oldest link first."""
        return self.users_with_each([identity]).get(identity, [])

    def profile(self, mpid: int) -> Profile | None:
        """The stored profile of ``mpid``."""
        return self.profiles([mpid]).get(mpid)

    def users_with_each(self, identities: Collection[Identity]) -> dict[Identity, list[int]]:
        """:meth:`users_with` of many identities, in one statement (a join with the asked
        pairs: one probe of the ``(type, value, mpid)`` index each, a plan that holds even
        when the table's statistics are stale, which ``type = .. AND value = ANY(..)`` does
        not); identities linked to nobody are left out."""
        asked = set(identities)
        if not asked:
            return {}
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT l.type, l.value, l.mpid FROM identity_links l"
                " JOIN unnest(%b::text[], %b::text[]) AS q (type, value)"
                " ON l.type = q.type AND l.value = q.value ORDER BY l.id",
                ([i.type for i in asked], [i.value for i in asked]),
            ).fetchall()
        found: dict[Identity, list[int]] = {}
        for kind, value, mpid in rows:
            found.setdefault(Identity(kind, value), []).append(int(mpid))
        return found

    def profiles(self, mpids: Collection[int]) -> dict[int, Profile]:
        """The stored profiles among ``mpids``, in one statement."""
        if not mpids:
            return {}
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT mpid, doc FROM profiles WHERE mpid = ANY(%b::bigint[])", (list(mpids),)
            ).fetchall()
        return {int(mpid): _decode_profile(doc) for mpid, doc in rows}

    def checkpoint(self) -> Checkpoint:
        """The log positions included in the state, by partition."""
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT part, seq FROM resolve_offset").fetchall()
        return _checkpoint(rows)

    def commit(
        self, changes: StateChanges, checkpoint: Checkpoint, since: Since | None = None
    ) -> None:
        """Write ``changes`` and ``checkpoint`` in one transaction, a statement per kind of
        row (see the module's docstring for the order rows are locked in); with ``since``,
        fenced first (:func:`~.fencing.fence`)."""
        profiles = sorted(changes.profiles)
        unlinked = [(i.type, i.value, m) for i, mpids in changes.unlinked.items() for m in mpids]
        # sorted: the same lock order in every commit; stable, so that an identity's users
        # keep the order they were linked in
        links = sorted(
            ((i.type, i.value, m) for i, mpids in changes.linked.items() for m in mpids),
            key=lambda link: (link[0], link[1]),
        )
        resolved = {(p.partition, p.offset): m for p, m in changes.resolved}  # last one wins
        merges = changes.merges
        with self._db.transaction() as conn:
            fence(conn, "resolve state", "resolve_offset", since, checkpoint)
            if profiles:
                conn.execute(
                    "INSERT INTO profiles (mpid, doc)"
                    " SELECT * FROM unnest(%b::bigint[], %b::bytea[])"
                    " ON CONFLICT (mpid) DO UPDATE SET doc = EXCLUDED.doc",
                    (profiles, [_encode(changes.profiles[m]) for m in profiles]),
                )
            if unlinked:
                conn.execute(
                    "DELETE FROM identity_links l"
                    " USING unnest(%b::text[], %b::text[], %b::bigint[]) AS q (type, value, mpid)"
                    " WHERE l.type = q.type AND l.value = q.value AND l.mpid = q.mpid",
                    _columns(unlinked, 3),
                )
            if links:
                conn.execute(
                    "INSERT INTO identity_links (type, value, mpid)"
                    " SELECT type, value, mpid FROM unnest(%b::text[], %b::text[], %b::bigint[])"
                    " WITH ORDINALITY AS q (type, value, mpid, n) ORDER BY n"
                    " ON CONFLICT (type, value, mpid) DO NOTHING",
                    _columns(links, 3),
                )
            if merges:
                conn.execute(
                    "INSERT INTO merges (from_mpid, to_mpid, reason, at_ms, log_offset)"
                    " SELECT f, t, r, a, o FROM unnest(%b::bigint[], %b::bigint[], %b::text[],"
                    " %b::bigint[], %b::bigint[]) WITH ORDINALITY AS q (f, t, r, a, o, n)"
                    " ORDER BY n",
                    _columns(
                        [(m.from_mpid, m.to_mpid, m.reason, m.at_ms, m.offset) for m in merges], 5
                    ),
                )
            if resolved:
                conn.execute(
                    "INSERT INTO resolved (part, seq, mpid)"
                    " SELECT * FROM unnest(%b::integer[], %b::bigint[], %b::bigint[])"
                    " ON CONFLICT (part, seq) DO UPDATE SET mpid = EXCLUDED.mpid",
                    _columns([(p, o, m) for (p, o), m in sorted(resolved.items())], 3),
                )
            if checkpoint:
                conn.execute(
                    "INSERT INTO resolve_offset (part, seq)"
                    " SELECT * FROM unnest(%b::integer[], %b::bigint[])"
                    " ON CONFLICT (part) DO UPDATE SET seq = EXCLUDED.seq",
                    _columns([(p, pos.offset) for p, pos in sorted(checkpoint.items())], 2),
                )

    def resolved(
        self, partition: int, after: LogPosition | None, limit: int
    ) -> list[tuple[LogPosition, int]]:
        """Resolved users after ``after``, in log order."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT seq, mpid FROM resolved WHERE part = %s AND seq > %s ORDER BY seq LIMIT %s",
                (partition, -1 if after is None else after.offset, max(0, limit)),
            ).fetchall()
        return [(LogPosition(partition, int(o)), int(m)) for o, m in rows]

    def forget_resolved(self, upto: Checkpoint) -> int:
        """Drop resolved users at or before ``upto``."""
        if not upto:
            return 0
        with self._db.transaction() as conn:
            return conn.execute(
                "DELETE FROM resolved r USING unnest(%b::integer[], %b::bigint[]) AS q (part, seq)"
                " WHERE r.part = q.part AND r.seq <= q.seq",
                _columns([(p, pos.offset) for p, pos in upto.items()], 2),
            ).rowcount

    def merges(self, mpid: int) -> list[MergeRecord]:
        """Merges into or out of ``mpid``, oldest first."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT from_mpid, to_mpid, reason, at_ms, log_offset FROM merges"
                " WHERE from_mpid = %s OR to_mpid = %s ORDER BY id",
                (mpid, mpid),
            ).fetchall()
        return [MergeRecord(*r) for r in rows]

    def merged_into(self, mpids: Collection[int]) -> dict[int, list[int]]:
        """The MPIDs each of ``mpids`` absorbed directly, oldest merge first (each once), in
        one statement; those that absorbed none left out."""
        if not mpids:
            return {}
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT to_mpid, from_mpid FROM merges WHERE to_mpid = ANY(%b::bigint[])"
                " ORDER BY id",
                (list(set(mpids)),),
            ).fetchall()
        found: dict[int, list[int]] = {}
        for to_mpid, from_mpid in rows:
            absorbed = found.setdefault(int(to_mpid), [])
            if int(from_mpid) not in absorbed:
                absorbed.append(int(from_mpid))
        return found

    def count_profiles(self) -> int:
        """How many profiles are stored (merged ones included)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT count(*) FROM profiles").fetchone()
        return int(row[0]) if row else 0

    def reset(self) -> None:
        """Forget all state (``TRUNCATE``: readers wait for it, then see nothing)."""
        with self._db.transaction() as conn:
            conn.execute(f"TRUNCATE {_TABLES}")

    def close(self) -> None:
        """Nothing to release: the database is the backend's, closed by it."""


def _checkpoint(rows: Collection[tuple[int, int]]) -> Checkpoint:
    return {int(p): LogPosition(int(p), int(o)) for p, o in rows}


def _columns(rows: Collection[tuple[object, ...]], width: int) -> list[list[object]]:
    """``rows`` as ``width`` column lists (the arrays a statement ``unnest``s)."""
    columns: list[list[object]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns
