"""Evaluating criteria: pure functions over what is known of one user.

:func:`holds` evaluates a criteria tree over a :class:`Facts` view of a user (the engine
builds it from stored tallies, a from-scratch evaluation from the whole history: both use
the functions here, so they can only differ in what they count). :func:`compare` is the
one definition of every operator; :func:`event_matches`, :func:`measured` and
:func:`event_time` say which events an event condition counts, what each adds and when it
happened.

How values compare: numbers as numbers (numeric strings included), ISO-8601 dates as
dates, anything else as text; a list attribute matches when any element does; ``ne`` is
the negation of ``eq`` (so it holds when the attribute is absent) and every other operator
except ``not_exists`` is false for an absent attribute.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, Protocol

from patchbay.collect.events import (
    PRODUCT_ACTION_ALIASES,
    CommerceEvent,
    Event,
    event_name_of,
    event_type_of,
)
from patchbay.resolve.profile import Profile
from patchbay.segment.criteria import (
    All,
    AnyOf,
    AudienceRef,
    Consent,
    EnvironmentSeen,
    EventCondition,
    EventMatch,
    IdentityCondition,
    InputSeen,
    Node,
    Not,
    Op,
    Scalar,
    UserAttribute,
    Value,
)


class _Missing:
    """The value of an attribute a user does not have."""

    def __repr__(self) -> str:
        return "MISSING"


#: An absent attribute (distinct from one present with a ``null`` value).
MISSING: Final = _Missing()


class Facts(Protocol):
    """What criteria can ask about one user at one moment."""

    def events(self, condition: EventCondition) -> tuple[int, float]:
        """How many events match ``condition`` inside its window, and the sum of their
        measured values."""
        ...

    def attribute(self, key: str) -> object:
        """The user attribute ``key`` (:data:`MISSING` when absent)."""
        ...

    def identities(self, identity_type: str) -> Sequence[str]:
        """The values of one identity type the user has (user and device identities)."""
        ...

    def consent(self, regulation: str, purpose: str) -> bool | None:
        """The user's latest decision for a consent purpose (``None``: none)."""
        ...

    def seen_input(self, name: str) -> bool:
        """Whether the user was seen on the input named ``name``."""
        ...

    def seen_environment(self, environment: str) -> bool:
        """Whether the user was seen in ``environment``."""
        ...

    def member(self, audience: str) -> bool:
        """Whether the user is a member of the audience named ``audience``."""
        ...


class ProfileFacts:
    """The facts a profile answers (user attributes, identities, consent): the part of
    :class:`Facts` every implementation shares."""

    def __init__(self, profile: Profile | None) -> None:
        self._profile = profile

    def attribute(self, key: str) -> object:
        """The user attribute ``key`` (:data:`MISSING` when absent)."""
        if self._profile is None:
            return MISSING
        return self._profile.user_attributes.get(key, MISSING)

    def identities(self, identity_type: str) -> list[str]:
        """The values of one identity type the user has."""
        if self._profile is None:
            return []
        return [r.value for r in self._profile.identities if r.type == identity_type]

    def consent(self, regulation: str, purpose: str) -> bool | None:
        """The user's latest decision for a consent purpose (``None``: none)."""
        if self._profile is None:
            return None
        decisions = self._profile.gdpr if regulation == "gdpr" else self._profile.ccpa
        found = decisions.get(purpose)
        return found.consented if found is not None else None


def holds(node: Node, facts: Facts) -> bool:
    """Whether ``node`` holds for the user ``facts`` describe."""
    match node:
        case All(nodes):
            return all(holds(n, facts) for n in nodes)
        case AnyOf(nodes):
            return any(holds(n, facts) for n in nodes)
        case Not(child):
            return not holds(child, facts)
        case EventCondition():
            count, total = facts.events(node)
            return counted(node, count, total)
        case UserAttribute(compare=c):
            return compare(c.op, facts.attribute(c.key), c.value)
        case IdentityCondition(compare=c):
            values = facts.identities(c.key)
            return compare(c.op, list(values) if values else MISSING, c.value)
        case AudienceRef(name):
            return facts.member(name)
        case Consent(regulation=regulation, purpose=purpose, consented=consented):
            return facts.consent(regulation, purpose) is consented
        case InputSeen(name):
            return facts.seen_input(name)
        case EnvironmentSeen(environment):
            return facts.seen_environment(environment)
    raise TypeError(f"not a criteria node: {node!r}")  # pragma: no cover


