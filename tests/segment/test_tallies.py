"""A user's tallies of one condition (``patchbay.segment.tallies``): adding events over all
time and in a window (in order or not, up to the cap), expiry at the window's edge, the
count and sum at a moment, when the next event leaves, merging two users' tallies; and a
property: random adds and clock moves equal a plain list of events filtered by the window."""

from __future__ import annotations

from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.records import Tally
from patchbay.segment import tallies
from patchbay.segment.tallies import MAX_EVENTS, add_event, expire, merge, next_change, stats

W = 1_000  # a window of one second
T0 = 1_750_000_000_000


def windowed(*times: int, value: float = 1.0) -> Tally:
    """A windowed tally holding events at ``times``, each worth ``value``."""
    return Tally(events=[(t, value) for t in sorted(times)])


def full(start: int = 1) -> Tally:
    """A windowed tally holding MAX_EVENTS events, at ``start``, ``start + 1``, ..."""
    return Tally(events=[(start + i, float(i)) for i in range(MAX_EVENTS)])


def test_max_events() -> None:
    assert MAX_EVENTS == 1000


# -- add_event -------------------------------------------------------------------------


def test_all_time_counts_and_sums() -> None:
    tally = Tally()
    assert add_event(tally, None, 10, 2.5, 20) is True
    assert add_event(tally, None, 0, 1.0, 10**15) is True  # no window: never too old
    assert add_event(tally, None, 5, 0.0, 5) is True
    assert (tally.count, tally.total, tally.events) == (3, 3.5, [])


def test_windowed_keeps_times_and_values() -> None:
    tally = Tally()
    assert add_event(tally, W, 100, 2.5, 100) is True
    assert add_event(tally, W, 200, 4.0, 500) is True
    assert tally.events == [(100, 2.5), (200, 4.0)]
    assert (tally.count, tally.total) == (0, 0.0)  # a windowed tally keeps events only


@pytest.mark.parametrize(
    ("time_ms", "now_ms", "added"),
    [
        (100, 100, True),
        (100, 100 + W - 1, True),
        (100, 100 + W, False),  # it left the window exactly then
        (100, 100 + W + 1, False),
        (5_000, 100, True),  # in the future
    ],
)
def test_an_event_outside_the_window_changes_nothing(
    time_ms: int, now_ms: int, added: bool
) -> None:
    tally = windowed(50_000)
    assert add_event(tally, W, time_ms, 1.0, now_ms) is added
    assert ((time_ms, 1.0) in tally.events) is added
    assert len(tally.events) == 1 + added


def test_out_of_order_events_are_kept_in_order() -> None:
    tally = Tally()
    for t in (300, 100, 400, 200, 100):
        assert add_event(tally, W, t, float(t), 400) is True
    assert tally.events == [(100, 100.0), (100, 100.0), (200, 200.0), (300, 300.0), (400, 400.0)]
    same_time = Tally()
    for value in (3.0, 1.0, 2.0):
        add_event(same_time, W, 7, value, 7)
    assert same_time.events == [(7, 1.0), (7, 2.0), (7, 3.0)]


def test_the_cap_keeps_the_newest() -> None:
    tally = full(start=1)
    assert add_event(tally, W * 10_000, 5_000, 9.0, 5_000) is True
    assert len(tally.events) == MAX_EVENTS
    assert tally.events[0] == (2, 1.0)  # the oldest went
    assert tally.events[-1] == (5_000, 9.0)


def test_the_cap_makes_room_in_the_middle() -> None:
    tally = full(start=1)
    assert add_event(tally, W * 10_000, 500, -1.0, 1_000) is True
    assert len(tally.events) == MAX_EVENTS
    assert tally.events[0] == (2, 1.0)
    assert (500, -1.0) in tally.events
    assert tally.events == sorted(tally.events)


def test_an_event_older_than_all_kept_is_refused_when_full() -> None:
    tally = full(start=10)
    before = list(tally.events)
    assert add_event(tally, W * 10_000, 9, 5.0, 1_000) is False
    assert tally.events == before


def test_an_event_as_old_as_the_oldest_kept_is_taken_when_full() -> None:
    tally = full(start=10)  # the oldest: (10, 0.0)
    assert add_event(tally, W * 10_000, 10, 5.0, 1_000) is True
    assert len(tally.events) == MAX_EVENTS
    assert tally.events[:2] == [(10, 5.0), (11, 1.0)]


def test_an_event_dropped_at_once_changes_nothing() -> None:
    tally = full(start=10)  # the oldest: (10, 0.0)
    tally.events[0] = (10, 3.0)
    before = list(tally.events)
    changed = add_event(tally, W * 10_000, 10, 1.0, 1_000)
    assert tally.events == before
    assert changed is False


