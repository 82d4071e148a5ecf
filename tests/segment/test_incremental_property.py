"""The property that makes incremental audiences trustworthy: random histories, random
definitions over every kind of criteria (nested audiences included), a random clock; after
every step the memberships the engine keeps equal a from-scratch evaluation of the same
history at the same moment, on each deployment (each example on an empty backend of its
own; fewer examples on PostgreSQL, where they cost more).

A step sends a batch (events of every kind the criteria count, user attributes, consent,
identities that make the resolver merge users, an environment, an input), sends an IDSync
alias record that folds one user into another, moves the clock (so windows pass), or
defines or redefines an audience (which the engine then builds over the history: backfill
must equal real time). Some runs also restart the engine between steps (a new engine over
the same store) and offer the last chunks again: nothing may be counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.resolve.resolver import derived_mpid
from patchbay.segment import criteria as c
from patchbay.segment.criteria import Definition
from patchbay.segment.replay import replay
from tests.deployments import BackendSpec
from tests.segment import strategies as pools
from tests.segment.conftest import Fresh
from tests.segment.harness import BASE_MS, SegmentWorld

PERSONAS = [
    ("c1", "IDFA-1"),
    ("c1", "IDFA-2"),
    (None, "IDFA-3"),
    ("c2", "IDFA-3"),
    (None, "IDFA-4"),
]
#: Clock moves: seconds apart as well as hours (a window's events leave it one by one).
STEPS_MS = [0, 1_000, 10_000, 20_000, 30_000, 50_000, 600_000, 3_600_000, 7_300_000]
STEPS_MS.append(31 * 86_400_000)


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    """A batch of one of the personas (so users meet and merge) with segment data."""
    customer, idfa = draw(st.sampled_from(PERSONAS))
    body: dict[str, Any] = {"device_info": {"ios_advertising_id": idfa}}
    if customer is not None and draw(st.booleans()):
        body["user_identities"] = {"customer_id": customer}
        if draw(st.booleans()):
            body["user_identities"]["email"] = draw(st.sampled_from(pools.IDENTITY_VALUE_POOL[:2]))
    body["events"] = draw(st.lists(pools.events(BASE_MS), max_size=3))
    if draw(st.booleans()):
        body["user_attributes"] = draw(
            st.dictionaries(
                st.sampled_from(pools.ATTRIBUTE_KEY_POOL), pools.attribute_values(), max_size=2
            )
        )
    if draw(st.integers(0, 4)) == 0:
        body["deleted_user_attributes"] = draw(
            st.lists(st.sampled_from(pools.ATTRIBUTE_KEY_POOL), max_size=1)
        )
    if draw(st.integers(0, 3)) == 0:
        stamp = {"timestamp_unixtime_ms": BASE_MS}
        body["consent_state"] = {
            "gdpr": {
                draw(st.sampled_from(pools.GDPR_PURPOSE_POOL)): {
                    "consented": draw(st.booleans()),
                    **stamp,
                }
            },
            "ccpa": {"data_sale_opt_out": {"consented": draw(st.booleans()), **stamp}},
        }
    if draw(st.booleans()):
        body["environment"] = draw(st.sampled_from(["production", "development"]))
    return body


@dataclass(frozen=True)
class Send:
    body: dict[str, Any]
    input_name: str


@dataclass(frozen=True)
class Alias:
    """Fold the user batch ``source`` created into the one batch ``target`` created."""

    source: int
    target: int


@dataclass(frozen=True)
class Wait:
    ms: int


@dataclass(frozen=True)
class SendLater:
    """Move the clock, then send, before the engine looks at the windows that passed (the
    batch finds them first)."""

    ms: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Define:
    definition: Definition


@dataclass(frozen=True)
class Restart:
    """A new engine over the same store, offered the last chunks again."""


Step = Send | SendLater | Alias | Wait | Define | Restart


@st.composite
def histories(draw: st.DrawFn, restarts: bool) -> list[Step]:
    names = list(pools.AUDIENCE_NAME_POOL)
    steps: list[Step] = []
    defined: list[str] = []
    for _ in range(draw(st.integers(1, 3))):  # audiences from the start
        name = names[len(defined) % len(names)]
        steps.append(Define(draw(pools.definitions(tuple(defined), names=st.just(name)))))
        if name not in defined:
            defined.append(name)
    for _ in range(draw(st.integers(4, 24))):
        kind = draw(st.integers(0, 19))
        if kind < 11:
            steps.append(Send(draw(batches()), draw(st.sampled_from(pools.INPUT_POOL))))
        elif kind < 14:
            steps.append(Wait(draw(st.sampled_from(STEPS_MS))))
        elif kind < 16:
            steps.append(SendLater(draw(st.sampled_from(STEPS_MS)), draw(batches())))
        elif kind < 17:
            steps.append(Alias(draw(st.integers(0, 30)), draw(st.integers(0, 30))))
        elif kind < 19:
            name = draw(st.sampled_from(names))
            others = tuple(n for n in defined if n != name)
            steps.append(Define(draw(pools.definitions(others, names=st.just(name)))))
            if name not in defined:
                defined.append(name)
        elif restarts:
            steps.append(Restart())
    return steps


@st.composite
def windowed_definitions(draw: st.DrawFn, name: str) -> Definition:
    """Events of one type the batches send, counted over a short window, beside a criterion
    on the profile (a user attribute, identity, consent, input or environment): audiences
    that window expiries re-evaluate, from the facts the users' states kept."""
    event_type = draw(st.sampled_from(pools.EVENT_TYPE_POOL))
    low = draw(st.integers(0, 2))
    high = draw(st.none() | st.integers(low, 2))
    events = c.EventCondition(
        c.EventMatch(event_type, None, None, None, ()),
        draw(st.sampled_from(pools.WINDOW_POOL[:2])),
        count=c.Count(low, high),
    )
    profile = draw(pools.leaves(()))
    profile = c.Not(profile) if draw(st.booleans()) else profile
    both = (events, profile)
    return Definition(name, "", c.All(both) if draw(st.booleans()) else c.AnyOf(both))


