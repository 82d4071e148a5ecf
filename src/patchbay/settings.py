"""Settings of a Patchbay server, with their defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

#: mParticle's request size limit for ``/v2/events`` and ``/v2/bulkevents``.
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024
#: mParticle's limit of batches in one bulk request.
DEFAULT_MAX_BATCHES = 100
#: How long a ``source_request_id`` is remembered (mParticle keeps it 30 to 60 days).
DEFAULT_DEDUP_WINDOW_S = 30 * 24 * 3600.0


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Everything ``patchbay serve`` can be told; each has a flag and a default."""

    #: Where state is kept: ``sqlite`` (files in ``data_dir``) or ``memory`` (tests only).
    backend: Literal["sqlite", "memory"] = "sqlite"
    data_dir: Path = Path("patchbay-data")
    host: str = "127.0.0.1"
    port: int = 8080
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_batches_per_request: int = DEFAULT_MAX_BATCHES
    dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S
    durability: Literal["full", "normal"] = "full"
    log_level: str = "info"
    #: Run the delivery engine in a process of its own (``patchbay serve`` does by default).
    delivery_process: bool = False
