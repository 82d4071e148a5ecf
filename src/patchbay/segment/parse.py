"""Audience definitions from JSON or YAML: checked whole, refused with a JSON path and a reason.

:func:`parse_definition` turns a decoded document (JSON or YAML values: dicts, lists, strings,
numbers, booleans, ``None``) into a :class:`~patchbay.segment.criteria.Definition`;
:func:`load_definition` decodes the text first. Anything wrong raises :class:`DefinitionError`
(and nothing else does, whatever the input): ``criteria.all[1].event.type: unknown event type
'teleport'; expected one of: ...``. :func:`definition_document` is the way back: the
normalised document of a definition (defaults written out), which parses to an equal
definition. :func:`check_references` checks a set of audiences together: every audience
referred to exists, none refers to itself through others, and the order to evaluate them in.

The grammar and its limits are described in docs/audiences.md ("Defining an audience").
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final, NoReturn, get_args

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from patchbay.activate.outputs import check_name
from patchbay.collect.events import (
    EVENT_TYPES,
    PRODUCT_ACTION_ALIASES,
    CustomEventType,
    ProductActionType,
    PromotionActionType,
)
from patchbay.errors import PatchbayError
from patchbay.firehose.errors import SettingError
from patchbay.resolve.identities import canonical_type
from patchbay.segment import criteria as c

#: Deepest nesting of criteria: the ``criteria`` node is level 1.
MAX_DEPTH: Final = 32
#: Most criteria nodes (groups included) in one definition.
MAX_NODES: Final = 1000
#: Largest ``count`` bound: the engine keeps at most this many events per windowed
#: condition and user.
MAX_COUNT: Final = 1000
#: Longest ``within`` window: 400 days.
MAX_WINDOW_MS: Final = 400 * 86_400_000
#: Longest input name (as ``patchbay inputs add`` accepts them).
MAX_INPUT_NAME: Final = 200

#: The kinds of criteria, by the key that names them.
CRITERIA_KEYS: Final = (
    "all",
    "any",
    "not",
    "event",
    "user_attribute",
    "identity",
    "audience",
    "consent",
    "input",
    "environment",
)
#: The event types an event condition may match ``name`` on (the custom event name, the
#: screen name, a commerce event's event name or else its screen name).
NAMED_EVENT_TYPES: Final = ("custom_event", "screen_view", "commerce_event")
#: ``custom_event_type`` values of custom events.
CUSTOM_EVENT_TYPES: Final[tuple[str, ...]] = get_args(CustomEventType)
#: Other spellings of commerce actions, read as the canonical one.
ACTION_ALIASES: Final = PRODUCT_ACTION_ALIASES
#: Commerce actions: product actions, then the promotion actions that are not also product
#: actions. An action matches a commerce event's product action or its promotion action.
ACTIONS: Final[tuple[str, ...]] = tuple(
    a
    for a in dict.fromkeys((*get_args(ProductActionType), *get_args(PromotionActionType)))
    if a not in ACTION_ALIASES
)
ENVIRONMENTS: Final = ("production", "development")
#: Operators that order: their value is a number or an ISO-8601 date.
ORDER_OPS: Final = ("gt", "gte", "lt", "lte")
#: Operators on text: their value is a string.
TEXT_OPS: Final = ("contains", "starts_with")
#: Operators without a value.
NO_VALUE_OPS: Final = ("exists", "not_exists")
CCPA_PURPOSE: Final = "data_sale_opt_out"

_UNITS_MS: Final = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}
_DURATION: Final = re.compile(r"([0-9]{1,12})([smhd])")
_DATE_START: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT64: Final = 2**63
_LIST_AT_MOST: Final = 20  # choices listed in an error when there are at most this many


class DefinitionError(PatchbayError):
    """An audience definition that cannot be used.

    ``path`` is the JSON path of the culprit (``criteria.all[1].event.type``; empty for the
    document as a whole or its text), ``reason`` what is wrong with it. A syntax error in the
    text also has its ``line`` and ``column`` (from 1).
    """

    def __init__(
        self, path: str, reason: str, *, line: int | None = None, column: int | None = None
    ) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.path, self.reason, self.line, self.column))


def _rebuild(path: str, reason: str, line: int | None, column: int | None) -> DefinitionError:
    return DefinitionError(path, reason, line=line, column=column)


# -- paths and messages --------------------------------------------------------------------


def _key_path(path: str, key: str) -> str:
    """``path`` followed by the key ``key``: ``.key``, or ``["a key"]`` when not a name."""
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _fail(path: str, reason: str) -> NoReturn:
    raise DefinitionError(path, reason)


def _show(value: object) -> str:
    """``repr(value)``, shortened."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return "a very large integer"  # repr() refuses integers of more than 4,300 digits
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _kind(value: object) -> str:
    """What ``value`` is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _choices(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values)


def _one_of(what: str, value: str, allowed: tuple[str, ...], path: str) -> str:
    if value not in allowed:
        listed = f"; expected one of: {_choices(allowed)}" if len(allowed) <= _LIST_AT_MOST else ""
        _fail(path, f"unknown {what} {_show(value)}{listed}")
    return value


# -- reading values --------------------------------------------------------------------------


class _JSONObject(dict[str, Any]):
    """A JSON object whose text repeats keys: ``duplicates`` lists them (reported by path)."""

    duplicates: list[str]


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    result = _JSONObject(found)
    seen: set[str] = set()
    result.duplicates = []
    for key, _ in pairs:
        if key in seen:
            result.duplicates.append(key)
        seen.add(key)
    return result


def _object(value: object, path: str, what: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """``value`` if it is an object whose keys are all in ``allowed``."""
    if not isinstance(value, dict):
        _fail(path, f"expected {what}, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            _fail(path, f"keys must be strings, not {_kind(key)} ({_show(key)})")
    if isinstance(value, _JSONObject) and value.duplicates:
        _fail(_key_path(path, value.duplicates[0]), "duplicate key")
    for key in value:
        if key not in allowed:
            _fail(
                _key_path(path, key),
                f"unknown key {_show(key)}; expected one of: {_choices(allowed)}",
            )
    return value


def _required(obj: dict[str, Any], path: str, key: str) -> Any:
    if key not in obj:
        _fail(path, f"missing key {key!r}")
    return obj[key]


def _string(value: object, path: str, what: str = "a string") -> str:
    if not isinstance(value, str):
        _fail(path, f"expected {what}, got {_kind(value)}")
    return _unicode(value, path)


def _unicode(text: str, path: str) -> str:
    """``text`` if it is valid Unicode: JSON's ``"\\ud800"`` escapes decode to lone
    surrogates, which no UTF-8 encoder (the store's included) accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        _fail(
            path, f"invalid text: a lone surrogate ({text[exc.start]!r}) at character {exc.start}"
        )
    return text


