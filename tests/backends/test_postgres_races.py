"""Stores of the PostgreSQL backend shared by several processes at once: each process is
a :class:`PostgresDatabase` of its own on one schema, its calls made from threads released
together; the stores must give the answer a single process would have, and never fail for
a lock (a deadlock detected, a unique violation escaping)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from patchbay.backends.postgres import PostgresDatabase
from patchbay.backends.postgres.dedup import PostgresDedupIndex
from patchbay.backends.postgres.inputs import PostgresInputStore
from patchbay.backends.postgres.modules import PostgresModuleStore
from patchbay.backends.postgres.positions import PostgresStagePositions
from patchbay.backends.postgres.state import PostgresStateStore
from patchbay.backends.records import CheckpointMoved, DuplicateName, LogPosition, StateChanges
from patchbay.resolve.profile import new_profile
from patchbay.secretbox import SecretBox
from tests import infra
from tests.backends.test_inputs import make_credential, make_input
from tests.backends.test_modules import http_module

#: Concurrent processes in each test.
PROCESSES = 4
_T = TypeVar("_T")


@pytest.fixture
def databases() -> Iterator[list[PostgresDatabase]]:
    """:data:`PROCESSES` databases (as many processes) on one fresh schema."""
    schema = "r_" + uuid.uuid4().hex[:12]
    made = [PostgresDatabase(infra.postgres_url(), schema=schema) for _ in range(PROCESSES)]
    yield made
    for db in made:
        db.close()


def at_once(calls: Sequence[Callable[[], _T]]) -> list[_T | BaseException]:
    """Run ``calls`` on threads released together; what each returned or raised."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[_T | BaseException] = [RuntimeError("not run")] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = calls[index]()
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_one_of_several_processes_adding_an_input_name_wins(
    databases: list[PostgresDatabase],
) -> None:
    """Processes adding the same input name at once: one stores it with its credential,
    the others get ``DuplicateName`` and store nothing."""
    stores = [PostgresInputStore(db) for db in databases]
    for round_ in range(5):
        items = [make_input(f"app-{round_}") for _ in stores]
        credentials = [make_credential(item) for item in items]
        outcomes = at_once(
            [partial(s.add_input, i, c) for s, i, c in zip(stores, items, credentials, strict=True)]
        )
        won = [n for n, outcome in enumerate(outcomes) if outcome is None]
        assert len(won) == 1, outcomes
        assert all(isinstance(o, DuplicateName) for n, o in enumerate(outcomes) if n != won[0])
        winner = items[won[0]]
        assert stores[0].get_input(winner.name) == winner
        for item, credential in zip(items, credentials, strict=True):
            found = stores[0].find_credential(credential.key)
            assert found == ((credential, winner) if item is winner else None)


def test_processes_recording_overlapping_keys_do_not_deadlock(
    databases: list[PostgresDatabase],
) -> None:
    """Processes recording the same keys at once, each in its own order: no deadlock,
    every key recorded, and the progress at the furthest position any of them recorded."""
    indexes = [PostgresDedupIndex(db) for db in databases]
    for round_ in range(5):
        keys = [("input-1", f"r{round_}-{i}") for i in range(200)]
        calls = []
        for n, index in enumerate(indexes):
            mine = keys[n::2] + keys[::-1]  # overlapping, in different orders
            entries = [(k, 1_000, LogPosition(n % 2, i)) for i, k in enumerate(mine)]
            upto = {0: LogPosition(0, 10 * round_ + n), 1: LogPosition(1, 10 * round_ + n)}
            calls.append(partial(index.record, entries, upto))
        assert at_once(calls) == [None] * PROCESSES
        assert indexes[0].seen(keys, 1_000) == set(keys)
        last = 10 * round_ + PROCESSES - 1
        assert indexes[1].recorded() == {0: LogPosition(0, last), 1: LogPosition(1, last)}


def test_processors_of_one_stage_commit_their_partitions_at_once(
    databases: list[PostgresDatabase],
) -> None:
    """Processors of one stage committing partitions at once (overlapping, as while they
    hand partitions over, named in opposite orders): no deadlock, and every partition has
    the checkpoint a processor committed."""
    stores = [PostgresStagePositions(db) for db in databases]
    for round_ in range(5):
        offset = 1_000 * round_
        checkpoints = []
        for n in range(PROCESSES):
            parts = range(n * 100, n * 100 + 400)
            ordered = reversed(parts) if n % 2 else parts
            checkpoints.append({p: LogPosition(p, offset + p) for p in ordered})
        calls = [partial(s.commit, "activate", c) for s, c in zip(stores, checkpoints, strict=True)]
        assert at_once(calls) == [None] * PROCESSES
        expected = {p: LogPosition(p, offset + p) for p in range(PROCESSES * 100 + 300)}
        assert stores[0].get("activate") == expected


def test_processes_registering_one_module_keep_its_first_creation(
    databases: list[PostgresDatabase], tmp_path: Path
) -> None:
    """Registrations of one module at once: one of them is stored, with the first
    ``created_at_ms``; each is in the history."""
    box = SecretBox(tmp_path / "key")
    stores = [PostgresModuleStore(db, box) for db in databases]
    stores[0].put_module(http_module("demo", "0", at=1))
    versions = [str(n + 1) for n in range(PROCESSES)]
    outcomes = at_once(
        [
            partial(s.put_module, http_module("demo", v, at=10))
            for s, v in zip(stores, versions, strict=True)
        ]
    )
    assert all(not isinstance(o, BaseException) and o.created_at_ms == 1 for o in outcomes)
    stored = stores[0].get_module("demo")
    assert stored is not None and stored.created_at_ms == 1
    history = [h.version for h in stores[0].module_history("demo")]
    assert history[0] == "0" and sorted(history[1:]) == versions
    assert history[-1] == stored.version  # the last registration is the one stored


@pytest.mark.parametrize("since", [None, LogPosition(0, 4)], ids=["first", "moved"])
def test_fenced_commits_from_one_position_one_wins(
    databases: list[PostgresDatabase], since: LogPosition | None
) -> None:
    """Processors that each believe they own partition 0 commit a chunk from the same
    position at once (its first, or a later one): exactly one commit applies, the others
    raise ``CheckpointMoved`` and apply nothing, whatever the order they arrive in."""
    states = [PostgresStateStore(db) for db in databases]
    positions = [PostgresStagePositions(db) for db in databases]
    if since is not None:
        states[0].commit(StateChanges(), {0: since})
        positions[0].commit("activate", {0: since})
    state_outcomes = at_once(
        [
            partial(
                s.commit,
                StateChanges(profiles={i: new_profile(i, 1)}),
                {0: LogPosition(0, 10 + i)},
                {0: since},
            )
            for i, s in enumerate(states)
        ]
    )
    position_outcomes = at_once(
        [
            partial(p.commit, "activate", {0: LogPosition(0, 10 + i)}, {0: since})
            for i, p in enumerate(positions)
        ]
    )
    for outcomes in (state_outcomes, position_outcomes):
        assert sum(o is None for o in outcomes) == 1
        assert all(o is None or isinstance(o, CheckpointMoved) for o in outcomes)
    (winner,) = [i for i, o in enumerate(state_outcomes) if o is None]
    assert states[0].checkpoint() == {0: LogPosition(0, 10 + winner)}
    assert states[0].profiles(range(PROCESSES)).keys() == {winner}
    (winner,) = [i for i, o in enumerate(position_outcomes) if o is None]
    assert positions[0].get("activate") == {0: LogPosition(0, 10 + winner)}
