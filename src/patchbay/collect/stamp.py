"""How a stored batch is shown to people and later stages: its stamps around the batch."""

from __future__ import annotations

from typing import Final

import msgspec

from patchbay.backends.records import StoredBatch


class StampedBatch(msgspec.Struct):
    """A stored batch as printed by ``patchbay batches``: stamps, then the batch as received
    (see :func:`batch_json`)."""

    offset: int
    batch_id: str
    input_id: str
    received_at_ms: int
    channel: str
    ip: str | None
    historical: bool
    batch: msgspec.Raw


_encode = msgspec.json.Encoder().encode

#: Line breaks that may be in a JSON text as received: whitespace between tokens (``\n``,
#: ``\r``), and characters a JSON string may hold unescaped that some readers split lines
#: at (U+0085, U+2028, U+2029; Python's ``str.splitlines``, JavaScript before ES2019).
_WHITESPACE_BREAKS: Final = (b"\n", b"\r")
_STRING_BREAKS: Final = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def batch_json(body: bytes) -> msgspec.Raw:
    """A batch body as it goes into one line of JSON.

    Valid JSON on one line is embedded unchanged, byte for byte. Valid JSON over several
    lines (pretty-printed, like mParticle's own samples) is put on one line: whitespace
    between tokens only, values and key order unchanged. A body that is not valid JSON or
    not UTF-8 (damaged, binary) comes out as a JSON string of its text, undecodable bytes
    as U+FFFD. U+0085, U+2028 and U+2029 inside strings are escaped either way.
    """
    try:
        body.decode()
        msgspec.json.decode(body, type=msgspec.Raw)  # the syntax, without building values
    except (UnicodeDecodeError, msgspec.DecodeError):
        body = _encode(body.decode("utf-8", "replace"))
    else:
        if any(br in body for br in _WHITESPACE_BREAKS):
            body = msgspec.json.format(body, indent=0)
    for raw, escaped in _STRING_BREAKS:
        if raw in body:
            body = body.replace(raw, escaped)
    return msgspec.Raw(body)


def stamp_fields(stored: StoredBatch, body: bytes | None = None) -> dict[str, object]:
    """The fields of a :class:`StampedBatch` for ``stored`` (``body`` replaces its batch),
    the batch on one line (:func:`batch_json`)."""
    return {
        "offset": stored.offset,
        "batch_id": stored.batch_id,
        "input_id": stored.input_id,
        "received_at_ms": stored.received_at_ms,
        "channel": stored.channel,
        "ip": stored.ip,
        "historical": stored.historical,
        "batch": batch_json(stored.body if body is None else body),
    }


def stored_line(stored: StoredBatch) -> bytes:
    """One line of JSON for ``stored``, always (no line break in it, whatever the body)."""
    return _encode(StampedBatch(**stamp_fields(stored)))  # type: ignore[arg-type]
