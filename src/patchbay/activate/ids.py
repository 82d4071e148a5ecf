"""Stable ids: message and event UUIDs that stay the same on every retry and replay, and the
``session_id`` derived from a ``session_uuid``."""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache
from typing import Final

#: The uuid5 namespace of every id Patchbay derives for Firehose messages.
NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://patchbay.dev/activate/firehose")

_NAMESPACE_BYTES: Final = NAMESPACE.bytes
#: uuid5's version (5) and variant (RFC 4122) bits, set on the first 128 bits of the SHA-1.
_KEEP: Final = ~((0xF000 << 64) | (0xC000 << 48)) & (2**128 - 1)
_SET: Final = (5 << 76) | (0x8000 << 48)

_FNV_OFFSET: Final = 0xCBF29CE484222325
_FNV_PRIME: Final = 0x100000001B3
_MASK: Final = 2**64 - 1


def message_id(output_id: str, batch_id: str) -> uuid.UUID:
    """The ``id`` of the request that carries batch ``batch_id`` to output ``output_id``."""
    return _uuid5(f"{output_id}\x1f{batch_id}")


def event_id(output_id: str, batch_id: str, index: int, part: str) -> uuid.UUID:
    """The ``id`` of the Firehose event made from the ``index``-th inbound event of the batch.

    ``part`` is the Firehose event type, so that the parts of one commerce event
    (``product_action``, ``promotion_action``, ``impression``) get different ids.
    """
    return _uuid5(f"{output_id}\x1f{batch_id}\x1f{index}\x1f{part}")


def _uuid5(name: str) -> uuid.UUID:
    """``uuid.uuid5(NAMESPACE, name)``, the same value in about half the time (one per event
    of every batch for every output)."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()
    return uuid.UUID(int=(int.from_bytes(digest[:16]) & _KEEP) | _SET)


@lru_cache(maxsize=4096)  # every event of a batch carries the same session
def session_id_of(session_uuid: str) -> int:
    """mParticle's ``session_id`` for a ``session_uuid``: FNV-1a 64-bit over the UTF-16LE
    bytes of the string as received, read as a signed 64-bit integer."""
    h = _FNV_OFFSET
    for byte in session_uuid.encode("utf-16-le"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return h - 2**64 if h >= 2**63 else h
