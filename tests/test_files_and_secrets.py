"""End to end: what ``patchbay serve`` and the commands leave on disk is owner-only, a data
directory others can access is refused, the partner credentials are encrypted at rest yet
reach the partners, ``/metrics`` can require a token, the admin token can come from a
file, and every failed authentication is logged once, with the address, without the
secret."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.sqlite_partner.http import build_app
from patchbay.partner.lambda_local import BackgroundServer
from tests.activate.test_deliveries_e2e import partner_rows
from tests.activate.test_engine_support import wait_for
from tests.conftest import Server, add_input, run_cli, start_server, stop_server

pytestmark = pytest.mark.slow

MODULE_TOKEN = "module-token-4f1d9c2e7a"
WEBHOOK_TOKEN = "webhook-token-8b3e6f0d1c"
ADMIN_TOKEN = "admin-token-5a7c9e1b3d"
METRICS_TOKEN = "metrics-token-2d4f6a8c0e"


class Recorder:
    """A webhook receiver (ASGI) that keeps the ``Authorization`` header of each request."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                done = message["type"].replace("startup", "startup.complete")
                done = done.replace("shutdown", "shutdown.complete")
                await send({"type": done})
                if message["type"] == "lifespan.shutdown":
                    return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = dict(scope["headers"])
        with self._lock:
            self.authorizations.append(headers.get(b"authorization", b"").decode())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def cli(data_dir: Path, *args: str) -> str:
    done = run_cli(*args, data_dir=data_dir)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def modes(directory: Path) -> dict[str, int]:
    """The modes of the files in ``directory`` (its directories, such as the outputs
    directory, are expected 0700 and shown as 0600 when they are)."""
    return {
        p.name: stat.S_IMODE(p.stat().st_mode) & (0o666 if p.is_dir() else 0o777)
        for p in directory.iterdir()
    }


