"""The resolve stage's working state: what it reads (a view), what it writes (a change set).

The stage works on a :class:`StagedState`: the committed state of a
:class:`~patchbay.backends.abstract.StateStore` plus the changes of the batches processed
since the last commit. The change set and the log checkpoint it brings the state to are
then committed in one transaction, so a crash never leaves state and checkpoint out of step.

The change set also holds what was read from the store (``read_links``,
``read_profiles``): a store that several resolvers share refuses a commit whose reads
another commit changed (:class:`~patchbay.errors.ResolveConflict`), and the
caller resolves again from a fresh read (:func:`retry_conflicts`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import TypeVar

import msgspec
import structlog

from patchbay.backends.abstract import StateView
from patchbay.backends.records import MergeRecord, StateChanges
from patchbay.errors import ResolveConflict
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile

_encode_profile = msgspec.msgpack.Encoder().encode
_decode_profile = msgspec.msgpack.Decoder(Profile).decode

log = structlog.get_logger("patchbay.resolve")

#: How many times a resolution whose commit conflicted is done again before the conflict
#: is raised (each attempt reads afresh what the other commit wrote).
CONFLICT_RETRIES = 10

T = TypeVar("T")


def retry_conflicts(attempt: Callable[[], T], conflicted: Callable[[], None]) -> T:
    """``attempt()``, run again while it raises :class:`ResolveConflict` (at most
    :data:`CONFLICT_RETRIES` times more: then the conflict is raised); ``conflicted`` is
    called for each conflict (a metric), logged at debug."""
    for tries in range(1, CONFLICT_RETRIES + 1):
        try:
            return attempt()
        except ResolveConflict as exc:
            conflicted()
            log.debug("resolve_conflict", attempt=tries, error=str(exc))
    return attempt()


def _copy_profile(profile: Profile) -> Profile:
    """A deep copy (the resolver changes profiles in place)."""
    return _decode_profile(_encode_profile(profile))


class PendingOverlay:
    """A :class:`StateView` of a store plus the changes of a chunk whose commit is still
    running: what that chunk staged is read from it (copied), the rest from the store.

    The resolve stage resolves the next chunk on top of this while the previous chunk's
    commit runs on another thread; :meth:`detach` (once the commit is done) sends every
    read to the store and lets the finished chunk's state go."""

    def __init__(self, pending: StagedState, store: StateView) -> None:
        self._pending: StagedState | None = pending
        self._store = store

    def detach(self) -> None:
        """The pending chunk is committed: read the store only."""
        self._pending = None

    def users_with(self, identity: Identity) -> list[int]:
        return self.users_with_each((identity,)).get(identity, [])

    def profile(self, mpid: int) -> Profile | None:
        return self.profiles((mpid,)).get(mpid)

    def users_with_each(self, identities: Collection[Identity]) -> dict[Identity, list[int]]:
        pending = self._pending
        if pending is None:
            return self._store.users_with_each(identities)
        found: dict[Identity, list[int]] = {}
        rest = []
        for identity in identities:
            staged = pending.staged_users(identity)
            if staged is None:
                rest.append(identity)
            elif staged:
                found[identity] = staged
        found.update(self._store.users_with_each(rest) if rest else {})
        return found

    def profiles(self, mpids: Collection[int]) -> dict[int, Profile]:
        pending = self._pending
        if pending is None:
            return self._store.profiles(mpids)
        found: dict[int, Profile] = {}
        rest = []
        for mpid in mpids:
            known, profile = pending.staged_profile(mpid)
            if not known:
                rest.append(mpid)
            elif profile is not None:
                found[mpid] = profile
        found.update(self._store.profiles(rest) if rest else {})
        return found


