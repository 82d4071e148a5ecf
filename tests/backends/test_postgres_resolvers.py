"""Two resolvers on one PostgreSQL state (two connection pools standing for two processes):
IDSync logins on one, the resolve stage of another partition on the other, racing on the
same users. The end state has one user per identity and is the one a sequential run gives."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from patchbay.backends.memory.log import MemoryBatchLog
from patchbay.backends.postgres import PostgresDatabase
from patchbay.backends.postgres.state import PostgresStateStore
from patchbay.backends.records import NewBatch
from patchbay.clock import ManualClock
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile
from patchbay.resolve.resolver import Resolver, live_mpid
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolveStage
from patchbay.resolve.state import StagedState
from patchbay.resolve.strategy import IdentityStrategy
from tests import infra
from tests.backends.helpers import at_once

USERS = 200


def _email(i: int) -> Identity:
    return Identity("email", f"u{i}@example.com")


def _customer(i: int) -> Identity:
    return Identity("customer_id", f"c{i}")


def _device(i: int) -> Identity:
    return Identity("ios_idfv", f"d{i}")


@dataclass
class Resolvers:
    """Two processes' resolvers on one database: an IDSync service and a resolve stage."""

    idsync: ResolveService
    stage: ResolveStage
    databases: tuple[PostgresDatabase, PostgresDatabase]

    def close(self) -> None:
        self.stage.close()
        for db in self.databases:
            db.close()


@pytest.fixture
def resolvers() -> Iterator[tuple[Resolvers, Resolvers]]:
    """Two fresh deployments: one for the race, one for the sequential run."""
    made = [_deployment() for _ in range(2)]
    yield made[0], made[1]
    for deployment in made:
        deployment.close()


def _deployment() -> Resolvers:
    schema = "r_" + uuid.uuid4().hex[:12]
    first, second = (
        PostgresDatabase(infra.postgres_url(), schema=schema, pool_size=4) for _ in range(2)
    )
    resolver = Resolver(IdentityStrategy())
    service = ResolveService(PostgresStateStore(first), resolver, ManualClock())
    log = MemoryBatchLog()
    log.append(list(_events()))
    stage = ResolveStage(log, PostgresStateStore(second), resolver, chunk=3)
    # every user starts anonymous on its device (an earlier session of the app)
    for i in range(USERS):
        service.apply(service.identify([_device(i)], seed=f"anonymous-{i}"))
    return Resolvers(service, stage, (first, second))


def _events() -> Iterator[NewBatch]:
    """Per user, what another partition holds: an event naming the email, and one from
    the device (each sets an attribute, which must survive whatever merge)."""
    for i in range(USERS):
        for n, body in enumerate(
            (
                {"user_identities": {"email": _email(i).value}, "user_attributes": {"b": i}},
                {"device_info": {"ios_idfv": _device(i).value}, "user_attributes": {"d": i}},
            )
        ):
            encoded = msgspec.json.encode(body)
            yield NewBatch(f"event-{i}-{n}", "web", 1_000 + i, "server_to_server", encoded)


def _logins(deployment: Resolvers) -> None:
    """Each user logs in on the device (IDSync, on the first process)."""
    service = deployment.idsync
    for i in range(USERS):
        identities = [_customer(i), _email(i), _device(i)]
        anonymous = service.find(_device(i))
        previous = anonymous.mpid if anonymous is not None else None

        def login(
            identities: list[Identity] = identities,
            seed: str = f"login-{i}",
            previous: int | None = previous,
        ) -> None:
            service.apply(service.identify(identities, seed, previous, login=True))

        service.retrying(login)


def _resolve(deployment: Resolvers) -> None:
    deployment.stage.run_until_caught_up()


def _users(deployment: Resolvers) -> list[tuple[list[tuple[str, str]], dict[str, Any]]]:
    """Each user's live profile without its MPID (identities and attributes), checking on
    the way that each of its identities leads to that one user and no other."""
    state = StagedState(deployment.idsync.state)
    found = []
    for i in range(USERS):
        owners = {
            identity: {m for u in state.users_with(identity) if (m := live_mpid(state, u))}
            for identity in (_customer(i), _email(i), _device(i))
        }
        assert len(state.users_with(_email(i))) == 1, owners
        assert len(state.users_with(_customer(i))) == 1, owners
        assert len(set.union(*owners.values())) == 1, owners
        (mpid,) = owners[_email(i)]
        profile = state.profile(mpid)
        assert profile is not None
        identities = sorted((r.type, r.value) for r in profile.identities)
        attributes: dict[str, Any] = dict(profile.user_attributes)
        found.append((identities, attributes))
    return found


def test_logins_racing_events_on_two_resolvers_end_as_a_sequential_run(
    resolvers: tuple[Resolvers, Resolvers],
) -> None:
    raced, sequential = resolvers
    at_once(lambda: _logins(raced), lambda: _resolve(raced))
    _logins(sequential)
    _resolve(sequential)

    expected = _users(sequential)
    assert _users(raced) == expected
    assert all(attributes == {"b": i, "d": i} for i, (_, attributes) in enumerate(expected))
    for deployment in (raced, sequential):  # one live user each: the others merged into it
        with deployment.databases[0].transaction() as conn:
            docs = [bytes(d) for (d,) in conn.execute("SELECT doc FROM profiles").fetchall()]
        profiles = [msgspec.msgpack.decode(d, type=Profile) for d in docs]
        assert sum(1 for p in profiles if p.merged_into is None) == USERS
