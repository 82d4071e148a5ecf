"""The HTTP APIs on a full store (SQLite's real ``SQLITE_FULL``: :func:`tests.backends.helpers.fill`
caps the server's databases): 503 ``STORAGE_FULL`` with ``Retry-After`` in the one error
shape, nothing stored; once there is room, requests are accepted again and the stages catch up
with everything that was accepted."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from patchbay.backends.abstract import Backend
from patchbay.backends.records import Connection, Output, WebhookDestination
from patchbay.clock import SystemClock
from patchbay.collect.inputs import create_input
from patchbay.partner.lambda_local import BackgroundServer
from patchbay.server import create_app
from patchbay.settings import Settings
from tests.backends.helpers import ALL, fill
from tests.deployments import DEPLOYED

ADMIN = "admin-token-for-tests"


@dataclass
class Running:
    backend: Backend
    server: BackgroundServer
    basic: str

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(
            self.server.url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, head, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, head, raw = exc.code, exc.headers, exc.read()
        text = raw.decode()
        value = json.loads(text) if text.startswith(("{", "[")) else text
        return status, {k.lower(): v for k, v in head.items()}, value

    def events(self, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
        return self.call("POST", path, body, {"Authorization": self.basic})

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
        return self.call(method, path, body, {"Authorization": f"Bearer {ADMIN}"})


@contextmanager
def serving(backend: Backend, data_dir: Path) -> Iterator[Running]:
    """The app over ``backend`` (an input of 10,000 batches/s with a webhook output),
    started; stopping it closes ``backend``."""
    made = create_input(backend.inputs, "backend", "server", 10_000, SystemClock())
    backend.outputs.add_output(Output("hook", WebhookDestination("https://example.com/h"), 0, 0))
    backend.outputs.add_connection(Connection("c1", made.id, "hook", 0))
    settings = Settings(data_dir=data_dir, delivery_process=False, segment_process=False)
    app = create_app(settings, backend=backend, admin_token=ADMIN)
    token = base64.b64encode(f"{made.key}:{made.secret}".encode()).decode()
    with BackgroundServer(app).start() as server:
        yield Running(backend, server, f"Basic {token}")


@pytest.fixture
def running(backend: Backend, tmp_path: Path) -> Iterator[Running]:
    with serving(backend, tmp_path / "data") as started:
        yield started


def batch(pad: int = 0) -> dict[str, Any]:
    return {
        "environment": "production",
        "user_identities": {"customer_id": str(uuid.uuid4())},
        "user_attributes": {"pad": "x" * pad},
        "events": [{"event_type": "custom_event", "data": {"event_name": "play"}}],
    }


def assert_storage_full(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 503
    assert headers["retry-after"] == "30"
    assert headers["content-type"] == "application/json"
    assert [e["code"] for e in body["errors"]] == ["STORAGE_FULL"]
    assert "storage is full" in body["errors"][0]["message"]


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# SQLite's own SQLITE_FULL (a full disk under the data directory): the embedded store's.
@pytest.mark.parametrize("spec", [DEPLOYED[0]], ids=["sqlite"])
def test_a_full_store_answers_503_stores_nothing_and_catches_up(running: Running) -> None:
    backend = running.backend
    for _ in range(3):
        assert running.events("/v2/events", batch())[0] == 202

    fill(backend)
    assert_storage_full(*running.events("/v2/events", batch(pad=100_000)))
    assert_storage_full(*running.events("/v2/bulkevents", [batch(pad=3_000) for _ in range(50)]))
    assert len(backend.log.read(0, None, ALL)) == 3  # nothing of either request
    status, headers, body = running.admin(
        "POST",
        "/admin/v1/outputs",
        {"name": "big", "webhook": "https://example.com/b", "settings": {"token": "x" * 100_000}},
    )
    assert_storage_full(status, headers, body)
    assert body["error"] == body["errors"][0]["message"]  # the admin API's shape
    assert [o.name for o in backend.outputs.list_outputs()] == ["hook"]
    _, _, metrics = running.call("GET", "/metrics")
    assert 'patchbay_rejects_total{reason="storage_full"} 2.0' in metrics

    fill(backend, full=False)
    assert running.events("/v2/bulkevents", [batch(pad=3_000) for _ in range(50)])[0] == 202
    assert running.events("/v2/events", batch(pad=100_000))[0] == 202
    end = backend.log.end(0)
    assert end is not None and end.offset == 54

    def delivered() -> int:
        stats = backend.outbox.stats().get("hook")
        return 0 if stats is None else stats.pending + stats.parked

    wait_for(lambda: backend.state.checkpoint() == {0: end}, "resolve to catch up")
    wait_for(lambda: delivered() == 54, "activate to catch up")
    _, _, metrics = running.call("GET", "/metrics")
    assert "patchbay_resolve_storage_full 0.0" in metrics
    assert "patchbay_activate_storage_full 0.0" in metrics
    assert "patchbay_delivery_storage_full 0.0" in metrics
