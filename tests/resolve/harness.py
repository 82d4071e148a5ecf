"""A small harness: append batches to a real log and resolve them with a real state store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection
from typing import Any

from patchbay.backends.abstract import Backend, StateStore
from patchbay.backends.records import (
    Checkpoint,
    LogPosition,
    MergeRecord,
    NewBatch,
    Since,
    StateChanges,
)
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.stage import ResolvedChunk, ResolveStage
from patchbay.resolve.strategy import IdentityStrategy


class WrappedState:
    """A :class:`StateStore` seen through a wrapper whose ``commit`` a test changes."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner

    def users_with(self, identity: Identity) -> list[int]:
        return self.inner.users_with(identity)

    def profile(self, mpid: int) -> Profile | None:
        return self.inner.profile(mpid)

    def users_with_each(self, identities: Collection[Identity]) -> dict[Identity, list[int]]:
        return self.inner.users_with_each(identities)

    def profiles(self, mpids: Collection[int]) -> dict[int, Profile]:
        return self.inner.profiles(mpids)

    def checkpoint(self) -> Checkpoint:
        return self.inner.checkpoint()

    def resolved(
        self, partition: int, after: LogPosition | None, limit: int
    ) -> list[tuple[LogPosition, int]]:
        return self.inner.resolved(partition, after, limit)

    def forget_resolved(self, upto: Checkpoint) -> int:
        return self.inner.forget_resolved(upto)

    def count_profiles(self) -> int:
        return self.inner.count_profiles()

    def merges(self, mpid: int) -> list[MergeRecord]:
        return self.inner.merges(mpid)

    def merged_into(self, mpids: Collection[int]) -> dict[int, list[int]]:
        return self.inner.merged_into(mpids)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()

    def commit(
        self,
        changes: StateChanges,
        checkpoint: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.inner.commit(changes, checkpoint, since, before)


class World:
    """A backend's batch log and state store, and a resolve stage over them."""

    def __init__(self, backend: Backend, strategy: IdentityStrategy | None = None) -> None:
        self.backend = backend
        self.log = self.backend.log
        self.state = self.backend.state
        self.captured: list[ResolvedChunk] = []
        self.stage = ResolveStage(
            self.log, self.state, Resolver(strategy or IdentityStrategy()), [self]
        )
        self.clock_ms = 1_700_000_000_000

    def send(self, batch: dict[str, Any], input_id: str = "in-1") -> int:
        """Append one batch, resolve everything pending, return the batch's MPID."""
        self.clock_ms += 1000
        (position,) = self.log.append(
            [
                NewBatch(
                    batch_id=str(uuid.uuid4()),
                    input_id=input_id,
                    received_at_ms=self.clock_ms,
                    channel="server_to_server",
                    body=json.dumps(batch).encode(),
                )
            ],
        )
        self.captured.clear()
        self.stage.run_until_caught_up()
        found = [b.mpid for c in self.captured for b in c.batches if b.stored.position == position]
        return found[-1]

    def offer(self, chunk: ResolvedChunk) -> None:
        """Keep each resolved chunk (the stage's listener)."""
        self.captured.append(chunk)

    def profile(self, mpid: int) -> Profile:
        """The stored profile (following merges)."""
        found = self.state.profile(mpid)
        assert found is not None
        while found.merged_into is not None:
            found = self.state.profile(found.merged_into)
            assert found is not None
        return found

    def close(self) -> None:
        """Stop the stage (the backend is its opener's to close)."""
        self.stage.close()