def request(
    url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    sent = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(sent, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def partners(tmp_path: Path) -> Iterator[tuple[BackgroundServer, Path, Recorder, BackgroundServer]]:
    partner_db = tmp_path / "partner.db"
    partner = BackgroundServer(build_app(str(partner_db), MODULE_TOKEN)).start()
    recorder = Recorder()
    hook = BackgroundServer(recorder).start()
    try:
        yield partner, partner_db, recorder, hook
    finally:
        partner.stop()
        hook.stop()


def test_files_are_owner_only_and_tokens_encrypted_yet_delivered(
    tmp_path: Path,
    data_dir: Path,
    partners: tuple[BackgroundServer, Path, Recorder, BackgroundServer],
) -> None:
    partner, partner_db, recorder, hook = partners
    lines = data_dir / "outputs" / "lines.jsonl"  # file outputs stay in outputs_dir
    credentials = add_input(data_dir, "app")
    url = f"{partner.url}/firehose"
    cli(data_dir, "modules", "register", "demo", "--url", url, "--token", MODULE_TOKEN)
    cli(data_dir, "outputs", "add", "mod", "--module", "demo", "--setting", "apiKey=K")
    cli(data_dir, "outputs", "add", "hook", "--webhook", f"{hook.url}/in",
        "--setting", f"token={WEBHOOK_TOKEN}")  # fmt: skip
    cli(data_dir, "outputs", "add", "lines", "--file", str(lines))
    for output in ("mod", "hook", "lines"):
        cli(data_dir, "connections", "add", "--input", "app", "--output", output)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert all(mode == 0o600 for mode in modes(data_dir).values()), modes(data_dir)

    server = start_server(data_dir)
    server.credentials = credentials
    try:
        event = {"event_name": "Play", "custom_event_type": "other"}
        batch = {
            "environment": "production",
            "user_identities": {"email": "a@example.com"},
            "events": [{"event_type": "custom_event", "data": event}],
        }
        status, _, body = server.post("/v2/bulkevents", json.dumps([batch]).encode())
        assert status == 202, body
        wait_for(lambda: len(partner_rows(partner_db, "SELECT * FROM batches")) == 1,
                 what="the batch at the module's partner (which checks its token)")  # fmt: skip
        wait_for(lambda: len(recorder.authorizations) == 1, what="the batch at the webhook")
        wait_for(lambda: lines.exists(), what="the file output")
        running = modes(data_dir)  # with the -wal and -shm files of every database
    finally:
        stop_server(server)
    assert recorder.authorizations == [f"Bearer {WEBHOOK_TOKEN}"]
    assert any(name.endswith("-wal") for name in running)
    assert all(mode == 0o600 for mode in running.values()), running
    assert all(mode == 0o600 for mode in modes(data_dir).values()), modes(data_dir)
    assert stat.S_IMODE(lines.stat().st_mode) == 0o600
    assert stat.S_IMODE(lines.parent.stat().st_mode) == 0o700

    stored = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file())
    assert MODULE_TOKEN.encode() not in stored
    assert WEBHOOK_TOKEN.encode() not in stored
    shown = "".join(
        cli(data_dir, *args)
        for args in (
            ("modules", "list"),
            ("modules", "show", "demo"),
            ("outputs", "list"),
            ("outputs", "show", "hook"),
            ("connections", "list"),
        )
    )
    assert MODULE_TOKEN not in shown and WEBHOOK_TOKEN not in shown
    assert MODULE_TOKEN not in server.log_path.read_text()
    assert WEBHOOK_TOKEN not in server.log_path.read_text()


def test_a_data_dir_others_can_access_is_refused(data_dir: Path, tmp_path: Path) -> None:
    def refused(where: Path, *args: str) -> None:
        done = run_cli(*args, data_dir=where)
        assert done.returncode == 1
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith(f"Error: data directory {where} has mode 0755"), line
        assert line.endswith(f"run: chmod 700 {where}"), line

    add_input(data_dir, "app")
    data_dir.chmod(0o755)
    before = sorted(p.name for p in data_dir.iterdir())
    refused(data_dir, "inputs", "list")
    refused(data_dir, "serve", "--port", "0")
    assert sorted(p.name for p in data_dir.iterdir()) == before  # nothing was created
    data_dir.chmod(0o700)
    cli(data_dir, "inputs", "list")
    # a new data dir others can access: even the commands that create a store refuse it
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    empty.chmod(0o755)
    refused(empty, "inputs", "add", "app", "--type", "server")
    assert list(empty.iterdir()) == []


def test_files_of_an_earlier_version_are_made_owner_only(data_dir: Path) -> None:
    add_input(data_dir, "app")
    for path in data_dir.iterdir():
        path.chmod(0o644)
    cli(data_dir, "inputs", "list")
    assert all(mode == 0o600 for mode in modes(data_dir).values()), modes(data_dir)


@pytest.fixture
def guarded(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A server whose admin token is in a file and whose /metrics needs a token."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    token_file.chmod(0o600)
    monkeypatch.setenv("PATCHBAY_METRICS_TOKEN", METRICS_TOKEN)
    credentials = add_input(data_dir, "app")
    server = start_server(data_dir, "--admin-token-file", str(token_file))
    server.credentials = credentials
    yield server
    stop_server(server)


def auth_failures(server: Server) -> list[dict[str, Any]]:
    lines = server.log_path.read_text().splitlines()
    found = [json.loads(line) for line in lines if '"auth_failed"' in line]
    return [f for f in found if f.get("event") == "auth_failed"]


def test_metrics_and_admin_tokens_and_failed_auth_logs(guarded: Server) -> None:
    server = guarded
    key, secret = server.credentials.key, server.credentials.secret
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    # /metrics: a 401 in the error shape without the token, the metrics with it
    status, body = request(server.url + "/metrics")
    assert status == 401
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert request(server.url + "/metrics", {"Authorization": "Bearer nope"})[0] == 401
    status, body = request(server.url + "/metrics", bearer)
    assert status == 200 and b"patchbay_" in body
    # the admin token read from its file
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert request(server.url + "/admin/v1/outputs", admin)[0] == 200
    assert request(server.url + "/admin/v1/outputs", bearer)[0] == 401

    wrong = base64.b64encode(f"{key}:wrong-{secret}".encode()).decode()
    json_headers = {"Content-Type": "application/json"}
    failures = [
        ("events", 403, server.url + "/v2/events", {"Authorization": f"Basic {wrong}"}, b"{}"),
        ("events", 401, server.url + "/v2/events", {}, b"{}"),
        ("idsync", 403, server.url + "/v1/identify", {"Authorization": f"Basic {wrong}"}, b"{}"),
        ("profile", 401, server.url + "/oauth/token", json_headers,
         json.dumps({"client_id": key, "client_secret": f"wrong-{secret}",
                     "grant_type": "client_credentials"}).encode()),
        ("profile", 401, server.url + "/userprofile/v1/1/2/3/4", {"Authorization": "Bearer x"},
         None),
    ]  # fmt: skip
    for _api, expected, url, headers, body_sent in failures:
        status, answer = request(url, {**json_headers, **headers}, body_sent)
        assert status == expected, (url, answer)
        document = json.loads(answer)  # the API's error shape; the token endpoint's is RFC 6749's
        assert document["errors"][0]["message"] if "errors" in document else document["error"]

    logged = auth_failures(server)
    apis = [f["api"] for f in logged]
    # once per failure: 2 on /metrics, 1 on the admin API, then the five above
    assert apis == ["metrics", "metrics", "admin", *(f[0] for f in failures)], logged
    assert all(f["source"] == "127.0.0.1" and f["reason"] for f in logged), logged
    with_key = [f for f in logged if f["key_prefix"]]
    assert with_key and all(f["key_prefix"] == key[:4] + "..." for f in with_key)
    log_text = server.log_path.read_text()
    for secret_value in (secret, ADMIN_TOKEN, METRICS_TOKEN, key, "wrong-"):
        assert secret_value not in log_text, secret_value


def test_admin_token_file_others_can_read_is_refused(tmp_path: Path, data_dir: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN)
    token_file.chmod(0o644)
    done = run_cli("serve", "--admin-token-file", str(token_file), data_dir=data_dir)
    assert done.returncode == 2
    assert f"run: chmod 600 {token_file}" in done.stderr
    assert ADMIN_TOKEN not in done.stderr
    assert os.environ.get("PATCHBAY_ADMIN_TOKEN") is None
