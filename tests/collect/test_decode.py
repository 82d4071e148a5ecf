"""Unit tests of the decoder: what it accepts, and the path and reason of what it refuses.

Every refusal is a :class:`BadInput` whose text is ``<path>: <reason>``, the path naming the
first bad value (``events[3].data.custom_event_type``) or ``$`` for the body as a whole.
"""

from __future__ import annotations

import contextlib
import json
import typing
from collections.abc import Iterator
from typing import Any

import pytest

from patchbay.collect.batch import Batch, Channel, UserIdentities
from patchbay.collect.decode import ROOT, BadInput, decode_batch, split_bulk
from patchbay.collect.events import (
    EVENT_TYPES,
    CommerceEventType,
    CustomEvent,
    CustomEventData,
    CustomEventType,
    ProductActionType,
)
from patchbay.collect.fields import MAX_FREEFORM_DEPTH

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
EVENT_TYPE_MISSING = 'Required event field "event_type" is missing or empty.'


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def custom(data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"event_type": "custom_event", "data": data or {}}


def refusal(body: bytes) -> BadInput:
    with pytest.raises(BadInput) as caught:
        decode_batch(body)
    return caught.value


def bulk_refusal(body: bytes, max_batches: int = 100) -> BadInput:
    with pytest.raises(BadInput) as caught:
        split_bulk(body, max_batches)
    return caught.value


def choices(message: str) -> set[str]:
    """The values listed after ``expected one of`` in a message."""
    _, sep, listed = message.partition("expected one of ")
    assert sep, message
    return set(listed.split(", "))


# --- BadInput itself ---------------------------------------------------------------------


def test_bad_input_text_is_path_then_reason() -> None:
    error = BadInput("events[0].data", "expected `object`")
    assert str(error) == "events[0].data: expected `object`"
    assert error.path == "events[0].data"
    assert error.reason == "expected `object`"
    assert isinstance(error, Exception)


def test_bad_input_passes_through_context_managers() -> None:
    # contextlib sets __traceback__ on the exception it re-raises, add_note() sets
    # __notes__: neither may fail on BadInput.
    @contextlib.contextmanager
    def passing() -> Iterator[None]:
        yield

    with pytest.raises(BadInput) as caught, passing():
        raise BadInput("mpid", "bad")
    caught.value.add_note("while testing")
    assert str(caught.value) == "mpid: bad"


# --- accepted batches --------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch",
    [
        {},
        {"events": []},
        {"events": None},
        {"events": [custom()]},
        {"events": [{"data": {}, "event_type": "custom_event"}]},  # key order is free
        {"schema_version": 2},
        {"schema_version": 2, "partner_identities": {"p_id": "x"}, "batch_context": {}},
        {"not_in_any_schema": {"deep": [1, "two", None, {"x": True}]}, "another": 1.5},
        {"events": [{"event_type": "custom_event", "data": {}, "extra": "envelope key"}]},
        {"events": [custom({"unknown_data_key": [1, 2, 3]})]},
        {"environment": "production"},
        {"environment": "development"},
        {"environment": "unknown"},
        {"user_attributes": {"a": "x", "b": 1, "c": 1.5, "d": True, "e": None, "f": ["x", None]}},
    ],
    ids=lambda b: json.dumps(b)[:60],
)
def test_accepted(batch: dict[str, Any]) -> None:
    decoded = decode_batch(dumps(batch))
    assert isinstance(decoded, Batch)
    assert decoded.event_count == len(batch.get("events") or [])


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_accepted(event_type: str) -> None:
    batch = decode_batch(dumps({"events": [{"event_type": event_type, "data": {}}]}))
    assert batch.events is not None
    assert len(batch.events) == 1


def test_event_type_selects_the_model() -> None:
    batch = decode_batch(dumps({"events": [custom({"event_name": "Play"})]}))
    assert batch.events is not None
    event = batch.events[0]
    assert isinstance(event, CustomEvent)
    assert event.data.event_name == "Play"


