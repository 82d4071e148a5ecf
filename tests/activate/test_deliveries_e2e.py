"""End to end: a real ``patchbay serve`` forwards what is posted to /v2/bulkevents to the
SQLite example partner, over HTTP (uvicorn) and through the local Lambda server, with the
connections' filters applied; survives a partner outage and a SIGKILL; parks and replays;
pauses on ``suspend_subscription``. On each deployment (the embedded store, the scale-out
mode)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import psycopg
import pytest
from psycopg import sql

from examples.sqlite_partner.http import build_app
from patchbay.activate.ids import message_id
from patchbay.backends.abstract import Backend
from patchbay.backends.records import QueueStats
from patchbay.backends.sqlite import DELIVERIES_FILE
from patchbay.firehose import parse
from patchbay.partner.lambda_local import BackgroundServer, LocalLambda
from patchbay.partner.targets import HttpTarget
from tests.activate.test_engine_support import wait_for
from tests.conftest import Credentials, Server, add_input, run_cli, start_server, stop_server
from tests.deployments import Deployment

pytestmark = pytest.mark.slow

T = TypeVar("T")

PARTNER_TOKEN = "partner-secret-token"
API_KEY = "acct-api-key-123"
ADMIN_TOKEN = "admin-token-for-the-e2e-tests"

#: Fast retries for the tests (the defaults are 1 s doubling up to 5 min, for 24 h).
FAST_RETRIES = {
    "PATCHBAY_DELIVERY_BASE_DELAY_S": "0.1",
    "PATCHBAY_DELIVERY_MAX_DELAY_S": "0.5",
    "PATCHBAY_DELIVERY_POLL_S": "0.05",
}


class PartnerProxy:
    """Wraps the partner's ASGI app (``app``, which a test may swap): keeps every request
    body, records the id of every event processing request with events it receives and can
    add ``suspend_subscription: true`` to the answers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ids: list[str] = []
        self.bodies: list[bytes] = []
        self.suspend = False
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        with self._lock:
            self.bodies.append(body)
        try:
            document = json.loads(body)
        except ValueError:
            document = {}
        if document.get("type") == "event_processing_request" and document.get("events"):
            # (not the verification request `modules register` sends: it has no events)
            with self._lock:
                self.ids.append(str(document["id"]))
        given = False

        async def replay() -> Any:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if not self.suspend or document.get("type") != "event_processing_request":
            await self.app(scope, replay, send)
            return
        start: dict[str, Any] = {}
        parts: list[bytes] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                parts.append(message.get("body", b""))

        await self.app(scope, replay, capture)
        answer = json.loads(b"".join(parts))
        answer["suspend_subscription"] = True
        out = json.dumps(answer).encode()
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(out)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    def received(self) -> list[str]:
        with self._lock:
            return list(self.ids)

    def messages(self, kind: type[T]) -> list[T]:
        """The requests of one type received, parsed with the strict Firehose models."""
        with self._lock:
            bodies = list(self.bodies)
        return [m for m in (parse(b) for b in bodies) if isinstance(m, kind)]


def partner_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def batch(
    email: str, *, environment: str = "production", events: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "environment": environment,
        "user_identities": {"email": email, "customer_id": email.split("@")[0]},
        "events": events
        if events is not None
        else [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "Play",
                    "custom_event_type": "other",
                    "custom_attributes": {"song": "x", "secret": "s"},
                },
            },
            {"event_type": "session_start", "data": {}},
        ],
    }


def post_batches(server: Server, batches: list[dict[str, Any]]) -> None:
    status, _, body = server.post("/v2/bulkevents", json.dumps(batches).encode())
    assert status == 202, body


def cli(data_dir: Path, *args: str) -> str:
    done = run_cli(*args, data_dir=data_dir)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


