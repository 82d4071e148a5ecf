"""The lead of a kind of work on PostgreSQL (an advisory lock on a session of its own):
of two contenders one leads; closing its session, or killing its process, hands the lead
to the other; and a leader whose session ended stops acting before the next one starts,
even if it never looks again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from patchbay.backends.postgres import PostgresDatabase
from patchbay.backends.postgres.leadership import PostgresLeadership, application_name
from patchbay.backends.sqlite import open_sqlite
from patchbay.leadership import AlwaysLeads, NotLeader, ensure_leading, open_leadership
from tests import infra

ROOT = Path(__file__).resolve().parents[2]
#: Short for the tests (the defaults are seconds): the order of events is what matters.
VALIDITY_S = 0.3
TAKEOVER_S = 0.5
DEADLINE_S = 30.0


def contender(db: PostgresDatabase, name: str = "segment") -> PostgresLeadership:
    return PostgresLeadership(db, name, validity_s=VALIDITY_S, takeover_s=TAKEOVER_S)


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in time"
        time.sleep(0.05)


def tries(
    leadership: PostgresLeadership,
    seconds: float = TAKEOVER_S * 3,
    leader: PostgresLeadership | None = None,
) -> bool:
    """Whether ``leadership`` led at any of its tries (every 0.05 s) for ``seconds``
    (meanwhile ``leader`` confirms its lead, which it must keep)."""
    deadline = time.monotonic() + seconds
    led = False
    while time.monotonic() < deadline:
        led = leadership.acquire() or led
        assert leader is None or leader.acquire()
        time.sleep(0.05)
    return led


@pytest.fixture
def schema() -> str:
    return "l_" + uuid.uuid4().hex[:12]


@pytest.fixture
def dbs(schema: str) -> Iterator[tuple[PostgresDatabase, PostgresDatabase]]:
    """Two processes' pools on one schema."""
    made = (
        PostgresDatabase(infra.postgres_url(), schema=schema, pool_size=1),
        PostgresDatabase(infra.postgres_url(), schema=schema, pool_size=1),
    )
    yield made
    for db in made:
        db.close()


def end_leader_session(url: str | None = None, name: str = "segment") -> None:
    """End the session holding the lead of ``name`` in the database at ``url`` (this
    session's server's by default) from the server side, as a network failure or an
    administrator would."""
    with psycopg.connect(url or infra.postgres_url(), autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a"
            " JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted"
            " WHERE a.application_name = %s AND a.datname = current_database()",
            (application_name(name),),
        ).fetchall()
    assert ended == [(True,)]


def test_one_of_two_leads_and_the_other_takes_over_once_released(
    dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    a, b = contender(dbs[0]), contender(dbs[1])
    try:
        assert not a.acquire()  # granted, but not acting before the takeover delay
        until(a.acquire, "a leading")
        assert a.held()
        ensure_leading(a)
        assert not tries(b, leader=a)  # b never leads while a does
        assert not b.held()
        with pytest.raises(NotLeader):
            ensure_leading(b)
        a.release()
        a.release()  # twice is harmless
        assert not a.held()
        until(b.acquire, "b leading once a released")
        assert not tries(a, leader=b)
    finally:
        a.release()
        b.release()


def test_other_work_and_other_schemas_do_not_compete(
    dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    other = PostgresDatabase(infra.postgres_url(), schema="l_" + uuid.uuid4().hex[:12])
    made = [contender(dbs[0]), contender(dbs[1], "other"), contender(other)]
    try:
        for leadership in made:
            until(leadership.acquire, f"{leadership.name} leading")
    finally:
        for leadership in made:
            leadership.release()
        other.close()


def test_a_lapsed_confirmation_loses_the_lead(
    dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    """A leader that did not confirm in time (its writes were refused meanwhile) has lost:
    its next try gives the lock up, and it starts over (a new takeover delay)."""
    a = contender(dbs[0])
    try:
        until(a.acquire, "a leading")
        time.sleep(VALIDITY_S)
        assert not a.held()
        assert not a.acquire()
        assert not a.acquire()  # granted again, but not acting before the takeover delay
        until(a.acquire, "a leading again")
    finally:
        a.release()


def test_a_leader_whose_session_ended_stops_before_the_next_starts(
    dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    """The winner's session is ended on the server: the lock goes to the other, which acts
    only once the former leader's last confirmation no longer lets it act, although the
    former leader never asked again; the former leader's next try tells it lost."""
    a, b = contender(dbs[0]), contender(dbs[1])
    try:
        until(a.acquire, "a leading")
        end_leader_session()
        until(b.acquire, "b leading")
        assert not a.held()  # already, without a try of its own
        assert not a.acquire()  # its session is gone: it lost
        assert not tries(a, leader=b)  # b leads on
    finally:
        a.release()
        b.release()


def test_a_killed_leaders_lock_is_released(
    dbs: tuple[PostgresDatabase, PostgresDatabase], schema: str
) -> None:
    b = contender(dbs[1])
    with subprocess.Popen(
        [sys.executable, "-m", "tests.backends.test_postgres_leadership", schema],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "leading"
            assert not tries(b)
            child.send_signal(signal.SIGKILL)
            assert child.wait(DEADLINE_S) == -signal.SIGKILL
            until(b.acquire, "b leading once the leader was killed")
        finally:
            if child.poll() is None:
                child.kill()
            b.release()


def test_an_embedded_store_always_leads(tmp_path: Path) -> None:
    backend = open_sqlite(tmp_path / "data")
    try:
        leadership = open_leadership(backend, "segment")
        assert isinstance(leadership, AlwaysLeads)
        assert leadership.acquire() and leadership.held()
        leadership.release()
        ensure_leading(leadership)
    finally:
        backend.close()


def lead_until_killed(schema: str) -> None:
    """Lead ``schema``'s segment work in this process, and say so, until killed."""
    db = PostgresDatabase(infra.postgres_url(), schema=schema, pool_size=1)
    leadership = contender(db)
    until(leadership.acquire, "leading")
    print("leading", flush=True)
    while True:
        leadership.acquire()
        time.sleep(0.05)


if __name__ == "__main__":
    lead_until_killed(sys.argv[1])
