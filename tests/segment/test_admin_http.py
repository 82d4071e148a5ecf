"""The audience routes of the admin HTTP API: the admin token, every route, and errors in
the admin API's shape. Served by uvicorn in a thread over the test's backend, and once
through ``create_app`` (the routes mounted before the admin API's catch-all 404)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from patchbay.activate.admin_http import AdminApi
from patchbay.activate.service import ActivateService
from patchbay.backends.abstract import Backend
from patchbay.backends.records import SegmentChanges
from patchbay.clock import ManualClock
from patchbay.config import settings_from_process
from patchbay.firehose import AudienceSubscriptionRequest, parse
from patchbay.http import EXCEPTION_HANDLERS
from patchbay.partner.lambda_local import BackgroundServer
from patchbay.segment.admin_http import AudienceAdminApi
from patchbay.segment.service import AudienceService
from patchbay.server import create_app
from tests.deployments import Deployment, Stores
from tests.segment.audience_setup import NOW, SECRET, definition, setup_outputs

TOKEN = "admin-token-audiences"
PREFIX = "/admin/v1/audiences"


class Client:
    def __init__(self, url: str) -> None:
        self.url = url

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
                status, answer_headers = response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            status, answer_headers = exc.code, dict(exc.headers)
        return status, {k.lower(): v for k, v in answer_headers.items()}, json.loads(text)

    def call(self, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        got, _, answer = self.request(method, path, body, **kw)
        assert got == status, answer
        return answer


def app_over(backend: Backend, token: str | None) -> Starlette:
    clock = ManualClock(NOW)
    admin = AdminApi(ActivateService(backend, clock), token)
    audiences = AudienceAdminApi(AudienceService(backend, clock), admin)
    return Starlette(
        routes=[*audiences.routes(), *admin.routes()], exception_handlers=EXCEPTION_HANDLERS
    )


@pytest.fixture
def backend(stores: Stores) -> Backend:
    """The test's backend, with the outputs of :func:`setup_outputs`."""
    opened = stores.open()
    setup_outputs(opened)
    return opened


@pytest.fixture
def client(backend: Backend) -> Iterator[Client]:
    with BackgroundServer(app_over(backend, TOKEN)).start() as server:
        yield Client(server.url)


def requests_for(backend: Backend, output: str) -> list[AudienceSubscriptionRequest]:
    found = []
    for delivery in backend.outbox.due(output, NOW + 10**9, 100):
        message = parse(delivery.payload)
        assert isinstance(message, AudienceSubscriptionRequest)
        found.append(message)
    backend.outbox.succeeded_many([str(m.id) for m in found])
    return found


ROUTES = [
    ("GET", PREFIX),
    ("POST", PREFIX),
    ("GET", f"{PREFIX}/gold"),
    ("PUT", f"{PREFIX}/gold"),
    ("DELETE", f"{PREFIX}/gold"),
    ("GET", f"{PREFIX}/gold/members"),
    ("POST", f"{PREFIX}/gold/connections"),
    ("DELETE", f"{PREFIX}/gold/connections/crm"),
]


@pytest.mark.parametrize("token", [None, "wrong"])
def test_every_route_requires_the_token(client: Client, token: str | None) -> None:
    for method, path in ROUTES:
        status, headers, answer = client.request(method, path, {}, token=token)
        assert status == 401, (method, path)
        assert headers["www-authenticate"].startswith("Bearer")
        assert answer["errors"][0]["code"] == "UNAUTHORIZED"


def test_disabled_without_a_token(backend: Backend) -> None:
    with BackgroundServer(app_over(backend, None)).start() as server:
        status, _, answer = Client(server.url).request("GET", PREFIX)
    assert status == 404 and "--admin-token" in answer["error"]


