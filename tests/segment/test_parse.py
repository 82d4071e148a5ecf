"""The parser of audience definitions: every construct, every error with its path, text
decoding (JSON and YAML), round trips of random definitions, fuzzing (only
``DefinitionError`` escapes), and the checks of a set of audiences."""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import pickle
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from patchbay.errors import PatchbayError
from patchbay.segment.criteria import (
    All,
    AnyOf,
    AudienceRef,
    Compare,
    Consent,
    Count,
    Definition,
    EnvironmentSeen,
    EventCondition,
    EventMatch,
    IdentityCondition,
    InputSeen,
    Node,
    Not,
    Sum,
    UserAttribute,
    walk,
)
from patchbay.segment.parse import (
    MAX_DEPTH,
    MAX_NODES,
    DefinitionError,
    check_references,
    decode_document,
    definition_document,
    duration_text,
    load_definition,
    parse_definition,
)
from tests.segment import strategies

ROUND_TRIP = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def doc(criteria: object, **top: object) -> dict[str, object]:
    return {"name": "test", **top, "criteria": criteria}


def parsed(criteria: object) -> Node:
    return parse_definition(doc(criteria)).criteria


def refused(document: object) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(document)
    return caught.value


def event(type_: str = "custom_event", **match: Any) -> EventMatch:
    return EventMatch(type_, **match)


ONE = Count(1, None)

# -- every construct -------------------------------------------------------------------------

EXAMPLES: list[tuple[object, Node]] = [
    # groups
    ({"all": []}, All(())),
    ({"any": []}, AnyOf(())),
    (
        {"all": [{"input": "web"}, {"any": [{"not": {"environment": "production"}}]}]},
        All((InputSeen("web"), AnyOf((Not(EnvironmentSeen("production")),)))),
    ),
    # events: defaults, counts, windows
    ({"event": {"type": "session_start"}}, EventCondition(event("session_start"), None, ONE)),
    (
        {"event": {"type": "custom_event", "name": "play", "custom_event_type": "navigation"}},
        EventCondition(event(name="play", custom_event_type="navigation"), None, ONE),
    ),
    (
        {"event": {"type": "screen_view", "name": "home"}, "within": "45s"},
        EventCondition(event("screen_view", name="home"), 45_000, ONE),
    ),
    (
        {"event": {"type": "commerce_event", "action": "purchase"}, "within": "15m"},
        EventCondition(event("commerce_event", action="purchase"), 900_000, ONE),
    ),
    (
        {"event": {"type": "commerce_event", "name": "checkout", "action": "view"}},
        EventCondition(event("commerce_event", name="checkout", action="view"), None, ONE),
    ),
    (
        {"event": {"type": "commerce_event", "action": "remove_from_wish_list"}},
        EventCondition(event("commerce_event", action="remove_from_wishlist"), None, ONE),
    ),
    (
        {"event": {"type": "custom_event"}, "count": {"min": 3}, "within": "2h"},
        EventCondition(event(), 7_200_000, Count(3, None)),
    ),
    (
        {"event": {"type": "custom_event"}, "count": {"max": 2}},
        EventCondition(event(), None, Count(0, 2)),
    ),
    (
        {"event": {"type": "custom_event"}, "count": {"max": 0}},
        EventCondition(event(), None, Count(0, 0)),
    ),
    (
        {"event": {"type": "custom_event"}, "count": {"min": 2, "max": 1000}, "within": "30d"},
        EventCondition(event(), 30 * 86_400_000, Count(2, 1000)),
    ),
    (
        {"event": {"type": "custom_event"}, "count": {"min": 0}},
        EventCondition(event(), None, Count(0, None)),
    ),
    (
        {"event": {"type": "custom_event"}, "within": "400d"},
        EventCondition(event(), 400 * 86_400_000, ONE),
    ),
    (
        {"event": {"type": "custom_event"}, "within": "9600h"},
        EventCondition(event(), 400 * 86_400_000, ONE),
    ),
    # event attributes
    (
        {
            "event": {
                "type": "custom_event",
                "attributes": [
                    {"attribute": "plan", "op": "eq", "value": "gold"},
                    {"attribute": "price", "op": "gte", "value": 9.5},
                    {"attribute": "coupon", "op": "not_exists"},
                ],
            }
        },
        EventCondition(
            event(
                attributes=(
                    Compare("plan", "eq", "gold"),
                    Compare("price", "gte", 9.5),
                    Compare("coupon", "not_exists"),
                )
            ),
            None,
            ONE,
        ),
    ),
    ({"event": {"type": "custom_event", "attributes": []}}, EventCondition(event(), None, ONE)),
    # sums
    (
        {
            "event": {"type": "commerce_event", "action": "purchase"},
            "sum": {"of": "revenue", "op": "gte", "value": 100},
        },
        EventCondition(
            event("commerce_event", action="purchase"), None, None, Sum("revenue", "gte", 100.0)
        ),
    ),
    (
        {
            "event": {"type": "custom_event"},
            "sum": {"of": "attribute:minutes", "op": "lt", "value": 2.5},
            "within": "1d",
        },
        EventCondition(event(), 86_400_000, None, Sum("attribute:minutes", "lt", 2.5)),
    ),
    # user attributes, every operator
    (
        {"user_attribute": "plan", "op": "eq", "value": "gold"},
        UserAttribute(Compare("plan", "eq", "gold")),
    ),
    (
        {"user_attribute": "vip", "op": "ne", "value": True},
        UserAttribute(Compare("vip", "ne", True)),
    ),
    (
        {"user_attribute": "name", "op": "contains", "value": "an"},
        UserAttribute(Compare("name", "contains", "an")),
    ),
    (
        {"user_attribute": "name", "op": "starts_with", "value": ""},
        UserAttribute(Compare("name", "starts_with", "")),
    ),
    (
        {"user_attribute": "country", "op": "in", "value": ["DE", 7, 2.5, False]},
        UserAttribute(Compare("country", "in", ("DE", 7, 2.5, False))),
    ),
    ({"user_attribute": "age", "op": "gt", "value": 17}, UserAttribute(Compare("age", "gt", 17))),
    (
        {"user_attribute": "age", "op": "gte", "value": -1.5},
        UserAttribute(Compare("age", "gte", -1.5)),
    ),
    (
        {"user_attribute": "since", "op": "lt", "value": "2024-01-01"},
        UserAttribute(Compare("since", "lt", "2024-01-01")),
    ),
    (
        {"user_attribute": "since", "op": "lte", "value": "2024-01-01T10:00:00+02:00"},
        UserAttribute(Compare("since", "lte", "2024-01-01T10:00:00+02:00")),
    ),
    ({"user_attribute": "$Age", "op": "exists"}, UserAttribute(Compare("$Age", "exists"))),
    ({"user_attribute": "age", "op": "not_exists"}, UserAttribute(Compare("age", "not_exists"))),
    # identities: canonical types
    (
        {"identity": "email", "op": "contains", "value": "@example.com"},
        IdentityCondition(Compare("email", "contains", "@example.com")),
    ),
    (
        {"identity": "customerid", "op": "eq", "value": "c1"},
        IdentityCondition(Compare("customer_id", "eq", "c1")),
    ),
    (
        {"identity": " IOS_IDFA ", "op": "exists"},
        IdentityCondition(Compare("ios_advertising_id", "exists")),
    ),
    (
        {"identity": "other2", "op": "in", "value": ["a", "b"]},
        IdentityCondition(Compare("other_id_2", "in", ("a", "b"))),
    ),
    # the rest
    ({"audience": "cart-abandoners"}, AudienceRef("cart-abandoners")),
    ({"consent": {"gdpr": "Marketing"}}, Consent("gdpr", "marketing", True)),
    ({"consent": {"gdpr": "analytics", "consented": False}}, Consent("gdpr", "analytics", False)),
    ({"consent": {"ccpa": True}}, Consent("ccpa", "data_sale_opt_out", True)),
    ({"consent": {"ccpa": False}}, Consent("ccpa", "data_sale_opt_out", False)),
    ({"input": "web shop (EU)"}, InputSeen("web shop (EU)")),
    ({"environment": "development"}, EnvironmentSeen("development")),
]