def _text(value: object, path: str, what: str) -> str:
    """A non-empty string."""
    text = _string(value, path, what)
    if not text:
        _fail(path, f"expected {what}, got an empty string")
    return text


def _boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        _fail(path, f"expected true or false, got {_kind(value)}")
    return value


def _name(value: object, path: str, what: str) -> str:
    """A name as outputs have them (:func:`patchbay.activate.outputs.check_name`)."""
    name = _string(value, path, f"{what} (a string)")
    try:
        check_name(name)
    except SettingError as exc:
        _fail(path, str(exc))
    if name.endswith("\n"):  # check_name's pattern ends in `$`, which lets a final newline by
        _fail(path, f"invalid name {name!r}: letters, digits, '_', '.' and '-' (at most 64)")
    return name


def _number(value: object, path: str) -> int | float | None:
    """``value`` if it is a usable number, ``None`` if it is not a number at all."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            _fail(path, "integer out of range (at most 64 bits, signed)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(path, "expected a finite number")
        return value
    return None


def _plain(value: object) -> object:
    """A date or datetime (a YAML timestamp read by a plain ``yaml.safe_load``) as its
    ISO-8601 string; anything else as it is."""
    if isinstance(value, dt.date):  # datetime is a date too
        return value.isoformat()
    return value


def _scalar(value: object, path: str) -> c.Scalar:
    value = _plain(value)
    if isinstance(value, str):
        return _unicode(value, path)
    if isinstance(value, bool):
        return value
    number = _number(value, path)
    if number is None:
        _fail(path, f"expected a string, a number or a boolean, got {_kind(value)}")
    return number


def is_iso_date(text: str) -> bool:
    """Whether ``text`` is an ISO-8601 date or date-time (``YYYY-MM-DD`` first)."""
    if not _DATE_START.match(text):
        return False
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _value(op: c.Op, obj: dict[str, Any], path: str) -> c.Value:
    """The ``value`` of a comparison with ``op``, checked for the operator."""
    value_path = _key_path(path, "value")
    if op in NO_VALUE_OPS:
        if "value" in obj:
            _fail(value_path, f"{op} takes no value")
        return None
    if "value" not in obj:
        _fail(path, f"missing key 'value' (the operator {op} compares with a value)")
    value = _plain(obj["value"])
    if op == "in":
        if not isinstance(value, list):
            _fail(value_path, f"in takes a non-empty list of values, got {_kind(value)}")
        if not value:
            _fail(value_path, "in takes a non-empty list of values, got an empty list")
        return tuple(_scalar(item, f"{value_path}[{i}]") for i, item in enumerate(value))
    if op in TEXT_OPS:
        return _string(value, value_path, f"a string for {op}")
    if op in ORDER_OPS:
        number = _number(value, value_path)
        if number is not None:
            return number
        if isinstance(value, str):
            if is_iso_date(value):
                return value
            _fail(value_path, f"{op} takes a number or an ISO-8601 date, not {_show(value)}")
        _fail(value_path, f"{op} takes a number or an ISO-8601 date, got {_kind(value)}")
    return _scalar(value, value_path)


def _op(value: object, path: str, allowed: tuple[c.Op, ...], what: str = "operator") -> c.Op:
    op = _string(value, path, f"{'an' if what[0] in 'aeiou' else 'a'} {what} (a string)")
    for known in allowed:
        if op == known:
            return known
    _fail(path, f"unknown {what} {_show(op)}; expected one of: {_choices(allowed)}")


def _duration(value: object, path: str) -> int:
    """A ``within`` duration in milliseconds."""
    example = "a duration such as '45s', '15m', '2h' or '30d'"
    text = _string(value, path, example)
    found = _DURATION.fullmatch(text)
    if found is None:
        _fail(
            path,
            f"expected {example} (a positive whole number and s, m, h or d), not {_show(text)}",
        )
    amount = int(found.group(1))
    if amount == 0:
        _fail(path, "a window must be longer than 0")
    window_ms = amount * _UNITS_MS[found.group(2)]
    if window_ms > MAX_WINDOW_MS:
        _fail(path, f"a window is at most 400 days ('400d'), not {text!r}")
    return window_ms


def duration_text(window_ms: int) -> str:
    """The shortest ``within`` text of a window: ``7200000`` -> ``"2h"``."""
    for unit, size in _UNITS_MS.items():
        if window_ms % size == 0:
            return f"{window_ms // size}{unit}"
    raise ValueError(f"a window is a whole number of seconds, not {window_ms} ms")


# -- the parser ------------------------------------------------------------------------------


class _Parser:
    """One definition's reading: counts its nodes."""

    def __init__(self) -> None:
        self.nodes = 0

    def definition(self, document: object) -> c.Definition:
        obj = _object(
            document, "", "an audience definition (an object)", ("name", "description", "criteria")
        )
        name = _name(_required(obj, "", "name"), "name", "an audience name")
        description = _string(obj.get("description", ""), "description")
        criteria = self.node(_required(obj, "", "criteria"), "criteria", 1)
        return c.Definition(name, description, criteria)

    def node(self, value: object, path: str, depth: int) -> c.Node:
        if depth > MAX_DEPTH:
            _fail(path, f"criteria are nested more than {MAX_DEPTH} levels deep")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            _fail(path, f"a definition has at most {MAX_NODES:,} criteria (groups included)")
        if not isinstance(value, dict):
            _fail(path, f"expected a criterion (an object), got {_kind(value)}")
        kinds = [k for k in CRITERIA_KEYS if k in value]
        if not kinds:
            _object(value, path, "a criterion (an object)", CRITERIA_KEYS)
            _fail(path, f"expected a criterion: an object with one of {_choices(CRITERIA_KEYS)}")
        if len(kinds) > 1:
            _fail(path, f"a criterion has one kind, not both {kinds[0]!r} and {kinds[1]!r}")
        kind = kinds[0]
        inner = _key_path(path, kind)
        match kind:
            case "all" | "any":
                _object(value, path, "a group", (kind,))
                items = value[kind]
                if not isinstance(items, list):
                    _fail(inner, f"expected a list of criteria, got {_kind(items)}")
                nodes = tuple(
                    self.node(item, f"{inner}[{i}]", depth + 1) for i, item in enumerate(items)
                )
                return c.All(nodes) if kind == "all" else c.AnyOf(nodes)
            case "not":
                _object(value, path, "a group", ("not",))
                return c.Not(self.node(value["not"], inner, depth + 1))
            case "event":
                return self.event(value, path)
            case "user_attribute":
                return c.UserAttribute(self.compare(value, path, "user_attribute"))
            case "identity":
                return c.IdentityCondition(self.compare(value, path, "identity"))
            case "audience":
                _object(value, path, "an audience condition", ("audience",))
                return c.AudienceRef(_name(value["audience"], inner, "an audience name"))
            case "consent":
                _object(value, path, "a consent condition", ("consent",))
                return self.consent(value["consent"], inner)
            case "input":
                _object(value, path, "an input condition", ("input",))
                name = _text(value["input"], inner, "an input name")
                if len(name) > MAX_INPUT_NAME:
                    _fail(inner, f"an input name has at most {MAX_INPUT_NAME} characters")
                return c.InputSeen(name)
            case _:
                _object(value, path, "an environment condition", ("environment",))
                environment = _string(value["environment"], inner, "production or development")
                return c.EnvironmentSeen(_one_of("environment", environment, ENVIRONMENTS, inner))

    def compare(self, obj: dict[str, Any], path: str, key_name: str) -> c.Compare:
        """``{KEY_NAME: KEY, "op": OP, "value": V}``."""
        _object(obj, path, "a condition", (key_name, "op", "value"))
        key_path = _key_path(path, key_name)
        key: str
        if key_name == "identity":
            spelled = _string(obj[key_name], key_path, "an identity type (a string)")
            canonical = canonical_type(spelled)
            if canonical is None:
                _fail(
                    key_path,
                    f"unknown identity type {_show(spelled)}; expected a user identity type"
                    " (customer_id, email, mobile_number, other, other_id_2...) or a device"
                    " identity type (ios_advertising_id, android_advertising_id, push_token...)",
                )
            key = canonical
        else:
            what = "an event attribute name" if key_name == "attribute" else "an attribute name"
            key = _text(obj[key_name], key_path, what)
        op = _op(_required(obj, path, "op"), _key_path(path, "op"), c.OPS)
        return c.Compare(key, op, _value(op, obj, path))

    def event(self, obj: dict[str, Any], path: str) -> c.EventCondition:
        _object(obj, path, "an event condition", ("event", "count", "sum", "within"))
        match = self.match(obj["event"], _key_path(path, "event"))
        if "count" in obj and "sum" in obj:
            _fail(path, "an event condition has a count or a sum, not both")
        count: c.Count | None = None
        total: c.Sum | None = None
        if "sum" in obj:
            total = self.sum(obj["sum"], _key_path(path, "sum"), match)
        elif "count" in obj:
            count = self.count(obj["count"], _key_path(path, "count"))
        else:
            count = c.Count()
        window = _duration(obj["within"], _key_path(path, "within")) if "within" in obj else None
        return c.EventCondition(match, window, count, total)

    def match(self, value: object, path: str) -> c.EventMatch:
        allowed = ("type", "name", "custom_event_type", "action", "attributes")
        obj = _object(value, path, "the events to match (an object)", allowed)
        type_path = _key_path(path, "type")
        event_type = _string(_required(obj, path, "type"), type_path, "an event type (a string)")
        _one_of("event type", event_type, EVENT_TYPES, type_path)
        name: str | None = None
        if "name" in obj:
            name_path = _key_path(path, "name")
            if event_type not in NAMED_EVENT_TYPES:
                _fail(name_path, f"name applies to {_choices(NAMED_EVENT_TYPES)} events only")
            name = _text(obj["name"], name_path, "an event or screen name")
        custom_event_type: str | None = None
        if "custom_event_type" in obj:
            kind_path = _key_path(path, "custom_event_type")
            if event_type != "custom_event":
                _fail(kind_path, "custom_event_type applies to custom_event events only")
            kind = _string(obj["custom_event_type"], kind_path, "a custom event type (a string)")
            custom_event_type = _one_of("custom event type", kind, CUSTOM_EVENT_TYPES, kind_path)
        action: str | None = None
        if "action" in obj:
            action_path = _key_path(path, "action")
            if event_type != "commerce_event":
                _fail(action_path, "action applies to commerce_event events only")
            given = _string(obj["action"], action_path, "a commerce action (a string)")
            action = _one_of(
                "commerce action", ACTION_ALIASES.get(given, given), ACTIONS, action_path
            )
        attributes: tuple[c.Compare, ...] = ()
        if "attributes" in obj:
            list_path = _key_path(path, "attributes")
            items = obj["attributes"]
            if not isinstance(items, list):
                _fail(list_path, f"expected a list of attribute conditions, got {_kind(items)}")
            found: list[c.Compare] = []
            for i, item in enumerate(items):
                item_path = f"{list_path}[{i}]"
                condition = _object(
                    item,
                    item_path,
                    "an attribute condition (an object)",
                    ("attribute", "op", "value"),
                )
                _required(condition, item_path, "attribute")
                found.append(self.compare(condition, item_path, "attribute"))
            attributes = tuple(found)
        return c.EventMatch(event_type, name, custom_event_type, action, attributes)

    def count(self, value: object, path: str) -> c.Count:
        obj = _object(value, path, "a count (an object with min and/or max)", ("min", "max"))
        if not obj:
            _fail(path, "a count has min, max or both")
        bounds: dict[str, int] = {}
        for key in ("min", "max"):
            if key in obj:
                bound, bound_path = obj[key], _key_path(path, key)
                if isinstance(bound, bool) or not isinstance(bound, int):
                    _fail(bound_path, f"expected a whole number, got {_kind(bound)}")
                if not 0 <= bound <= MAX_COUNT:
                    _fail(
                        bound_path,
                        f"expected a whole number from 0 to {MAX_COUNT:,}, not {_show(bound)}",
                    )
                bounds[key] = bound
        high = bounds.get("max")
        low = bounds.get("min", 0 if high is not None else 1)
        if high is not None and low > high:
            _fail(path, f"min ({low}) is greater than max ({high})")
        return c.Count(low, high)

    def sum(self, value: object, path: str, match: c.EventMatch) -> c.Sum:
        obj = _object(value, path, "a sum (an object with of, op and value)", ("of", "op", "value"))
        of_path = _key_path(path, "of")
        of = _string(_required(obj, path, "of"), of_path, "'revenue' or 'attribute:NAME'")
        if of == "revenue":
            if match.type != "commerce_event":
                _fail(of_path, "revenue is summed over commerce_event events only")
        elif not (of.startswith("attribute:") and len(of) > len("attribute:")):
            _fail(of_path, f"expected 'revenue' or 'attribute:NAME', not {_show(of)}")
        op = _op(_required(obj, path, "op"), _key_path(path, "op"), c.SUM_OPS, "sum operator")
        value_path = _key_path(path, "value")
        number = _number(_required(obj, path, "value"), value_path)
        if number is None:
            _fail(value_path, f"expected a number, got {_kind(obj['value'])}")
        return c.Sum(of, op, float(number))

    def consent(self, value: object, path: str) -> c.Consent:
        obj = _object(value, path, "a consent (an object)", ("gdpr", "ccpa", "consented"))
        if "gdpr" in obj and "ccpa" in obj:
            _fail(path, "a consent condition is about gdpr or ccpa, not both")
        if "ccpa" in obj:
            if "consented" in obj:
                _fail(
                    _key_path(path, "consented"),
                    "consented goes with gdpr; for ccpa the value of ccpa is the decision",
                )
            consented = _boolean(obj["ccpa"], _key_path(path, "ccpa"))
            return c.Consent("ccpa", CCPA_PURPOSE, consented)
        if "gdpr" not in obj:
            _fail(path, "expected 'gdpr' (with a purpose) or 'ccpa'")
        purpose = _text(obj["gdpr"], _key_path(path, "gdpr"), "a GDPR purpose")
        consented = True
        if "consented" in obj:
            consented = _boolean(obj["consented"], _key_path(path, "consented"))
        return c.Consent("gdpr", purpose.lower(), consented)


