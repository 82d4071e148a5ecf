"""End to end, failures in the middle of a stream, against real servers: a three-broker
Kafka cluster of the test's own (topic replicated three times, ``min.insync.replicas`` 2),
PostgreSQL, one ``serve --role ingest``, two ``--role process`` and two ``--role deliver``,
two audiences connected to the example SQLite partner. Users are seen on the web (logged
in), then anonymously on a phone, then log in on the phone (a merge), while batches stream
in at a steady pace; meanwhile the segment leader's processor and one deliverer are killed
(SIGKILL, their children too) and one broker crashes (SIGKILL) and is started again; the
last requests go once it is back. The client retries 503s (same batch, same
``source_request_id``), as an SDK would. Afterwards every event of every accepted batch
reached the partner, none under two delivery ids, no membership change under two message
ids, and the profiles and audience memberships are those of an embedded-mode ``serve`` fed
the same batches in the same order."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import admin

from patchbay.backends import open_backend
from patchbay.backends.abstract import Backend
from patchbay.backends.kafka.log import bootstrap_servers
from patchbay.config import settings_from_process
from patchbay.errors import LogUnavailable
from patchbay.firehose import EventProcessingRequest, parse
from patchbay.firehose.events import CustomEvent
from tests import infra
from tests.activate.test_deliveries_e2e import PartnerProxy, cli
from tests.activate.test_deliveries_e2e import partner_rows as rows
from tests.activate.test_delivery_process import children
from tests.activate.test_engine_support import wait_for
from tests.conftest import (
    ApiClientCredentials,
    Server,
    add_api_client,
    add_input,
    start_server,
    stop_server,
)
from tests.segment.test_audiences_e2e import FAST, TOKEN, partner
from tests.segment.test_process import define, metric
from tests.test_scale_out import scaled

__all__ = ["partner", "scaled"]  # the fixtures

#: (the default timeout of 120 s is short for three brokers, six servers and two runs)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

USERS = 48
#: Batches per request, and the pause between requests (the stream's pace).
BULK = 2
PACE_S = 0.2
#: The request (by index) before which each failure starts.
KILL_PROCESSOR, KILL_DELIVERER, CRASH_BROKER = 12, 22, 32
#: The broker that crashes and is started again (the first of the bootstrap list), and for
#: how long it stays down: its partitions are led by the others only once its session with
#: the controllers expired (9 s). The stream goes on meanwhile (the requests may be 503s).
BROKER, BROKER_DOWN_S = 1, 12.0
#: The last requests, sent once the broker is back.
TAIL = 10
AUDIENCES = ("players", "fans")  # a Play ever; exactly three Plays
#: Generous deadlines: fail-overs take seconds (session timeouts, leases, a broker's start).
SETTLE_S = 180.0
LEADER = "patchbay_segment_leader"
SCALED_ENV = {
    **FAST,
    "PATCHBAY_KAFKA_PARTITIONS": "6",
    "PATCHBAY_KAFKA_REPLICATION_FACTOR": "3",
    "PATCHBAY_KAFKA_SESSION_TIMEOUT_S": "6",
    "PATCHBAY_DELIVERY_LEASE_S": "4",
    "PATCHBAY_DELIVERY_TIMEOUT_S": "2",
    "PATCHBAY_DELIVERY_CONNECT_TIMEOUT_S": "0.5",
}


def event(name: str, marker: str) -> dict[str, Any]:
    """A custom event; ``marker`` (its attribute ``n``) names it among every event sent."""
    data = {"event_name": name, "custom_event_type": "other", "custom_attributes": {"n": marker}}
    return {"event_type": "custom_event", "data": data}


def user_batches(u: int) -> list[tuple[int, dict[str, Any]]]:
    """User ``u``'s batches, each with its place in the stream: on the web, logged in (key:
    the customer id); later anonymous on a phone (key: the device); then logging in on the
    phone (the customer id again: the anonymous user is merged into the known one, whichever
    of the two partitions is resolved first); every fourth user plays a fourth time (no
    longer a fan)."""
    known = {"customer_id": f"c{u}", "email": f"u{u}@example.com"}
    device = f"dev-{u}"
    made = [
        (4 * u, {"user_identities": known, "user_attributes": {"plan": "gold"},
                 "events": [event("Play", f"{u}-web"), event("View", f"{u}-view")]}),
        (4 * u + 5, {"mp_deviceid": device, "user_attributes": {"phone": "pixel"},
                     "events": [event("Play", f"{u}-anon")]}),
        (4 * u + 9, {"user_identities": known, "mp_deviceid": device,
                     "user_attributes": {"logged_in": "yes"},
                     "events": [event("Play", f"{u}-login")]}),
    ]  # fmt: skip
    if u % 4 == 0:
        made.append((4 * u + 13, {"user_identities": known, "mp_deviceid": device,
                                  "events": [event("Play", f"{u}-again")]}))  # fmt: skip
    return made


def stream() -> list[list[dict[str, Any]]]:
    """Every user's batches in stream order, in requests of :data:`BULK` batches."""
    placed = sorted(
        (at, u, i, b) for u in range(USERS) for i, (at, b) in enumerate(user_batches(u))
    )
    batches = [
        {"environment": "production", "source_request_id": f"req-{u}-{i}", **b}
        for _, u, i, b in placed
    ]
    return [batches[i : i + BULK] for i in range(0, len(batches), BULK)]


