"""The resolve stage commits a chunk on a thread while it resolves the next one on top of
it (:class:`PendingOverlay`); everything else that touches the state waits for that commit."""

from __future__ import annotations

import threading
from collections.abc import Callable

import msgspec
import pytest

from patchbay.backends.abstract import Backend, BatchLog, StateStore
from patchbay.backends.records import Checkpoint, LogPosition, NewBatch, Since, StateChanges
from patchbay.clock import ManualClock
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile, new_profile
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolveStage
from patchbay.resolve.state import PendingOverlay, StagedState
from patchbay.resolve.strategy import IdentityStrategy
from tests.resolve.harness import WrappedState


class GatedCommits(WrappedState):
    """A profile store whose commits wait until :attr:`gate` is set."""

    def __init__(self, inner: StateStore) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.started = threading.Event()

    def commit(
        self,
        changes: StateChanges,
        checkpoint: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.started.set()
        assert self.gate.wait(30)
        self.inner.commit(changes, checkpoint, since, before)


@pytest.fixture
def gated(backend: Backend) -> tuple[BatchLog, GatedCommits]:
    return backend.log, GatedCommits(backend.state)


def append(log: BatchLog, batch_id: str, email: str, plan: str) -> LogPosition:
    body = msgspec.json.encode(
        {"user_identities": {"email": email}, "user_attributes": {"plan": plan}}
    )
    (position,) = log.append([NewBatch(batch_id, "in", 1_000, "server_to_server", body)])
    return position


def test_the_next_chunk_sees_the_chunk_being_committed(
    gated: tuple[BatchLog, GatedCommits],
) -> None:
    log, state = gated
    stage = ResolveStage(log, state, Resolver(IdentityStrategy()), chunk=1)
    append(log, "b1", "a@example.com", "free")
    last = append(log, "b2", "a@example.com", "pro")

    assert stage.step() == 1  # b1 resolved, its commit waits at the gate
    assert state.started.wait(10)
    assert state.checkpoint() == {}
    done = threading.Event()
    second = threading.Thread(target=lambda: (stage.step(), done.set()))
    second.start()  # b2 is resolved on top of b1, then waits for b1's commit
    assert not done.wait(0.2)
    state.gate.set()
    second.join(10)
    assert done.is_set()
    assert stage.run_until_caught_up() == 0  # settles the last commit

    (mpid,) = state.users_with(Identity("email", "a@example.com"))
    profile = state.profile(mpid)
    assert profile is not None and profile.user_attributes["plan"] == "pro"
    assert state.checkpoint() == {0: last}
    stage.close()


def test_identity_requests_wait_for_the_commit_in_flight(
    gated: tuple[BatchLog, GatedCommits],
) -> None:
    log, state = gated
    resolver = Resolver(IdentityStrategy())
    service = ResolveService(state, resolver, ManualClock(5_000))
    stage = ResolveStage(log, state, resolver, chunk=10)
    service.attach(stage)
    append(log, "b1", "a@example.com", "free")
    service.step(stage)
    assert state.started.wait(10)

    found: list[Profile | None] = []
    reader = threading.Thread(
        target=lambda: found.append(service.find(Identity("email", "a@example.com")))
    )
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()  # waiting for the stage's commit, not reading stale state
    state.gate.set()
    reader.join(10)
    assert found and found[0] is not None
    assert found[0].user_attributes["plan"] == "free"
    stage.close()


def test_pending_overlay_reads_copies_then_the_store_once_detached(backend: Backend) -> None:
    store = backend.state
    store.commit(StateChanges(profiles={1: new_profile(1, 10)}), {0: LogPosition(0, 1)})
    pending = StagedState(store)
    profile = pending.profile(1)
    assert profile is not None
    profile.user_attributes["plan"] = "pro"
    pending.put(profile)
    pending.link(Identity("email", "a@example.com"), 1)
    pending.prefetch_profiles([2])  # known to be absent

    overlay = PendingOverlay(pending, store)
    copy = overlay.profile(1)
    assert copy is not None and copy.user_attributes == {"plan": "pro"}
    copy.user_attributes["plan"] = "changed"  # the pending chunk's profile is untouched
    assert pending.profile(1).user_attributes == {"plan": "pro"}  # type: ignore[union-attr]
    assert overlay.profile(2) is None
    assert overlay.users_with(Identity("email", "a@example.com")) == [1]
    assert overlay.users_with_each([Identity("email", "a@example.com")]) == {
        Identity("email", "a@example.com"): [1]
    }
    assert overlay.profiles([1, 2, 3]).keys() == {1}

    overlay.detach()  # the pending changes were never committed: the store is read
    assert overlay.users_with(Identity("email", "a@example.com")) == []
    stored = overlay.profile(1)
    assert stored is not None and stored.user_attributes == {}
