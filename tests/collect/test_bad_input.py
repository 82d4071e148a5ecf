"""Bad input against a real ``patchbay serve``: the documented status, an error body in the
Events API's shape naming the bad value's path, nothing written, and the server unharmed.

One server serves the whole module (starting one takes about a second); every test compares
the log before and after its own requests, so the tests stay independent of each other.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import re
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import Server, add_input, run_cli, start_server, stop_server
from tests.deployments import Deployment

pytestmark = pytest.mark.slow

LIMIT = 256 * 1024
EVENT_TYPE_MISSING = 'Required event field "event_type" is missing or empty.'
HOUR_MS = 3600 * 1000


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, module_deployment: Deployment
) -> Iterator[Server]:
    """The conftest ``server`` (a real ``patchbay serve``, one unlimited input), per module
    and deployment."""
    data_dir = tmp_path_factory.mktemp("bad-input") / "data"
    credentials = add_input(data_dir, "test-server")
    running = start_server(data_dir)
    running.credentials = credentials
    running.deployment = module_deployment
    yield running
    stop_server(running)


# --- helpers -------------------------------------------------------------------------------


def valid_batch(**extra: Any) -> dict[str, Any]:
    """A small valid batch, unique thanks to its ``source_request_id``."""
    return {
        "source_request_id": str(uuid.uuid4()),
        "environment": "development",
        "events": [
            {
                "event_type": "custom_event",
                "data": {"event_name": "ok", "custom_event_type": "other"},
            }
        ],
        **extra,
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def offsets(server: Server) -> list[int]:
    return [b.offset for b in server.stored()]


def error_of(status: int, headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """The one error of an error response, checked for the Events API's shape."""
    assert headers_ci(headers)["content-type"].startswith("application/json"), headers
    parsed = json.loads(body)
    assert list(parsed) == ["errors"], parsed
    assert len(parsed["errors"]) == 1, parsed
    error = parsed["errors"][0]
    assert sorted(error) == ["code", "message"], error
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    return error["code"], error["message"]


