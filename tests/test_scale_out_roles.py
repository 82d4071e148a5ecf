"""End to end, the roles in processes of their own on Kafka and PostgreSQL: one ``serve
--role ingest``, one ``--role process`` and two ``--role deliver`` sharing the outbox. Every
batch reaches the partner, once while nothing fails; then one deliverer is killed (SIGKILL)
with deliveries leased, and the other sends them once their lease expires."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from patchbay.activate.ids import message_id
from tests.activate.test_engine_support import Recorder, serve, wait_for
from tests.conftest import Server, add_input, start_server, stop_server
from tests.test_scale_out import batch, cli, scaled, stored_batches

__all__ = ["scaled"]  # the fixture

pytestmark = pytest.mark.slow

LEASE_S = 4
#: The serves started, one process each.
ROLES = ("ingest", "deliver", "deliver", "process")


def delivered(rec: Recorder) -> list[str]:
    """The delivery ids the partner received, in order, repeats included."""
    return [r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook")]


def leased_by(server: Server) -> set[str]:
    """The deliveries whose lease ``server`` (its process id) holds."""
    with psycopg.connect(os.environ["PATCHBAY_STATE"]) as conn:
        rows = conn.execute(
            "SELECT id FROM deliveries WHERE leased_by LIKE %s",
            (f"%-{server.process.pid}-%",),
        ).fetchall()
    return {str(r[0]) for r in rows}


def post_batches(ingest: Server, first: int, count: int) -> None:
    body = json.dumps([batch(i) for i in range(first, first + count)]).encode()
    status, _, answer = ingest.post("/v2/bulkevents", body)
    assert status == 202, answer


def test_ingest_process_and_two_deliverers(
    scaled: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # deliveries in each serve's own process (no child), two sends at a time, read two at a time (so
    # that both deliverers get a share), a send bounded well within the short lease
    for name, value in {
        "DELIVERY_PROCESS": "false",
        "DELIVERY_CONCURRENCY": "2",
        "DELIVERY_PAGE": "2",
        "DELIVERY_TIMEOUT_S": "2",
        "DELIVERY_CONNECT_TIMEOUT_S": "0.5",
        "DELIVERY_LEASE_S": str(LEASE_S),
    }.items():
        monkeypatch.setenv(f"PATCHBAY_{name}", value)
    credentials = add_input(data_dir, "app")
    rec = Recorder()
    hooks = serve(rec.app)
    cli(data_dir, "outputs", "add", "hook", "--webhook", f"{hooks.url}/hook")
    cli(data_dir, "connections", "add", "--input", "app", "--output", "hook")
    servers: list[Server] = []
    try:
        for role in ROLES:
            servers.append(start_server(data_dir, "--role", role))
        ingest, first = servers[:2]
        ingest.credentials = credentials
        for server, role in zip(servers, ROLES, strict=True):
            status, body = server.get("/healthz")
            assert status == 200 and json.loads(body)["roles"] == [role]
            status, body = server.get("/metrics")
            assert status == 200 and b"patchbay_http_requests_total" in body
        assert first.get("/v2/events")[0] == 404  # the HTTP APIs are ingest's

        # nothing fails: every delivery once
        post_batches(ingest, 0, 30)
        wait_for(lambda: len(set(delivered(rec))) >= 30, what="30 deliveries")
        assert len(delivered(rec)) == 30, "a delivery was sent twice"

        # a slow partner; one deliverer killed with deliveries leased
        rec.set("/hook", delay_s=0.5)
        post_batches(ingest, 30, 20)
        wait_for(lambda: bool(leased_by(first)), what="deliveries leased by the first")
        first.process.kill()
        first.process.wait()
        held = leased_by(first)
        assert held
        wait_for(lambda: len(set(delivered(rec))) >= 50, timeout_s=90, what="50 deliveries")
    finally:
        for server in servers:
            stop_server(server)
        hooks.stop()
    stored = stored_batches(data_dir)
    assert len(stored) == 50
    expected = {str(message_id("hook", b.batch_id)) for b in stored}
    sent = delivered(rec)
    assert set(sent) == expected
    assert held <= set(sent)  # sent by the second once the lease expired
    repeated = {i for i in sent if sent.count(i) > 1}
    assert repeated <= held  # only the killed deliverer's may have gone twice
