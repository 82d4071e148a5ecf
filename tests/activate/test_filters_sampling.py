"""User sampling of a connection (``Filters.sample_percent``, :func:`sampled_in`).

docs/activate.md (``--sample-percent P``): "this percentage of users, chosen by a SHA-256 of
the mpid: stable per user, and a user in a 10 % sample is in every larger one". The tests run
over a fixed set of MPIDs (no randomness), so each one passes or fails the same way every time.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping

import msgspec
import pytest

from patchbay.activate.filters import apply_filters, sampled_in
from patchbay.backends.records import Filters
from patchbay.collect.batch import Batch
from patchbay.collect.decode import decode_batch

#: The fixed population: 100,000 consecutive MPIDs.
MPIDS = range(1, 100_001)
N = len(MPIDS)

#: Percentages from the finest step (0.01 %) to everyone, in increasing order.
PERCENTS = (0.01, 0.1, 0.5, 1, 2.5, 10, 33, 50, 90, 99.99, 100)


@pytest.fixture(scope="module")
def samples() -> Mapping[float, frozenset[int]]:
    """For each percentage, the users of ``MPIDS`` in its sample."""
    return {p: frozenset(u for u in MPIDS if sampled_in(u, p)) for p in PERCENTS}


@pytest.mark.parametrize("percent", [1, 0.5, 0.1, 0.01])
def test_small_samples_send_some_users(
    samples: Mapping[float, frozenset[int]], percent: float
) -> None:
    assert samples[percent], f"nobody in a {percent} % sample of {N} users"


@pytest.mark.parametrize("percent", [0.1, 0.5, 1, 2.5, 10, 33, 50, 90])
def test_sample_size_is_close_to_its_percentage(
    samples: Mapping[float, frozenset[int]], percent: float
) -> None:
    # If the hash spreads users evenly, the sample size is Binomial(N, p): mean N*p, standard
    # deviation sqrt(N*p*(1-p)) (about 10 users at 0.1 %, 31 at 1 %, 158 at 50 %). We allow
    # 5 standard deviations: a fair hash lands outside with probability below 1e-6, while a
    # sample of the wrong size by a factor (e.g. 0.1 % taken as 1 %, 1 % as 0.01 %, or the
    # complement 99 % for 1 %) is off by dozens of deviations.
    p = percent / 100
    mean = N * p
    tolerance = 5 * math.sqrt(N * p * (1 - p))
    size = len(samples[percent])
    assert abs(size - mean) <= tolerance, (percent, size, mean, tolerance)


def test_zero_percent_sends_nobody() -> None:
    assert not any(sampled_in(u, 0) for u in MPIDS)
    assert not any(sampled_in(u, 0.0) for u in (0, -1, 2**63 - 1, -(2**63)))


def test_hundred_percent_sends_everybody(samples: Mapping[float, frozenset[int]]) -> None:
    assert samples[100] == frozenset(MPIDS)
    assert all(sampled_in(u, 100.0) for u in (0, -1, 2**63 - 1, -(2**63)))
    # Just below 100 % is not everybody: 0.01 % of users are left out (about 10 here).
    left_out = frozenset(MPIDS) - samples[99.99]
    assert 0 < len(left_out) <= 5 * math.sqrt(N * 0.0001 * 0.9999) + N * 0.0001


def test_a_user_in_a_smaller_sample_is_in_every_larger_one(
    samples: Mapping[float, frozenset[int]],
) -> None:
    for smaller, larger in itertools.pairwise(PERCENTS):
        assert samples[smaller] <= samples[larger], (smaller, larger)
        assert samples[smaller] != samples[larger], (smaller, larger)


def test_sampling_is_stable_across_processes() -> None:
    # The hash is SHA-256 of the mpid, not Python's (per-process) hash: the same users are in
    # a sample after a restart, on every machine. These are the first members of the 1 %
    # sample of 1..100,000; if they change, every running sample is reshuffled.
    assert [u for u in range(1, 800) if sampled_in(u, 1)] == [253, 463, 471, 644, 751]


def _batch() -> Batch:
    body = {"events": [{"event_type": "session_start", "data": {}}]}
    return decode_batch(msgspec.json.encode(body))


@pytest.mark.parametrize("percent", [0, 0.1, 1, 50, 100])
def test_filters_forward_exactly_the_sampled_users(percent: float) -> None:
    batch = _batch()
    filters = Filters(sample_percent=percent)
    users = range(1, 5_001)
    forwarded = {u for u in users if apply_filters(batch, u, filters) is not None}
    assert forwarded == {u for u in users if sampled_in(u, percent)}
    assert all(apply_filters(batch, u, filters) is batch for u in forwarded)


def test_a_percentage_is_not_widened_by_floating_point() -> None:
    """0.07 % and 1.1 % take exactly 7 and 110 of the 10,000 buckets (0.07 * 100 is
    7.000000000000001 in floating point, which once took an 8th bucket)."""
    buckets_of = {
        m: int.from_bytes(hashlib.sha256(str(m).encode()).digest()[:8], "big") % 10_000
        for m in range(1, 100_001)
    }
    for percent, buckets in ((0.07, 7), (1.1, 110), (0.29, 29)):
        exact = {m for m, b in buckets_of.items() if b < buckets}
        assert {m for m in buckets_of if sampled_in(m, percent)} == exact


def test_a_sample_finer_than_the_buckets_is_refused() -> None:
    """A connection cannot ask for 0.001 %: it would get 0.01 %, ten times as many users."""
    from patchbay.activate.service import check_filters

    assert any("steps of 0.01" in p for p in check_filters(Filters(sample_percent=0.001)))
    assert check_filters(Filters(sample_percent=0.01)) == []
    assert check_filters(Filters(sample_percent=12.34)) == []
