"""How a stored batch is shown to people and later stages: its stamps around the batch."""

from __future__ import annotations

import msgspec

from patchbay.backends.records import StoredBatch


class StampedBatch(msgspec.Struct):
    """A stored batch as printed by ``patchbay batches``: stamps, then the batch as received."""

    offset: int
    batch_id: str
    input_id: str
    received_at_ms: int
    channel: str
    ip: str | None
    historical: bool
    batch: msgspec.Raw


_encode = msgspec.json.Encoder().encode


def stamp_fields(stored: StoredBatch, body: bytes | None = None) -> dict[str, object]:
    """The fields of a :class:`StampedBatch` for ``stored`` (``body`` replaces its batch)."""
    return {
        "offset": stored.offset,
        "batch_id": stored.batch_id,
        "input_id": stored.input_id,
        "received_at_ms": stored.received_at_ms,
        "channel": stored.channel,
        "ip": stored.ip,
        "historical": stored.historical,
        "batch": msgspec.Raw(stored.body if body is None else body),
    }


def stored_line(stored: StoredBatch) -> bytes:
    """One JSON line for ``stored`` (the batch bytes are embedded unchanged)."""
    return _encode(StampedBatch(**stamp_fields(stored)))  # type: ignore[arg-type]
