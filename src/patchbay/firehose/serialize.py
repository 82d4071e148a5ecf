"""Read and write Firehose JSON exactly as the Java SDK (``MessageSerializer``) does.

Writing (:func:`dumps`, :func:`to_dict`) applies Jackson's ``NON_EMPTY`` inclusion, the
SDK's one global rule, in one place (:func:`_encode_struct`): a field is left out when it is
``None``, ``""``, an empty list or an empty map. Java primitives (ints, ``bool``s, doubles)
are never empty, so they are always written, with two per-field exceptions declared on the
models: ``NON_DEFAULT`` fields (``is_debug``, the ``allow_*`` permissions,
``EventProcessingResponse.suspend_subscription``) are left out at their default, and
``KEEP_EMPTY`` fields (``events``, ``user_profiles``) are written even when empty. Values
inside maps and lists are written as they are (a ``null`` account setting stays ``null``).
``type`` comes first, then the fields in declaration order, base class first; decimals keep
their text; ``submitted_time`` is written as epoch seconds with nine decimals.

Reading (:func:`parse`) follows Jackson's configuration: unknown fields are ignored; JSON
numbers and booleans where a string is expected become strings (``42`` -> ``"42"``);
``null`` for a field that cannot hold it counts as absent (so a Java primitive gets its
default); ``null`` inside a list, or as the value of a string map other than
``account_settings``, is dropped. Enum literals are checked case-sensitively: an unknown one
raises :class:`~.errors.UnknownEnumValueError` naming the JSON path and the allowed values,
unless ``lenient=True``, which keeps it as a plain string. An unknown ``type``
discriminator always raises :class:`~.errors.UnknownTypeError`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Context, Decimal, InvalidOperation, localcontext
from enum import Enum, StrEnum
from functools import cache
from typing import Any, Final

import msgspec
from msgspec import inspect as mi

from patchbay.firehose._base import ENUM_KEY, INCLUDE_KEY
from patchbay.firehose.auth import AuthenticationConfiguration
from patchbay.firehose.consent import BaseSystemNotification
from patchbay.firehose.environment import BaseRuntimeEnvironment
from patchbay.firehose.errors import (
    FirehoseDecodeError,
    FirehoseValidationError,
    UnknownEnumValueError,
    UnknownTypeError,
)
from patchbay.firehose.events import BaseEvent
from patchbay.firehose.messages import BaseMessage, Message
from patchbay.firehose.settings import BaseSetting

__all__ = ["dumps", "parse", "to_dict"]

_DECODER: Final = msgspec.json.Decoder(float_hook=Decimal)
_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NANOS: Final = Decimal("1e-9")
_EXACT: Final = Context(prec=60)  # timestamp arithmetic, whatever the caller's context
_NUMBER: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_AT_PATH: Final = re.compile(r" - at `(\$[^`]*)`$")

#: The name shown for each discriminated family in "unknown type" errors.
_FAMILIES: Final[dict[type, str]] = {
    BaseMessage: "MessageType",
    BaseEvent: "EventType",
    BaseRuntimeEnvironment: "RuntimeEnvironmentType",
    BaseSystemNotification: "SystemNotificationType",
    BaseSetting: "SettingType",
    AuthenticationConfiguration: "AuthenticationType",
}


# --------------------------------------------------------------------------- reading


def parse(
    data: bytes | bytearray | memoryview | str | Mapping[str, Any], lenient: bool = False
) -> Message:
    """Parse one message from JSON text or from an already-decoded JSON object.

    ``lenient=True`` accepts unknown enum literals (kept as plain strings). Raises
    :class:`~.errors.FirehoseDecodeError` for input that is not a JSON object, and
    :class:`~.errors.FirehoseValidationError` (with ``.path``) for an invalid message.
    """
    if isinstance(data, Mapping):
        raw: Any = data
    else:
        try:
            raw = _DECODER.decode(data)
        except msgspec.DecodeError as exc:
            raise FirehoseDecodeError(f"Not valid JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise FirehoseDecodeError(f"Expected a JSON object, got {type(raw).__name__}")
    prepared = _reader(lenient)(raw, None)
    try:
        message: Message = msgspec.convert(prepared, Message)
    except msgspec.ValidationError as exc:
        text = str(exc)
        found = _AT_PATH.search(text)
        raise FirehoseValidationError(text, found.group(1) if found else "$") from None
    return message


#: A JSON path kept as a linked list ``(parent, segment)`` (``None`` is ``$``): cheap to
#: extend, formatted only when an error names it.
_Path = tuple[Any, str | int] | None

#: Reads one decoded JSON value into what ``msgspec.convert`` accepts.
_ReadFn = Callable[[Any, _Path], Any]


def _path_text(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, segment = path
        parts.append(f"[{segment}]" if isinstance(segment, int) else segment)
    return "$" + "".join(reversed(parts))


@cache
def _reader(lenient: bool) -> _ReadFn:
    return _Compiler(lenient).compile(mi.type_info(Message))


class _Compiler:
    """Compiles the models' type tree (``msgspec.inspect``) into reader functions that turn
    decoded JSON into input ``msgspec.convert`` accepts: they apply the Java reading rules
    msgspec has no switch for and check enums and discriminators with clear errors."""

    def __init__(self, lenient: bool) -> None:
        self.lenient = lenient

    def compile(self, t: mi.Type) -> _ReadFn:
        if isinstance(t, mi.Metadata):
            enum = (t.extra or {}).get(ENUM_KEY)
            return self.enum(enum) if enum is not None else self.compile(t.type)
        if isinstance(t, mi.UnionType):
            members = [m for m in t.types if not isinstance(m, mi.NoneType)]
            inner = self.compile(members[0]) if len(members) == 1 else self.tagged(members)
            return lambda value, path: None if value is None else inner(value, path)
        if isinstance(t, mi.StructType):
            return self.tagged([t]) if t.tag is not None else self.struct(t)
        if isinstance(t, mi.ListType):
            return self.list_of(t)
        if isinstance(t, mi.DictType):
            return self.dict_of(t)
        if isinstance(t, mi.StrType):
            return lambda value, path: _as_text(value)
        if isinstance(t, mi.DateTimeType):
            return _read_instant
        return lambda value, path: value

    def enum(self, enum: type[StrEnum]) -> _ReadFn:
        allowed = [member.value for member in enum]
        known = frozenset(allowed)
        lenient = self.lenient

        def read(value: Any, path: _Path) -> Any:
            if isinstance(value, str) and (value in known or lenient):
                return value
            raise UnknownEnumValueError(value, allowed, enum.__name__, _path_text(path))

        return read

    def list_of(self, t: mi.ListType) -> _ReadFn:
        item = self.compile(t.item_type)

        def read(value: Any, path: _Path) -> Any:
            if not isinstance(value, list):
                return value  # msgspec reports the type error
            return [item(x, (path, i)) for i, x in enumerate(value) if x is not None]

        return read

    def dict_of(self, t: mi.DictType) -> _ReadFn:
        key_fn, item_fn = self.compile(t.key_type), self.compile(t.value_type)
        keep_nulls = _nullable(t.value_type)

        def read(value: Any, path: _Path) -> Any:
            if not isinstance(value, Mapping):
                return value
            out = {}
            for key, item in value.items():
                if item is None and not keep_nulls:
                    continue  # dropped: the map's values cannot be null
                here = (path, f"[{key!r}]")
                out[key_fn(key, here)] = item_fn(item, here)
            return out

        return read

    def struct(self, t: mi.StructType) -> _ReadFn:
        fields = {f.encode_name: (self.compile(f.type), _nullable(f.type)) for f in t.fields}
        tag_field, tag = t.tag_field, t.tag

        def read(value: Any, path: _Path) -> Any:
            if not isinstance(value, Mapping):
                return value
            out: dict[str, Any] = {}
            if tag_field is not None:
                out[tag_field] = tag
            for name, item in value.items():
                known = fields.get(name)
                if known is None:
                    continue  # unknown fields are ignored
                read_field, nullable = known
                if item is None and not nullable:
                    continue  # Jackson: null leaves a primitive or container at its default
                out[name] = None if item is None else read_field(item, (path, "." + name))
            return out

        return read

    def tagged(self, members: list[mi.Type]) -> _ReadFn:
        structs = [m for m in members if isinstance(m, mi.StructType)]
        readers = {m.tag: self.struct(m) for m in structs}
        tag_field = structs[0].tag_field
        assert tag_field is not None
        allowed = [str(tag) for tag in readers]
        family = next(
            (name for base, name in _FAMILIES.items() if issubclass(structs[0].cls, base)), "type"
        )

        def read(value: Any, path: _Path) -> Any:
            if not isinstance(value, Mapping):
                return value  # msgspec reports "Expected `object`"
            tag = value.get(tag_field)
            found = readers.get(tag) if isinstance(tag, str) else None
            if found is not None:
                return found(value, path)
            if tag is None:
                where = _path_text(path)
                choices = ", ".join(repr(a) for a in allowed)
                raise FirehoseValidationError(
                    f"Missing `{tag_field}` at `{where}`: expected one of {choices}", where
                )
            raise UnknownTypeError(tag, allowed, family, _path_text((path, "." + tag_field)))

        return read


def _nullable(t: mi.Type) -> bool:
    if isinstance(t, mi.Metadata):
        return _nullable(t.type)
    if isinstance(t, mi.UnionType):
        return any(isinstance(m, mi.NoneType) for m in t.types)
    return isinstance(t, mi.NoneType | mi.AnyType)


def _as_text(value: Any) -> Any:
    """Jackson reads a JSON scalar into a ``String`` field as its text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return value


