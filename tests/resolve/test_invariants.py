"""Property tests of the resolver's invariants, checked on the committed state after each chunk.

The random logs are those of ``test_replay_property``: a few people sharing devices,
blocked values, explicit MPIDs, identity change events. After every committed chunk:

* a unique identity is linked to at most one user, and that user is live;
* a blocked value is never linked, nor held by a profile;
* every live profile's identities are exactly the identity links pointing at it, and no
  link points at a merged or missing profile;
* a live profile holds at most one value of each user identity type;
* merges are consistent: every merged profile points (through merges) at a live profile,
  and each merge record matches the absorbed profile's pointer.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from patchbay.resolve.identities import is_device_type
from patchbay.resolve.profile import Profile
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.stage import ResolveStage
from patchbay.resolve.strategy import IdentityStrategy
from tests.deployments import BackendSpec
from tests.resolve.test_replay_property import (
    STRATEGIES,
    Dump,
    Spec,
    dump,
    log_spec,
    opened,
    property_on,
    write_log,
)


def check_invariants(state: Dump, strategy: IdentityStrategy) -> None:
    """Assert every invariant of the module docstring on one state."""
    profiles = {m: msgspec.convert(p, Profile) for m, p in state.profiles.items()}
    live = {m: p for m, p in profiles.items() if p.merged_into is None}

    held_by_links: dict[int, set[tuple[str, str]]] = {m: set() for m in live}
    for (kind, value), users in state.links.items():
        assert not strategy.is_blocked(value), f"blocked value linked: {kind}={value!r}"
        assert len(users) == len(set(users))
        for mpid in users:
            assert mpid in live, f"{kind}={value!r} linked to a merged or missing user {mpid}"
            held_by_links[mpid].add((kind, value))
        if kind in strategy.unique:
            assert len(users) <= 1, f"unique {kind}={value!r} linked to users {users}"

    for mpid, profile in live.items():
        held = {(r.type, r.value) for r in profile.identities}
        assert held == held_by_links[mpid], f"profile {mpid} and its links differ"
        assert not any(strategy.is_blocked(value) for _, value in held)
        per_type = Counter(r.type for r in profile.identities if not is_device_type(r.type))
        assert all(n == 1 for n in per_type.values()), f"profile {mpid}: {per_type}"

    for mpid, profile in profiles.items():
        seen = {mpid}
        while profile.merged_into is not None:
            assert profile.merged_into not in seen, f"merge cycle through {mpid}"
            seen.add(profile.merged_into)
            assert profile.merged_into in profiles, f"{mpid} merged into a missing user"
            profile = profiles[profile.merged_into]
    absorbed = [from_mpid for from_mpid, *_ in state.merges]
    assert len(absorbed) == len(set(absorbed)), "a user was merged twice"
    for from_mpid, to_mpid, *_ in state.merges:
        assert profiles[from_mpid].merged_into == to_mpid
    assert {m for m, p in profiles.items() if p.merged_into is not None} == set(absorbed)


def test_resolver_invariants_hold_after_every_chunk(spec: BackendSpec) -> None:
    open_ = spec.open

    @property_on(spec)
    @given(
        written=log_spec(),
        strategy_name=st.sampled_from(sorted(STRATEGIES)),
        chunk=st.integers(1, 7),
    )
    def check(written: Spec, strategy_name: str, chunk: int) -> None:
        strategy = STRATEGIES[strategy_name]
        with tempfile.TemporaryDirectory() as tmp:
            offsets = write_log(open_, Path(tmp) / "log", written)
            with opened(open_, Path(tmp) / "log", Path(tmp) / "state") as (log, state):
                stage = ResolveStage(log, state, Resolver(strategy), (), chunk)
                while stage.step():
                    stage.settle()  # the chunk's commit may still be running
                    check_invariants(dump(state), strategy)
                stage.close()
                final = dump(state)
            assert final.offset == offsets[-1]
            check_invariants(final, strategy)

    check()