@pytest.mark.parametrize(("criteria", "expected"), EXAMPLES)
def test_every_construct(criteria: object, expected: Node) -> None:
    assert parsed(criteria) == expected
    # and back: the normalised document reads to the same criteria, through JSON text
    definition = parse_definition(doc(criteria))
    assert load_definition(json.dumps(definition_document(definition))) == definition


def test_the_example_of_the_docs() -> None:
    definition = load_definition(
        """{"name": "cart-abandoners",
         "description": "Added to cart in the last hour and bought nothing",
         "criteria": {"all": [
           {"event": {"type": "commerce_event", "action": "add_to_cart"}, "within": "1h"},
           {"not": {"event": {"type": "commerce_event", "action": "purchase"}, "within": "1h"}},
           {"user_attribute": "country", "op": "in", "value": ["DE", "FR"]}]}}"""
    )
    added = EventCondition(event("commerce_event", action="add_to_cart"), 3_600_000, ONE)
    bought = EventCondition(event("commerce_event", action="purchase"), 3_600_000, ONE)
    country = UserAttribute(Compare("country", "in", ("DE", "FR")))
    assert definition == Definition(
        "cart-abandoners",
        "Added to cart in the last hour and bought nothing",
        All((added, Not(bought), country)),
    )


def test_the_normalised_document() -> None:
    definition = parse_definition(
        doc(
            {
                "all": [
                    {"event": {"type": "custom_event", "attributes": []}, "within": "120m"},
                    {"event": {"type": "custom_event"}, "count": {"max": 3}, "within": "86400s"},
                    {"identity": "CustomerID", "op": "in", "value": ["c1"]},
                    {"consent": {"gdpr": "Ads"}},
                    {"consent": {"ccpa": True}},
                    {"user_attribute": "a", "op": "exists"},
                    {
                        "event": {"type": "custom_event"},
                        "sum": {"of": "attribute:n", "op": "eq", "value": 3},
                    },
                ]
            }
        )
    )
    assert definition_document(definition) == {
        "name": "test",
        "description": "",
        "criteria": {
            "all": [
                {"event": {"type": "custom_event"}, "count": {"min": 1}, "within": "2h"},
                {"event": {"type": "custom_event"}, "count": {"min": 0, "max": 3}, "within": "1d"},
                {"identity": "customer_id", "op": "in", "value": ["c1"]},
                {"consent": {"gdpr": "ads", "consented": True}},
                {"consent": {"ccpa": True}},
                {"user_attribute": "a", "op": "exists"},
                {
                    "event": {"type": "custom_event"},
                    "sum": {"of": "attribute:n", "op": "eq", "value": 3.0},
                },
            ]
        },
    }


@pytest.mark.parametrize(
    ("window_ms", "text"),
    [
        (1000, "1s"),
        (59_000, "59s"),
        (60_000, "1m"),
        (61_000, "61s"),
        (5_400_000, "90m"),
        (3_600_000, "1h"),
        (90_000_000, "25h"),
        (86_400_000, "1d"),
        (400 * 86_400_000, "400d"),
    ],
)
def test_durations_in_their_shortest_unit(window_ms: int, text: str) -> None:
    assert duration_text(window_ms) == text


def test_a_description_and_the_top_level() -> None:
    definition = parse_definition(
        {"name": "A.b_c-9", "description": "why", "criteria": {"all": []}}
    )
    assert definition == Definition("A.b_c-9", "why", All(()))
    assert parse_definition({"name": "x" * 64, "criteria": {"any": []}}).description == ""


# -- limits ---------------------------------------------------------------------------------


def nested(levels: int) -> object:
    """Criteria ``levels`` levels deep: ``not`` groups around an input condition."""
    node: object = {"input": "web"}
    for _ in range(levels - 1):
        node = {"not": node}
    return node


def test_nesting_is_bounded() -> None:
    assert isinstance(parsed(nested(MAX_DEPTH)), Not)
    error = refused(doc(nested(MAX_DEPTH + 1)))
    assert error.path == "criteria" + ".not" * MAX_DEPTH
    assert error.reason == "criteria are nested more than 32 levels deep"
    # far deeper: refused the same way, no RecursionError
    assert refused(doc(nested(50_000))).reason == "criteria are nested more than 32 levels deep"


def test_the_number_of_nodes_is_bounded() -> None:
    fits = {"all": [{"input": "web"}] * (MAX_NODES - 1)}
    assert len(parsed(fits).nodes) == MAX_NODES - 1  # type: ignore[union-attr]
    error = refused(doc({"all": [{"input": "web"}] * MAX_NODES}))
    assert (
        str(error) == "criteria.all[999]: a definition has at most 1,000 criteria (groups included)"
    )
    groups = {"any": [{"all": [{"input": "web"}] * 9}] * 100}  # 1 + 100 + 900 = 1,001
    assert refused(doc(groups)).path == "criteria.any[99].all[8]"


def test_deeply_nested_text_is_refused() -> None:
    text = '{"name": "x", "criteria": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(DefinitionError, match="nested too deeply"):
        load_definition(text)
    with pytest.raises(DefinitionError, match="nested too deeply"):
        load_definition("name: x\ncriteria: " + "[" * 100_000, "deep.yaml")


# -- errors ---------------------------------------------------------------------------------

