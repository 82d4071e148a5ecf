"""The retry policy as a pure function: backoff, jitter, Retry-After, the retry window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from patchbay.activate.engine import EngineConfig, RetryPolicy, next_attempt, parse_retry_after
from patchbay.config import load_settings

POLICY = RetryPolicy(base_delay_s=1.0, max_delay_s=60.0, max_age_s=3600.0)
NOW = 1_700_000_000_000


def test_non_retryable_errors_park_at_once() -> None:
    assert next_attempt(POLICY, attempts=1, since_ms=NOW, now_ms=NOW, retryable=False) is None


def test_backoff_doubles_and_is_capped() -> None:
    delays = [
        next_attempt(POLICY, attempts=n, since_ms=NOW, now_ms=NOW, retryable=True, jitter=1.0)
        for n in range(1, 10)
    ]
    assert [(d or 0) - NOW for d in delays] == [
        1000,
        2000,
        4000,
        8000,
        16000,
        32000,
        60000,
        60000,
        60000,
    ]


@given(st.integers(1, 40), st.floats(0, 1))
def test_jitter_stays_between_half_and_the_full_delay(attempts: int, jitter: float) -> None:
    at = next_attempt(
        POLICY, attempts=attempts, since_ms=NOW, now_ms=NOW, retryable=True, jitter=jitter
    )
    full = min(60.0, 2.0 ** (attempts - 1)) * 1000
    assert at is not None
    assert full / 2 - 1 <= at - NOW <= full + 1


@given(st.integers(1, 20), st.floats(0, 1), st.floats(0, 3000))
def test_retry_after_is_a_lower_bound(attempts: int, jitter: float, retry_after: float) -> None:
    at = next_attempt(
        POLICY,
        attempts=attempts,
        since_ms=NOW,
        now_ms=NOW,
        retryable=True,
        retry_after_s=retry_after,
        jitter=jitter,
    )
    assert at is not None
    assert at >= NOW + retry_after * 1000 - 1


def test_parked_when_the_next_attempt_falls_after_the_window() -> None:
    since = NOW - 3_599_000
    assert next_attempt(POLICY, attempts=5, since_ms=since, now_ms=NOW, retryable=True) is None
    assert (
        next_attempt(POLICY, attempts=1, since_ms=NOW - 1000, now_ms=NOW, retryable=True)
        is not None
    )
    # a Retry-After beyond the window parks too
    assert (
        next_attempt(
            POLICY, attempts=1, since_ms=NOW, now_ms=NOW, retryable=True, retry_after_s=7200
        )
        is None
    )


def test_parse_retry_after() -> None:
    assert parse_retry_after("3", NOW) == 3.0
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("soon", NOW) is None
    date = "Tue, 14 Nov 2023 22:13:30 GMT"  # NOW is 22:13:20 UTC
    assert parse_retry_after(date, NOW) == 10.0


def from_env(env: dict[str, str]) -> EngineConfig:
    """The engine's tuning as ``patchbay serve`` builds it from these variables."""
    return EngineConfig.from_settings(load_settings({}, env))


def test_config_from_env() -> None:
    config = from_env({"PATCHBAY_DELIVERY_MAX_AGE_S": "5", "PATCHBAY_DELIVERY_CONCURRENCY": "2"})
    assert config.policy.max_age_s == 5
    assert config.concurrency == 2
    assert from_env({}).policy.max_age_s == 24 * 3600


def test_config_from_env_batching() -> None:
    config = from_env(
        {
            "PATCHBAY_DELIVERY_PAGE": "64",
            "PATCHBAY_DELIVERY_ACK_DELAY_S": "0.02",
            "PATCHBAY_DELIVERY_ACK_MAX": "100",
        }
    )
    assert (config.page, config.ack_delay_s, config.ack_max) == (64, 0.02, 100)
    defaults = from_env({})
    assert defaults.concurrency == 32
    assert (defaults.page, defaults.ack_delay_s, defaults.ack_max) == (256, 0.005, 512)
