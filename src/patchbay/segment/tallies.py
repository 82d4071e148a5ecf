"""A user's matching events for one condition (:class:`~patchbay.backends.records.Tally`):
pure functions to add an event, drop what left the window, merge two users' tallies and
read the count and sum at a moment.

A condition over all time keeps a count and a sum. A windowed one keeps each matching
event's time and value, oldest first, while it is inside the window (an event leaves it at
``time + window``), at most :data:`MAX_EVENTS` of them (the newest): so counts are exact up
to that many events in a window, which is also the largest count a definition may ask for.
"""

from __future__ import annotations

import bisect
import math

from patchbay.backends.records import Tally
from patchbay.segment.evaluate import in_window

#: The most events a windowed tally keeps (the newest).
MAX_EVENTS = 1000


def add_event(tally: Tally, window_ms: int | None, time_ms: int, value: float, now_ms: int) -> bool:
    """Count one matching event at ``time_ms`` worth ``value``; whether the tally changed
    (an event already outside the window changes nothing)."""
    # (a variable of its own: compiled, a ``float`` one would hold the integer as a float)
    kept = _compact(value)
    if window_ms is None:
        tally.count += 1
        tally.total = _compact(tally.total + kept)
        return True
    if not in_window(time_ms, window_ms, now_ms):
        return False
    events = tally.events
    if len(events) >= MAX_EVENTS and (time_ms, kept) < events[0]:
        return False  # it would come first, and there is no room: it is dropped at once
    bisect.insort(events, (time_ms, kept))
    if len(events) > MAX_EVENTS:
        del events[: len(events) - MAX_EVENTS]
    return True


def _compact(value: float) -> int | float:
    """``value`` as an integer when it is a whole number that a float holds exactly (it
    is stored in one to nine bytes instead of nine; read back, it compares and adds up
    the same)."""
    if isinstance(value, float) and value.is_integer() and -(2**53) <= value <= 2**53:
        return int(value)
    return value


def expire(tally: Tally, window_ms: int | None, now_ms: int) -> bool:
    """Drop the events that left the window by ``now_ms``; whether any did."""
    if window_ms is None or not tally.events:
        return False
    events = tally.events
    keep = _first_inside(events, window_ms, now_ms)
    if keep:
        del events[:keep]
    return keep > 0


def stats(
    tally: Tally | None, window_ms: int | None, now_ms: int, summed: bool = True
) -> tuple[int, float]:
    """The count and sum of the events inside the window at ``now_ms``. ``summed=False``
    for a condition that counts (every event worth 1): the sum is then the count, without
    adding the events up."""
    if tally is None:
        return 0, 0.0
    if window_ms is None:
        return tally.count, tally.total
    events = tally.events
    if not events:
        return 0, 0.0
    first = _first_inside(events, window_ms, now_ms)
    count = len(events) - first
    if not summed:
        return count, float(count)
    return count, float(sum(value for _, value in events[first:]))


def _first_inside(events: list[tuple[int, float]], window_ms: int, now_ms: int) -> int:
    """The index of the first of ``events`` (by time) inside the window at ``now_ms``: an
    event is inside while ``time + window > now``."""
    if events[0][0] + window_ms > now_ms:
        return 0  # the usual case: what left the window was dropped already
    return bisect.bisect_right(events, (now_ms - window_ms, math.inf))


def next_change(tally: Tally, window_ms: int | None) -> int | None:
    """When the next event leaves the window (``None``: never)."""
    if window_ms is None or not tally.events:
        return None
    return tally.events[0][0] + window_ms


def merge(into: Tally, other: Tally, window_ms: int | None) -> None:
    """Add ``other``'s events to ``into`` (two users became one)."""
    if window_ms is None:
        into.count += other.count
        into.total += other.total
        return
    events = sorted([*into.events, *other.events])
    into.events = events[-MAX_EVENTS:]