ERRORS: list[tuple[object, str]] = [
    # the document
    ([], "expected an audience definition (an object), got a list"),
    (None, "expected an audience definition (an object), got null"),
    ({"criteria": {"all": []}}, "missing key 'name'"),
    ({"name": "x"}, "missing key 'criteria'"),
    (
        {"name": "x", "criteria": {"all": []}, "owner": "me"},
        "owner: unknown key 'owner'; expected one of: name, description, criteria",
    ),
    ({"name": "x", "criteria": {"all": []}, 1: 2}, "keys must be strings, not a number (1)"),
    (
        {"name": 7, "criteria": {"all": []}},
        "name: expected an audience name (a string), got a number",
    ),
    (
        {"name": "a b", "criteria": {"all": []}},
        "name: invalid name 'a b': letters, digits, '_', '.' and '-' (at most 64)",
    ),
    (
        {"name": "ab\n", "criteria": {"all": []}},
        "name: invalid name 'ab\\n': letters, digits, '_', '.' and '-' (at most 64)",
    ),
    (
        {"name": "x" * 65, "criteria": {"all": []}},
        f"name: invalid name '{'x' * 65}': letters, digits, '_', '.' and '-' (at most 64)",
    ),
    (
        {"name": "x", "description": None, "criteria": {"all": []}},
        "description: expected a string, got null",
    ),
    # criteria in general
    (doc([]), "criteria: expected a criterion (an object), got a list"),
    (
        doc({}),
        (
            "criteria: expected a criterion: an object with one of all, any, "
            "not, event, user_attribute, identity, audience, consent, input, "
            "environment"
        ),
    ),
    (
        doc({"evnt": {}}),
        (
            "criteria.evnt: unknown key 'evnt'; expected one of: all, any, "
            "not, event, user_attribute, identity, audience, consent, input, "
            "environment"
        ),
    ),
    (
        doc({"a b": 1}),
        (
            "criteria[\"a b\"]: unknown key 'a b'; expected one of: all, any, "
            "not, event, user_attribute, identity, audience, consent, input, "
            "environment"
        ),
    ),
    (
        doc({"audience": "a", "input": "b"}),
        "criteria: a criterion has one kind, not both 'audience' and 'input'",
    ),
    # groups
    (doc({"all": {"input": "x"}}), "criteria.all: expected a list of criteria, got an object"),
    (
        doc({"any": [{"input": "x"}, "web"]}),
        "criteria.any[1]: expected a criterion (an object), got a string",
    ),
    (
        doc({"all": [], "within": "1h"}),
        "criteria.within: unknown key 'within'; expected one of: all",
    ),
    (doc({"not": [{"input": "x"}]}), "criteria.not: expected a criterion (an object), got a list"),
    # events
    (
        doc({"all": [{"input": "x"}, {"event": {"type": "teleport"}}]}),
        (
            "criteria.all[1].event.type: unknown event type 'teleport'; expected "
            "one of: custom_event, commerce_event, session_start, session_end, "
            "screen_view, crash_report, opt_out, first_run, application_state_transition, "
            "push_registration, push_message, network_performance, breadcrumb, "
            "profile, user_attribute_change, user_identity_change, uninstall"
        ),
    ),
    (
        doc({"event": "custom_event"}),
        "criteria.event: expected the events to match (an object), got a string",
    ),
    (doc({"event": {}}), "criteria.event: missing key 'type'"),
    (
        doc({"event": {"type": 3}}),
        "criteria.event.type: expected an event type (a string), got a number",
    ),
    (
        doc({"event": {"type": "custom_event", "label": "x"}}),
        (
            "criteria.event.label: unknown key 'label'; expected one of: type, "
            "name, custom_event_type, action, attributes"
        ),
    ),
    (
        doc({"event": {"type": "custom_event"}, "times": 3}),
        "criteria.times: unknown key 'times'; expected one of: event, count, sum, within",
    ),
    (
        doc({"event": {"type": "session_start", "name": "x"}}),
        (
            "criteria.event.name: name applies to custom_event, screen_view, "
            "commerce_event events only"
        ),
    ),
    (
        doc({"event": {"type": "custom_event", "name": ""}}),
        "criteria.event.name: expected an event or screen name, got an empty string",
    ),
    (
        doc({"event": {"type": "custom_event", "name": None}}),
        "criteria.event.name: expected an event or screen name, got null",
    ),
    (
        doc({"event": {"type": "commerce_event", "custom_event_type": "other"}}),
        "criteria.event.custom_event_type: custom_event_type applies to custom_event events only",
    ),
    (
        doc({"event": {"type": "custom_event", "custom_event_type": "game"}}),
        (
            "criteria.event.custom_event_type: unknown custom event type 'game'; "
            "expected one of: navigation, location, search, transaction, user_content, "
            "user_preference, social, other, media, attribution, unknown"
        ),
    ),
    (
        doc({"event": {"type": "custom_event", "action": "purchase"}}),
        "criteria.event.action: action applies to commerce_event events only",
    ),
    (
        doc({"event": {"type": "commerce_event", "action": "buy"}}),
        (
            "criteria.event.action: unknown commerce action 'buy'; expected "
            "one of: add_to_cart, remove_from_cart, checkout, checkout_option, "
            "click, view_detail, purchase, refund, add_to_wishlist, remove_from_wishlist, "
            "unknown, view"
        ),
    ),
    (
        doc({"event": {"type": "custom_event", "attributes": {"a": 1}}}),
        "criteria.event.attributes: expected a list of attribute conditions, got an object",
    ),
    (
        doc({"event": {"type": "custom_event", "attributes": [{"op": "exists"}]}}),
        "criteria.event.attributes[0]: missing key 'attribute'",
    ),
    (
        doc(
            {
                "event": {
                    "type": "custom_event",
                    "attributes": [{"attribute": "a", "op": "exists", "key": 1}],
                }
            }
        ),
        (
            "criteria.event.attributes[0].key: unknown key 'key'; expected "
            "one of: attribute, op, value"
        ),
    ),
    (
        doc(
            {
                "event": {
                    "type": "custom_event",
                    "attributes": [{"attribute": "a", "op": "gt", "value": "soon"}],
                }
            }
        ),
        "criteria.event.attributes[0].value: gt takes a number or an ISO-8601 date, not 'soon'",
    ),
    (
        doc({"event": {"type": "custom_event", "attributes": [{"attribute": "", "op": "exists"}]}}),
        (
            "criteria.event.attributes[0].attribute: expected an event attribute "
            "name, got an empty string"
        ),
    ),
    # counts
    (
        doc({"event": {"type": "custom_event"}, "count": 3}),
        "criteria.count: expected a count (an object with min and/or max), got a number",
    ),
    (
        doc({"event": {"type": "custom_event"}, "count": {}}),
        "criteria.count: a count has min, max or both",
    ),
    (
        doc({"event": {"type": "custom_event"}, "count": {"min": 1.0}}),
        "criteria.count.min: expected a whole number, got a number",
    ),
    (
        doc({"event": {"type": "custom_event"}, "count": {"min": True}}),
        "criteria.count.min: expected a whole number, got a boolean",
    ),
    (
        doc({"event": {"type": "custom_event"}, "count": {"min": -1}}),
        "criteria.count.min: expected a whole number from 0 to 1,000, not -1",
    ),
    (
        doc({"event": {"type": "custom_event"}, "count": {"max": 1001}}),
        "criteria.count.max: expected a whole number from 0 to 1,000, not 1001",
    ),
    (
        doc({"event": {"type": "custom_event"}, "count": {"max": 10**5000}}),
        "criteria.count.max: expected a whole number from 0 to 1,000, not a very large integer",
    ),
    (
        doc({"event": {"type": "custom_event"}, "count": {"min": 3, "max": 2}}),
        "criteria.count: min (3) is greater than max (2)",
    ),
    (
        doc({"event": {"type": "custom_event"}, "count": {"min": 1, "max": 0}}),
        "criteria.count: min (1) is greater than max (0)",
    ),
    (
        doc({"event": {"type": "custom_event"}, "count": {"least": 1}}),
        "criteria.count.least: unknown key 'least'; expected one of: min, max",
    ),
    # sums
    (
        doc({"event": {"type": "custom_event"}, "count": {"min": 1}, "sum": {}}),
        "criteria: an event condition has a count or a sum, not both",
    ),
    (
        doc({"event": {"type": "custom_event"}, "sum": {"op": "gt", "value": 1}}),
        "criteria.sum: missing key 'of'",
    ),
    (
        doc({"event": {"type": "custom_event"}, "sum": {"of": "revenue", "op": "gt", "value": 1}}),
        "criteria.sum.of: revenue is summed over commerce_event events only",
    ),
    (
        doc(
            {"event": {"type": "custom_event"}, "sum": {"of": "attribute:", "op": "gt", "value": 1}}
        ),
        "criteria.sum.of: expected 'revenue' or 'attribute:NAME', not 'attribute:'",
    ),
    (
        doc({"event": {"type": "custom_event"}, "sum": {"of": "price", "op": "gt", "value": 1}}),
        "criteria.sum.of: expected 'revenue' or 'attribute:NAME', not 'price'",
    ),
    (
        doc({"event": {"type": "custom_event"}, "sum": {"of": "attribute:n", "value": 1}}),
        "criteria.sum: missing key 'op'",
    ),
    (
        doc(
            {
                "event": {"type": "custom_event"},
                "sum": {"of": "attribute:n", "op": "in", "value": 1},
            }
        ),
        "criteria.sum.op: unknown sum operator 'in'; expected one of: eq, ne, gt, gte, lt, lte",
    ),
    (
        doc({"event": {"type": "custom_event"}, "sum": {"of": "attribute:n", "op": "gt"}}),
        "criteria.sum: missing key 'value'",
    ),
    (
        doc(
            {
                "event": {"type": "custom_event"},
                "sum": {"of": "attribute:n", "op": "gt", "value": "1"},
            }
        ),
        "criteria.sum.value: expected a number, got a string",
    ),
    (
        doc(
            {
                "event": {"type": "custom_event"},
                "sum": {"of": "attribute:n", "op": "gt", "value": float("nan")},
            }
        ),
        "criteria.sum.value: expected a finite number",
    ),
    (
        doc(
            {
                "event": {"type": "custom_event"},
                "sum": {"of": "attribute:n", "op": "gt", "value": 2**63},
            }
        ),
        "criteria.sum.value: integer out of range (at most 64 bits, signed)",
    ),
    # windows
    (
        doc({"event": {"type": "custom_event"}, "within": 3600}),
        "criteria.within: expected a duration such as '45s', '15m', '2h' or '30d', got a number",
    ),
    (
        doc({"event": {"type": "custom_event"}, "within": "1 h"}),
        (
            "criteria.within: expected a duration such as '45s', '15m', '2h' "
            "or '30d' (a positive whole number and s, m, h or d), not '1 h'"
        ),
    ),
    (
        doc({"event": {"type": "custom_event"}, "within": "2w"}),
        (
            "criteria.within: expected a duration such as '45s', '15m', '2h' "
            "or '30d' (a positive whole number and s, m, h or d), not '2w'"
        ),
    ),
    (
        doc({"event": {"type": "custom_event"}, "within": "-1h"}),
        (
            "criteria.within: expected a duration such as '45s', '15m', '2h' "
            "or '30d' (a positive whole number and s, m, h or d), not '-1h'"
        ),
    ),
    (
        doc({"event": {"type": "custom_event"}, "within": "0s"}),
        "criteria.within: a window must be longer than 0",
    ),
    (
        doc({"event": {"type": "custom_event"}, "within": "401d"}),
        "criteria.within: a window is at most 400 days ('400d'), not '401d'",
    ),
    (
        doc({"event": {"type": "custom_event"}, "within": "9601h"}),
        "criteria.within: a window is at most 400 days ('400d'), not '9601h'",
    ),
    (
        doc({"event": {"type": "custom_event"}, "within": "9" * 13 + "s"}),
        (
            "criteria.within: expected a duration such as '45s', '15m', '2h' "
            f"or '30d' (a positive whole number and s, m, h or d), not '{'9' * 13}s'"
        ),
    ),
    # comparisons
    (doc({"user_attribute": "a"}), "criteria: missing key 'op'"),
    (
        doc({"user_attribute": "a", "op": "equals", "value": 1}),
        (
            "criteria.op: unknown operator 'equals'; expected one of: eq, "
            "ne, contains, starts_with, in, gt, gte, lt, lte, exists, not_exists"
        ),
    ),
    (
        doc({"user_attribute": "a", "op": None}),
        "criteria.op: expected an operator (a string), got null",
    ),
    (
        doc({"user_attribute": "", "op": "exists"}),
        "criteria.user_attribute: expected an attribute name, got an empty string",
    ),
    (
        doc({"user_attribute": ["a"], "op": "exists"}),
        "criteria.user_attribute: expected an attribute name, got a list",
    ),
    (
        doc({"user_attribute": "a", "op": "eq"}),
        "criteria: missing key 'value' (the operator eq compares with a value)",
    ),
    (
        doc({"user_attribute": "a", "op": "exists", "value": True}),
        "criteria.value: exists takes no value",
    ),
    (
        doc({"user_attribute": "a", "op": "not_exists", "value": None}),
        "criteria.value: not_exists takes no value",
    ),
    (
        doc({"user_attribute": "a", "op": "eq", "value": None}),
        "criteria.value: expected a string, a number or a boolean, got null",
    ),
    (
        doc({"user_attribute": "a", "op": "eq", "value": ["x"]}),
        "criteria.value: expected a string, a number or a boolean, got a list",
    ),
    (
        doc({"user_attribute": "a", "op": "ne", "value": {"x": 1}}),
        "criteria.value: expected a string, a number or a boolean, got an object",
    ),
    (
        doc({"user_attribute": "a", "op": "eq", "value": float("inf")}),
        "criteria.value: expected a finite number",
    ),
    (
        doc({"user_attribute": "a", "op": "eq", "value": -(2**63) - 1}),
        "criteria.value: integer out of range (at most 64 bits, signed)",
    ),
    (
        doc({"user_attribute": "a", "op": "in", "value": "DE"}),
        "criteria.value: in takes a non-empty list of values, got a string",
    ),
    (
        doc({"user_attribute": "a", "op": "in", "value": []}),
        "criteria.value: in takes a non-empty list of values, got an empty list",
    ),
    (
        doc({"user_attribute": "a", "op": "in", "value": ["DE", None]}),
        "criteria.value[1]: expected a string, a number or a boolean, got null",
    ),
    (
        doc({"user_attribute": "a", "op": "in", "value": ["DE", ["FR"]]}),
        "criteria.value[1]: expected a string, a number or a boolean, got a list",
    ),
    (
        doc({"user_attribute": "a", "op": "contains", "value": 1}),
        "criteria.value: expected a string for contains, got a number",
    ),
    (
        doc({"user_attribute": "a", "op": "starts_with", "value": None}),
        "criteria.value: expected a string for starts_with, got null",
    ),
    (
        doc({"user_attribute": "a", "op": "gt", "value": True}),
        "criteria.value: gt takes a number or an ISO-8601 date, got a boolean",
    ),
    (
        doc({"user_attribute": "a", "op": "lt", "value": "42"}),
        "criteria.value: lt takes a number or an ISO-8601 date, not '42'",
    ),
    (
        doc({"user_attribute": "a", "op": "lte", "value": "2024-13-01"}),
        "criteria.value: lte takes a number or an ISO-8601 date, not '2024-13-01'",
    ),
    (
        doc({"user_attribute": "a", "op": "gte", "value": "20240101"}),
        "criteria.value: gte takes a number or an ISO-8601 date, not '20240101'",
    ),
    (
        doc({"user_attribute": "a", "op": "gte", "value": "01/02/2024"}),
        "criteria.value: gte takes a number or an ISO-8601 date, not '01/02/2024'",
    ),
    (
        doc({"user_attribute": "a", "op": "eq", "value": 1, "default": 2}),
        "criteria.default: unknown key 'default'; expected one of: user_attribute, op, value",
    ),
    # identities
    (
        doc({"identity": "passport", "op": "exists"}),
        (
            "criteria.identity: unknown identity type 'passport'; expected "
            "a user identity type (customer_id, email, mobile_number, other, "
            "other_id_2...) or a device identity type (ios_advertising_id, "
            "android_advertising_id, push_token...)"
        ),
    ),
    (
        doc({"identity": 1, "op": "exists"}),
        "criteria.identity: expected an identity type (a string), got a number",
    ),
    (
        doc({"identity": "email", "op": "eq", "value": 1.5, "x": 1}),
        "criteria.x: unknown key 'x'; expected one of: identity, op, value",
    ),
    # audiences, consent, inputs, environments
    (
        doc({"audience": ""}),
        "criteria.audience: invalid name '': letters, digits, '_', '.' and '-' (at most 64)",
    ),
    (doc({"audience": None}), "criteria.audience: expected an audience name (a string), got null"),
    (
        doc({"audience": "a", "version": 2}),
        "criteria.version: unknown key 'version'; expected one of: audience",
    ),
    (doc({"consent": "gdpr"}), "criteria.consent: expected a consent (an object), got a string"),
    (doc({"consent": {}}), "criteria.consent: expected 'gdpr' (with a purpose) or 'ccpa'"),
    (
        doc({"consent": {"consented": True}}),
        "criteria.consent: expected 'gdpr' (with a purpose) or 'ccpa'",
    ),
    (
        doc({"consent": {"gdpr": "ads", "ccpa": True}}),
        "criteria.consent: a consent condition is about gdpr or ccpa, not both",
    ),
    (
        doc({"consent": {"gdpr": ""}}),
        "criteria.consent.gdpr: expected a GDPR purpose, got an empty string",
    ),
    (
        doc({"consent": {"gdpr": "ads", "consented": "yes"}}),
        "criteria.consent.consented: expected true or false, got a string",
    ),
    (
        doc({"consent": {"ccpa": "true"}}),
        "criteria.consent.ccpa: expected true or false, got a string",
    ),
    (
        doc({"consent": {"ccpa": True, "consented": True}}),
        (
            "criteria.consent.consented: consented goes with gdpr; for ccpa "
            "the value of ccpa is the decision"
        ),
    ),
    (
        doc({"consent": {"gdpr": "ads", "document": "v2"}}),
        "criteria.consent.document: unknown key 'document'; expected one of: gdpr, ccpa, consented",
    ),
    (doc({"input": ""}), "criteria.input: expected an input name, got an empty string"),
    (doc({"input": "x" * 201}), "criteria.input: an input name has at most 200 characters"),
    (
        doc({"environment": "Production"}),
        (
            "criteria.environment: unknown environment 'Production'; expected "
            "one of: production, development"
        ),
    ),
    (
        doc({"environment": True}),
        "criteria.environment: expected production or development, got a boolean",
    ),
    # text that no UTF-8 encoder takes (JSON's "\ud800" escape)
    (
        doc({"input": "web\ud800"}),
        "criteria.input: invalid text: a lone surrogate ('\\ud800') at character 3",
    ),
    (
        doc({"user_attribute": "a", "op": "in", "value": ["x", "\udfff"]}),
        "criteria.value[1]: invalid text: a lone surrogate ('\\udfff') at character 0",
    ),
    # deeper paths
    (
        doc({"any": [{"all": [{"not": {"user_attribute": "a", "op": "in", "value": [1, {}]}}]}]}),
        (
            "criteria.any[0].all[0].not.value[1]: expected a string, a number "
            "or a boolean, got an object"
        ),
    ),
]


