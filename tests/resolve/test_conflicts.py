"""A commit refused because another resolver changed what it read (ResolveConflict): the
resolve stage and the identity operations resolve again, a bounded number of times."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from patchbay.backends.abstract import Backend, BatchLog, StateStore
from patchbay.backends.records import Checkpoint, CheckpointMoved, NewBatch, Since, StateChanges
from patchbay.clock import ManualClock
from patchbay.errors import ResolveConflict
from patchbay.metrics import ResolveConflicts
from patchbay.resolve.identities import Identity
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolvedChunk, ResolveStage
from patchbay.resolve.state import CONFLICT_RETRIES
from patchbay.resolve.strategy import IdentityStrategy
from tests.resolve.harness import WrappedState


class Conflicting(WrappedState):
    """A store whose first ``refuse`` commits are refused as conflicts (nothing written,
    ``before`` not called)."""

    def __init__(self, inner: StateStore, refuse: int) -> None:
        super().__init__(inner)
        self.refuse = refuse
        self.commits = 0

    def commit(
        self,
        changes: StateChanges,
        checkpoint: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.commits += 1
        if self.commits <= self.refuse:
            raise ResolveConflict("another resolver changed it")
        self.inner.commit(changes, checkpoint, since, before)


def append_three_users(log: BatchLog, batches: int) -> None:
    """``batches`` batches naming the e-mail addresses of three users in turn."""
    bodies = [{"user_identities": {"email": f"u{i % 3}@example.com"}} for i in range(batches)]
    log.append(
        [
            NewBatch(f"b{i}", "in", 1_000 + i, "server_to_server", json.dumps(b).encode())
            for i, b in enumerate(bodies)
        ]
    )


class Offered:
    """A stage after resolve that keeps the chunks it is offered."""

    def __init__(self) -> None:
        self.chunks: list[ResolvedChunk] = []

    def offer(self, chunk: ResolvedChunk) -> None:
        self.chunks.append(chunk)


def test_the_stage_resolves_a_refused_chunk_again_and_offers_only_the_committed_one(
    backend: Backend,
) -> None:
    append_three_users(backend.log, 7)
    listener = Offered()
    state = Conflicting(backend.state, refuse=2)
    stage = ResolveStage(backend.log, state, Resolver(IdentityStrategy()), [listener], 3)
    assert stage.run_until_caught_up() >= 7
    stage.close()

    assert stage.conflicts == 2
    offsets = [b.stored.offset for c in listener.chunks for b in c.batches]
    assert offsets == sorted(set(offsets)) and len(offsets) == 7  # each once, in order
    users = {b.mpid for c in listener.chunks for b in c.batches}
    assert len(users) == 3
    assert backend.state.count_profiles() == 3


class Refusing(WrappedState):
    """A store that refuses its first commits with ``refusals`` in turn (nothing written)."""

    def __init__(self, inner: StateStore, refusals: list[Exception]) -> None:
        super().__init__(inner)
        self.refusals = refusals

    def commit(
        self,
        changes: StateChanges,
        checkpoint: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        if self.refusals:
            raise self.refusals.pop(0)
        self.inner.commit(changes, checkpoint, since, before)


def test_fenced_and_conflicting_commits_in_one_flow(backend: Backend) -> None:
    """A fenced commit drops its chunk (and the one resolved over it), a conflicting one is
    resolved again; both go on from the stored checkpoint, and the stages after get each
    batch once, in order, only from committed chunks."""
    append_three_users(backend.log, 9)
    listener = Offered()
    refusals: list[Exception] = [
        CheckpointMoved("resolve state", [0]),
        ResolveConflict("another resolver changed it"),
        CheckpointMoved("resolve state", [0]),
    ]
    state = Refusing(backend.state, refusals)
    fenced: list[int] = []
    stage = ResolveStage(
        backend.log,
        state,
        Resolver(IdentityStrategy()),
        [listener],
        3,
        fenced=lambda: fenced.append(1),
    )
    assert stage.run_until_caught_up() >= 9
    stage.close()

    assert (stage.fenced, len(fenced), stage.conflicts) == (2, 2, 1)
    offsets = [b.stored.offset for c in listener.chunks for b in c.batches]
    assert offsets == sorted(set(offsets)) and len(offsets) == 9  # each once, in order
    assert [c.after for c in listener.chunks[1:]] == [c.last for c in listener.chunks[:-1]]
    assert len({b.mpid for c in listener.chunks for b in c.batches}) == 3
    assert backend.state.count_profiles() == 3


def test_an_identity_change_is_staged_again_and_its_record_appended_once(
    backend: Backend,
) -> None:
    state = Conflicting(backend.state, refuse=1)
    service = ResolveService(state, Resolver(IdentityStrategy()), ManualClock())
    appended: list[int] = []
    email = Identity("email", "a@example.com")

    def login() -> int:
        pending = service.identify([email], seed="request-1")
        service.apply(pending, lambda: appended.append(pending.answer.mpid))
        return pending.answer.mpid

    mpid = service.retrying(login)
    assert appended == [mpid]  # not appended for the refused attempt
    assert service.conflicts == 1
    assert backend.state.users_with(email) == [mpid]


def test_conflicts_without_end_are_raised(backend: Backend) -> None:
    state = Conflicting(backend.state, refuse=10**6)
    service = ResolveService(state, Resolver(IdentityStrategy()), ManualClock())

    def login() -> None:
        service.apply(service.identify([Identity("email", "a@example.com")], seed="r"))

    with pytest.raises(ResolveConflict):
        service.retrying(login)
    assert state.commits == CONFLICT_RETRIES + 1
    assert service.conflicts == CONFLICT_RETRIES


def test_conflicts_are_a_metric() -> None:
    registry = CollectorRegistry()
    counts = {"stage": 3, "idsync": 1}
    registry.register(ResolveConflicts(stage=lambda: counts["stage"], idsync=lambda: 1))
    text = generate_latest(registry).decode()
    assert 'patchbay_resolve_conflicts_total{where="stage"} 3.0' in text
    assert 'patchbay_resolve_conflicts_total{where="idsync"} 1.0' in text
