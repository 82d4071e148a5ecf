"""The circuit breaker's states on a fake clock (times passed in)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from patchbay.activate.breaker import BreakerPolicy, BreakerState, CircuitBreaker, Transition

POLICY = BreakerPolicy(failures_to_open=3, base_delay_s=1.0, max_delay_s=8.0)


def breaker(jitter: float = 1.0) -> CircuitBreaker:
    return CircuitBreaker(POLICY, lambda: jitter)


def trip(b: CircuitBreaker, now: int = 0) -> Transition | None:
    found = None
    for _ in range(POLICY.failures_to_open):
        found = b.failed(now, "HTTP 503", None, probe=None) or found
    return found


def test_closed_allows_everything_and_a_success_resets_the_count() -> None:
    b = breaker()
    assert b.allowed(0) is None
    b.failed(0, "HTTP 500", None, probe=None)
    b.failed(0, "HTTP 500", None, probe=None)
    assert b.succeeded() is None
    b.failed(0, "HTTP 500", None, probe=None)
    b.failed(0, "HTTP 500", None, probe=None)
    assert b.state is BreakerState.CLOSED  # never three in a row
    assert b.allowed(0) is None


def test_failures_in_a_row_open_it_and_nothing_is_sent_until_the_probe_time() -> None:
    b = breaker()
    opened = trip(b, now=1_000)
    assert opened == Transition(BreakerState.CLOSED, BreakerState.OPEN, "HTTP 503", 1.0)
    assert b.opened_ms == 1_000
    assert b.allowed(1_999) == 0
    assert b.wait_s(1_500) == 0.5
    assert b.allowed(2_000) == 1
    assert b.state is BreakerState.PROBING


def test_one_probe_at_a_time_and_its_success_closes_it() -> None:
    b = breaker()
    trip(b)
    assert b.allowed(1_000) == 1
    probe = b.probe_started()
    assert b.allowed(1_000) == 0  # the probe is in flight
    closed = Transition(BreakerState.PROBING, BreakerState.CLOSED, None, None, opened_ms=0)
    assert b.succeeded(probe) == closed
    assert b.allowed(1_000) is None
    assert b.opened_ms is None


def test_failed_probes_double_the_delay_up_to_the_cap() -> None:
    b = breaker()
    trip(b)
    now, delays = 0, []
    for _ in range(6):
        now = b.probe_ms
        assert b.allowed(now) == 1
        probe = b.probe_started()
        transition = b.failed(now, "connection refused", None, probe)
        assert transition is not None and transition.new is BreakerState.OPEN
        delays.append(transition.retry_in_s)
    assert delays == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert b.opened_ms == 0  # still open since the first trip


def test_jitter_shortens_the_delay_to_no_less_than_half() -> None:
    b = breaker(jitter=0.0)
    opened = trip(b)
    assert opened is not None and opened.retry_in_s == 0.5


def test_retry_after_is_a_lower_bound_also_from_a_late_failure() -> None:
    b = breaker()
    b.failed(0, "HTTP 429", None, probe=None)
    b.failed(0, "HTTP 429", None, probe=None)
    opened = b.failed(0, "HTTP 429", 30.0, probe=None)
    assert opened is not None and opened.retry_in_s == 30.0
    assert b.allowed(29_999) == 0
    b.failed(10_000, "HTTP 429", 60.0, probe=None)  # in flight when it opened
    assert b.allowed(30_000) == 0
    assert b.allowed(70_000) == 1


def test_a_success_sent_before_it_opened_closes_it() -> None:
    b = breaker()
    trip(b)
    transition = b.succeeded()
    assert transition is not None and transition.new is BreakerState.CLOSED
    assert b.allowed(0) is None


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["allowed", "start", "ok", "fail", "probe_ok", "probe_fail"]),
        st.integers(0, 5_000),
    ),
    max_size=60,
)


@given(_OPS)
def test_never_more_than_one_probe_and_closed_means_unlimited(ops: list[tuple[str, int]]) -> None:
    b = breaker()
    now = 0
    sent: list[int] = []  # probes in flight, the stale ones included
    for op, step in ops:
        now += step
        if op == "allowed":
            allowed = b.allowed(now)
            assert (allowed is None) == (b.state is BreakerState.CLOSED)
            assert allowed in (None, 0, 1)
        elif op == "start" and b.allowed(now) == 1:
            sent.append(b.probe_started())
        elif op in ("probe_ok", "probe_fail") and sent:
            current = sent.pop(0) == b._probe and b.probe_in_flight
            if op == "probe_ok":
                b.succeeded(b._probe if current else -1)
                assert b.state is BreakerState.CLOSED
            else:
                was = b.state
                b.failed(now, "x", None, b._probe if current else -1)
                if current:
                    assert b.state is BreakerState.OPEN and b.probe_ms > now
                else:
                    assert b.state is was or b.state is BreakerState.OPEN
        elif op == "ok":
            b.succeeded()
            assert b.state is BreakerState.CLOSED
        elif op == "fail":
            b.failed(now, "x", None)
        if b.probe_in_flight:
            assert b.state is BreakerState.PROBING
            assert b.allowed(now) == 0
