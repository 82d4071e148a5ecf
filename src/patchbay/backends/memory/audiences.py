"""Audiences, their connections and the segment stage's state in memory."""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
from collections.abc import Collection

import msgspec

from patchbay.backends.records import (
    MAX_AUDIENCE_ID,
    AudienceBuild,
    AudienceConnection,
    AudienceRecord,
    Checkpoint,
    ConditionRecord,
    DuplicateName,
    PendingChange,
    SegmentChanges,
    SegmentUser,
    Since,
    check_since,
)
from patchbay.errors import PatchbayError

_replace = msgspec.structs.replace
_encode = msgspec.msgpack.Encoder().encode
_decode_user = msgspec.msgpack.Decoder(SegmentUser).decode
_decode_connection = msgspec.msgpack.Decoder(AudienceConnection).decode
_decode_condition = msgspec.msgpack.Decoder(ConditionRecord).decode


class MemoryAudienceStore:
    """Audiences and the segment stage's state in dicts and sets.

    Records with mutable parts (connections, conditions, user states) are kept encoded, so
    that no caller shares a stored object; the frozen ones with none (audiences, builds,
    pending changes) are kept as given. The sorted MPIDs of the users and of each audience
    are cached between changes, so that paging through them is not a sort per page.
    """

    def __init__(self) -> None:
        self._audiences: dict[int, AudienceRecord] = {}
        self._last_id = 0
        self._version = 0
        self._connections: dict[tuple[int, str], bytes] = {}
        self._conditions: dict[int, bytes] = {}
        self._builds: dict[int, AudienceBuild] = {}
        self._users: dict[int, bytes] = {}
        self._due: dict[int, int] = {}  # mpid -> next_check_ms (users that have one)
        self._user_order: list[int] | None = None  # sorted MPIDs of _users, when known
        self._members: dict[int, set[int]] = {}  # audience -> MPIDs
        self._member_order: dict[int, list[int]] = {}  # audience -> sorted MPIDs, when known
        self._memberships: dict[int, set[int]] = {}  # MPID -> audiences
        self._pending: dict[str, dict[int, PendingChange]] = {}  # output -> seq -> change
        self._pending_output: dict[int, str] = {}  # seq -> output
        self._last_seq = 0
        self._checkpoint: Checkpoint = {}
        self._lock = threading.Lock()

    # -- audiences -----------------------------------------------------------------------

    def add_audience(self, audience: AudienceRecord) -> AudienceRecord:
        """Store a new audience under the next id."""
        with self._lock:
            if any(a.name == audience.name for a in self._audiences.values()):
                raise DuplicateName(f"an audience named {audience.name!r} already exists")
            if self._last_id >= MAX_AUDIENCE_ID:
                raise PatchbayError(f"no audience id is left (ids stop at {MAX_AUDIENCE_ID})")
            self._last_id += 1
            stored = _replace(audience, id=self._last_id)
            self._audiences[stored.id] = stored
            self._version += 1
        return stored

    def update_audience(self, audience: AudienceRecord) -> bool:
        """Replace an audience's fields (``created_at_ms`` stays); whether it existed."""
        with self._lock:
            if (old := self._audiences.get(audience.id)) is None:
                return False
            if any(
                a.name == audience.name and a.id != audience.id for a in self._audiences.values()
            ):
                raise DuplicateName(f"an audience named {audience.name!r} already exists")
            self._audiences[audience.id] = _replace(audience, created_at_ms=old.created_at_ms)
            self._version += 1
        return True

    def get_audience(self, name_or_id: str | int) -> AudienceRecord | None:
        """The audience with this name (``str``) or id (``int``)."""
        with self._lock:
            if not isinstance(name_or_id, str):
                return self._audiences.get(name_or_id)
            return next((a for a in self._audiences.values() if a.name == name_or_id), None)

    def list_audiences(self) -> list[AudienceRecord]:
        """Every audience, by id."""
        with self._lock:
            return [self._audiences[i] for i in sorted(self._audiences)]

    def delete_audience(self, audience_id: int) -> bool:
        """Remove an audience with its connections, build, memberships and pending changes."""
        with self._lock:
            if self._audiences.pop(audience_id, None) is None:
                return False
            for key in [k for k in self._connections if k[0] == audience_id]:
                del self._connections[key]
            self._builds.pop(audience_id, None)
            for mpid in self._members.pop(audience_id, set()):
                self._memberships[mpid].discard(audience_id)
                if not self._memberships[mpid]:
                    del self._memberships[mpid]
            self._member_order.pop(audience_id, None)
            for output in list(self._pending):
                self._drop_pending(output, audience_id)
            self._version += 1
        return True

    def version(self) -> int:
        """The count of the owner's writes so far."""
        with self._lock:
            return self._version

    # -- connections ---------------------------------------------------------------------

    def put_audience_connection(self, connection: AudienceConnection) -> None:
        """Create or replace a connection, keeping the partner's answer of the one it
        replaces; raises :class:`PatchbayError` if the audience does not exist."""
        key = (connection.audience_id, connection.output)
        with self._lock:
            if connection.audience_id not in self._audiences:
                raise PatchbayError(f"no audience with id {connection.audience_id}")
            if (old := self._connections.get(key)) is not None:
                replaced = _decode_connection(old)
                connection = _replace(
                    connection,
                    partner_settings=replaced.partner_settings,
                    subscribed_at_ms=replaced.subscribed_at_ms,
                )
            self._connections[key] = _encode(connection)
            self._version += 1

    def list_audience_connections(self) -> list[AudienceConnection]:
        """Every audience connection, by audience then output."""
        with self._lock:
            docs = [self._connections[k] for k in sorted(self._connections)]
        return [_decode_connection(d) for d in docs]

    def remove_audience_connection(self, audience_id: int, output: str) -> bool:
        """Remove a connection and its pending changes; whether it existed."""
        with self._lock:
            if self._connections.pop((audience_id, output), None) is None:
                return False
            self._drop_pending(output, audience_id)
            self._version += 1
        return True

    def subscribed(
        self, audience_id: int, output: str, partner_settings: dict[str, str], at_ms: int
    ) -> bool:
        """Record the partner's acceptance on the connection; whether it exists."""
        key = (audience_id, output)
        with self._lock:
            if (doc := self._connections.get(key)) is None:
                return False
            self._connections[key] = _encode(
                _replace(
                    _decode_connection(doc),
                    partner_settings=dict(partner_settings),
                    subscribed_at_ms=at_ms,
                )
            )
            self._version += 1
        return True

    # -- the segment stage's state -------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The stage's checkpoint, by partition."""
        with self._lock:
            return dict(self._checkpoint)

    def conditions(self) -> list[ConditionRecord]:
        """Every registered condition, by id."""
        with self._lock:
            docs = [self._conditions[i] for i in sorted(self._conditions)]
        return [_decode_condition(d) for d in docs]

    def builds(self) -> list[AudienceBuild]:
        """Every build, by audience id."""
        with self._lock:
            return [self._builds[i] for i in sorted(self._builds)]

    def users(self, mpids: Collection[int]) -> dict[int, SegmentUser]:
        """The states of those of ``mpids`` that have one."""
        with self._lock:
            docs = {m: self._users[m] for m in mpids if m in self._users}
        return {m: _decode_user(d) for m, d in docs.items()}

    def scan_users(self, after: int | None, limit: int) -> list[SegmentUser]:
        """Up to ``limit`` user states above ``after``, by MPID."""
        with self._lock:
            if self._user_order is None:
                self._user_order = sorted(self._users)
            order = self._user_order
            start = 0 if after is None else bisect.bisect_right(order, after)
            docs = [self._users[m] for m in order[start : start + max(limit, 0)]]
        return [_decode_user(d) for d in docs]

    def count_users(self) -> int:
        """How many users have a state."""
        with self._lock:
            return len(self._users)

    def due_users(self, now_ms: int, limit: int) -> list[int]:
        """Up to ``limit`` MPIDs due at ``now_ms``, earliest first (then by MPID)."""
        with self._lock:
            due = [(t, m) for m, t in self._due.items() if t <= now_ms]
        return [m for _, m in heapq.nsmallest(max(limit, 0), due)]

    def sync(self) -> None:
        """Nothing to do: nothing here survives the process."""

    def commit(
        self,
        changes: SegmentChanges,
        checkpoint: Checkpoint | None = None,
        since: Since | None = None,
    ) -> None:
        """Apply ``changes`` and ``checkpoint`` at once, as the SQLite store does (see
        :meth:`~patchbay.backends.sqlite.audiences.SqliteAudienceStore.commit`)."""
        users = [(u.mpid, _encode(u), u.next_check_ms) for u in changes.users]
        conditions = [(c.id, _encode(c)) for c in changes.conditions]
        joined, left = _net_memberships(changes.joined, changes.left)
        with self._lock:
            check_since("segment stage", self._checkpoint, since)
            for mpid, doc, next_check_ms in users:
                if mpid not in self._users:
                    self._user_order = None
                self._users[mpid] = doc
                if next_check_ms is None:
                    self._due.pop(mpid, None)
                else:
                    self._due[mpid] = next_check_ms
            for mpid in changes.dropped_users:
                if self._users.pop(mpid, None) is not None:
                    self._user_order = None
                self._due.pop(mpid, None)
            for audience_id, mpid in joined:
                if audience_id in self._audiences:
                    self._join(audience_id, mpid)
            for audience_id, mpid in left:
                self._leave(audience_id, mpid)
            for p in changes.pending:
                if (p.audience_id, p.output) in self._connections:
                    self._last_seq += 1
                    self._pending.setdefault(p.output, {})[self._last_seq] = PendingChange(
                        seq=self._last_seq,
                        output=p.output,
                        audience_id=p.audience_id,
                        mpid=p.mpid,
                        action=p.action,
                        at_ms=p.at_ms,
                    )
                    self._pending_output[self._last_seq] = p.output
            for seq in changes.flushed:
                if (output := self._pending_output.pop(seq, None)) is not None:
                    waiting = self._pending[output]
                    del waiting[seq]
                    if not waiting:
                        del self._pending[output]
            self._conditions.update(conditions)
            for build in changes.builds:
                if build.audience_id in self._audiences:
                    self._builds[build.audience_id] = build
            self._checkpoint.update(checkpoint or {})

    def members(self, audience_id: int, after: int | None, limit: int) -> list[int]:
        """Up to ``limit`` members above ``after``, ascending."""
        with self._lock:
            order = self._member_order.get(audience_id)
            if order is None:
                order = self._member_order[audience_id] = sorted(self._members.get(audience_id, ()))
            start = 0 if after is None else bisect.bisect_right(order, after)
            return order[start : start + max(limit, 0)]

    def sizes(self) -> dict[int, int]:
        """How many members each audience has (those without members left out)."""
        with self._lock:
            return {a: len(m) for a, m in self._members.items() if m}

    def memberships(self, mpid: int) -> list[int]:
        """The audiences ``mpid`` belongs to, ascending."""
        with self._lock:
            return sorted(self._memberships.get(mpid, ()))

    def pending(self, output: str, limit: int) -> list[PendingChange]:
        """Up to ``limit`` changes waiting for ``output``, by seq (kept in seq order)."""
        with self._lock:
            waiting = self._pending.get(output, {})
            return list(itertools.islice(waiting.values(), max(limit, 0)))

    def pending_outputs(self) -> dict[str, tuple[int, int]]:
        """For each output with changes waiting: how many, and the earliest ``at_ms``."""
        with self._lock:
            return {o: (len(w), min(c.at_ms for c in w.values())) for o, w in self._pending.items()}

    def reset(self) -> None:
        """Forget the stage's records (the audiences and connections stay; seqs go on)."""
        with self._lock:
            self._conditions.clear()
            self._builds.clear()
            self._users.clear()
            self._due.clear()
            self._user_order = None
            self._members.clear()
            self._member_order.clear()
            self._memberships.clear()
            self._pending.clear()
            self._pending_output.clear()
            self._checkpoint.clear()

    def close(self) -> None:
        """Nothing to release."""

    # -- plumbing (with the lock held) ---------------------------------------------------

    def _join(self, audience_id: int, mpid: int) -> None:
        members = self._members.setdefault(audience_id, set())
        if mpid not in members:
            members.add(mpid)
            self._member_order.pop(audience_id, None)
            self._memberships.setdefault(mpid, set()).add(audience_id)

    def _leave(self, audience_id: int, mpid: int) -> None:
        members = self._members.get(audience_id)
        if members is None or mpid not in members:
            return
        members.discard(mpid)
        if not members:
            del self._members[audience_id]
        self._member_order.pop(audience_id, None)
        audiences = self._memberships[mpid]
        audiences.discard(audience_id)
        if not audiences:
            del self._memberships[mpid]

    def _drop_pending(self, output: str, audience_id: int) -> None:
        waiting = self._pending.get(output, {})
        for seq in [s for s, c in waiting.items() if c.audience_id == audience_id]:
            del waiting[seq]
            del self._pending_output[seq]
        if not waiting:
            self._pending.pop(output, None)


def _net_memberships(
    joined: list[tuple[int, int]], left: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The memberships a commit adds and removes: by the balance of each one's joins and
    leaves, as :func:`patchbay.backends.sqlite.audiences.net_memberships` explains."""
    balance: dict[tuple[int, int], int] = {}
    for pair in joined:
        balance[pair] = balance.get(pair, 0) + 1
    for pair in left:
        balance[pair] = balance.get(pair, 0) - 1
    return [p for p, n in balance.items() if n > 0], [p for p, n in balance.items() if n < 0]
