"""A segment world for tests: a real log, resolve stage and segment engine on the test's
backend, a manual clock, and a from-scratch evaluation of the same history to compare with.

:class:`SegmentWorld` appends batches, resolves them, hands the resolved chunks to the
:class:`~patchbay.segment.engine.SegmentEngine` (as the pipeline does), runs its builds and
window expiries, and reads the memberships back from the store. :func:`from_scratch`
evaluates every audience for every user over the whole history at the clock's time, with
nothing incremental: the users' batches, their profiles as they are now, and nothing else.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from patchbay.backends.abstract import Backend
from patchbay.backends.records import AudienceRecord, Credential, Input, NewBatch
from patchbay.clock import ManualClock
from patchbay.collect.batch import Batch
from patchbay.pipeline import StageFeed
from patchbay.resolve.profile import Profile
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.stage import IDSYNC_CHANNEL, ResolvedBatch, ResolvedChunk, ResolveStage
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.segment.criteria import Definition, EventCondition
from patchbay.segment.engine import SegmentEngine
from patchbay.segment.evaluate import (
    ProfileFacts,
    event_matches,
    event_time,
    holds,
    in_window,
    measured,
)
from patchbay.segment.parse import DefinitionError, check_references, definition_document

BASE_MS = 1_750_000_000_000
#: The inputs every world has: name -> id.
INPUTS = {"web": "in-web", "ios": "in-ios"}


@dataclass(frozen=True)
class Seen:
    """A batch as resolved: what it held, when and where it came, and its user then."""

    batch: Batch
    received_ms: int
    input_id: str
    mpid: int


@dataclass
class SegmentWorld:
    """See the module documentation."""

    backend: Backend
    clock: ManualClock = field(default_factory=lambda: ManualClock(BASE_MS))
    history: list[Seen] = field(default_factory=list)
    chunks: list[ResolvedChunk] = field(default_factory=list)
    #: Every chunk handed to the engine so far.
    handed: list[ResolvedChunk] = field(default_factory=list)
    definitions: dict[str, Definition] = field(default_factory=dict)
    #: Hand the engine what it gets when it catches up from storage (as a stage that fell
    #: behind does: the log, the resolved users, merges read back) rather than the chunks.
    read_back: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _feed: StageFeed | None = None

    def __post_init__(self) -> None:
        for name, input_id in INPUTS.items():
            self.backend.inputs.add_input(
                Input(input_id, name, "server", 0.0, True, BASE_MS),
                Credential(f"key-{name}", input_id, "x", BASE_MS, True),
            )
        self.resolve = ResolveStage(
            self.backend.log, self.backend.state, Resolver(IdentityStrategy()), [self], chunk=7
        )
        self.engine = self.new_engine()

    def new_engine(self) -> SegmentEngine:
        """A segment engine over the world's stores (as after a restart)."""
        b = self.backend
        return SegmentEngine(b.audiences, b.state, b.log, b.inputs, self.clock)

    def offer(self, chunk: ResolvedChunk) -> None:
        self.chunks.append(chunk)

    # -- what happens ------------------------------------------------------------------

    def send(self, body: Mapping[str, Any], input_name: str = "web", idsync: bool = False) -> None:
        """Append one batch received now."""
        n = next(self._ids)
        self.backend.log.append(
            [
                NewBatch(
                    batch_id=f"batch-{n:05d}",
                    input_id=INPUTS[input_name],
                    received_at_ms=self.clock.now_ms(),
                    channel=IDSYNC_CHANNEL if idsync else "server_to_server",
                    body=msgspec.json.encode(body),
                )
            ]
        )

    def define(self, definition: Definition) -> bool:
        """Create or replace an audience; ``False`` (nothing changed) if the set of
        audiences would refer to a missing one or in a cycle."""
        trial = {**self.definitions, definition.name: definition}
        try:
            check_references(trial)
        except DefinitionError:
            return False
        store = self.backend.audiences
        document = msgspec.json.encode(definition_document(definition))
        now = self.clock.now_ms()
        old = store.get_audience(definition.name)
        if old is None:
            store.add_audience(
                AudienceRecord(0, definition.name, definition.description, document, now, now)
            )
        else:
            changed = self.definitions[definition.name].criteria != definition.criteria
            store.update_audience(
                msgspec.structs.replace(
                    old,
                    definition=document,
                    updated_at_ms=now,
                    version=old.version + (1 if changed else 0),
                )
            )
        self.definitions[definition.name] = definition
        return True

    def settle(self, engine: SegmentEngine | None = None) -> None:
        """Resolve what was appended, hand it to the engine, and let the engine build,
        expire and catch up as its stage would."""
        engine = engine or self.engine
        self.resolve.run_until_caught_up()
        chunks, self.chunks = self.chunks, []
        if self.read_back:
            self._read_back(engine, chunks)
            chunks = []
        for chunk in chunks:
            for resolved in chunk.batches:
                self.history.append(
                    Seen(
                        resolved.batch,
                        resolved.stored.received_at_ms,
                        resolved.stored.input_id,
                        resolved.mpid,
                    )
                )
            engine.refresh()
            engine.apply(chunk.batches)
            self.handed.append(chunk)
        engine.refresh()
        while engine.build_step():
            pass
        while engine.expire():
            pass

    def _read_back(self, engine: SegmentEngine, chunks: list[ResolvedChunk]) -> None:
        for chunk in chunks:
            for resolved in chunk.batches:
                self.history.append(
                    Seen(
                        resolved.batch,
                        resolved.stored.received_at_ms,
                        resolved.stored.input_id,
                        resolved.mpid,
                    )
                )
        world = self

        class Forward:
            name = "segment-read-back"

            def handle(self, batches: Sequence[ResolvedBatch]) -> None:
                engine.refresh()
                engine.apply(batches)
                world.handed.append(
                    ResolvedChunk(0, None, batches[-1].stored.position, list(batches))
                )

        if self._feed is None:
            self._feed = StageFeed(Forward(), self.backend)
        self._feed.stage = Forward()
        self._feed._catch_up_all()

    # -- what it gives -----------------------------------------------------------------

    def memberships(self) -> dict[str, set[int]]:
        """The members of every audience, from the store."""
        store = self.backend.audiences
        found: dict[str, set[int]] = {}
        for record in store.list_audiences():
            found[record.name] = set(store.members(record.id, None, 1_000_000))
        return found

    def explain(self, got: dict[str, set[int]], expected: dict[str, set[int]]) -> str:
        """What differs, with the users' histories and states (for a failing test)."""
        lines = []
        for name in sorted(set(got) | set(expected)):
            for mpid in sorted(got.get(name, set()) ^ expected.get(name, set())):
                lines.append(f"audience {name}: user {mpid} got={mpid in got.get(name, set())}")
                lines.append(f"  profile: {self.backend.state.profile(mpid)}")
                lines.append(f"  state: {self.backend.audiences.users([mpid]).get(mpid)}")
                for seen in self.history:
                    lines.append(f"  seen: mpid={seen.mpid} input={seen.input_id} {seen.batch}")
        return "\n".join(lines)

    def expected(self) -> dict[str, set[int]]:
        """The memberships a from-scratch evaluation gives now."""
        return from_scratch(
            self.definitions,
            self.history,
            self.backend.state.profiles,
            self.clock.now_ms(),
        )


