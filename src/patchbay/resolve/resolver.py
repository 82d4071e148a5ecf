"""Identity resolution: which user (MPID) a batch belongs to. Pure logic over a state view.

The rules, in order:

1. A batch whose ``mpid`` is known belongs to that user (following merges); an unknown
   ``mpid`` is adopted for a new user.
2. Otherwise its identities are tried in the strategy's priority order. The first user
   identity that matches a user decides, unless the batch carries a unique identity of
   higher priority that this user has with another value (another customer of a household
   sharing a value): then the next identity is tried. Device identities are tried only when
   no user identity matches, and a device's user is not taken when the batch carries a
   unique identity that user already has with another value (another person on a shared
   device).
3. With ``login = "merge"``, a batch whose user identities match a known user and whose
   device identities match an *anonymous* user (one with no user identities) folds the
   anonymous user into the known one.
4. Otherwise a new user is created.

Safeguards: blocked values never match nor link; a non-unique value linked to more than
``max_users_per_identity`` users is not used for matching; a unique value owned by another
user is not moved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from patchbay.backends.records import MergeRecord
from patchbay.resolve.identities import Identity, is_device_type
from patchbay.resolve.profile import (
    Profile,
    add_identity,
    merge_profiles,
    new_profile,
    remove_identity,
)
from patchbay.resolve.state import StagedState
from patchbay.resolve.strategy import IdentityStrategy

_INT64_MIN = -(2**63)


@dataclass
class Resolution:
    """The outcome for one batch: its user, and what resolving it changed."""

    mpid: int
    created: bool = False
    merged: list[int] = field(default_factory=list)
    linked: list[Identity] = field(default_factory=list)
    skipped: list[tuple[Identity, str]] = field(default_factory=list)


def derived_mpid(seed: str, attempt: int = 0) -> int:
    """A signed 64-bit MPID derived from ``seed``, so that a replay makes the same ids."""
    digest = hashlib.sha256(f"{seed}/{attempt}".encode()).digest()
    value = int.from_bytes(digest[:8], "big", signed=True)
    return value if value not in (0, _INT64_MIN) else derived_mpid(seed, attempt + 1)


def live_mpid(state: StagedState, mpid: int) -> int | None:
    """``mpid`` after following merges, or ``None`` if no such user exists."""
    profile = state.profile(mpid)
    if profile is None or profile.merged_into is None:  # the common case: no merge
        return None if profile is None else mpid
    seen: set[int] = set()
    while profile is not None and profile.merged_into is not None and mpid not in seen:
        seen.add(mpid)
        mpid = profile.merged_into
        profile = state.profile(mpid)
    return mpid if profile is not None else None


class Resolver:
    """Applies an :class:`IdentityStrategy` to batches' identities."""

    def __init__(self, strategy: IdentityStrategy) -> None:
        self.strategy = strategy

    def resolve(
        self,
        state: StagedState,
        identities: Iterable[Identity],
        mpid: int | None,
        seed: str,
        seen_ms: int,
        offset: int = 0,
    ) -> Resolution:
        """Find or create the user of a batch, link its identities, record merges.

        ``seed`` (the batch id) makes a new user's MPID deterministic.
        """
        strategy = self.strategy
        usable: list[Identity] = []
        skipped: list[tuple[Identity, str]] = []
        for identity in dict.fromkeys(identities):
            if strategy.is_blocked(identity.value):
                skipped.append((identity, "blocked value"))
            else:
                usable.append(identity)
        usable.sort(key=lambda i: strategy.rank(i.type))

        merged: list[int] = []
        created = False
        target = live_mpid(state, mpid) if mpid is not None else None
        if mpid is not None and target is None:
            target, created = mpid, True
        if target is None:
            user_match = self._first_match(state, usable, device=False, skipped=skipped)
            device_match = self._first_match(state, usable, device=True, skipped=skipped)
            if user_match is not None:
                target = user_match
                login = (
                    device_match is not None
                    and device_match != user_match
                    and strategy.login == "merge"
                    and self._is_anonymous(state, device_match)
                )
                absorbed = device_match if login else None
                if absorbed is not None and self.merge(
                    state, absorbed, user_match, "login", seen_ms, offset
                ):
                    merged.append(absorbed)
            elif device_match is not None and not self._conflicts(state, device_match, usable):
                target = device_match
        if target is None:
            target = derived_mpid(seed)
            attempt = 0
            while state.profile(target) is not None:
                attempt += 1
                target = derived_mpid(seed, attempt)
            created = True

        profile = state.profile(target)
        if profile is None:
            profile = new_profile(target, seen_ms)
        linked = self._link(state, profile, usable, seen_ms, skipped)
        state.put(profile)
        return Resolution(target, created, merged, linked, skipped)

    def _first_match(
        self,
        state: StagedState,
        identities: list[Identity],
        device: bool,
        skipped: list[tuple[Identity, str]],
    ) -> int | None:
        for index, identity in enumerate(identities):
            if is_device_type(identity.type) != device:
                continue
            users = state.users_with(identity)
            if not users:
                continue
            unique = identity.type in self.strategy.unique
            if not unique and len(users) > self.strategy.max_users_per_identity:
                skipped.append((identity, "linked to too many users"))
                continue
            live = [m for u in users if (m := live_mpid(state, u)) is not None]
            if not live:
                continue
            # The most recently linked user: on a shared device, the latest one.
            found = live[0] if unique else live[-1]
            if not device and self._conflicts(state, found, identities[:index]):
                # another customer's: the batch names a higher-priority unique identity
                # that this user has with another value (a household's shared value)
                skipped.append((identity, "its user has another identity of higher priority"))
                continue
            return found
        return None

    def _is_anonymous(self, state: StagedState, mpid: int) -> bool:
        profile = state.profile(mpid)
        return profile is not None and not profile.user_identities()

    def _conflicts(self, state: StagedState, mpid: int, identities: list[Identity]) -> bool:
        """Whether ``identities`` hold a unique identity that ``mpid`` has with another
        value."""
        profile = state.profile(mpid)
        if profile is None:
            return False
        for identity in identities:
            if identity.type in self.strategy.unique:
                current = profile.identity(identity.type)
                if current is not None and current != identity.value:
                    return True
        return False

    def _link(
        self,
        state: StagedState,
        profile: Profile,
        identities: list[Identity],
        seen_ms: int,
        skipped: list[tuple[Identity, str]],
    ) -> list[Identity]:
        return [i for i in identities if self.link_identity(state, profile, i, seen_ms, skipped)]

    def link_identity(
        self,
        state: StagedState,
        profile: Profile,
        identity: Identity,
        seen_ms: int,
        skipped: list[tuple[Identity, str]] | None = None,
    ) -> bool:
        """Give ``identity`` to ``profile`` unless the strategy forbids it; say if it did."""
        if self.strategy.is_blocked(identity.value):
            if skipped is not None:
                skipped.append((identity, "blocked value"))
            return False
        if identity.type in self.strategy.unique and any(
            live_mpid(state, u) not in (None, profile.mpid) for u in state.users_with(identity)
        ):
            if skipped is not None:
                skipped.append((identity, "owned by another user"))
            return False
        if not is_device_type(identity.type):
            old = profile.identity(identity.type)
            if old is not None and old != identity.value:
                state.unlink(Identity(identity.type, old), profile.mpid)
        add_identity(profile, identity, seen_ms)
        state.link(identity, profile.mpid)
        return True

    def unlink_identity(self, state: StagedState, profile: Profile, identity: Identity) -> None:
        """Take ``identity`` away from ``profile``."""
        remove_identity(profile, identity)
        state.unlink(identity, profile.mpid)

    def merge(
        self,
        state: StagedState,
        absorbed_mpid: int,
        survivor_mpid: int,
        reason: str,
        at_ms: int,
        offset: int = 0,
    ) -> bool:
        """Fold one user into another and repoint its identity links; say if it happened."""
        absorbed = state.profile(absorbed_mpid)
        survivor = state.profile(survivor_mpid)
        if absorbed is None or survivor is None or absorbed_mpid == survivor_mpid:
            return False
        if absorbed.merged_into is not None or survivor.merged_into is not None:
            return False
        for record in absorbed.identities:
            state.unlink(Identity(record.type, record.value), absorbed_mpid)
        before = {(r.type, r.value) for r in survivor.identities}
        merge_profiles(survivor, absorbed)
        for record in survivor.identities:
            if (record.type, record.value) not in before:
                state.link(Identity(record.type, record.value), survivor_mpid)
        state.put(survivor)
        state.put(absorbed)
        state.record_merge(MergeRecord(absorbed_mpid, survivor_mpid, reason, at_ms, offset))
        return True