@dataclass
class Setup:
    data_dir: Path
    partner: PartnerProxy
    partner_db: Path
    partner_server: BackgroundServer
    partner_port: int
    deployment: Deployment

    def serve(self, credentials: Credentials) -> Server:
        """Start ``patchbay serve`` on this test's data (its input's ``credentials``)."""
        server = start_server(self.data_dir)
        server.credentials = credentials
        server.deployment = self.deployment
        return server

    def store(self) -> Backend:
        """The server's stores, opened beside it (the caller closes them)."""
        return self.deployment.open(self.data_dir)


@pytest.fixture
def fast_env(monkeypatch: pytest.MonkeyPatch, aws_env: None) -> None:
    for key, value in FAST_RETRIES.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def setup(
    tmp_path: Path, data_dir: Path, fast_env: None, deployment: Deployment
) -> Iterator[Setup]:
    partner_db = tmp_path / "partner-http.db"
    proxy = PartnerProxy(build_app(str(partner_db), PARTNER_TOKEN))
    server = BackgroundServer(proxy).start()
    try:
        yield Setup(data_dir, proxy, partner_db, server, server.port, deployment)
    finally:
        server.stop()


def register_http_output(s: Setup, *connection_args: str) -> None:
    url = f"http://127.0.0.1:{s.partner_port}/firehose"
    cli(s.data_dir, "modules", "register", "sqlite-http", "--url", url, "--token", PARTNER_TOKEN)
    cli(
        s.data_dir,
        "outputs",
        "add",
        "http",
        "--module",
        "sqlite-http",
        "--setting",
        f"apiKey={API_KEY}",
    )
    cli(s.data_dir, "connections", "add", "--input", "app", "--output", "http", *connection_args)


def expected_ids(server: Server, output: str) -> set[str]:
    return {str(message_id(output, b.batch_id)) for b in server.stored()}


def queued(s: Setup, output: str = "http") -> QueueStats:
    """The queue of ``output`` in the outbox, as stored."""
    backend = s.store()
    try:
        return backend.outbox.stats().get(output, QueueStats())
    finally:
        backend.close()


def stored_bytes(s: Setup) -> bytes:
    """Every byte the outbox keeps: the embedded store's ``deliveries.db`` with its WAL and
    shared memory, or every value of every table of the scale-out mode's database."""
    if not s.deployment.scaled:
        files = sorted(s.data_dir.glob(f"{DELIVERIES_FILE}*"))
        assert any(f.name.endswith("-wal") for f in files)
        return b"".join(f.read_bytes() for f in files)
    values: list[object] = []
    with psycopg.connect(s.deployment.env["PATCHBAY_STATE"]) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table))
            values.extend(value for row in conn.execute(query) for value in row)
    return b"".join(
        bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in values
    )