def counted(condition: EventCondition, count: int, total: float) -> bool:
    """Whether ``count`` matching events summing to ``total`` satisfy ``condition``."""
    if condition.sum is not None:
        return compare(condition.sum.op, total, condition.sum.value)
    bounds = condition.count
    low = bounds.min if bounds is not None else 1
    high = bounds.max if bounds is not None else None
    return count >= low and (high is None or count <= high)


# -- operators -------------------------------------------------------------------------


def compare(op: Op, actual: object, expected: Value) -> bool:
    """Whether ``actual`` (a user or event attribute, :data:`MISSING` when absent)
    satisfies ``op`` with ``expected``."""
    if op == "exists":
        return actual is not MISSING
    if op == "not_exists":
        return actual is MISSING
    if op == "ne":
        return not compare("eq", actual, expected)
    if actual is MISSING or actual is None:
        return False
    if isinstance(actual, list | tuple):
        return any(_compare_one(op, item, expected) for item in actual if item is not None)
    return _compare_one(op, actual, expected)


def _compare_one(op: Op, actual: object, expected: Value) -> bool:
    if op == "in":
        options = expected if isinstance(expected, tuple) else (expected,)
        return any(_equal(actual, option) for option in options if option is not None)
    if expected is None or isinstance(expected, tuple):
        return False
    if op == "eq":
        return _equal(actual, expected)
    if op == "contains":
        return _text(expected) in _text(actual)
    if op == "starts_with":
        return _text(actual).startswith(_text(expected))
    return _order(op, actual, expected)


def _equal(actual: object, expected: Scalar) -> bool:
    a, e = number(actual), number(expected)
    if a is not None and e is not None:
        return a == e
    da, de = date(actual), date(expected)
    if da is not None and de is not None:
        return da == de
    return _text(actual) == _text(expected)


def _order(op: Op, actual: object, expected: Scalar) -> bool:
    left: Any
    right: Any
    a, e = number(actual), number(expected)
    if a is not None and e is not None:
        left, right = a, e
    else:
        da, de = date(actual), date(expected)
        if da is None or de is None:
            return False
        left, right = da, de
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    if op == "lte":
        return bool(left <= right)
    return False


def prepared(op: Op, expected: Value) -> Callable[[object], bool]:
    """``compare(op, actual, expected)`` as a function of ``actual`` alone, with what
    depends on ``expected`` (its number, date and text) worked out once: what compiled
    criteria run."""
    if op == "exists":
        return lambda actual: actual is not MISSING
    if op == "not_exists":
        return lambda actual: actual is MISSING
    if op == "ne":
        equal = prepared("eq", expected)
        return lambda actual: not equal(actual)
    one = _prepared_one(op, expected)

    def test(actual: object) -> bool:
        if actual is MISSING or actual is None:
            return False
        if isinstance(actual, list | tuple):
            return any(one(item) for item in actual if item is not None)
        return one(actual)

    return test


def _prepared_one(op: Op, expected: Value) -> Callable[[object], bool]:
    if op == "in":
        options = expected if isinstance(expected, tuple) else (expected,)
        tests = tuple(_prepared_equal(option) for option in options if option is not None)
        return lambda actual: any(t(actual) for t in tests)
    if expected is None or isinstance(expected, tuple):
        return lambda actual: False
    if op == "eq":
        return _prepared_equal(expected)
    text = _text(expected)
    if op == "contains":
        return lambda actual: text in _text(actual)
    if op == "starts_with":
        return lambda actual: _text(actual).startswith(text)
    return _prepared_order(op, expected)


def _prepared_equal(expected: Scalar) -> Callable[[object], bool]:
    """:func:`_equal` with ``expected`` fixed."""
    number_, date_, text = number(expected), date(expected), _text(expected)

    def equal(actual: object) -> bool:
        if number_ is not None:
            a = number(actual)
            if a is not None:
                return a == number_
        if date_ is not None:
            da = date(actual)
            if da is not None:
                return da == date_
        return _text(actual) == text

    return equal


