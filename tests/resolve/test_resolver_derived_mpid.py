"""Golden values of :func:`derived_mpid`: the MPID a new user gets from its batch id.

A replay or a rebuild of the state from the log (``patchbay reprocess``) creates every user
again, with the MPID derived from the batch that created it. If the derivation changed
between releases, a rebuild would renumber every user: the MPIDs that SDKs, IDSync clients
and downstream tools hold would name nobody. These values were computed once, by the
derivation as released; they must never change. A failure here is not fixed by updating the
values.
"""

from __future__ import annotations

import hashlib
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchbay.backends.abstract import Backend
from patchbay.resolve import resolver as resolver_module
from patchbay.resolve.resolver import derived_mpid
from tests.resolve.resolver_desk import Desk

INT64_MIN = -(2**63)

#: (seed, attempt, MPID), computed once with the released derivation.
GOLDEN = [
    ("", 0, 488923933339796033),
    ("", 1, 4551252233127570221),
    ("batch-1", 0, -7944415002511435596),
    ("batch-1", 1, -390119556721333516),
    ("batch-1", 2, 1268847737291605819),
    ("batch-1", 7, -4529346606046130465),
    ("0b7c1e4e-5f0a-4a8e-9d7e-2f1c3b4a5d6e", 0, -8395957838380705845),
    ("0b7c1e4e-5f0a-4a8e-9d7e-2f1c3b4a5d6e", 1, 1696602677815505626),
    ("é-ünïcödé", 0, 3293843719593701029),
    ("seed/with/slashes", 0, 729169937298984697),
    ("seed/with/slashes", 1, -1296398077611976108),
]


@pytest.mark.parametrize(("seed", "attempt", "mpid"), GOLDEN)
def test_derived_mpid_is_stable_across_releases(seed: str, attempt: int, mpid: int) -> None:
    """The same seed (and attempt) gives the same MPID in every release: a rebuild from the
    log must not renumber users."""
    assert derived_mpid(seed, attempt) == mpid


def test_default_attempt_is_zero() -> None:
    assert derived_mpid("batch-1") == derived_mpid("batch-1", 0) == -7944415002511435596


@settings(max_examples=50, deadline=None)
@given(seed=st.text(max_size=40), attempt=st.integers(0, 5))
def test_derived_mpid_is_the_first_eight_bytes_of_sha256(seed: str, attempt: int) -> None:
    """The derivation for any seed: SHA-256 of ``"{seed}/{attempt}"`` (UTF-8), its first
    eight bytes as a big-endian signed integer (never 0 nor INT64_MIN, see below)."""
    digest = hashlib.sha256(f"{seed}/{attempt}".encode()).digest()
    expected = int.from_bytes(digest[:8], "big", signed=True)
    assert derived_mpid(seed, attempt) == expected


def _forcing(forced: dict[bytes, bytes]) -> types.SimpleNamespace:
    """A stand-in for :mod:`hashlib` whose SHA-256 of the given inputs is the given digest
    (no real seed is known to hash to 0 or INT64_MIN)."""

    class Digest:
        def __init__(self, data: bytes) -> None:
            self._data = data

        def digest(self) -> bytes:
            if self._data in forced:
                return forced[self._data]
            return hashlib.sha256(self._data).digest()

    return types.SimpleNamespace(sha256=Digest)


ZERO = bytes(32)
MIN = b"\x80" + bytes(31)


@pytest.mark.parametrize(
    ("forced", "mpid"),
    [
        ({b"batch-1/0": ZERO}, -390119556721333516),  # attempt 1
        ({b"batch-1/0": MIN}, -390119556721333516),
        ({b"batch-1/0": ZERO, b"batch-1/1": MIN}, 1268847737291605819),  # attempt 2
    ],
)
def test_a_digest_of_zero_or_int64_min_moves_to_the_next_attempt(
    monkeypatch: pytest.MonkeyPatch, forced: dict[bytes, bytes], mpid: int
) -> None:
    """0 and INT64_MIN are never MPIDs (mParticle treats 0 as no user; INT64_MIN has no
    positive counterpart): such a digest moves on to the next attempt, deterministically."""
    monkeypatch.setattr(resolver_module, "hashlib", _forcing(forced))
    assert derived_mpid("batch-1") == mpid
    assert mpid not in (0, INT64_MIN)


def test_derived_mpid_taken_by_an_adopted_user_moves_to_attempt_one(backend: Backend) -> None:
    """A batch naming an unknown MPID adopts it. When that MPID is the one another batch
    would derive, the later batch's user gets attempt 1's MPID (still replayable)."""
    desk = Desk(backend.state)
    adopted = desk.resolve(mpid=-7944415002511435596)  # derived_mpid("batch-1")
    assert adopted.created
    # The desk's second batch is ``batch-2``; make a desk whose next batch is ``batch-1``.
    desk.batches = 0
    found = desk.resolve()
    assert found.created
    assert found.mpid == -390119556721333516  # derived_mpid("batch-1", 1)
