"""The admin HTTP API: token required (constant-time), disabled without one, and the
outputs/connections/deliveries operations (on each deployment: the embedded store, the
scale-out mode)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from patchbay.config import load_settings
from patchbay.partner.lambda_local import BackgroundServer
from patchbay.server import create_app
from tests.conftest import add_input
from tests.deployments import Deployment

TOKEN = "admin-token-xyz"


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return msgspec.json.decode(self.text)


class Client:
    """A real server (uvicorn in a thread) running ``create_app`` on ``deployment`` (the
    embedded store by default)."""

    def __init__(
        self,
        data_dir: Path,
        token: str | None,
        max_request_bytes: int = 262144,
        deployment: Deployment | None = None,
    ) -> None:
        flags = {
            "data_dir": data_dir,
            "delivery_process": False,
            "max_request_bytes": max_request_bytes,
        }
        settings = load_settings(flags, deployment.env if deployment else {})
        app = create_app(settings, admin_token=token or "")
        self.server = BackgroundServer(app)

    def __enter__(self) -> Client:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def request(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        request = urllib.request.Request(
            self.server.url + path, data=content, headers=headers or {}, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Answer(
                    response.status,
                    {k.lower(): v for k, v in response.headers.items()},
                    response.read().decode(),
                )
        except urllib.error.HTTPError as exc:
            return Answer(
                exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()
            )

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return self.request("GET", path, headers=headers)


@pytest.fixture
def client(data_dir: Path, deployment: Deployment) -> Iterator[Client]:
    add_input(data_dir, "app")
    with Client(data_dir, TOKEN, deployment=deployment) as c:
        yield c


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def json_auth() -> dict[str, str]:
    """The token and a JSON ``Content-Type`` (urllib would declare a form)."""
    return {**auth(), "Content-Type": "application/json"}


def test_bodies_are_bounded_on_every_admin_route(data_dir: Path, deployment: Deployment) -> None:
    """The admin API reads at most ``max_request_bytes`` of a body (it read whole bodies):
    a larger one is a 413, declared or chunked, and changes nothing."""
    add_input(data_dir, "app")
    padding = "x" * 2000
    output = {"name": "hook", "webhook": "http://127.0.0.1:9/", "pad": padding}
    audience = {"name": "a", "criteria": {"environment": "production"}, "pad": padding}
    headers = json_auth()
    with Client(data_dir, TOKEN, max_request_bytes=1000, deployment=deployment) as c:
        for path, document in (("/admin/v1/outputs", output), ("/admin/v1/audiences", audience)):
            body = msgspec.json.encode(document)
            answer = c.request("POST", path, body, headers)
            assert answer.status_code == 413, (path, answer.text)
            assert answer.json()["errors"][0]["code"] == "REQUEST_TOO_LARGE"
            assert "over the limit" in answer.json()["error"]  # the admin API's error shape
            chunked: Any = iter([body[:600], body[600:]])  # no Content-Length: chunked
            answer = c.request("POST", path, chunked, headers)
            assert answer.status_code == 413, (path, answer.text)
        assert c.request("GET", "/admin/v1/outputs", headers=auth()).json() == []
        assert c.request("GET", "/admin/v1/audiences", headers=auth()).json() == []


def test_a_repeated_key_or_a_body_of_another_type_is_refused(client: Client) -> None:
    """A key twice in one object is a 400 naming it, a body declared as anything but JSON
    a 415; neither changes anything."""
    webhook = '{"name": "hook", "webhook": "http://127.0.0.1:9/", "name": "other"}'
    connection = '{"input": "app", "output": "hook", "settings": {"a": "1", "\\u0061": "2"}}'
    for path, body, where in (
        ("/admin/v1/outputs", webhook, "name"),
        ("/admin/v1/connections", connection, "settings.a"),
        ("/admin/v1/deliveries/replay", '{"all": false, "all": true}', "all"),
    ):
        answer = client.request("POST", path, body.encode(), json_auth())
        assert answer.status_code == 400, answer.text
        message = f"{where}: duplicate key"
        assert answer.json() == {
            "errors": [{"code": "BAD_REQUEST", "message": message}],
            "error": message,
        }
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            headers = {**auth(), "Content-Type": content_type}
            answer = client.request("POST", path, body.encode(), headers)
            assert answer.status_code == 415, answer.text
            assert answer.json()["errors"][0]["code"] == "UNSUPPORTED_MEDIA_TYPE"
            assert answer.json()["error"].startswith(
                f"$: unsupported Content-Type '{content_type}'"
            )
    assert client.get("/admin/v1/outputs", headers=auth()).json() == []
    assert client.get("/admin/v1/connections", headers=auth()).json() == []


def test_disabled_without_a_token(data_dir: Path) -> None:
    with Client(data_dir, None) as c:
        answer = c.get("/admin/v1/outputs", headers=auth())
    assert answer.status_code == 404
    assert "disabled" in answer.json()["error"]
    assert "--admin-token" in answer.json()["error"]


def test_every_route_requires_the_token(client: Client) -> None:
    for header in (None, "Bearer wrong", f"Token {TOKEN}", "Bearer"):
        assert_every_route_refused(client, header)


def assert_every_route_refused(client: Client, header: str | None) -> None:
    """Every admin route answers 401 to a request with this ``Authorization`` header."""
    headers = {"Authorization": header} if header else {}
    for method, path in [
        ("GET", "/admin/v1/outputs"),
        ("POST", "/admin/v1/outputs"),
        ("GET", "/admin/v1/outputs/x"),
        ("GET", "/admin/v1/outputs-status"),
        ("GET", "/admin/v1/connections"),
        ("DELETE", "/admin/v1/connections/x"),
        ("GET", "/admin/v1/deliveries/parked"),
        ("POST", "/admin/v1/deliveries/replay"),
        ("GET", "/admin/v1/anything"),
    ]:
        answer = client.request(method, path, headers=headers)
        assert answer.status_code == 401, (header, method, path)
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_outputs_connections_and_deliveries(client: Client, tmp_path: Path) -> None:
    def call(method: str, path: str, body: Any = None, status: int = 200) -> Any:
        content = None if body is None else msgspec.json.encode(body)
        answer = client.request(method, "/admin/v1" + path, content=content, headers=json_auth())
        assert answer.status_code == status, answer.text
        return answer.json()

    created = call(
        "POST",
        "/outputs",
        {"name": "hook", "webhook": "http://127.0.0.1:9/x", "settings": {"token": "s3cr3t"}},
        201,
    )
    assert created["settings"] == {"token": "***"}
    call("POST", "/outputs", {"name": "lines", "file": "x.jsonl"}, 201)
    error = call("POST", "/outputs", {"name": "hook", "file": "y"}, status=400)
    assert "already exists" in error["error"]
    error = call("POST", "/outputs", {"name": "m", "module": "missing"}, status=404)
    assert "no module" in error["error"]
    assert "s3cr3t" not in msgspec.json.encode(call("GET", "/outputs")).decode()
    connection = call(
        "POST",
        "/connections",
        {"input": "app", "output": "hook", "filters": {"event_types": ["custom_event"]}},
        201,
    )
    assert connection["input"] == "app"
    assert connection["filters"]["event_types"] == ["custom_event"]
    assert call("GET", "/outputs/hook")["connections"][0]["id"] == connection["id"]
    assert call("POST", "/outputs/hook/pause")["paused"] is True
    status = {r["name"]: r for r in call("GET", "/outputs-status")}
    assert status["hook"]["state"] == "paused"
    assert call("POST", "/outputs/hook/resume")["paused"] is False
    assert call("GET", "/deliveries/parked") == []
    assert call("POST", "/deliveries/replay", {"all": True}) == {"replayed": 0}
    assert call("DELETE", f"/connections/{connection['id']}") == {"removed": 1}
    call("DELETE", f"/connections/{connection['id']}", status=404)
    call("GET", "/outputs/nope", status=404)
    call("POST", "/connections", {"input": "app", "output": "hook", "bogus": 1}, status=400)


def test_refused_targets_and_paths_and_masked_urls(client: Client) -> None:
    def call(method: str, path: str, body: Any = None, status: int = 200) -> Any:
        content = None if body is None else msgspec.json.encode(body)
        answer = client.request(method, "/admin/v1" + path, content=content, headers=json_auth())
        assert answer.status_code == status, answer.text
        return answer.json()

    for url in ("http://169.254.169.254/latest", "http://0xa9fea9fe/", "http://[fe80::1]/"):
        error = call("POST", "/outputs", {"name": "meta", "webhook": url}, status=400)
        assert error["errors"][0]["code"] == "BAD_REQUEST"
        assert "never sends there" in error["error"]
    error = call(
        "POST",
        "/outputs",
        {"name": "plain", "webhook": "http://hooks.example/x", "settings": {"token": "t0k"}},
        status=400,
    )
    assert "plain http" in error["error"] and "t0k" not in error["error"]
    error = call("POST", "/outputs", {"name": "f", "file": "/etc/passwd"}, status=400)
    assert "outside the outputs directory" in error["error"]
    error = call("POST", "/outputs", {"name": "f", "file": "../patchbay.db"}, status=400)
    assert "outside the outputs directory" in error["error"]
    secret_url = "https://bob:hunter2@hooks.example/x?access_token=abc123&page=1"
    created = call("POST", "/outputs", {"name": "masked", "webhook": secret_url}, 201)
    assert created["url"] == "https://bob:***@hooks.example/x?access_token=***&page=1"
    for shown in (call("GET", "/outputs"), call("GET", "/outputs/masked")):
        text = msgspec.json.encode(shown).decode()
        assert "hunter2" not in text and "abc123" not in text


def test_each_admin_request_and_change_is_one_log_line(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    from patchbay.logs import configure_logging

    configure_logging("debug")
    capsys.readouterr()
    secret = "hook-token-Zq81"
    headers = {**auth(), "Content-Type": "application/json"}
    output = {"name": "hook", "webhook": "http://127.0.0.1:9/", "settings": {"token": secret}}
    calls = [
        ("POST", "/admin/v1/outputs", output, 201),
        ("POST", "/admin/v1/outputs/hook/pause", None, 200),
        ("POST", "/admin/v1/outputs/hook/resume", None, 200),
        ("POST", "/admin/v1/connections", {"input": "app", "output": "hook"}, 201),
        ("GET", "/admin/v1/outputs", None, 200),
        ("POST", "/admin/v1/deliveries/replay", {"all": True}, 200),
    ]
    for method, path, document, status in calls:
        body = msgspec.json.encode(document) if document is not None else None
        assert client.request(method, path, body, headers).status_code == status, path
    [connection] = client.get("/admin/v1/connections", headers=auth()).json()
    gone = client.request("DELETE", f"/admin/v1/connections/{connection['id']}", None, auth())
    assert gone.status_code == 200
    err = capsys.readouterr().err
    assert secret not in err and TOKEN not in err
    lines = [msgspec.json.decode(line) for line in err.splitlines()]
    changes = [line for line in lines if line["event"] == "config_changed"]
    assert [(c["object"], c["name"], c["change"]) for c in changes] == [
        ("output", "hook", "create"),
        ("output", "hook", "pause"),
        ("output", "hook", "resume"),
        ("connection", connection["id"], "create"),
        ("connection", connection["id"], "delete"),
    ]
    assert all(c["via"] == "admin_api" and c["source"] == "127.0.0.1" for c in changes)
    requests = [line for line in lines if line["event"] == "admin_request"]
    assert [(r["action"], r["level"], r["status"]) for r in requests] == [
        ("add_output", "info", 201),
        ("pause", "info", 200),
        ("resume", "info", 200),
        ("add_connection", "info", 201),
        ("list_outputs", "debug", 200),
        ("replay", "info", 200),
        ("list_connections", "debug", 200),
        ("remove_connection", "info", 200),
    ]
    [replayed] = [line for line in lines if line["event"] == "deliveries_replayed"]
    assert replayed["replayed"] == 0
