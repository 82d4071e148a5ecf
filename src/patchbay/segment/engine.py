"""Incremental evaluation of every audience over the users' stored segment state.

The engine keeps, per user, a tally of each counted event condition
(:mod:`.tallies`), the environments it was seen in and its memberships
(:class:`~patchbay.backends.records.SegmentUser`), and re-evaluates only what can change:

* **A batch** touches *features* (:mod:`.catalog`): the conditions its events match, the
  user attributes, identities and consent it sets, its input and environment. Only the
  audiences that read one of those are evaluated, in dependency order, and those that
  refer to an audience whose membership changed. A user seen for the first time is also
  evaluated for the audiences that hold for a user nothing is known of.
* **Time**: each user's state records when its next windowed event leaves its window
  (``next_check_ms``); :meth:`SegmentEngine.expire` re-evaluates the users due, so a user
  leaves an audience when the qualifying event leaves the window (no periodic scan).
* **Merges**: the users folded into another (IDSync login, alias) leave their audiences;
  their tallies and environments move to the survivor, which is evaluated for everything.
* **New and changed audiences** are built (:meth:`SegmentEngine.build_step`): the event
  conditions no other audience counts yet are counted over the stored history up to the
  stage's checkpoint when they were registered (batches after it were counted live, so
  nothing is missed or counted twice); then every known user is evaluated, in MPID order,
  and the audience is live.

Every change is committed with the engine's own checkpoint in one
:meth:`~patchbay.backends.abstract.AudienceStore.commit`: a batch offered again after a
crash is recognised and skipped, so a batch is counted exactly once. The commit is fenced
on the positions it started from: an engine whose partition another processor moved on
meanwhile gets :class:`~patchbay.backends.records.CheckpointMoved`, applies nothing, and
is replaced by one that starts from the stored checkpoint. Membership changes
are recorded, in the same commit, as pending changes for each output the audience is
connected to (:class:`~patchbay.backends.records.PendingChange`), sent by the stage.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog

from patchbay.backends.abstract import AudienceStore, BatchLog, InputStore, StateStore
from patchbay.backends.records import (
    AudienceBuild,
    AudienceRecord,
    Checkpoint,
    ConditionRecord,
    LogPosition,
    NewPendingChange,
    SegmentChanges,
    SegmentUser,
    Tally,
    advance,
)
from patchbay.clock import Clock
from patchbay.collect.batch import Batch
from patchbay.collect.events import (
    Event,
    event_type_of,
)
from patchbay.resolve.profile import Profile
from patchbay.resolve.stage import ResolvedBatch, decode_stored
from patchbay.retention import retained
from patchbay.segment import tallies
from patchbay.segment.catalog import (
    AudienceSource,
    Catalog,
    Feature,
    compile_catalog,
    condition_key,
)
from patchbay.segment.criteria import Definition, EventCondition, event_conditions
from patchbay.segment.evaluate import (
    MISSING,
    ProfileFacts,
    event_matches,
    event_time,
    measured,
)
from patchbay.segment.parse import DefinitionError, check_references, parse_definition

log = structlog.get_logger("patchbay.segment")

#: Users evaluated per step of an audience build, and log batches read per step of a scan.
BUILD_PAGE = 500
SCAN_PAGE = 1000
#: Users whose windows changed handled per commit.
EXPIRE_PAGE = 1000


#: What :meth:`SegmentEngine._expire_tallies` finds for a condition no audience counts.
_RETIRED = -1  # (no window is negative)


def _same(a: object, b: object) -> bool:
    """Equal and of the same type (``True`` and ``1`` are equal in Python, not in facts)."""
    return type(a) is type(b) and a == b


def _before(a: LogPosition | None, b: LogPosition | None) -> bool:
    if b is None:
        return False
    return a is None or a < b


class UserFacts(ProfileFacts):
    """What criteria can ask about one user, from its segment state and profile: the
    :class:`~patchbay.segment.evaluate.Facts` of :func:`holds` and the
    :class:`~patchbay.segment.compiled.Known` of compiled criteria."""

    def __init__(
        self,
        engine: SegmentEngine,
        user: SegmentUser,
        profile: Profile | None,
        members: set[int],
        now_ms: int,
    ) -> None:
        super().__init__(profile)
        self._engine = engine
        self._catalog = engine.catalog
        self._user = user
        self.members = members
        self.now_ms = now_ms
        self.tallies = user.tallies
        self.attributes: Mapping[str, object] = (
            profile.user_attributes if profile is not None else {}
        )

    def events(self, condition: EventCondition) -> tuple[int, float]:
        condition_id = self._catalog.condition_id(condition)
        tally = self._user.tallies.get(condition_id)
        return tallies.stats(tally, condition.window_ms, self.now_ms)

    def seen_input(self, name: str) -> bool:
        if self._profile is None:
            return False
        return any(self._engine.input_name(i) == name for i in self._profile.inputs)

    def seen_environment(self, environment: str) -> bool:
        return environment in self._user.environments

    def member(self, audience: str) -> bool:
        audience_id = self._catalog.by_name.get(audience)
        return audience_id is not None and audience_id in self.members


class KeptFacts(UserFacts):
    """:class:`UserFacts` from the profile facts the user's state kept when its last batch
    was counted (``SegmentUser.facts``, taken for the catalog's profile reads), instead of
    its profile: what a window expiry evaluates, as only time changed since."""

    def __init__(
        self, engine: SegmentEngine, user: SegmentUser, members: set[int], now_ms: int
    ) -> None:
        super().__init__(engine, user, None, members, now_ms)
        self._facts = user.facts
        self.attributes = {
            key[5:]: value for key, value in user.facts.items() if key.startswith("attr:")
        }

    def attribute(self, key: str) -> object:
        return self.attributes.get(key, MISSING)

    def identities(self, identity_type: str) -> list[str]:
        found = self._facts.get(f"identity:{identity_type}")
        return list(found) if found else []

    def consent(self, regulation: str, purpose: str) -> bool | None:
        found = self._facts.get(f"consent:{regulation}:{purpose}")
        return found if isinstance(found, bool) else None

    def seen_input(self, name: str) -> bool:
        return f"input:{name}" in self._facts


@dataclass
class _Work:
    """Users being changed in one commit, and what changed."""

    users: dict[int, SegmentUser] = field(default_factory=dict)
    new: set[int] = field(default_factory=set)
    #: The users whose state changed (only those are written).
    dirty: set[int] = field(default_factory=set)
    features: dict[int, set[Feature]] = field(default_factory=dict)
    everything: set[int] = field(default_factory=set)
    profiles: dict[int, Profile | None] = field(default_factory=dict)
    attributes: dict[int, set[str]] = field(default_factory=dict)
    #: The count and sum of each user's conditions before the batches changed their tally.
    before: dict[int, dict[int, tuple[int, float]]] = field(default_factory=dict)
    #: The users whose tallies were expired at this commit's moment already.
    expired: set[int] = field(default_factory=set)
    #: The users evaluated from the facts their state kept (:class:`KeptFacts`).
    kept: set[int] = field(default_factory=set)
    changes: SegmentChanges = field(default_factory=SegmentChanges)

    def touch(self, mpid: int, feature: Feature) -> None:
        self.features.setdefault(mpid, set()).add(feature)


class SegmentEngine:
    """Incremental audiences over an :class:`~patchbay.backends.abstract.AudienceStore`
    (see the module documentation). Not thread-safe: the stage calls it from its thread."""

    def __init__(
        self,
        store: AudienceStore,
        state: StateStore,
        log_: BatchLog,
        inputs: InputStore,
        clock: Clock,
    ) -> None:
        self._store = store
        self._state = state
        self._log = log_
        self._inputs = inputs
        self._clock = clock
        self.catalog = Catalog()
        self._version: int | None = None
        self._input_names: dict[str, str] = {}
        self.checkpoint: Checkpoint = store.checkpoint()
        self._conditions: dict[int, ConditionRecord] = {c.id: c for c in store.conditions()}
        self._windows: dict[int, int | None] = {}
        self.builds: dict[int, AudienceBuild] = {b.audience_id: b for b in store.builds()}
        self.records: dict[int, AudienceRecord] = {}
        #: Joins and leaves by audience id, and batches counted, since the stage last
        #: published them (:class:`~patchbay.metrics.SegmentMetrics`).
        self.joins: Counter[int] = Counter()
        self.leaves: Counter[int] = Counter()
        self.counted = 0
        self.expired = 0
        #: How many membership changes to send were recorded since the engine started.
        self.pending_recorded = 0

    # -- audiences -------------------------------------------------------------------------

    def input_name(self, input_id: str) -> str | None:
        """The name of an input (cached: names never change)."""
        name = self._input_names.get(input_id)
        if name is None:
            found = self._inputs.get_input(input_id)
            if found is None:
                return None
            name = self._input_names[input_id] = found.name
        return name

    def refresh(self, force: bool = False) -> bool:
        """Reload the audiences and their connections if they changed; register the
        conditions and builds that new or changed audiences need. Whether they changed."""
        version = self._store.version()
        if version == self._version and not force:
            return False
        self._version = version
        records = {a.id: a for a in self._store.list_audiences()}
        sources: dict[str, AudienceSource] = {}
        for record in records.values():
            try:
                definition = parse_definition(msgspec.json.decode(record.definition))
            except (DefinitionError, msgspec.DecodeError) as exc:
                log.error("audience_unreadable", audience=record.name, error=str(exc))
                continue
            sources[record.name] = AudienceSource(
                record.id, record.name, record.version, definition.criteria
            )
        order = self._order(sources)
        changes = SegmentChanges()
        keys = self._register_conditions([sources[n] for n in order], changes)
        catalog = compile_catalog(
            [sources[n] for n in order], order, keys, self._store.list_audience_connections()
        )
        now = self._clock.now_ms()
        for audience in catalog.audiences.values():
            build = self.builds.get(audience.id)
            if build is None or build.version != audience.version:
                build = AudienceBuild(audience.id, audience.version, "scanning", now)
                self.builds[audience.id] = build
                changes.builds.append(build)
                log.info("audience_build_started", audience=audience.name, version=build.version)
        for gone in set(self.builds) - set(catalog.audiences):
            del self.builds[gone]
        self.catalog = catalog
        self.records = records
        self._windows = dict(catalog.windows)
        if changes:
            self._store.commit(changes)
        return True

    def _order(self, sources: dict[str, AudienceSource]) -> list[str]:
        """The audiences in evaluation order, leaving out any whose references cannot be
        resolved (refused when defined, so only possible if the store was edited)."""
        definitions = {n: Definition(n, "", s.criteria) for n, s in sources.items()}
        while definitions:
            try:
                return check_references(definitions)
            except DefinitionError as exc:
                bad = exc.path.split(".")[0] or next(iter(definitions))
                log.error("audience_skipped", audience=bad, error=str(exc))
                definitions.pop(bad if bad in definitions else next(iter(definitions)))
        return []

    def _register_conditions(
        self, sources: Sequence[AudienceSource], changes: SegmentChanges
    ) -> dict[str, int]:
        """The id of every condition key ``sources`` use, registering new ones (to be
        counted over the history) and retiring those no longer used."""
        needed = {condition_key(c) for s in sources for c in event_conditions(s.criteria)}
        active = {c.key: c for c in self._conditions.values() if c.status != "retired"}
        next_id = max(self._conditions, default=0) + 1
        for key in sorted(needed - set(active)):
            record = ConditionRecord(next_id, key, "building", target=dict(self.checkpoint))
            if not any(self.checkpoint.values()):
                record = msgspec.structs.replace(record, status="built")
            next_id += 1
            self._conditions[record.id] = active[key] = record
            changes.conditions.append(record)
        for key, record in list(active.items()):
            if key not in needed:
                retired = msgspec.structs.replace(record, status="retired")
                self._conditions[record.id] = retired
                changes.conditions.append(retired)
                del active[key]
        return {key: record.id for key, record in active.items()}

    def _live_for(self, audience_id: int, mpid: int) -> bool:
        """Whether ``audience_id`` is kept up to date for ``mpid`` now."""
        build = self.builds.get(audience_id)
        if build is None:
            return False
        if build.phase == "live":
            return True
        return build.phase == "evaluating" and build.cursor is not None and mpid <= build.cursor

    # -- live batches ----------------------------------------------------------------------

    def apply(self, batches: Sequence[ResolvedBatch]) -> int:
        """Count and evaluate resolved batches (those at or before the engine's checkpoint
        are skipped); commit the changes with the checkpoint. Returns how many were new."""
        fresh = [
            b
            for b in batches
            if _before(self.checkpoint.get(b.stored.partition), b.stored.position)
        ]
        if not fresh:
            return 0
        now = self._clock.now_ms()
        work = _Work()
        live = self._live_users(fresh)
        wanted = set(live.values()) | {m for b in fresh for m in (*b.merged, b.mpid)}
        stored = self._store.users(wanted)
        for resolved in fresh:
            mpid = live[resolved.mpid]
            user = self._user(work, stored, mpid)
            for absorbed in {*resolved.merged, resolved.mpid} - {mpid}:
                self._absorb(work, stored, user, absorbed, now)
            if resolved.mpid == mpid and resolved.profile is not None:
                work.profiles[mpid] = resolved.profile
            else:
                work.profiles.pop(mpid, None)  # read again: the batch's user was merged
            self._count(work, user, resolved.stored.received_at_ms, resolved.batch, now)
        self._evaluate_all(work, now, live=True)
        checkpoint = advance(self.checkpoint, [b.stored.position for b in fresh])
        # only the partitions it moved, fenced on where they were: a processor that lost a
        # partition never counts its batches again (CheckpointMoved)
        moved = {p: pos for p, pos in checkpoint.items() if self.checkpoint.get(p) != pos}
        self._store.commit(work.changes, moved, since={p: self.checkpoint.get(p) for p in moved})
        self.checkpoint = checkpoint
        self.counted += len(fresh)
        return len(fresh)

    def _live_users(self, batches: Sequence[ResolvedBatch]) -> dict[int, int]:
        """Each batch's user, following merges made since (when read back)."""
        live: dict[int, int] = {}
        follow: set[int] = set()
        for b in batches:
            if b.profile is not None and b.profile.merged_into is not None:
                follow.add(b.mpid)
            else:
                live[b.mpid] = b.mpid
        for mpid in follow:
            live[mpid] = self._follow(mpid)
        return live

    def _follow(self, mpid: int) -> int:
        seen = {mpid}
        profile = self._state.profile(mpid)
        while profile is not None and profile.merged_into is not None:
            if profile.merged_into in seen:
                break
            mpid = profile.merged_into
            seen.add(mpid)
            profile = self._state.profile(mpid)
        return mpid

    def _user(self, work: _Work, stored: Mapping[int, SegmentUser], mpid: int) -> SegmentUser:
        user = work.users.get(mpid)
        if user is None:
            user = stored.get(mpid)
            if user is None:
                user = SegmentUser(mpid=mpid)
                work.new.add(mpid)
                work.dirty.add(mpid)
            work.users[mpid] = user
        return user

    def _absorb(
        self,
        work: _Work,
        stored: Mapping[int, SegmentUser],
        survivor: SegmentUser,
        absorbed_mpid: int,
        now: int,
    ) -> None:
        """Fold ``absorbed_mpid``'s state into ``survivor``; it leaves its audiences."""
        absorbed = work.users.pop(absorbed_mpid, None) or stored.get(absorbed_mpid)
        if absorbed is None or absorbed_mpid in work.changes.dropped_users:
            return
        for condition_id, tally in absorbed.tallies.items():
            window = self._windows.get(condition_id)
            mine = survivor.tallies.get(condition_id)
            if mine is None:
                survivor.tallies[condition_id] = tally
            else:
                tallies.merge(mine, tally, window)
        for environment in absorbed.environments:
            if environment not in survivor.environments:
                survivor.environments.append(environment)
        for audience_id in absorbed.audiences:
            if audience_id in self.catalog.audiences:
                self._left(work, audience_id, absorbed_mpid, now)
        work.changes.dropped_users.append(absorbed_mpid)
        work.new.discard(survivor.mpid)
        work.everything.add(survivor.mpid)
        work.dirty.add(survivor.mpid)

    def _count(
        self,
        work: _Work,
        user: SegmentUser,
        received_ms: int,
        batch: Batch,
        now: int,
    ) -> None:
        """Count one batch's events for every condition (noting each tally's count and sum
        before its first change) and the environment it was seen in. What the batch changed
        in the profile is found later, by comparing facts (:meth:`_profile_changes`)."""
        mpid = user.mpid
        environment = batch.environment
        if environment is not None and environment not in user.environments:
            user.environments.append(environment)
            work.dirty.add(mpid)
            work.touch(mpid, ("env", environment))
        catalog = self.catalog
        if not catalog.counters or not batch.events:
            return
        user_tallies = user.tallies
        before: dict[int, tuple[int, float]] | None = None
        for event in batch.events:
            candidates = catalog.candidates(event)
            if not candidates:
                continue
            at = event_time(event, received_ms)
            for counter in candidates:
                condition = counter.condition
                if counter.rest is not None and not counter.rest(event):
                    continue
                value = 1.0 if condition.sum is None else measured(condition.measure, event)
                if value is None:
                    continue
                condition_id = counter.id
                tally = user_tallies.get(condition_id)
                if before is None:
                    before = work.before.setdefault(mpid, {})
                if condition_id not in before:
                    before[condition_id] = tallies.stats(
                        tally, condition.window_ms, now, condition.sum is not None
                    )
                if tally is None:
                    tally = Tally()
                if tallies.add_event(tally, condition.window_ms, at, value, now):
                    user_tallies[condition_id] = tally
                    work.dirty.add(mpid)

    def _count_event(
        self,
        user: SegmentUser,
        condition_id: int,
        condition: EventCondition,
        event: Event,
        received_ms: int,
        now: int,
    ) -> bool:
        if not event_matches(condition.match, event):
            return False
        value = measured(condition.measure, event)
        if value is None:
            return False
        tally = user.tallies.get(condition_id)
        if tally is None:
            tally = Tally()
        changed = tallies.add_event(
            tally, condition.window_ms, event_time(event, received_ms), value, now
        )
        if changed:
            user.tallies[condition_id] = tally
        return changed

    # -- evaluation ------------------------------------------------------------------------

    def _evaluate_all(
        self, work: _Work, now: int, only: Collection[int] = (), live: bool = False
    ) -> None:
        """Evaluate the users of ``work`` for what their features affect (``only``: just
        these audiences, for a build), then store those that changed. ``live``: the users'
        batches were just counted: what changed in their profiles and which conditions
        changed their answer are found here, and the facts seen are kept."""
        missing = [m for m in work.users if m not in work.profiles and m not in work.kept]
        if missing:
            work.profiles.update(self._state.profiles(missing))
        catalog = self.catalog
        for mpid, user in work.users.items():
            profile = work.profiles.get(mpid)
            if live:
                self._profile_changes(work, user, profile)
                self._condition_changes(work, user, now)
            if mpid in work.everything:
                affected = set(catalog.audiences)
            else:
                affected = catalog.affected(work.features.get(mpid, ()))
                if mpid in work.new:
                    affected |= catalog.defaults
            affected |= set(only)
            new = mpid in work.new
            if self._evaluate(work, user, profile, affected, now, only, new):
                work.dirty.add(mpid)
            if mpid in work.dirty:
                work.changes.users.append(user)

    def _profile_changes(self, work: _Work, user: SegmentUser, profile: Profile | None) -> None:
        """Note the profile facts audiences read that differ from what the user's state saw
        last, and keep the new ones."""
        facts = self._profile_facts(profile)
        old = user.facts
        reads = self.catalog.reads_checksum
        if user.facts_for != reads:
            user.facts_for = reads
            work.dirty.add(user.mpid)
        if facts == old and all(type(v) is type(old[k]) for k, v in facts.items()):
            return  # (``==`` alone takes ``True`` for ``1``)
        changed = [
            key
            for key in {*facts, *old}
            if not (key in facts and key in old and _same(facts[key], old[key]))
        ]
        if not changed and len(facts) == len(old):
            return
        mpid = user.mpid
        for key in changed:
            kind, _, name = key.partition(":")
            work.touch(mpid, (kind, name))
            if kind == "attr":
                work.attributes.setdefault(mpid, set()).add(name)
        user.facts = facts
        work.dirty.add(mpid)

    def _profile_facts(self, profile: Profile | None) -> dict[str, Any]:
        """The facts of ``profile`` that audiences read (see ``SegmentUser.facts``)."""
        facts: dict[str, Any] = {}
        if profile is None:
            return facts
        identities: dict[str, list[str]] | None = None
        inputs: set[str | None] | None = None
        attributes = profile.user_attributes
        for kind, name, key in self.catalog.profile_reads:
            if kind == "attr":
                value = attributes.get(name, MISSING)
                if value is not MISSING:
                    facts[key] = value
            elif kind == "identity":
                if identities is None:
                    identities = {}
                    for record in profile.identities:
                        identities.setdefault(record.type, []).append(record.value)
                values = identities.get(name)
                if values:
                    facts[key] = sorted(values)
            elif kind == "consent":
                regulation, _, purpose = name.partition(":")
                decisions = profile.gdpr if regulation == "gdpr" else profile.ccpa
                found = decisions.get(purpose)
                if found is not None:
                    facts[key] = found.consented
            elif kind == "input":
                if inputs is None:
                    inputs = {self.input_name(i) for i in profile.inputs}
                if name in inputs:
                    facts[key] = True
        return facts

    def _condition_changes(self, work: _Work, user: SegmentUser, now: int) -> None:
        """Note the conditions whose answer the batches' events changed for the user."""
        mpid = user.mpid
        before = work.before.get(mpid)
        if not before:
            return
        catalog, windows, user_tallies = self.catalog, self._windows, user.tallies
        summed = catalog.summed
        for condition_id, stats in before.items():
            after = tallies.stats(
                user_tallies.get(condition_id),
                windows.get(condition_id),
                now,
                condition_id in summed,
            )
            if after != stats and catalog.answers_change(condition_id, stats, after):
                work.touch(mpid, ("cond", str(condition_id)))

    def _evaluate(
        self,
        work: _Work,
        user: SegmentUser,
        profile: Profile | None,
        affected: set[int],
        now: int,
        include: Collection[int] = (),
        new: bool = False,
    ) -> bool:
        """Evaluate ``affected`` audiences (and those that refer to one that changed) for
        ``user``, in dependency order; record joins and leaves; reschedule its windows.
        Whether its state changed.

        For a ``new`` user, "changed" means: differs from what the audience is for a user
        nothing is known of (the audiences that refer to it assumed that value)."""
        before = (list(user.audiences), user.next_check_ms, len(user.tallies))
        due = user.next_check_ms is not None and user.next_check_ms <= now
        expired: set[int] = set()
        if user.mpid not in work.expired and (due or self._retired(user)):
            expired = self._expire_tallies(user, now)
        changed = bool(expired)
        if expired:  # events left their windows since the user was last evaluated
            affected = affected | self.catalog.affected(("cond", str(c)) for c in expired)
        catalog = self.catalog
        members = {a for a in user.audiences if a in catalog.audiences}
        facts = (
            KeptFacts(self, user, members, now)
            if user.mpid in work.kept
            else UserFacts(self, user, profile, members, now)
        )
        joined: set[int] = set()
        position, order = catalog.position, catalog.order
        # the affected audiences in evaluation order (a heap of their positions: those that
        # refer to one that changed are added as they come, always later in the order)
        queue = [position[a] for a in affected if a in position]
        heapq.heapify(queue)
        queued = set(queue)
        while queue:
            audience_id = order[heapq.heappop(queue)]
            if audience_id not in include and not self._live_for(audience_id, user.mpid):
                continue
            audience = catalog.audiences[audience_id]
            inside = audience.test(facts)
            was = audience_id in members
            if inside != (audience.default if new else was):
                for dependent in catalog.dependents(audience_id):
                    if position[dependent] not in queued:
                        queued.add(position[dependent])
                        heapq.heappush(queue, position[dependent])
            if inside == was:
                continue
            if inside:
                members.add(audience_id)
                joined.add(audience_id)
                self._joined(work, audience_id, user.mpid, now)
            else:
                members.discard(audience_id)
                self._left(work, audience_id, user.mpid, now)
        user.audiences = sorted(members)
        self._attribute_updates(work, user, members - joined, now)
        user.next_check_ms = self._next_check(user)
        return changed or before != (user.audiences, user.next_check_ms, len(user.tallies))

    def _joined(self, work: _Work, audience_id: int, mpid: int, now: int) -> None:
        self.joins[audience_id] += 1
        work.changes.joined.append((audience_id, mpid))
        self._pending(work, audience_id, mpid, "add", now)

    def _left(self, work: _Work, audience_id: int, mpid: int, now: int) -> None:
        self.leaves[audience_id] += 1
        work.changes.left.append((audience_id, mpid))
        self._pending(work, audience_id, mpid, "delete", now)

    def _pending(self, work: _Work, audience_id: int, mpid: int, action: str, now: int) -> None:
        for connection in self.catalog.connections.get(audience_id, ()):
            self.pending_recorded += 1
            work.changes.pending.append(
                NewPendingChange(connection.output, audience_id, mpid, action, now)  # type: ignore[arg-type]
            )

    def _attribute_updates(
        self, work: _Work, user: SegmentUser, stayed: Iterable[int], now: int
    ) -> None:
        """An ``attribute_update`` for each connection of an audience the user stayed in
        whose named attributes this batch changed."""
        touched = work.attributes.get(user.mpid)
        if not touched:
            return
        for audience_id in stayed:
            for connection in self.catalog.connections.get(audience_id, ()):
                if touched.intersection(connection.attributes):
                    self.pending_recorded += 1
                    work.changes.pending.append(
                        NewPendingChange(
                            connection.output, audience_id, user.mpid, "attribute_update", now
                        )
                    )

    def _retired(self, user: SegmentUser) -> bool:
        """Whether the user has a tally no audience counts any more."""
        return not self._windows.keys() >= user.tallies.keys()

    def _expire_tallies(self, user: SegmentUser, now: int) -> set[int]:
        """Drop events that left their windows and tallies no audience uses; the ids of
        the conditions whose count changed. (One pass, :func:`tallies.expire` inlined: a
        user has a tally per condition it matched, most of them over all time or with
        nothing to drop, and this runs at every expiry.)"""
        changed: set[int] = set()
        windows, user_tallies = self._windows, user.tallies
        gone: list[int] = []
        for condition_id, tally in user_tallies.items():
            window = windows.get(condition_id, _RETIRED)
            if window is None:
                continue  # over all time: nothing leaves
            if window == _RETIRED:
                gone.append(condition_id)  # no audience counts it any more
                continue
            events = tally.events
            if events and events[0][0] + window <= now:
                changed.add(condition_id)
                if tallies.expire(tally, window, now) and not events:
                    gone.append(condition_id)
            elif not events:
                gone.append(condition_id)
        for condition_id in gone:
            del user_tallies[condition_id]
        return changed

    def _next_check(self, user: SegmentUser) -> int | None:
        """When the user's next windowed event leaves its window (``None``: never); see
        :func:`tallies.next_change`, inlined."""
        found: int | None = None
        windows = self._windows
        for condition_id, tally in user.tallies.items():
            events = tally.events
            if events and (window := windows.get(condition_id)) is not None:
                at = events[0][0] + window
                if found is None or at < found:
                    found = at
        return found

    # -- time ------------------------------------------------------------------------------

    def expire(self, limit: int = EXPIRE_PAGE) -> int:
        """Re-evaluate up to ``limit`` users whose windows changed by now; how many."""
        now = self._clock.now_ms()
        due = self._store.due_users(now, limit)
        if not due:
            return 0
        work = _Work()
        reads = self.catalog.reads_checksum
        for mpid, user in self._store.users(due).items():
            work.users[mpid] = user
            work.dirty.add(mpid)  # its next check moves, whatever else happens
            work.expired.add(mpid)
            if user.facts_for == reads:  # only time changed: no need to read its profile
                work.kept.add(mpid)
            for condition_id in self._expire_tallies(user, now):
                work.touch(mpid, ("cond", str(condition_id)))
        self._evaluate_all(work, now)
        self._store.commit(work.changes)
        self.expired += len(due)
        return len(due)

    # -- builds ----------------------------------------------------------------------------

    def building(self) -> bool:
        """Whether any audience or condition is still being built."""
        return any(b.phase != "live" for b in self.builds.values())

    def build_step(self) -> bool:
        """Do one step of building new and changed audiences (a page of the log for the
        conditions being counted, or a page of users for an audience being evaluated);
        whether anything was done."""
        counting = [c for c in self._conditions.values() if c.status == "building"]
        if counting:
            self._scan(counting)
            return True
        now = self._clock.now_ms()
        changes = SegmentChanges()
        for audience_id in self.catalog.order:
            build = self.builds[audience_id]
            audience = self.catalog.audiences[audience_id]
            if build.phase == "scanning" and all(
                self.builds[r].phase == "live" for r in audience.references
            ):
                build = msgspec.structs.replace(
                    build, phase="evaluating", users_total=self._store.count_users()
                )
                self.builds[audience_id] = build
                changes.builds.append(build)
        if changes:
            self._store.commit(changes)
        for audience_id in self.catalog.order:
            if self.builds[audience_id].phase == "evaluating":
                self._evaluate_page(audience_id, now)
                return True
        return False

    def _evaluate_page(self, audience_id: int, now: int) -> None:
        build = self.builds[audience_id]
        page = self._store.scan_users(build.cursor, BUILD_PAGE)
        work = _Work()
        for user in page:
            work.users[user.mpid] = user
        self._evaluate_all(work, now, only=(audience_id,))
        done = build.users_done + len(page)
        if len(page) < BUILD_PAGE:
            build = msgspec.structs.replace(
                build,
                phase="live",
                users_done=done,
                users_total=max(done, build.users_total),
                finished_at_ms=now,
                cursor=None,
            )
            log.info(
                "audience_live",
                audience=self.catalog.audiences[audience_id].name,
                users=done,
                seconds=round((now - build.started_at_ms) / 1000, 3),
            )
        else:
            build = msgspec.structs.replace(
                build,
                cursor=page[-1].mpid,
                users_done=done,
                users_total=max(build.users_total, done),
            )
        self.builds[audience_id] = build
        work.changes.builds.append(build)
        self._store.commit(work.changes)

    def _scan(self, counting: Sequence[ConditionRecord]) -> None:
        """Count one page of the log for the conditions being built."""
        partition, start = self._scan_start(counting)
        if partition is None:  # nothing left below any target
            built = [msgspec.structs.replace(c, status="built") for c in counting]
            for record in built:
                self._conditions[record.id] = record
            self._store.commit(SegmentChanges(conditions=built))
            return
        targets = [
            c for c in counting if _before(c.reached.get(partition), c.target.get(partition))
        ]
        upto = max((c.target[partition] for c in targets), default=None)
        page = [
            s for s in self._log.read(partition, start, SCAN_PAGE) if not _before(upto, s.position)
        ]
        work = _Work()
        now = self._clock.now_ms()
        if page:
            users = dict(self._state.resolved(partition, start, len(page)))
            live: dict[int, int] = {}
            stored = self._store.users(set(users.values()))
            by_id = {c.id: c for c in targets}
            conditions = {
                c.id: c.condition
                for counted_ in self.catalog.counters.values()
                for c in counted_
                if c.id in by_id
            }
            for batch_stored in page:
                mpid = users.get(batch_stored.position)
                if mpid is None:
                    continue  # the resolved user is no longer kept
                batch = decode_stored(batch_stored)
                if batch is None:
                    continue
                if mpid not in live:
                    live[mpid] = self._follow(mpid)
                target_mpid = live[mpid]
                if target_mpid not in stored and target_mpid not in work.users:
                    stored = {**stored, **self._store.users([target_mpid])}
                user = self._user(work, stored, target_mpid)
                position = batch_stored.position
                for event in batch.events or ():
                    for cid, condition in conditions.items():
                        record = by_id[cid]
                        if condition.match.type != event_type_of(event):
                            continue
                        if not (
                            _before(record.reached.get(partition), position)
                            and not _before(record.target.get(partition), position)
                        ):
                            continue
                        if self._count_event(
                            user, cid, condition, event, batch_stored.received_at_ms, now
                        ):
                            work.dirty.add(user.mpid)
        reached_to = page[-1].position if page else upto
        for record in targets:
            target = record.target[partition]
            reached = target if not _before(reached_to, target) else reached_to
            done = {**record.reached, partition: reached} if reached is not None else record.reached
            finished = all(not _before(done.get(p), t) for p, t in record.target.items())
            updated = msgspec.structs.replace(
                record,
                reached=done,
                scanned=record.scanned + len(page),
                status="built" if finished else "building",
            )
            self._conditions[record.id] = updated
            work.changes.conditions.append(updated)
            if finished:
                log.info(
                    "condition_built",
                    condition=record.id,
                    batches=updated.scanned,
                    history=[r.describe() for r in retained(self._log)],
                )
        for user in work.users.values():
            if user.mpid in work.dirty:
                self._expire_tallies(user, now)
                user.next_check_ms = self._next_check(user)
                work.changes.users.append(user)
        self._store.commit(work.changes)

    @staticmethod
    def _scan_start(
        counting: Sequence[ConditionRecord],
    ) -> tuple[int | None, LogPosition | None]:
        """The partition to scan next and the position to read after."""
        for record in counting:
            for partition, target in sorted(record.target.items()):
                if _before(record.reached.get(partition), target):
                    starts = [
                        c.reached.get(partition)
                        for c in counting
                        if _before(c.reached.get(partition), c.target.get(partition))
                    ]
                    start = (
                        None
                        if any(s is None for s in starts)
                        else min(s for s in starts if s is not None)
                    )
                    return partition, start
        return None, None

    def timed(self, budget_s: float) -> int:
        """Build steps for at most ``budget_s``; how many."""
        deadline = time.monotonic() + budget_s
        steps = 0
        while time.monotonic() < deadline and self.build_step():
            steps += 1
        return steps