def parse_definition(document: object) -> c.Definition:
    """The definition a decoded JSON or YAML document describes.

    Raises :class:`DefinitionError` (and nothing else) when it is not a valid definition.
    """
    try:
        return _Parser().definition(document)
    except RecursionError:  # a self-referencing structure built in Python: not from text
        raise DefinitionError("", "the document is nested too deeply") from None


# -- text --------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with JSON's implicit types (YAML 1.2's core schema, restricted
    to what YAML 1.1 dumpers quote): ``true``/``false`` are the booleans (``yes``, ``no``,
    ``on``, ``off`` stay text), numbers are written as in JSON, and an unquoted date stays
    the text it is written as. A value of an explicit ``!!timestamp`` is its text too."""

    yaml_implicit_resolvers: dict[Any, Any] = {}

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise ConstructorError(
                None, None, f"cannot read a value tagged {node.tag}: {exc}", node.start_mark
            ) from None


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?|\.[0-9]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _timestamp_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_text)

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


def _check_yaml_keys(root: Node) -> None:
    """Refuse a mapping that repeats a key (PyYAML keeps the last one silently)."""
    seen_nodes: set[int] = set()
    pending: list[Node] = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            keys: set[tuple[str, str]] = set()
            for key_node, value_node in node.value:
                pending.extend((key_node, value_node))
                if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                    key = (key_node.tag, key_node.value)
                    if key in keys:
                        raise ConstructorError(
                            "while reading a mapping",
                            node.start_mark,
                            f"found the key {key_node.value!r} twice",
                            key_node.start_mark,
                        )
                    keys.add(key)
        elif isinstance(node, SequenceNode):
            pending.extend(node.value)


#: What reading YAML may raise: its own errors, and those of constructors and of nesting.
_YAML_FAILURES: Final = (
    yaml.YAMLError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
)


def _yaml(text: str) -> object:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_yaml_keys(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _yaml_error(exc: Exception) -> DefinitionError:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{exc.context}, {problem}"
        line, column = mark.line + 1, mark.column + 1
        return DefinitionError(
            "",
            f"invalid YAML at line {line}, column {column}: {problem}",
            line=line,
            column=column,
        )
    if isinstance(exc, RecursionError):
        return DefinitionError("", "invalid YAML: nested too deeply")
    return DefinitionError("", f"invalid YAML: {exc}")


def _json_error(exc: Exception) -> DefinitionError:
    if isinstance(exc, json.JSONDecodeError):
        return DefinitionError(
            "",
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            line=exc.lineno,
            column=exc.colno,
        )
    if isinstance(exc, RecursionError):
        return DefinitionError("", "invalid JSON: nested too deeply")
    return DefinitionError("", f"invalid JSON: {exc}")


def decode_document(text: str | bytes, filename: str | None = None) -> object:
    """The JSON or YAML value of a definition's text (not checked as a definition).

    YAML when ``filename`` ends in ``.yaml`` or ``.yml``, JSON when it ends in ``.json``;
    otherwise JSON, and YAML when the text is not JSON. Bytes are UTF-8 text. Raises
    :class:`DefinitionError` with the line and column of a syntax error.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DefinitionError(
                "", f"the definition is not UTF-8 text (byte {exc.start}: {exc.reason})"
            ) from None
    text = text.removeprefix("\ufeff")
    suffix = filename.lower().rsplit(".", 1)[-1] if filename and "." in filename else ""
    json_error: DefinitionError | None = None
    if suffix not in ("yaml", "yml"):
        try:
            return json.loads(text, object_pairs_hook=_json_object)
        except (ValueError, RecursionError) as exc:
            json_error = _json_error(exc)
        if suffix == "json" or text.lstrip().startswith(("{", "[", '"')):
            # JSON-looking text that YAML reads is kept (YAML flow style, a trailing comma).
            try:
                return _yaml(text)
            except _YAML_FAILURES:
                raise json_error from None
    try:
        return _yaml(text)
    except _YAML_FAILURES as exc:
        raise _yaml_error(exc) from None