@pytest.mark.parametrize(("document", "message"), ERRORS)
def test_every_error(document: object, message: str) -> None:
    error = refused(document)
    assert str(error) == message
    assert str(error) == (f"{error.path}: {error.reason}" if error.path else error.reason)
    assert error.line is None and error.column is None


def test_an_error_is_a_patchbay_error_that_pickles() -> None:
    error = refused(doc({"environment": "staging"}))
    assert isinstance(error, PatchbayError)
    assert (error.path, error.line, error.column) == ("criteria.environment", None, None)
    copied = pickle.loads(pickle.dumps(error))
    assert (copied.path, copied.reason, str(copied)) == (error.path, error.reason, str(error))
    assert str(DefinitionError("", "just the reason")) == "just the reason"


def test_dates_read_by_a_plain_yaml_loader_become_iso_strings() -> None:
    document = yaml.safe_load(
        "name: x\ncriteria: {user_attribute: since, op: gt, value: 2024-01-02}"
    )
    assert parsed(document["criteria"]) == UserAttribute(Compare("since", "gt", "2024-01-02"))
    document = yaml.safe_load(
        "name: x\ncriteria: {user_attribute: a, op: in, value: [2024-01-02 10:00:00]}"
    )
    assert parsed(document["criteria"]) == UserAttribute(
        Compare("a", "in", ("2024-01-02T10:00:00",))
    )


