"""The answer of ``GET /healthz``."""

from __future__ import annotations

import msgspec


class Health(msgspec.Struct):
    """The server runs and its store answers: ``last_offset`` is the sum of the log
    partitions' last offsets."""

    status: str
    last_offset: int