def test_below_the_cap_an_older_event_is_taken() -> None:
    tally = Tally(events=[(10 + i, 1.0) for i in range(MAX_EVENTS - 1)])
    assert add_event(tally, W * 10_000, 5, 2.0, 1_000) is True
    assert len(tally.events) == MAX_EVENTS
    assert tally.events[0] == (5, 2.0)
    assert tally.events[-1] == (10 + MAX_EVENTS - 2, 1.0)


def test_the_cap_applies_to_expired_events_not_yet_dropped() -> None:
    tally = full(start=1)  # all of them out of the window by now
    assert add_event(tally, W, 10_000, 1.0, 10_000) is True
    assert len(tally.events) == MAX_EVENTS
    assert stats(tally, W, 10_000) == (1, 1.0)


# -- expire ----------------------------------------------------------------------------


def test_expire_drops_what_left_the_window() -> None:
    tally = windowed(0, 100, 200)
    assert expire(tally, W, 999) is False
    assert expire(tally, W, 1_000) is True  # 0 leaves at 0 + W
    assert [t for t, _ in tally.events] == [100, 200]
    assert expire(tally, W, 1_000) is False
    assert expire(tally, W, 1_150) is True
    assert [t for t, _ in tally.events] == [200]
    assert expire(tally, W, 1_200) is True
    assert tally.events == []
    assert expire(tally, W, 5_000) is False


def test_expire_drops_several_at_once() -> None:
    tally = windowed(0, 10, 20, 30, 40)
    assert expire(tally, W, 1_030) is True
    assert [t for t, _ in tally.events] == [40]


def test_expire_of_all_time_or_empty_tallies() -> None:
    all_time = Tally(count=3, total=4.0)
    assert expire(all_time, None, 10**15) is False
    assert (all_time.count, all_time.total) == (3, 4.0)
    assert expire(Tally(), W, 10**15) is False
    # a window of None never drops, whatever the tally holds
    odd = windowed(0)
    assert expire(odd, None, 10**15) is False
    assert odd.events == [(0, 1.0)]


# -- stats -----------------------------------------------------------------------------


def test_stats() -> None:
    assert stats(None, W, 0) == (0, 0.0)
    assert stats(None, None, 0) == (0, 0.0)
    assert stats(Tally(count=3, total=7.5), None, 10**15) == (3, 7.5)
    tally = Tally(events=[(0, 1.0), (100, 2.5), (300, 4.0)])
    assert stats(tally, W, 0) == (3, 7.5)
    assert stats(tally, W, 999) == (3, 7.5)
    assert stats(tally, W, 1_000) == (2, 6.5)  # later: the first left, without an expire
    assert stats(tally, W, 1_100) == (1, 4.0)
    assert stats(tally, W, 1_300) == (0, 0.0)
    assert len(tally.events) == 3  # stats changes nothing


def test_stats_of_a_windowed_tally_reads_its_events_only() -> None:
    tally = Tally(count=5, total=50.0, events=[(0, 1.0)])
    assert stats(tally, W, 0) == (1, 1.0)
    assert stats(Tally(count=5, total=50.0), W, 0) == (0, 0.0)


def test_stats_types() -> None:
    count, total = stats(Tally(events=[(0, 2.0)]), W, 0)
    assert type(count) is int and type(total) is float
    count, total = stats(Tally(), W, 0)
    assert type(total) is float


# -- next_change -----------------------------------------------------------------------


def test_next_change() -> None:
    assert next_change(Tally(count=2, total=1.0), None) is None
    assert next_change(Tally(), W) is None
    assert next_change(windowed(300, 100, 200), W) == 100 + W
    assert next_change(windowed(5), 45_000) == 45_005
    # already past: the caller expires it now
    assert next_change(windowed(0), W) == W


# -- merge -----------------------------------------------------------------------------


def test_merge_all_time() -> None:
    into, other = Tally(count=2, total=3.0), Tally(count=5, total=0.5)
    merge(into, other, None)
    assert (into.count, into.total, into.events) == (7, 3.5, [])
    assert (other.count, other.total) == (5, 0.5)


def test_merge_windowed() -> None:
    into = Tally(events=[(100, 1.0), (300, 3.0)])
    other = Tally(events=[(50, 0.5), (200, 2.0), (400, 4.0)])
    merge(into, other, W)
    assert into.events == [(50, 0.5), (100, 1.0), (200, 2.0), (300, 3.0), (400, 4.0)]
    assert other.events == [(50, 0.5), (200, 2.0), (400, 4.0)]
    assert (into.count, into.total) == (0, 0.0)


def test_merge_into_empty_and_of_empty() -> None:
    into = Tally()
    merge(into, windowed(5, 6), W)
    assert into.events == [(5, 1.0), (6, 1.0)]
    merge(into, Tally(), W)
    assert into.events == [(5, 1.0), (6, 1.0)]


