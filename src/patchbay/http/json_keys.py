"""Finding a key that an object of a JSON document repeats (decoders keep the last silently).

:func:`duplicate_key` answers with the JSON path of the first such key, or ``None``. Keys are
compared decoded: ``"a"`` and ``"\\u0061"`` are the same key.

Most bodies have no duplicate, so a cheap exact test comes first (:func:`surely_unique`,
about as costly as one untyped ``msgspec`` decode): outside strings, a JSON text has one
``:`` per member, and every colon inside a string is kept when msgspec decodes and encodes
the document again (it never escapes a colon). So the colons of the body and of its
re-encoding are equal when no key repeats, and the re-encoding has fewer when one does: its
objects lost the repeated members. The one exception, a colon written ``\\u003a`` in the
body, sends the body to the exact path. Only then, or when a key does repeat, is the
document parsed again, with every member kept, to find the key and its path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

#: A key written as a path step after a dot; any other is written ``["..."]``.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: A colon written as an escape, which the counts of :func:`surely_unique` cannot see.
_ESCAPED_COLON = re.compile(rb"\\u003[aA]")


class _Members(list[tuple[str, Any]]):
    """A JSON object as parsed with every member kept, in order."""


def duplicate_key(body: bytes) -> str | None:
    """The JSON path of the first key (in the text) that its object already has, or ``None``
    if no object repeats a key. ``body`` should be valid JSON: for anything else (nesting too
    deep included) the answer is ``None``, and the decoder that reads it reports the
    problem."""
    if surely_unique(body):
        return None
    try:
        tree = json.loads(body, object_pairs_hook=_Members)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return _first_repeat(tree)


def surely_unique(body: bytes) -> bool:
    """Whether no object of ``body`` repeats a key, decided without a Python-level walk;
    ``False`` also when it cannot tell (see the module documentation)."""
    try:
        again = _encode(_decode(body))
    except (msgspec.DecodeError, msgspec.EncodeError, RecursionError, UnicodeDecodeError):
        return False
    if body.count(b":") != again.count(b":"):
        return False
    return b"\\u003" not in body or _ESCAPED_COLON.search(body) is None


def _first_repeat(tree: Any) -> str | None:
    """A depth-first walk in document order; iterative, so any depth the parser took is
    fine."""
    stack: list[Iterator[tuple[str, Any, bool]]] = [iter([("", tree, False)])]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            continue
        path, value, repeated = step
        if repeated:
            return path
        if isinstance(value, _Members):
            stack.append(_members(path, value))
        elif isinstance(value, list):
            stack.append(_items(path, value))
    return None


def _members(path: str, members: _Members) -> Iterator[tuple[str, Any, bool]]:
    """Each member's path and value, and whether its key came earlier in the object."""
    seen: set[str] = set()
    for key, value in members:
        yield key_path(path, key), value, key in seen
        seen.add(key)


def _items(path: str, items: list[Any]) -> Iterator[tuple[str, Any, bool]]:
    """Each item's path and value."""
    for i, item in enumerate(items):
        yield f"{path}[{i}]", item, False


def key_path(path: str, key: str) -> str:
    """The path of ``key`` in the object at ``path`` (``""`` for the top): ``a.b``, or
    ``a["b c"]`` for a key that is not a plain name."""
    if _NAME.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"
