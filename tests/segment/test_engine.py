"""The segment engine's behaviour in readable scenarios (the property test in
``test_incremental_property.py`` checks the same against a from-scratch evaluation on
random histories): windows leaving at their exact moment, merges moving memberships, a
batch offered twice, audiences built over the history, and the work a batch causes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from structlog.testing import capture_logs

from patchbay.backends.records import CheckpointMoved
from patchbay.segment.catalog import CompiledAudience
from patchbay.segment.criteria import (
    All,
    AudienceRef,
    Compare,
    Consent,
    Count,
    Definition,
    EventCondition,
    EventMatch,
    IdentityCondition,
    InputSeen,
    Not,
    Sum,
    UserAttribute,
)
from tests.segment.harness import BASE_MS, SegmentWorld

PLAY = EventMatch("custom_event", name="play")
PURCHASE = EventMatch("commerce_event", action="purchase")


def play(customer: str, at_ms: int | None = None, **attributes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"event_name": "play"}
    if at_ms is not None:
        data["timestamp_unixtime_ms"] = at_ms
    body: dict[str, Any] = {
        "user_identities": {"customer_id": customer},
        "events": [{"event_type": "custom_event", "data": data}],
    }
    if attributes:
        body["user_attributes"] = attributes
    return body


def purchase(customer: str, amount: float) -> dict[str, Any]:
    return {
        "user_identities": {"customer_id": customer},
        "events": [
            {
                "event_type": "commerce_event",
                "data": {"product_action": {"action": "purchase", "total_amount": amount}},
            }
        ],
    }


def members(world: SegmentWorld, name: str) -> set[int]:
    return world.memberships()[name]


def test_a_user_leaves_exactly_when_the_event_leaves_the_window(world: SegmentWorld) -> None:
    world.define(Definition("recent", "", EventCondition(PLAY, window_ms=45_000)))
    world.send(play("c1", at_ms=BASE_MS))
    world.settle()
    assert len(members(world, "recent")) == 1
    world.clock.advance(44.999)
    world.settle()
    assert len(members(world, "recent")) == 1
    world.clock.advance(0.001)  # BASE_MS + 45 s: the play is out of the window
    world.settle()
    assert members(world, "recent") == set()
    assert world.backend.audiences.due_users(world.clock.now_ms() + 10**12, 10) == []


def test_a_window_expiry_evaluates_from_the_facts_the_state_kept(
    world: SegmentWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet_in_de = All(
        (
            EventCondition(PLAY, window_ms=45_000, count=Count(0, 0)),
            UserAttribute(Compare("country", "eq", "DE")),
        )
    )
    world.define(Definition("quiet-de", "", quiet_in_de))
    quiet_c2 = All(
        (
            EventCondition(PLAY, window_ms=45_000, count=Count(0, 0)),
            IdentityCondition(Compare("customer_id", "eq", "c2")),
            Consent("gdpr", "location", True),
            InputSeen("web"),
        )
    )
    world.define(Definition("quiet-c2", "", quiet_c2))
    world.send(play("c1", at_ms=BASE_MS, country="DE"))
    with_consent = play("c2", at_ms=BASE_MS, country="FR")
    with_consent["consent_state"] = {
        "gdpr": {"location": {"consented": True, "timestamp_unixtime_ms": BASE_MS}}
    }
    world.send(with_consent)
    world.settle()
    assert members(world, "quiet-de") == members(world, "quiet-c2") == set()
    read: list[int] = []
    profiles = world.backend.state.profiles

    def counted(mpids: Any) -> Any:
        read.extend(mpids)
        return profiles(mpids)

    monkeypatch.setattr(world.backend.state, "profiles", counted)
    world.clock.advance(45)
    world.settle()
    # each from its kept facts: the DE user's attribute; c2's identity, consent and input
    assert len(members(world, "quiet-de")) == len(members(world, "quiet-c2")) == 1
    assert members(world, "quiet-de") != members(world, "quiet-c2")
    assert world.engine.expired == 2 and read == []
    # a user whose facts were kept for other audiences (one was defined since its batch)
    # is evaluated from its profile
    world.send(play("c1", at_ms=world.clock.now_ms()))
    world.settle()
    assert members(world, "quiet-de") == set()
    planned = All(
        (
            EventCondition(PLAY, window_ms=45_000, count=Count(0, 0)),
            UserAttribute(Compare("plan", "exists", None)),
        )
    )
    world.define(Definition("quiet-planned", "", planned))
    world.settle()
    read.clear()
    world.clock.advance(45)
    world.settle()
    assert len(read) == 1
    assert len(members(world, "quiet-de")) == 1
    assert world.memberships() == world.expected()


def test_a_user_joins_when_an_event_leaves_a_window_with_a_max(world: SegmentWorld) -> None:
    idle = All((EventCondition(PLAY), Not(EventCondition(PLAY, window_ms=3_600_000))))
    world.define(Definition("lapsed", "played once, but not in the last hour", idle))
    world.send(play("c1"))
    world.settle()
    assert members(world, "lapsed") == set()
    world.clock.advance(3600)
    world.settle()
    assert len(members(world, "lapsed")) == 1


def test_window_counts_from_the_events_own_time(world: SegmentWorld) -> None:
    world.define(Definition("recent", "", EventCondition(PLAY, window_ms=60_000)))
    world.send(play("c1", at_ms=BASE_MS - 59_000))  # sent late: only 1 s of window left
    world.settle()
    assert len(members(world, "recent")) == 1
    world.clock.advance(1)
    world.settle()
    assert members(world, "recent") == set()
    world.send(play("c2", at_ms=BASE_MS - 61_000))  # already out of the window
    world.settle()
    assert members(world, "recent") == set()


def test_sums_of_revenue_over_a_window(world: SegmentWorld) -> None:
    spend = EventCondition(PURCHASE, window_ms=86_400_000, sum=Sum("revenue", "gte", 100.0))
    world.define(Definition("big-spenders", "", spend))
    world.send(purchase("c1", 60))
    world.settle()
    assert members(world, "big-spenders") == set()
    world.send(purchase("c1", 40))
    world.settle()
    assert len(members(world, "big-spenders")) == 1


def test_an_unnamed_event_is_counted_once_beside_a_named_condition(world: SegmentWorld) -> None:
    """A commerce event without a name counts once for a condition over every commerce
    event, also when another condition asks for a named one (found by the property test:
    it was counted twice)."""
    twice = EventCondition(EventMatch("commerce_event"), count=Count(min=2))
    world.define(Definition("twice", "", twice))
    world.define(Definition("named", "", EventCondition(EventMatch("commerce_event", name="x"))))
    world.send(purchase("c1", 5.0))
    world.settle()
    assert members(world, "twice") == set()
    world.send(purchase("c1", 5.0))
    world.settle()
    assert len(members(world, "twice")) == 1


def test_a_merge_moves_memberships_to_the_survivor(world: SegmentWorld) -> None:
    world.define(Definition("two-plays", "", EventCondition(PLAY, count=Count(min=2))))
    # an anonymous device plays once; a known customer plays once on another device
    world.send({"device_info": {"ios_advertising_id": "IDFA-1"}, "events": play("x")["events"]})
    world.send(play("c1"))
    world.settle()
    assert members(world, "two-plays") == set()
    # the device logs in as the customer: resolve folds the anonymous user into c1
    world.send({"user_identities": {"customer_id": "c1"},
                "device_info": {"ios_advertising_id": "IDFA-1"}})  # fmt: skip
    world.settle()
    (survivor,) = members(world, "two-plays")
    profile = world.backend.state.profile(survivor)
    assert profile is not None and profile.identity("customer_id") == "c1"
    assert world.backend.audiences.count_users() == 1  # the absorbed user's state is gone


def test_a_batch_offered_twice_is_counted_once(world: SegmentWorld) -> None:
    world.define(Definition("one-play", "", EventCondition(PLAY, count=Count(min=1, max=1))))
    world.send(play("c1"))
    world.settle()
    assert len(members(world, "one-play")) == 1
    (chunk,) = world.handed
    assert world.engine.apply(chunk.batches) == 0
    restarted = world.new_engine()
    restarted.refresh()
    assert restarted.apply(chunk.batches) == 0
    assert len(members(world, "one-play")) == 1


def test_an_engine_whose_partition_moved_on_counts_nothing(world: SegmentWorld) -> None:
    """An engine that lost its partition to another processor, which counted a batch
    meanwhile, is refused when it commits the same batch (``CheckpointMoved``): the batch
    is counted once (twice, the user would leave an audience of exactly one play)."""
    world.define(Definition("one-play", "", EventCondition(PLAY, count=Count(min=1, max=1))))
    former = world.new_engine()
    former.refresh()
    world.send(play("c1"))
    world.settle()
    (chunk,) = world.handed
    with pytest.raises(CheckpointMoved):
        former.apply(chunk.batches)
    assert len(members(world, "one-play")) == 1


@pytest.mark.parametrize("later", [False, True])
def test_an_audience_built_over_the_history_equals_one_kept_live(
    later: bool, world: SegmentWorld
) -> None:
    definition = Definition("fans", "", EventCondition(PLAY, window_ms=7_200_000, count=Count(2)))
    if not later:
        world.define(definition)
    for i in range(20):
        world.send(play(f"c{i % 7}", at_ms=BASE_MS - i * 600_000))
        world.settle()
    if later:
        world.define(definition)
        world.settle()
    assert members(world, "fans") == world.expected()["fans"]
    assert len(members(world, "fans")) == 5  # c0..c4 played twice in the last 2 h
    build = world.engine.builds[world.engine.catalog.by_name["fans"]]
    assert build.phase == "live"


def test_an_audience_of_an_audience_follows_it(world: SegmentWorld) -> None:
    world.define(Definition("players", "", EventCondition(PLAY)))
    gold = UserAttribute(Compare("plan", "eq", "gold"))
    world.define(Definition("gold-players", "", All((AudienceRef("players"), gold))))
    world.send(play("c1", plan="gold"))
    world.send(play("c2", plan="free"))
    world.settle()
    assert len(members(world, "gold-players")) == 1
    world.define(Definition("players", "", EventCondition(PLAY, count=Count(min=2))))
    world.settle()
    assert members(world, "players") == set() and members(world, "gold-players") == set()


def test_a_batch_evaluates_only_the_audiences_that_read_what_it_holds(world: SegmentWorld) -> None:
    for i in range(50):
        attribute = UserAttribute(Compare(f"attribute-{i}", "eq", "x"))
        world.define(Definition(f"a{i}", "", attribute))
    world.define(Definition("players", "", EventCondition(PLAY)))
    world.send(play("c1"))
    world.settle()  # a new user: evaluated for what its batch holds (and defaults: none)
    evaluated: list[str] = []

    def counting(audience: CompiledAudience) -> CompiledAudience:
        def test(known: Any) -> bool:
            evaluated.append(audience.name)
            return audience.test(known)

        return dataclasses.replace(audience, test=test)

    catalog = world.engine.catalog
    catalog.audiences = {i: counting(a) for i, a in catalog.audiences.items()}
    world.send(play("c1", **{"attribute-7": "x"}))
    world.settle()
    # attribute-7 changed (a7); a second play changes nothing "players" reads (one play
    # or more): one of 51 audiences
    assert evaluated == ["a7"]
    assert {n for n, m in world.memberships().items() if m} == {"players", "a7"}
    evaluated.clear()
    world.send(play("c1", **{"attribute-7": "x"}))  # the same again: nothing changes
    world.settle()
    assert evaluated == []


def test_a_batch_that_finds_a_window_passed_before_the_check_still_leaves(
    world: SegmentWorld,
) -> None:
    """The user's event left its window, and a batch of the user arrives before the stage
    looked at the windows that passed: the batch must not hide it."""
    world.define(Definition("recent", "", EventCondition(PLAY, window_ms=45_000)))
    world.send(play("c1", at_ms=BASE_MS))
    world.settle()
    assert len(members(world, "recent")) == 1
    world.clock.advance(50)
    world.send({"user_identities": {"customer_id": "c1"}, "user_attributes": {"x": "1"}})
    world.resolve.run_until_caught_up()
    (chunk,) = world.chunks
    world.engine.apply(chunk.batches)  # before any expiry check
    assert members(world, "recent") == set()


def test_a_build_counts_the_history_the_log_retains_and_says_so(world: SegmentWorld) -> None:
    """Batches removed by retention are not counted by a later build, and the build's
    ``condition_built`` line names the range it covered."""
    for i in range(6):
        world.send(play(f"c{i % 3}", at_ms=BASE_MS - i * 600_000))
        world.settle()
    removed = world.backend.log.read(0, None, 3)[-1].position
    world.backend.state.forget_resolved({0: removed})
    world.backend.log.remove(0, removed)
    with capture_logs() as logs:
        world.define(Definition("twice", "", EventCondition(PLAY, count=Count(2))))
        world.settle()
    assert members(world, "twice") == set()  # each player has one play left in the log
    (built,) = [entry for entry in logs if entry["event"] == "condition_built"]
    assert built["history"][0].endswith(f"up to {removed} removed by retention")
