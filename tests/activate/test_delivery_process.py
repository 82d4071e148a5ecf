"""``patchbay serve`` runs the delivery engine in a child process: it delivers, reports its
metrics on the server's ``/metrics``, is started again when it dies, and dies with the server
(on each deployment: the embedded store, the scale-out mode)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.activate.test_engine_support import wait_for
from tests.conftest import Server, add_input, run_cli, start_server, stop_server
from tests.deployments import Deployment


def children(pid: int, name: str) -> list[int]:
    """The running child processes of process ``pid`` named ``name`` (as ``ps`` shows it)."""
    found = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
            comm = (stat_path.parent / "comm").read_text().strip()
        except OSError:
            continue
        if fields[1] == str(pid) and fields[0] != "Z" and comm == name:
            found.append(int(stat_path.parent.name))
    return found


def delivery_children(pid: int) -> list[int]:
    """The running delivery processes of server ``pid``."""
    return children(pid, "pb-delivery")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def post(server: Server, email: str) -> None:
    batch = {
        "environment": "production",
        "user_identities": {"email": email},
        "events": [{"event_type": "custom_event", "data": {"event_name": "Play"}}],
    }
    status, _, body = server.post("/v2/bulkevents", json.dumps([batch]).encode())
    assert status == 202, body


def lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def pending(server: Server) -> int:
    """Deliveries still in the server's outbox (not yet acknowledged)."""
    backend = server.open_store()
    try:
        return sum(queue.pending + queue.parked for queue in backend.outbox.stats().values())
    finally:
        backend.close()


def serve(data_dir: Path, deployment: Deployment, *args: str) -> Server:
    """Start ``patchbay serve ARGS`` on ``deployment``."""
    server = start_server(data_dir, *args)
    server.deployment = deployment
    return server


def succeeded_metric(server: Server) -> float:
    _, body = server.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith('patchbay_deliveries_succeeded_total{output="lines"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_child_delivers_reports_metrics_and_is_restarted(
    data_dir: Path, deployment: Deployment
) -> None:
    credentials = add_input(data_dir, "app")
    out = data_dir / "outputs" / "out.jsonl"
    for args in (
        ("outputs", "add", "lines", "--file", "out.jsonl"),
        ("connections", "add", "--input", "app", "--output", "lines"),
    ):
        assert run_cli(*args, data_dir=data_dir).returncode == 0
    server = serve(data_dir, deployment)
    server.credentials = credentials
    try:
        wait_for(lambda: len(delivery_children(server.process.pid)) == 1, what="a child")
        (first,) = delivery_children(server.process.pid)
        post(server, "a@example.com")
        wait_for(lambda: lines(out) == 1, what="the first delivery")
        wait_for(lambda: succeeded_metric(server) == 1.0, what="the child's metrics")
        wait_for(lambda: pending(server) == 0, what="the acknowledgement")

        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: [p for p in delivery_children(server.process.pid) if p != first] != [],
            what="a new child",
        )
        post(server, "b@example.com")
        wait_for(lambda: lines(out) == 2, what="a delivery by the new child")
        wait_for(lambda: succeeded_metric(server) == 2.0, what="the new child's metrics")
        assert lines(out) == 2  # nothing sent twice
        children = delivery_children(server.process.pid)
    finally:
        stop_server(server)
    wait_for(lambda: not any(alive(p) for p in children), 10, "the child stopped")


def test_a_killed_server_takes_its_delivery_process_along(
    data_dir: Path, deployment: Deployment
) -> None:
    server = serve(data_dir, deployment)
    try:
        wait_for(lambda: len(delivery_children(server.process.pid)) == 1, what="a child")
        (child,) = delivery_children(server.process.pid)
        server.process.kill()
        server.process.wait()
        wait_for(lambda: not alive(child), 10, "the orphaned child to exit")
    finally:
        stop_server(server)


def test_no_delivery_process_keeps_the_engine_in_the_server(
    data_dir: Path, deployment: Deployment
) -> None:
    credentials = add_input(data_dir, "app")
    out = data_dir / "outputs" / "out.jsonl"
    run_cli("outputs", "add", "lines", "--file", "out.jsonl", data_dir=data_dir)
    run_cli("connections", "add", "--input", "app", "--output", "lines", data_dir=data_dir)
    server = serve(data_dir, deployment, "--no-delivery-process")
    server.credentials = credentials
    try:
        post(server, "a@example.com")
        wait_for(lambda: lines(out) == 1, what="the delivery")
        assert delivery_children(server.process.pid) == []
        assert succeeded_metric(server) == 1.0
    finally:
        stop_server(server)