def load_definition(text: str | bytes, filename: str | None = None) -> c.Definition:
    """The definition in a JSON or YAML text (see :func:`decode_document`)."""
    return parse_definition(decode_document(text, filename))


# -- back to a document -------------------------------------------------------------------------


def _compare_document(key_name: str, compare: c.Compare) -> dict[str, object]:
    document: dict[str, object] = {key_name: compare.key, "op": compare.op}
    if compare.op not in NO_VALUE_OPS:
        value = compare.value
        document["value"] = list(value) if isinstance(value, tuple) else value
    return document


def _match_document(match: c.EventMatch) -> dict[str, object]:
    document: dict[str, object] = {"type": match.type}
    if match.name is not None:
        document["name"] = match.name
    if match.custom_event_type is not None:
        document["custom_event_type"] = match.custom_event_type
    if match.action is not None:
        document["action"] = match.action
    if match.attributes:
        document["attributes"] = [_compare_document("attribute", a) for a in match.attributes]
    return document


def node_document(node: c.Node) -> dict[str, object]:
    """The normalised document of one criteria node."""
    match node:
        case c.All(nodes):
            return {"all": [node_document(n) for n in nodes]}
        case c.AnyOf(nodes):
            return {"any": [node_document(n) for n in nodes]}
        case c.Not(child):
            return {"not": node_document(child)}
        case c.EventCondition():
            document: dict[str, object] = {"event": _match_document(node.match)}
            if node.sum is not None:
                document["sum"] = {"of": node.sum.of, "op": node.sum.op, "value": node.sum.value}
            else:
                count = node.count or c.Count()
                bounds: dict[str, int] = {"min": count.min}
                if count.max is not None:
                    bounds["max"] = count.max
                document["count"] = bounds
            if node.window_ms is not None:
                document["within"] = duration_text(node.window_ms)
            return document
        case c.UserAttribute(compare):
            return _compare_document("user_attribute", compare)
        case c.IdentityCondition(compare):
            return _compare_document("identity", compare)
        case c.AudienceRef(name):
            return {"audience": name}
        case c.Consent(regulation="ccpa", consented=consented):
            return {"consent": {"ccpa": consented}}
        case c.Consent(purpose=purpose, consented=consented):
            return {"consent": {"gdpr": purpose, "consented": consented}}
        case c.InputSeen(name):
            return {"input": name}
        case c.EnvironmentSeen(environment):
            return {"environment": environment}
    raise TypeError(f"not a criteria node: {node!r}")  # pragma: no cover


