"""Identity operations on the live state: what IDSync, the Profile API and the CLI call.

The resolve stage and these operations change the same state, so both run under one lock.
An operation that changes state (identify or login creating a user, modify) returns the
batch that records it; the caller appends that batch to the log *before* the change is
written (:meth:`ResolveService.apply` calls the append once the store checked the change),
so that replaying the log reproduces the change.

With several resolvers on one store (processes on PostgreSQL), another one may change what
an operation read before it commits: the store refuses the commit before the record is
appended (:class:`~patchbay.errors.ResolveConflict`), and the operation is staged
again from a fresh read (:meth:`ResolveService.retrying`). So no record of a change that was
not applied reaches the log.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from patchbay.backends.abstract import StateStore
from patchbay.backends.records import MergeRecord
from patchbay.clock import Clock
from patchbay.errors import ResolveConflict
from patchbay.resolve.identities import IDSYNC_NAMES, Identity, is_device_type
from patchbay.resolve.profile import Profile
from patchbay.resolve.resolver import Resolver, derived_mpid, live_mpid
from patchbay.resolve.stage import ResolveStage
from patchbay.resolve.state import StagedState, retry_conflicts

T = TypeVar("T")


@dataclass
class IdentityAnswer:
    """The user an identity request resolved to, and what it matched."""

    mpid: int
    matched: dict[str, str] = field(default_factory=dict)
    created: bool = False
    is_logged_in: bool = False
    record: bytes | None = None  # the batch to append to the log, if state changed


@dataclass
class ChangeResult:
    """One identity change of a modify request, as applied."""

    identity_type: str
    modified_mpid: int
    applied: bool
    reason: str | None = None


@dataclass
class Pending:
    """A staged change awaiting :meth:`ResolveService.apply`."""

    staged: StagedState
    answer: IdentityAnswer


class ResolveService:
    """Identity look-ups and changes on the committed state, serialised with the stage."""

    def __init__(self, state: StateStore, resolver: Resolver, clock: Clock) -> None:
        self.state = state
        self.resolver = resolver
        self.clock = clock
        self.lock = threading.RLock()
        self._stage: ResolveStage | None = None
        #: How many commits were refused for a conflict with another resolver (and redone).
        self.conflicts = 0

    def attach(self, stage: ResolveStage) -> None:
        """Serialise with ``stage``: its steps run under :attr:`lock` (:meth:`step`), and
        every other operation first waits for the stage's commit in flight."""
        self._stage = stage

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.lock:
            if self._stage is not None:
                try:
                    self._stage.settle()
                except ResolveConflict:  # not this request's: the stage's next step redoes it
                    self.conflicted()
            yield

    def conflicted(self) -> None:
        """Count a commit refused for a conflict with another resolver."""
        self.conflicts += 1

    # -- reads -----------------------------------------------------------------------

    def profile(self, mpid: int) -> Profile | None:
        """The live profile of ``mpid`` (after following merges)."""
        with self._locked():
            staged = StagedState(self.state)
            live = live_mpid(staged, mpid)
            return staged.profile(live) if live is not None else None

    def find(self, identity: Identity) -> Profile | None:
        """The profile holding ``identity`` (the most recent, for a shared device id)."""
        with self._locked():
            staged = StagedState(self.state)
            for mpid in reversed(staged.users_with(identity)):
                live = live_mpid(staged, mpid)
                if live is not None:
                    return staged.profile(live)
            return None

    def merges(self, mpid: int) -> list[MergeRecord]:
        """The merges into or out of ``mpid``."""
        return self.state.merges(mpid)

    def search(self, identities: Sequence[Identity]) -> IdentityAnswer | None:
        """The user the identities point at, without creating or changing anything."""
        with self._locked():
            staged = StagedState(self.state)
            ranked = sorted(identities, key=lambda i: self.resolver.strategy.rank(i.type))
            for identity in ranked:
                if self.resolver.strategy.is_blocked(identity.value):
                    continue
                for mpid in reversed(staged.users_with(identity)):  # newest, as identify
                    live = live_mpid(staged, mpid)
                    if live is not None:
                        return self._answer(staged, live, identities, created=False)
            return None

    # -- changes ---------------------------------------------------------------------

    def identify(
        self,
        identities: Sequence[Identity],
        seed: str,
        previous_mpid: int | None = None,
        login: bool = False,
    ) -> Pending:
        """Resolve (or create) the user of ``identities``; stage the links.

        With ``login``, an anonymous ``previous_mpid`` is merged into the user found, as the
        strategy's login rule says.
        """
        with self._locked():
            staged = StagedState(self.state)
            now = self.clock.now_ms()
            resolution = self.resolver.resolve(staged, identities, None, seed, now)
            mpid = resolution.mpid
            previous = live_mpid(staged, previous_mpid) if previous_mpid is not None else None
            if (
                login
                and previous is not None
                and previous != mpid
                and self.resolver.strategy.login == "merge"
            ):
                profile = staged.profile(previous)
                if profile is not None and not profile.user_identities():
                    self.resolver.merge(staged, previous, mpid, "login", now)
            answer = self._answer(staged, mpid, identities, resolution.created)
            changes = staged.changes
            if resolution.created or changes.linked or changes.unlinked or changes.merges:
                merged = [m.from_mpid for m in changes.merges]
                answer.record = _record(mpid, identities, merged, "login")
            return Pending(staged, answer)

    def logout(self, identities: Sequence[Identity], seed: str) -> Pending:
        """The device's anonymous user after a logout; stage a new one if it has none.

        Only the device identities count. The answer is the most recently linked live user
        that holds one of them and no user identity; a logged-in user never is. Without one, a
        new user holding the device identities is staged (its MPID derived from ``seed``), and
        being the device's latest user, it is what the device's next identify finds.
        """
        with self._locked():
            staged = StagedState(self.state)
            strategy = self.resolver.strategy
            device = sorted(
                (i for i in dict.fromkeys(identities) if is_device_type(i.type)),
                key=lambda i: strategy.rank(i.type),
            )
            for identity in device:
                if strategy.is_blocked(identity.value):
                    continue
                for mpid in reversed(staged.users_with(identity)):
                    live = live_mpid(staged, mpid)
                    profile = staged.profile(live) if live is not None else None
                    if live is not None and profile is not None and not profile.user_identities():
                        return Pending(staged, self._answer(staged, live, device, created=False))
            mpid, attempt = derived_mpid(seed), 0
            while staged.profile(mpid) is not None:
                attempt += 1
                mpid = derived_mpid(seed, attempt)
            self.resolver.resolve(staged, device, mpid, seed, self.clock.now_ms())
            answer = self._answer(staged, mpid, device, created=True)
            answer.record = _record(mpid, device)
            return Pending(staged, answer)

    def modify(
        self, mpid: int, changes: Sequence[tuple[str, str | None, str | None]]
    ) -> tuple[Pending, list[ChangeResult]] | None:
        """Stage identity changes ``(type, old, new)`` on an existing user (``None`` if unknown)."""
        with self._locked():
            staged = StagedState(self.state)
            live = live_mpid(staged, mpid)
            if live is None:
                return None
            profile = staged.profile(live)
            assert profile is not None
            now = self.clock.now_ms()
            results: list[ChangeResult] = []
            events: list[dict[str, object]] = []
            for identity_type, old, new in changes:
                if old is not None:
                    self.resolver.unlink_identity(staged, profile, Identity(identity_type, old))
                applied, reason = True, None
                if new is not None:
                    skipped: list[tuple[Identity, str]] = []
                    applied = self.resolver.link_identity(
                        staged, profile, Identity(identity_type, new), now, skipped
                    )
                    reason = skipped[0][1] if skipped else None
                results.append(ChangeResult(identity_type, live, applied, reason))
                if applied:
                    events.append(_change_event(identity_type, old, new, now))
            staged.put(profile)
            record = msgspec.json.encode({"mpid": live, "events": events}) if events else None
            return Pending(staged, IdentityAnswer(live, record=record)), results

    def alias(self, source_mpid: int, destination_mpid: int) -> Pending | None:
        """Stage folding one user into another (``None`` if either is unknown)."""
        with self._locked():
            staged = StagedState(self.state)
            source = live_mpid(staged, source_mpid)
            destination = live_mpid(staged, destination_mpid)
            if source is None or destination is None:
                return None
            merged = self.resolver.merge(staged, source, destination, "alias", self.clock.now_ms())
            record = _record(destination, [], [source], "alias") if merged else None
            return Pending(staged, IdentityAnswer(destination, record=record))

    def seen_by(self, pending: Pending, input_id: str) -> None:
        """Note on the user of a staged change that ``input_id`` made it, as the resolve stage
        does when it reads the change's record back from the log (the input that appends a
        record is one the user was seen on)."""
        if pending.answer.record is None:
            return
        profile = pending.staged.profile(pending.answer.mpid)
        if profile is not None and input_id not in profile.inputs:
            profile.inputs.append(input_id)
            pending.staged.put(profile)

    def apply(self, pending: Pending, before: Callable[[], None] | None = None) -> None:
        """Commit a staged change; ``before`` (which appends its record to the log) runs
        once the store has checked that nothing the change was decided on changed
        meanwhile, and before the change is written. Raises :class:`ResolveConflict`
        (nothing appended nor written) if something did: stage the change again
        (:meth:`retrying`)."""
        with self._locked():
            if pending.staged.changes:
                self.state.commit(pending.staged.changes, {}, before=before)
            elif before is not None:
                before()

    def retrying(self, attempt: Callable[[], T]) -> T:
        """``attempt()`` (stage a change and :meth:`apply` it), staged and applied again
        while another resolver's commit changed what it read (a bounded number of times,
        counted in :attr:`conflicts`)."""
        return retry_conflicts(attempt, self.conflicted)

    def step(self, stage: ResolveStage) -> int:
        """Run one step of the stage under the lock."""
        with self.lock:  # its commit may go on after the lock is released: see _locked
            return stage.step()

    # -- helpers ---------------------------------------------------------------------

    def _answer(
        self, staged: StagedState, mpid: int, identities: Sequence[Identity], created: bool
    ) -> IdentityAnswer:
        profile = staged.profile(mpid)
        matched: dict[str, str] = {}
        if profile is not None:
            for identity in identities:
                if profile.has(identity):
                    matched[IDSYNC_NAMES.get(identity.type, identity.type)] = identity.value
        logged_in = profile is not None and any(
            r.type in self.resolver.strategy.unique for r in profile.identities
        )
        return IdentityAnswer(mpid, matched, created, logged_in)


