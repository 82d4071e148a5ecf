"""The Web SDK's uploads (``POST /webevents/v3/JS/{key}/events``) against a real
``patchbay serve``: a batch in the SDK's shape is stored once as an Events API batch, a resend
is not stored again, a beacon is taken, a key that is not a web input's is a 401, a body that
cannot be stored a 422 (never the 400 the SDK would send again for ever), counted; every
answer carries CORS. One server per module and deployment, as in ``test_bad_input``."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from patchbay.backends.records import StoredBatch
from patchbay.collect.batch import Batch
from patchbay.collect.events import event_type_of
from tests.conftest import Credentials, Server, add_input, run_cli, start_server, stop_server
from tests.deployments import Deployment

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent.parent / "data" / "web" / "webevents-v3-batch.json"
TEXT = "text/plain;charset=UTF-8"
ORIGIN = "https://shop.example"
#: A browser's User-Agent, as the SDK's requests carry it.
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0 Safari/537.36"

Answer = tuple[int, dict[str, str], bytes]


class Web:
    """The server and its inputs: a web input, a slow web input, a server input."""

    def __init__(self, server: Server, web: Credentials, slow: Credentials) -> None:
        self.server = server
        self.web = web
        self.slow = slow

    def send(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Answer:
        """One request; status, lower-cased headers and body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            connection.request(
                method, path, body, {k.replace("_", "-"): v for k, v in headers.items()}
            )
            response = connection.getresponse()
            answer = {k.lower(): v for k, v in response.getheaders()}
            return response.status, answer, response.read()
        finally:
            connection.close()

    def upload(self, body: bytes, key: str | None = None, **headers: str) -> Answer:
        """POST ``body`` as the SDK's fetch does (text/plain, an Origin, a browser's UA)."""
        sent = {"Content_Type": TEXT, "Origin": ORIGIN, "User_Agent": BROWSER, **headers}
        return self.send("POST", f"/webevents/v3/JS/{key or self.web.key}/events", body, **sent)

    def stored(self) -> list[StoredBatch]:
        return self.server.stored()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, module_deployment: Deployment) -> Iterator[Web]:
    data_dir = tmp_path_factory.mktemp("web-sdk") / "data"
    credentials = add_input(data_dir, "backend")
    site = add_input(data_dir, "site", "web")
    slow = add_input(data_dir, "slow-site", "web", rate_limit=0.01)
    running = start_server(data_dir)
    running.credentials = credentials
    running.deployment = module_deployment
    yield Web(running, site, slow)
    stop_server(running)


def fixture_batch(**changes: Any) -> dict[str, Any]:
    """The recorded-shape web batch with a fresh ``source_request_id`` (and ``changes``)."""
    batch: dict[str, Any] = json.loads(FIXTURE.read_text())
    return {**batch, "source_request_id": str(uuid.uuid4()).upper(), **changes}


def encoded(batch: dict[str, Any]) -> bytes:
    return json.dumps(batch, separators=(",", ":")).encode()


def new_since(web: Web, before: int) -> list[StoredBatch]:
    return web.stored()[before:]


def rejects(web: Web, reason: str) -> float:
    _, body = web.server.get("/metrics")
    line = f'patchbay_rejects_total{{reason="{reason}"}} '
    for text in body.decode().splitlines():
        if text.startswith(line):
            return float(text.rsplit(" ", 1)[1])
    return 0.0


def error_of(body: bytes) -> tuple[str, str]:
    (error,) = json.loads(body)["errors"]
    return error["code"], error["message"]


def test_a_web_batch_is_stored_once_as_an_events_api_batch(web: Web) -> None:
    """Every event type of the fixture converts; the stamps are the request's."""
    sent = fixture_batch()
    before = len(web.stored())
    status, headers, body = web.upload(encoded(sent))
    assert status == 202, body
    assert json.loads(body) == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert headers["access-control-allow-origin"] == "*"
    (stored,) = new_since(web, before)
    assert stored.input_id == web.web.id
    assert stored.channel == "javascript"
    assert stored.ip == "127.0.0.1"
    assert stored.source_request_id == sent["source_request_id"]
    batch = msgspec.json.decode(stored.body, type=Batch)
    assert [event_type_of(e) for e in batch.events or []] == [
        "session_start",
        "application_state_transition",
        "screen_view",
        "custom_event",
        "user_attribute_change",
        "user_attribute_change",
        "user_identity_change",
        "commerce_event",
    ]
    assert batch.user_id == -6112290151749914210
    assert batch.device_info is not None
    assert batch.device_info.http_header_user_agent == BROWSER
    assert (batch.device_info.platform, batch.device_info.screen_width) == ("web", 1920)
    # everything else as sent, the fields the Events API does not list included
    kept = json.loads(stored.body)
    assert kept["device_info"] == {**sent["device_info"], "http_header_user_agent": BROWSER}
    assert {k: v for k, v in kept.items() if k != "device_info"} == {
        k: v for k, v in sent.items() if k != "device_info"
    }
    assert kept["events"][0]["data"]["active_time_on_site_ms"] == 0
    assert kept["events"][5]["data"]["deleted"] is True


