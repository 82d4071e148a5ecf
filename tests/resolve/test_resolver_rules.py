"""The resolver's matching rules that the scenario tests leave open.

Most run :meth:`Resolver.resolve` on a backend's state (``resolver_desk``); the login rules
also run end to end through the stage (``harness.World``), where the merge records are the
stored ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.abstract import Backend
from patchbay.collect.batch import USER_IDENTITY_TYPES
from patchbay.resolve.identities import Identity
from patchbay.resolve.strategy import IdentityStrategy, LoginBehaviour
from tests.resolve.harness import World
from tests.resolve.resolver_desk import IDFA, IDFA_2, Desk, cid, email, idfa, other

#: ``Desk`` empties the backend's state for each example (the fixture is the test's).
FAST = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TOO_MANY = "linked to too many users"


@pytest.fixture
def world(backend: Backend) -> Iterator[World]:
    w = World(backend)
    yield w
    w.close()


# -- 1. two known users on one device ----------------------------------------------------


@pytest.mark.parametrize("login", ["merge", "separate"])
@pytest.mark.parametrize("alice_used_the_device", [True, False])
def test_known_user_on_a_device_last_used_by_another_known_user_stays_separate(
    backend: Backend, login: LoginBehaviour, alice_used_the_device: bool
) -> None:
    """Alice logs in on the device Bob used last: the batch is Alice's, and the device's
    latest user (Bob, who is not anonymous) is not folded into her: customers never merge."""
    world = World(backend, IdentityStrategy(login=login))
    try:
        device = {"ios_advertising_id": IDFA}
        alice = world.send(
            {
                "device_info": device if alice_used_the_device else {"ios_advertising_id": IDFA_2},
                "user_identities": {"customer_id": "alice"},
            }
        )
        bob = world.send({"device_info": device, "user_identities": {"customer_id": "bob"}})
        assert bob != alice
        again = world.send({"device_info": device, "user_identities": {"customer_id": "alice"}})
        assert again == alice
        for mpid, name in ((alice, "alice"), (bob, "bob")):
            stored = world.state.profile(mpid)
            assert stored is not None
            assert stored.merged_into is None
            assert stored.identity("customer_id") == name
            assert world.state.merges(mpid) == []
        assert world.send({"user_identities": {"customer_id": "bob"}}) == bob
    finally:
        world.close()


def test_known_user_on_another_known_users_device_merges_nothing(backend: Backend) -> None:
    desk = Desk(backend.state)
    alice = desk.resolve(cid("alice"), idfa()).mpid
    bob = desk.resolve(cid("bob"), idfa()).mpid
    found = desk.resolve(cid("alice"), idfa())
    assert (found.mpid, found.created, found.merged) == (alice, False, [])
    assert desk.merges(alice, bob) == []
    assert desk.users_with(idfa()) == [alice, bob]


# -- 2. login: separate --------------------------------------------------------------------


def test_login_separate_never_merges_the_anonymous_profile(backend: Backend) -> None:
    world = World(backend, IdentityStrategy(login="separate"))
    try:
        known = world.send({"user_identities": {"customer_id": "c1"}})
        anon = world.send(
            {"device_info": {"ios_advertising_id": IDFA}, "user_attributes": {"a": "1"}}
        )
        login = world.send(
            {"device_info": {"ios_advertising_id": IDFA}, "user_identities": {"customer_id": "c1"}}
        )
        assert login == known
        assert anon != known
        anonymous = world.state.profile(anon)
        assert anonymous is not None
        assert anonymous.merged_into is None
        assert anonymous.user_attributes == {"a": "1"}
        assert anonymous.user_identities() == []
        assert world.state.merges(known) == []
        assert world.state.merges(anon) == []
        assert "a" not in world.profile(known).user_attributes
    finally:
        world.close()


def test_login_separate_resolution_merges_nothing(backend: Backend) -> None:
    desk = Desk(backend.state, IdentityStrategy(login="separate"))
    known = desk.resolve(cid("c1")).mpid
    anon = desk.resolve(idfa()).mpid
    login = desk.resolve(cid("c1"), idfa())
    assert (login.mpid, login.merged) == (known, [])
    assert desk.profile(anon).merged_into is None
    assert desk.merges(known, anon) == []
    # The same batches under ``merge`` do fold the anonymous profile in (the control).
    merging = Desk(backend.state)
    known = merging.resolve(cid("c1")).mpid
    anon = merging.resolve(idfa()).mpid
    assert merging.resolve(cid("c1"), idfa()).merged == [anon]


# -- 3. a new high-priority identity next to a known lower-priority one --------------------

_ranked_pairs = st.lists(
    st.sampled_from(USER_IDENTITY_TYPES), min_size=2, max_size=2, unique=True
).map(lambda pair: sorted(pair, key=USER_IDENTITY_TYPES.index))


@FAST
@given(pair=_ranked_pairs)
def test_new_higher_priority_identity_does_not_hide_a_known_lower_one(
    backend: Backend, pair: list[str]
) -> None:
    """The highest-priority identity matches nobody; the next one's user is the batch's,
    and it gets the new identity."""
    high, low = pair
    desk = Desk(backend.state)
    known = desk.resolve(Identity(low, "known")).mpid
    found = desk.resolve(Identity(high, "new"), Identity(low, "known"))
    assert (found.mpid, found.created) == (known, False)
    assert desk.profile(known).identity(high) == "new"


def test_new_customer_id_with_a_known_device_is_the_device_user(backend: Backend) -> None:
    desk = Desk(backend.state)
    anon = desk.resolve(idfa()).mpid
    found = desk.resolve(cid("new"), email("new@x.io"), idfa())
    assert (found.mpid, found.created) == (anon, False)


# -- 4. max_users_per_identity at its boundary ---------------------------------------------


def _linked_to(desk: Desk, identity: Identity, users: int) -> list[int]:
    """``users`` users (explicit MPIDs 1..users, customers c1...) linked to ``identity``."""
    for n in range(1, users + 1):
        desk.resolve(cid(f"c{n}"), identity, mpid=n)
    assert desk.users_with(identity) == list(range(1, users + 1))
    return list(range(1, users + 1))


_shared = st.sampled_from([other("household"), idfa(), Identity("android_uuid", "uuid-1")])


@FAST
@given(limit=st.integers(1, 12), identity=_shared)
def test_identity_linked_to_exactly_the_limit_still_matches(
    backend: Backend, limit: int, identity: Identity
) -> None:
    """The resolver counts the users linked to the value and skips it only when the count is
    *more* than ``max_users_per_identity``: at the limit it matches (the latest user)."""
    desk = Desk(backend.state, IdentityStrategy(max_users_per_identity=limit))
    users = _linked_to(desk, identity, limit)
    found = desk.resolve(identity)
    assert (found.mpid, found.created, found.skipped) == (users[-1], False, [])


@FAST
@given(limit=st.integers(1, 12), identity=_shared)
def test_identity_linked_to_one_more_than_the_limit_is_skipped(
    backend: Backend, limit: int, identity: Identity
) -> None:
    desk = Desk(backend.state, IdentityStrategy(max_users_per_identity=limit))
    users = _linked_to(desk, identity, limit + 1)
    found = desk.resolve(identity)
    assert found.created
    assert found.mpid not in users
    assert found.skipped == [(identity, TOO_MANY)]


def test_a_merge_brings_an_identity_back_under_the_limit(backend: Backend) -> None:
    """Links are counted, not every profile that ever held the value: a login merge
    repoints the anonymous user's links to the known user, so the device counts one user
    fewer and matches again."""
    desk = Desk(backend.state, IdentityStrategy(max_users_per_identity=2))
    uuid = Identity("android_uuid", "uuid-1")
    desk.resolve(idfa(), uuid, mpid=1)  # anonymous, on two devices
    desk.resolve(cid("c2"), idfa(), mpid=2)
    desk.resolve(cid("c3"), idfa(), mpid=3)
    assert desk.users_with(idfa()) == [1, 2, 3]  # over the limit
    assert desk.resolve(cid("c2"), uuid).merged == [1]
    assert desk.users_with(idfa()) == [2, 3]
    found = desk.resolve(idfa())
    assert (found.mpid, found.skipped) == (3, [])


# -- 5. after a skip, the other identities are still tried ---------------------------------


def test_skipped_user_identity_falls_through_to_the_next_user_identity(backend: Backend) -> None:
    desk = Desk(backend.state, IdentityStrategy(max_users_per_identity=1))
    _linked_to(desk, other("household"), 2)
    known = desk.resolve(Identity("other_id_2", "known")).mpid
    found = desk.resolve(other("household"), Identity("other_id_2", "known"))
    assert (found.mpid, found.created) == (known, False)
    assert found.skipped == [(other("household"), TOO_MANY)]


def test_skipped_user_identity_falls_through_to_the_device(backend: Backend) -> None:
    desk = Desk(backend.state, IdentityStrategy(max_users_per_identity=1))
    _linked_to(desk, other("household"), 2)
    anon = desk.resolve(idfa()).mpid
    found = desk.resolve(other("household"), idfa())
    assert (found.mpid, found.created) == (anon, False)
    assert found.skipped == [(other("household"), TOO_MANY)]


def test_skipped_device_falls_through_to_the_next_device(backend: Backend) -> None:
    desk = Desk(backend.state, IdentityStrategy(max_users_per_identity=1))
    _linked_to(desk, idfa(), 2)
    uuid = Identity("android_uuid", "uuid-1")
    anon = desk.resolve(uuid).mpid
    found = desk.resolve(idfa(), uuid)
    assert (found.mpid, found.created) == (anon, False)
    assert found.skipped == [(idfa(), TOO_MANY)]


@pytest.mark.parametrize("kind", ["other", "other_id_5", "mobile_number", "alias"])
def test_over_linked_non_unique_user_identity_is_reported_not_raised(
    backend: Backend, kind: str
) -> None:
    desk = Desk(backend.state, IdentityStrategy(max_users_per_identity=3))
    shared = Identity(kind, "shared")
    users = _linked_to(desk, shared, 4)
    found = desk.resolve(shared)
    assert found.created and found.mpid not in users
    assert found.skipped == [(shared, TOO_MANY)]


# -- a shared user identity never takes over another customer -----------------------------


def test_customers_sharing_a_non_unique_identity_stay_separate(backend: Backend) -> None:
    """Two customers of one household share an ``other`` value. The second customer's batch
    should not land on the first customer's profile (and rewrite its customer id), as a
    second customer on a shared device does not."""
    desk = Desk(backend.state)
    first = desk.resolve(cid("c1"), other("household")).mpid
    second = desk.resolve(cid("c2"), other("household")).mpid
    assert second != first
    assert desk.profile(first).identity("customer_id") == "c1"


def test_a_lower_priority_unique_identity_does_not_hand_over_its_user(backend: Backend) -> None:
    """A batch of a new customer id with an email another customer owns goes to a new user:
    the email's owner keeps both its customer id and its email."""
    desk = Desk(backend.state)
    first = desk.resolve(cid("c1"), Identity("email", "e@example.com")).mpid
    resolution = desk.resolve(cid("c9"), Identity("email", "e@example.com"))
    assert resolution.mpid != first
    assert desk.profile(first).identity("customer_id") == "c1"
    assert desk.profile(first).identity("email") == "e@example.com"
    assert (Identity("email", "e@example.com"), "owned by another user") in resolution.skipped


def test_a_user_changing_a_lower_priority_identity_keeps_its_user(backend: Backend) -> None:
    """The check looks only above the identity that matched: a known customer id with a new
    email is the same user, whose email is replaced."""
    desk = Desk(backend.state)
    first = desk.resolve(cid("c1"), Identity("email", "old@example.com")).mpid
    again = desk.resolve(cid("c1"), Identity("email", "new@example.com")).mpid
    assert again == first
    assert desk.profile(first).identity("email") == "new@example.com"


def test_a_conflicting_match_is_reported_and_the_next_identity_tried(backend: Backend) -> None:
    """The email belongs to customer a (another customer id than the batch's): skipped with
    its reason, and the lower ``other`` identity, whose user has no customer id, decides."""
    desk = Desk(backend.state)
    a = desk.resolve(cid("a"), email("a@example.com")).mpid
    b = desk.resolve(other("b-household")).mpid
    resolution = desk.resolve(cid("new"), email("a@example.com"), other("b-household"))
    assert resolution.mpid == b != a
    assert (
        email("a@example.com"),
        "its user has another identity of higher priority",
    ) in resolution.skipped
