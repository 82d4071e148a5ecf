"""The resolve state store: bulk look-ups agree with the one-at-a-time ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import new_profile
from patchbay.resolve.state import StagedState, StateChanges
from patchbay.store.sqlite_profiles import SqliteProfileStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteProfileStore]:
    opened = SqliteProfileStore(tmp_path, "normal")
    yield opened
    opened.close()


def emails(n: int) -> list[Identity]:
    return [Identity("email", f"u{i}@example.com") for i in range(n)]


def test_users_with_each_matches_users_with_in_link_order(store: SqliteProfileStore) -> None:
    # more values than one IN list holds, two identity types, shared identities
    changes = StateChanges()
    for i, identity in enumerate(emails(1203)):
        changes.linked[identity] = [i + 1]
    device = Identity("ios_advertising_id", "shared-device")
    changes.linked[device] = [7, 3, 9]
    store.commit(changes, 1)
    # an unlink and a re-link make 7 the newest link
    store.commit(StateChanges(unlinked={device: {7}}), 2)
    store.commit(StateChanges(linked={device: [7]}), 3)

    asked = [*emails(1210), device, Identity("customer_id", "nobody")]
    found = store.users_with_each(asked)

    assert found[device] == [3, 9, 7] == store.users_with(device)
    for identity in asked:
        expected = store.users_with(identity)
        assert found.get(identity, []) == expected
    assert Identity("customer_id", "nobody") not in found
    assert len(found) == 1204


def test_profiles_matches_profile(store: SqliteProfileStore) -> None:
    changes = StateChanges(profiles={m: new_profile(m, 1000 + m) for m in range(-600, 600, 2)})
    store.commit(changes, 1)

    found = store.profiles(range(-700, 700))

    assert found.keys() == set(range(-600, 600, 2))
    for mpid, profile in found.items():
        assert profile == store.profile(mpid)


def test_prefetched_state_reads_as_the_lazy_one(store: SqliteProfileStore) -> None:
    identities = emails(20)
    changes = StateChanges(profiles={m: new_profile(m, 5) for m in range(10)})
    for i, identity in enumerate(identities[:10]):
        changes.linked[identity] = [i]
    store.commit(changes, 1)

    lazy, eager = StagedState(store), StagedState(store)
    eager.prefetch_links(identities)
    eager.prefetch_profiles(range(-5, 15))

    for identity in identities:
        assert eager.users_with(identity) == lazy.users_with(identity)
    for mpid in range(-5, 15):
        assert eager.profile(mpid) == lazy.profile(mpid)
    # staged changes win over a later prefetch
    eager.link(identities[15], 3)
    eager.prefetch_links(identities)
    assert eager.users_with(identities[15]) == [3]
