"""The compiled audiences (``patchbay.segment.catalog``): the key of what a condition counts,
and what :func:`compile_catalog` makes of a set of audiences: their order, the index of
which audiences each feature affects, the audiences that hold for a user nothing is known
of, the counted conditions by event type, the connections of each audience."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.records import AudienceConnection
from patchbay.collect.events import Event
from patchbay.segment import evaluate
from patchbay.segment.catalog import (
    AudienceSource,
    Catalog,
    Counted,
    compile_catalog,
    condition_key,
    features_of,
)
from patchbay.segment.criteria import (
    All,
    AnyOf,
    AudienceRef,
    Compare,
    Consent,
    Count,
    EnvironmentSeen,
    EventCondition,
    EventMatch,
    IdentityCondition,
    InputSeen,
    Node,
    Not,
    Op,
    Sum,
    UserAttribute,
    Value,
    event_conditions,
)
from patchbay.segment.evaluate import event_matches, rest_matches
from patchbay.segment.parse import parse_definition
from tests.segment import strategies as pools
from tests.segment.harness import SegmentWorld

PLAY = EventMatch("custom_event", "play", "navigation", None, (Compare("plan", "eq", "gold"),))
BUY = EventMatch("commerce_event", action="purchase")


def attr(key: str, op: Op, value: Value = None) -> UserAttribute:
    return UserAttribute(Compare(key, op, value))


# -- condition_key ---------------------------------------------------------------------


def test_equal_conditions_have_equal_keys() -> None:
    def make() -> EventCondition:
        match = EventMatch(
            "custom_event", "play", "navigation", None, (Compare("plan", "in", ("a", "b")),)
        )
        return EventCondition(match, 45_000, count=Count(2))

    assert make() is not make()
    assert condition_key(make()) == condition_key(make())


def test_the_key_leaves_out_what_is_not_counted() -> None:
    """Conditions counting the same events with the same measure share one tally, whatever
    they then ask of the count or the sum."""
    counts = [Count(), Count(0), Count(3, 5), Count(0, 0), None]
    keys = {condition_key(EventCondition(PLAY, 45_000, count=c)) for c in counts}
    assert len(keys) == 1
    sums = [Sum("revenue", "gt", 5.0), Sum("revenue", "lt", 1.0), Sum("revenue", "eq", 0.0)]
    keys = {condition_key(EventCondition(BUY, None, sum=s)) for s in sums}
    assert len(keys) == 1


def test_anything_counted_changes_the_key() -> None:
    base = EventCondition(PLAY, 45_000, count=Count())
    gold = Compare("plan", "eq", "gold")
    variants = [
        base,
        EventCondition(EventMatch("screen_view", "play"), 45_000),
        EventCondition(EventMatch("custom_event", "search", "navigation", None, (gold,)), 45_000),
        EventCondition(EventMatch("custom_event", None, "navigation", None, (gold,)), 45_000),
        EventCondition(EventMatch("custom_event", "play", "other", None, (gold,)), 45_000),
        EventCondition(EventMatch("custom_event", "play", None, None, (gold,)), 45_000),
        EventCondition(EventMatch("custom_event", "play", "navigation"), 45_000),
        EventCondition(
            EventMatch(
                "custom_event", "play", "navigation", None, (Compare("tier", "eq", "gold"),)
            ),
            45_000,
        ),
        EventCondition(
            EventMatch(
                "custom_event", "play", "navigation", None, (Compare("plan", "ne", "gold"),)
            ),
            45_000,
        ),
        EventCondition(
            EventMatch("custom_event", "play", "navigation", None, (Compare("plan", "eq", "x"),)),
            45_000,
        ),
        EventCondition(
            EventMatch("custom_event", "play", "navigation", None, (gold, Compare("age", "gt", 7))),
            45_000,
        ),
        EventCondition(PLAY, None),
        EventCondition(PLAY, 900_000),
        EventCondition(PLAY, 45_000, sum=Sum("attribute:amount", "gt", 1.0)),
        EventCondition(PLAY, 45_000, sum=Sum("attribute:age", "gt", 1.0)),
        EventCondition(BUY),
        EventCondition(EventMatch("commerce_event", action="add_to_cart")),
        EventCondition(EventMatch("commerce_event")),
        EventCondition(BUY, sum=Sum("revenue", "gt", 1.0)),
        EventCondition(EventMatch("custom_event", attributes=(Compare("n", "eq", 7),))),
        EventCondition(EventMatch("custom_event", attributes=(Compare("n", "eq", "7"),))),
        EventCondition(EventMatch("custom_event", attributes=(Compare("n", "in", (7,)),))),
    ]
    keys = [condition_key(v) for v in variants]
    assert len(set(keys)) == len(variants)


def test_the_key_is_canonical_json() -> None:
    condition = EventCondition(PLAY, 45_000, sum=Sum("attribute:amount", "gte", 2.0))
    key = condition_key(condition)
    assert json.loads(key) == {
        "type": "custom_event",
        "name": "play",
        "custom_event_type": "navigation",
        "action": None,
        "attributes": [["plan", "eq", "gold"]],
        "within_ms": 45_000,
        "measure": "attribute:amount",
    }
    assert key == json.dumps(json.loads(key), sort_keys=True, separators=(",", ":"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pools.event_conditions(), pools.event_conditions())
def test_keys_are_equal_exactly_when_the_counted_events_are(
    one: EventCondition, other: EventCondition
) -> None:
    def counted(c: EventCondition) -> str:
        # repr tells True from 1 and 1.0 from 1, as JSON does (== does not)
        return repr((c.match, c.window_ms, c.measure))

    assert (condition_key(one) == condition_key(other)) is (counted(one) == counted(other))
    assert condition_key(one) == condition_key(one)


# -- compile_catalog -------------------------------------------------------------------


def compile_(
    audiences: Mapping[str, Node],
    connections: Sequence[AudienceConnection] = (),
    order: Sequence[str] | None = None,
) -> Catalog:
    """Compile ``audiences`` (name -> criteria; ids 10, 20, ... and version 1, 2, ... in
    that order), with condition ids 1, 2, ... by sorted key."""
    sources = [
        AudienceSource(10 * (i + 1), name, i + 1, criteria)
        for i, (name, criteria) in enumerate(audiences.items())
    ]
    keys = sorted({condition_key(c) for s in sources for c in event_conditions(s.criteria)})
    ids = {key: i + 1 for i, key in enumerate(keys)}
    return compile_catalog(sources, list(order or audiences), ids, connections)


def cond_id(catalog: Catalog, condition: EventCondition) -> int:
    """The id the catalog gives ``condition``, a node of the compiled criteria."""
    return catalog.condition_id(condition)


def key_ids(*conditions: EventCondition) -> dict[str, int]:
    """The ids :func:`compile_` gives the keys of ``conditions``."""
    keys = sorted({condition_key(c) for c in conditions})
    return {key: i + 1 for i, key in enumerate(keys)}


PLAYED = EventCondition(EventMatch("custom_event", "play"), 45_000, count=Count())
BOUGHT = EventCondition(BUY, sum=Sum("revenue", "gt", 10.0))
SEARCHED = EventCondition(EventMatch("custom_event", "search"))


def test_audiences_in_order() -> None:
    catalog = compile_(
        {"gold": attr("plan", "eq", "gold"), "players": All((PLAYED, AudienceRef("gold")))}
    )
    assert catalog.order == [10, 20]
    assert list(catalog.audiences) == [10, 20]
    assert catalog.by_name == {"gold": 10, "players": 20}
    gold, players = catalog.audiences[10], catalog.audiences[20]
    assert (gold.id, gold.name, gold.version) == (10, "gold", 1)
    assert gold.criteria == attr("plan", "eq", "gold")
    assert (gold.conditions, gold.references) == (frozenset(), frozenset())
    assert (players.id, players.name, players.version) == (20, "players", 2)
    assert players.conditions == frozenset({1})
    assert players.references == frozenset({10})


def test_the_order_given_is_kept() -> None:
    catalog = compile_(
        {"a": attr("x", "exists"), "b": attr("y", "exists"), "c": attr("z", "exists")},
        order=["c", "a", "b"],
    )
    assert catalog.order == [30, 10, 20]
    assert list(catalog.by_name) == ["c", "a", "b"]


def test_features_index() -> None:
    catalog = compile_(
        {
            "gold": attr("plan", "eq", "gold"),
            "players": All((PLAYED, AudienceRef("gold"), Not(attr("age", "lt", 18)))),
            "buyers": AnyOf((BOUGHT, PLAYED)),
            "emails": IdentityCondition(Compare("email", "exists")),
            "marketing": Not(Consent("gdpr", "marketing", True)),
            "web": All((InputSeen("web"), EnvironmentSeen("production"))),
            "nested": Not(AnyOf((AudienceRef("players"), AudienceRef("gold")))),
        }
    )
    played, bought = cond_id(catalog, PLAYED), cond_id(catalog, BOUGHT)
    assert catalog.by_feature == {
        ("attr", "plan"): {10},
        ("cond", str(played)): {20, 30},
        ("audience", "10"): {20, 70},
        ("attr", "age"): {20},
        ("cond", str(bought)): {30},
        ("identity", "email"): {40},
        ("consent", "gdpr:marketing"): {50},
        ("input", "web"): {60},
        ("env", "production"): {60},
        ("audience", "20"): {70},
    }
    assert catalog.affected([("attr", "plan")]) == {10}
    assert catalog.affected([("attr", "plan"), ("cond", str(played)), ("identity", "email")]) == {
        10,
        20,
        30,
        40,
    }
    assert catalog.affected([]) == set()
    assert catalog.affected([("attr", "nobody"), ("input", "ios")]) == set()
    assert catalog.dependents(10) == {20, 70}
    assert catalog.dependents(20) == {70}
    assert catalog.dependents(70) == set()
    assert catalog.audiences[70].references == frozenset({10, 20})


def test_features_of() -> None:
    node = All(
        (
            Not(PLAYED),
            AnyOf((attr("plan", "eq", "x"), IdentityCondition(Compare("email", "exists")))),
            Consent("ccpa", "data_sale_opt_out", False),
            InputSeen("ios"),
            EnvironmentSeen("development"),
            AudienceRef("elsewhere"),
        )
    )
    assert features_of(node, {condition_key(PLAYED): 7}) == {
        ("cond", "7"),
        ("attr", "plan"),
        ("identity", "email"),
        ("consent", "ccpa:data_sale_opt_out"),
        ("input", "ios"),
        ("env", "development"),
    }


def test_a_reference_to_an_audience_not_compiled_is_left_out() -> None:
    catalog = compile_({"lonely": AnyOf((AudienceRef("ghost"), attr("plan", "exists")))})
    assert catalog.audiences[10].references == frozenset()
    assert catalog.by_feature == {("attr", "plan"): {10}}
    assert catalog.defaults == frozenset()


def test_shared_conditions_get_one_id() -> None:
    twice = EventCondition(PLAYED.match, PLAYED.window_ms, count=Count(2))
    catalog = compile_({"a": PLAYED, "b": Not(twice), "c": SEARCHED})
    assert condition_key(PLAYED) == condition_key(twice)
    assert cond_id(catalog, PLAYED) == cond_id(catalog, twice)
    assert cond_id(catalog, SEARCHED) != cond_id(catalog, PLAYED)
    assert catalog.audiences[10].conditions == catalog.audiences[20].conditions
    assert catalog.by_feature[("cond", str(cond_id(catalog, PLAYED)))] == {10, 20}


@pytest.mark.parametrize(
    ("criteria", "default"),
    [
        ({"not": {"event": {"type": "custom_event", "name": "play"}}}, True),
        ({"user_attribute": "x", "op": "not_exists"}, True),
        ({"user_attribute": "x", "op": "ne", "value": "gold"}, True),
        ({"identity": "email", "op": "not_exists"}, True),
        ({"event": {"type": "session_start"}, "count": {"max": 2}}, True),
        ({"event": {"type": "session_start"}, "count": {"max": 0}}, True),
        ({"event": {"type": "session_start"}, "count": {"min": 0}}, True),
        (
            {"event": {"type": "commerce_event"}, "sum": {"of": "revenue", "op": "lt", "value": 5}},
            True,
        ),
        ({"not": {"consent": {"gdpr": "marketing", "consented": True}}}, True),
        ({"not": {"input": "web"}}, True),
        ({"all": []}, True),
        ({"event": {"type": "custom_event", "name": "play"}}, False),
        ({"event": {"type": "session_start"}, "count": {"min": 1, "max": 2}}, False),
        (
            {"event": {"type": "commerce_event"}, "sum": {"of": "revenue", "op": "gt", "value": 0}},
            False,
        ),
        ({"user_attribute": "x", "op": "exists"}, False),
        ({"user_attribute": "x", "op": "eq", "value": "gold"}, False),
        ({"identity": "email", "op": "exists"}, False),
        ({"consent": {"gdpr": "marketing", "consented": False}}, False),
        ({"consent": {"ccpa": True}}, False),
        ({"input": "web"}, False),
        ({"environment": "production"}, False),
        ({"any": []}, False),
    ],
)
def test_defaults(criteria: dict[str, Any], default: bool) -> None:
    node = parse_definition({"name": "a", "criteria": criteria}).criteria
    catalog = compile_({"a": node})
    assert catalog.audiences[10].default is default
    assert catalog.defaults == (frozenset({10}) if default else frozenset())


def test_defaults_follow_references_in_order() -> None:
    catalog = compile_(
        {
            "nobody": Not(attr("plan", "exists")),  # default
            "somebody": attr("plan", "exists"),  # not
            "in_nobody": AudienceRef("nobody"),
            "in_somebody": AudienceRef("somebody"),
            "not_in_somebody": Not(AudienceRef("somebody")),
            "chain": AudienceRef("in_nobody"),
        }
    )
    assert catalog.defaults == frozenset({10, 30, 50, 60})
    assert [catalog.audiences[i].default for i in catalog.order] == [
        True,
        False,
        True,
        False,
        True,
        True,
    ]


def test_counters_by_event_type() -> None:
    catalog = compile_({"a": All((PLAYED, SEARCHED)), "b": AnyOf((BOUGHT, PLAYED))})
    by_type = {
        event_type: sorted((c.id, condition_key(c.condition)) for c in counted(catalog, event_type))
        for event_type in catalog.counted_types
    }
    # by the type, name and action they match (None: any)
    assert {key: [c.id for c in found] for key, found in catalog.counters.items()} == {
        ("custom_event", "play", None): [cond_id(catalog, PLAYED)],
        ("custom_event", "search", None): [cond_id(catalog, SEARCHED)],
        ("commerce_event", None, "purchase"): [cond_id(catalog, BOUGHT)],
    }
    assert catalog.summed == {cond_id(catalog, BOUGHT)}
    assert by_type == {
        "custom_event": sorted(
            [
                (cond_id(catalog, PLAYED), condition_key(PLAYED)),
                (cond_id(catalog, SEARCHED), condition_key(SEARCHED)),
            ]
        ),
        "commerce_event": [(cond_id(catalog, BOUGHT), condition_key(BOUGHT))],
    }
    assert catalog.windows == {
        cond_id(catalog, PLAYED): 45_000,
        cond_id(catalog, SEARCHED): None,
        cond_id(catalog, BOUGHT): None,
    }
    assert compile_({"x": attr("plan", "exists")}).counters == {}


def test_condition_ids_by_key() -> None:
    twice = EventCondition(PLAYED.match, PLAYED.window_ms, count=Count(2))
    criteria: dict[str, Node] = {"a": All((PLAYED, SEARCHED)), "b": AnyOf((BOUGHT, Not(twice)))}
    catalog = compile_(criteria)
    ids = key_ids(PLAYED, SEARCHED, BOUGHT)
    for node in (PLAYED, SEARCHED, BOUGHT, twice):
        assert cond_id(catalog, node) == ids[condition_key(node)]
    assert catalog.audiences[10].conditions == {
        ids[condition_key(PLAYED)],
        ids[condition_key(SEARCHED)],
    }
    assert catalog.audiences[20].conditions == {
        ids[condition_key(BOUGHT)],
        ids[condition_key(PLAYED)],
    }


def test_one_counter_per_condition_id() -> None:
    """Conditions with one key (the same events, other count or sum bounds) share one tally:
    each event is counted into it once."""
    twice = EventCondition(PLAYED.match, PLAYED.window_ms, count=Count(2))
    none = EventCondition(PLAYED.match, PLAYED.window_ms, count=Count(0, 0))
    catalog = compile_({"once": PLAYED, "twice": twice, "both": AnyOf((none, PLAYED))})
    ids = [c.id for c in counted(catalog, "custom_event")]
    assert ids == [cond_id(catalog, PLAYED)]
    sums = [Sum("revenue", "gt", 10.0), Sum("revenue", "lt", 1.0)]
    buys = [EventCondition(BUY, sum=s) for s in sums]
    catalog = compile_({"big": buys[0], "small": buys[1]})
    assert [c.id for c in counted(catalog, "commerce_event")] == [cond_id(catalog, buys[0])]
    assert cond_id(catalog, buys[0]) == cond_id(catalog, buys[1])


def counted(catalog: Catalog, event_type: str) -> list[Counted]:
    """The counted conditions of an event type, whatever name they match."""
    return [c for key, found in catalog.counters.items() if key[0] == event_type for c in found]


def on(value: Value) -> EventCondition:
    return EventCondition(EventMatch("custom_event", attributes=(Compare("f", "eq", value),)))


def test_conditions_on_true_and_on_1_are_kept_apart() -> None:
    """``True == 1`` in Python, so the two conditions compare equal; their keys differ,
    and they count different events: each gets its own id and counter."""
    assert on(True) == on(1)
    assert condition_key(on(True)) != condition_key(on(1))
    bools, ones = on(True), on(1)
    catalog = compile_({"bools": bools, "ones": ones})
    true_id, one_id = cond_id(catalog, bools), cond_id(catalog, ones)
    assert true_id != one_id
    assert catalog.audiences[10].conditions == {true_id}
    assert catalog.audiences[20].conditions == {one_id}
    assert sorted(c.id for c in counted(catalog, "custom_event")) == sorted([true_id, one_id])
    # and in one audience too, with 0 and False
    zero, false = on(0), on(False)
    catalog = compile_({"both": AnyOf((zero, false))})
    assert cond_id(catalog, zero) != cond_id(catalog, false)
    assert len(catalog.audiences[10].conditions) == 2
    assert len(counted(catalog, "custom_event")) == 2


def _world_memberships(
    world: SegmentWorld, definitions: list[dict[str, Any]], events: list[dict[str, Any]]
) -> Any:
    """Define ``definitions`` in ``world``, send one batch per event (each from its own
    device), and return (the engine's memberships, a from-scratch evaluation's)."""
    for definition in definitions:
        world.define(parse_definition(definition))
    world.settle()
    for i, ev in enumerate(events):
        world.send({"device_info": {"ios_advertising_id": f"IDFA-{i}"}, "events": [ev]})
    world.settle()
    return world.memberships(), world.expected()


def test_end_to_end_one_event_is_counted_once(world: SegmentWorld) -> None:
    got, expected = _world_memberships(
        world,
        [
            {
                "name": "twice",
                "criteria": {"event": {"type": "session_start"}, "count": {"min": 2}},
            },
            {"name": "once", "criteria": {"event": {"type": "session_start"}}},
        ],
        [{"event_type": "session_start", "data": {}}],
    )
    assert got["twice"] == expected["twice"] == set()


def test_end_to_end_true_and_1_are_counted_apart(world: SegmentWorld) -> None:
    def on(name: str, value: object) -> dict[str, Any]:
        attributes = [{"attribute": "f", "op": "eq", "value": value}]
        return {
            "name": name,
            "criteria": {"event": {"type": "custom_event", "attributes": attributes}},
        }

    def sent(value: object) -> dict[str, Any]:
        return {
            "event_type": "custom_event",
            "data": {"event_name": "x", "custom_attributes": {"f": value}},
        }

    got, expected = _world_memberships(
        world, [on("bools", True), on("ones", 1)], [sent(1), sent(True)]
    )
    assert expected["bools"] != expected["ones"]
    assert got == expected


def test_connections_grouped_by_audience() -> None:
    def connection(audience_id: int, output: str) -> AudienceConnection:
        return AudienceConnection(audience_id, output, 1_000)

    first, second = connection(10, "crm"), connection(10, "ads")
    other, stray = connection(20, "crm"), connection(99, "crm")
    catalog = compile_(
        {"a": attr("x", "exists"), "b": attr("y", "exists")}, [first, other, stray, second]
    )
    assert catalog.connections == {10: [first, second], 20: [other]}
    assert compile_({"a": attr("x", "exists")}).connections == {}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(pools.event_conditions(), min_size=1, max_size=8),
    st.lists(pools.events(0), min_size=1, max_size=5),
)
def test_candidates_are_the_conditions_of_the_event_s_type_name_and_action(
    conditions: list[EventCondition], events: list[dict[str, Any]]
) -> None:
    """An event's candidates are, once each, the counted conditions it matches, and those
    whose custom event type or attributes are left to test (their ``rest``, which says
    what :func:`rest_matches` says); one with nothing left to test always matches."""
    catalog = compile_({f"a{i}": condition for i, condition in enumerate(conditions)})
    every = [c for found in catalog.counters.values() for c in found]
    for body in events:
        event = msgspec.convert(body, type=Event)
        candidates = catalog.candidates(event)
        assert len({c.id for c in candidates}) == len(candidates)
        matching = {c.id for c in every if event_matches(c.condition.match, event)}
        assert {c.id for c in candidates if c.rest is None or c.rest(event)} == matching
        assert all(
            c.rest(event) == rest_matches(c.condition.match, event)
            for c in candidates
            if c.rest is not None
        )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.builds(
            lambda low, span, summing: EventCondition(
                PLAYED.match,
                PLAYED.window_ms,
                sum=Sum("attribute:n", "gte", float(low)) if summing else None,
                count=None if summing else Count(low, None if span is None else low + span),
            ),
            st.integers(0, 4),
            st.none() | st.integers(0, 3),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
    st.tuples(st.integers(0, 8), st.integers(0, 8)),
)
def test_answers_change_whenever_a_check_s_answer_does(
    checks: list[EventCondition], counts: tuple[int, int]
) -> None:
    summing = [c for c in checks if c.sum is not None]
    catalog = compile_({f"a{i}": c for i, c in enumerate(summing or checks)})
    (condition_id,) = {cond_id(catalog, c) for c in summing or checks}
    before, after = ((n, float(n)) for n in counts)
    changes = any(
        evaluate.counted(c, *before) != evaluate.counted(c, *after) for c in summing or checks
    )
    assert catalog.answers_change(condition_id, before, after) or not changes
    if before == after:
        assert not catalog.answers_change(condition_id, before, after)