class StagedState:
    """A :class:`StateView` of a store's committed state plus pending changes."""

    def __init__(self, base: StateView) -> None:
        self._base = base
        self.changes = StateChanges()
        self._users: dict[Identity, list[int]] = {}
        self._profiles: dict[int, Profile] = {}
        self._missing: set[int] = set()  # MPIDs the base has no profile for

    def users_with(self, identity: Identity) -> list[int]:
        """Committed links plus pending ones, minus pending removals."""
        cached = self._users.get(identity)
        if cached is None:
            cached = self._users[identity] = self._read_links(
                identity, self._base.users_with(identity)
            )
        return cached

    def _read_links(self, identity: Identity, users: list[int]) -> list[int]:
        """Remember ``users`` as the links of ``identity`` read; a copy to stage on."""
        self.changes.read_links[identity] = list(users)
        return list(users)

    def _read_profile(self, mpid: int, profile: Profile | None) -> None:
        """Remember ``profile`` as read (a snapshot: the resolver changes it in place)."""
        self.changes.read_profiles[mpid] = None if profile is None else _encode_profile(profile)

    def staged_users(self, identity: Identity) -> list[int] | None:
        """The links of ``identity`` as staged here, or ``None`` if this state never read
        them (a copy: the caller may change it)."""
        found = self._users.get(identity)
        return None if found is None else list(found)

    def staged_profile(self, mpid: int) -> tuple[bool, Profile | None]:
        """``(True, profile or None)`` if this state read or wrote ``mpid`` (the profile
        as a private copy), else ``(False, None)``."""
        found = self._profiles.get(mpid)
        if found is not None:
            return True, _copy_profile(found)
        return mpid in self._missing, None

    def prefetch_links(self, identities: Iterable[Identity]) -> None:
        """Load the links of ``identities`` in bulk (a chunk's look-ups in a few statements
        rather than a few per batch); those staged already are not read again."""
        wanted = {i for i in identities if i not in self._users}
        if wanted:
            found = self._base.users_with_each(wanted)
            for identity in wanted:
                self._users[identity] = self._read_links(identity, found.get(identity, []))

    def prefetch_profiles(self, mpids: Iterable[int]) -> None:
        """Load the profiles of ``mpids`` in bulk, remembering which do not exist."""
        wanted = set(mpids) - self._profiles.keys() - self._missing
        if wanted:
            found = self._base.profiles(wanted)
            self._profiles.update(found)
            self._missing.update(wanted - found.keys())
            for mpid in wanted:
                self._read_profile(mpid, found.get(mpid))

    def profile(self, mpid: int) -> Profile | None:
        """The profile as staged (a private copy: call :meth:`put` after changing it)."""
        found = self._profiles.get(mpid)
        if found is None and mpid not in self._missing:
            found = self._base.profile(mpid)
            self._read_profile(mpid, found)
            if found is None:
                self._missing.add(mpid)  # a new user's MPID is looked up more than once
            else:
                self._profiles[mpid] = found
        return found

    def put(self, profile: Profile) -> None:
        """Write ``profile``."""
        self._profiles[profile.mpid] = profile
        self.changes.profiles[profile.mpid] = profile

    def link(self, identity: Identity, mpid: int) -> None:
        """Link ``identity`` to ``mpid``."""
        users = self.users_with(identity)
        if mpid in users:
            return
        users.append(mpid)
        # A pending removal of this link stays: the commit deletes the old row before it
        # inserts the new one, so the link becomes the newest, as it is in ``users``.
        self.changes.linked.setdefault(identity, []).append(mpid)

    def unlink(self, identity: Identity, mpid: int) -> None:
        """Remove the link of ``identity`` to ``mpid``."""
        users = self.users_with(identity)
        if mpid not in users:
            return
        users.remove(mpid)
        pending = self.changes.linked.get(identity)
        if pending and mpid in pending:
            pending.remove(mpid)
        else:
            self.changes.unlinked.setdefault(identity, set()).add(mpid)

    def record_merge(self, merge: MergeRecord) -> None:
        """Remember a merge."""
        self.changes.merges.append(merge)
