"""End to end, the segment stage with two processors on Kafka and PostgreSQL: one ``serve
--role ingest --role deliver`` and two ``--role process``, two audiences connected to a
partner. Exactly one processor's segment child leads (the other's reads nothing); the
leader is killed (SIGKILL, its segment child too) while batches stream in, and the standby
takes over; then the new leader's lock session is ended by the server, and it stops and
leads again. The memberships and the joins the partner receives are those one process
gives: every user joins each audience once, none is missed, none leaves."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.activate.test_deliveries_e2e import PartnerProxy, cli
from tests.activate.test_deliveries_e2e import partner_rows as rows
from tests.activate.test_engine_support import wait_for
from tests.backends.test_postgres_leadership import end_leader_session
from tests.conftest import Server, add_input, start_server, stop_server
from tests.segment.test_audiences_e2e import FAST, TOKEN, partner
from tests.segment.test_process import define, members, metric, play, segment_children
from tests.test_scale_out import scaled

__all__ = ["partner", "scaled"]  # the fixtures

pytestmark = pytest.mark.slow

USERS = 12
#: Users who play after the leader lost its lock's session and took the lead again.
LATE = 3
AUDIENCES = ("players", "fans")
LEADER = "patchbay_segment_leader"


def leaders(servers: list[Server]) -> list[Server]:
    return [s for s in servers if metric(s, LEADER) == 1.0]


def log_of(server: Server) -> str:
    return server.log_path.read_text()


def reports_lead(server: Server) -> bool:
    """Whether ``server``'s ``/metrics`` has the segment child's leader gauge."""
    _, body = server.get("/metrics")
    return any(line.startswith(LEADER + " ") for line in body.decode().splitlines())


def test_one_segment_leader_and_a_standby_taking_over(
    scaled: str,
    partner: tuple[PartnerProxy, Path, int],
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, partner_db, port = partner
    for key, value in {**FAST, "PATCHBAY_KAFKA_SESSION_TIMEOUT_S": "6"}.items():
        monkeypatch.setenv(key, value)
    credentials = add_input(data_dir, "app")
    cli(data_dir, "modules", "register", "sqlite", "--url",
        f"http://127.0.0.1:{port}/firehose", "--token", TOKEN)  # fmt: skip
    cli(data_dir, "outputs", "add", "crm", "--module", "sqlite", "--setting", "apiKey=K-1")
    define(data_dir, tmp_path)  # players: a Play ever; fans: exactly three
    for name in AUDIENCES:
        cli(data_dir, "audiences", "connect", name, "--output", "crm")
    front = start_server(data_dir, "--role", "ingest", "--role", "deliver")
    front.credentials = credentials
    processors: list[Server] = []
    try:
        processors += [start_server(data_dir, "--role", "process") for _ in range(2)]
        wait_for(lambda: all(map(reports_lead, processors)), what="both segment children")
        wait_for(lambda: len(leaders(processors)) == 1, what="a segment leader")
        wait_for(
            lambda: len(rows(partner_db, "SELECT 1 FROM audience_subscriptions")) == 2,
            what="the subscriptions at the partner",
        )
        for i in range(USERS):
            play(front, f"user-{i}")
        wait_for(lambda: members(data_dir, "players") == USERS, what="every player")
        (leader,) = leaders(processors)
        (standby,) = [s for s in processors if s is not leader]
        assert metric(standby, "patchbay_segment_batches_total") == 0  # a standby reads nothing

        (child,) = segment_children(leader)
        os.kill(child, signal.SIGKILL)
        leader.process.kill()
        leader.process.wait()
        for i in range(USERS):
            play(front, f"user-{i}", times=2)  # three Plays each: every user a fan
        wait_for(lambda: metric(standby, LEADER) == 1.0, what="the standby leading")
        wait_for(lambda: members(data_dir, "fans") == USERS, what="every fan")
        wait_for(lambda: len(joins(partner_db)) == 2 * USERS, what="every join at the partner")

        # the new leader's lock session ends (the server ends it): it stops, and leads
        # again as the only contender
        end_leader_session(os.environ["PATCHBAY_STATE"])
        wait_for(lambda: "segment_leader_lost" in log_of(standby), what="the lead lost")
        wait_for(lambda: log_of(standby).count("segment_leader_acquired") == 2, what="again")
        for i in range(LATE):
            play(front, f"late-{i}")
        wait_for(lambda: len(joins(partner_db)) == 2 * USERS + LATE, what="the late joins")
    finally:
        for server in (*processors, front):
            stop_server(server)

    assert members(data_dir, "players") == USERS + LATE
    assert members(data_dir, "fans") == USERS
    assert set(joins(partner_db).values()) == {1}  # none twice
    changes = rows(partner_db, "SELECT DISTINCT request_id, user_key, action FROM audience_changes")
    assert {action for _, _, action in changes} == {"add"}  # nobody left
    keyed = rows(
        partner_db,
        "SELECT DISTINCT c.audience_name, m.user_key FROM audience_members m"
        " JOIN audience_changes c ON c.audience_id = m.audience_id",
    )
    for name in AUDIENCES:
        stored = cli(data_dir, "audiences", "members", name).split()
        assert sorted(k[len("mpid:") :] for a, k in keyed if a == name) == sorted(stored)


def joins(partner_db: Path) -> Counter[tuple[str, str]]:
    """How many times the partner was told each user joined each audience (a message
    received twice, with the same id, counted once)."""
    found = rows(
        partner_db,
        "SELECT DISTINCT request_id, audience_name, user_key FROM audience_changes"
        " WHERE action = 'add'",
    )
    return Counter((audience, user) for _, audience, user in found)