@pytest.mark.parametrize(
    "batch",
    [
        dict.fromkeys(Batch.__struct_fields__),
        {"events": [custom(dict.fromkeys(CustomEventData.__struct_fields__))]},
        {"events": [custom({"custom_event_type": None, "event_name": None})]},
        {"user_identities": {"email": None, "customerid": None}},
        {"device_info": {"screen_height": None, "is_tablet": None}},
        {"consent_state": {"gdpr": {"p": None}, "ccpa": None}},
    ],
    ids=["batch-fields", "event-fields", "enum", "identities", "device", "consent"],
)
def test_nulls_accepted(batch: dict[str, Any]) -> None:
    decode_batch(dumps(batch))


def test_every_batch_field_accepts_null() -> None:
    batch = decode_batch(dumps(dict.fromkeys(Batch.__struct_fields__)))
    assert batch.mpid is None
    assert batch.events is None
    assert batch.event_count == 0


@pytest.mark.parametrize(
    "flags",
    [
        {"s": "x"},
        {"i": 42},
        {"neg": -1},
        {"f": 1.5},
        {"b": False},
        {"n": None},
        {"list": [1, "x", None, [2]]},
        {"obj": {"nested": {"deeper": ["x"]}}},
        {"int64_min": INT64_MIN, "uint64_max": 2**64 - 1},
        {"big_float": 1e308},
        {"empty_list": [], "empty_obj": {}},
    ],
    ids=lambda f: next(iter(f)),
)
def test_custom_flags_of_any_json_type(flags: dict[str, Any]) -> None:
    batch = decode_batch(dumps({"events": [custom({"custom_flags": flags})]}))
    assert batch.events is not None
    assert batch.events[0].data.custom_flags == flags


def test_custom_flags_at_the_depth_limit() -> None:
    # custom_flags is level 0; the value under "deep" sits at level MAX_FREEFORM_DEPTH.
    value: Any = "leaf"
    for _ in range(MAX_FREEFORM_DEPTH - 1):
        value = [value]
    decode_batch(dumps({"events": [custom({"custom_flags": {"deep": value}})]}))


# --- mpid ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"0", 0),
        (b"600868121729048600", 600868121729048600),
        (b"-8785637963003340779", -8785637963003340779),  # the official sample's signed mpid
        (str(INT64_MAX).encode(), INT64_MAX),
        (str(INT64_MIN).encode(), INT64_MIN),
        (b'"123"', 123),
        (b'"-123"', -123),
        (b'"+7"', 7),
        (f'"{INT64_MAX}"'.encode(), INT64_MAX),
        (f'"{INT64_MIN}"'.encode(), INT64_MIN),
        (b"null", None),
    ],
)
def test_mpid_accepted(raw: bytes, expected: int | None) -> None:
    batch = decode_batch(b'{"mpid": ' + raw + b"}")
    assert batch.user_id == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'"abc"', "expected a signed 64-bit integer or a numeric string"),
        (b'""', "expected a signed 64-bit integer or a numeric string"),
        (b'"12ab"', "expected a signed 64-bit integer or a numeric string"),
        (b'"1.5"', "expected a signed 64-bit integer or a numeric string"),
        (b'"1e3"', "expected a signed 64-bit integer or a numeric string"),
        (b'"0x10"', "expected a signed 64-bit integer or a numeric string"),
        (b'"1_000"', "expected a signed 64-bit integer or a numeric string"),
        ('"١٢٣"'.encode(), "expected a signed 64-bit integer or a numeric string"),
        (f'"{INT64_MAX + 1}"'.encode(), "out of the signed 64-bit range"),
        (f'"{INT64_MIN - 1}"'.encode(), "out of the signed 64-bit range"),
        (str(INT64_MAX + 1).encode(), "expected `int` <= 9223372036854775807"),
        (str(INT64_MIN - 1).encode(), "expected `int` >= -9223372036854775808"),
        (b"1.5", "expected `int | str | null`, got `float`"),
        (b"true", "expected `int | str | null`, got `bool`"),
        (b"[1]", "expected `int | str | null`, got `array`"),
        (b"{}", "expected `int | str | null`, got `object`"),
    ],
)
def test_mpid_refused(raw: bytes, reason: str) -> None:
    error = refusal(b'{"mpid": ' + raw + b"}")
    assert error.path == "mpid"
    assert error.reason == reason


# --- user identities -----------------------------------------------------------------------


def test_customerid_is_read_as_customer_id() -> None:
    batch = decode_batch(dumps({"user_identities": {"customerid": "c1", "email": "a@b.c"}}))
    assert batch.user_identities is not None
    assert batch.user_identities.customerid == "c1"
    assert batch.user_identities.identities() == {"customer_id": "c1", "email": "a@b.c"}