# -- text -----------------------------------------------------------------------------------

YAML_EXAMPLE = """\
name: cart-abandoners
description: Added to cart in the last hour and bought nothing
criteria:
  all:
    - event: {type: commerce_event, action: add_to_cart}
      within: 1h
    - not:
        event: {type: commerce_event, action: purchase}
        within: 1h
    - user_attribute: country
      op: in
      value: [DE, FR, NO]
"""


def test_yaml_by_name_and_by_content() -> None:
    by_name = load_definition(YAML_EXAMPLE, "audiences/cart.yaml")
    assert load_definition(YAML_EXAMPLE.encode(), "CART.YML") == by_name
    assert load_definition(YAML_EXAMPLE) == by_name  # not JSON: YAML
    assert load_definition(YAML_EXAMPLE, "cart.txt") == by_name
    assert by_name.criteria.nodes[2] == UserAttribute(Compare("country", "in", ("DE", "FR", "NO")))  # type: ignore[union-attr]
    as_json = json.dumps(definition_document(by_name))
    assert load_definition(as_json, "cart.json") == by_name
    assert load_definition(as_json.encode(), "cart.yaml") == by_name  # JSON is YAML


def test_yaml_values_keep_the_types_the_grammar_expects() -> None:
    text = """\
name: 2024-01-01
criteria:
  all:
    - {user_attribute: since, op: gte, value: 2024-01-01}
    - {user_attribute: at, op: lt, value: 2024-01-01T10:00:00Z}
    - {user_attribute: at, op: lt, value: !!timestamp 2024-01-01 10:00:00}
    - {user_attribute: a, op: in, value: [yes, no, on, off, y, n, NO]}
    - {user_attribute: a, op: in, value: [true, false, True, FALSE]}
    - {user_attribute: a, op: in, value: [1, -2, 3.5, 1.0e+3, 012, 0x1F, 1_000, '1:30', 1:30, 1e3]}
    - {user_attribute: a, op: eq, value: ~}
"""
    with pytest.raises(DefinitionError) as caught:
        load_definition(text, "x.yaml")
    assert (
        str(caught.value)
        == "criteria.all[6].value: expected a string, a number or a boolean, got null"
    )
    text = text.replace("    - {user_attribute: a, op: eq, value: ~}\n", "")
    definition = load_definition(text, "x.yaml")
    assert definition.name == "2024-01-01"
    assert definition.criteria == All(
        (
            UserAttribute(Compare("since", "gte", "2024-01-01")),
            UserAttribute(Compare("at", "lt", "2024-01-01T10:00:00Z")),
            UserAttribute(Compare("at", "lt", "2024-01-01 10:00:00")),
            UserAttribute(Compare("a", "in", ("yes", "no", "on", "off", "y", "n", "NO"))),
            UserAttribute(Compare("a", "in", (True, False, True, False))),
            UserAttribute(
                Compare(
                    "a", "in", (1, -2, 3.5, 1000.0, "012", "0x1F", "1_000", "1:30", "1:30", "1e3")
                )
            ),
        )
    )
    values = definition.criteria.nodes[4].compare.value  # type: ignore[union-attr]
    assert all(type(v) is bool for v in values)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "filename", "message", "line", "column"),
    [
        (
            '{"name": "x",\n  "criteria": {"all": [}\n}',
            None,
            "invalid JSON at line 2, column 24: Expecting value",
            2,
            24,
        ),
        (
            '{"name": "x" "criteria": {}}',
            "x.json",
            "invalid JSON at line 1, column 14: Expecting ',' delimiter",
            1,
            14,
        ),
        (
            "name: x\ncriteria:\n  all: [\n",
            "x.yaml",
            (
                "invalid YAML at line 4, column 1: while parsing a flow node, "
                "expected the node content, but found '<stream end>'"
            ),
            4,
            1,
        ),
        (
            "name: x\n  criteria: 1\n",
            None,
            "invalid YAML at line 2, column 11: mapping values are not allowed here",
            2,
            11,
        ),
        (
            "name: x\ncriteria: {}\nname: y\n",
            "x.yml",
            "invalid YAML at line 3, column 1: while reading a mapping, found the key 'name' twice",
            3,
            1,
        ),
        (
            "name: x\n---\nname: y\n",
            None,
            (
                "invalid YAML at line 2, column 1: expected a single document "
                "in the stream, but found another document"
            ),
            2,
            1,
        ),
        (
            "name: !!int 0x\ncriteria: {}\n",
            None,
            (
                "invalid YAML at line 1, column 7: cannot read a value tagged "
                "tag:yaml.org,2002:int: invalid literal for int() with base 16: "
                "''"
            ),
            1,
            7,
        ),
        (
            "name: !!python/name:os.system x\n",
            None,
            (
                "invalid YAML at line 1, column 7: could not determine a constructor "
                "for the tag 'tag:yaml.org,2002:python/name:os.system'"
            ),
            1,
            7,
        ),
        (
            "\tname: x",
            None,
            (
                "invalid YAML at line 1, column 1: while scanning for the next "
                "token, found character '\\t' that cannot start any token"
            ),
            1,
            1,
        ),
    ],
)
def test_syntax_errors_have_a_line_and_column(
    text: str, filename: str | None, message: str, line: int, column: int
) -> None:
    with pytest.raises(DefinitionError) as caught:
        load_definition(text, filename)
    assert (str(caught.value), caught.value.path) == (message, "")
    assert (caught.value.line, caught.value.column) == (line, column)


