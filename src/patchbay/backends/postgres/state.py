"""The resolve state on PostgreSQL: profiles, identity links, merges, resolved users and the
resolve checkpoint (component ``state``).

Profiles are msgpack documents (``bytea``) keyed by MPID (``bigint``); identity links are
rows unique on (type, value, MPID) whose identity column orders them (oldest link first: a
link removed and made again is the newest); merges are ordered the same way. Every call is
one statement per kind of row, over arrays sent in binary (``%b``) and read with ``= ANY``
or ``unnest``: the resolve stage's look-ups of a chunk are one round trip each, not one per
identity or profile.

What is serialised, and why (several resolvers: processors owning different partitions,
and IDSync requests on any server, change the same state at once):

* :meth:`PostgresStateStore.commit` is one transaction: the profiles, links, merges and
  resolved users of a chunk and the checkpoint of the log they include become visible
  together or not at all, so a resolver that restarts from the checkpoint never applies a
  chunk twice nor loses one.
* **Fence.** A commit given the positions it started from (``since``) is fenced
  (:mod:`.fencing`): the resolve checkpoint rows of its partitions are locked, in
  partition order, and the commit applies only if they did not move, so a resolver that
  lost a partition to another (the log's consumer group) never applies a chunk the new
  owner applies too (:class:`~patchbay.backends.records.CheckpointMoved`).
* **Optimistic concurrency.** A resolver reads without locking and decides on what it read
  (recorded in ``changes.read_links`` and ``read_profiles`` by
  :class:`~patchbay.resolve.state.StagedState`). Its commit takes transaction-scoped
  advisory locks on every identity and MPID it read or writes, then compares what it read
  with what is stored, and raises :class:`~patchbay.errors.ResolveConflict`
  (writing nothing) if another commit changed any of it; the resolver then reads again and
  resolves the chunk or request again. Validation and writes happen under the locks, so
  for any identity or MPID the commits that touch it are serialised, and each one's
  decisions hold on the state it writes over: the result is the one of running them one
  after the other. Reading needs no lock, so resolution itself (the CPU work) runs in
  parallel; only the commits of overlapping chunks wait for each other.
* Why advisory locks and not row locks: the identity that matters most is one no user has
  yet (two resolvers each about to create a user for the same new email) and has no row to
  lock. The locks are striped: an identity or MPID maps by a hash to one of
  :data:`LOCK_STRIPES` keys (in a key space of their own), so a commit holds at most that
  many locks (PostgreSQL's lock table is shared and bounded by
  ``max_locks_per_transaction``); two keys sharing a stripe merely wait for each other.
* **Lock order** (no two commits ever wait for each other in a cycle): (1) the stripes'
  advisory locks, in ascending order, in one statement; (2) the fence's checkpoint rows,
  in partition order; (3) the check of the reads; (4) ``before``, then the writes. Every
  state commit takes (1) before (2), and nothing else locks checkpoint rows, so a commit
  waiting on a stripe holds no checkpoint row; the rows the writes lock (profiles, links
  of the identities and MPIDs under its stripes; resolved users of its fenced partitions)
  no other state commit can hold. The fence comes before the check: a commit both fenced
  out and conflicting reports :class:`CheckpointMoved` (its chunk is dropped, not redone).
* The check reads after the locks are held, in the transaction's READ COMMITTED snapshot
  of each statement (the database's default): it sees every commit that held them before.
* Profiles are compared by content (the document read against the one stored, decoded
  when the bytes differ), not by a version: a resolver reading through the overlay of its
  own commit in flight (:class:`~patchbay.resolve.state.PendingOverlay`) knows the content
  that commit writes, not a version it would get.
* Links are inserted sorted by identity (``ON CONFLICT DO NOTHING``) and profiles upserted
  in MPID order, as before.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection
from typing import Any

import msgspec
import psycopg

from patchbay.backends.postgres.db import PostgresDatabase
from patchbay.backends.postgres.fencing import fence
from patchbay.backends.records import Checkpoint, LogPosition, MergeRecord, Since, StateChanges
from patchbay.errors import ResolveConflict
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

#: How many advisory locks identities and MPIDs share (the most a commit holds).
LOCK_STRIPES = 1024
#: The first key of the two-key advisory locks of the stripes (``PBRS``): a key space of
#: their own, apart from the one-key locks of migrations.
_LOCK_SPACE = 0x50425253


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
        if not identities:
            return {}
        with self._db.transaction() as conn:
            return _links(conn, identities)

    def profiles(self, mpids: Collection[int]) -> dict[int, Profile]:
        """The stored profiles among ``mpids``, in one statement."""
        if not mpids:
            return {}
        with self._db.transaction() as conn:
            docs = _docs(conn, mpids)
        return {mpid: _decode_profile(doc) for mpid, doc in docs.items()}

    def checkpoint(self) -> Checkpoint:
        """The log positions included in the state, by partition."""
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT part, seq FROM resolve_offset").fetchall()
        return _checkpoint(rows)

    def commit(
        self,
        changes: StateChanges,
        checkpoint: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Write ``changes`` and ``checkpoint`` in one transaction, a statement per kind of
        row: under the stripes' locks, fenced (with ``since``: :func:`~.fencing.fence`),
        once the reads they were decided on are checked (:class:`ResolveConflict` if
        another commit changed them); ``before`` runs between the check and the writes
        (see the module docs for the lock order)."""
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
        stripes = _stripes(changes)
        with self._db.transaction() as conn:
            if stripes:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s::integer, s) FROM"
                    " (SELECT s FROM unnest(%b::integer[]) AS u (s) ORDER BY s) AS o",
                    (_LOCK_SPACE, stripes),
                )
            fence(conn, "resolve state", "resolve_offset", since, checkpoint)
            _check_reads(conn, changes)
            if before is not None:
                before()
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