def test_customer_id_wins_over_customerid() -> None:
    identities = UserIdentities(customer_id="official", customerid="sdk")
    assert identities.identities() == {"customer_id": "official"}


def test_identities_leave_out_missing_types() -> None:
    assert UserIdentities().identities() == {}
    assert UserIdentities(other_id_10="x").identities() == {"other_id_10": "x"}


# --- the path of the first bad value -------------------------------------------------------


def test_enum_error_names_the_event_index_and_the_choices() -> None:
    events = [custom(), custom(), custom({"custom_event_type": "navigation"})]
    events.append(custom({"custom_event_type": "not-a-type"}))
    error = refusal(dumps({"events": events}))
    assert str(error).startswith("events[3].data.custom_event_type: expected one of ")
    assert choices(error.reason) == set(typing.get_args(CustomEventType))


def test_first_bad_value_is_reported() -> None:
    events = [custom({"custom_event_type": "bad1"}), custom({"custom_event_type": "bad2"})]
    assert refusal(dumps({"events": events})).path == "events[0].data.custom_event_type"


@pytest.mark.parametrize(
    ("event", "path", "allowed"),
    [
        (
            {"event_type": "commerce_event", "data": {"custom_event_type": "nope"}},
            "events[0].data.custom_event_type",
            typing.get_args(CommerceEventType),
        ),
        (
            {"event_type": "commerce_event", "data": {"product_action": {"action": "buy"}}},
            "events[0].data.product_action.action",
            typing.get_args(ProductActionType),
        ),
        (
            {"event_type": "commerce_event", "data": {"promotion_action": {"action": "x"}}},
            "events[0].data.promotion_action.action",
            ("view", "click", "unknown"),
        ),
        (
            {"event_type": "push_message", "data": {"network": "fcm"}},
            "events[0].data.network",
            ("apn", "gcm", "unknown"),
        ),
        (
            {"event_type": "profile", "data": {"profile_event_type": "register"}},
            "events[0].data.profile_event_type",
            ("signup", "login", "logout", "update", "delete", "unknown"),
        ),
        (
            {"event_type": "custom_event", "data": {"location": {"location_source": "gps"}}},
            "events[0].data.location.location_source",
            ("unknown", "ip_lookup", "lat_long"),
        ),
    ],
    ids=["commerce-type", "product-action", "promotion-action", "push-network", "profile", "geo"],
)
def test_enum_errors(event: dict[str, Any], path: str, allowed: tuple[str, ...]) -> None:
    error = refusal(dumps({"events": [event]}))
    assert error.path == path
    assert choices(error.reason) == set(allowed)


@pytest.mark.parametrize(
    ("batch", "path", "allowed"),
    [
        ({"environment": "prod"}, "environment", ("production", "development", "unknown")),
        (
            {"source_info": {"channel": "email"}},
            "source_info.channel",
            typing.get_args(Channel),
        ),
        (
            {"device_info": {"att_authorization_status": "maybe"}},
            "device_info.att_authorization_status",
            ("authorized", "denied", "not_determined", "restricted"),
        ),
        (
            {"context": {"location": {"location_source": "gps"}}},
            "context.location.location_source",
            ("unknown", "ip_lookup", "lat_long"),
        ),
    ],
    ids=["environment", "channel", "att", "context-location"],
)
def test_batch_level_enum_errors(
    batch: dict[str, Any], path: str, allowed: tuple[str, ...]
) -> None:
    error = refusal(dumps(batch))
    assert error.path == path
    assert choices(error.reason) == set(allowed)


@pytest.mark.parametrize(
    "event",
    [{"data": {}}, {}, {"data": {"event_type": "custom_event"}}, {"event_type": ""}],
    ids=["no-type", "empty-event", "type-inside-data", "empty-type"],
)
def test_missing_or_empty_event_type_has_the_documented_message(event: dict[str, Any]) -> None:
    error = refusal(dumps({"events": [custom(), event]}))
    assert error.path.startswith("events[1]")
    assert error.reason == EVENT_TYPE_MISSING