def test_text_odds_and_ends() -> None:
    plain = '{"name": "x", "criteria": {"all": []}}'
    expected = Definition("x", "", All(()))
    assert load_definition("\ufeff" + plain) == expected
    assert load_definition(("\ufeff" + plain).encode()) == expected
    assert load_definition("{name: x, criteria: {all: []}}") == expected  # YAML flow style
    assert load_definition('{"name": "x", "criteria": {"all": [],},}') == expected  # via YAML
    with pytest.raises(
        DefinitionError, match=r"^the definition is not UTF-8 text \(byte 11: invalid start byte\)$"
    ):
        load_definition(b'{"name": "x\xff"}')
    with pytest.raises(DefinitionError) as caught:
        load_definition('{"name": "x", "criteria": {"input": "a", "input": "b"}}')
    assert str(caught.value) == "criteria.input: duplicate key"
    with pytest.raises(DefinitionError) as caught:
        load_definition("")
    assert str(caught.value) == "expected an audience definition (an object), got null"
    with pytest.raises(DefinitionError) as caught:
        load_definition(
            '{"name": "x", "criteria": {"user_attribute": "a", "op": "eq", "value": NaN}}'
        )
    assert str(caught.value) == "criteria.value: expected a finite number"
    with pytest.raises(DefinitionError, match=r"^invalid JSON: Exceeds the limit"):
        load_definition('{"name": "x", "criteria": {"input": 1' + "0" * 5000 + "}}")
    # YAML anchors and merge keys
    text = (
        "name: x\ncriteria:\n  all:\n    - &a {user_attribute: a, op: exists}\n    - *a\n"
        "    - {<<: *a, op: not_exists}\n"
    )
    assert load_definition(text) == Definition(
        "x",
        "",
        All(
            (UserAttribute(Compare("a", "exists")),) * 2
            + (UserAttribute(Compare("a", "not_exists")),)
        ),
    )


