"""Building blocks shared by every model: the base struct and field annotations.

Field annotations carry the Java SDK's per-field behaviour as ``msgspec.Meta(extra=...)``,
read by :mod:`.serialize`:

* :func:`one_of` marks a ``str`` field as taking one of an enum's literals;
* :data:`NON_DEFAULT` is Jackson's ``@JsonInclude(NON_DEFAULT)``: omitted when at its default;
* :data:`KEEP_EMPTY` writes an empty list instead of omitting it (``events``).
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any, Final

import msgspec

ENUM_KEY: Final = "firehose_enum"
INCLUDE_KEY: Final = "firehose_include"

#: ``@JsonInclude(NON_DEFAULT)``: the field is left out when it equals its default.
NON_DEFAULT: Final = msgspec.Meta(extra={INCLUDE_KEY: "non_default"})

#: The field is written even when it is an empty list (only ``None`` is left out).
KEEP_EMPTY: Final = msgspec.Meta(extra={INCLUDE_KEY: "keep_empty"})

#: A Java ``int``.
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]

#: A Java ``long``.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

#: A string the Java constructors reject when empty (identity values, setting ids and names).
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]


def one_of(enum: type[StrEnum]) -> Any:
    """Field metadata: the ``str`` field takes one of ``enum``'s literals."""
    return msgspec.Meta(
        extra={ENUM_KEY: enum},
        extra_json_schema={"enum": [member.value for member in enum]},
    )


def now_ms() -> int:
    """The current time in epoch milliseconds (the Java SDK's ``System.currentTimeMillis()``)."""
    return time.time_ns() // 1_000_000


class FirehoseStruct(msgspec.Struct, kw_only=True, repr_omit_defaults=True):
    """Base of every Firehose model.

    Serialize with :func:`patchbay.firehose.serialize.dumps`, not ``msgspec.json.encode``:
    only ``dumps`` applies the Java SDK's rules for empty and default values.
    """


def struct_tag(obj: msgspec.Struct) -> str:
    """The ``type`` discriminator value of a tagged struct instance."""
    tag = type(obj).__struct_config__.tag
    assert isinstance(tag, str)
    return tag
