"""Computing every audience again from the batch log (``patchbay reprocess``).

:func:`replay` forgets the segment state (conditions, builds, user states, memberships,
pending changes; the audiences and their connections stay), counts every batch of the log
with the users resolve committed, then builds every audience over the users. Audiences are
then what a live stage would have made of the same history at the same moment; every
member is sent to the connected outputs again as an ``add`` (a full resynchronisation),
since the memberships were forgotten.
"""

from __future__ import annotations

from collections.abc import Callable

from patchbay.backends.abstract import Backend
from patchbay.backends.records import Checkpoint, advance
from patchbay.clock import Clock
from patchbay.pipeline import read_resolved
from patchbay.segment.engine import SegmentEngine
from patchbay.segment.stage import STAGE

#: Batches read from the log at once.
PAGE = 1000


def replay(
    backend: Backend,
    clock: Clock,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Compute every audience again from the log; return how many batches were counted.
    ``progress`` is called with a line of text now and then."""
    backend.audiences.reset()
    engine = SegmentEngine(backend.audiences, backend.state, backend.log, backend.inputs, clock)
    engine.refresh(force=True)
    counted = 0
    ends: Checkpoint = {}
    for partition in range(backend.log.partitions):
        after = None
        while True:
            batches, last = read_resolved(backend, partition, after, PAGE)
            if last is None:
                break
            counted += engine.apply(batches)
            ends = advance(ends, [last])
            after = last
            if progress is not None:
                progress(f"counted {counted} batches (up to {last})")
    while engine.build_step():
        if progress is not None:
            for build in engine.builds.values():
                if build.phase == "evaluating":
                    progress(f"evaluating: {build.users_done} of {build.users_total} users")
    if ends:
        backend.positions.commit(STAGE, ends)
    return counted
