"""A resolver on a backend's state, for unit tests of :meth:`Resolver.resolve`.

Each call resolves one batch's identities on a fresh :class:`StagedState` and commits its
changes to the store, as the resolve stage does with a chunk of one batch.
"""

from __future__ import annotations

from patchbay.backends.abstract import StateStore
from patchbay.backends.records import MergeRecord
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile
from patchbay.resolve.resolver import Resolution, Resolver
from patchbay.resolve.state import StagedState
from patchbay.resolve.strategy import IdentityStrategy

IDFA = "613ff528-afd1-4c1b-9628-e6ed25ece9c0"
IDFA_2 = "8c61383f-2216-4713-8c1c-1cb0a5d7a4cc"


def cid(value: str) -> Identity:
    return Identity("customer_id", value)


def email(value: str) -> Identity:
    return Identity("email", value)


def other(value: str) -> Identity:
    return Identity("other", value)


def idfa(value: str = IDFA) -> Identity:
    return Identity("ios_advertising_id", value)


class Desk:
    """A :class:`Resolver` with ``strategy`` over ``store``, emptied first."""

    def __init__(self, store: StateStore, strategy: IdentityStrategy | None = None) -> None:
        store.reset()
        self.store = store
        self.resolver = Resolver(strategy or IdentityStrategy())
        self.batches = 0
        self.clock_ms = 1_700_000_000_000

    def resolve(self, *identities: Identity, mpid: int | None = None) -> Resolution:
        """Resolve one batch carrying ``identities`` (and ``mpid``); commit what it changed."""
        self.batches += 1
        self.clock_ms += 1000
        staged = StagedState(self.store)
        resolution = self.resolver.resolve(
            staged, identities, mpid, f"batch-{self.batches}", self.clock_ms, self.batches
        )
        self.store.commit(staged.changes, {})
        return resolution

    def profile(self, mpid: int) -> Profile:
        """The stored profile of ``mpid`` itself (merges not followed)."""
        found = self.store.profile(mpid)
        assert found is not None, mpid
        return found

    def users_with(self, identity: Identity) -> list[int]:
        """The users linked to ``identity``, oldest link first."""
        return self.store.users_with(identity)

    def merges(self, *mpids: int) -> list[MergeRecord]:
        """Every merge record into or out of any of ``mpids``."""
        return [m for mpid in mpids for m in self.store.merges(mpid)]
