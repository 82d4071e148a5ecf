"""A small harness: append batches to a real log and resolve them with a real state store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.stage import ResolveStage
from patchbay.resolve.state import MergeRecord, StateChanges
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.store.base import NewBatch
from patchbay.store.sqlite import SqliteStore
from patchbay.store.sqlite_profiles import SqliteProfileStore


class WrappedState:
    """A :class:`SqliteProfileStore` seen through a wrapper whose ``commit`` a test changes."""

    def __init__(self, inner: SqliteProfileStore) -> None:
        self.inner = inner

    def users_with(self, identity: Identity) -> list[int]:
        return self.inner.users_with(identity)

    def profile(self, mpid: int) -> Profile | None:
        return self.inner.profile(mpid)

    def users_with_each(self, identities: Collection[Identity]) -> dict[Identity, list[int]]:
        return self.inner.users_with_each(identities)

    def profiles(self, mpids: Collection[int]) -> dict[int, Profile]:
        return self.inner.profiles(mpids)

    def committed_offset(self) -> int:
        return self.inner.committed_offset()

    def merges(self, mpid: int) -> list[MergeRecord]:
        return self.inner.merges(mpid)

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()

    def commit(self, changes: StateChanges, offset: int) -> None:
        self.inner.commit(changes, offset)


class World:
    """A batch log, a state store and a resolve stage in one data directory."""

    def __init__(self, data_dir: Path, strategy: IdentityStrategy | None = None) -> None:
        self.log = SqliteStore(data_dir, "normal")
        self.state = SqliteProfileStore(data_dir, "normal")
        self.stage = ResolveStage(self.log, self.state, Resolver(strategy or IdentityStrategy()))
        self.clock_ms = 1_700_000_000_000

    def send(self, batch: dict[str, Any], input_id: str = "in-1") -> int:
        """Append one batch, resolve everything pending, return the batch's MPID."""
        self.clock_ms += 1000
        result = self.log.append(
            [
                NewBatch(
                    batch_id=str(uuid.uuid4()),
                    input_id=input_id,
                    received_at_ms=self.clock_ms,
                    channel="server_to_server",
                    body=json.dumps(batch).encode(),
                )
            ],
            0,
        )
        offset = result.offsets[0]
        assert offset is not None
        captured: list[int] = []

        class Sink:
            def handle(self, batches: Any) -> None:
                captured.extend(b.mpid for b in batches if b.stored.offset == offset)

        self.stage.sink = Sink()
        self.stage.run_until_caught_up()
        return captured[-1]

    def profile(self, mpid: int) -> Profile:
        """The stored profile (following merges)."""
        found = self.state.profile(mpid)
        assert found is not None
        while found.merged_into is not None:
            found = self.state.profile(found.merged_into)
            assert found is not None
        return found

    def close(self) -> None:
        """Close both stores."""
        self.log.close()
        self.state.close()
