"""The resolve state and the stages' checkpoints in memory."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

import msgspec

from patchbay.backends.records import (
    Checkpoint,
    LogPosition,
    MergeRecord,
    Since,
    StateChanges,
    check_since,
)
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Profile).decode


class MemoryStateStore:
    """Profiles (kept encoded, so no caller shares a stored object), identity links in
    link order, merges, resolved users and the checkpoint."""

    def __init__(self) -> None:
        self._profiles: dict[int, bytes] = {}
        self._links: dict[Identity, list[int]] = {}
        self._merges: list[MergeRecord] = []
        self._absorbed: dict[int, list[int]] = {}  # survivor -> absorbed, oldest merge first
        self._resolved: dict[int, dict[int, int]] = {}  # partition -> offset -> mpid
        self._checkpoint: Checkpoint = {}
        self._lock = threading.Lock()

    def users_with(self, identity: Identity) -> list[int]:
        """The MPIDs linked to ``identity``, oldest link first."""
        with self._lock:
            return list(self._links.get(identity, ()))

    def profile(self, mpid: int) -> Profile | None:
        """The stored profile of ``mpid``."""
        with self._lock:
            doc = self._profiles.get(mpid)
        return None if doc is None else _decode(doc)

    def users_with_each(self, identities: Collection[Identity]) -> dict[Identity, list[int]]:
        """:meth:`users_with` of many identities."""
        with self._lock:
            return {i: list(self._links[i]) for i in identities if self._links.get(i)}

    def profiles(self, mpids: Collection[int]) -> dict[int, Profile]:
        """The stored profiles among ``mpids``."""
        with self._lock:
            docs = {m: self._profiles[m] for m in mpids if m in self._profiles}
        return {m: _decode(doc) for m, doc in docs.items()}

    def checkpoint(self) -> Checkpoint:
        """The log positions included in the state."""
        with self._lock:
            return dict(self._checkpoint)

    def commit(
        self,
        changes: StateChanges,
        checkpoint: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Apply ``changes`` and ``checkpoint`` at once (if still at ``since``).

        The reads the changes were decided on are not checked: the store has one writer
        (the process's resolve stage and identity operations, under one lock). ``before``
        runs after the fence is checked, outside the store's lock (it may wait for the
        event loop: IDSync appends its record there)."""
        if before is not None:
            check_since("resolve state", self.checkpoint(), since)
            before()
        docs = {m: _encode(p) for m, p in changes.profiles.items()}
        with self._lock:
            check_since("resolve state", self._checkpoint, since)
            self._profiles.update(docs)
            for identity, gone in changes.unlinked.items():
                kept = self._links.get(identity, [])
                kept[:] = [m for m in kept if m not in gone]
            for identity, mpids in changes.linked.items():
                linked = self._links.setdefault(identity, [])
                linked.extend(m for m in mpids if m not in linked)
            self._merges.extend(changes.merges)
            for merge in changes.merges:
                absorbed = self._absorbed.setdefault(merge.to_mpid, [])
                if merge.from_mpid not in absorbed:
                    absorbed.append(merge.from_mpid)
            for position, mpid in changes.resolved:
                self._resolved.setdefault(position.partition, {})[position.offset] = mpid
            self._checkpoint.update(checkpoint)

    def resolved(
        self, partition: int, after: LogPosition | None, limit: int
    ) -> list[tuple[LogPosition, int]]:
        """Resolved users after ``after``, in log order."""
        start = -1 if after is None else after.offset
        with self._lock:
            found = sorted(o for o in self._resolved.get(partition, {}) if o > start)[:limit]
            part = self._resolved.get(partition, {})
            return [(LogPosition(partition, o), part[o]) for o in found]

    def forget_resolved(self, upto: Checkpoint) -> int:
        """Drop resolved users at or before ``upto``."""
        dropped = 0
        with self._lock:
            for partition, position in upto.items():
                part = self._resolved.get(partition, {})
                old = [o for o in part if o <= position.offset]
                for offset in old:
                    del part[offset]
                dropped += len(old)
        return dropped

    def merges(self, mpid: int) -> list[MergeRecord]:
        """Merges into or out of ``mpid``, oldest first."""
        with self._lock:
            return [m for m in self._merges if mpid in (m.from_mpid, m.to_mpid)]

    def merged_into(self, mpids: Collection[int]) -> dict[int, list[int]]:
        """The MPIDs each of ``mpids`` absorbed directly, oldest merge first (each once)."""
        with self._lock:
            return {m: list(self._absorbed[m]) for m in set(mpids) if m in self._absorbed}

    def count_profiles(self) -> int:
        """How many profiles are stored."""
        with self._lock:
            return len(self._profiles)

    def reset(self) -> None:
        """Forget all state."""
        with self._lock:
            self._profiles.clear()
            self._links.clear()
            self._merges.clear()
            self._absorbed.clear()
            self._resolved.clear()
            self._checkpoint.clear()

    def close(self) -> None:
        """Nothing to release."""


class MemoryStagePositions:
    """The stages' checkpoints in a dict."""

    def __init__(self) -> None:
        self._positions: dict[str, Checkpoint] = {}
        self._lock = threading.Lock()

    def get(self, stage: str) -> Checkpoint:
        """``stage``'s checkpoint."""
        with self._lock:
            return dict(self._positions.get(stage, {}))

    def commit(
        self,
        stage: str,
        checkpoint: Checkpoint,
        since: Since | None = None,
        synced: bool = True,
    ) -> None:
        """Record ``stage``'s checkpoint (if still at ``since``; ``synced``: nothing to
        sync)."""
        with self._lock:
            check_since(f"stage {stage}", self._positions.get(stage, {}), since)
            self._positions.setdefault(stage, {}).update(checkpoint)

    def close(self) -> None:
        """Nothing to release."""
