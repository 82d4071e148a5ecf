"""The PostgreSQL resolve state shared by two processes (two pools on one database), and
its commit all or nothing with the checkpoint."""

from __future__ import annotations

from functools import partial

import psycopg
import pytest

from patchbay.backends.postgres import PostgresDatabase
from patchbay.backends.postgres.state import PostgresStateStore
from patchbay.backends.records import LogPosition, StateChanges
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import new_profile
from tests.backends.helpers import at_once

Pair = tuple[PostgresDatabase, PostgresDatabase]


def test_a_failed_commit_writes_nothing(two_databases: Pair) -> None:
    """A commit whose last statement (the checkpoint) fails leaves the profiles, links and
    resolved users before it unwritten, and the checkpoint as it was."""
    state = PostgresStateStore(two_databases[0])
    state.commit(StateChanges(), {0: LogPosition(0, 1)})
    email = Identity("email", "a@example.com")
    changes = StateChanges(
        profiles={1: new_profile(1, 1)}, linked={email: [1]}, resolved=[(LogPosition(0, 2), 1)]
    )
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        state.commit(changes, {0: LogPosition(0, 2**63)})  # beyond BIGINT
    assert state.profile(1) is None
    assert state.users_with(email) == []
    assert state.resolved(0, None, 10) == []
    assert state.checkpoint() == {0: LogPosition(0, 1)}


def test_commits_of_the_same_rows_in_any_order_never_deadlock(two_databases: Pair) -> None:
    """Two processes committing the same profiles and links at once, given in opposite
    orders, both succeed; each link is stored once."""
    first, second = (PostgresStateStore(db) for db in two_databases)
    mpids = list(range(300))
    for round_ in range(10):
        forward = StateChanges(
            profiles={m: new_profile(m, round_) for m in mpids},
            linked={Identity("email", f"u{m}"): [m] for m in mpids},
        )
        backward = StateChanges(
            profiles={m: new_profile(m, round_) for m in reversed(mpids)},
            linked={Identity("email", f"u{m}"): [m] for m in reversed(mpids)},
        )
        checkpoint = {0: LogPosition(0, round_)}
        at_once(
            partial(first.commit, forward, checkpoint), partial(second.commit, backward, checkpoint)
        )
    found = second.users_with_each([Identity("email", f"u{m}") for m in mpids])
    assert found == {Identity("email", f"u{m}"): [m] for m in mpids}
    assert first.profiles(mpids) == {m: new_profile(m, 9) for m in mpids}
    assert first.checkpoint() == {0: LogPosition(0, 9)}
