"""The contract of :class:`~patchbay.backends.abstract.StateStore`, on every backend."""

from __future__ import annotations

import pytest

from patchbay.backends.abstract import Backend, StateStore
from patchbay.backends.records import (
    Checkpoint,
    CheckpointMoved,
    LogPosition,
    MergeRecord,
    StateChanges,
)
from patchbay.errors import ResolveConflict
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import IdentityRecord, new_profile
from patchbay.resolve.state import StagedState
from tests.deployments import BackendSpec, Stores


@pytest.fixture
def state(backend: Backend) -> StateStore:
    return backend.state


def at(partition: int, offset: int) -> LogPosition:
    return LogPosition(partition, offset)


def emails(n: int) -> list[Identity]:
    return [Identity("email", f"u{i}@example.com") for i in range(n)]


def test_empty_state(state: StateStore) -> None:
    """A new state has nothing: no checkpoint, profile, link, merge or resolved user."""
    assert state.checkpoint() == {}
    assert state.profile(1) is None
    assert state.profiles([1, 2]) == {}
    assert state.users_with(Identity("email", "a@example.com")) == []
    assert state.users_with_each([Identity("email", "a@example.com")]) == {}
    assert state.users_with_each([]) == {}
    assert state.merges(1) == []
    assert state.count_profiles() == 0
    assert state.resolved(0, None, 10) == []
    assert state.forget_resolved({0: at(0, 100)}) == 0


def test_links_oldest_first(state: StateStore) -> None:
    """An identity's users are listed oldest link first; an unlink and a re-link make the
    user the newest; linking again what is linked changes nothing."""
    device = Identity("ios_advertising_id", "shared-device")
    state.commit(StateChanges(linked={device: [7, 3]}), {})
    state.commit(StateChanges(linked={device: [9, 3]}), {})
    assert state.users_with(device) == [7, 3, 9]
    state.commit(StateChanges(unlinked={device: {7}}), {})
    state.commit(StateChanges(linked={device: [7]}), {})
    assert state.users_with(device) == [3, 9, 7]
    state.commit(StateChanges(unlinked={device: {3, 9, 7}}), {})
    assert state.users_with(device) == []
    assert state.users_with_each([device]) == {}
    state.commit(StateChanges(unlinked={Identity("email", "nobody"): {1}}), {})


def test_users_with_each_matches_users_with_in_link_order(state: StateStore) -> None:
    """The bulk look-up of links agrees with the single one, link order included, for more
    identities than one query holds and several types; unlinked identities are left out."""
    changes = StateChanges()
    for i, identity in enumerate(emails(1203)):
        changes.linked[identity] = [i + 1]
    device = Identity("ios_advertising_id", "shared-device")
    changes.linked[device] = [7, 3, 9]
    state.commit(changes, {0: at(0, 1)})
    state.commit(StateChanges(unlinked={device: {7}}), {0: at(0, 2)})
    state.commit(StateChanges(linked={device: [7]}), {0: at(0, 3)})

    asked = [*emails(1210), device, Identity("customer_id", "nobody")]
    found = state.users_with_each(asked)

    assert found[device] == [3, 9, 7] == state.users_with(device)
    for identity in asked:
        assert found.get(identity, []) == state.users_with(identity)
    assert Identity("customer_id", "nobody") not in found
    assert len(found) == 1204


def test_profiles_matches_profile(state: StateStore) -> None:
    """The bulk look-up of profiles agrees with the single one; missing MPIDs (negative
    ones included) are left out."""
    changes = StateChanges(profiles={m: new_profile(m, 1000 + m) for m in range(-600, 600, 2)})
    state.commit(changes, {0: at(0, 1)})

    found = state.profiles(range(-700, 700))

    assert found.keys() == set(range(-600, 600, 2))
    for mpid, profile in found.items():
        assert profile == state.profile(mpid) == changes.profiles[mpid]
    assert state.count_profiles() == 600