def test_http_and_lambda_partners_receive_filtered_batches(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = setup.data_dir
    credentials = add_input(data_dir, "app")
    register_http_output(setup, "--event-types", "custom_event", "--drop-attributes", "secret")
    lambda_db = tmp_path / "partner-lambda.db"
    monkeypatch.setenv("SQLITE_PARTNER_DB", str(lambda_db))
    functions = LocalLambda({"sqlite-fn": "examples.sqlite_partner.handler:handler"})
    hook_file = data_dir / "outputs" / "hook.jsonl"
    with functions.serve() as lambda_server:
        cli(
            data_dir,
            "modules",
            "register",
            "sqlite-fn",
            "--lambda",
            "sqlite-fn",
            "--endpoint-url",
            lambda_server.url,
        )
        cli(data_dir, "outputs", "add", "fn", "--module", "sqlite-fn", "--setting", "apiKey=K2")
        cli(data_dir, "outputs", "add", "lines", "--file", "hook.jsonl")
        cli(data_dir, "connections", "add", "--input", "app", "--output", "fn",
            "--environment", "production", "--setting", "attributeLimit=5")  # fmt: skip
        cli(data_dir, "connections", "add", "--input", "app", "--output", "lines",
            "--event-types", "session_start")  # fmt: skip
        server = setup.serve(credentials)
        try:
            post_batches(
                server,
                [
                    batch("a@example.com"),
                    batch("b@example.com", environment="development"),
                    batch(
                        "c@example.com",
                        events=[{"event_type": "screen_view", "data": {"screen_name": "Home"}}],
                    ),
                ],
            )
            # HTTP: custom events only (so the screen-view-only batch is not sent at all)
            wait_for(
                lambda: len(partner_rows(setup.partner_db, "SELECT * FROM batches")) == 2,
                what="two batches at the HTTP partner",
            )
            # Lambda: production only
            wait_for(
                lambda: len(partner_rows(lambda_db, "SELECT * FROM batches")) == 2,
                what="two batches at the Lambda partner",
            )
            wait_for(
                lambda: hook_file.exists() and len(hook_file.read_bytes().splitlines()) == 2,
                what="two lines in the file",
            )
            status = cli(data_dir, "outputs", "status")
            expected_metrics = (
                'patchbay_deliveries_succeeded_total{output="http"} 2.0',
                'patchbay_delivery_duration_seconds_count{output="fn"}',
                'patchbay_delivery_queue_depth{output="lines"}',
            )
            # the delivery process reports its metrics a few times a second
            wait_for(
                lambda: all(m in server.get("/metrics")[1].decode() for m in expected_metrics),
                what="the delivery metrics on /metrics",
            )
            code, metrics = server.get("/metrics")
        finally:
            stop_server(server)
    http_events = partner_rows(setup.partner_db, "SELECT event_type, name, details FROM events")
    assert sorted((t, n) for t, n, _ in http_events) == [
        ("custom_event", "Play"),
        ("custom_event", "Play"),
    ]
    assert all("secret" not in details for _, _, details in http_events)
    lambda_events = partner_rows(lambda_db, "SELECT event_type, name FROM events")
    assert sorted(lambda_events) == sorted(
        [("custom_event", "Play"), ("session_start", None), ("screen_view", "Home")]
    )
    lines = [json.loads(line) for line in hook_file.read_bytes().splitlines()]
    assert all(
        [e["event_type"] for e in line["batch"]["events"]] == ["session_start"] for line in lines
    )
    assert all(isinstance(line["mpid"], int) for line in lines)
    # every request carries the stable id of (output, batch)
    assert set(setup.partner.received()) <= expected_ids(server, "http")
    assert "http" in status and "active" in status
    assert code == 200
    text = metrics.decode()
    assert all(m in text for m in expected_metrics)


def test_outage_and_sigkill_lose_nothing(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    # In the scale-out mode, what the killed server's deliverer read stays its own until its
    # leases expire, and its log partition until its Kafka session does (docs/scale-out.md):
    # short ones, so that the new server takes them over soon.
    for key, value in (
        ("DELIVERY_TIMEOUT_S", "2"),
        ("DELIVERY_CONNECT_TIMEOUT_S", "1"),
        ("DELIVERY_LEASE_S", "4"),
        ("KAFKA_SESSION_TIMEOUT_S", "6"),  # the broker's least (group.min.session.timeout.ms)
    ):
        monkeypatch.setenv(f"PATCHBAY_{key}", value)
    data_dir = setup.data_dir
    credentials = add_input(data_dir, "app")
    register_http_output(setup)
    setup.partner_server.stop()  # the partner goes down
    server = setup.serve(credentials)
    try:
        for i in range(10):
            post_batches(server, [batch(f"u{i}-{j}@example.com") for j in range(3)])

        wait_for(lambda: queued(setup).pending == 30, what="30 queued deliveries")
        server.process.kill()  # SIGKILL in the middle of the retries
        server.process.wait()
        server = setup.serve(credentials)
        for i in range(10, 15):
            post_batches(server, [batch(f"u{i}-{j}@example.com") for j in range(2)])
        wait_for(lambda: queued(setup).pending == 40, what="40 queued deliveries")
        # the partner comes back on the same port
        back = BackgroundServer(setup.partner, port=setup.partner_port).start()
        try:
            wait_for(
                lambda: len(partner_rows(setup.partner_db, "SELECT * FROM batches")) == 40,
                timeout_s=60,
                what="every batch at the partner",
            )
            wait_for(lambda: queued(setup).pending == 0, what="an empty outbox")
        finally:
            back.stop()
    finally:
        stop_server(server)
    expected = expected_ids(server, "http")
    assert len(expected) == 40
    rows = {r[0] for r in partner_rows(setup.partner_db, "SELECT request_id FROM batches")}
    assert rows == expected
    # duplicates, if any, carry the same message ids
    assert set(setup.partner.received()) == expected


def test_parking_and_replay_with_the_cli(setup: Setup, tmp_path: Path) -> None:
    data_dir = setup.data_dir
    credentials = add_input(data_dir, "app")
    url = f"http://127.0.0.1:{setup.partner_port}/firehose"
    cli(data_dir, "modules", "register", "sqlite-http", "--url", url, "--token", PARTNER_TOKEN)
    cli(data_dir, "outputs", "add", "http", "--module", "sqlite-http", "--setting", "apiKey=k")
    cli(data_dir, "connections", "add", "--input", "app", "--output", "http")
    # the partner rotates its token: the module's is now wrong, and the partner answers 401,
    # which is not retried (registering with a wrong token is refused outright)
    rotated = "rotated-partner-token"
    setup.partner.app = build_app(str(setup.partner_db), rotated)
    server = setup.serve(credentials)
    try:
        post_batches(server, [batch("a@example.com"), batch("b@example.com")])

        def parked() -> list[dict[str, Any]]:
            out = cli(data_dir, "deliveries", "parked", "--output", "http", "--json")
            return [json.loads(line) for line in out.splitlines()]

        wait_for(lambda: len(parked()) == 2, what="two parked deliveries")
        first = parked()
        assert all("401" in d["last_error"] for d in first)
        assert "401" in cli(data_dir, "deliveries", "parked")
        assert "2" in cli(data_dir, "outputs", "status")
        # fix the token (register again), then replay
        cli(data_dir, "modules", "register", "sqlite-http", "--url", url, "--token", rotated)
        assert "replaying 2" in cli(data_dir, "deliveries", "replay", "--output", "http")
        wait_for(
            lambda: len(partner_rows(setup.partner_db, "SELECT * FROM batches")) == 2,
            what="the replayed batches",
        )
        assert parked() == []
    finally:
        stop_server(server)
    ids = {r[0] for r in partner_rows(setup.partner_db, "SELECT request_id FROM batches")}
    assert ids == {d["id"] for d in first}  # the original message ids


async def quoting_partner(scope: Any, receive: Any, send: Any) -> None:
    """A partner that refuses every request with a 400 quoting the ``apiKey`` it was sent
    (as some APIs do)."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    key = json.loads(body).get("account", {}).get("account_settings", {}).get("apiKey")
    answer = f"invalid apiKey {key}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def admin_get(server: Server, path: str) -> str:
    request = urllib.request.Request(
        server.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        text: str = response.read().decode()
        return text


def test_a_queued_delivery_holds_no_confidential_setting_in_clear(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example partner's ``apiKey`` is confidential: while a request waits in the
    outbox, no byte of the store holds it (:func:`stored_bytes`), yet the partner receives
    it; a partner's error quoting it is stored, shown (CLI, admin API) and logged masked."""
    data_dir = setup.data_dir
    credentials = add_input(data_dir, "app")
    register_http_output(setup)
    setup.partner_server.stop()  # the partner is down: the request waits in the outbox
    monkeypatch.setenv("PATCHBAY_ADMIN_TOKEN", ADMIN_TOKEN)
    server = setup.serve(credentials)
    back: BackgroundServer | None = None
    try:
        post_batches(server, [batch("a@example.com")])

        wait_for(lambda: queued(setup).pending == 1, what="a queued delivery")
        raw = stored_bytes(setup)
        assert b"sqlite-http" in raw  # the output's module: what is read is the store
        assert API_KEY.encode() not in raw

        # the partner comes back and refuses the request, quoting the key it was sent
        setup.partner.app = quoting_partner
        back = BackgroundServer(setup.partner, port=setup.partner_port).start()

        def parked() -> list[dict[str, Any]]:
            out = cli(data_dir, "deliveries", "parked", "--output", "http", "--json")
            return [json.loads(line) for line in out.splitlines()]

        wait_for(lambda: len(parked()) == 1, what="a parked delivery")
        assert parked()[0]["last_error"].endswith("invalid apiKey ***")
        shown = [
            cli(data_dir, "deliveries", "parked"),
            cli(data_dir, "outputs", "show", "http"),
            admin_get(server, "/admin/v1/deliveries/parked"),
            admin_get(server, "/admin/v1/outputs/http"),
        ]
        assert all(API_KEY not in text for text in shown), shown
        assert "***" in shown[2] and "***" in shown[3]
        assert API_KEY.encode() not in stored_bytes(setup)
        backend = setup.store()
        try:
            [stored] = backend.outbox.parked("http")
        finally:
            backend.close()
        assert stored.last_error and stored.last_error.endswith("invalid apiKey ***")

        # the real partner again: the replayed request carries the key in clear
        setup.partner.app = build_app(str(setup.partner_db), PARTNER_TOKEN)
        assert "replaying 1" in cli(data_dir, "deliveries", "replay", "--output", "http")
        wait_for(
            lambda: len(partner_rows(setup.partner_db, "SELECT * FROM batches")) == 1,
            what="the batch at the partner",
        )
    finally:
        stop_server(server)
        if back is not None:
            back.stop()
    ((fingerprint,),) = partner_rows(setup.partner_db, "SELECT key_fingerprint FROM batches")
    assert fingerprint == hashlib.sha256(API_KEY.encode()).hexdigest()[:12]
    assert API_KEY not in server.log_path.read_text()


def test_suspend_subscription_pauses_the_output(setup: Setup) -> None:
    data_dir = setup.data_dir
    credentials = add_input(data_dir, "app")
    register_http_output(setup)
    setup.partner.suspend = True
    server = setup.serve(credentials)
    try:
        post_batches(server, [batch("a@example.com")])

        def state() -> dict[str, Any]:
            line = cli(data_dir, "outputs", "status", "--json").splitlines()[0]
            result: dict[str, Any] = json.loads(line)
            return result

        wait_for(lambda: state()["state"] == "paused", what="a paused output")
        assert "suspend_subscription" in state()["paused_reason"]
        assert "suspend_subscription" in cli(data_dir, "outputs", "status")
        setup.partner.suspend = False
        post_batches(server, [batch("b@example.com")])
        wait_for(lambda: state()["pending"] == 1, what="a held delivery")
        assert len(partner_rows(setup.partner_db, "SELECT * FROM batches")) == 1
        cli(data_dir, "outputs", "resume", "http")
        wait_for(
            lambda: len(partner_rows(setup.partner_db, "SELECT * FROM batches")) == 2,
            what="delivery after resume",
        )
    finally:
        stop_server(server)


def test_isolation_with_a_real_server(setup: Setup, tmp_path: Path) -> None:
    """A webhook that answers 500 and one that never answers in time do not hold up the partner."""
    from tests.activate.test_engine_support import Recorder, serve

    rec = Recorder()
    rec.set("/broken", status=500)
    rec.set("/slow", delay_s=12.0)  # beyond the engine's 10 s request timeout
    hooks = serve(rec.app)
    data_dir = setup.data_dir
    credentials = add_input(data_dir, "app")
    register_http_output(setup)
    for name in ("broken", "slow"):
        cli(data_dir, "outputs", "add", name, "--webhook", f"{hooks.url}/{name}")
        cli(data_dir, "connections", "add", "--input", "app", "--output", name)
    env_concurrency = os.environ.get("PATCHBAY_DELIVERY_CONCURRENCY")
    assert env_concurrency is None
    server = setup.serve(credentials)
    try:
        post_batches(server, [batch(f"u{i}@example.com") for i in range(40)])
        wait_for(
            lambda: len(partner_rows(setup.partner_db, "SELECT * FROM batches")) == 40,
            what="every batch at the partner",
        )
        # the slow webhook has delivered nothing (every call times out) and held up nobody
        assert rec.at("/slow", handled=True) == []
        assert len(rec.at("/slow")) >= 1
        assert rec.at("/broken", handled=True) == []
        assert len(rec.at("/broken")) >= 1

        def circuit(name: str) -> str:
            rows = [
                json.loads(line)
                for line in cli(data_dir, "outputs", "status", "--json").splitlines()
            ]
            return str(next(r["circuit"] for r in rows if r["name"] == name))

        wait_for(lambda: circuit("broken") == "open", what="the broken output's breaker open")
        attempts = len(rec.at("/broken"))
        assert attempts < 40  # the breaker stopped it: no attempt per delivery
        rec.set("/broken", status=200)  # it works again: everything that waited flows
        wait_for(lambda: len(rec.at("/broken", handled=True)) >= 40, what="all 40 at broken")
        wait_for(lambda: circuit("broken") == "closed", what="the breaker closed")
        ids = [r.headers["x-patchbay-delivery-id"] for r in rec.at("/broken", handled=True)]
        assert set(ids) == expected_ids(server, "broken") and len(ids) == 40
    finally:
        stop_server(server)
        hooks.stop()


def test_a_module_at_a_refused_address_is_parked_while_a_local_partner_receives(
    setup: Setup,
) -> None:
    """A module whose URL is a cloud metadata address (stored before the check existed, as
    an upgraded store holds it) has its deliveries parked with the reason, and nothing sent;
    the local partner beside it receives every batch."""
    data_dir = setup.data_dir
    credentials = add_input(data_dir, "app")
    register_http_output(setup)
    backend = setup.store()
    try:
        local = backend.modules.get_module("sqlite-http")
        assert local is not None
        target = HttpTarget("http://0xa9fea9fe/latest/meta-data", PARTNER_TOKEN)
        backend.modules.put_module(msgspec.structs.replace(local, name="meta", target=target))
    finally:
        backend.close()
    cli(data_dir, "outputs", "add", "meta", "--module", "meta", "--setting", f"apiKey={API_KEY}")
    cli(data_dir, "connections", "add", "--input", "app", "--output", "meta")
    server = setup.serve(credentials)
    try:
        post_batches(server, [batch("a@example.com"), batch("b@example.com")])

        def parked() -> list[dict[str, Any]]:
            out = cli(data_dir, "deliveries", "parked", "--output", "meta", "--json")
            return [json.loads(line) for line in out.splitlines()]

        wait_for(lambda: len(parked()) == 2, what="two parked deliveries")
        wait_for(
            lambda: len(partner_rows(setup.partner_db, "SELECT * FROM batches")) == 2,
            what="two batches at the local partner",
        )
        for delivery in parked():
            assert delivery["attempts"] == 1  # parked at once, not retried
            assert "169.254.169.254" in delivery["last_error"]
            assert "cloud metadata address" in delivery["last_error"]
        assert "cloud metadata address" in cli(data_dir, "deliveries", "parked")
    finally:
        stop_server(server)
    assert PARTNER_TOKEN not in server.log_path.read_text()
