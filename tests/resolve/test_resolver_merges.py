"""Merges in the resolver, unit-tested on a memory state: following merged users, what a
merge records, when a merge is refused, new MPIDs past taken ones, and linking a blocked
value directly (as IDSync and ``user_identity_change`` events do)."""

from __future__ import annotations

from patchbay.backends.abstract import Backend
from patchbay.backends.records import MergeRecord
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import new_profile
from patchbay.resolve.resolver import Resolver, derived_mpid, live_mpid
from patchbay.resolve.state import StagedState
from patchbay.resolve.strategy import IdentityStrategy
from tests.resolve.resolver_desk import Desk, cid, idfa


def login_merge(desk: Desk) -> tuple[int, int]:
    """An anonymous device user, then a known user logging in on that device (merged);
    returns (absorbed, survivor)."""
    anonymous = desk.resolve(idfa()).mpid
    known = desk.resolve(cid("c1")).mpid
    desk.resolve(cid("c1"), idfa())
    return anonymous, known


def test_a_batch_naming_a_merged_user_goes_to_the_survivor(backend: Backend) -> None:
    desk = Desk(backend.state)
    absorbed, survivor = login_merge(desk)
    assert desk.profile(absorbed).merged_into == survivor
    assert desk.resolve(mpid=absorbed).mpid == survivor


def test_live_mpid_follows_a_chain_of_merges(backend: Backend) -> None:
    """a into b, then b into c: a's live user is c; an unknown user has none."""
    desk = Desk(backend.state)
    staged = StagedState(desk.store)
    for mpid in (1, 2, 3):
        staged.put(new_profile(mpid, 1_000))
    assert desk.resolver.merge(staged, 1, 2, "alias", 2_000)
    assert desk.resolver.merge(staged, 2, 3, "alias", 3_000)
    assert live_mpid(staged, 1) == 3
    assert live_mpid(staged, 2) == 3
    assert live_mpid(staged, 3) == 3
    assert live_mpid(staged, 4) is None


def test_a_login_merge_records_its_time_and_log_offset(backend: Backend) -> None:
    desk = Desk(backend.state)
    absorbed, survivor = login_merge(desk)
    # the third batch of the desk: its clock and offset
    assert desk.merges(survivor) == [
        MergeRecord(absorbed, survivor, "login", desk.clock_ms, desk.batches)
    ]


def test_a_merge_without_an_offset_records_offset_zero(backend: Backend) -> None:
    desk = Desk(backend.state)
    staged = StagedState(desk.store)
    staged.put(new_profile(1, 1_000))
    staged.put(new_profile(2, 1_000))
    assert desk.resolver.merge(staged, 1, 2, "alias", 5_000)
    assert staged.changes.merges == [MergeRecord(1, 2, "alias", 5_000, 0)]


def test_merges_that_cannot_happen_are_refused_and_record_nothing(backend: Backend) -> None:
    """A missing user on either side, a user merged into itself, or a user already merged
    away (on either side) is refused."""
    desk = Desk(backend.state)
    staged = StagedState(desk.store)
    for mpid in (1, 2, 3):
        staged.put(new_profile(mpid, 1_000))
    resolver = desk.resolver
    assert not resolver.merge(staged, 1, 99, "alias", 2_000)
    assert not resolver.merge(staged, 99, 1, "alias", 2_000)
    assert not resolver.merge(staged, 1, 1, "alias", 2_000)
    assert resolver.merge(staged, 1, 2, "alias", 2_000)
    assert not resolver.merge(staged, 1, 3, "alias", 3_000)  # 1 is merged already
    assert not resolver.merge(staged, 3, 1, "alias", 3_000)  # into a merged user
    assert staged.changes.merges == [MergeRecord(1, 2, "alias", 2_000, 0)]


def test_a_new_user_takes_the_first_derived_mpid_not_taken(backend: Backend) -> None:
    """Profiles already at the seed's attempts 0 and 1: the new user gets attempt 2."""
    desk = Desk(backend.state)
    seed = f"batch-{desk.batches + 1}"
    staged = StagedState(desk.store)
    staged.put(new_profile(derived_mpid(seed, 0), 1_000))
    staged.put(new_profile(derived_mpid(seed, 1), 1_000))
    desk.store.commit(staged.changes, {})
    resolution = desk.resolve(cid("new"))
    assert resolution.created
    assert resolution.mpid == derived_mpid(seed, 2)


def test_linking_a_blocked_value_directly_is_refused_and_reported(backend: Backend) -> None:
    strategy = IdentityStrategy(blocked_values=("nobody",))
    resolver = Resolver(strategy)
    desk = Desk(backend.state, strategy)
    staged = StagedState(desk.store)
    profile = new_profile(1, 1_000)
    skipped: list[tuple[Identity, str]] = []
    blocked = Identity("email", "NOBODY")
    assert not resolver.link_identity(staged, profile, blocked, 2_000, skipped)
    assert skipped == [(blocked, "blocked value")]
    assert staged.users_with(blocked) == []
    assert profile.identity("email") is None