def test_profiles_are_replaced_and_returned_as_copies(state: StateStore) -> None:
    """A profile written again replaces the old one; changing a profile after committing
    it, or one returned by a look-up, never changes the stored one."""
    written = new_profile(1, 1_000)
    state.commit(StateChanges(profiles={1: written}), {})
    written.user_attributes["after-commit"] = "x"
    stored = state.profile(1)
    assert stored == new_profile(1, 1_000)

    assert stored is not None
    stored.user_attributes["changed"] = "yes"
    stored.identities.append(IdentityRecord("email", "a@example.com", 1, 1))
    state.profiles([1])[1].user_attributes["bulk"] = "yes"
    assert state.profile(1) == new_profile(1, 1_000)
    assert state.profiles([1]) == {1: new_profile(1, 1_000)}

    newer = new_profile(1, 1_000)
    newer.last_seen_ms = 9_000
    state.commit(StateChanges(profiles={1: newer}), {})
    assert state.profile(1) == newer
    assert state.count_profiles() == 1


def test_merges_into_or_out_of_a_user_oldest_first(state: StateStore) -> None:
    """``merges`` lists the merges a user took part in, on either side, oldest first;
    merged profiles still count."""
    first = MergeRecord(2, 1, "email", 1_000, 5)
    second = MergeRecord(1, 3, "customer_id", 2_000, 9)
    unrelated = MergeRecord(4, 5, "email", 1_500, 7)
    state.commit(StateChanges(merges=[first, unrelated]), {})
    state.commit(
        StateChanges(merges=[second], profiles={m: new_profile(m, 1) for m in (1, 2, 3)}), {}
    )
    assert state.merges(1) == [first, second]
    assert state.merges(2) == [first]
    assert state.merges(5) == [unrelated]
    assert state.merges(6) == []
    assert state.count_profiles() == 3


def test_merged_into_lists_the_users_each_survivor_absorbed(state: StateStore) -> None:
    """``merged_into`` gives, for each asked MPID that absorbed users, those it absorbed
    directly, oldest merge first (not by MPID); absorbed or unrelated MPIDs are left out."""
    state.commit(
        StateChanges(
            merges=[MergeRecord(3, 1, "email", 1_000, 1), MergeRecord(5, 6, "email", 1_100, 2)]
        ),
        {},
    )
    state.commit(
        StateChanges(
            merges=[
                MergeRecord(2, 1, "customer_id", 1_200, 3),
                MergeRecord(1, 4, "email", 1_300, 4),
            ]
        ),
        {},
    )
    assert state.merged_into([1, 4, 6, 2, 3, 99]) == {1: [3, 2], 4: [1], 6: [5]}
    assert state.merged_into([4, 4]) == state.merged_into({4}) == {4: [1]}
    assert state.merged_into([2, 3, 5]) == {}
    assert state.merged_into([]) == {}


def test_merged_into_many_survivors(state: StateStore) -> None:
    """``merged_into`` of more survivors than one query holds (negative MPIDs included)
    agrees with ``merges``."""
    merges = [MergeRecord(10_000 + i, i, "email", i, i) for i in range(-600, 700)]
    merges += [MergeRecord(20_000 + i, i, "email", 5_000, 1) for i in range(0, 700, 7)]
    state.commit(StateChanges(merges=merges), {})
    found = state.merged_into(range(-700, 800))
    assert found.keys() == set(range(-600, 700))
    for survivor, absorbed in found.items():
        assert absorbed == [m.from_mpid for m in state.merges(survivor) if m.to_mpid == survivor]
    assert found[7] == [10_007, 20_007]


def test_checkpoint_per_partition(state: StateStore) -> None:
    """The checkpoint is kept per partition: a commit moves the partitions it names and
    keeps the others; the returned checkpoint is a copy."""
    state.commit(StateChanges(), {0: at(0, 5), 2: at(2, 3)})
    assert state.checkpoint() == {0: at(0, 5), 2: at(2, 3)}
    state.commit(StateChanges(profiles={1: new_profile(1, 1)}), {0: at(0, 9)})
    assert state.checkpoint() == {0: at(0, 9), 2: at(2, 3)}
    state.commit(StateChanges(), {})
    returned = state.checkpoint()
    returned[1] = at(1, 100)
    assert state.checkpoint() == {0: at(0, 9), 2: at(2, 3)}