def test_decode_document_only_decodes() -> None:
    assert decode_document("a: [1, 2]") == {"a": [1, 2]}
    assert decode_document(b'{"a": 1}', "a.json") == {"a": 1}


# -- round trips of random definitions ----------------------------------------------------------


def same(a: Definition, b: Definition) -> None:
    """Equal, and with equal documents (which also tells ``True`` from ``1`` and ``1.0``
    from ``1``, which dataclass equality does not)."""
    assert a == b
    assert json.dumps(definition_document(a)) == json.dumps(definition_document(b))


@ROUND_TRIP
@given(strategies.definitions(wide=True))
def test_json_round_trip(definition: Definition) -> None:
    text = json.dumps(definition_document(definition))
    same(load_definition(text), definition)
    same(load_definition(text.encode(), "a.json"), definition)


@ROUND_TRIP
@given(strategies.definitions(wide=True))
def test_yaml_round_trip(definition: Definition) -> None:
    text = yaml.safe_dump(definition_document(definition))
    same(load_definition(text, "a.yaml"), definition)
    same(load_definition(text), definition)
    # (not allow_unicode=True: PyYAML then writes U+0085 and U+2028 unescaped in single-quoted
    # scalars, where YAML folds them: its emitter's bug, not the reader's)
    flow = yaml.safe_dump(definition_document(definition), default_flow_style=True)
    same(load_definition(flow, "a.yml"), definition)


@ROUND_TRIP
@given(strategies.definitions())
def test_pooled_definitions_round_trip(definition: Definition) -> None:
    same(parse_definition(definition_document(definition)), definition)
    same(load_definition(yaml.safe_dump(definition_document(definition))), definition)


KINDS = [
    All,
    AnyOf,
    Not,
    EventCondition,
    UserAttribute,
    IdentityCondition,
    AudienceRef,
    Consent,
    InputSeen,
    EnvironmentSeen,
]
SEARCH = settings(max_examples=5000, deadline=None, database=None)


def depth(node: Node) -> int:
    match node:
        case All(nodes) | AnyOf(nodes):
            return 1 + max((depth(n) for n in nodes), default=0)
        case Not(child):
            return 1 + depth(child)
    return 1


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_the_strategy_draws_every_kind(kind: type, wide: bool) -> None:
    find(
        strategies.criteria(wide=wide),
        lambda node: depth(node) >= 3 and any(isinstance(n, kind) for n in walk(node)),
        settings=SEARCH,
    )


@pytest.mark.parametrize(
    "wanted",
    [
        lambda e: e.sum is not None and e.sum.of == "revenue",
        lambda e: e.sum is not None and e.sum.of.startswith("attribute:"),
        lambda e: e.count is not None and e.count.max == 0,
        lambda e: e.window_ms is not None and e.match.attributes,
        lambda e: e.match.name is not None and e.match.custom_event_type is not None,
        lambda e: e.match.action is not None,
    ],
)
def test_the_strategy_draws_every_kind_of_event_condition(wanted: Any) -> None:
    find(strategies.event_conditions(), wanted, settings=SEARCH)


@settings(max_examples=50, deadline=None)
@given(strategies.definitions(audience_names=()))
def test_without_audience_names_nothing_refers_to_an_audience(definition: Definition) -> None:
    assert '"audience"' not in json.dumps(definition_document(definition))