def test_audiences_over_http(client: Client, backend: Backend) -> None:
    created = client.call("POST", PREFIX, definition("gold", description="Gold"), 201)
    assert created["name"] == "gold" and created["status"] == "building"
    yaml_text = "name: silver\ncriteria: {user_attribute: tier, op: eq, value: silver}\n"
    created_yaml = client.call(
        "POST", PREFIX, raw=yaml_text.encode(), content_type="application/yaml", status=201
    )
    assert created_yaml["name"] == "silver"
    assert [a["name"] for a in client.call("GET", PREFIX)] == ["gold", "silver"]
    shown = client.call("GET", f"{PREFIX}/gold")
    assert shown["definition"]["criteria"]["all"][0]["user_attribute"] == "tier"

    updated = client.call("PUT", f"{PREFIX}/gold", definition("gold", tier="x"))
    assert updated["version"] == 2

    backend.audiences.commit(SegmentChanges(joined=[(created["id"], m) for m in (1, 2, 3)]))
    page = client.call("GET", f"{PREFIX}/gold/members?limit=2")
    assert page["members"] == [1, 2] and page["next"] == 2
    page = client.call("GET", f"{PREFIX}/gold/members?after=2&limit=2")
    assert page["members"] == [3] and page["next"] is None

    connection = client.call(
        "POST",
        f"{PREFIX}/gold/connections",
        {"output": "crm", "settings": {"token": SECRET}, "attributes": ["tier"]},
        201,
    )
    assert connection["action"] == "add" and connection["settings"]["token"] == "***"
    [added] = requests_for(backend, "crm")
    assert added.action == "add" and added.audience_subscription_settings["token"] == SECRET
    again = client.call(
        "POST", f"{PREFIX}/gold/connections", {"output": "crm", "settings": {"ttlDays": "9"}}
    )
    assert again["action"] == "update" and again["attributes"] == []
    [updated_request] = requests_for(backend, "crm")
    assert updated_request.previous_audience_subscription_settings["token"] == SECRET
    assert SECRET not in json.dumps(client.call("GET", f"{PREFIX}/gold"))

    removed = client.call("DELETE", f"{PREFIX}/gold/connections/crm")
    assert removed["removed"] is True
    assert [r.action for r in requests_for(backend, "crm")] == ["remove"]
    client.call("POST", f"{PREFIX}/gold/connections", {"output": "crm"}, 201)
    requests_for(backend, "crm")
    deleted = client.call("DELETE", f"{PREFIX}/gold")
    assert deleted["deleted"] is True and deleted["disconnected"] == ["crm"]
    assert [r.action for r in requests_for(backend, "crm")] == ["remove"]
    assert [a["name"] for a in client.call("GET", PREFIX)] == ["silver"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", f"{PREFIX}/nope", None, 404, "no audience named 'nope'"),
        ("PUT", f"{PREFIX}/nope", definition("nope"), 404, "no audience named 'nope'"),
        ("DELETE", f"{PREFIX}/nope", None, 404, "no audience named 'nope'"),
        ("GET", f"{PREFIX}/nope/members", None, 404, "no audience named 'nope'"),
        ("GET", f"{PREFIX}/gold/members?limit=x", None, 400, "integers"),
        ("GET", f"{PREFIX}/gold/members?limit=0", None, 400, "limit must be between"),
        ("POST", PREFIX, definition("gold"), 400, "already exists"),
        ("POST", PREFIX, definition("vip", "nobody"), 400, "unknown audience 'nobody'"),
        ("POST", PREFIX, {"name": "x"}, 400, "criteria"),
        ("POST", PREFIX, [1], 400, "must be a JSON object"),
        ("PUT", f"{PREFIX}/gold", definition("gold", "gold"), 400, "cycle"),
        ("POST", f"{PREFIX}/gold/connections", {"output": "zz"}, 404, "no output named 'zz'"),
        ("POST", f"{PREFIX}/gold/connections", {"output": "hook"}, 400, "webhook output"),
        ("POST", f"{PREFIX}/gold/connections", {"output": "lines"}, 400, "file output"),
        ("POST", f"{PREFIX}/gold/connections", {"output": "events-out"}, 400,
         "does not process audiences"),
        ("POST", f"{PREFIX}/gold/connections", {"output": "crm", "settings": {"x": "1"}}, 400,
         "unknown audience subscription setting 'x'"),
        ("POST", f"{PREFIX}/gold/connections", {"output": "crm2", "attributes": ["a"]}, 400,
         "allow_audience_user_attributes"),
        ("POST", f"{PREFIX}/gold/connections", {"output": "crm", "bogus": 1}, 400,
         "invalid body"),
        ("DELETE", f"{PREFIX}/gold/connections/crm", None, 404, "not connected"),
        ("PATCH", f"{PREFIX}/gold", {}, 404, "no admin route"),
        ("GET", f"{PREFIX}/gold/nothing", None, 404, "no admin route"),
    ],
)  # fmt: skip
def test_errors(
    client: Client, method: str, path: str, body: Any, status: int, message: str
) -> None:
    client.call("POST", PREFIX, definition("gold"), 201)
    got, _, answer = client.request(method, path, body)
    assert got == status, answer
    assert message in answer["error"]
    assert answer["errors"][0]["message"] == answer["error"]


def test_a_body_that_is_not_json(client: Client) -> None:
    got, _, answer = client.request("POST", PREFIX, raw=b"{nope")
    assert got == 400 and "not JSON" in answer["error"]


def test_a_repeated_key_is_400_and_changes_nothing(client: Client) -> None:
    client.call("POST", PREFIX, definition("gold"), 201)
    before = client.call("GET", f"{PREFIX}/gold")
    document = json.dumps(definition("silver"))
    repeated = document[:-1] + ', "name": "bronze"}'
    for method, path, body, where in (
        ("POST", PREFIX, repeated, "name"),
        (
            "PUT",
            f"{PREFIX}/gold",
            json.dumps(definition("gold"))[:-1] + ', "name": "gold"}',
            "name",
        ),
        ("POST", f"{PREFIX}/gold/connections", '{"output": "crm", "output": "crm2"}', "output"),
    ):
        got, _, answer = client.request(method, path, raw=body.encode())
        assert got == 400, answer
        assert answer["error"] == f"{where}: duplicate key"
    assert [a["name"] for a in client.call("GET", PREFIX)] == ["gold"]
    assert client.call("GET", f"{PREFIX}/gold") == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_of_another_type_is_415(client: Client, content_type: str) -> None:
    """JSON, or YAML by its Content-Type; nothing else."""
    for path in (PREFIX, f"{PREFIX}/gold/connections"):
        got, _, answer = client.request(
            "POST", path, definition("silver"), content_type=content_type
        )
        assert got == 415, answer
        assert answer["errors"][0]["code"] == "UNSUPPORTED_MEDIA_TYPE"
        accepted = "application/json or application/yaml" if path == PREFIX else "application/json"
        assert answer["error"].startswith(
            f"$: unsupported Content-Type {content_type!r}: send {accepted}"
        )
    assert client.call("GET", PREFIX) == []


def test_mounted_by_create_app(data_dir: Path, deployment: Deployment) -> None:
    settings = settings_from_process({"data_dir": data_dir, "delivery_process": False})
    app = create_app(settings, admin_token=TOKEN)
    with BackgroundServer(app).start() as server:
        client = Client(server.url)
        client.call("POST", PREFIX, definition("gold"), 201)
        assert [a["name"] for a in client.call("GET", PREFIX)] == ["gold"]
        assert client.call("GET", "/admin/v1/outputs") == []
        status, _, answer = client.request("GET", "/admin/v1/elsewhere")
        assert status == 404 and "no admin route" in answer["error"]