def test_fenced_commit_applies_only_from_where_it_started(state: StateStore) -> None:
    """A commit given the positions it started from (``since``) applies only if every one
    of them is still the stored position (``None``: the partition has none); otherwise it
    raises ``CheckpointMoved`` naming the partitions and applies nothing: the fence that
    keeps a processor that lost a partition from applying a chunk the new owner applies."""
    profile = new_profile(1, 1)
    state.commit(StateChanges(resolved=[(at(0, 1), 1)]), {0: at(0, 1)}, since={0: None})
    state.commit(StateChanges(), {1: at(1, 4)}, since={1: None})
    with pytest.raises(CheckpointMoved) as caught:
        state.commit(
            StateChanges(profiles={1: profile}, resolved=[(at(0, 2), 1)]),
            {0: at(0, 2), 1: at(1, 6)},
            since={0: None, 1: at(1, 4)},
        )
    assert caught.value.partitions == [0]
    with pytest.raises(CheckpointMoved):
        state.commit(StateChanges(), {1: at(1, 9)}, since={1: at(1, 5)})
    assert state.checkpoint() == {0: at(0, 1), 1: at(1, 4)}
    assert state.profile(1) is None
    assert state.resolved(0, None, 10) == [(at(0, 1), 1)]
    state.commit(
        StateChanges(profiles={1: profile}, resolved=[(at(0, 2), 1)]),
        {0: at(0, 2), 1: at(1, 6)},
        since={0: at(0, 1), 1: at(1, 4)},
    )
    assert state.checkpoint() == {0: at(0, 2), 1: at(1, 6)}
    assert state.profile(1) == profile
    state.commit(StateChanges(), {0: at(0, 1)})  # unfenced: last one wins (a rewind)
    assert state.checkpoint() == {0: at(0, 1), 1: at(1, 6)}


def test_resolved_users_in_log_order_per_partition(state: StateStore) -> None:
    """Resolved users are read per partition, in log order, after a position (``None``:
    from the start), at most ``limit``."""
    state.commit(
        StateChanges(resolved=[(at(0, 1), 10), (at(1, 1), 20), (at(0, 2), 11)]),
        {0: at(0, 2), 1: at(1, 1)},
    )
    state.commit(StateChanges(resolved=[(at(0, 4), 12), (at(1, 3), 21)]), {0: at(0, 4)})
    assert state.resolved(0, None, 10) == [(at(0, 1), 10), (at(0, 2), 11), (at(0, 4), 12)]
    assert state.resolved(1, None, 10) == [(at(1, 1), 20), (at(1, 3), 21)]
    assert state.resolved(0, at(0, 1), 10) == [(at(0, 2), 11), (at(0, 4), 12)]
    assert state.resolved(0, at(0, 3), 10) == [(at(0, 4), 12)]
    assert state.resolved(0, None, 2) == [(at(0, 1), 10), (at(0, 2), 11)]
    assert state.resolved(0, None, 0) == []
    assert state.resolved(0, at(0, 4), 10) == []
    assert state.resolved(0, at(0, 1000), 10) == []
    assert state.resolved(2, None, 10) == []
    assert state.resolved(-1, None, 10) == []


def test_forget_resolved_at_or_before(state: StateStore) -> None:
    """``forget_resolved`` drops the resolved users at or before the position of each
    partition it names (others untouched) and counts them."""
    state.commit(StateChanges(resolved=[(at(0, o), o) for o in (1, 2, 3)] + [(at(1, 1), 100)]), {})
    assert state.forget_resolved({}) == 0
    assert state.forget_resolved({0: at(0, 2)}) == 2
    assert state.forget_resolved({0: at(0, 2)}) == 0
    assert state.resolved(0, None, 10) == [(at(0, 3), 3)]
    assert state.resolved(1, None, 10) == [(at(1, 1), 100)]
    assert state.forget_resolved({0: at(0, 100), 1: at(1, 1), 5: at(5, 1)}) == 2
    assert state.resolved(0, None, 10) == state.resolved(1, None, 10) == []


