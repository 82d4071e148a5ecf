"""Hypothesis strategies of valid audience definitions, for the parser's tests and others.

:func:`definitions` draws whole definitions, :func:`criteria` criteria trees. By default
values come from small pools (the module constants below), so that random histories drawn
from the same pools match them often; ``wide=True`` draws from every valid value instead
(every event type, any text, any number), which is what the parser's round trips need.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from hypothesis import strategies as st

from patchbay.collect.events import EVENT_TYPES
from patchbay.resolve.identities import ALL_IDENTITY_TYPES
from patchbay.segment import criteria as c
from patchbay.segment.parse import (
    ACTIONS,
    CUSTOM_EVENT_TYPES,
    ENVIRONMENTS,
    MAX_COUNT,
    MAX_INPUT_NAME,
    MAX_WINDOW_MS,
    NAMED_EVENT_TYPES,
    NO_VALUE_OPS,
    ORDER_OPS,
    TEXT_OPS,
)

#: Valid audience names (NAME_PATTERN of patchbay.activate.outputs).
VALID_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

#: Event types events are drawn from (named, commerce and plain ones).
EVENT_TYPE_POOL: tuple[str, ...] = (
    "custom_event",
    "screen_view",
    "commerce_event",
    "session_start",
)
#: Custom event names and screen names.
EVENT_NAME_POOL: tuple[str, ...] = ("play", "search", "home")
CUSTOM_EVENT_TYPE_POOL: tuple[str, ...] = ("navigation", "other")
#: Commerce actions (product actions and the promotion action ``view``).
ACTION_POOL: tuple[str, ...] = ("add_to_cart", "purchase", "view")
#: Keys of user attributes and of event custom attributes.
ATTRIBUTE_KEY_POOL: tuple[str, ...] = ("plan", "age", "country", "since")
#: Text values of attributes (``"7"`` is a number written as text).
TEXT_POOL: tuple[str, ...] = ("gold", "DE", "FR", "7", "")
#: Numeric values of attributes and thresholds.
NUMBER_POOL: tuple[int | float, ...] = (0, 1, 7, 2.5, -3)
#: ISO-8601 dates and date-times.
DATE_POOL: tuple[str, ...] = ("2024-01-01", "2024-06-30T12:00:00Z", "2025-01-01T00:00:00+02:00")
#: Identity types (canonical) and their values.
IDENTITY_TYPE_POOL: tuple[str, ...] = ("email", "customer_id", "ios_advertising_id")
IDENTITY_VALUE_POOL: tuple[str, ...] = ("a@example.com", "b@example.com", "c1", "ABC-123")
GDPR_PURPOSE_POOL: tuple[str, ...] = ("marketing", "analytics")
INPUT_POOL: tuple[str, ...] = ("web", "ios")
#: Names of audiences, referred to by ``{"audience": NAME}``.
AUDIENCE_NAME_POOL: tuple[str, ...] = ("a", "b", "c")
#: ``within`` windows: 45 s, 15 min, 2 h, 30 days.
WINDOW_POOL: tuple[int, ...] = (45_000, 900_000, 7_200_000, 2_592_000_000)
#: ``sum`` measures (``revenue`` only on commerce events).
SUM_OF_POOL: tuple[str, ...] = ("attribute:amount", "attribute:age")


def _texts(wide: bool, pool: Sequence[str], min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=12) if wide else st.sampled_from(pool)


def _numbers(wide: bool) -> st.SearchStrategy[int | float]:
    if not wide:
        return st.sampled_from(NUMBER_POOL)
    return st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)


def _dates(wide: bool) -> st.SearchStrategy[str]:
    if not wide:
        return st.sampled_from(DATE_POOL)
    return (
        st.dates().map(lambda d: d.isoformat())
        | st.datetimes().map(lambda d: d.isoformat())
        | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    )


def _scalars(wide: bool, texts: st.SearchStrategy[str]) -> st.SearchStrategy[c.Scalar]:
    return texts | _numbers(wide) | st.booleans()


@st.composite
def compares(
    draw: st.DrawFn,
    keys: st.SearchStrategy[str],
    texts: st.SearchStrategy[str],
    wide: bool = False,
) -> c.Compare:
    """A comparison of a key drawn from ``keys`` with a value fit for its operator."""
    key = draw(keys)
    op = draw(st.sampled_from(c.OPS))
    value: c.Value
    if op in NO_VALUE_OPS:
        value = None
    elif op == "in":
        value = tuple(draw(st.lists(_scalars(wide, texts), min_size=1, max_size=4)))
    elif op in TEXT_OPS:
        value = draw(texts)
    elif op in ORDER_OPS:
        value = draw(_numbers(wide) | _dates(wide))
    else:
        value = draw(_scalars(wide, texts))
    return c.Compare(key, op, value)


@st.composite
def event_conditions(draw: st.DrawFn, wide: bool = False) -> c.EventCondition:
    """An event condition: any event type, optional name, custom event type, action and
    attribute conditions where they apply, a count or a sum, a window or none."""
    texts = _texts(wide, TEXT_POOL)
    event_type = draw(st.sampled_from(EVENT_TYPES if wide else EVENT_TYPE_POOL))
    name = custom_event_type = action = None
    if event_type in NAMED_EVENT_TYPES:
        name = draw(st.none() | _texts(wide, EVENT_NAME_POOL, min_size=1))
    if event_type == "custom_event":
        pool = CUSTOM_EVENT_TYPES if wide else CUSTOM_EVENT_TYPE_POOL
        custom_event_type = draw(st.none() | st.sampled_from(pool))
    if event_type == "commerce_event":
        action = draw(st.none() | st.sampled_from(ACTIONS if wide else ACTION_POOL))
    keys = _texts(wide, ATTRIBUTE_KEY_POOL, min_size=1)
    attributes = tuple(draw(st.lists(compares(keys, texts, wide), max_size=2)))
    match = c.EventMatch(event_type, name, custom_event_type, action, attributes)
    if wide:
        seconds = st.integers(1, MAX_WINDOW_MS // 1000).map(lambda s: s * 1000)
        in_units = st.builds(
            lambda n, unit: n * unit,
            st.integers(1, 400),
            st.sampled_from((1000, 60_000, 3_600_000, 86_400_000)),
        ).filter(lambda ms: ms <= MAX_WINDOW_MS)
        window = draw(st.none() | seconds | in_units)
    else:
        window = draw(st.none() | st.sampled_from(WINDOW_POOL))
    if draw(st.booleans()):
        of_pool = (*SUM_OF_POOL, "revenue") if event_type == "commerce_event" else SUM_OF_POOL
        of = draw(st.sampled_from(of_pool))
        if wide and of != "revenue":
            of = "attribute:" + draw(st.text(min_size=1, max_size=8))
        value = float(draw(_numbers(wide)))
        return c.EventCondition(
            match, window, sum=c.Sum(of, draw(st.sampled_from(c.SUM_OPS)), value)
        )
    top = MAX_COUNT if wide else 3
    low = draw(st.integers(0, top))
    high = draw(st.none() | st.integers(low, top))
    return c.EventCondition(match, window, count=c.Count(low, high))


def _purposes(wide: bool) -> st.SearchStrategy[str]:
    if not wide:
        return st.sampled_from(GDPR_PURPOSE_POOL)
    return st.text(min_size=1, max_size=10).map(str.lower).filter(lambda p: p == p.lower())


def leaves(
    audience_names: Sequence[str] = AUDIENCE_NAME_POOL, wide: bool = False
) -> st.SearchStrategy[c.Node]:
    """Criteria that are not groups; ``{"audience": NAME}`` only with ``audience_names``."""
    texts = _texts(wide, TEXT_POOL)
    attribute_keys = _texts(wide, ATTRIBUTE_KEY_POOL, min_size=1)
    identity_types = st.sampled_from(ALL_IDENTITY_TYPES if wide else IDENTITY_TYPE_POOL)
    identity_values = _texts(wide, IDENTITY_VALUE_POOL)
    kinds: list[st.SearchStrategy[c.Node]] = [
        event_conditions(wide),
        compares(attribute_keys, texts, wide).map(c.UserAttribute),
        compares(identity_types, identity_values, wide).map(c.IdentityCondition),
        st.builds(c.Consent, st.just("gdpr"), _purposes(wide), st.booleans()),
        st.builds(c.Consent, st.just("ccpa"), st.just("data_sale_opt_out"), st.booleans()),
        _texts(wide, INPUT_POOL, min_size=1)
        .filter(lambda n: len(n) <= MAX_INPUT_NAME)
        .map(c.InputSeen),
        st.sampled_from(ENVIRONMENTS).map(c.EnvironmentSeen),
    ]
    if audience_names:
        kinds.append(st.sampled_from(tuple(audience_names)).map(c.AudienceRef))
    return st.one_of(kinds)


def criteria(
    audience_names: Sequence[str] = AUDIENCE_NAME_POOL, wide: bool = False, max_leaves: int = 8
) -> st.SearchStrategy[c.Node]:
    """Criteria trees: leaves under ``all``, ``any`` and ``not`` groups, nested."""

    def groups(children: st.SearchStrategy[c.Node]) -> st.SearchStrategy[c.Node]:
        lists = st.lists(children, max_size=3).map(tuple)
        return st.one_of(lists.map(c.All), lists.map(c.AnyOf), children.map(c.Not))

    return st.recursive(leaves(audience_names, wide), groups, max_leaves=max_leaves)


def definitions(
    audience_names: Sequence[str] = AUDIENCE_NAME_POOL,
    *,
    names: st.SearchStrategy[str] | None = None,
    wide: bool = False,
    max_leaves: int = 8,
) -> st.SearchStrategy[c.Definition]:
    """Valid definitions. ``audience_names``: the audiences the criteria may refer to (none
    when empty); ``names``: the definition's own name (default: from the pool of audience
    names, or any valid name when ``wide``)."""
    if names is None:
        names = (
            st.from_regex(VALID_NAME, fullmatch=True)
            if wide
            else st.sampled_from(AUDIENCE_NAME_POOL)
        )
    descriptions = st.text(max_size=20) if wide else st.sampled_from(("", "a test audience"))
    return st.builds(c.Definition, names, descriptions, criteria(audience_names, wide, max_leaves))


def attribute_values() -> st.SearchStrategy[Any]:
    """User attribute values: scalars of every kind the pools compare, and lists."""
    scalar = (
        st.sampled_from(TEXT_POOL)
        | st.sampled_from(NUMBER_POOL)
        | st.sampled_from(DATE_POOL)
        | st.booleans()
    )
    return scalar | st.lists(st.sampled_from(TEXT_POOL), max_size=2)


@st.composite
def events(draw: st.DrawFn, base_ms: int) -> dict[str, Any]:
    """An event of a type, name, action and attributes the pools' criteria look for (as
    JSON), its time, when it has one, within an hour of ``base_ms``."""
    event_type = draw(st.sampled_from((*EVENT_TYPE_POOL, "session_end")))
    data: dict[str, Any] = {}
    if draw(st.booleans()):
        # event times around now: in the past, and a little in the future; half an hour
        # apart, or seconds apart (so that a window's events leave it one by one)
        offset = st.integers(-2, 2).map(lambda k: k * 1_800_000) | st.integers(-60, 60).map(
            lambda s: s * 1_000
        )
        data["timestamp_unixtime_ms"] = base_ms + draw(offset)
    attributes = draw(
        st.dictionaries(
            st.sampled_from((*ATTRIBUTE_KEY_POOL, "amount")),
            st.sampled_from(TEXT_POOL) | st.sampled_from(NUMBER_POOL),
            max_size=2,
        )
    )
    if attributes:
        data["custom_attributes"] = attributes
    if event_type == "custom_event":
        data["event_name"] = draw(st.sampled_from(EVENT_NAME_POOL))
        data["custom_event_type"] = draw(st.sampled_from(CUSTOM_EVENT_TYPE_POOL))
    elif event_type == "screen_view":
        data["screen_name"] = draw(st.sampled_from(EVENT_NAME_POOL))
    elif event_type == "commerce_event":
        action = draw(st.sampled_from(ACTION_POOL))
        if action == "view":
            data["promotion_action"] = {"action": "view"}
        else:
            data["product_action"] = {
                "action": action,
                "total_amount": draw(st.sampled_from([1, 7, 10])),
            }
    return {"event_type": event_type, "data": data}