_ORDERS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _prepared_order(op: Op, expected: Scalar) -> Callable[[object], bool]:
    """:func:`_order` with ``expected`` fixed."""
    before = _ORDERS.get(op)
    if before is None:
        return lambda actual: False
    number_, date_ = number(expected), date(expected)

    def order(actual: object) -> bool:
        if number_ is not None:
            a = number(actual)
            if a is not None:
                return bool(before(a, number_))
        if date_ is None:
            return False
        da = date(actual)
        return da is not None and bool(before(da, date_))

    return order


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def number(value: object) -> int | float | None:
    """``value`` as a finite number (numbers and numeric strings; not booleans). Integers
    stay integers, so long ids written as numbers compare exactly (Python compares an int
    with a float exactly too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _parse_number(value)
    return None


@lru_cache(maxsize=4096)
def _parse_number(text: str) -> int | float | None:
    stripped = text.strip()
    if stripped.lstrip("+-").isdigit():
        try:
            return int(stripped)
        except ValueError:  # pragma: no cover - isdigit() lets some digits int() refuses
            pass
    if not stripped or stripped.lower() in {"nan", "inf", "-inf", "+inf", "infinity"}:
        return None
    try:
        result = float(stripped)
    except ValueError:
        return None
    return result if math.isfinite(result) else None


def date(value: object) -> datetime | None:
    """``value`` as an aware datetime if it is an ISO-8601 date or date-time string (a
    date alone is midnight UTC; a time without an offset is UTC)."""
    if not isinstance(value, str):
        return None
    return _parse_date(value)


@lru_cache(maxsize=4096)
def _parse_date(text: str) -> datetime | None:
    stripped = text.strip()
    if len(stripped) < 10 or not stripped[:4].isdigit() or stripped[4] != "-":
        return None
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# -- events ----------------------------------------------------------------------------


def event_time(event: Event, received_ms: int) -> int:
    """When ``event`` happened: its ``timestamp_unixtime_ms``, else when its batch was
    received."""
    stamp = event.data.timestamp_unixtime_ms
    return stamp if stamp is not None else received_ms


def event_matches(match: EventMatch, event: Event) -> bool:
    """Whether ``event`` is of ``match``'s type and has its name, custom event type,
    action and attributes."""
    if event_type_of(event) != match.type:
        return False
    if match.name is not None and event_name(event) != match.name:
        return False
    if match.action is not None and match.action not in event_actions(event):
        return False
    return rest_matches(match, event)


def prepared_rest(match: EventMatch) -> Callable[[Event], bool] | None:
    """:func:`rest_matches` for ``match`` as a function of the event, its attribute tests
    :func:`prepared`; ``None`` when there is nothing left to test (no custom event type, no
    attributes)."""
    kind = match.custom_event_type
    tests = tuple((c.key, prepared(c.op, c.value)) for c in match.attributes)
    if kind is None and not tests:
        return None

    def rest(event: Event) -> bool:
        data = event.data
        if kind is not None and getattr(data, "custom_event_type", None) != kind:
            return False
        if tests:
            attributes = data.custom_attributes or {}
            for key, test in tests:
                if not test(attributes.get(key, MISSING)):
                    return False
        return True

    return rest


def rest_matches(match: EventMatch, event: Event) -> bool:
    """Whether ``event`` has ``match``'s custom event type and attributes (what is left to
    test of an event known to have its type, name and action)."""
    data = event.data
    if match.custom_event_type is not None:
        kind = getattr(data, "custom_event_type", None)
        if kind != match.custom_event_type:
            return False
    if match.attributes:
        attributes = data.custom_attributes or {}
        for condition in match.attributes:
            if not compare(condition.op, attributes.get(condition.key, MISSING), condition.value):
                return False
    return True


def event_name(event: Event) -> str | None:
    """The name an event condition's ``name`` matches: a custom event's name, a screen
    view's screen name, a commerce event's event name or else its screen name."""
    if isinstance(event, CommerceEvent):
        return event.data.event_name or event.data.screen_name
    return event_name_of(event)


def event_actions(event: Event) -> tuple[str, ...]:
    """A commerce event's product and promotion actions (canonical spellings)."""
    if not isinstance(event, CommerceEvent):
        return ()
    found: list[str] = []
    if event.data.product_action is not None and event.data.product_action.action:
        action = event.data.product_action.action
        found.append(PRODUCT_ACTION_ALIASES.get(action, action))
    if event.data.promotion_action is not None and event.data.promotion_action.action:
        found.append(event.data.promotion_action.action)
    return tuple(found)


def measured(measure: str | None, event: Event) -> float | None:
    """What ``event`` adds to its condition: 1 when counting (``measure`` ``None``), its
    commerce total for ``"revenue"``, the number in a custom attribute for
    ``"attribute:NAME"``; ``None`` when it has nothing to add (it then is not counted)."""
    if measure is None:
        return 1.0
    data = event.data
    if measure == "revenue":
        action = getattr(data, "product_action", None)
        return number(action.total_amount) if action is not None else None
    _, _, key = measure.partition(":")
    return number((data.custom_attributes or {}).get(key))


def in_window(time_ms: int, window_ms: int | None, now_ms: int) -> bool:
    """Whether an event at ``time_ms`` is inside a window of ``window_ms`` ending at
    ``now_ms`` (it leaves the window at ``time_ms + window_ms``; ``None``: all time)."""
    return window_ms is None or time_ms + window_ms > now_ms