# -- fuzzing ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "a\udfffb"])  # lone surrogates: not valid text
    | st.sampled_from(["name", "criteria", "all", "event", "type", "op", "value", "in", "1h"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=6)
            | st.sampled_from(
                [
                    "name",
                    "criteria",
                    "all",
                    "any",
                    "not",
                    "event",
                    "count",
                    "sum",
                    "within",
                    "type",
                    "user_attribute",
                    "identity",
                    "op",
                    "value",
                    "consent",
                    "gdpr",
                    "ccpa",
                    "audience",
                    "input",
                    "environment",
                    "attributes",
                    "attribute",
                    "min",
                    "max",
                    "of",
                    "action",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def resolve(document: object, path: str) -> object:
    """The value at a DefinitionError's path in ``document`` (KeyError/IndexError if none)."""
    value = document
    for token in re.findall(r'[A-Za-z_]\w*|\[\d+\]|\["(?:[^"\\]|\\.)*"\]', path):
        if token.startswith('["'):
            value = value[json.loads(token[1:-1])]  # type: ignore[index]
        elif token.startswith("["):
            value = value[int(token[1:-1])]  # type: ignore[index]
        else:
            value = value[token]  # type: ignore[index]
    return value


def parses_or_refuses(document: object) -> None:
    """Only a DefinitionError, whose path leads to a value of ``document``; or a definition
    whose normalised document reads back to it."""
    try:
        definition = parse_definition(document)
    except DefinitionError as error:
        assert error.reason
        resolve(document, error.path)
        return
    assert parse_definition(definition_document(definition)) == definition
    # as the service stores it, and the engine reads it back
    stored = msgspec.json.encode(definition_document(definition))
    assert parse_definition(msgspec.json.decode(stored)) == definition


@FUZZ
@given(json_values)
def test_fuzz_any_json_value(document: object) -> None:
    parses_or_refuses(document)
    parses_or_refuses({"name": "x", "criteria": document})


@FUZZ
@given(json_values)
def test_fuzz_any_json_value_as_text(document: object) -> None:
    text = json.dumps({"name": "x", "criteria": document})
    with contextlib.suppress(DefinitionError):
        load_definition(text)
    with contextlib.suppress(DefinitionError):
        load_definition(yaml.safe_dump(document), "x.yaml")


@FUZZ
@given(st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def test_fuzz_any_text(text: str) -> None:
    for filename in (None, "a.yaml", "a.json"):
        with contextlib.suppress(DefinitionError):
            load_definition(text, filename)


@FUZZ
@given(st.binary(max_size=80))
def test_fuzz_any_bytes(data: bytes) -> None:
    with contextlib.suppress(DefinitionError):
        load_definition(b"name: x\ncriteria: " + data)


@st.composite
def mutated(draw: st.DrawFn) -> object:
    """A valid definition's document with one random change somewhere in it."""
    document: Any = copy.deepcopy(definition_document(draw(strategies.definitions(wide=True))))
    wrapper: dict[str, Any] = {"root": document}
    # every place in the document: the change is made to holder[key] of one of them
    places: list[tuple[Any, Any]] = []
    pending: list[tuple[Any, Any]] = [(wrapper, "root")]
    while pending:
        place = pending.pop()
        places.append(place)
        value = place[0][place[1]]
        if isinstance(value, dict):
            pending.extend((value, k) for k in sorted(value))
        elif isinstance(value, list):
            pending.extend((value, i) for i in range(len(value)))
    # a uniform choice (sampled_from favours the first places), mostly inside the criteria;
    # not the root (test_fuzz_any_json_value replaces it)
    rand = draw(st.randoms(use_true_random=False))
    inside = [p for p in places[1:] if p[0] is not document or p[1] == "criteria"]
    holder, key = rand.choice(inside if rand.random() < 0.9 else places[1:])
    values = json_values | PLAUSIBLE
    change = draw(st.sampled_from(["replace", "delete", "add", "rename", "wrap"]))
    target = holder[key]
    if change == "delete":
        del holder[key]
    elif change == "wrap":
        holder[key] = [target]
    elif change in ("add", "rename") and isinstance(target, dict):
        new_key = draw(st.sampled_from(MUTATION_KEYS))
        if change == "add" or not target:
            target[new_key] = draw(values)
        else:
            target[new_key] = target.pop(draw(st.sampled_from(sorted(target))))
    else:
        holder[key] = draw(values)
    return wrapper.get("root")


#: Values close to valid ones, so that mutations reach the checks behind the first ones.
PLAUSIBLE = st.sampled_from(
    [
        0,
        -1,
        1,
        2,
        1000,
        1001,
        2**63,
        1.5,
        float("nan"),
        float("inf"),
        True,
        False,
        None,
        "",
        "x",
        "1h",
        "0s",
        "401d",
        "custom_event",
        "commerce_event",
        "screen_view",
        "eq",
        "in",
        "gt",
        "exists",
        "revenue",
        "attribute:",
        "attribute:n",
        "2024-01-01",
        "2024-13-01",
        "production",
        [],
        {},
        ["a"],
        [1, None],
        {"min": 1},
        {"max": 0},
        {"input": "web"},
        {"audience": "a"},
    ]
)
MUTATION_KEYS = [
    "value",
    "op",
    "min",
    "max",
    "name",
    "type",
    "x",
    "within",
    "sum",
    "count",
    "action",
    "custom_event_type",
    "attributes",
    "consented",
    "gdpr",
    "ccpa",
    "all",
]


@FUZZ
@given(mutated())
def test_fuzz_mutations_of_valid_documents(document: object) -> None:
    parses_or_refuses(document)
    with contextlib.suppress(DefinitionError):
        load_definition(json.dumps(document))


# -- a set of audiences --------------------------------------------------------------------------


def audience(name: str, *refs: str, negated: str | None = None) -> Definition:
    nodes: list[Node] = [AudienceRef(r) for r in refs]
    if negated:
        nodes.append(Not(AnyOf((AudienceRef(negated),))))
    return Definition(name, "", All(tuple(nodes)))


def test_references_give_an_evaluation_order() -> None:
    assert check_references({}) == []
    definitions = {
        d.name: d
        for d in (
            audience("vip", "buyers", "loyal"),
            audience("loyal", "buyers"),
            audience("buyers"),
            audience("alone"),
            audience("churn", negated="vip"),
        )
    }
    order = check_references(definitions)
    assert order == ["alone", "buyers", "loyal", "vip", "churn"]
    for name, definition in definitions.items():
        for ref in definition.criteria.nodes:  # type: ignore[union-attr]
            if isinstance(ref, AudienceRef):
                assert order.index(ref.name) < order.index(name)


def test_an_unknown_audience() -> None:
    definitions = {"a": audience("a", "b"), "b": audience("b", negated="nobody")}
    with pytest.raises(DefinitionError) as caught:
        check_references(definitions)
    assert caught.value.path == "b.criteria.all[0].not.any[0].audience"
    assert str(caught.value) == "b.criteria.all[0].not.any[0].audience: unknown audience 'nobody'"
    with pytest.raises(DefinitionError, match=r"^x\.criteria\.audience: unknown audience 'y'$"):
        check_references({"x": Definition("x", "", AudienceRef("y"))})


@pytest.mark.parametrize(
    ("definitions", "path", "cycle"),
    [
        ([audience("a", "a")], "a.criteria.all[0].audience", "a -> a"),
        ([audience("a", "b"), audience("b", "a")], "b.criteria.all[0].audience", "a -> b -> a"),
        (
            [
                audience("a", "b"),
                audience("b", "c"),
                audience("c", negated="a"),
                audience("d", "a"),
            ],
            "c.criteria.all[0].not.any[0].audience",
            "a -> b -> c -> a",
        ),
        (
            [audience("z", "y"), audience("y", "x"), audience("x", "y")],
            "y.criteria.all[0].audience",
            "x -> y -> x",
        ),
    ],
)
def test_cycles(definitions: list[Definition], path: str, cycle: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        check_references({d.name: d for d in definitions})
    assert caught.value.path == path
    assert caught.value.reason == f"audiences refer to each other in a cycle: {cycle}"


def test_a_definition_filed_under_another_name() -> None:
    with pytest.raises(DefinitionError, match=r"^a: the definition filed as 'a' is named 'b'$"):
        check_references({"a": audience("b")})


def test_a_long_chain_of_references() -> None:
    count = 5000  # deeper than Python's recursion limit
    definitions = {
        f"n{i}": audience(f"n{i}", *([f"n{i + 1}"] if i + 1 < count else [])) for i in range(count)
    }
    assert check_references(definitions) == [f"n{i}" for i in reversed(range(count))]


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), st.lists(st.sampled_from("abcdef"), max_size=3)))
def test_references_random_graphs(graph: dict[str, list[str]]) -> None:
    definitions = {name: audience(name, *refs) for name, refs in graph.items()}
    try:
        order = check_references(definitions)
    except DefinitionError as error:
        if "unknown audience" in error.reason:
            assert any(r not in graph for refs in graph.values() for r in refs)
            return
        cycle = error.reason.rpartition(": ")[2].split(" -> ")
        assert cycle[0] == cycle[-1]
        for here, there in itertools.pairwise(cycle):
            assert there in graph[here]
        return
    assert sorted(order) == sorted(graph)
    for name, refs in graph.items():
        assert all(order.index(r) < order.index(name) for r in refs)


# -- the documentation ---------------------------------------------------------------------------


def test_the_examples_of_the_documentation_parse() -> None:
    text = (Path(__file__).parents[2] / "docs" / "audiences.md").read_text()
    grammar = text[text.index("## Defining an audience") : text.index("## Errors")]
    blocks = re.findall(r"```json\n(.*?)```", grammar, re.S)
    assert len(blocks) >= 5
    for block in blocks:
        try:
            documents = [json.loads(block)]
        except ValueError:  # one criterion a line
            documents = [json.loads(line) for line in block.strip().splitlines()]
        for document in documents:
            load_definition(json.dumps(document if "criteria" in document else doc(document)))
    (yaml_block,) = re.findall(r"```yaml\n(.*?)```", grammar, re.S)
    json_example = json.loads(blocks[0])
    assert load_definition(yaml_block, "a.yaml") == parse_definition(json_example)
