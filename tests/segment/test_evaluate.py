"""The evaluation of criteria (``patchbay.segment.evaluate``): every operator over every kind
of value, which events a condition counts and what each adds, windows, counts and sums,
groups; and properties over random criteria and random facts (negation, De Morgan, ``ne``
and ``in`` against ``eq``, order operators as complements, list attributes as any())."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.collect.decode import decode_batch
from patchbay.collect.events import Event
from patchbay.segment.catalog import condition_key
from patchbay.segment.criteria import (
    OPS,
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
    Scalar,
    Sum,
    UserAttribute,
    Value,
    event_conditions,
)
from patchbay.segment.evaluate import (
    MISSING,
    compare,
    counted,
    date,
    event_matches,
    event_time,
    holds,
    in_window,
    measured,
    number,
    prepared,
)
from patchbay.segment.parse import parse_definition
from tests.segment import strategies as pools

ORDER_OPS: tuple[Op, ...] = ("gt", "gte", "lt", "lte")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Random criteria trees are slower to draw: fewer of them.
TREES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def event(event_type: str, **data: Any) -> Event:
    """An event as the decoder makes it from ``{"event_type": ..., "data": ...}``."""
    return cast(Event, msgspec.convert({"event_type": event_type, "data": data}, type=Event))


@dataclass
class DictFacts:
    """Facts from plain dicts: event counts and sums by :func:`condition_key`, attributes
    (absent: :data:`MISSING`), identities by type, consent by (regulation, purpose)."""

    events_by_key: dict[str, tuple[int, float]] = field(default_factory=dict)
    attributes: dict[str, object] = field(default_factory=dict)
    identities_by_type: dict[str, list[str]] = field(default_factory=dict)
    consents: dict[tuple[str, str], bool] = field(default_factory=dict)
    inputs: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()
    members: frozenset[str] = frozenset()

    def events(self, condition: EventCondition) -> tuple[int, float]:
        return self.events_by_key.get(condition_key(condition), (0, 0.0))

    def attribute(self, key: str) -> object:
        return self.attributes.get(key, MISSING)

    def identities(self, identity_type: str) -> Sequence[str]:
        return self.identities_by_type.get(identity_type, [])

    def consent(self, regulation: str, purpose: str) -> bool | None:
        return self.consents.get((regulation, purpose))

    def seen_input(self, name: str) -> bool:
        return name in self.inputs

    def seen_environment(self, environment: str) -> bool:
        return environment in self.environments

    def member(self, audience: str) -> bool:
        return audience in self.members


NOTHING = DictFacts()


def attr(key: str, op: Op, value: Value = None) -> UserAttribute:
    return UserAttribute(Compare(key, op, value))


TRUE = attr("plan", "exists")  # holds for every user with facts GOLD
FALSE = attr("plan", "not_exists")
GOLD = DictFacts(attributes={"plan": "gold"})


def test_missing_is_its_own_value() -> None:
    assert repr(MISSING) == "MISSING"
    assert MISSING is not None


# -- operators -------------------------------------------------------------------------

D_NEW_YEAR_BERLIN = "2025-01-01T00:00:00+02:00"  # 2024-12-31T22:00:00Z

COMPARISONS: list[tuple[Op, object, Value, bool]] = [
    # eq: text, case and all
    ("eq", "gold", "gold", True),
    ("eq", "gold", "Gold", False),
    ("eq", "gold", "gol", False),
    ("eq", "", "", True),
    ("eq", "gold", "", False),
    # eq: numbers, numeric strings on either side, ints and floats
    ("eq", 7, 7, True),
    ("eq", 7, 7.0, True),
    ("eq", 7, 8, False),
    ("eq", "7", 7, True),
    ("eq", 7, "7", True),
    ("eq", "7.0", 7, True),
    ("eq", " 7 ", 7, True),
    ("eq", "1e3", 1000, True),
    ("eq", 2.5, "2.50", True),
    ("eq", "-3", -3, True),
    ("eq", "7", 8, False),
    ("eq", "7x", 7, False),
    # eq: booleans are not numbers; they are the text true / false
    ("eq", True, True, True),
    ("eq", False, False, True),
    ("eq", True, False, False),
    ("eq", True, "true", True),
    ("eq", "true", True, True),
    ("eq", False, "false", True),
    ("eq", "false", True, False),
    ("eq", True, 1, False),
    ("eq", 1, True, False),
    ("eq", False, 0, False),
    ("eq", "1", True, False),
    # eq: dates as dates, whatever the spelling and the offset
    ("eq", "2024-01-01", "2024-01-01T00:00:00Z", True),
    ("eq", "2024-01-01T00:00:00+00:00", "2024-01-01", True),
    ("eq", D_NEW_YEAR_BERLIN, "2024-12-31T22:00:00Z", True),
    ("eq", D_NEW_YEAR_BERLIN, "2025-01-01", False),
    ("eq", "2024-06-30T12:00:00", "2024-06-30T12:00:00+00:00", True),  # no offset: UTC
    ("eq", "2024-06-30T12:00:00+01:00", "2024-06-30T12:00:00Z", False),
    ("eq", "2024-01-02", "2024-01-01", False),
    # ne: the negation of eq, so it holds for an absent or null attribute
    ("ne", "gold", "gold", False),
    ("ne", "gold", "silver", True),
    ("ne", "7", 7, False),
    ("ne", True, "true", False),
    ("ne", MISSING, "gold", True),
    ("ne", None, "gold", True),
    ("ne", None, "None", True),
    ("ne", D_NEW_YEAR_BERLIN, "2024-12-31T22:00:00Z", False),
    # contains: expected inside actual, as text
    ("contains", "gold member", "member", True),
    ("contains", "gold", "old", True),
    ("contains", "gold", "gold", True),
    ("contains", "gold", "", True),
    ("contains", "gold", "x", False),
    ("contains", "Gold", "gold", False),
    ("contains", "old", "gold", False),
    ("contains", 17, "7", True),
    ("contains", 17, "8", False),
    ("contains", 2.5, ".5", True),
    ("contains", 7.0, ".", False),  # 7.0 is the text 7
    ("contains", 1000.0, "1000", True),
    ("contains", True, "ru", True),
    ("contains", False, "true", False),
    ("contains", MISSING, "", False),
    ("contains", None, "", False),
    # starts_with
    ("starts_with", "gold", "go", True),
    ("starts_with", "gold", "gold", True),
    ("starts_with", "gold", "", True),
    ("starts_with", "", "", True),
    ("starts_with", "gold", "ld", False),
    ("starts_with", "go", "gold", False),
    ("starts_with", "Gold", "go", False),
    ("starts_with", 123, "12", True),
    ("starts_with", 7.0, "7.", False),
    ("starts_with", 7.5, "7.", True),
    ("starts_with", False, "fa", True),
    ("starts_with", MISSING, "", False),
    ("starts_with", None, "", False),
    # in: eq with any of the options
    ("in", "DE", ("DE", "FR"), True),
    ("in", "FR", ("DE", "FR"), True),
    ("in", "IT", ("DE", "FR"), False),
    ("in", "7", (1, 7), True),
    ("in", 7, ("7",), True),
    ("in", 7.0, (7,), True),
    ("in", True, ("true",), True),
    ("in", True, (1,), False),
    ("in", "2024-01-01", ("2024-01-01T00:00:00Z",), True),
    ("in", "DE", "DE", True),  # a single value is a list of one
    ("in", "DE", "FR", False),
    ("in", MISSING, ("DE",), False),
    ("in", None, ("None",), False),
    # gt, gte, lt, lte over numbers
    ("gt", 5, 3, True),
    ("gt", 3, 3, False),
    ("gt", 2, 3, False),
    ("gte", 3, 3, True),
    ("gte", 4, 3, True),
    ("gte", 2, 3, False),
    ("lt", 2, 3, True),
    ("lt", 3, 3, False),
    ("lt", 4, 3, False),
    ("lte", 3, 3, True),
    ("lte", 2, 3, True),
    ("lte", 4, 3, False),
    ("gt", 2.5, 2, True),
    ("lt", -3, 0, True),
    ("gt", 3.0000001, 3, True),
    # ... numeric strings as numbers (as text, "10" < "9")
    ("gt", "10", 9, True),
    ("lt", "9", 10, True),
    ("gte", "10", "10.0", True),
    ("lt", "10", "9", False),
    # ... ISO dates and date-times as instants
    ("gt", "2024-06-30T12:00:00Z", "2024-01-01", True),
    ("lt", "2024-06-30T12:00:00Z", "2024-01-01", False),
    ("gt", "2024-01-01", "2024-01-01T00:00:00+00:00", False),
    ("gte", "2024-01-01", "2024-01-01T00:00:00+00:00", True),
    ("lte", "2024-01-01", "2024-01-01T00:00:00+00:00", True),
    ("lt", D_NEW_YEAR_BERLIN, "2024-12-31T23:00:00Z", True),
    ("gt", D_NEW_YEAR_BERLIN, "2024-12-31T21:00:00Z", True),
    ("gt", "2024-12-31T23:00:00+00:00", D_NEW_YEAR_BERLIN, True),
    ("lt", "2024-06-30T12:00:00", "2024-06-30T12:30:00+00:00", True),
    # ... anything else does not order: text, booleans, a number against a date
    ("gt", "gold", "fold", False),
    ("lt", "gold", "hold", False),
    ("gte", "gold", "gold", False),
    ("lte", "gold", "gold", False),
    ("gt", True, 0, False),
    ("gte", True, 1, False),
    ("gt", 5, "2024-01-01", False),
    ("lt", "2024-01-01", 5, False),
    ("lte", "2024-01-01", 2025, False),
    # ... and nothing is true of an absent or null attribute
    ("gt", MISSING, 0, False),
    ("lt", MISSING, 0, False),
    ("gte", None, 0, False),
    ("lte", None, 0, False),
    # exists: present, even with a null value; not_exists: absent
    ("exists", "x", None, True),
    ("exists", "", None, True),
    ("exists", 0, None, True),
    ("exists", False, None, True),
    ("exists", [], None, True),
    ("exists", None, None, True),
    ("exists", MISSING, None, False),
    ("not_exists", MISSING, None, True),
    ("not_exists", None, None, False),
    ("not_exists", "", None, False),
    ("not_exists", [], None, False),
    # list attributes: any element
    ("eq", ["a", "b"], "b", True),
    ("eq", ["a", "b"], "c", False),
    ("eq", ("a", "b"), "a", True),
    ("eq", [], "a", False),
    ("eq", ["7"], 7, True),
    ("eq", [None], "None", False),  # a null element matches nothing
    ("eq", ["None"], "None", True),
    ("ne", ["a", "b"], "a", False),
    ("ne", ["a", "b"], "c", True),
    ("ne", [], "a", True),
    ("contains", ["ab", "cd"], "c", True),
    ("contains", ["ab", "cd"], "x", False),
    ("starts_with", ["ab", "cd"], "c", True),
    ("in", ["IT", "FR"], ("DE", "FR"), True),
    ("in", ["IT", "ES"], ("DE", "FR"), False),
    ("gt", [1, 5], 3, True),
    ("gt", [1, 2], 3, False),
    ("lt", [1, None], 3, True),
    ("gt", [None, 5], 0, True),
    ("lte", [None], 0, False),
    # a value that is no scalar compares with nothing (only `in` takes a tuple)
    ("eq", "a", ("a",), False),
    ("contains", "a", ("a",), False),
    ("gt", 5, (1,), False),
    ("eq", "None", None, False),
    ("starts_with", "None", None, False),
]


@pytest.mark.parametrize(("op", "actual", "expected", "result"), COMPARISONS)
def test_compare(op: Op, actual: object, expected: Value, result: bool) -> None:
    assert compare(op, actual, expected) is result


def test_every_operator_is_covered() -> None:
    assert {case[0] for case in COMPARISONS} == set(OPS)


def test_in_ignores_null_options() -> None:
    # the parser refuses a null in an `in` list; were one there, it would match nothing
    options = cast(Value, ("DE", None))
    assert compare("in", "None", options) is False
    assert compare("in", "DE", options) is True


def test_an_unknown_operator_holds_for_nothing() -> None:
    unknown = cast(Op, "between")
    assert compare(unknown, 5, 3) is False
    assert compare(unknown, "2024-06-30", "2024-01-01") is False


def test_long_numeric_identities_are_told_apart() -> None:
    """Integers above 2**53 (long customer ids) compare exactly, not as floats."""
    assert compare("eq", "12345678901234567", "12345678901234568") is False
    assert compare("eq", "12345678901234567", 12345678901234567) is True
    assert compare("in", "12345678901234567", ("12345678901234568",)) is False
    facts = DictFacts(identities_by_type={"customer_id": ["12345678901234567"]})
    other = IdentityCondition(Compare("customer_id", "eq", "12345678901234568"))
    assert holds(other, facts) is False
    assert holds(IdentityCondition(Compare("customer_id", "ne", "12345678901234568")), facts)
    assert compare("gt", "12345678901234568", "12345678901234567") is True
    assert compare("lt", "12345678901234567", 12345678901234568) is True
    assert compare("gte", 10**400, 1e308) is True


def test_a_long_integer_sent_as_a_json_number_matches_itself() -> None:
    body = {
        "user_attributes": {"account": 12345678901234567},
        "events": [
            {
                "event_type": "custom_event",
                "data": {"custom_attributes": {"order": 12345678901234567}},
            }
        ],
    }
    batch = decode_batch(json.dumps(body).encode())
    account = parse_definition(
        {
            "name": "a",
            "criteria": {"user_attribute": "account", "op": "eq", "value": 12345678901234567},
        }
    ).criteria
    order = EventMatch("custom_event", attributes=(Compare("order", "eq", 12345678901234567),))
    assert batch.events is not None and batch.user_attributes is not None
    assert event_matches(order, batch.events[0]) is True
    assert holds(account, DictFacts(attributes=dict(batch.user_attributes))) is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7),  # integers stay integers
        (-3, -3),
        (0, 0),
        (10**400, 10**400),
        (2.5, 2.5),
        (7.0, 7.0),
        ("7", 7),
        (" 7 ", 7),
        ("\t2.5\n", 2.5),
        ("12345678901234567", 12345678901234567),
        ("-3", -3),
        ("+4", 4),
        ("7.0", 7.0),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("-.5", -0.5),
        (True, None),
        (False, None),
        ("", None),
        ("   ", None),
        ("+", None),
        ("-", None),
        ("+-5", None),
        ("--5", None),
        ("abc", None),
        ("7x", None),
        ("0x10", None),
        ("\u00b2", None),  # a digit to isdigit(), not to int() or float()
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-inf", None),
        ("+inf", None),
        ("Infinity", None),
        ("1e400", None),
        ("-1e400", None),
        (float("nan"), None),
        (float("inf"), None),
        (float("-inf"), None),
        (None, None),
        ([1], None),
        ((1,), None),
        (MISSING, None),
    ],
)
def test_number(value: object, expected: float | None) -> None:
    got = number(value)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01", datetime(2024, 1, 1, tzinfo=UTC)),
        (" 2024-01-01 ", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-06-30T12:00:00", datetime(2024, 6, 30, 12, tzinfo=UTC)),
        ("2024-06-30T12:00:00Z", datetime(2024, 6, 30, 12, tzinfo=UTC)),
        ("2024-06-30 12:00:00", datetime(2024, 6, 30, 12, tzinfo=UTC)),
        ("2024-06-30T12:00:00+02:00", datetime(2024, 6, 30, 10, tzinfo=UTC)),
        ("2024-06-30T12:00:00.250-05:30", datetime(2024, 6, 30, 17, 30, 0, 250000, tzinfo=UTC)),
        ("20240630", None),  # the basic format: a number, not a date
        ("20240630T120000", None),
        ("2024", None),
        ("2024-06", None),
        ("abc", None),
        ("", None),
        ("2024-13-01", None),
        ("2024-02-30", None),
        ("2024-01-01x", None),
        ("2024/01/01", None),
        ("x024-01-01", None),
        ("gold medal", None),
        (20240101, None),
        (None, None),
        (True, None),
        (MISSING, None),
    ],
)
def test_date(value: object, expected: datetime | None) -> None:
    assert date(value) == expected


def test_date_keeps_the_offset_and_fills_in_utc() -> None:
    offset = date("2024-06-30T12:00:00+02:00")
    assert offset is not None and offset.utcoffset() == timedelta(hours=2)
    naive = date("2024-06-30T12:00:00")
    assert naive is not None and naive.utcoffset() == timedelta(0)
    midnight = date("2024-06-30")
    assert midnight is not None and midnight.tzinfo is UTC


# -- holds -----------------------------------------------------------------------------


def test_groups() -> None:
    assert holds(All(()), NOTHING) is True
    assert holds(AnyOf(()), NOTHING) is False
    assert holds(Not(All(())), NOTHING) is False
    assert holds(Not(AnyOf(())), NOTHING) is True
    assert holds(All((TRUE, TRUE)), GOLD) is True
    assert holds(All((TRUE, FALSE)), GOLD) is False
    assert holds(All((FALSE, TRUE)), GOLD) is False
    assert holds(AnyOf((FALSE, TRUE)), GOLD) is True
    assert holds(AnyOf((TRUE, FALSE)), GOLD) is True
    assert holds(AnyOf((FALSE, FALSE)), GOLD) is False
    assert holds(Not(TRUE), GOLD) is False
    assert holds(Not(FALSE), GOLD) is True
    assert holds(Not(Not(TRUE)), GOLD) is True
    assert holds(All((AnyOf((FALSE, TRUE)), Not(FALSE))), GOLD) is True


def test_holds_refuses_what_is_no_criteria_node() -> None:
    # (compiled, the call itself checks the argument's type: the message names it too)
    with pytest.raises(TypeError, match=r"\bCompare\b"):
        holds(cast(Node, Compare("plan", "eq", "gold")), NOTHING)


def test_user_attributes() -> None:
    facts = DictFacts(attributes={"plan": "gold", "age": "42", "tags": ["a", "b"], "x": None})
    assert holds(attr("plan", "eq", "gold"), facts) is True
    assert holds(attr("plan", "eq", "silver"), facts) is False
    assert holds(attr("age", "gte", 42), facts) is True
    assert holds(attr("age", "gt", 42), facts) is False
    assert holds(attr("tags", "eq", "b"), facts) is True
    assert holds(attr("x", "exists"), facts) is True
    assert holds(attr("x", "eq", "None"), facts) is False
    assert holds(attr("nope", "exists"), facts) is False
    assert holds(attr("nope", "not_exists"), facts) is True
    assert holds(attr("nope", "ne", "gold"), facts) is True


def test_identities() -> None:
    facts = DictFacts(identities_by_type={"email": ["a@example.com", "b@example.com"]})

    def identity(key: str, op: Op, value: Value = None) -> IdentityCondition:
        return IdentityCondition(Compare(key, op, value))

    assert holds(identity("email", "eq", "b@example.com"), facts) is True
    assert holds(identity("email", "eq", "c@example.com"), facts) is False
    assert holds(identity("email", "ne", "a@example.com"), facts) is False
    assert holds(identity("email", "contains", "b@"), facts) is True
    assert holds(identity("email", "exists"), facts) is True
    assert holds(identity("email", "not_exists"), facts) is False
    # no identity of the type: absent
    assert holds(identity("customer_id", "exists"), facts) is False
    assert holds(identity("customer_id", "not_exists"), facts) is True
    assert holds(identity("customer_id", "ne", "c1"), facts) is True
    assert holds(identity("customer_id", "eq", "c1"), facts) is False
    empty = DictFacts(identities_by_type={"customer_id": []})
    assert holds(identity("customer_id", "exists"), empty) is False


def test_audience_input_environment() -> None:
    facts = DictFacts(
        inputs=frozenset({"web"}), environments=frozenset({"production"}), members=frozenset("a")
    )
    assert holds(AudienceRef("a"), facts) is True
    assert holds(AudienceRef("b"), facts) is False
    assert holds(InputSeen("web"), facts) is True
    assert holds(InputSeen("ios"), facts) is False
    assert holds(EnvironmentSeen("production"), facts) is True
    assert holds(EnvironmentSeen("development"), facts) is False


def test_consent() -> None:
    facts = DictFacts(consents={("gdpr", "marketing"): True, ("ccpa", "data_sale_opt_out"): False})
    assert holds(Consent("gdpr", "marketing", True), facts) is True
    assert holds(Consent("gdpr", "marketing", False), facts) is False
    assert holds(Consent("ccpa", "data_sale_opt_out", False), facts) is True
    assert holds(Consent("ccpa", "data_sale_opt_out", True), facts) is False
    # no decision: neither consented nor refused
    assert holds(Consent("gdpr", "analytics", True), facts) is False
    assert holds(Consent("gdpr", "analytics", False), facts) is False
    assert holds(Consent("ccpa", "marketing", True), facts) is False


def test_event_conditions_read_their_counts() -> None:
    match = EventMatch("custom_event", "play")
    twice = EventCondition(match, count=Count(2))
    revenue = EventCondition(match, sum=Sum("attribute:amount", "gte", 10))
    facts = DictFacts(
        events_by_key={condition_key(twice): (2, 4.0), condition_key(revenue): (1, 12.0)}
    )
    assert holds(twice, facts) is True
    assert holds(revenue, facts) is True
    assert holds(EventCondition(match, count=Count(3)), facts) is False
    assert holds(EventCondition(match, sum=Sum("attribute:amount", "gte", 13)), facts) is False
    assert holds(twice, NOTHING) is False
    assert holds(EventCondition(match, count=Count(0, 0)), NOTHING) is True


# -- counted ---------------------------------------------------------------------------

ANY_EVENT = EventMatch("session_start")


@pytest.mark.parametrize(
    ("bounds", "count", "result"),
    [
        (None, 0, False),  # no count: at least one
        (None, 1, True),
        (None, 5, True),
        (Count(), 0, False),
        (Count(), 1, True),
        (Count(2), 1, False),
        (Count(2), 2, True),
        (Count(2), 1000, True),
        (Count(0), 0, True),
        (Count(0, 2), 0, True),  # max only ({"max": 2} parses with min 0)
        (Count(0, 2), 2, True),
        (Count(0, 2), 3, False),
        (Count(0, 0), 0, True),  # max 0: never
        (Count(0, 0), 1, False),
        (Count(1, 3), 0, False),
        (Count(1, 3), 3, True),
        (Count(1, 3), 4, False),
        (Count(2, 2), 2, True),
        (Count(2, 2), 1, False),
        (Count(2, 2), 3, False),
    ],
)
def test_counted_counts(bounds: Count | None, count: int, result: bool) -> None:
    condition = EventCondition(ANY_EVENT, count=bounds)
    assert counted(condition, count, float(count)) is result


@pytest.mark.parametrize(
    ("op", "total", "result"),
    [
        ("eq", 10.0, True),
        ("eq", 9.5, False),
        ("ne", 10.0, False),
        ("ne", 0.0, True),
        ("gt", 10.0, False),
        ("gt", 10.5, True),
        ("gte", 10.0, True),
        ("gte", 9.99, False),
        ("lt", 10.0, False),
        ("lt", 9.5, True),
        ("lte", 10.0, True),
        ("lte", 10.01, False),
    ],
)
def test_counted_sums(op: Op, total: float, result: bool) -> None:
    condition = EventCondition(ANY_EVENT, sum=Sum("revenue", op, 10.0))
    assert counted(condition, 3, total) is result


def test_a_sum_ignores_the_count() -> None:
    low = EventCondition(ANY_EVENT, sum=Sum("revenue", "lt", 5.0))
    assert counted(low, 0, 0.0) is True  # nothing bought: a total of 0
    assert counted(low, 100, 4.0) is True
    assert counted(low, 1, 5.0) is False


# -- events ----------------------------------------------------------------------------


def test_event_type() -> None:
    start = event("session_start")
    assert event_matches(EventMatch("session_start"), start) is True
    assert event_matches(EventMatch("session_end"), start) is False
    assert event_matches(EventMatch("custom_event"), event("custom_event")) is True
    assert event_matches(EventMatch("screen_view"), event("custom_event")) is False


def test_event_names() -> None:
    play = event("custom_event", event_name="play")
    assert event_matches(EventMatch("custom_event", name="play"), play) is True
    assert event_matches(EventMatch("custom_event", name="Play"), play) is False
    assert event_matches(EventMatch("custom_event", name="pla"), play) is False
    assert event_matches(EventMatch("custom_event", name="play"), event("custom_event")) is False
    home = event("screen_view", screen_name="home")
    assert event_matches(EventMatch("screen_view", name="home"), home) is True
    assert event_matches(EventMatch("screen_view", name="play"), home) is False
    # a commerce event's name: its event name, else its screen name
    named = event("commerce_event", event_name="checkout", screen_name="cart")
    assert event_matches(EventMatch("commerce_event", name="checkout"), named) is True
    assert event_matches(EventMatch("commerce_event", name="cart"), named) is False
    screen = event("commerce_event", screen_name="cart")
    assert event_matches(EventMatch("commerce_event", name="cart"), screen) is True
    assert event_matches(EventMatch("commerce_event", name="x"), event("commerce_event")) is False
    # an event type without a name never matches a name
    assert event_matches(EventMatch("session_start", name="x"), event("session_start")) is False


def test_custom_event_type() -> None:
    nav = event("custom_event", event_name="play", custom_event_type="navigation")
    assert event_matches(EventMatch("custom_event", custom_event_type="navigation"), nav) is True
    assert event_matches(EventMatch("custom_event", custom_event_type="other"), nav) is False
    untyped = event("custom_event", event_name="play")
    assert event_matches(EventMatch("custom_event", custom_event_type="other"), untyped) is False
    both = EventMatch("custom_event", name="play", custom_event_type="navigation")
    assert event_matches(both, nav) is True
    assert event_matches(both, event("custom_event", event_name="search")) is False
    plain = EventMatch("session_start", custom_event_type="other")
    assert event_matches(plain, event("session_start")) is False


def test_commerce_actions() -> None:
    purchase = event("commerce_event", product_action={"action": "purchase", "total_amount": 5})
    assert event_matches(EventMatch("commerce_event", action="purchase"), purchase) is True
    assert event_matches(EventMatch("commerce_event", action="add_to_cart"), purchase) is False
    assert event_matches(EventMatch("commerce_event"), purchase) is True
    promo = event("commerce_event", promotion_action={"action": "view"})
    assert event_matches(EventMatch("commerce_event", action="view"), promo) is True
    assert event_matches(EventMatch("commerce_event", action="purchase"), promo) is False
    both = event(
        "commerce_event",
        product_action={"action": "add_to_cart"},
        promotion_action={"action": "click"},
    )
    assert event_matches(EventMatch("commerce_event", action="add_to_cart"), both) is True
    assert event_matches(EventMatch("commerce_event", action="click"), both) is True
    # an action without its name, or none at all
    blank = event("commerce_event", product_action={}, promotion_action={"action": "view"})
    assert event_matches(EventMatch("commerce_event", action="view"), blank) is True
    assert event_matches(EventMatch("commerce_event", action="purchase"), blank) is False
    nothing = event("commerce_event")
    assert event_matches(EventMatch("commerce_event", action="purchase"), nothing) is False
    blank_promo = event("commerce_event", promotion_action={})
    assert event_matches(EventMatch("commerce_event", action="view"), blank_promo) is False
    # the SDKs spell one action two ways; definitions use the canonical one
    wish = EventMatch("commerce_event", action="remove_from_wishlist")
    for spelling in ("remove_from_wish_list", "remove_from_wishlist"):
        removed = event("commerce_event", product_action={"action": spelling})
        assert event_matches(wish, removed) is True
        assert event_matches(EventMatch("commerce_event", action="purchase"), removed) is False
    # other event types have no action
    custom = event("custom_event", event_name="purchase")
    assert event_matches(EventMatch("custom_event", action="purchase"), custom) is False


def test_event_attributes() -> None:
    gold = EventMatch("custom_event", attributes=(Compare("plan", "eq", "gold"),))
    assert event_matches(gold, event("custom_event", custom_attributes={"plan": "gold"})) is True
    assert event_matches(gold, event("custom_event", custom_attributes={"plan": "x"})) is False
    assert event_matches(gold, event("custom_event", custom_attributes={"other": "gold"})) is False
    assert event_matches(gold, event("custom_event")) is False
    absent = EventMatch("custom_event", attributes=(Compare("plan", "not_exists"),))
    assert event_matches(absent, event("custom_event")) is True
    assert event_matches(absent, event("custom_event", custom_attributes={"plan": None})) is False
    null = EventMatch("custom_event", attributes=(Compare("plan", "exists"),))
    assert event_matches(null, event("custom_event", custom_attributes={"plan": None})) is True
    numeric = EventMatch("custom_event", attributes=(Compare("amount", "gt", 10),))
    assert event_matches(numeric, event("custom_event", custom_attributes={"amount": "12"})) is True
    assert event_matches(numeric, event("custom_event", custom_attributes={"amount": 9})) is False
    both = EventMatch(
        "custom_event", attributes=(Compare("plan", "eq", "gold"), Compare("n", "lt", 3))
    )
    assert event_matches(both, event("custom_event", custom_attributes={"plan": "gold", "n": 1}))
    assert not event_matches(both, event("custom_event", custom_attributes={"plan": "gold"}))
    assert not event_matches(both, event("custom_event", custom_attributes={"n": 1}))
    assert not event_matches(
        both, event("custom_event", custom_attributes={"plan": "gold", "n": 5})
    )


def test_everything_must_match() -> None:
    match = EventMatch(
        "commerce_event",
        name="checkout",
        action="purchase",
        attributes=(Compare("plan", "eq", "gold"),),
    )
    full: dict[str, Any] = {
        "event_name": "checkout",
        "product_action": {"action": "purchase"},
        "custom_attributes": {"plan": "gold"},
    }
    assert event_matches(match, event("commerce_event", **full)) is True
    for key, other in [
        ("event_name", "browse"),
        ("product_action", {"action": "refund"}),
        ("custom_attributes", {"plan": "silver"}),
    ]:
        assert event_matches(match, event("commerce_event", **{**full, key: other})) is False
    assert event_matches(match, event("custom_event", event_name="checkout")) is False


def test_measured() -> None:
    play = event("custom_event", event_name="play", custom_attributes={"amount": 3})
    assert measured(None, play) == 1.0
    assert measured(None, event("session_start")) == 1.0
    assert measured("attribute:amount", play) == 3.0
    buy = event("commerce_event", product_action={"action": "purchase", "total_amount": 12.5})
    assert measured("revenue", buy) == 12.5
    text = event("commerce_event", product_action={"action": "purchase", "total_amount": "7.25"})
    assert measured("revenue", text) == 7.25
    assert measured("revenue", event("commerce_event", product_action={"action": "refund"})) is None
    odd = event("commerce_event", product_action={"action": "purchase", "total_amount": "n/a"})
    assert measured("revenue", odd) is None
    assert measured("revenue", event("commerce_event")) is None
    assert measured("revenue", event("commerce_event", promotion_action={"action": "view"})) is None
    assert measured("revenue", play) is None  # not a commerce event


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"amount": 3}, 3.0),
        ({"amount": 2.5}, 2.5),
        ({"amount": -1}, -1.0),
        ({"amount": "4.5"}, 4.5),
        ({"amount": " 10 "}, 10.0),
        ({"amount": "abc"}, None),
        ({"amount": ""}, None),
        ({"amount": True}, None),
        ({"amount": None}, None),
        ({"other": 3}, None),
        (None, None),
    ],
)
def test_measured_attribute(attributes: dict[str, Any] | None, expected: float | None) -> None:
    data = {} if attributes is None else {"custom_attributes": attributes}
    assert measured("attribute:amount", event("custom_event", **data)) == expected


def test_measured_attribute_names_may_hold_a_colon() -> None:
    ev = event("custom_event", custom_attributes={"a:b": 3, "b": 5, "a": 7})
    assert measured("attribute:a:b", ev) == 3.0


def test_event_time() -> None:
    assert event_time(event("session_start", timestamp_unixtime_ms=1_234), 5_000) == 1_234
    assert event_time(event("session_start"), 5_000) == 5_000
    assert event_time(event("session_start", timestamp_unixtime_ms=0), 5_000) == 0


@pytest.mark.parametrize(
    ("time_ms", "window_ms", "now_ms", "inside"),
    [
        (1_000, None, 10**15, True),  # all time
        (1_000, 500, 1_000, True),
        (1_000, 500, 1_499, True),
        (1_000, 500, 1_500, False),  # leaves the window exactly at time + window
        (1_000, 500, 1_501, False),
        (2_000, 500, 1_000, True),  # in the future
        (0, 1, 0, True),
        (0, 1, 1, False),
    ],
)
def test_in_window(time_ms: int, window_ms: int | None, now_ms: int, inside: bool) -> None:
    assert in_window(time_ms, window_ms, now_ms) is inside


# -- properties ------------------------------------------------------------------------

SCALARS: st.SearchStrategy[Scalar] = (
    st.sampled_from(pools.TEXT_POOL)
    | st.sampled_from(pools.NUMBER_POOL)
    | st.sampled_from(pools.DATE_POOL)
    | st.sampled_from(("true", "false", "2.50", "-3", "1e0", "2024-01-01T00:00:00Z", "gol"))
    | st.booleans()
    | st.integers(-10, 10)
    | st.text(max_size=4)
)
#: What a user or event attribute may hold.
ATTRIBUTE_VALUES: st.SearchStrategy[object] = (
    st.none() | SCALARS | st.lists(st.none() | SCALARS, max_size=3)
)
TOTALS = st.sampled_from((0.0, 1.0, 2.5, 7.0, -3.0, 10.0))


@st.composite
def facts_for(draw: st.DrawFn, nodes: Sequence[Node]) -> DictFacts:
    """Random facts about a user, with counts and sums for every condition in ``nodes``."""
    keys = sorted({condition_key(c) for n in nodes for c in event_conditions(n)})
    events = {key: (draw(st.integers(0, 4)), draw(TOTALS)) for key in keys}
    attributes = draw(
        st.dictionaries(st.sampled_from(pools.ATTRIBUTE_KEY_POOL), ATTRIBUTE_VALUES, max_size=4)
    )
    identities = draw(
        st.dictionaries(
            st.sampled_from(pools.IDENTITY_TYPE_POOL),
            st.lists(st.sampled_from(pools.IDENTITY_VALUE_POOL), max_size=2),
        )
    )
    purposes = st.sampled_from((*pools.GDPR_PURPOSE_POOL, "data_sale_opt_out"))
    consents = draw(
        st.dictionaries(st.tuples(st.sampled_from(("gdpr", "ccpa")), purposes), st.booleans())
    )
    return DictFacts(
        events,
        attributes,
        identities,
        consents,
        draw(st.frozensets(st.sampled_from(pools.INPUT_POOL))),
        draw(st.frozensets(st.sampled_from(("production", "development")))),
        draw(st.frozensets(st.sampled_from(pools.AUDIENCE_NAME_POOL))),
    )


@st.composite
def nodes_and_facts(draw: st.DrawFn, size: int = 3) -> tuple[list[Node], DictFacts]:
    nodes = draw(st.lists(pools.criteria(max_leaves=4), min_size=size, max_size=size))
    return nodes, draw(facts_for(nodes))


@TREES
@given(nodes_and_facts(size=1))
def test_not_negates(case: tuple[list[Node], DictFacts]) -> None:
    (node,), facts = case
    assert holds(Not(node), facts) is (not holds(node, facts))


@TREES
@given(st.integers(0, 3).flatmap(nodes_and_facts))
def test_all_and_any_are_all_and_any_of_their_children(
    case: tuple[list[Node], DictFacts],
) -> None:
    nodes, facts = case
    each = [holds(n, facts) for n in nodes]
    assert holds(All(tuple(nodes)), facts) is all(each)
    assert holds(AnyOf(tuple(nodes)), facts) is any(each)


@TREES
@given(st.integers(0, 3).flatmap(nodes_and_facts))
def test_de_morgan(case: tuple[list[Node], DictFacts]) -> None:
    nodes, facts = case
    negated = tuple(Not(n) for n in nodes)
    assert holds(Not(All(tuple(nodes))), facts) is holds(AnyOf(negated), facts)
    assert holds(Not(AnyOf(tuple(nodes))), facts) is holds(All(negated), facts)


ACTUALS: st.SearchStrategy[object] = ATTRIBUTE_VALUES | st.just(MISSING)


@PROPERTY
@given(ACTUALS, SCALARS)
def test_ne_is_not_eq(actual: object, expected: Scalar) -> None:
    assert compare("ne", actual, expected) is (not compare("eq", actual, expected))


@PROPERTY
@given(st.lists(st.sampled_from(pools.IDENTITY_VALUE_POOL), max_size=3), SCALARS)
def test_ne_is_not_eq_for_identities(values: list[str], expected: Scalar) -> None:
    facts = DictFacts(identities_by_type={"email": values})
    eq = IdentityCondition(Compare("email", "eq", expected))
    ne = IdentityCondition(Compare("email", "ne", expected))
    assert holds(ne, facts) is (not holds(eq, facts))


@PROPERTY
@given(ACTUALS, SCALARS)
def test_in_one_value_is_eq(actual: object, expected: Scalar) -> None:
    assert compare("in", actual, (expected,)) is compare("eq", actual, expected)


@PROPERTY
@given(ACTUALS, st.lists(SCALARS, min_size=1, max_size=4))
def test_in_is_eq_with_any_option(actual: object, options: list[Scalar]) -> None:
    assert compare("in", actual, tuple(options)) is any(compare("eq", actual, o) for o in options)


NUMBERS: st.SearchStrategy[object] = (
    st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-1000, 1000).map(str)
    | st.floats(-1e6, 1e6, allow_nan=False).map(repr)
)
DATES: st.SearchStrategy[object] = (
    st.dates().map(lambda d: d.isoformat())
    | st.datetimes().map(lambda d: d.isoformat())
    | st.datetimes(
        timezones=st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    ).map(lambda d: d.isoformat())
)


@PROPERTY
@given(st.one_of(st.tuples(NUMBERS, NUMBERS), st.tuples(DATES, DATES)))
def test_order_operators_are_complements(pair: tuple[object, object]) -> None:
    actual, expected = pair
    value = cast(Scalar, expected)
    assert compare("gt", actual, value) is not compare("lte", actual, value)
    assert compare("lt", actual, value) is not compare("gte", actual, value)
    # and eq is exactly gte and lte
    both = compare("gte", actual, value) and compare("lte", actual, value)
    assert compare("eq", actual, value) is both


@PROPERTY
@given(st.datetimes(timezones=st.just(UTC)), st.integers(-14 * 60, 14 * 60))
def test_an_instant_is_equal_whatever_its_offset(moment: datetime, minutes: int) -> None:
    elsewhere = moment.astimezone(timezone(timedelta(minutes=minutes)))
    assert compare("eq", moment.isoformat(), elsewhere.isoformat()) is True
    assert compare("gte", elsewhere.isoformat(), moment.isoformat()) is True
    later = (moment + timedelta(seconds=1)).isoformat() if moment.year < 9999 else None
    if later is not None:
        assert compare("gt", later, elsewhere.isoformat()) is True


@PROPERTY
@given(st.text(max_size=6), NUMBERS | DATES)
def test_text_does_not_order(text: str, expected: object) -> None:
    if number(text) is None and date(text) is None:
        for op in ORDER_OPS:
            assert compare(op, text, cast(Scalar, expected)) is False


@PROPERTY
@given(
    st.lists(st.none() | SCALARS, max_size=4),
    st.sampled_from([op for op in OPS if op not in ("exists", "not_exists", "ne")]),
    SCALARS,
)
def test_a_list_attribute_matches_when_any_element_does(
    items: list[Scalar | None], op: Op, expected: Scalar
) -> None:
    value: Value = (expected,) if op == "in" else expected
    each = [compare(op, item, value) for item in items if item is not None]
    assert compare(op, items, value) is any(each)
    assert compare(op, tuple(items), value) is any(each)
    assert compare("ne", items, expected) is not any(
        compare("eq", item, expected) for item in items if item is not None
    )
    assert compare("exists", items, None) is True
    assert compare("not_exists", items, None) is False


@PROPERTY
@given(st.sampled_from(OPS), SCALARS)
def test_absent_and_null(op: Op, expected: Scalar) -> None:
    value: Value = (expected,) if op == "in" else expected
    assert compare(op, MISSING, value) is (op in ("ne", "not_exists"))
    assert compare(op, None, value) is (op in ("ne", "exists"))


@settings(max_examples=500, deadline=None)
@given(
    pools.compares(st.just("k"), st.sampled_from(pools.TEXT_POOL) | st.text(max_size=4), True),
    st.data(),
)
def test_prepared_compares_as_compare_does(condition: Compare, data: st.DataObject) -> None:
    """What compiled criteria run is :func:`compare` with its expected value fixed, for
    any value, and for the expected value itself (or one of its options), also as text."""
    expected = condition.value
    near = [*expected] if isinstance(expected, tuple) else [expected]
    actual = data.draw(
        st.one_of(
            st.just(MISSING),
            st.none(),
            pools.attribute_values(),
            st.sampled_from(pools.NUMBER_POOL).map(str),
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(-(2**70), 2**70),
            st.sampled_from(near),
            st.sampled_from(near).map(str),
        )
    )
    got = prepared(condition.op, expected)(actual)
    assert got == compare(condition.op, actual, expected)