@st.composite
def windowed_histories(draw: st.DrawFn) -> list[Step]:
    """Batches sent seconds to minutes apart, with waits that let their events leave the
    windows of :func:`windowed_definitions` audiences."""
    steps: list[Step] = [
        Define(draw(windowed_definitions(name)))
        for name in pools.AUDIENCE_NAME_POOL[: draw(st.integers(1, 3))]
    ]
    short = [ms for ms in STEPS_MS if 0 < ms <= 600_000]
    for _ in range(draw(st.integers(4, 24))):
        if draw(st.integers(0, 2)):
            steps.append(Send(draw(batches()), draw(st.sampled_from(pools.INPUT_POOL))))
        else:
            steps.append(Wait(draw(st.sampled_from(short))))
    return steps


#: A postgres example costs a schema and a topic of its own and a round trip a store call:
#: the property runs on it with this share of the examples (the embedded store runs all).
SCALED_SHARE = 0.1


def histories_settings(spec: BackendSpec, examples: int) -> settings:
    """Histories are long to draw and to run: no deadline, no health checks on their size;
    fewer examples where every store call is a round trip (:data:`SCALED_SHARE`)."""
    if spec.shared_state:
        examples = max(4, int(examples * SCALED_SHARE))
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def around_now(body: dict[str, Any], world: SegmentWorld) -> dict[str, Any]:
    """``body`` with its events' times moved by as much as the clock moved since the start:
    drawn around the start, they stay around the moment they are sent, so that windowed
    conditions count them and later steps see them leave their windows (window expiries)."""
    shift = world.clock.now_ms() - BASE_MS
    if not shift or not body.get("events"):
        return body
    events = []
    for event in body["events"]:
        data = event.get("data", {})
        if "timestamp_unixtime_ms" in data:
            data = {**data, "timestamp_unixtime_ms": data["timestamp_unixtime_ms"] + shift}
            event = {**event, "data": data}
        events.append(event)
    return {**body, "events": events}


def run(world: SegmentWorld, steps: list[Step]) -> SegmentWorld:
    sent = 0
    for step in steps:
        match step:
            case Send(body, input_name):
                world.send(around_now(body, world), input_name)
                sent += 1
            case Alias(source, target) if sent:
                survivor = derived_mpid(f"batch-{target % sent + 1:05d}")
                absorbed = derived_mpid(f"batch-{source % sent + 1:05d}")
                world.send(
                    {
                        "mpid": survivor,
                        "patchbay_merged_from": [absorbed],
                        "patchbay_merge_reason": "alias",
                    },
                    idsync=True,
                )
                sent += 1
            case Wait(ms):
                world.clock.advance(ms / 1000)
            case SendLater(ms, body):
                world.clock.advance(ms / 1000)
                world.send(around_now(body, world))
                sent += 1
            case Define(definition):
                world.define(definition)
            case Restart():
                world.engine = world.new_engine()
                # the pipeline may offer what the engine already has: nothing changes
                for chunk in world.handed[-3:]:
                    world.engine.refresh()
                    assert world.engine.apply(chunk.batches) == 0
        world.settle()
        got, expected = world.memberships(), world.expected()
        assert got == expected, world.explain(got, expected)
    return world


def test_incremental_equals_from_scratch(spec: BackendSpec, fresh_backends: Fresh) -> None:
    @histories_settings(spec, 100)
    @given(histories(restarts=False))
    def check(steps: list[Step]) -> None:
        with fresh_backends() as backend:
            run(SegmentWorld(backend), steps)

    check()


def test_window_expiries_equal_from_scratch(spec: BackendSpec, fresh_backends: Fresh) -> None:
    """Users whose events leave short windows, re-evaluated by the engine's expiries from the
    profile facts their states kept, against the from-scratch evaluation of the profile."""

    @histories_settings(spec, 150)
    @given(windowed_histories())
    def check(steps: list[Step]) -> None:
        with fresh_backends() as backend:
            run(SegmentWorld(backend), steps)

    check()


def test_restarts_and_offers_again_change_nothing(spec: BackendSpec, fresh_backends: Fresh) -> None:
    @histories_settings(spec, 40)
    @given(histories(restarts=True))
    def check(steps: list[Step]) -> None:
        with fresh_backends() as backend:
            run(SegmentWorld(backend), steps)

    check()


def test_read_back_from_storage_equals_from_scratch(
    spec: BackendSpec, fresh_backends: Fresh
) -> None:
    """What a stage that fell behind reads back (the log, resolved users, merges since)."""

    @histories_settings(spec, 40)
    @given(histories(restarts=True))
    def check(steps: list[Step]) -> None:
        with fresh_backends() as backend:
            run(SegmentWorld(backend, read_back=True), steps)

    check()


def test_replay_gives_the_same_memberships(spec: BackendSpec, fresh_backends: Fresh) -> None:
    """``patchbay reprocess``: the segment state forgotten and computed again from the
    log gives the same memberships, and the same as from scratch."""

    @histories_settings(spec, 40)
    @given(histories(restarts=False))
    def check(steps: list[Step]) -> None:
        with fresh_backends() as backend:
            world = run(SegmentWorld(backend), steps)
            before = world.memberships()
            replay(world.backend, world.clock)
            assert world.memberships() == before

    check()