@pytest.mark.parametrize("event_type", ["nope", "Custom_Event", "custom event", "push_reaction"])
def test_unknown_event_type(event_type: str) -> None:
    error = refusal(dumps({"events": [{"event_type": event_type, "data": {}}]}))
    assert error.path == "events[0].event_type"
    assert error.reason.startswith(f"unknown event type {event_type!r}: expected one of ")
    assert choices(error.reason) == set(EVENT_TYPES)


@pytest.mark.parametrize("value", [5, True, None, [], {}])
def test_event_type_not_a_string(value: Any) -> None:
    error = refusal(dumps({"events": [{"event_type": value, "data": {}}]}))
    assert error.path == "events[0].event_type"
    assert error.reason.startswith("expected `str`")


def test_event_without_data() -> None:
    error = refusal(dumps({"events": [{"event_type": "custom_event"}]}))
    assert str(error) == 'events[0]: missing required field "data"'


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ({"events": {}}, "events: expected `array | null`, got `object`"),
        ({"events": "x"}, "events: expected `array | null`, got `str`"),
        ({"events": [1]}, "events[0]: expected `object`, got `int`"),
        ({"events": [custom(), "x"]}, "events[1]: expected `object`, got `str`"),
        (
            {"events": [{"event_type": "custom_event", "data": None}]},
            "events[0].data: expected `object`, got `null`",
        ),
        (
            {"events": [{"event_type": "custom_event", "data": []}]},
            "events[0].data: expected `object`, got `array`",
        ),
        ({"ip": 5}, "ip: expected `str | null`, got `int`"),
        ({"source_request_id": 1}, "source_request_id: expected `str | null`, got `int`"),
        ({"schema_version": "2"}, "schema_version: expected `int | null`, got `str`"),
        ({"device_info": []}, "device_info: expected `object | null`, got `array`"),
        (
            {"device_info": {"screen_height": "x"}},
            "device_info.screen_height: expected `int | null`, got `str`",
        ),
        (
            {"device_info": {"screen_width": 1.5}},
            "device_info.screen_width: expected `int | null`, got `float`",
        ),
        (
            {"user_identities": {"customerid": 5}},
            "user_identities.customerid: expected `str | null`, got `int`",
        ),
        ({"user_identities": []}, "user_identities: expected `object | null`, got `array`"),
        (
            {"deleted_user_attributes": [1]},
            "deleted_user_attributes[0]: expected `str`, got `int`",
        ),
        ({"modified": "yes"}, "modified: expected `bool | null`, got `str`"),
        (
            {"events": [custom({"event_name": 1})]},
            "events[0].data.event_name: expected `str | null`, got `int`",
        ),
        (
            {"events": [custom({"timestamp_unixtime_ms": "yesterday"})]},
            "events[0].data.timestamp_unixtime_ms: expected `int | null`, got `str`",
        ),
        (
            {"events": [custom({"custom_attributes": []})]},
            "events[0].data.custom_attributes: expected `object | null`, got `array`",
        ),
        (
            {"events": [custom({"custom_flags": [1]})]},
            "events[0].data.custom_flags: expected `object | null`, got `array`",
        ),
        (
            {
                "events": [
                    custom(),
                    {
                        "event_type": "commerce_event",
                        "data": {"product_action": {"products": [{}, {"position": "1"}]}},
                    },
                ]
            },
            "events[1].data.product_action.products[1].position: expected `int | null`, got `str`",
        ),
    ],
    ids=lambda v: v.split(":")[0] if isinstance(v, str) else None,
)
def test_wrong_field_types(batch: dict[str, Any], expected: str) -> None:
    assert str(refusal(dumps(batch))) == expected


@pytest.mark.parametrize(
    ("batch", "path", "reason"),
    [
        ({"user_attributes": {"a": {"b": 1}}}, "user_attributes[...]", "expected `bool"),
        (
            {"events": [custom({"custom_attributes": {"a": [1]}})]},
            "events[0].data.custom_attributes[...]",
            "expected `bool",
        ),
        ({"consent_state": {"gdpr": {"p": 1}}}, "consent_state.gdpr[...]", "expected `object"),
    ],
)
def test_map_values_report_an_elided_key(batch: dict[str, Any], path: str, reason: str) -> None:
    error = refusal(dumps(batch))
    assert error.path == path
    assert error.reason.startswith(reason)


