"""The garbage collector's schedule for a process that runs a stage for hours.

Python's cyclic collector runs a young collection every 700 net new container objects, and
now and then a full one over every object the process holds. A stage allocates and frees
thousands of objects per batch (decoded events, a user's state, rows), almost none of them
in cycles, so those collections find nothing, and the full ones walk the long-lived heap
each time: 15% of the segment stage's CPU (``bench/segment_stage.py``, docs/performance.md).
"""

from __future__ import annotations

import gc

#: Net new container objects between two young collections (Python's default: 700). A
#: collection still comes as soon as that many are kept alive or left in cycles, so garbage
#: cycles are freed as before, in larger steps.
YOUNG = 50_000
#: Young collections per middle one, and middle per full one (the defaults: 10 and 10).
MIDDLE, OLD = 20, 10


def collect_rarely() -> None:
    """Leave what the process holds now (modules, settings, open stores) out of every later
    collection, and collect young objects after :data:`YOUNG` net new ones. Called once,
    when a process has started."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
