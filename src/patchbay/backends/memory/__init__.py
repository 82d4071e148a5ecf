"""The in-memory backend: every store in Python dicts and lists, behind the same interfaces.

A real implementation, not a mock: the contract suites run on it like on SQLite, so tests
that need no durability use it for speed, and the benchmarks use it for their floors (the
same stage code with the cost of storage taken away). Nothing survives the process.
"""

from __future__ import annotations

from patchbay.backends.abstract import Backend
from patchbay.backends.memory.api_clients import MemoryApiClientStore
from patchbay.backends.memory.audiences import MemoryAudienceStore
from patchbay.backends.memory.inputs import MemoryInputStore
from patchbay.backends.memory.kits import MemoryKitStore
from patchbay.backends.memory.log import MemoryBatchLog, MemoryDedupIndex
from patchbay.backends.memory.modules import MemoryModuleStore
from patchbay.backends.memory.outbox import MemoryOutbox
from patchbay.backends.memory.state import MemoryStagePositions, MemoryStateStore

__all__ = ["open_memory"]


class MemoryFiles:
    """No files: nothing on disk, nothing to give back."""

    def sizes(self) -> dict[str, int]:
        """None."""
        return {}

    def reclaim(self, keep_min_bytes: int, keep_fraction: float, pause_s: float = 0.0) -> int:
        """Nothing."""
        return 0


def open_memory(partitions: int = 1) -> Backend:
    """New, empty in-memory stores (the log with ``partitions`` partitions)."""
    outbox = MemoryOutbox()
    return Backend(
        name="memory",
        log=MemoryBatchLog(partitions),
        dedup=MemoryDedupIndex(),
        inputs=MemoryInputStore(),
        api_clients=MemoryApiClientStore(),
        state=MemoryStateStore(),
        positions=MemoryStagePositions(),
        modules=MemoryModuleStore(),
        outputs=outbox,
        outbox=outbox,
        audiences=MemoryAudienceStore(),
        files=MemoryFiles(),
        kits=MemoryKitStore(),
    )