# --- numbers out of range ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        (
            b'{"events":[{"event_type":"custom_event","data":{"timestamp_unixtime_ms":'
            + str(10**30).encode()
            + b"}}]}",
            "events[0].data.timestamp_unixtime_ms",
            "expected `int` <= 9223372036854775807",
        ),
        (
            b'{"timestamp_unixtime_ms":-' + str(10**30).encode() + b"}",
            "timestamp_unixtime_ms",
            "expected `int` >= -9223372036854775808",
        ),
        (b'{"timestamp_unixtime_ms":1e400}', "timestamp_unixtime_ms", "number out of range"),
        (b'{"device_info":{"timezone_offset":1e400}}', "device_info.timezone_offset", ""),
        (b'{"device_info":{"timezone_offset":-1e400}}', "device_info.timezone_offset", ""),
        (
            b'{"events":[{"event_type":"custom_event","data":{"custom_flags":{"a":1e400}}}]}',
            "events[0].data.custom_flags[...]",
            "number out of range",
        ),
        (
            b'{"events":[{"event_type":"custom_event","data":{"custom_flags":{"a":'
            + str(2**64).encode()
            + b"}}}]}",
            "events[0].data.custom_flags",
            "an integer is out of the 64-bit range",
        ),
        (
            b'{"events":[{"event_type":"custom_event","data":{"custom_flags":{"a":[{"b":-'
            + str(2**63 + 1).encode()
            + b"}]}}}]}",
            "events[0].data.custom_flags",
            "an integer is out of the 64-bit range",
        ),
        (
            b'{"events":[{"event_type":"custom_event","data":{"custom_attributes":{"a":1e999}}}]}',
            "events[0].data.custom_attributes[...]",
            "number out of range",
        ),
        (b'{"mpid":' + b"9" * 400 + b"}", "mpid", "expected `int` <= 9223372036854775807"),
    ],
    ids=[
        "int-timestamp",
        "negative-timestamp",
        "float-timestamp",
        "float-field",
        "negative-float-field",
        "flag-float",
        "flag-uint64-plus-one",
        "flag-nested-negative",
        "attribute-float",
        "mpid-400-digits",
    ],
)
def test_huge_numbers(body: bytes, path: str, reason: str) -> None:
    error = refusal(body)
    assert error.path == path
    assert error.reason.startswith(reason or "number out of range")


# --- nesting -------------------------------------------------------------------------------


def test_custom_flags_nested_too_deeply() -> None:
    value: Any = "leaf"
    for _ in range(MAX_FREEFORM_DEPTH + 2):
        value = [value]
    error = refusal(dumps({"events": [custom({"custom_flags": {"deep": value}})]}))
    assert str(error) == (
        f"events[0].data.custom_flags: nested more than {MAX_FREEFORM_DEPTH} levels deep"
    )


@pytest.mark.parametrize("where", ["unknown-key", "custom-flags", "bulk-item"])
def test_json_nested_too_deeply(where: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    if where == "bulk-item":
        error = bulk_refusal(b"[" + deep + b"]")
    else:
        inner = b'{"x":' + deep + b"}"
        if where == "custom-flags":
            inner = b'{"events":[{"event_type":"custom_event","data":{"custom_flags":' + inner
            inner += b"}}]}"
        error = refusal(inner)
    assert str(error) == "$: the JSON is nested too deeply"


# --- bodies that are not a JSON object -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "invalid JSON: the body is empty or cut short"),
        (b"   \n", "invalid JSON: the body is empty or cut short"),
        (b"{", "invalid JSON: the body is empty or cut short"),
        (b'{"events": [', "invalid JSON: the body is empty or cut short"),
        (b"{'a': 1}", "invalid JSON: "),
        (b'{"a": 1,}', "invalid JSON: trailing comma in object"),
        (b'{"a": 1} x', "invalid JSON: trailing characters"),
        (b'{"a": NaN}', "invalid JSON: "),
        (b"\xef\xbb\xbf{}", "invalid JSON: "),  # a byte order mark
        (b"[]", "expected `object`, got `array`"),
        (b"[{}]", "expected `object`, got `array`"),
        (b'"batch"', "expected `object`, got `str`"),
        (b"42", "expected `object`, got `int`"),
        (b"null", "expected `object`, got `null`"),
        (b"true", "expected `object`, got `bool`"),
    ],
)
def test_body_not_an_object(body: bytes, reason: str) -> None:
    error = refusal(body)
    assert error.path == ROOT
    assert error.reason.startswith(reason)