def test_reset_forgets_everything(state: StateStore) -> None:
    """``reset`` forgets profiles, links, merges, resolved users and the checkpoint; the
    state is then usable as new."""
    device = Identity("email", "a@example.com")
    state.commit(
        StateChanges(
            profiles={1: new_profile(1, 1)},
            linked={device: [1]},
            merges=[MergeRecord(2, 1, "email", 1, 1)],
            resolved=[(at(0, 1), 1), (at(1, 1), 1)],
        ),
        {0: at(0, 1), 1: at(1, 1)},
    )
    state.reset()
    assert state.checkpoint() == {}
    assert state.profile(1) is None
    assert state.count_profiles() == 0
    assert state.users_with(device) == []
    assert state.merges(1) == []
    assert state.merged_into([1]) == {}
    assert state.resolved(0, None, 10) == state.resolved(1, None, 10) == []
    state.commit(StateChanges(linked={device: [5]}, resolved=[(at(0, 1), 5)]), {0: at(0, 1)})
    assert state.users_with(device) == [5]
    assert state.resolved(0, None, 10) == [(at(0, 1), 5)]
    assert state.checkpoint() == {0: at(0, 1)}


def test_prefetched_state_reads_as_the_lazy_one(state: StateStore) -> None:
    """A staged state that prefetched links and profiles in bulk reads the same as one that
    looks them up one by one; staged changes win over a later prefetch."""
    identities = emails(20)
    changes = StateChanges(profiles={m: new_profile(m, 5) for m in range(10)})
    for i, identity in enumerate(identities[:10]):
        changes.linked[identity] = [i]
    state.commit(changes, {0: at(0, 1)})

    lazy, eager = StagedState(state), StagedState(state)
    eager.prefetch_links(identities)
    eager.prefetch_profiles(range(-5, 15))

    for identity in identities:
        assert eager.users_with(identity) == lazy.users_with(identity)
    for mpid in range(-5, 15):
        assert eager.profile(mpid) == lazy.profile(mpid)
    eager.link(identities[15], 3)
    eager.prefetch_links(identities)
    assert eager.users_with(identities[15]) == [3]


@pytest.mark.persists
def test_state_persists_across_reopen(stores: Stores, backend: Backend) -> None:
    """Everything committed is there after reopening: profiles, links in order, merges,
    resolved users and the checkpoint of each partition."""
    device = Identity("email", "a@example.com")
    merge = MergeRecord(2, 1, "email", 1, 1)
    checkpoint: Checkpoint = {0: at(0, 4), 1: at(1, 2)}
    backend.state.commit(
        StateChanges(
            profiles={1: new_profile(1, 1), 2: new_profile(2, 2)},
            linked={device: [2, 1]},
            merges=[merge],
            resolved=[(at(0, 4), 1), (at(1, 2), 2)],
        ),
        checkpoint,
    )
    state = stores.reopen(backend).state
    assert state.checkpoint() == checkpoint
    assert state.profiles([1, 2, 3]) == {1: new_profile(1, 1), 2: new_profile(2, 2)}
    assert state.users_with(device) == [2, 1]
    assert state.merges(2) == [merge]
    assert state.merged_into([1, 2]) == {1: [2]}
    assert state.resolved(0, None, 10) == [(at(0, 4), 1)]
    assert state.resolved(1, None, 10) == [(at(1, 2), 2)]
    assert state.count_profiles() == 2


def _new_user_for(state: StateStore, email: Identity, mpid: int) -> StagedState:
    """A resolver's decision: ``email`` is nobody's (as read), so it goes to a new user."""
    staged = StagedState(state)
    assert staged.users_with(email) == []
    assert staged.profile(mpid) is None
    staged.put(new_profile(mpid, 1))
    staged.link(email, mpid)
    return staged