def definition_document(definition: c.Definition) -> dict[str, object]:
    """The normalised JSON document of a parsed definition: defaults written out (``count``,
    ``consented``, ``description``), ``within`` in its shortest unit, identity types and
    actions canonical. :func:`parse_definition` reads it back to an equal definition."""
    return {
        "name": definition.name,
        "description": definition.description,
        "criteria": node_document(definition.criteria),
    }


# -- a set of audiences ---------------------------------------------------------------------------


def _reference_paths(node: c.Node, path: str) -> Iterator[tuple[str, str]]:
    """``(audience name, JSON path of the reference)`` for every reference, in document
    order."""
    match node:
        case c.All(nodes) | c.AnyOf(nodes):
            key = "all" if isinstance(node, c.All) else "any"
            for i, child in enumerate(nodes):
                yield from _reference_paths(child, f"{path}.{key}[{i}]")
        case c.Not(child):
            yield from _reference_paths(child, f"{path}.not")
        case c.AudienceRef(name):
            yield name, f"{path}.audience"


def check_references(definitions: Mapping[str, c.Definition]) -> list[str]:
    """The names of ``definitions`` in an order to evaluate them in: every audience after
    the audiences it refers to (and otherwise by name).

    Raises :class:`DefinitionError` for a reference to an audience not in ``definitions``
    (its path is the referring audience's name and the reference's path:
    ``vip.criteria.all[0].audience``), for audiences that refer to each other in a cycle
    (``a -> b -> a``; the path is that of the reference closing it), and for a definition
    filed under another name than its own.
    """
    targets: dict[str, list[tuple[str, str]]] = {}
    for name in sorted(definitions):
        definition = definitions[name]
        if definition.name != name:
            raise DefinitionError(
                name, f"the definition filed as {name!r} is named {definition.name!r}"
            )
        first: dict[str, str] = {}
        for target, path in _reference_paths(definition.criteria, "criteria"):
            if target not in definitions:
                raise DefinitionError(f"{name}.{path}", f"unknown audience {target!r}")
            first.setdefault(target, path)
        targets[name] = sorted(first.items())

    order: list[str] = []
    done: set[str] = set()
    for root in sorted(definitions):
        if root in done:
            continue
        trail = [root]
        on_trail = {root}
        stack = [iter(targets[root])]
        while stack:
            name = trail[-1]
            for target, path in stack[-1]:
                if target in on_trail:
                    cycle = [*trail[trail.index(target) :], target]
                    raise DefinitionError(
                        f"{name}.{path}",
                        "audiences refer to each other in a cycle: " + " -> ".join(cycle),
                    )
                if target not in done:
                    trail.append(target)
                    on_trail.add(target)
                    stack.append(iter(targets[target]))
                    break
            else:
                stack.pop()
                trail.pop()
                on_trail.discard(name)
                done.add(name)
                order.append(name)
    return order