def test_a_lone_invalid_byte_is_not_json() -> None:
    assert str(refusal(b"\xff")) == "$: invalid JSON: invalid character (byte 0)"


@pytest.mark.parametrize(
    "body",
    [
        b'{"ip": "\xff"}',
        b'{"ip": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"ip": "\xc0\xaf"}',  # an overlong encoding
        b'{"note": "\xff"}',  # in a key the models do not know
        b'{"\xff": 1}',
        b'{"events": [{"event_type": "custom_event", "data": {"x": "caf\xe9"}}]}',  # Latin-1
        b'{"events":[{"event_type":"custom_event","data":{"custom_flags":{"a":"\xff"}}}]}',
        b'{"user_attributes": {"caf\xe9": "x"}}',
    ],
    ids=["field", "surrogate", "overlong", "unknown-key", "key", "latin1", "flag", "map-key"],
)
def test_invalid_utf8(body: bytes) -> None:
    assert str(refusal(body)) == "$: the body is not valid UTF-8"


def test_valid_utf8_accepted() -> None:
    body = '{"events": [{"event_type": "custom_event", "data": {"event_name": "café ☕ 🎉"}}]}'
    batch = decode_batch(body.encode())
    assert batch.events is not None
    assert isinstance(batch.events[0], CustomEvent)
    assert batch.events[0].data.event_name == "café ☕ 🎉"


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udc00x", b"\\ud800\\u0041"])
def test_lone_surrogate_escapes_refused(escape: bytes) -> None:
    error = refusal(b'{"note": "' + escape + b'"}')
    assert error.path == ROOT
    assert error.reason.startswith("invalid JSON: ")


# --- bulk bodies ---------------------------------------------------------------------------


def test_split_bulk_keeps_each_batch_verbatim() -> None:
    items = [b'{"events": []}', b'{ "mpid" : 1 ,"x":[1, 2]}', b"{}"]
    body = b"[ " + b" ,\n".join(items) + b" ]"
    assert split_bulk(body, 100) == items


def test_split_bulk_does_not_validate_items() -> None:
    # Items are checked one by one later, so that one bad batch does not sink the others.
    assert split_bulk(b'[1, "x", null, {"events": 5}]', 100) == [
        b"1",
        b'"x"',
        b"null",
        b'{"events": 5}',
    ]


@pytest.mark.parametrize("count", [0, 1, 99, 100])
def test_bulk_within_the_limit(count: int) -> None:
    body = dumps([{"events": []}] * count)
    assert len(split_bulk(body, 100)) == count


@pytest.mark.parametrize(("count", "limit"), [(101, 100), (2, 1), (1000, 100)])
def test_bulk_over_the_limit(count: int, limit: int) -> None:
    error = bulk_refusal(dumps([{}] * count), limit)
    assert str(error) == f"$: {count} batches in one request: at most {limit}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{}", "expected an array of batches"),
        (b'{"events": []}', "expected an array of batches"),
        (b'"x"', "expected an array of batches"),
        (b"null", "expected an array of batches"),
        (b"1", "expected an array of batches"),
        (b"", "invalid JSON: the body is empty or cut short"),
        (b"[{}", "invalid JSON: the body is empty or cut short"),
        (b"[{},]", "invalid JSON: trailing comma in array"),
        (b"[{}] []", "invalid JSON: trailing characters"),
        (b"\xff", "invalid JSON: "),
    ],
)
def test_bulk_body_not_an_array(body: bytes, reason: str) -> None:
    error = bulk_refusal(body)
    assert error.path == ROOT
    assert error.reason.startswith(reason)


def test_bulk_item_errors_come_from_decode_batch() -> None:
    items = split_bulk(b'[{"events": [{"data": {}}]}, {"mpid": "x"}]', 100)
    assert str(refusal(items[0])) == f"events[0]: {EVENT_TYPE_MISSING}"
    assert str(refusal(items[1])) == "mpid: expected a signed 64-bit integer or a numeric string"


def test_bulk_item_with_invalid_utf8_is_refused_on_its_own() -> None:
    items = split_bulk(b'[{}, {"note": "\xff"}]', 100)
    decode_batch(items[0])
    assert str(refusal(items[1])) == "$: the body is not valid UTF-8"