def test_merge_keeps_the_newest_up_to_the_cap() -> None:
    into = Tally(events=[(2 * i, 1.0) for i in range(600)])  # even times 0 .. 1198
    other = Tally(events=[(2 * i + 1, 2.0) for i in range(600)])  # odd times 1 .. 1199
    merge(into, other, 10**9)
    assert len(into.events) == MAX_EVENTS
    assert into.events[0] == (200, 1.0)
    assert into.events[-1] == (1199, 2.0)
    assert into.events == sorted(into.events)


def test_merge_at_the_cap_exactly() -> None:
    into = Tally(events=[(i, 1.0) for i in range(MAX_EVENTS - 1)])
    merge(into, Tally(events=[(-1, 5.0)]), 10**9)
    assert len(into.events) == MAX_EVENTS
    assert into.events[0] == (-1, 5.0)


# -- the property ----------------------------------------------------------------------

Step = tuple[str, int, float]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(-3 * W, W // 2), st.sampled_from([0.0, 1.0, 2.5])),
        st.tuples(st.just("wait"), st.sampled_from([0, 1, W // 3, W - 1, W, 2 * W]), st.just(0.0)),
        st.tuples(st.just("expire"), st.just(0), st.just(0.0)),
    ),
    max_size=40,
)


def _model(
    added: list[tuple[int, float]], cap: int, window: int, now: int
) -> list[tuple[int, float]]:
    """The newest ``cap`` events added while inside the window, those still in it now."""
    return [(t, v) for t, v in sorted(added)[-cap:] if t + window > now]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.sampled_from([W, 3 * W]), st.sampled_from([1, 3, MAX_EVENTS]))
def test_random_adds_and_waits_equal_a_filtered_list(
    script: list[Step], window: int, cap: int
) -> None:
    now = T0
    tally = Tally()
    added: list[tuple[int, float]] = []
    with mock.patch.object(tallies, "MAX_EVENTS", cap):
        for kind, offset, value in script:
            if kind == "add":
                at = now + offset
                inside = at + window > now
                changed = add_event(tally, window, at, value, now)
                if inside:
                    added.append((at, value))
                    if (at, value) in sorted(added)[-cap:]:
                        assert changed is True
                else:
                    assert changed is False
            elif kind == "wait":
                now += offset
            else:
                before = len(tally.events)
                dropped = expire(tally, window, now)
                assert dropped is (len(tally.events) < before)
                assert tally.events == _model(added, cap, window, now)
            expected = _model(added, cap, window, now)
            assert [e for e in tally.events if e[0] + window > now] == expected
            assert stats(tally, window, now) == (len(expected), sum(v for _, v in expected))
            assert len(tally.events) <= cap
            assert tally.events == sorted(tally.events)
            if tally.events:
                assert next_change(tally, window) == tally.events[0][0] + window


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 50), st.sampled_from([1.0, 2.0])), max_size=8),
    st.lists(st.tuples(st.integers(0, 50), st.sampled_from([1.0, 2.0])), max_size=8),
    st.sampled_from([1, 3, MAX_EVENTS]),
)
def test_merge_equals_one_tally_of_both(
    mine: list[tuple[int, float]], theirs: list[tuple[int, float]], cap: int
) -> None:
    with mock.patch.object(tallies, "MAX_EVENTS", cap):
        into, other, both = Tally(), Tally(), Tally()
        for events, tally in ((mine, into), (theirs, other)):
            for t, v in events:
                add_event(tally, W, t, v, 0)
                add_event(both, W, t, v, 0)
        merge(into, other, W)
        assert into.events == sorted([*mine, *theirs])[-cap:]
        assert into.events == both.events
        count = min(cap, len(mine) + len(theirs))
        assert stats(into, W, 0) == (count, sum(v for _, v in into.events))


def test_whole_values_are_kept_as_integers_and_read_back_the_same() -> None:
    """Whole values (every counted event's 1) are kept as integers, which take one byte
    stored instead of a float's nine; read back, a tally counts and sums the same."""
    windowed, ever = Tally(), Tally()
    for at, value in [(1_000, 1.0), (2_000, 2.5), (3_000, 3.0)]:
        add_event(windowed, 60_000, at, value, 3_000)
        add_event(ever, None, at, value, 3_000)
    assert [type(v) for _, v in windowed.events] == [int, float, int]
    assert type(ever.total) is float and ever.total == 6.5
    add_event(ever, None, 4_000, 0.5, 4_000)
    assert type(ever.total) is int and ever.total == 7
    decode = msgspec.msgpack.Decoder(Tally).decode
    for tally, window in ((windowed, 60_000), (ever, None)):
        again = decode(msgspec.msgpack.encode(tally))
        assert stats(again, window, 4_000) == stats(tally, window, 4_000)
    as_floats = Tally(events=[(at, float(v)) for at, v in windowed.events])
    assert len(msgspec.msgpack.encode(windowed)) < len(msgspec.msgpack.encode(as_floats))
