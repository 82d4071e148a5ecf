"""Identity scenarios resolved end to end through the stage, on each deployment's stores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from patchbay.backends.abstract import Backend
from patchbay.resolve.strategy import IdentityStrategy
from tests.resolve.harness import World

IDFA = "613ff528-afd1-4c1b-9628-e6ed25ece9c0"
IDFA_2 = "8c61383f-2216-4713-8c1c-1cb0a5d7a4cc"


@pytest.fixture
def world(backend: Backend) -> Iterator[World]:
    w = World(backend)
    yield w
    w.close()


def test_anonymous_then_login_merges(world: World) -> None:
    known = world.send(
        {"user_identities": {"customer_id": "c1"}, "user_attributes": {"plan": "pro"}}
    )
    anon = world.send({"device_info": {"ios_advertising_id": IDFA}, "user_attributes": {"a": "1"}})
    assert anon != known
    login = world.send(
        {"device_info": {"ios_advertising_id": IDFA}, "user_identities": {"customerid": "c1"}}
    )
    assert login == known
    profile = world.profile(anon)
    assert profile.mpid == known
    assert profile.user_attributes == {"plan": "pro", "a": "1"}
    assert [m.reason for m in world.state.merges(known)] == ["login"]
    # The device now resolves to the known user.
    assert world.send({"device_info": {"ios_advertising_id": IDFA}}) == known


def test_anonymous_first_login_converts(world: World) -> None:
    anon = world.send({"device_info": {"ios_advertising_id": IDFA}})
    login = world.send(
        {"device_info": {"ios_advertising_id": IDFA}, "user_identities": {"email": "a@x.io"}}
    )
    assert login == anon
    assert world.profile(anon).identity("email") == "a@x.io"


def test_two_devices_of_one_user(world: World) -> None:
    first = world.send(
        {"device_info": {"ios_advertising_id": IDFA}, "user_identities": {"customer_id": "c1"}}
    )
    second = world.send(
        {"device_info": {"ios_advertising_id": IDFA_2}, "user_identities": {"customer_id": "c1"}}
    )
    assert first == second
    devices = {r.value for r in world.profile(first).device_identities()}
    assert devices == {IDFA, IDFA_2}
    assert world.send({"device_info": {"ios_advertising_id": IDFA_2}}) == first


def test_shared_device_with_another_customer_is_another_user(world: World) -> None:
    alice = world.send(
        {"device_info": {"ios_advertising_id": IDFA}, "user_identities": {"customer_id": "alice"}}
    )
    bob = world.send(
        {"device_info": {"ios_advertising_id": IDFA}, "user_identities": {"customer_id": "bob"}}
    )
    assert alice != bob


@pytest.mark.parametrize(
    ("priority", "winner"),
    [(("customer_id", "email"), "by_customer"), (("email", "customer_id"), "by_email")],
)
def test_conflicting_identities_follow_priority(
    backend: Backend, priority: tuple[str, ...], winner: str
) -> None:
    world = World(backend, IdentityStrategy(priority=priority))
    try:
        users = {
            "by_customer": world.send({"user_identities": {"customer_id": "c1"}}),
            "by_email": world.send({"user_identities": {"email": "e@x.io"}}),
        }
        mpid = world.send({"user_identities": {"customer_id": "c1", "email": "e@x.io"}})
        assert mpid == users[winner]
        loser = next(v for k, v in users.items() if k != winner)
        # The unique identity of the other user is not stolen.
        assert world.profile(loser).identity("email" if winner == "by_customer" else "customer_id")
    finally:
        world.close()


@pytest.mark.parametrize("value", ["", "null", "undefined", "0", "unknown", "N/A", " NULL "])
def test_blocked_values_never_match(world: World, value: str) -> None:
    one = world.send({"user_identities": {"email": value}})
    two = world.send({"user_identities": {"email": value}})
    assert one != two
    assert world.profile(one).identity("email") is None


def test_configured_blocked_value(backend: Backend) -> None:
    world = World(backend, IdentityStrategy(blocked_values=("test@example.com",)))
    try:
        assert world.send({"user_identities": {"email": "test@example.com"}}) != world.send(
            {"user_identities": {"email": "test@example.com"}}
        )
    finally:
        world.close()


def test_over_linked_identity_is_not_used(backend: Backend) -> None:
    world = World(backend, IdentityStrategy(max_users_per_identity=2))
    try:
        shared = {"ios_advertising_id": IDFA}
        users = [
            world.send({"device_info": shared, "user_identities": {"customer_id": f"c{i}"}})
            for i in range(3)
        ]
        assert len(set(users)) == 3
        # Three users share the device: it no longer identifies anyone.
        anon = world.send({"device_info": shared})
        assert anon not in users
    finally:
        world.close()


def test_known_mpid_wins_and_unknown_mpid_is_adopted(world: World) -> None:
    user = world.send({"user_identities": {"customer_id": "c1"}})
    assert world.send({"mpid": str(user), "user_identities": {"email": "e@x.io"}}) == user
    assert world.profile(user).identity("email") == "e@x.io"
    assert world.send({"mpid": 42}) == 42


def test_identity_change_events(world: World) -> None:
    user = world.send({"user_identities": {"customer_id": "c1", "email": "old@x.io"}})
    change = {
        "event_type": "user_identity_change",
        "data": {
            "old": {"identity_type": "email", "identity": "old@x.io"},
            "new": {"identity_type": "email", "identity": "new@x.io"},
        },
    }
    assert world.send({"user_identities": {"customer_id": "c1"}, "events": [change]}) == user
    assert world.profile(user).identity("email") == "new@x.io"
    assert world.send({"user_identities": {"email": "new@x.io"}}) == user
    assert world.send({"user_identities": {"email": "old@x.io"}}) != user


def test_attributes_consent_and_opt_out(world: World) -> None:
    user = world.send(
        {
            "user_identities": {"customer_id": "c1"},
            "user_attributes": {"a": "1", "b": ["x", "y"], "gone": "soon"},
            "consent_state": {
                "gdpr": {"Location": {"consented": True, "timestamp_unixtime_ms": 10}},
                "ccpa": {"data_sale_opt_out": {"consented": False, "timestamp_unixtime_ms": 5}},
            },
        }
    )
    world.send(
        {
            "user_identities": {"customer_id": "c1"},
            "deleted_user_attributes": ["gone"],
            "consent_state": {
                "gdpr": {"location": {"consented": False, "timestamp_unixtime_ms": 5}}
            },
            "events": [
                {
                    "event_type": "user_attribute_change",
                    "data": {"user_attribute_name": "a", "new": "2"},
                },
                {
                    "event_type": "user_attribute_change",
                    "data": {"user_attribute_name": "b", "deleted": True},
                },
                {"event_type": "opt_out", "data": {"is_opted_out": True}},
            ],
        }
    )
    profile = world.profile(user)
    assert profile.user_attributes == {"a": "2"}
    assert profile.gdpr["location"].consented is True  # the older decision does not win
    assert profile.ccpa["data_sale_opt_out"].consented is False
    assert profile.opted_out is True
    assert profile.inputs == ["in-1"]