def assert_still_serving(server: Server) -> None:
    """The process runs and a valid request is accepted and stored."""
    assert server.alive()
    before = offsets(server)
    status, _, answer = server.post("/v2/events", dumps(valid_batch()))
    assert status == 202, answer
    assert json.loads(answer) == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert len(offsets(server)) == len(before) + 1


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def headers_ci(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# --- the bad-input suite -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A request, and the status, code and message start it must be answered with."""

    id: str
    route: str
    body: bytes
    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _flags(value: Any) -> bytes:
    return dumps({"events": [{"event_type": "custom_event", "data": {"custom_flags": value}}]})


def _nested_flags(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return {"deep": value}


def _pad(size: int) -> bytes:
    """A valid batch of exactly ``size`` bytes."""
    head, tail = b'{"events": [], "pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


_GOOD = dumps(valid_batch())
_GOOD_GZ = gzipped(_GOOD)
_BAD_CRC = _GOOD_GZ[:-8] + bytes([_GOOD_GZ[-8] ^ 0xFF]) + _GOOD_GZ[-7:]
_BOMB = gzipped(b'{"events": [], "pad": "' + b" " * (16 * 1024 * 1024) + b'"}')
_MISSING_TYPE = dumps({"events": [{"event_type": "custom_event", "data": {}}, {"data": {}}]})
_DUPLICATE = b'{"environment": "development", "events": [], "environment": "production"}'
_EVENTS = "/v2/events"
_BULK = "/v2/bulkevents"
_HISTORICAL = "/v2/bulkevents/historical"
BR = "BAD_REQUEST"

CASES = [
    # Not JSON.
    Case("invalid-json", _EVENTS, b'{"events": [', 400, BR, "$: invalid JSON: "),
    Case("invalid-json-bulk", _BULK, b'[{"events": []},', 400, BR, "$: invalid JSON: "),
    Case("not-json", _EVENTS, b"hello", 400, BR, "$: invalid JSON: "),
    Case("trailing-garbage", _EVENTS, b'{"events": []} {}', 400, BR, "$: invalid JSON: trailing"),
    Case("nan", _EVENTS, b'{"events": [], "x": NaN}', 400, BR, "$: invalid JSON: "),
    Case("empty", _EVENTS, b"", 400, BR, "$: invalid JSON: the body is empty or cut short"),
    Case("empty-bulk", _BULK, b"", 400, BR, "$: invalid JSON: the body is empty or cut short"),
    Case("blank", _EVENTS, b" \r\n", 400, BR, "$: invalid JSON: the body is empty or cut short"),
    # The wrong JSON type for the route.
    Case("array-to-events", _EVENTS, b"[{}]", 400, BR, "$: expected `object`, got `array`"),
    Case("string-to-events", _EVENTS, b'"x"', 400, BR, "$: expected `object`, got `str`"),
    Case("null-to-events", _EVENTS, b"null", 400, BR, "$: expected `object`, got `null`"),
    Case("object-to-bulk", _BULK, b'{"events": []}', 400, BR, "$: expected an array of batches"),
    Case("object-to-hist", _HISTORICAL, b"{}", 400, BR, "$: expected an array of batches"),
    # Events.
    Case("missing-event-type", _EVENTS, _MISSING_TYPE, 400, BR, "events[1]: " + EVENT_TYPE_MISSING),
    Case(
        "empty-event-type",
        _EVENTS,
        dumps({"events": [{"event_type": "", "data": {}}]}),
        400,
        BR,
        "events[0].event_type: " + EVENT_TYPE_MISSING,
    ),
    Case(
        "unknown-event-type",
        _EVENTS,
        dumps({"events": [{"event_type": "page_view", "data": {}}]}),
        400,
        BR,
        "events[0].event_type: unknown event type 'page_view': expected one of custom_event,",
    ),
    Case(
        "event-without-data",
        _EVENTS,
        dumps({"events": [{"event_type": "screen_view"}]}),
        400,
        BR,
        'events[0]: missing required field "data"',
    ),
    # Wrong field types and values.
    Case("mpid-word", _EVENTS, dumps({"mpid": "abc"}), 400, BR, "mpid: expected a signed 64-bit"),
    Case("mpid-float", _EVENTS, dumps({"mpid": 1.5}), 400, BR, "mpid: expected `int | str | null`"),
    Case("events-object", _EVENTS, dumps({"events": {}}), 400, BR, "events: expected `array"),
    Case("ip-number", _EVENTS, dumps({"ip": 7}), 400, BR, "ip: expected `str | null`, got `int`"),
    Case(
        "environment",
        _EVENTS,
        dumps({"environment": "staging"}),
        400,
        BR,
        "environment: expected one of ",
    ),
    Case(
        "device-info-int",
        _EVENTS,
        dumps({"device_info": {"screen_height": "tall"}}),
        400,
        BR,
        "device_info.screen_height: expected `int | null`, got `str`",
    ),
    Case(
        "event-enum",
        _EVENTS,
        dumps(
            {
                "events": [
                    {"event_type": "custom_event", "data": {"custom_event_type": "other"}},
                    {"event_type": "custom_event", "data": {"custom_event_type": "bogus"}},
                ]
            }
        ),
        400,
        BR,
        "events[1].data.custom_event_type: expected one of ",
    ),
    Case(
        "product-position",
        _EVENTS,
        dumps(
            {
                "events": [
                    {
                        "event_type": "commerce_event",
                        "data": {
                            "product_action": {
                                "action": "purchase",
                                "products": [{"position": "1"}],
                            }
                        },
                    }
                ]
            }
        ),
        400,
        BR,
        "events[0].data.product_action.products[0].position: expected `int | null`",
    ),
    # Bulk size.
    Case(
        "101-batches",
        _BULK,
        dumps([valid_batch() for _ in range(101)]),
        400,
        BR,
        "$: 101 batches in one request: at most 100",
    ),
    Case(
        "101-batches-historical",
        _HISTORICAL,
        dumps([{}] * 101),
        400,
        BR,
        "$: 101 batches in one request: at most 100",
    ),
    # Body size.
    Case("oversize", _EVENTS, _pad(LIMIT + 1), 413, "REQUEST_TOO_LARGE", "$: the body is over"),
    Case(
        "oversize-bulk",
        _BULK,
        b"[" + _pad(LIMIT) + b"]",
        413,
        "REQUEST_TOO_LARGE",
        f"$: the body is over the limit of {LIMIT} bytes",
    ),
    # Compression.
    Case(
        "gzip-bomb",
        _EVENTS,
        _BOMB,
        413,
        "REQUEST_TOO_LARGE",
        f"$: the decompressed body is over the limit of {LIMIT} bytes",
        {"Content-Encoding": "gzip"},
    ),
    Case(
        "gzip-bomb-bulk",
        _BULK,
        _BOMB,
        413,
        "REQUEST_TOO_LARGE",
        "$: the decompressed body is over",
        {"Content-Encoding": "gzip"},
    ),
    Case(
        "gzip-just-over",
        _EVENTS,
        gzipped(_pad(LIMIT + 1)),
        413,
        "REQUEST_TOO_LARGE",
        "$: the decompressed body is over",
        {"Content-Encoding": "gzip"},
    ),
    Case(
        "corrupt-gzip",
        _EVENTS,
        b"this is not gzip",
        400,
        BR,
        "$: invalid gzip data",
        {"Content-Encoding": "gzip"},
    ),
    Case(
        "gzip-bad-crc",
        _EVENTS,
        _BAD_CRC,
        400,
        BR,
        "$: invalid gzip data",
        {"Content-Encoding": "gzip"},
    ),
    Case(
        "gzip-cut-short",
        _EVENTS,
        _GOOD_GZ[:-6],
        400,
        BR,
        "$: the gzip data is cut short",
        {"Content-Encoding": "gzip"},
    ),
    Case(
        "gzip-trailing-garbage",
        _EVENTS,
        _GOOD_GZ + b"junk",
        400,
        BR,
        "$: data after the end of the gzip stream",
        {"Content-Encoding": "gzip"},
    ),
    Case(
        "gzip-empty",
        _EVENTS,
        b"",
        400,
        BR,
        "$: the gzip data is cut short",
        {"Content-Encoding": "gzip"},
    ),
    Case(
        "gzip-of-bad-json",
        _EVENTS,
        gzipped(b'{"events": [}'),
        400,
        BR,
        "$: invalid JSON: ",
        {"Content-Encoding": "gzip"},
    ),
    Case(
        "brotli",
        _EVENTS,
        _GOOD,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "$: unsupported Content-Encoding 'br'",
        {"Content-Encoding": "br"},
    ),
    Case(
        "deflate",
        _BULK,
        zlib.compress(b"[" + _GOOD + b"]"),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "$: unsupported Content-Encoding 'deflate'",
        {"Content-Encoding": "deflate"},
    ),
    Case(
        "gzip-twice",
        _EVENTS,
        gzipped(_GOOD_GZ),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "$: unsupported Content-Encoding",
        {"Content-Encoding": "gzip, gzip"},
    ),
    # Invalid UTF-8.
    Case(
        "utf8-in-field",
        _EVENTS,
        b'{"events": [], "ip": "\xff\xfe"}',
        400,
        BR,
        "$: the body is not valid UTF-8",
    ),
    Case(
        "utf8-in-unknown-key",
        _EVENTS,
        b'{"events": [], "note": "caf\xe9"}',
        400,
        BR,
        "$: the body is not valid UTF-8",
    ),
    Case(
        "utf8-in-event-data",
        _EVENTS,
        b'{"events": [{"event_type": "custom_event", "data": {"event_name": "\xc0\xaf"}}]}',
        400,
        BR,
        "$: the body is not valid UTF-8",
    ),
    Case(
        "utf8-gzipped",
        _EVENTS,
        gzipped(b'{"events": [], "ip": "\xff"}'),
        400,
        BR,
        "$: the body is not valid UTF-8",
        {"Content-Encoding": "gzip"},
    ),
    Case("lone-surrogate", _EVENTS, b'{"ip": "\\udc00abc"}', 400, BR, "$: invalid JSON: "),
    # Nesting.
    Case(
        "deep-nesting",
        _EVENTS,
        b'{"events": [], "x": ' + _deep(50_000) + b"}",
        400,
        BR,
        "$: the JSON is nested too deeply",
    ),
    Case(
        "deep-nesting-bulk",
        _BULK,
        b"[" + _deep(50_000) + b"]",
        400,
        BR,
        "$: the JSON is nested too deeply",
    ),
    Case(
        "deep-custom-flags",
        _EVENTS,
        _flags(_nested_flags(40)),
        400,
        BR,
        "events[0].data.custom_flags: nested more than 32 levels deep",
    ),
    # Huge numbers.
    Case(
        "huge-timestamp",
        _EVENTS,
        b'{"events": [{"event_type": "custom_event", "data": {"timestamp_unixtime_ms": '
        + b"9" * 30
        + b"}}]}",
        400,
        BR,
        "events[0].data.timestamp_unixtime_ms: expected `int` <= 9223372036854775807",
    ),
    Case(
        "mpid-over-int64",
        _EVENTS,
        b'{"mpid": 9223372036854775808}',
        400,
        BR,
        "mpid: expected `int` <= 9223372036854775807",
    ),
    Case(
        "mpid-string-over-int64",
        _EVENTS,
        b'{"mpid": "-9223372036854775809"}',
        400,
        BR,
        "mpid: out of the signed 64-bit range",
    ),
    Case(
        "float-overflow",
        _EVENTS,
        b'{"device_info": {"timezone_offset": 1e999}}',
        400,
        BR,
        "device_info.timezone_offset: number out of range",
    ),
    Case(
        "huge-flag",
        _EVENTS,
        _flags({"n": 2**64}),
        400,
        BR,
        "events[0].data.custom_flags: an integer is out of the 64-bit range",
    ),
    Case(
        "huge-flag-float",
        _EVENTS,
        b'{"events": [{"event_type": "custom_event", "data": {"custom_flags": {"f": 1e400}}}]}',
        400,
        BR,
        "events[0].data.custom_flags[...]: number out of range",
    ),
    # A key twice in one object (decoders would keep the last one silently): the whole
    # request is refused, a bulk one too (its valid batches are not stored).
    Case("duplicate-key", _EVENTS, _DUPLICATE, 400, BR, "environment: duplicate key"),
    Case(
        "duplicate-escaped-key",
        _EVENTS,
        b'{"events": [{"event_type": "custom_event", "data": {"event_name": "x",'
        b' "custom_event_type": "other", "custom_attributes": {"a": 1, "\\u0061": 2}}}]}',
        400,
        BR,
        "events[0].data.custom_attributes.a: duplicate key",
    ),
    Case(
        "duplicate-odd-key",
        _EVENTS,
        b'{"user_attributes": {"a.b \\"c\\"": 1, "a.b \\"c\\"": 2}}',
        400,
        BR,
        'user_attributes["a.b \\"c\\""]: duplicate key',
    ),
    Case(
        "duplicate-bulk",
        _BULK,
        b"[" + _GOOD + b"," + _DUPLICATE + b"]",
        400,
        BR,
        "[1].environment: duplicate key",
    ),
    Case(
        "duplicate-historical",
        _HISTORICAL,
        b"[" + _DUPLICATE + b"]",
        400,
        BR,
        "[0].environment: duplicate key",
    ),
    Case(
        "duplicate-gzip",
        _EVENTS,
        gzipped(_DUPLICATE),
        400,
        BR,
        "environment: duplicate key",
        {"Content-Encoding": "gzip"},
    ),
    # A body declared as anything but JSON.
    *(
        Case(
            f"content-type-{kind.split('/')[1][:9]}-{route.rsplit('/', 1)[1]}",
            route,
            _GOOD,
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"$: unsupported Content-Type {kind.partition(';')[0]!r}: send application/json",
            {"Content-Type": kind},
        )
        for kind in (
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
        )
        for route in (_EVENTS, _BULK)
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(server: Server, case: Case) -> None:
    before = offsets(server)
    status, headers, body = server.post(case.route, case.body, case.headers)
    assert status == case.status, body
    code, message = error_of(status, headers, body)
    assert code == case.code
    assert message.startswith(case.message), message
    assert offsets(server) == before
    assert_still_serving(server)


def test_content_length_over_the_limit_is_refused_before_the_body(server: Server) -> None:
    """A declared Content-Length over the limit is answered at once, with no body sent."""
    before = offsets(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", "/v2/events")
        conn.putheader("Authorization", server.credentials.basic)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(100 * 1024 * 1024))
        conn.endheaders()
        response = conn.getresponse()
        status, headers, body = response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()
    assert status == 413
    assert error_of(status, headers, body) == (
        "REQUEST_TOO_LARGE",
        f"$: the body is over the limit of {LIMIT} bytes",
    )
    assert offsets(server) == before
    assert_still_serving(server)


def test_chunked_body_over_the_limit(server: Server) -> None:
    """Without a Content-Length the limit is enforced while reading."""
    before = offsets(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = [b'{"events": [], "pad": "'] + [b"x" * 65536] * 5 + [b'"}']
    try:
        conn.request(
            "POST",
            "/v2/events",
            body=iter(chunks),
            headers={"Authorization": server.credentials.basic},
            encode_chunked=True,
        )
        response = conn.getresponse()
        status, headers, body = response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()
    assert status == 413
    assert error_of(status, headers, body)[0] == "REQUEST_TOO_LARGE"
    assert offsets(server) == before
    assert_still_serving(server)


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_body_of_exactly_the_limit_is_accepted(server: Server, encoding: str | None) -> None:
    body = _pad(LIMIT)
    headers = {}
    if encoding:
        body, headers = gzipped(body), {"Content-Encoding": encoding}
    status, _, answer = server.post("/v2/events", body, headers)
    assert status == 202, answer
    assert server.stored()[-1].body == _pad(LIMIT)


# --- bulk: each batch on its own -------------------------------------------------------------


def test_bulk_stores_the_valid_batches_and_lists_the_rejected(server: Server) -> None:
    good = [dumps(valid_batch()) for _ in range(3)]
    items = [
        good[0],
        dumps({"events": [{"data": {}}]}),
        good[1],
        dumps({"events": [{"event_type": "custom_event", "data": {"custom_event_type": "x"}}]}),
        dumps({"mpid": "not-a-number"}),
        b'{"events": [], "ip": "\xff"}',
        b"[]",
        good[2],
    ]
    before = offsets(server)
    status, headers, answer = server.post("/v2/bulkevents", b"[" + b",".join(items) + b"]")
    assert status == 202, answer
    assert headers_ci(headers)["content-type"].startswith("application/json")
    result = json.loads(answer)
    assert result["accepted"] == 3
    assert result["duplicates"] == 0
    rejected = result["rejected"]
    assert [r["index"] for r in rejected] == [1, 3, 4, 5, 6]
    assert all(sorted(r) == ["code", "index", "message"] for r in rejected)
    assert all(r["code"] == "BAD_REQUEST" for r in rejected)
    messages = [r["message"] for r in rejected]
    assert messages[0] == "events[0]: " + EVENT_TYPE_MISSING
    assert messages[1].startswith("events[0].data.custom_event_type: expected one of ")
    assert messages[2] == "mpid: expected a signed 64-bit integer or a numeric string"
    assert messages[3] == "$: the body is not valid UTF-8"
    assert messages[4] == "$: expected `object`, got `array`"
    stored = server.stored()[len(before) :]
    assert [b.body for b in stored] == good  # the valid ones, verbatim and in order


@pytest.mark.parametrize("route", ["/v2/bulkevents", "/v2/bulkevents/historical"])
def test_bulk_of_only_invalid_batches_is_400(server: Server, route: str) -> None:
    items = [
        dumps({"events": [{"data": {}}]}),
        dumps({"environment": "prod"}),
        b"42",
    ]
    before = offsets(server)
    status, headers, answer = server.post(route, b"[" + b",".join(items) + b"]")
    assert status == 400, answer
    assert headers_ci(headers)["content-type"].startswith("application/json")
    errors = json.loads(answer)["errors"]
    assert [e["code"] for e in errors] == ["BAD_REQUEST"] * 3
    assert errors[0]["message"] == "[0] events[0]: " + EVENT_TYPE_MISSING
    assert errors[1]["message"].startswith("[1] environment: expected one of ")
    assert errors[2]["message"] == "[2] $: expected `object`, got `int`"
    assert offsets(server) == before
    assert_still_serving(server)


def test_empty_bulk_is_accepted_and_stores_nothing(server: Server) -> None:
    before = offsets(server)
    status, _, answer = server.post("/v2/bulkevents", b"[]")
    assert status == 202, answer
    assert json.loads(answer) == {"accepted": 0, "duplicates": 0, "rejected": []}
    assert offsets(server) == before


# --- what a body may be declared as -----------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",  # the Python and Node SDKs (tests/data/captured)
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/vnd.mparticle+json",
        None,  # undeclared: read as JSON (plain HTTP clients send no Content-Type)
    ],
)
def test_json_content_types_are_accepted(server: Server, content_type: str | None) -> None:
    headers = {"Authorization": server.credentials.basic}
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = dumps(valid_batch())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/v2/events", body=body, headers=headers)
        response = conn.getresponse()
        status, answer = response.status, response.read()
    finally:
        conn.close()
    assert status == 202, answer
    assert server.stored()[-1].body == body


def test_same_key_in_different_objects_or_in_strings_is_accepted(server: Server) -> None:
    body = (
        b'{"environment": "development", "user_attributes": {"environment": "x:y",'
        b' "k": "\\"k\\": 1, \\"k\\": 2", "t": "\\u003a"}, "events": [{"event_type":'
        b' "custom_event", "data": {"event_name": "a", "custom_event_type": "other",'
        b' "custom_attributes": {"k": 1, "K": 2}}}]}'
    )
    status, _, answer = server.post("/v2/events", body)
    assert status == 202, answer
    assert server.stored()[-1].body == body


# --- compression accepted ------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", "identity"])
def test_compressed_body_accepted(server: Server, encoding: str) -> None:
    raw = dumps(valid_batch())
    body = raw if encoding == "identity" else gzipped(raw)
    status, _, answer = server.post("/v2/events", body, {"Content-Encoding": encoding})
    assert status == 202, answer
    assert json.loads(answer)["accepted"] == 1
    assert server.stored()[-1].body == raw  # stored decompressed


def test_gzipped_bulk_accepted(server: Server) -> None:
    raws = [dumps(valid_batch()) for _ in range(2)]
    body = gzipped(b"[" + b",".join(raws) + b"]")
    status, _, answer = server.post("/v2/bulkevents", body, {"Content-Encoding": "gzip"})
    assert status == 202, answer
    assert [b.body for b in server.stored()[-2:]] == raws


# --- authentication ------------------------------------------------------------------------


def _auth_cases(server: Server) -> dict[str, tuple[str | None, int]]:
    key, secret = server.credentials.key, server.credentials.secret
    return {
        "none": (None, 401),
        "empty": ("", 401),
        "bearer": ("Bearer " + secret, 401),
        "basic-no-value": ("Basic", 401),
        "basic-not-base64": ("Basic !!!not-base64!!!", 401),
        "basic-no-colon": ("Basic " + base64.b64encode(key.encode()).decode(), 401),
        "basic-empty-key": (basic("", secret), 401),
        "basic-not-utf8": ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), 401),
        "wrong-key": (basic("pk_" + "A" * 32, secret), 403),
        "wrong-secret": (basic(key, "ps_" + "B" * 43), 403),
        "empty-secret": (basic(key, ""), 403),
        "secret-as-key": (basic(secret, key), 403),
        "key-with-suffix": (basic(key + "x", secret), 403),
    }


AUTH_IDS = [
    "none",
    "empty",
    "bearer",
    "basic-no-value",
    "basic-not-base64",
    "basic-no-colon",
    "basic-empty-key",
    "basic-not-utf8",
    "wrong-key",
    "wrong-secret",
    "empty-secret",
    "secret-as-key",
    "key-with-suffix",
]


@pytest.mark.parametrize("route", ["/v2/events", "/v2/bulkevents"])
@pytest.mark.parametrize("which", AUTH_IDS)
def test_authentication(server: Server, which: str, route: str) -> None:
    auth, expected = _auth_cases(server)[which]
    body = dumps(valid_batch())
    if route != "/v2/events":
        body = b"[" + body + b"]"
    before = offsets(server)
    status, headers, answer = server.post(route, body, auth=auth)
    assert status == expected, answer
    code, message = error_of(status, headers, answer)
    assert message.startswith("Authorization: ")
    if expected == 401:
        assert code == "UNAUTHORIZED"
        assert headers_ci(headers)["www-authenticate"].lower().startswith("basic")
    else:
        assert code == "FORBIDDEN"
        assert "www-authenticate" not in headers_ci(headers)
    assert offsets(server) == before
    assert_still_serving(server)


def test_authentication_comes_before_the_body(server: Server) -> None:
    """Without credentials, even an invalid or oversized body gets 401, not 400 or 413."""
    for body in (b"not json", _pad(LIMIT + 10)):
        status, headers, answer = server.post("/v2/events", body, auth=None)
        assert status == 401, answer
        assert error_of(status, headers, answer)[0] == "UNAUTHORIZED"


def test_lowercase_scheme_accepted(server: Server) -> None:
    auth = server.credentials.basic.replace("Basic ", "basic ")
    status, _, answer = server.post("/v2/events", dumps(valid_batch()), auth=auth)
    assert status == 202, answer


def test_disabled_input_is_forbidden(server: Server) -> None:
    name = f"to-disable-{uuid.uuid4().hex[:8]}"
    credentials = add_input(server.data_dir, name)
    status, _, answer = server.post("/v2/events", dumps(valid_batch()), auth=credentials.basic)
    assert status == 202, answer

    done = run_cli("inputs", "disable", name, data_dir=server.data_dir)
    assert done.returncode == 0, done.stderr
    before = offsets(server)
    status, headers, answer = server.post(
        "/v2/events", dumps(valid_batch()), auth=credentials.basic
    )
    assert status == 403, answer
    assert error_of(status, headers, answer)[0] == "FORBIDDEN"
    assert offsets(server) == before
    assert_still_serving(server)  # the other input is unaffected

    done = run_cli("inputs", "enable", name, data_dir=server.data_dir)
    assert done.returncode == 0, done.stderr
    status, _, answer = server.post("/v2/events", dumps(valid_batch()), auth=credentials.basic)
    assert status == 202, answer


# --- rate limit ----------------------------------------------------------------------------


def test_rate_limit(server: Server) -> None:
    slow = add_input(server.data_dir, f"slow-{uuid.uuid4().hex[:8]}", rate_limit=5)
    for _ in range(200):
        before = offsets(server)
        status, headers, answer = server.post("/v2/events", dumps(valid_batch()), auth=slow.basic)
        if status == 429:
            break
        assert status == 202, answer
        used = headers_ci(headers)["x-mp-rate-limit-percentage-used"]
        assert 0 <= int(used) <= 100
    else:
        pytest.fail("200 requests at a limit of 5 per second were never refused")
    code, message = error_of(status, headers, answer)
    assert code == "TOO_MANY_REQUESTS"
    assert message.startswith("$: ")
    lowered = headers_ci(headers)
    assert re.fullmatch(r"[1-9][0-9]*", lowered["retry-after"]), lowered
    assert lowered["x-mp-rate-limit-exceeded"] == "app"
    assert offsets(server) == before  # the refused request stored nothing
    assert server.alive()
    # The input without a limit is not held back by the other's bucket.
    assert_still_serving(server)


def test_rate_limit_feed_input(server: Server) -> None:
    feed = add_input(server.data_dir, f"feed-{uuid.uuid4().hex[:8]}", "feed", rate_limit=1)
    body = b"[" + b",".join(dumps(valid_batch()) for _ in range(3)) + b"]"
    # A full bucket lets one bulk bigger than the bucket through...
    status, _, answer = server.post("/v2/bulkevents", body, auth=feed.basic)
    assert status == 202, answer
    # ...and the next request waits for the debt to be repaid.
    before = offsets(server)
    status, headers, answer = server.post("/v2/bulkevents", body, auth=feed.basic)
    assert status == 429, answer
    lowered = headers_ci(headers)
    assert lowered["x-mp-rate-limit-exceeded"] == "feed"
    assert int(lowered["retry-after"]) >= 1
    assert offsets(server) == before


# --- de-duplication ------------------------------------------------------------------------


def test_same_source_request_id_is_stored_once(server: Server) -> None:
    body = dumps(valid_batch())
    before = offsets(server)
    status, _, answer = server.post("/v2/events", body)
    assert status == 202, answer
    assert json.loads(answer) == {"accepted": 1, "duplicates": 0, "rejected": []}
    status, _, answer = server.post("/v2/events", body)
    assert status == 202, answer
    assert json.loads(answer) == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert len(offsets(server)) == len(before) + 1


def test_repeat_within_one_bulk_is_stored_once(server: Server) -> None:
    batch = valid_batch()
    other = valid_batch()
    body = dumps([batch, other, batch])
    before = offsets(server)
    status, _, answer = server.post("/v2/bulkevents", body)
    assert status == 202, answer
    assert json.loads(answer) == {"accepted": 2, "duplicates": 1, "rejected": []}
    assert len(offsets(server)) == len(before) + 2


# --- the historical endpoint ---------------------------------------------------------------


def _at(ms: int) -> dict[str, Any]:
    return {"event_type": "custom_event", "data": {"event_name": "e", "timestamp_unixtime_ms": ms}}


def test_historical(server: Server) -> None:
    now = int(time.time() * 1000)
    old = now - 100 * HOUR_MS
    fresh = now - 71 * HOUR_MS
    old_batch = dumps(valid_batch(events=[_at(old), _at(old - HOUR_MS)]))
    items = [
        dumps(valid_batch(events=[])),
        dumps({"source_request_id": str(uuid.uuid4())}),
        dumps(valid_batch(events=[_at(old), {"event_type": "session_start", "data": {}}])),
        dumps(valid_batch(events=[_at(old), _at(fresh)])),
        dumps(valid_batch(events=[_at(now + 24 * HOUR_MS)])),
        old_batch,
    ]
    before = offsets(server)
    status, _, answer = server.post("/v2/bulkevents/historical", b"[" + b",".join(items) + b"]")
    assert status == 202, answer
    result = json.loads(answer)
    assert result["accepted"] == 1
    rejected = {r["index"]: r["message"] for r in result["rejected"]}
    assert sorted(rejected) == [0, 1, 2, 3, 4]
    assert rejected[0].startswith("events: ")
    assert rejected[1].startswith("events: ")
    assert rejected[2].startswith("events[1].data.timestamp_unixtime_ms: required")
    assert rejected[3].startswith("events[1].data.timestamp_unixtime_ms: less than 72 hours")
    assert rejected[4].startswith("events[0].data.timestamp_unixtime_ms: less than 72 hours")
    stored = server.stored()[len(before) :]
    assert len(stored) == 1
    assert stored[0].body == old_batch
    assert stored[0].historical is True


def test_historical_all_rejected_is_400(server: Server) -> None:
    now = int(time.time() * 1000)
    items = [dumps(valid_batch(events=[])), dumps(valid_batch(events=[_at(now)]))]
    before = offsets(server)
    status, headers, answer = server.post(
        "/v2/bulkevents/historical", b"[" + b",".join(items) + b"]"
    )
    assert status == 400, answer
    errors = json.loads(answer)["errors"]
    assert [e["message"][:4] for e in errors] == ["[0] ", "[1] "]
    assert errors[0]["message"].startswith("[0] events: ")
    assert errors[1]["message"].startswith("[1] events[0].data.timestamp_unixtime_ms: ")
    assert headers_ci(headers)["content-type"].startswith("application/json")
    assert offsets(server) == before
    assert_still_serving(server)


def test_recent_endpoint_is_not_historical(server: Server) -> None:
    old = int(time.time() * 1000) - 100 * HOUR_MS
    body = dumps(valid_batch(events=[_at(old)]))
    status, _, answer = server.post("/v2/bulkevents", b"[" + body + b"]")
    assert status == 202, answer
    assert server.stored()[-1].historical is False


# --- OpenAPI and metrics -------------------------------------------------------------------


def test_openapi(server: Server) -> None:
    status, body = server.get("/openapi.json")
    assert status == 200
    document = json.loads(body)
    assert document["openapi"].startswith("3.")
    for path in ("/v2/events", "/v2/bulkevents", "/v2/bulkevents/historical"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"202", "400", "401", "403", "413", "415", "429"} <= set(responses)
        assert "duplicate key" in responses["400"]["description"]
        assert "Content-Type" in responses["415"]["description"]


def _rejects(server: Server) -> dict[str, float]:
    status, body = server.get("/metrics")
    assert status == 200
    found: dict[str, float] = {}
    for line in body.decode().splitlines():
        match = re.fullmatch(r'patchbay_rejects_total\{reason="([a-z_]+)"\} (\S+)', line)
        if match:
            found[match[1]] = float(match[2])
    return found


def test_metrics_count_rejects_by_reason(server: Server) -> None:
    before = _rejects(server)
    server.post("/v2/events", b"{", auth=None)  # unauthorized
    server.post("/v2/events", b"{", auth=basic("pk_nobody", "nothing"))  # forbidden
    server.post("/v2/events", b"{")  # bad_request
    server.post("/v2/events", _pad(LIMIT + 1))  # too_large
    server.post("/v2/events", _GOOD, {"Content-Encoding": "br"})  # unsupported_encoding
    server.post("/v2/bulkevents", b"[{}, 1, 2]")  # invalid_batch x2
    server.post("/v2/events", _GOOD, {"Content-Type": "text/plain"})  # unsupported_media_type
    after = _rejects(server)
    delta = {reason: after.get(reason, 0) - before.get(reason, 0) for reason in after}
    assert delta["unauthorized"] == 1
    assert delta["forbidden"] == 1
    assert delta["bad_request"] == 1
    assert delta["too_large"] == 1
    assert delta["unsupported_encoding"] == 1
    assert delta["invalid_batch"] == 2
    assert delta["unsupported_media_type"] == 1