class ScratchFacts:
    """What criteria ask, computed from a user's whole history (the profile's facts from
    :class:`ProfileFacts`, which compiled builds do not let a test class inherit from)."""

    def __init__(
        self, seen: Sequence[Seen], profile: Profile | None, members: set[str], now_ms: int
    ) -> None:
        self._profile = profile
        self._known = ProfileFacts(profile)
        self._seen = seen
        self._members = members
        self._now = now_ms

    def attribute(self, key: str) -> object:
        return self._known.attribute(key)

    def identities(self, identity_type: str) -> list[str]:
        return self._known.identities(identity_type)

    def consent(self, regulation: str, purpose: str) -> bool | None:
        return self._known.consent(regulation, purpose)

    def events(self, condition: EventCondition) -> tuple[int, float]:
        count, total = 0, 0.0
        for seen in self._seen:
            for event in seen.batch.events or ():
                if not event_matches(condition.match, event):
                    continue
                value = measured(condition.measure, event)
                at = event_time(event, seen.received_ms)
                if value is None or not in_window(at, condition.window_ms, self._now):
                    continue
                count += 1
                total += value
        return count, total

    def seen_input(self, name: str) -> bool:
        return self._profile is not None and INPUTS.get(name) in self._profile.inputs

    def seen_environment(self, environment: str) -> bool:
        return any(s.batch.environment == environment for s in self._seen)

    def member(self, audience: str) -> bool:
        return audience in self._members


def from_scratch(
    definitions: Mapping[str, Definition],
    history: Sequence[Seen],
    profiles: Any,
    now_ms: int,
) -> dict[str, set[int]]:
    """Every audience's members over ``history`` (users followed through merges to the
    user they are now), evaluated in dependency order."""
    order = check_references(dict(definitions))
    everyone = {s.mpid for s in history}
    known: dict[int, Profile] = profiles(everyone)

    def live(mpid: int) -> int:
        seen = {mpid}
        while (p := known.get(mpid)) is not None and p.merged_into is not None:
            if p.merged_into in seen:
                break
            mpid = p.merged_into
            seen.add(mpid)
            if mpid not in known:
                known.update(profiles([mpid]))
        return mpid

    by_user: dict[int, list[Seen]] = {}
    for seen in history:
        by_user.setdefault(live(seen.mpid), []).append(seen)
    result: dict[str, set[int]] = {name: set() for name in definitions}
    for mpid, batches in by_user.items():
        members: set[str] = set()
        facts = ScratchFacts(batches, known.get(mpid), members, now_ms)
        for name in order:
            if holds(definitions[name].criteria, facts):
                members.add(name)
                result[name].add(mpid)
    return result
