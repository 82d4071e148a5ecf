"""Unit tests of :mod:`patchbay.collect.ingest`: from a request body to stamped batches.

Pure functions, no server: the clock and the client address come from the
:class:`RequestStamps` the HTTP layer builds (docs/api/events.md, "Stamps" and "The historical
endpoint").
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.records import Input, NewBatch
from patchbay.collect.batch import Batch
from patchbay.collect.decode import ROOT, BadInput, decode_batch
from patchbay.collect.ingest import (
    HISTORICAL_MIN_AGE_MS,
    PARTNER_CHANNEL,
    SERVER_CHANNEL,
    Prepared,
    Rejection,
    RequestStamps,
    batch_id_of,
    channel_of,
    historical_problem,
    new_batch_ids,
    prepare_bulk,
    prepare_single,
)

#: 72 hours in milliseconds, written out: the tests do not take the constant from the code.
SEVENTY_TWO_HOURS_MS = 72 * 60 * 60 * 1000  # 259_200_000

#: Request times far in the past and far in the future: a rule that read the real clock
#: instead of the stamps would get the boundary cases wrong for at least one of them.
Y2000_MS = 946_684_800_000
Y2100_MS = 4_102_444_800_000

SERVER = Input(
    id="in-server", name="backend", type="server", rate_limit=100, enabled=True, created_at_ms=0
)
FEED = Input(id="in-feed", name="feed", type="feed", rate_limit=100, enabled=True, created_at_ms=0)

TOO_NEW = "less than 72 hours old; send recent data to /v2/bulkevents"


def stamps(
    *,
    ip: str | None = "192.0.2.7",
    now_ms: int = Y2000_MS,
    historical: bool = False,
    item: Input = SERVER,
) -> RequestStamps:
    return RequestStamps(input=item, ip=ip, received_at_ms=now_ms, historical=historical)


def event(ts: int | None = None, name: str = "Play") -> dict[str, Any]:
    data: dict[str, Any] = {"event_name": name, "custom_event_type": "other"}
    if ts is not None:
        data["timestamp_unixtime_ms"] = ts
    return {"event_type": "custom_event", "data": data}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def bulk(*batches: Any) -> bytes:
    return dumps(list(batches))


# --- the historical endpoint: the 72-hour rule --------------------------------------------


def test_historical_min_age_is_72_hours() -> None:
    assert HISTORICAL_MIN_AGE_MS == SEVENTY_TWO_HOURS_MS


@pytest.mark.parametrize("now_ms", [Y2000_MS, Y2100_MS])
@pytest.mark.parametrize(
    ("age_ms", "accepted"),
    [
        (SEVENTY_TWO_HOURS_MS + 1, True),  # one millisecond older than the limit
        (SEVENTY_TWO_HOURS_MS, True),  # exactly 72 hours old: "at least 72 hours old"
        (SEVENTY_TWO_HOURS_MS - 1, False),  # one millisecond too young
    ],
)
def test_72_hour_boundary(now_ms: int, age_ms: int, accepted: bool) -> None:
    batch = {"events": [event(now_ms - age_ms)]}
    problem = historical_problem(decode_batch(dumps(batch)), now_ms)
    prepared = prepare_bulk(bulk(batch), stamps(now_ms=now_ms, historical=True), 100)
    if accepted:
        assert problem is None
        assert len(prepared.batches) == 1 and prepared.rejected == []
        assert prepared.batches[0].historical is True
    else:
        assert problem == f"events[0].data.timestamp_unixtime_ms: {TOO_NEW}"
        assert prepared.batches == []
        assert prepared.rejected == [
            Rejection(0, "BAD_REQUEST", f"events[0].data.timestamp_unixtime_ms: {TOO_NEW}")
        ]


def test_the_clock_is_the_request_time() -> None:
    body = bulk({"events": [event(Y2000_MS)]})
    on_time = stamps(now_ms=Y2000_MS + SEVENTY_TWO_HOURS_MS, historical=True)
    early = stamps(now_ms=Y2000_MS + SEVENTY_TWO_HOURS_MS - 1, historical=True)
    assert len(prepare_bulk(body, on_time, 100).batches) == 1
    assert len(prepare_bulk(body, early, 100).rejected) == 1


def test_every_event_must_be_old_enough() -> None:
    old = Y2100_MS - SEVENTY_TWO_HOURS_MS
    batch = {"events": [event(old), event(old - 5), event(old + 1), event(None)]}
    # The first offending event is named, by its index.
    assert historical_problem(decode_batch(dumps(batch)), Y2100_MS) == (
        f"events[2].data.timestamp_unixtime_ms: {TOO_NEW}"
    )


def test_a_future_timestamp_is_too_new() -> None:
    batch = decode_batch(dumps({"events": [event(Y2000_MS + 1)]}))
    assert historical_problem(batch, Y2000_MS) == f"events[0].data.timestamp_unixtime_ms: {TOO_NEW}"


@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        ({}, "events: a historical batch needs at least one event"),
        ({"events": []}, "events: a historical batch needs at least one event"),
        ({"events": None}, "events: a historical batch needs at least one event"),
        (
            {"events": [event(0), event(None)]},
            "events[1].data.timestamp_unixtime_ms: required on the historical endpoint",
        ),
    ],
)
def test_historical_batches_need_timestamped_events(batch: dict[str, Any], problem: str) -> None:
    assert historical_problem(decode_batch(dumps(batch)), Y2100_MS) == problem
    prepared = prepare_bulk(bulk(batch), stamps(now_ms=Y2100_MS, historical=True), 100)
    assert prepared.batches == []
    assert prepared.rejected == [Rejection(0, "BAD_REQUEST", problem)]


def test_historical_single_batch_raises_with_the_path() -> None:
    body = dumps({"events": [event(Y2000_MS)]})
    with pytest.raises(BadInput) as caught:
        prepare_single(body, stamps(now_ms=Y2000_MS, historical=True))
    assert caught.value.path == "events[0].data.timestamp_unixtime_ms"
    assert caught.value.reason == TOO_NEW


@pytest.mark.parametrize(
    "batch", [{}, {"events": []}, {"events": [event(None)]}, {"events": [event(Y2000_MS + 1)]}]
)
def test_the_rule_is_only_for_the_historical_endpoint(batch: dict[str, Any]) -> None:
    prepared = prepare_bulk(bulk(batch), stamps(now_ms=Y2000_MS), 100)
    assert prepared.rejected == [] and len(prepared.batches) == 1
    assert prepared.batches[0].historical is False
    assert prepare_single(dumps(batch), stamps(now_ms=Y2000_MS)).batches[0].historical is False


# --- the stored IP ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_ip", "request_ip", "stored"),
    [
        ("203.0.113.9", "192.0.2.7", "203.0.113.9"),  # the batch's own ip wins
        ("203.0.113.9", None, "203.0.113.9"),
        (None, "192.0.2.7", "192.0.2.7"),  # else the request's address
        (None, None, None),  # neither: no ip
        # An empty ip counts as none (``batch.ip or request ip``).
        ("", "192.0.2.7", "192.0.2.7"),
    ],
)
def test_stored_ip(batch_ip: str | None, request_ip: str | None, stored: str | None) -> None:
    request = stamps(ip=request_ip)
    with_ip = {"ip": batch_ip, "events": [event(1)]}
    without_key = {"events": [event(1)]}
    bodies = [with_ip] if batch_ip is not None else [with_ip, without_key]  # null or absent
    for batch in bodies:
        assert prepare_single(dumps(batch), request).batches[0].ip == stored
        assert prepare_bulk(bulk(batch), request, 100).batches[0].ip == stored


def test_each_batch_of_a_bulk_request_gets_its_own_ip() -> None:
    body = bulk({"ip": "203.0.113.1"}, {}, {"ip": "203.0.113.3"})
    ips = [b.ip for b in prepare_bulk(body, stamps(ip="192.0.2.7"), 100).batches]
    assert ips == ["203.0.113.1", "192.0.2.7", "203.0.113.3"]


# --- bulk requests: per-batch rejection ---------------------------------------------------

BAD_EVENT_TYPE = {"events": [{"event_type": "foo", "data": {}}]}
BAD_EVENT_TYPE_MESSAGE = "events[0].event_type: unknown event type 'foo': expected one of "


def test_bulk_keeps_valid_batches_in_order_and_lists_the_rejected() -> None:
    body = (
        b'[{"source_request_id": "a", "events": []} ,'
        b' {"events": [{"event_type": "foo", "data": {}}]},\n'
        b'  {"source_request_id": "c",  "events": ['
        + dumps(event(1))
        + b", "
        + dumps(event(2))
        + b"]}, 42, "
        b'{"mpid": "abc"}, {"source_request_id": "f"}]'
    )
    prepared = prepare_bulk(body, stamps(), 100)
    # The valid batches, in request order, each stored as its exact bytes in the request.
    assert [b.source_request_id for b in prepared.batches] == ["a", "c", "f"]
    assert [b.body for b in prepared.batches] == [
        b'{"source_request_id": "a", "events": []}',
        b'{"source_request_id": "c",  "events": ['
        + dumps(event(1))
        + b", "
        + dumps(event(2))
        + b"]}",
        b'{"source_request_id": "f"}',
    ]
    assert prepared.events == [0, 2, 0]
    # The rejected ones by their index in the request, each with the JSON path of its error.
    assert [(r.index, r.code) for r in prepared.rejected] == [
        (1, "BAD_REQUEST"),
        (3, "BAD_REQUEST"),
        (4, "BAD_REQUEST"),
    ]
    assert prepared.rejected[0].message.startswith(BAD_EVENT_TYPE_MESSAGE)
    assert prepared.rejected[1].message == "$: expected `object`, got `int`"
    assert prepared.rejected[2].message == (
        "mpid: expected a signed 64-bit integer or a numeric string"
    )


def test_a_rejection_message_is_the_decoder_error() -> None:
    prepared = prepare_bulk(bulk({}, BAD_EVENT_TYPE), stamps(), 100)
    with pytest.raises(BadInput) as caught:
        decode_batch(dumps(BAD_EVENT_TYPE))
    assert prepared.rejected == [Rejection(1, "BAD_REQUEST", str(caught.value))]


def test_bulk_with_every_batch_invalid() -> None:
    prepared = prepare_bulk(bulk(BAD_EVENT_TYPE, 1, "x", None), stamps(), 100)
    assert prepared.batches == [] and prepared.events == []
    assert [r.index for r in prepared.rejected] == [0, 1, 2, 3]
    assert prepared.rejected[0].message.startswith(BAD_EVENT_TYPE_MESSAGE)
    assert [r.message for r in prepared.rejected[1:]] == [
        "$: expected `object`, got `int`",
        "$: expected `object`, got `str`",
        "$: expected `object`, got `null`",
    ]


@pytest.mark.parametrize("body", [b"[]", b" [ ] ", b"[\n]"])
def test_empty_bulk_prepares_nothing(body: bytes) -> None:
    assert prepare_bulk(body, stamps(), 100) == Prepared()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "invalid JSON: the body is empty or cut short"),
        (b"{}", "expected an array of batches"),
        (b'"[]"', "expected an array of batches"),
    ],
)
def test_a_bulk_body_that_is_not_an_array_is_refused_as_a_whole(body: bytes, reason: str) -> None:
    with pytest.raises(BadInput) as caught:
        prepare_bulk(body, stamps(), 100)
    assert (caught.value.path, caught.value.reason) == (ROOT, reason)


@pytest.mark.parametrize("limit", [1, 3, 100])
def test_batch_limit(limit: int) -> None:
    at_limit = prepare_bulk(bulk(*[{}] * limit), stamps(), limit)
    assert len(at_limit.batches) == limit and at_limit.rejected == []
    with pytest.raises(BadInput) as caught:
        prepare_bulk(bulk(*[{}] * (limit + 1)), stamps(), limit)
    assert caught.value.path == ROOT
    assert caught.value.reason == f"{limit + 1} batches in one request: at most {limit}"


def test_the_limit_counts_invalid_batches_too() -> None:
    with pytest.raises(BadInput):
        prepare_bulk(bulk({}, 1, 2), stamps(), 2)


# --- stamps -------------------------------------------------------------------------------


def _is_uuid4(text: str) -> bool:
    parsed = uuid.UUID(text)
    return parsed.version == 4 and str(parsed) == text


def test_batch_ids_are_unique_uuid4s() -> None:
    first = prepare_bulk(bulk(*[{}] * 100), stamps(), 100)
    second = prepare_bulk(bulk(*[{}] * 100), stamps(), 100)
    single = prepare_single(b"{}", stamps())
    ids = [b.batch_id for b in [*first.batches, *second.batches, *single.batches]]
    assert len(ids) == 201 == len(set(ids))
    assert all(_is_uuid4(i) for i in ids)
    generated = new_batch_ids(50)
    assert len(generated) == 50 == len(set(generated)) and all(map(_is_uuid4, generated))
    assert new_batch_ids(0) == []


def test_a_batch_with_a_source_request_id_has_the_id_of_every_copy_of_it() -> None:
    """Its id derives from its input and ``source_request_id``: a copy sent again (after a
    503, with another body or time) has the same id, another input's or request's another
    one; a batch without one gets a random id."""
    first = prepare_bulk(bulk({"source_request_id": "r1"}, {}), stamps(now_ms=Y2000_MS), 100)
    again = prepare_single(
        dumps({"source_request_id": "r1", "events": [event(1)]}), stamps(now_ms=Y2100_MS)
    )
    other_input = prepare_single(dumps({"source_request_id": "r1"}), stamps(item=FEED))
    other_request = prepare_single(dumps({"source_request_id": "r2"}), stamps())
    derived = first.batches[0].batch_id
    assert derived == again.batches[0].batch_id == batch_id_of(SERVER.id, "r1")
    assert uuid.UUID(derived).version == 5
    assert other_input.batches[0].batch_id == batch_id_of(FEED.id, "r1") != derived
    assert other_request.batches[0].batch_id == batch_id_of(SERVER.id, "r2") != derived
    assert _is_uuid4(first.batches[1].batch_id)


@pytest.mark.parametrize(("item", "channel"), [(SERVER, SERVER_CHANNEL), (FEED, PARTNER_CHANNEL)])
@pytest.mark.parametrize("historical", [False, True])
def test_stamps_are_as_given(item: Input, channel: str, historical: bool) -> None:
    assert (SERVER_CHANNEL, PARTNER_CHANNEL) == ("server_to_server", "partner")
    assert channel_of(item) == channel
    now = Y2100_MS
    old = now - SEVENTY_TWO_HOURS_MS
    request = stamps(item=item, now_ms=now, historical=historical)
    body = bulk({"events": [event(old)]}, {"events": [event(old - 1)], "source_request_id": "r"})
    prepared = prepare_bulk(body, request, 100)
    single = prepare_single(dumps({"events": [event(old)]}), request)
    for stored in [*prepared.batches, *single.batches]:
        assert stored.input_id == item.id
        assert stored.channel == channel
        assert stored.received_at_ms == now
        assert stored.historical is historical


def test_source_request_id_is_carried() -> None:
    body = bulk({"source_request_id": "req-1"}, {}, {"source_request_id": None})
    assert [b.source_request_id for b in prepare_bulk(body, stamps(), 100).batches] == [
        "req-1",
        None,
        None,
    ]
    single = prepare_single(dumps({"source_request_id": "req-2"}), stamps())
    assert single.batches[0].source_request_id == "req-2"


def test_prepare_single() -> None:
    body = b'{"events": [' + dumps(event(1)) + b", " + dumps(event(2)) + b'], "ip": "203.0.113.5"}'
    prepared = prepare_single(body, stamps(ip="192.0.2.7", now_ms=Y2000_MS))
    assert prepared.rejected == []
    assert prepared.events == [2]
    [stored] = prepared.batches
    assert stored == NewBatch(
        batch_id=stored.batch_id,
        input_id=SERVER.id,
        received_at_ms=Y2000_MS,
        channel=SERVER_CHANNEL,
        body=body,
        ip="203.0.113.5",
        source_request_id=None,
        historical=False,
    )


def test_prepare_single_refuses_an_invalid_batch() -> None:
    with pytest.raises(BadInput) as caught:
        prepare_single(dumps(BAD_EVENT_TYPE), stamps())
    assert caught.value.path == "events[0].event_type"
    with pytest.raises(BadInput) as caught:
        prepare_single(b"[]", stamps())
    assert caught.value.path == ROOT


# --- property: valid batches round-trip ---------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
INT64 = st.integers(-(2**63), 2**63 - 1)
EVENTS = st.lists(
    st.builds(
        lambda name, ts, attrs: {
            "event_type": "custom_event",
            "data": {
                "event_name": name,
                "custom_event_type": "other",
                "timestamp_unixtime_ms": ts,
                "custom_attributes": attrs,
            },
        },
        TEXT,
        st.integers(0, Y2100_MS),
        st.dictionaries(TEXT, TEXT, max_size=3),
    ),
    max_size=3,
)
BATCHES = st.fixed_dictionaries(
    {},
    optional={
        "events": EVENTS,
        "ip": st.none() | TEXT,
        "source_request_id": st.none() | TEXT,
        "environment": st.sampled_from(["production", "development"]),
        "mpid": INT64,
        "user_attributes": st.dictionaries(TEXT, TEXT | INT64, max_size=3),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(BATCHES, max_size=8), request_ip=st.none() | st.just("192.0.2.7"))
def test_valid_batches_round_trip(batches: list[dict[str, Any]], request_ip: str | None) -> None:
    body = msgspec.json.encode(batches)
    prepared = prepare_bulk(body, stamps(ip=request_ip), 100)
    assert prepared.rejected == []
    assert len(prepared.batches) == len(batches)
    # Decoded in one go, independently of the bulk split, as the reference.
    expected = msgspec.json.decode(body, type=list[Batch])
    for given_batch, reference, stored, count in zip(
        batches, expected, prepared.batches, prepared.events, strict=True
    ):
        assert stored.body == msgspec.json.encode(given_batch)
        assert decode_batch(stored.body) == reference
        assert count == len(given_batch.get("events") or [])
        assert stored.ip == (given_batch.get("ip") or request_ip)
        assert stored.source_request_id == given_batch.get("source_request_id")
