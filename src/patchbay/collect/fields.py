"""Scalar field types shared by the batch and event models.

mParticle's published schema and the official SDKs disagree on several scalar types (see
docs/api/events.md, "Tolerance"). These aliases encode the decision for each case in one
place: strict where every real sender agrees, tolerant where one of them deviates.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

#: A signed 64-bit integer: mParticle ids, timestamps and counters are Java longs.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

#: A boolean. The docs' own master sample sends ``""`` for some booleans, so a string is
#: accepted (and kept verbatim in the stored batch).
LooseBool = bool | str

#: A decimal amount: a number, or a numeric-looking string as in the docs' examples.
Amount = float | str

#: A field the sources type both as a string and as a number (``response_code``,
#: ``push_message_behavior``, ``device_orientation``).
StrOrNumber = str | float

#: Attribute values: the schema's ``String`` also admits numbers, booleans and null.
#: Integers stay integers (a long id sent as a JSON number keeps every digit).
AttributeValue = str | int | float | bool | None

#: A user attribute: a string (or scalar) or a list of strings.
UserAttributeValue = str | int | float | bool | list[str | None] | None

#: Per-integration flags: any JSON value (the official SDKs send numbers and arrays).
FlagValue = Any

#: Deepest nesting accepted inside free-form JSON values (custom flags).
MAX_FREEFORM_DEPTH = 32

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1


def check_freeform(value: object, depth: int = 0) -> None:
    """Reject free-form JSON that is nested too deeply or holds integers no consumer can read.

    Raises ``ValueError`` (which msgspec reports with the JSON path of the field).
    """
    if depth > MAX_FREEFORM_DEPTH:
        raise ValueError(f"custom_flags: nested more than {MAX_FREEFORM_DEPTH} levels deep")
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _UINT64_MAX:
            raise ValueError("custom_flags: an integer is out of the 64-bit range")
    elif isinstance(value, dict):
        for item in value.values():
            check_freeform(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_freeform(item, depth + 1)


def parse_mpid(value: int | str) -> int:
    """Return an ``mpid`` sent as a number or as a numeric string as a signed 64-bit int."""
    if isinstance(value, str):
        text = value.strip()
        unsigned = text[1:] if text[:1] in ("+", "-") else text
        try:
            if not (unsigned.isascii() and unsigned.isdigit()):  # int() takes "1_0", Arabic digits
                raise ValueError
            number = int(text)
        except ValueError:
            raise ValueError("expected a signed 64-bit integer or a numeric string") from None
    else:
        number = value
    if not _INT64_MIN <= number <= 2**63 - 1:
        raise ValueError("out of the signed 64-bit range")
    return number