def _links(
    conn: psycopg.Connection[Any], identities: Collection[Identity]
) -> dict[Identity, list[int]]:
    """The links of ``identities`` (see :meth:`PostgresStateStore.users_with_each`)."""
    asked = set(identities)
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


def _docs(conn: psycopg.Connection[Any], mpids: Collection[int]) -> dict[int, bytes]:
    """The stored profile documents among ``mpids``."""
    rows = conn.execute(
        "SELECT mpid, doc FROM profiles WHERE mpid = ANY(%b::bigint[])", (list(mpids),)
    ).fetchall()
    return {int(mpid): bytes(doc) for mpid, doc in rows}


def _stripe(key: str) -> int:
    return zlib.crc32(key.encode()) % LOCK_STRIPES


def _stripes(changes: StateChanges) -> list[int]:
    """The lock stripes of every identity and MPID ``changes`` read or write, ascending."""
    identities = {*changes.read_links, *changes.linked, *changes.unlinked}
    mpids = {*changes.read_profiles, *changes.profiles}
    found = {_stripe(f"i\0{i.type}\0{i.value}") for i in identities}
    found.update(_stripe(f"p\0{m}") for m in mpids)
    return sorted(found)


def _check_reads(conn: psycopg.Connection[Any], changes: StateChanges) -> None:
    """Raise :class:`ResolveConflict` if a link or profile ``changes`` were decided on is
    no longer as read."""
    if changes.read_links:
        stored = _links(conn, changes.read_links)
        for identity, read in changes.read_links.items():
            if stored.get(identity, []) != read:
                raise ResolveConflict(
                    f"the users of {identity.type} changed since read"
                    f" ({read} then {stored.get(identity, [])})"
                )
    if changes.read_profiles:
        docs = _docs(conn, changes.read_profiles)
        for mpid, doc in changes.read_profiles.items():
            now = docs.get(mpid)
            if now == doc:
                continue
            if now is None or doc is None or _decode_profile(now) != _decode_profile(doc):
                raise ResolveConflict(f"the profile of {mpid} changed since read")


def _checkpoint(rows: Collection[tuple[int, int]]) -> Checkpoint:
    return {int(p): LogPosition(int(p), int(o)) for p, o in rows}


def _columns(rows: Collection[tuple[object, ...]], width: int) -> list[list[object]]:
    """``rows`` as ``width`` column lists (the arrays a statement ``unnest``s)."""
    columns: list[list[object]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns
