"""Commits in the background (:mod:`patchbay.segment.overlap`): while a commit is in flight
the users it writes are read as it writes them (copies) and those it drops are gone; its
error reaches the next wait; one commit at a time. And the segment stage: a background
commit that fails leaves nothing half done (a new engine goes on from what is stored)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from patchbay.backends import Backend
from patchbay.backends.abstract import AudienceStore
from patchbay.backends.records import SegmentChanges, SegmentUser, Tally
from patchbay.segment.criteria import Definition, EventCondition, EventMatch
from patchbay.segment.overlap import BackgroundCommits
from patchbay.segment.stage import OVERLAP_PART, SegmentStage
from tests.segment.harness import SegmentWorld


class Gated:
    """An audience store whose commits wait until :attr:`gate` is set."""

    def __init__(self, store: AudienceStore) -> None:
        self.store = store
        self.gate = threading.Event()
        self.started = threading.Event()
        self.commits = 0

    def commit(self, changes: SegmentChanges, *args: Any) -> None:
        self.started.set()
        assert self.gate.wait(10)
        self.store.commit(changes, *args)
        self.commits += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def user(mpid: int, count: int) -> SegmentUser:
    return SegmentUser(mpid=mpid, tallies={1: Tally(count=count)}, audiences=[7])


def test_the_commit_in_flight_is_read_as_it_will_be_stored(backend: Backend) -> None:
    store = backend.audiences
    store.commit(SegmentChanges(users=[user(1, 1), user(2, 1), user(3, 1)]))
    gated = Gated(store)
    commits = BackgroundCommits(gated)  # type: ignore[arg-type]
    written = user(1, 5)
    commits.submit(SegmentChanges(users=[written], dropped_users=[2]), None, None)
    assert gated.started.wait(10)
    seen = commits.users([1, 2, 3, 4])
    assert sorted(seen) == [1, 3]  # 2 is dropped by the commit in flight, 4 has no state
    assert seen[1] == written and seen[1] is not written  # a copy: the commit encodes it
    seen[1].tallies[1].count += 1
    assert written.tallies[1].count == 5
    assert seen[3] == user(3, 1)
    assert store.users([1, 2]) == {1: user(1, 1), 2: user(2, 1)}  # not stored yet
    gated.gate.set()
    commits.wait()
    assert gated.commits == 1
    assert commits.users([1, 2]) == {1: user(1, 5)}
    commits.close()


def test_one_commit_at_a_time_and_its_error_reaches_the_next_wait(backend: Backend) -> None:
    store = backend.audiences
    gated = Gated(store)
    commits = BackgroundCommits(gated)  # type: ignore[arg-type]
    commits.submit(SegmentChanges(users=[user(1, 1)]), None, None)
    assert gated.started.wait(10)
    second = threading.Thread(
        target=commits.submit, args=(SegmentChanges(users=[user(1, 2)]), None, None)
    )
    second.start()
    second.join(0.2)
    assert second.is_alive() and gated.commits == 0  # it waits for the first
    gated.gate.set()
    second.join(10)
    commits.wait()
    assert gated.commits == 2 and store.users([1]) == {1: user(1, 2)}

    def broken(*_args: Any) -> None:
        raise OSError("disk gone")

    gated.commit = broken  # type: ignore[method-assign]
    commits.submit(SegmentChanges(users=[user(1, 3)]), None, None)
    with pytest.raises(OSError, match="disk gone"):
        commits.wait()
    commits.wait()  # reported once
    assert commits.users([1]) == {1: user(1, 2)}
    commits.close()


BUYERS = Definition("buyers", "", EventCondition(EventMatch("custom_event", name="buy")))


def test_a_failed_background_commit_leaves_nothing_half_done(
    world: SegmentWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of the stage is evaluated in parts, each committed while the next is
    evaluated: when the second part's commit fails, the third (evaluated on top of it) is
    never stored, the stage starts a new engine from the stored checkpoint, and the chunk
    offered again counts every batch once."""
    world.define(BUYERS)
    stage = SegmentStage(world.backend, world.clock)
    stage.engine.refresh()
    while stage.engine.build_step():  # live before the first batch
        pass
    batches = OVERLAP_PART * 3
    for n in range(batches):
        world.send(
            {
                "user_identities": {"customer_id": f"c{n % 50}"},
                "events": [{"event_type": "custom_event", "data": {"event_name": "buy"}}],
            }
        )
    world.resolve.run_until_caught_up()
    chunk = [b for c in world.chunks for b in c.batches]
    assert len(chunk) == batches
    store = world.backend.audiences
    commit = store.commit
    calls = []

    def failing(changes: SegmentChanges, *args: Any) -> None:
        if args and args[0]:  # a part's commit, with its checkpoint
            calls.append(len(changes.users))
            if len(calls) == 2:
                raise OSError("disk gone")
        commit(changes, *args)

    monkeypatch.setattr(store, "commit", failing)
    first_engine = stage.engine
    with pytest.raises(OSError, match="disk gone"):
        stage.handle(chunk)
    assert len(calls) == 2  # the third part was evaluated, never committed
    assert stage.engine is not first_engine
    stored = store.checkpoint()
    assert stage.engine.checkpoint == stored
    assert stored[0] == chunk[OVERLAP_PART - 1].stored.position  # the first part only
    monkeypatch.setattr(store, "commit", commit)
    stage.handle(chunk)  # offered again: what is stored is skipped, the rest counted
    audience = store.get_audience("buyers")
    assert audience is not None
    assert len(store.members(audience.id, None, 1000)) == 50
    counted = {
        mpid: user.tallies
        for mpid, user in store.users(store.members(audience.id, None, 1000)).items()
    }
    assert sum(t.count for tallies in counted.values() for t in tallies.values()) == batches
