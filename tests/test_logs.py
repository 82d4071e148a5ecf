"""The logs of a real ``patchbay serve`` and of the commands: every line is one JSON object
(uvicorn's and tracebacks included), each change to the configuration is one
``config_changed`` line without a secret, each admin request one ``admin_request`` line, and
the throughput summary counts what every stage did."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, add_input, run_cli, start_server, stop_server

#: ``patchbay serve`` with a bug: ``/metrics`` raises, so uvicorn logs a traceback.
BROKEN_METRICS = (
    "-cimport patchbay.cli, patchbay.metrics\n"
    "def render(self):\n"
    "    raise RuntimeError('the metrics broke')\n"
    "patchbay.metrics.Metrics.render = render\n"
    "patchbay.cli.main(prog_name='patchbay')\n"
)
BATCHES = 5

pytestmark = pytest.mark.slow


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON (each must be an object with the common fields)."""
    found = []
    for line in text.splitlines():
        document = json.loads(line)
        assert isinstance(document, dict), line
        assert {"event", "level", "logger", "pid", "timestamp"} <= set(document), line
        found.append(document)
    return found


def changes(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == "config_changed"]


def cli(*args: str, data_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """Run a command that must succeed; its stdout and its log lines."""
    done = run_cli(*args, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    return done.stdout, json_lines(done.stderr)


def test_a_cli_change_is_one_line_without_secrets(data_dir: Path) -> None:
    out, logged = cli("inputs", "add", "web", "--type", "server", "--json", data_dir=data_dir)
    secret = json.loads(out)["secret"]
    [line] = changes(logged)
    assert line["object"] == "input" and line["name"] == "web" and line["change"] == "create"
    assert line["via"] == "cli" and line["level"] == "info"
    assert line["type"] == "server" and line["id"] == json.loads(out)["id"]

    out, logged = cli("inputs", "rotate", "web", "--json", data_dir=data_dir)
    new = json.loads(out)
    [line] = changes(logged)
    assert (line["object"], line["name"], line["change"]) == ("input", "web", "rotate")
    out, logged = cli("inputs", "disable-key", new["key"], data_dir=data_dir)
    [line] = changes(logged)
    assert line["change"] == "disable_key" and line["key_prefix"] == new["key"][:4] + "..."

    out, more = cli(
        "api-clients", "add", "bi", "--scope", "profiles:read", "--json", data_dir=data_dir
    )
    client_secret = json.loads(out)["client_secret"]
    [line] = changes(more)
    assert (line["object"], line["name"], line["change"]) == ("api_client", "bi", "create")

    _, added = cli("outputs", "add", "out", "--file", "out.jsonl", data_dir=data_dir)
    [line] = changes(added)
    assert line == {
        "object": "output",
        "name": "out",
        "change": "create",
        "output_kind": "file",
        "event": "config_changed",
        "via": "cli",
        "level": "info",
        "logger": "patchbay.config",
        "pid": line["pid"],
        "timestamp": line["timestamp"],
    }
    every = json.dumps([logged, more, added])
    for hidden in (secret, new["secret"], new["key"], client_secret):
        assert hidden not in every


def post_batches(server: Server) -> None:
    batches = [
        {
            "environment": "production",
            "user_identities": {"customer_id": f"user-{i}"},
            "events": [
                {
                    "event_type": "custom_event",
                    "data": {"event_name": "e", "custom_event_type": "other"},
                }
            ],
        }
        for i in range(BATCHES)
    ]
    status, _, answer = server.post("/v2/bulkevents", json.dumps(batches).encode())
    assert status == 202, answer


def summed(lines: list[dict[str, Any]], stage: str, field: str) -> int:
    return sum(
        line[field] for line in lines if line["event"] == "throughput" and line["stage"] == stage
    )


def test_serve_logs_only_json_lines(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "admin-" + secrets.token_hex(16)
    monkeypatch.setenv("PATCHBAY_ADMIN_TOKEN", token)
    credentials = add_input(data_dir, "web")
    cli("outputs", "add", "out", "--file", "out.jsonl", data_dir=data_dir)
    server = start_server(data_dir, "--log-summary-interval", "0.2", main=BROKEN_METRICS)
    server.credentials = credentials
    try:
        body = json.dumps({"input": "web", "output": "out"}).encode()
        status, _, answer = server.post("/admin/v1/connections", body, auth=f"Bearer {token}")
        assert status == 201, answer
        post_batches(server)
        assert server.post("/v2/events", b"{}", auth=None)[0] == 401
        assert server.get("/metrics")[0] == 500
        deadline = time.monotonic() + 30
        while True:  # until every stage's summary counted the batches
            lines = json_lines(server.log_path.read_text())
            stages = ("resolve", "activate", "segment")
            if all(summed(lines, s, "batches") == BATCHES for s in stages) and (
                summed(lines, "delivery", "sent") == BATCHES
            ):
                break
            assert time.monotonic() < deadline, "the summary never counted the batches"
            time.sleep(0.1)
    finally:
        stop_server(server)
    text = server.log_path.read_text()
    lines = json_lines(text)  # every line, to the last one
    events = [line["event"] for line in lines]
    assert events[0].startswith("Started server process")
    assert any(e.startswith("Uvicorn running on http://127.0.0.1:") for e in events)
    assert "Finished server process" in events[-1]
    [error] = [line for line in lines if line["event"] == "Exception in ASGI application"]
    assert error["logger"] == "uvicorn.error" and error["level"] == "error"
    assert "RuntimeError: the metrics broke" in error["exception"]

    [line] = changes(lines)
    assert line["object"] == "connection" and line["change"] == "create"
    assert (line["input"], line["output"]) == ("web", "out")
    assert line["via"] == "admin_api" and line["source"] == "127.0.0.1"
    [request] = [line for line in lines if line["event"] == "admin_request"]
    assert request["action"] == "add_connection" and request["method"] == "POST"
    assert request["status"] == 201 and request["source"] == "127.0.0.1"
    assert token not in text and credentials.secret not in text

    assert summed(lines, "collect", "requests_accepted") == 1
    assert summed(lines, "collect", "requests_refused") == 1
    assert summed(lines, "collect", "batches_accepted") == BATCHES
    assert summed(lines, "collect", "events_accepted") == BATCHES
    assert summed(lines, "delivery", "failed") == 0
    delivered = [
        line["outputs"]["out"]["sent"]
        for line in lines
        if line["event"] == "throughput" and line["stage"] == "delivery" and line["outputs"]
    ]
    assert sum(delivered) == BATCHES
