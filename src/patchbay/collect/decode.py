"""Decoding request bodies into batches, with errors that name the JSON path of the bad value.

msgspec validates while it parses and stops at the first error. Its message is rewritten
here into ``<path>: <what is wrong>`` (``events[3].data.custom_event_type: expected one of
navigation, location, ...``), the form the Events API answers with.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from patchbay.collect.batch import Batch, BulkBody
from patchbay.collect.events import EVENT_TYPES
from patchbay.collect.fields import parse_mpid
from patchbay.errors import PatchbayError

_BATCH = msgspec.json.Decoder(Batch)
_BULK = msgspec.json.Decoder(BulkBody)
_ANY = msgspec.json.Decoder()

ROOT = "$"

T = TypeVar("T")


@dataclass(eq=False)  # not frozen: contextlib and add_note() set attributes on exceptions
class BadInput(PatchbayError):
    """Input that does not follow the batch format.

    ``path`` is where the first bad value is (``events[0].data``; ``$`` for the whole body)
    and ``reason`` what is wrong with it.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def decode_batch(body: bytes) -> Batch:
    """Decode and validate one batch (the body of ``/v2/events``)."""
    batch = decode_json(_BATCH, body)
    try:
        body.decode("utf-8")  # msgspec skips unknown keys without checking their UTF-8
    except UnicodeDecodeError:
        raise BadInput(ROOT, "the body is not valid UTF-8") from None
    if isinstance(batch.mpid, str):
        try:
            parse_mpid(batch.mpid)
        except ValueError as exc:
            raise BadInput("mpid", str(exc)) from None
    return batch


def split_bulk(body: bytes, max_batches: int) -> list[bytes]:
    """Split a bulk body (a JSON array of batches) into the raw bytes of each batch."""
    items = decode_json(_BULK, body, "expected an array of batches")
    if len(items) > max_batches:
        raise BadInput(ROOT, f"{len(items)} batches in one request: at most {max_batches}")
    return [bytes(item) for item in items]


def decode_json(decoder: msgspec.json.Decoder[T], body: bytes, wrong_type: str | None = None) -> T:
    """Decode ``body`` with ``decoder``; every failure becomes a :class:`BadInput` naming its path.

    Works for any model (the IDSync API uses it too): enum choices in messages are looked up
    in the decoder's own type. ``wrong_type``, if given, replaces every validation message.
    """
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        if wrong_type is not None:
            raise BadInput(ROOT, wrong_type) from None
        raise _explain(str(exc), body, decoder.type) from None
    except msgspec.DecodeError as exc:
        raise BadInput(ROOT, _malformed(str(exc))) from None
    except UnicodeDecodeError:
        raise BadInput(ROOT, "the body is not valid UTF-8") from None
    except RecursionError:
        raise BadInput(ROOT, "the JSON is nested too deeply") from None


def _malformed(message: str) -> str:
    detail = message.removeprefix("JSON is malformed: ")
    if message == "Input data was truncated":
        detail = "the body is empty or cut short"
    return f"invalid JSON: {detail}"


_MESSAGE = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_FIELD_PREFIX = re.compile(r"^(?P<field>[a-z_]+): (?P<reason>.*)$", re.DOTALL)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _explain(message: str, body: bytes, root: Any) -> BadInput:
    match = _MESSAGE.match(message)
    assert match is not None  # the pattern matches any string
    what, path = match["what"], match["path"] or ROOT
    shown = ROOT if path == ROOT else path.removeprefix("$.")
    if (missing := _MISSING.match(what)) is not None:
        field = missing["field"]
        if field == "event_type":
            return BadInput(shown, 'Required event field "event_type" is missing or empty.')
        return BadInput(shown, f'missing required field "{field}"')
    if path.endswith(".event_type") and what == "Invalid value ''":
        return BadInput(shown, 'Required event field "event_type" is missing or empty.')
    if path.endswith(".event_type") and what.startswith("Invalid value"):
        value = what.removeprefix("Invalid value ")
        return BadInput(shown, f"unknown event type {value}: expected one of {_join(EVENT_TYPES)}")
    if what.startswith("Invalid enum value"):
        choices = _choices_at(path, body, root)
        if choices:
            return BadInput(shown, f"expected one of {_join(choices)}")
    if (field := _FIELD_PREFIX.match(what)) is not None:  # from a __post_init__ check
        inner = field["field"] if shown == ROOT else f"{shown}.{field['field']}"
        return BadInput(inner, field["reason"])
    if what.startswith("Expected `"):
        return BadInput(shown, "e" + what[1:])
    return BadInput(shown, what[0].lower() + what[1:] if what else "invalid value")


def _join(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values)


def _choices_at(path: str, body: bytes, root: Any) -> list[str]:
    """The enum values allowed at ``path``, found by walking the ``root`` model along the data."""
    try:
        data: Any = _ANY.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return []
    types: list[Any] = [msgspec.inspect.type_info(root)]
    declared: list[str] = []
    for key, index in _PATH_PART.findall(path.removeprefix("$")):
        declared = []
        found: list[Any] = []
        for t in _flatten(types):
            if index and isinstance(t, msgspec.inspect.ListType):
                found.append(t.item_type)
            elif key and isinstance(t, msgspec.inspect.DictType):
                found.append(t.value_type)
            elif key and isinstance(t, msgspec.inspect.StructType):
                tagged = t.tag_field is not None and isinstance(data, dict)
                if tagged and data.get(t.tag_field) != t.tag:
                    continue
                for f in t.fields:
                    if f.encode_name == key:
                        found.append(f.type)
                        declared.extend(_literal_values(typing.get_type_hints(t.cls)[f.name]))
        types = found
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and index.isdigit() and int(index) < len(data):
            data = data[int(index)]
        else:
            data = None
    if declared:  # in the order the model declares them
        return declared
    return [
        str(v)
        for t in _flatten(types)
        if isinstance(t, msgspec.inspect.LiteralType)
        for v in t.values
    ]


def _literal_values(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    return [v for arg in typing.get_args(annotation) for v in _literal_values(arg)]


def _flatten(types: list[Any]) -> list[Any]:
    out: list[Any] = []
    for t in types:
        if isinstance(t, msgspec.inspect.UnionType):
            out.extend(_flatten(list(t.types)))
        elif isinstance(t, msgspec.inspect.Metadata):
            out.extend(_flatten([t.type]))
        else:
            out.append(t)
    return out
