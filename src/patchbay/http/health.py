"""The answer of ``GET /healthz``."""

from __future__ import annotations

import msgspec


class Health(msgspec.Struct):
    """The server runs and its store answers: ``last_offset`` is the sum of the log
    partitions' last offsets; ``roles`` what this process runs (``ingest``, ``process``,
    ``deliver``)."""

    status: str
    last_offset: int
    roles: list[str] = msgspec.field(default_factory=list)