def test_a_resend_is_accepted_and_not_stored_twice(web: Web) -> None:
    """After a 5xx or a CORS failure the SDK sends the same batch, same id, again."""
    body = encoded(fixture_batch())
    before = len(web.stored())
    assert web.upload(body)[0] == 202
    status, _, answer = web.upload(body)
    assert status == 202
    assert json.loads(answer) == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert len(new_since(web, before)) == 1


def test_a_beacon_is_accepted(web: Web) -> None:
    """``navigator.sendBeacon``: a text/plain Blob, ``no-cors``, nothing else to go on."""
    before = len(web.stored())
    status, headers, _ = web.send(
        "POST",
        f"/webevents/v3/JS/{web.web.key}/events",
        encoded(fixture_batch()),
        Content_Type=TEXT,
        Origin=ORIGIN,
        Sec_Fetch_Mode="no-cors",
        Sec_Fetch_Dest="empty",
    )
    assert status == 202
    assert headers["access-control-allow-origin"] == "*"
    (stored,) = new_since(web, before)
    assert msgspec.json.decode(stored.body, type=Batch).device_info is not None


def test_json_content_type_is_accepted_too(web: Web) -> None:
    before = len(web.stored())
    assert web.upload(encoded(fixture_batch()), Content_Type="application/json")[0] == 202
    assert len(new_since(web, before)) == 1


def test_keys_that_are_not_a_web_inputs_are_401(web: Web) -> None:
    """An unknown key, a server input's key, a disabled web input's: 401 (the SDK drops the
    batch), in the error shape, with CORS so that the SDK sees it; nothing stored."""
    data_dir = web.server.data_dir
    gone = add_input(data_dir, f"gone-{uuid.uuid4().hex[:6]}", "web")
    assert run_cli("inputs", "disable", gone.id, data_dir=data_dir).returncode == 0
    before = len(web.stored())
    for key in ("pk_unknown", web.server.credentials.key, gone.key):
        status, headers, body = web.upload(encoded(fixture_batch()), key=key)
        assert status == 401, (key, body)
        assert error_of(body)[0] == "UNAUTHORIZED"
        assert headers["access-control-allow-origin"] == "*"
    assert new_since(web, before) == []


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"{not json", "$"),
        (b"", "$"),
        (b"[" + encoded(fixture_batch()) + b"]", "$"),
        (b'{"events": [{"event_type": "page_flip", "data": {}}]}', "events[0].event_type"),
        (b'{"mpid": "not-a-number"}', "mpid"),
        (b'{"environment": "production", "environment": "development"}', "environment"),
        (
            b'{"events": [{"event_type": "custom_event", "data": {"custom_event_type": 7}}]}',
            "events[0].data.custom_event_type",
        ),
    ],
)
def test_a_batch_that_cannot_be_stored_is_422_with_its_path_and_counted(
    web: Web, body: bytes, path: str
) -> None:
    before = len(web.stored())
    counted = rejects(web, "invalid_batch")
    status, headers, answer = web.upload(body)
    assert status == 422, answer
    code, message = error_of(answer)
    assert code == "UNPROCESSABLE_ENTITY"
    assert message.startswith(f"{path}: "), message
    assert headers["access-control-allow-origin"] == "*"
    assert rejects(web, "invalid_batch") == counted + 1
    assert new_since(web, before) == []
    logged = [json.loads(line) for line in web.server.log_path.read_text().splitlines()]
    assert any(
        line.get("event") == "request_rejected"
        and line.get("status") == 422
        and line.get("error") == message
        for line in logged
    )


def test_gzip_garbage_is_422_and_other_types_415(web: Web) -> None:
    assert web.upload(b"\x1f\x8bnot gzip", Content_Encoding="gzip")[0] == 422
    status, headers, _ = web.upload(encoded(fixture_batch()), Content_Type="multipart/form-data")
    assert status == 415
    assert headers["access-control-allow-origin"] == "*"


def test_the_rate_limit_is_the_inputs(web: Web) -> None:
    """Over the input's limit: 429 with Retry-After (the SDK tries again later)."""
    assert web.upload(encoded(fixture_batch()), key=web.slow.key)[0] == 202
    status, headers, body = web.upload(encoded(fixture_batch()), key=web.slow.key)
    assert status == 429, body
    assert int(headers["retry-after"]) >= 1
    assert headers["access-control-allow-origin"] == "*"
