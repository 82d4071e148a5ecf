"""How a stored batch is printed: one line of JSON, whatever its body."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.records import StoredBatch
from patchbay.collect.stamp import batch_json, stored_line

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def stored(body: bytes) -> StoredBatch:
    return StoredBatch(7, "b-7", "input-1", 1_700_000_000_000, "server_to_server", body)


def the_line(body: bytes) -> dict[str, Any]:
    """The line printed for ``body``, checked to be one line of JSON."""
    line = stored_line(stored(body)).decode()
    assert len(line.splitlines()) == 1  # also no U+0085, U+2028, U+2029
    assert "\n" not in line and "\r" not in line
    decoded: dict[str, Any] = json.loads(line)
    return decoded


def test_a_one_line_batch_is_embedded_byte_for_byte() -> None:
    body = b'{"events":[],  "n": 1.50, "s": "caf\xc3\xa9"}'
    line = stored_line(stored(body))
    assert line.endswith(b',"batch":' + body + b"}")


def test_a_pretty_printed_batch_is_put_on_one_line() -> None:
    body = b'{\n  "z": 1.50,\r\n  "a": [\n    1,\n    {"k": "x\\ny"}\n  ],\n\t"m": null\n}\n'
    batch = the_line(body)["batch"]
    assert batch == json.loads(body)
    assert list(batch) == ["z", "a", "m"]  # in the order sent
    assert b'"z": 1.50' in stored_line(stored(body))  # numbers as written


def test_line_breaks_inside_strings_are_escaped() -> None:
    body = '{"bio": "a\u2028b\u2029c\u0085d"}'.encode()
    assert the_line(body)["batch"] == {"bio": "a\u2028b\u2029c\u0085d"}


def test_a_body_that_is_not_json_is_a_string() -> None:
    assert the_line(b'{"events": [\n')["batch"] == '{"events": [\n'
    assert the_line(b"\x00\xff\n\r\nbinary")["batch"] == "\x00\ufffd\n\r\nbinary"
    assert the_line(b'{"a": 1} trailing')["batch"] == '{"a": 1} trailing'
    assert the_line(b'{"a": "\xff"}')["batch"] == '{"a": "\ufffd"}'  # not UTF-8
    assert the_line(b"")["batch"] == ""
    assert bytes(batch_json(b"[1,\n2]")) == b"[1, 2]"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@FAST
@given(json_values, st.sampled_from([None, 0, 2, "\t"]), st.booleans())
def test_any_json_comes_out_on_one_line_with_its_values(
    value: Any, indent: int | str | None, ascii_only: bool
) -> None:
    body = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode()
    assert the_line(body)["batch"] == value


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_come_out_on_one_line(body: bytes) -> None:
    the_line(body)