def _shared(spec: BackendSpec) -> None:
    if not spec.shared_state:
        pytest.skip(f"{spec.name}: one resolver writes the state (the check may be skipped)")


def test_a_commit_decided_on_stale_links_is_refused(state: StateStore, spec: BackendSpec) -> None:
    """Two resolvers both read that an email is nobody's and each give it a new user: the
    later commit is refused and writes nothing (not even its checkpoint); read again, the
    email is the first user's."""
    _shared(spec)
    email = Identity("email", "a@example.com")
    first, second = _new_user_for(state, email, 1), _new_user_for(state, email, 2)
    state.commit(first.changes, {0: at(0, 1)})
    with pytest.raises(ResolveConflict):
        state.commit(second.changes, {0: at(0, 2)})
    assert state.users_with(email) == [1]
    assert state.profile(2) is None
    assert state.checkpoint() == {0: at(0, 1)}
    assert StagedState(state).users_with(email) == [1]


def test_a_commit_decided_on_a_stale_profile_is_refused(
    state: StateStore, spec: BackendSpec
) -> None:
    """A resolver updates a profile another commit merged meanwhile: refused, nothing
    written; a profile written again as it was read is no conflict."""
    _shared(spec)
    state.commit(StateChanges(profiles={1: new_profile(1, 1), 2: new_profile(2, 2)}), {})
    stale = StagedState(state)
    stale.prefetch_profiles([1, 3])
    seen = stale.profile(1)
    assert seen is not None
    seen.user_attributes["plan"] = "gold"
    stale.put(seen)

    merged = new_profile(1, 1)
    merged.merged_into = 2
    state.commit(StateChanges(profiles={1: merged}), {})
    with pytest.raises(ResolveConflict):
        state.commit(stale.changes, {})
    assert state.profile(1) == merged

    same = StagedState(state)
    assert same.profile(3) is None
    state.commit(StateChanges(profiles={1: merged}), {})  # the same content again
    same.put(new_profile(3, 3))
    same.profile(1)
    state.commit(same.changes, {})
    assert state.profile(3) == new_profile(3, 3)


def test_before_runs_after_the_check_and_before_the_writes(state: StateStore) -> None:
    """``before`` sees nothing of the commit yet; if it raises, nothing is written."""
    email = Identity("email", "a@example.com")
    seen: list[list[int]] = []
    staged = _new_user_for(state, email, 1)

    def failing() -> None:
        seen.append(state.users_with(email))
        raise RuntimeError("the record could not be appended")

    with pytest.raises(RuntimeError):
        state.commit(staged.changes, {0: at(0, 1)}, before=failing)
    assert (state.users_with(email), state.profile(1), state.checkpoint()) == ([], None, {})
    state.commit(staged.changes, {0: at(0, 1)}, before=lambda: seen.append(state.users_with(email)))
    assert seen == [[], []]
    assert state.users_with(email) == [1]


def test_a_fenced_commit_calls_no_before_and_wins_over_a_conflict(
    state: StateStore, spec: BackendSpec
) -> None:
    """The fence is checked before ``before`` runs: a commit whose partition moved calls
    nothing and writes nothing. On a shared store, a commit both fenced out and decided on
    stale reads is refused as fenced (its chunk is dropped, not resolved again)."""
    email = Identity("email", "a@example.com")
    first, second = _new_user_for(state, email, 1), _new_user_for(state, email, 2)
    state.commit(first.changes, {0: at(0, 1)}, since={0: None})
    called: list[str] = []
    with pytest.raises(CheckpointMoved):
        state.commit(
            second.changes, {0: at(0, 2)}, since={0: None}, before=lambda: called.append("x")
        )
    assert called == []
    assert (state.users_with(email), state.profile(2)) == ([1], None)
    assert state.checkpoint() == {0: at(0, 1)}
    if spec.shared_state:
        with pytest.raises(ResolveConflict):
            state.commit(second.changes, {0: at(0, 2)}, since={0: at(0, 1)})