def markers(bulks: list[list[dict[str, Any]]]) -> set[str]:
    return {
        e["data"]["custom_attributes"]["n"] for bulk in bulks for b in bulk for e in b["events"]
    }


class Sender:
    """Posts each request to the scale-out ingest until it is accepted (a 503 is retried
    after its ``Retry-After``, the same body), then the same request to the embedded
    server; counts the retries."""

    def __init__(self, ingest: Server, embedded: Server) -> None:
        self.ingest = ingest
        self.embedded = embedded
        self.retried = 0

    def send(self, bulk: list[dict[str, Any]]) -> None:
        body = json.dumps(bulk).encode()
        deadline = time.monotonic() + SETTLE_S
        while True:
            status, headers, answer = self.ingest.post("/v2/bulkevents", body)
            if status == 202:
                break
            assert status == 503 and time.monotonic() < deadline, (status, answer)
            self.retried += 1
            time.sleep(min(float(headers.get("Retry-After", "1")), 2.0))
        status, _, answer = self.embedded.post("/v2/bulkevents", body)
        assert status == 202, answer


def ends(backend: Backend) -> dict[int, Any]:
    return {
        p: end for p in range(backend.log.partitions) if (end := backend.log.end(p)) is not None
    }


def lag(backend: Backend, stages: tuple[str, ...]) -> str:
    """What ``backend`` has yet to do ("" once every stage reached the log's end and
    nothing waits in the outbox nor for it)."""
    try:
        end = ends(backend)
    except LogUnavailable as exc:  # (a broker coming back)
        return str(exc)
    behind = [
        name
        for name, at in (
            ("resolve", backend.state.checkpoint()),
            ("segment", backend.audiences.checkpoint()),
            *((s, backend.positions.get(s)) for s in stages),
        )
        if at != end
    ]
    queued = {o: s.pending for o, s in backend.outbox.stats().items() if s.pending}
    waiting = backend.audiences.pending_outputs()
    if not (behind or queued or waiting):
        return ""
    return (
        f"stages behind the log's end: {behind}; deliveries queued: {queued};"
        f" membership changes waiting: {waiting}"
    )


def settle(data_dir: Path, more: Callable[[], str]) -> None:
    """Wait until the deployment of ``data_dir`` (in this process's environment) has done
    everything and ``more`` (what else is missing) says "" too; fail with what is missing
    after :data:`SETTLE_S`."""
    settings = settings_from_process({"data_dir": data_dir}, None)
    backend = open_backend(settings, create=False)
    try:
        stages = ("activate",) if settings.log else ()
        deadline = time.monotonic() + SETTLE_S
        while missing := lag(backend, stages) or more():
            assert time.monotonic() < deadline, f"not done after {SETTLE_S:.0f} s: {missing}"
            time.sleep(0.2)
    finally:
        backend.close()


def delivered(recorder: PartnerProxy) -> dict[str, set[str]]:
    """By event marker: the ids of the event processing requests that carried it."""
    found: dict[str, set[str]] = defaultdict(set)
    for body in list(recorder.bodies):
        message = parse(body)
        if isinstance(message, EventProcessingRequest):
            for e in message.events:
                if isinstance(e, CustomEvent) and "n" in e.attributes:
                    found[e.attributes["n"]].add(str(message.id))
    return found


