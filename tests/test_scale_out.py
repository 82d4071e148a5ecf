"""End to end in the scale-out mode: the real ``patchbay`` commands and ``patchbay serve``
with the batch log in Kafka and the state in PostgreSQL (servers started by
``scripts/infra.sh``), through a SIGKILL: every accepted batch is resolved and delivered,
none twice under different ids."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import admin

from patchbay.activate.ids import message_id
from patchbay.backends import open_backend
from patchbay.backends.kafka import bootstrap_servers
from patchbay.backends.kafka.log import min_insync_replicas
from patchbay.backends.records import StoredBatch
from patchbay.config import settings_from_process
from tests import infra
from tests.activate.test_engine_support import Recorder, serve, wait_for
from tests.conftest import add_input, run_cli, start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture
def scaled(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """PATCHBAY_STATE and PATCHBAY_LOG of a database and a topic of this test's own."""
    name = "e2e_" + uuid.uuid4().hex[:12]
    server = infra.postgres_url()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    monkeypatch.setenv("PATCHBAY_STATE", server.rpartition("/")[0] + "/" + name)
    monkeypatch.setenv("PATCHBAY_LOG", infra.kafka_url())
    monkeypatch.setenv("PATCHBAY_KAFKA_TOPIC", f"patchbay.{name}")
    monkeypatch.setenv("PATCHBAY_KAFKA_PARTITIONS", "3")
    monkeypatch.setenv("PATCHBAY_DELIVERY_BASE_DELAY_S", "0.1")
    yield name


def cli(data_dir: Path, *args: str) -> str:
    done = run_cli(*args, data_dir=data_dir)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def stored_batches(data_dir: Path) -> list[StoredBatch]:
    """Every batch in the log, read through the backend the environment names."""
    backend = open_backend(settings_from_process({"data_dir": data_dir}, None), create=False)
    try:
        return [b for p in range(backend.log.partitions) for b in backend.log.read(p, None, 10_000)]
    finally:
        backend.close()


def batch(i: int) -> dict[str, object]:
    return {
        "environment": "production",
        "source_request_id": f"req-{i}",
        "user_identities": {"email": f"user{i % 7}@example.com"},
        "events": [{"event_type": "custom_event", "data": {"event_name": f"e{i}"}}],
    }


def test_collect_resolve_and_deliver_on_kafka_and_postgresql(
    scaled: str, tmp_path: Path, data_dir: Path
) -> None:
    assert "inputs: 2 migrations applied" in cli(data_dir, "db", "upgrade")
    assert "inputs: up to date" in cli(data_dir, "db", "upgrade")
    credentials = add_input(data_dir, "app")
    rec = Recorder()
    hooks = serve(rec.app)
    cli(data_dir, "outputs", "add", "hook", "--webhook", f"{hooks.url}/hook")
    cli(data_dir, "connections", "add", "--input", "app", "--output", "hook")
    server = start_server(data_dir)
    server.credentials = credentials
    try:
        for i in range(0, 30, 10):
            body = json.dumps([batch(j) for j in range(i, i + 10)]).encode()
            status, _, answer = server.post("/v2/bulkevents", body)
            assert status == 202, answer
        wait_for(lambda: len({r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook")}) >= 30)
        server.process.kill()  # SIGKILL, then the same data again
        server.process.wait()
        server = start_server(data_dir)
        server.credentials = credentials
        status, _, answer = server.post("/v2/bulkevents", json.dumps([batch(0)]).encode())
        assert status == 202 and json.loads(answer)["duplicates"] == 1  # dedup in PostgreSQL
        body = json.dumps([batch(j) for j in range(30, 40)]).encode()
        assert server.post("/v2/bulkevents", body)[0] == 202
        wait_for(lambda: len({r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook")}) >= 40)
        # commands beside the running serve; reprocess needs the deployment to itself
        cli(data_dir, "deliveries", "parked")
        refused = run_cli("reprocess", data_dir=data_dir)
        assert refused.returncode != 0
        assert "stop every serve of the deployment first" in refused.stderr
    finally:
        stop_server(server)
        hooks.stop()
    stored = stored_batches(data_dir)
    assert len(stored) == 40
    delivered = {r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook")}
    assert delivered == {str(message_id("hook", b.batch_id)) for b in stored}
    lines = cli(data_dir, "batches").splitlines()
    assert len(lines) == 40 and all(json.loads(line)["batch_id"] for line in lines)
    found = json.loads(cli(data_dir, "profiles", "find", "--email", "user3@example.com"))
    assert found["mpid"]
    cli(data_dir, "reprocess")  # no serve now: the same users again (MPIDs from batch ids)
    again = json.loads(cli(data_dir, "profiles", "find", "--email", "user3@example.com"))
    assert again["mpid"] == found["mpid"]


def test_the_topic_keeps_every_batch_until_patchbay_removes_it(scaled: str, tmp_path: Path) -> None:
    """The scale-out backend creates its topic without a retention of Kafka's own (which
    would delete batches a stage has not read yet, whatever ``log_retention_s`` says):
    Patchbay's retention removes only what every stage has passed. And with acks=all, one
    replica alone never acknowledges a batch once the topic has three."""
    settings = settings_from_process({"data_dir": tmp_path / "data"}, None)
    backend = open_backend(settings)
    try:
        client = admin.AdminClient({"bootstrap.servers": bootstrap_servers(infra.kafka_url())})
        topic = f"patchbay.{scaled}"
        resource = admin.ConfigResource("topic", topic)  # type: ignore[attr-defined]
        (future,) = client.describe_configs([resource]).values()
        config = {k: v.value for k, v in future.result().items()}
        assert settings.log_retention_s > 0
        assert config["retention.ms"] == "-1" and config["retention.bytes"] == "-1"
        assert config["min.insync.replicas"] == "1"  # (one replica here)
    finally:
        backend.close()
    assert [min_insync_replicas(n) for n in (1, 2, 3, 5)] == [1, 1, 2, 2]