def _record(
    mpid: int,
    identities: Sequence[Identity],
    merged_from: Sequence[int] = (),
    merge_reason: str = "login",
) -> bytes:
    """A batch that recreates the user, links and merges of an identity request on replay."""
    user = {i.type: i.value for i in identities if not is_device_type(i.type)}
    device = {
        i.type: i.value
        for i in identities
        if is_device_type(i.type) and i.type != "device_application_stamp"
    }
    batch: dict[str, object] = {"mpid": mpid}
    if user:
        batch["user_identities"] = user
    if device:
        batch["device_info"] = device
    stamp = next((i.value for i in identities if i.type == "device_application_stamp"), None)
    if stamp:
        batch["mp_deviceid"] = stamp
    if merged_from:
        batch["patchbay_merged_from"] = list(merged_from)
        batch["patchbay_merge_reason"] = merge_reason
    return msgspec.json.encode(batch)


def _change_event(kind: str, old: str | None, new: str | None, now: int) -> dict[str, object]:
    data: dict[str, object] = {"timestamp_unixtime_ms": now}
    if old is not None:
        data["old"] = {"identity_type": kind, "identity": old}
    if new is not None:
        data["new"] = {"identity_type": kind, "identity": new}
    return {"event_type": "user_identity_change", "data": data}