def profiles(server: Server, reader: ApiClientCredentials) -> dict[str, dict[str, Any]]:
    """Every user's profile from the Profile API (by customer id), without what differs
    between two runs over the same batches: MPIDs, times, input and audience ids."""
    found = {}
    for u in range(USERS):
        body = {
            "environment_type": "production",
            "identity": {"type": "customer_id", "value": f"c{u}"},
        }
        fields = "user_identities,device_identities,user_attributes,audience_memberships,consent"
        status, _, answer = server.post(
            f"/userprofile/v1/resolve/1/2/3?fields={fields}",
            json.dumps(body).encode(),
            auth=reader.basic,
        )
        assert status == 200, answer
        doc = json.loads(answer)
        found[f"c{u}"] = {
            **{k: v for k, v in doc.items() if not k.endswith("_timestamp_ms")},
            "mpid": doc["mpid"],
            "inputs": len(doc["inputs"]),
            "user_identities": sorted((i["type"], i["value"]) for i in doc["user_identities"]),
            "device_identities": sorted((i["type"], i["value"]) for i in doc["device_identities"]),
            "audience_memberships": sorted(m["audience_name"] for m in doc["audience_memberships"]),
        }
    return found


def members(data_dir: Path, by_mpid: dict[int, str]) -> dict[str, list[str]]:
    """By audience: its members' customer ids (from ``patchbay audiences members``; an
    MPID that is no user's live profile kept as ``?MPID``)."""
    found = {}
    for name in AUDIENCES:
        mpids = json.loads(cli(data_dir, "audiences", "members", name, "--json"))
        found[name] = sorted(by_mpid.get(int(m), f"?{m}") for m in mpids)
    return found


@contextlib.contextmanager
def embedded_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment of the embedded-mode run (what starts or runs in it: no state, no
    log, so a data directory of its own)."""
    with monkeypatch.context() as m:
        for name in ("PATCHBAY_STATE", "PATCHBAY_LOG"):
            m.delenv(name, raising=False)
        yield


def leaders(servers: list[Server]) -> list[Server]:
    return [s for s in servers if metric(s, LEADER) == 1.0]


def kill(server: Server, child: str) -> None:
    """SIGKILL ``server`` and its child process ``child`` (``pb-segment``, ``pb-delivery``)."""
    found = children(server.process.pid, child)
    server.process.kill()
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.process.wait()


@pytest.fixture
def kafka3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.KafkaCluster]:
    """A three-broker Kafka cluster of this test's own."""
    cluster = infra.KafkaCluster(tmp_path_factory.mktemp("kafka3") / "kafka", brokers=3)
    try:
        yield cluster
    finally:
        cluster.stop()


def crash_and_restart(cluster: infra.KafkaCluster) -> None:
    """Kill :data:`BROKER` (SIGKILL), and start it again :data:`BROKER_DOWN_S` later."""
    cluster.stop_broker(BROKER, kill=True)
    time.sleep(BROKER_DOWN_S)
    cluster.start_broker(BROKER)


def replication(url: str, topic: str) -> tuple[set[int], str]:
    """The replica counts of ``topic``'s partitions, and its ``min.insync.replicas``."""
    client = admin.AdminClient({"bootstrap.servers": bootstrap_servers(url), "log_level": 3})
    partitions = client.list_topics(topic, timeout=10).topics[topic].partitions.values()
    resource = admin.ConfigResource("topic", topic)  # type: ignore[attr-defined]
    (future,) = client.describe_configs([resource]).values()
    return {len(p.replicas) for p in partitions}, future.result()["min.insync.replicas"].value