def _read_instant(value: Any, path: _Path) -> datetime:
    """An ``Instant`` as Jackson's jsr310 module reads it: epoch seconds (a number or a
    numeric string, fraction = nanoseconds) or ISO-8601 text. Sub-microsecond digits are
    dropped (Python datetimes hold microseconds); a string without an offset is UTC."""
    try:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, str) and not _NUMBER.fullmatch(value):
            moment = datetime.fromisoformat(value)
        elif isinstance(value, int | float | Decimal | str) and not isinstance(value, bool):
            seconds = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
            with localcontext(_EXACT):
                micros = (seconds * 1_000_000).to_integral_value(rounding=ROUND_FLOOR)
            return _EPOCH + timedelta(microseconds=int(micros))
        else:
            raise TypeError
    except (ValueError, TypeError, OverflowError, InvalidOperation):
        where = _path_text(path)
        raise FirehoseValidationError(
            f"Invalid timestamp {value!r} at `{where}`: expected an ISO-8601 string or "
            "epoch seconds",
            where,
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --------------------------------------------------------------------------- writing


def dumps(message: msgspec.Struct) -> bytes:
    """The message (or any model) as compact JSON, written as the Java SDK writes it."""
    return _ENCODER.encode(_encode_struct(message))


def to_dict(message: msgspec.Struct) -> dict[str, Any]:
    """The message as plain JSON data: equal to ``json.loads(dumps(message))`` (decimals
    become ``int``/``float``). Use it where a dict is wanted, e.g. a Lambda return value."""
    result: dict[str, Any] = msgspec.json.decode(dumps(message))
    return result


#: How a field is left out: "non_empty" (Jackson's global NON_EMPTY), "non_default"
#: (NON_EMPTY + left out at its default) or "keep_empty" (only None is left out).
_Plan = tuple[str | None, str | None, tuple[tuple[str, str, str, Any], ...]]


@cache
def _plan(cls: type[msgspec.Struct]) -> _Plan:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    fields = []
    for field in info.fields:
        mode = "non_empty"
        if isinstance(field.type, mi.Metadata) and field.type.extra:
            mode = field.type.extra.get(INCLUDE_KEY, mode)
        fields.append((field.name, field.encode_name, mode, field.default))
    tag = info.tag if isinstance(info.tag, str) else None
    return info.tag_field, tag, tuple(fields)


def _encode_struct(obj: msgspec.Struct) -> dict[str, Any]:
    """The single place where the Java SDK's inclusion rule is applied (see module doc)."""
    return _encoder(type(obj))(obj)


@cache
def _encoder(cls: type[msgspec.Struct]) -> Callable[[msgspec.Struct], dict[str, Any]]:
    """The inclusion rule unrolled for ``cls``'s fields: for each field, in order,

    * ``None`` is left out; a ``non_default`` field equal to its default is left out;
    * a plain scalar (``str``, ``int``, ``float``, ``bool``, ``Decimal``) is written unless
      it is ``""``;
    * anything else is written (through :func:`_encode_value`) unless it is an empty
      string, list or map, which only a ``keep_empty`` field writes.

    Generated once per class, so that a message is written without looking its plan up
    field by field (the outbox writes one message per batch and output).
    """
    tag_field, tag, fields = _plan(cls)
    lines = ["def encode(obj):", "    out = {}"]
    if tag_field is not None:
        lines.append("    out[tag_field] = tag")
    for i, (name, _key, mode, _default) in enumerate(fields):
        skip = "v is None" if mode != "non_default" else f"v is None or v == defaults[{i}]"
        written = "True" if mode == "keep_empty" else "not isinstance(v, containers) or v"
        lines += [
            f"    v = obj.{name}",
            f"    if not ({skip}):",
            "        if v.__class__ in scalars:",
            "            if v != '':",
            f"                out[keys[{i}]] = v",
            f"        elif {written}:",
            f"            out[keys[{i}]] = encode_value(v)",
        ]
    lines.append("    return out")
    namespace: dict[str, Any] = {
        "tag_field": tag_field,
        "tag": tag,
        "keys": [key for _, key, _, _ in fields],
        "defaults": [default for _, _, _, default in fields],
        "scalars": _SCALARS,
        "containers": (str, list, tuple, dict),
        "encode_value": _encode_value,
    }
    exec("\n".join(lines), namespace)  # the code is built above from field names only
    encode: Callable[[msgspec.Struct], dict[str, Any]] = namespace["encode"]
    return encode


#: Values written as they are.
_SCALARS: Final = frozenset({str, int, float, bool, Decimal})


def _encode_value(value: Any) -> Any:
    cls = value.__class__
    if cls in _SCALARS or value is None:
        return value
    if cls is list or cls is tuple:
        return [_encode_value(item) for item in value]
    if cls is dict:
        return {_encode_value(key): _encode_value(item) for key, item in value.items()}
    if isinstance(value, msgspec.Struct):
        return _encoder(cls)(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return _write_instant(value)
    return value


def _write_instant(moment: datetime) -> Decimal:
    """Epoch seconds with nine decimals, as jsr310 writes an ``Instant`` (naive = UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    with localcontext(_EXACT):
        return Decimal(micros).scaleb(-6).quantize(_NANOS)
