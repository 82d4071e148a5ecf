"""The repeated-key detector against a reference: JSON texts generated with every spelling a
key may have (``\\u`` escapes, escaped quotes and backslashes, colons and quotes inside
strings, whitespace), compared with ``json.loads(object_pairs_hook=...)`` and with the
document the text was written from."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.http.json_keys import duplicate_key, key_path, surely_unique

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Obj:
    """A JSON object as written: its members in order, repeats allowed."""

    members: tuple[tuple[str, Any], ...]


# Few characters, so that keys repeat often; the ones that matter to a scanner among them.
CHARS = st.sampled_from(["a", "b", ":", '"', "\\", "/", ".", " ", "é", "\u2028", "\x00", "{"])
TEXT = st.text(CHARS, max_size=3)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(st.tuples(TEXT, inner), max_size=4).map(lambda m: Obj(tuple(m)))
    ),
    max_leaves=25,
)


def write(value: Any, rng: random.Random) -> str:
    """``value`` as JSON text, each character and blank spelled at random."""
    space = rng.choice(["", "", " ", "\n\t "])
    if isinstance(value, Obj):
        members = [
            f"{space}{write_string(k, rng)}{space}:{space}{write(v, rng)}" for k, v in value.members
        ]
        return "{" + ",".join(members) + space + "}"
    if isinstance(value, list):
        return "[" + ",".join(space + write(v, rng) for v in value) + space + "]"
    if isinstance(value, str):
        return write_string(value, rng)
    return json.dumps(value)


def write_string(text: str, rng: random.Random) -> str:
    out = []
    for c in text:
        escaped = {'"': '\\"', "\\": "\\\\", "/": "\\/"}.get(c)
        choices = [f"\\u{ord(c):04x}", f"\\u{ord(c):04X}"]
        if escaped:
            choices.append(escaped)
        if c not in '"\\' and ord(c) >= 0x20:
            choices.append(c)
        out.append(rng.choice(choices))
    return '"' + "".join(out) + '"'


def first_repeat(value: Any, path: str = "") -> str | None:
    """The reference: the first key, in the text, that its object already has."""
    if isinstance(value, Obj):
        seen: set[str] = set()
        for key, item in value.members:
            here = key_path(path, key)
            if key in seen:
                return here
            seen.add(key)
            if (found := first_repeat(item, here)) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := first_repeat(item, f"{path}[{i}]")) is not None:
                return found
    return None


def repeats(body: bytes) -> bool:
    """The other reference: the standard library's parser, told to refuse a repeated key."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise KeyError("repeated")
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=hook)
    except KeyError:
        return True
    return False


@FAST
@given(VALUES, st.randoms(use_true_random=False))
def test_the_detector_finds_the_first_repeated_key(value: Any, rng: random.Random) -> None:
    body = write(value, rng).encode()
    found = duplicate_key(body)
    assert found == first_repeat(value)
    assert (found is not None) == repeats(body)


@FAST
@given(VALUES, st.randoms(use_true_random=False))
def test_the_fast_test_is_exact_without_an_escaped_colon(value: Any, rng: random.Random) -> None:
    """The cheap first pass never calls a document with a repeat unique, and is exact when
    no colon is written ``\\u003a`` (the one case it leaves to the full parse)."""
    body = write(value, rng).encode()
    unique = first_repeat(value) is None
    if surely_unique(body):
        assert unique
    if b"\\u003a" not in body.lower():
        assert surely_unique(body) == unique


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"a": 1, "a": 2}', "a"),
        (b'{"a": 1, "\\u0061": 2}', "a"),  # the same key, spelled two ways
        (b'{"a": {"b": 1}, "c": {"b": 2}}', None),  # the same key in two objects
        (b'{"a": "\\"a\\": 1, \\"a\\": 2"}', None),  # keys inside a string
        (b'{"k": "\\u003a", "k": 1}', "k"),  # an escaped colon: the full parse decides
        (b'[1, {"x": [{"y": 1}, {"y": 1, "y": 2}]}]', "[1].x[1].y"),
        (b'{"": 1, "": 2}', '[""]'),
        (b'{"a b": {"c.d": 0, "c.d": 1}}', '["a b"]["c.d"]'),
        (b'{"a": {"b": 1, "b": 2}, "a": 3}', "a.b"),  # the first in the text
        (b'{"a": 1, "b": 2}', None),
        (b'{"a": [', None),  # not JSON: the decoder says what is wrong
        (b'{"a": 1, "a": 2', None),
        (b"[" * 100_000 + b"]" * 100_000, None),  # deeper than any parser goes
    ],
)
def test_examples(body: bytes, path: str | None) -> None:
    assert duplicate_key(body) == path