def test_killed_processor_and_deliverer_and_a_restarted_broker_mid_stream(
    scaled: str,
    kafka3: infra.KafkaCluster,
    partner: tuple[PartnerProxy, Path, int],
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder, partner_db, port = partner
    monkeypatch.setenv("PATCHBAY_LOG", kafka3.url)
    for key, value in SCALED_ENV.items():
        monkeypatch.setenv(key, value)
    bulks = stream()

    # the embedded-mode run: the same input and audiences, no partner
    embedded_dir = tmp_path / "embedded" / "data"
    embedded_dir.parent.mkdir()
    with embedded_env(monkeypatch):
        embedded_credentials = add_input(embedded_dir, "app")
        define(embedded_dir, embedded_dir.parent)
        embedded_reader = add_api_client(embedded_dir, "reader")

    credentials = add_input(data_dir, "app")
    reader = add_api_client(data_dir, "reader")
    cli(data_dir, "modules", "register", "sqlite", "--url",
        f"http://127.0.0.1:{port}/firehose", "--token", TOKEN)  # fmt: skip
    cli(data_dir, "outputs", "add", "crm", "--module", "sqlite", "--setting", "apiKey=K-1")
    cli(data_dir, "connections", "add", "--input", "app", "--output", "crm")
    define(data_dir, tmp_path)
    for name in AUDIENCES:
        cli(data_dir, "audiences", "connect", name, "--output", "crm")

    servers: list[Server] = []
    chaos = ThreadPoolExecutor(max_workers=1)  # the broker's crash and restart
    restarted: Future[None] | None = None
    try:
        with embedded_env(monkeypatch):
            servers.append(start_server(embedded_dir))
        for role in ("ingest", "process", "process", "deliver", "deliver"):
            servers.append(start_server(data_dir, "--role", role))
        embedded, ingest, *processors, deliverer, _ = servers
        embedded.credentials = embedded_credentials
        ingest.credentials = credentials
        replicas, min_isr = replication(kafka3.url, f"patchbay.{scaled}")
        assert replicas == {3} and min_isr == "2"  # acks=all holds with one broker down
        wait_for(lambda: len(leaders(processors)) == 1, timeout_s=60, what="a segment leader")
        wait_for(
            lambda: len(rows(partner_db, "SELECT 1 FROM audience_subscriptions")) == 2,
            timeout_s=60,
            what="the subscriptions at the partner",
        )
        (leader,) = leaders(processors)
        (standby,) = [p for p in processors if p is not leader]

        sender = Sender(ingest, embedded)
        for index, bulk in enumerate(bulks):
            if index == len(bulks) - TAIL:
                assert restarted is not None
                restarted.result()  # the broker is back
            if index == KILL_PROCESSOR:
                kill(leader, "pb-segment")
            elif index == KILL_DELIVERER:
                kill(deliverer, "pb-delivery")
            elif index == CRASH_BROKER:
                restarted = chaos.submit(crash_and_restart, kafka3)
            sender.send(bulk)
            time.sleep(PACE_S)

        expected = markers(bulks)

        def undelivered() -> str:
            missing = expected - delivered(recorder).keys()
            return (
                f"{len(missing)} events not at the partner, e.g. {sorted(missing)[:5]}"
                if missing
                else ""
            )

        settle(data_dir, undelivered)
        wait_for(lambda: leaders([standby]) == [standby], what="the standby leading")
        with embedded_env(monkeypatch):
            settle(embedded_dir, lambda: "")
        scaled_profiles = profiles(ingest, reader)
        embedded_profiles = profiles(embedded, embedded_reader)
    finally:
        chaos.shutdown()
        for server in servers:
            stop_server(server)

    # every event of every accepted batch delivered, none under two delivery ids
    sent = delivered(recorder)
    assert sent.keys() == expected
    twice = {marker: ids for marker, ids in sent.items() if len(ids) > 1}
    assert not twice, f"events delivered under different ids: {twice}"
    # no membership change under two message ids
    changes = Counter(
        (audience, user, action)
        for _, audience, user, action in rows(
            partner_db,
            "SELECT DISTINCT request_id, audience_name, user_key, action FROM audience_changes",
        )
    )
    assert {k: n for k, n in changes.items() if n > 1} == {}

    # the profiles and memberships of the embedded-mode run
    def without_mpids(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {c: {k: v for k, v in doc.items() if k != "mpid"} for c, doc in found.items()}

    assert without_mpids(scaled_profiles) == without_mpids(embedded_profiles)
    scaled_members = members(data_dir, {d["mpid"]: c for c, d in scaled_profiles.items()})
    with embedded_env(monkeypatch):
        embedded_members = members(
            embedded_dir, {d["mpid"]: c for c, d in embedded_profiles.items()}
        )
    assert scaled_members == embedded_members
    # and the partner's lists are those members
    at_partner = rows(
        partner_db,
        "SELECT DISTINCT c.audience_name, m.user_key FROM audience_members m"
        " JOIN audience_changes c ON c.audience_id = m.audience_id",
    )
    by_mpid = {f"mpid:{d['mpid']}": c for c, d in scaled_profiles.items()}
    for name in AUDIENCES:
        keys = sorted(by_mpid.get(key, key) for audience, key in at_partner if audience == name)
        assert keys == scaled_members[name], name
