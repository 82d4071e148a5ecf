"""``patchbay serve`` runs the segment stage in a child process: it keeps the audiences,
reports on the server's ``/metrics``, is started again when killed without losing or
counting twice a batch, and dies with the server; ``--no-segment-process`` keeps it in
the server."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import cast

import pytest

from patchbay.backends.abstract import AudienceStore
from patchbay.backends.records import SegmentChanges
from patchbay.heap import MIDDLE, OLD, YOUNG
from patchbay.leadership import NotLeader
from patchbay.segment.process import LeaderOnly
from patchbay.segment.stage import SegmentStage
from tests.activate.test_deliveries_e2e import cli
from tests.activate.test_delivery_process import alive, children
from tests.activate.test_engine_support import wait_for
from tests.conftest import Server, add_input, start_server, stop_server
from tests.deployments import DEPLOYED, Deployment
from tests.segment.harness import SegmentWorld
from tests.segment.test_stage import actions, buy, sent, world_with_output

pytestmark = pytest.mark.slow


def segment_children(server: Server) -> list[int]:
    return children(server.process.pid, "pb-segment")


def play(server: Server, customer: str, times: int = 1) -> None:
    batch = {
        "environment": "production",
        "user_identities": {"customer_id": customer},
        "events": [{"event_type": "custom_event", "data": {"event_name": "Play"}}] * times,
    }
    status, _, body = server.post("/v2/events", json.dumps(batch).encode())
    assert status == 202, body


def members(data_dir: Path, name: str) -> int:
    return len(json.loads(cli(data_dir, "audiences", "members", name, "--json")))


def metric(server: Server, name: str) -> float:
    _, body = server.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for_segment_lead(server: Server) -> None:
    """Wait until ``server``'s segment stage runs: at once on the embedded store, once its
    child holds the lead in the scale-out mode (some seconds after the lock is granted:
    :mod:`patchbay.backends.postgres.leadership`)."""
    wait_for(lambda: metric(server, "patchbay_segment_leader") == 1.0, what="a segment leader")


def define(data_dir: Path, tmp_path: Path) -> None:
    """Two audiences: players (one Play ever) and fans (exactly three Plays ever: a batch
    counted twice or lost would show)."""
    for name, count in (("players", {"min": 1}), ("fans", {"min": 3, "max": 3})):
        path = tmp_path / f"{name}.json"
        event = {"type": "custom_event", "name": "Play"}
        path.write_text(json.dumps({"name": name, "criteria": {"event": event, "count": count}}))
        cli(data_dir, "audiences", "create", str(path))


def test_the_child_keeps_audiences_and_survives_a_kill(
    data_dir: Path, tmp_path: Path, deployment: Deployment
) -> None:
    credentials = add_input(data_dir, "app")
    define(data_dir, tmp_path)
    server = start_server(data_dir)
    server.credentials = credentials
    try:
        wait_for(lambda: len(segment_children(server)) == 1, what="a segment process")
        (first,) = segment_children(server)
        wait_for(lambda: "segment_stage_started" in server.log_path.read_text(), what="its log")
        started = next(
            json.loads(line)
            for line in server.log_path.read_text().splitlines()
            if '"segment_stage_started"' in line
        )
        assert started["gc_threshold"] == [YOUNG, MIDDLE, OLD]  # (patchbay.heap)
        for i in range(20):
            play(server, f"user-{i}")
        wait_for(lambda: members(data_dir, "players") == 20, what="20 players")
        wait_for(lambda: metric(server, "patchbay_segment_batches_total") >= 20, what="metrics")
        wait_for(
            lambda: metric(server, 'patchbay_audience_members{audience="players"}') == 20,
            what="the size on /metrics",
        )

        os.kill(first, signal.SIGKILL)
        for i in range(20):
            play(server, f"user-{i}", times=2)  # while the stage is down: 3 Plays each
        wait_for(
            lambda: [p for p in segment_children(server) if p != first] != [],
            what="a new segment process",
        )
        wait_for(lambda: members(data_dir, "fans") == 20, what="20 fans")
        assert members(data_dir, "players") == 20
        play(server, "user-0")  # a fourth: no longer exactly three
        wait_for(lambda: members(data_dir, "fans") == 19, what="user-0 leaving the fans")
        assert metric(server, "patchbay_segment_batches_total") >= 41  # kept across the restart
        (child,) = segment_children(server)
        server.process.kill()  # SIGKILL: the child goes too
        server.process.wait()
        wait_for(lambda: not alive(child), 10, "the orphaned segment process to exit")
    finally:
        stop_server(server)


# the embedded mode's option only: the scale-out mode refuses it (tests/test_server_roles.py)
@pytest.mark.parametrize("spec", [DEPLOYED[0]], ids=["sqlite"])
def test_no_segment_process_keeps_the_stage_in_the_server(
    data_dir: Path, tmp_path: Path, deployment: Deployment
) -> None:
    credentials = add_input(data_dir, "app")
    define(data_dir, tmp_path)
    server = start_server(data_dir, "--no-segment-process")
    server.credentials = credentials
    try:
        play(server, "ada", times=3)
        wait_for(lambda: members(data_dir, "fans") == 1, what="ada among the fans")
        assert segment_children(server) == []
        assert metric(server, "patchbay_segment_batches_total") == 1.0
    finally:
        stop_server(server)


class Switch:
    """A lead the test gives and takes."""

    def __init__(self) -> None:
        self.leads = True

    def acquire(self) -> bool:
        return self.leads

    def held(self) -> bool:
        return self.leads

    def release(self) -> None:
        self.leads = False


def test_a_stage_that_lost_the_lead_writes_nothing(world: SegmentWorld) -> None:
    """The leader's stage writes through :class:`LeaderOnly`: once the lead is not held,
    its time-driven work (here: putting a pending join in the outbox) is refused, and
    nothing is written; held again, it goes on."""
    world_with_output(world)
    buy(world, "c1")
    world.settle()
    switch = Switch()
    audiences = cast(AudienceStore, LeaderOnly(world.backend.audiences, switch))
    stage = SegmentStage(dataclasses.replace(world.backend, audiences=audiences), world.clock)
    switch.leads = False
    world.clock.advance(1.0)  # time to look at the pending changes
    with pytest.raises(NotLeader):
        stage.tick()
    with pytest.raises(NotLeader):
        audiences.commit(SegmentChanges())
    assert sent(world) == []
    assert world.backend.audiences.pending_outputs() != {}
    switch.leads = True
    world.clock.advance(1.0)
    stage.tick()
    assert actions(sent(world))[0][0] == "add"
    assert world.backend.audiences.pending_outputs() == {}
