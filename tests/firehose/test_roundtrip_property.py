"""Generated messages of every type round-trip: ``parse(dumps(m)) == m``.

The strategies are derived from the models with ``msgspec.inspect``, so a field added to a
model is generated too. Generated values are the canonical ones: strings in fields are not
empty (``""`` is written as absent and reads back as ``None``, the Java SDK's rule).
"""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from functools import cache
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import inspect as mi

import patchbay.firehose as fh
from patchbay.firehose.serialize import dumps, parse, to_dict

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8)
KEYS = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)


def strategy(t: mi.Type) -> st.SearchStrategy[Any]:
    """Values of the model type ``t`` (enum-typed strings take one of the enum's literals)."""
    if isinstance(t, mi.Metadata):
        enum = (t.extra or {}).get("firehose_enum")
        if enum is not None:
            return st.sampled_from([m.value for m in enum])
        return strategy(t.type)
    if isinstance(t, mi.UnionType):
        return st.one_of([strategy(m) for m in t.types])
    if isinstance(t, mi.StructType):
        return structs(t.cls)
    if isinstance(t, mi.ListType):
        return st.lists(strategy(t.item_type), max_size=2)
    if isinstance(t, mi.DictType):
        key = KEYS if isinstance(t.key_type, mi.StrType) else strategy(t.key_type)
        return st.dictionaries(key, strategy(t.value_type), max_size=2)
    if isinstance(t, mi.StrType):
        return TEXT if not t.min_length else TEXT.filter(lambda s: len(s) >= t.min_length)
    if isinstance(t, mi.IntType):
        low = -(2**63) if t.ge is None else t.ge
        high = 2**63 - 1 if t.le is None else t.le
        return st.integers(low, high)
    if isinstance(t, mi.FloatType):
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.DecimalType):
        return st.decimals(min_value=-(10**9), max_value=10**9, allow_nan=False, places=4)
    if isinstance(t, mi.UUIDType):
        return st.uuids()
    if isinstance(t, mi.DateTimeType):
        return st.datetimes(
            min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        )
    if isinstance(t, mi.NoneType):
        return st.none()
    raise AssertionError(f"no strategy for {t!r}")


@st.composite
def structs(draw: st.DrawFn, cls: type[msgspec.Struct]) -> Any:
    """An instance of the model ``cls``: required fields always, the others at random."""
    kwargs = {
        field.name: draw(strategy(field.type))
        for field in _fields(cls)
        if field.required or draw(st.booleans())
    }
    return cls(**kwargs)


@cache
def _fields(cls: type[msgspec.Struct]) -> tuple[mi.Field, ...]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info.fields


MESSAGE_TYPES = list(typing.get_args(fh.Message))


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
@FAST
@given(data=st.data())
def test_generated_message_round_trips(cls: type[msgspec.Struct], data: st.DataObject) -> None:
    message = data.draw(structs(cls))
    out = dumps(message)
    again = parse(out)
    assert again == message
    assert type(again) is cls
    assert dumps(again) == out
    assert to_dict(message) == json.loads(out)
    assert parse(to_dict(message)) == message  # decimals of <= 15 digits survive floats


def _in_a_message(part: Any) -> fh.BaseMessage:
    """The smallest message that carries ``part``."""
    if isinstance(part, fh.BaseEvent):
        return fh.EventProcessingRequest(events=[part])
    if isinstance(part, fh.BaseRuntimeEnvironment):
        return fh.EventProcessingRequest(runtime_environment=part)
    if isinstance(part, fh.BaseSystemNotification):
        return fh.EventProcessingRequest(system_notifications=[part])
    registration = fh.EventProcessingRegistration(account_settings=[part])
    return fh.ModuleRegistrationResponse(event_processing_registration=registration)


PART_TYPES = [
    cls
    for union in (fh.Event, fh.RuntimeEnvironment, fh.SystemNotification, fh.Setting)
    for cls in typing.get_args(union)
]


@pytest.mark.parametrize("cls", PART_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_part_round_trips(cls: type[msgspec.Struct], data: st.DataObject) -> None:
    """Every event, runtime, notification and setting kind, inside a message."""
    message = _in_a_message(data.draw(structs(cls)))
    again = parse(dumps(message))
    assert again == message
    assert dumps(again) == dumps(message)


@FAST
@given(message=structs(fh.EventProcessingRequest))
def test_lenient_parse_reads_valid_messages_the_same(message: fh.EventProcessingRequest) -> None:
    out = dumps(message)
    assert parse(out, lenient=True) == parse(out)


@FAST
@given(message=structs(fh.EventProcessingRequest))
def test_written_json_has_no_empty_optional_values(message: fh.EventProcessingRequest) -> None:
    """Apart from ``events`` and map/list contents, nothing written is null or empty."""

    def check(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                here = f"{path}.{key}"
                if isinstance(item, dict) and _is_map(here):
                    continue
                assert item is not None and item != "", here
                if here != "$.events":
                    assert (item != [] and item != {}) or _is_struct(here), here
                check(item, here)
        elif isinstance(value, list):
            for item in value:
                check(item, f"{path}[]")

    check(to_dict(message), "$")


_MAPS = (
    "attributes",
    "custom_flags",
    "account_settings",
    "user_attributes",
    "user_attribute_lists",
    "integration_attributes",
    "apple_search_ads_attribution",
    "added",
    "removed",
    "gdpr_consent_state",
    "ccpa_consent_state",
)


def _is_map(path: str) -> bool:
    return path.rsplit(".", 1)[-1] in _MAPS


def _is_struct(path: str) -> bool:
    """Nested objects are written even when all their fields are left out (Jackson)."""
    return path.rsplit(".", 1)[-1] in ("consent_state", "location", "account", "platform_fields")
