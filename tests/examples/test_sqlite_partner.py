"""The SQLite example partner (examples/sqlite_partner/), end to end: every example request
sent over HTTP to the ASGI adapter on a real uvicorn server, and through the local Lambda
Invoke API with boto3; then the SQLite file's contents and the responses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import boto3
import pytest

import patchbay.firehose as fh
from examples.sqlite_partner import SqlitePartner
from examples.sqlite_partner.http import build_app
from examples.sqlite_partner.partner import DB_ENV
from patchbay.firehose.serialize import dumps, parse
from patchbay.partner.lambda_local import BackgroundServer, LocalLambda
from tests.conftest import wait_for_port

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "firehose"
TOKEN = "partner-token-42"

#: Every example request: the SDK's, the 2020 platform capture and the worked example.
REQUEST_FILES = sorted(
    [
        *DATA.glob("*Request*.json"),
        *(DATA / "extra").glob("*.json"),
        *(DATA / "derived").glob("*.json"),
    ]
)

RESPONSE_TYPES: dict[str, type[fh.BaseMessage]] = {
    "module_registration_request": fh.ModuleRegistrationResponse,
    "event_processing_request": fh.EventProcessingResponse,
    "audience_subscription_request": fh.AudienceSubscriptionResponse,
    "audience_membership_change_request": fh.AudienceMembershipChangeResponse,
    "dsr_processing_request": fh.DsrProcessingResponse,
}

JANE = "jane.doe@example.com"  # the subject of the SDK's DSR example

pytestmark = pytest.mark.slow


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "partner.db"


@pytest.fixture
def http_url(db_path: Path) -> Iterator[str]:
    with BackgroundServer(build_app(str(db_path), TOKEN)).start() as server:
        yield server.url + "/firehose"


@pytest.fixture
def lambda_client(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """boto3 against the local Lambda server running examples.sqlite_partner.handler."""
    monkeypatch.setenv(DB_ENV, str(db_path))
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    functions = LocalLambda({"sqlite-partner": "examples.sqlite_partner.handler:handler"})
    with functions.serve() as server:
        client = boto3.client(
            "lambda",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        try:
            yield client
        finally:
            client.close()


def post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Token {token}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def invoke(client: Any, body: bytes) -> tuple[dict[str, Any], bytes]:
    response = client.invoke(
        FunctionName="sqlite-partner", InvocationType="RequestResponse", Payload=body
    )
    return response, response["Payload"].read()


def rows(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path)) as db:
        return db.execute(sql, args).fetchall()


def check_answer(path: Path, answer: bytes) -> fh.Message:
    """The answer to the example request in ``path`` has the right type and content."""
    request = parse(path.read_bytes())
    response = parse(answer)
    assert type(response) is RESPONSE_TYPES[request.type], path.name
    assert response.id != request.id
    assert dumps(response) == answer or json.loads(answer) == fh.to_dict(response)
    if isinstance(response, fh.ModuleRegistrationResponse):
        expected = fh.to_dict(SqlitePartner().registration())
        got = fh.to_dict(response)
        for key in ("id", "timestamp_ms"):
            del expected[key], got[key]
        assert got == expected
    if isinstance(response, fh.AudienceSubscriptionResponse):
        assert response.audience_subscription_settings == {"listName": "mp_1234"}
    if isinstance(response, fh.AudienceMembershipChangeResponse):
        assert json.loads(answer)["suspend_subscription"] is False
    return response


def check_database(db_path: Path) -> None:
    """What every example request leaves in the SQLite file."""
    batches = rows(db_path, "SELECT request_id, account_id, runtime, key_fingerprint FROM batches")
    fingerprint = hashlib.sha256(b"sample API Key").hexdigest()[:12]
    assert sorted(batches) == sorted(
        [
            ("b3d9def7-f80a-4650-87b1-04c9fcce6082", 123456, "android", fingerprint),
            ("66062a39-ea83-450e-9d5e-92829b6e565d", 123456, "ios", fingerprint),
            (
                "e93aefa4-6804-44a9-ba4c-8f01403236d6",
                42750,
                "unknown",
                hashlib.sha256(b"redacted").hexdigest()[:12],
            ),
            (
                "0373f056-b662-535a-8d0f-27b64868a644",
                1234,
                "ios",
                hashlib.sha256(b"partner-api-key").hexdigest()[:12],
            ),
        ]
    )
    by_type = dict(rows(db_path, "SELECT event_type, count(*) FROM events GROUP BY event_type"))
    # Only the six registered event types are stored (the worked example also has an
    # application_state_transition, an error, a user_identity_change and others).
    assert set(by_type) <= {
        "session_start",
        "session_end",
        "custom_event",
        "screen_view",
        "product_action",
        "user_attribute_change",
    }
    assert by_type["custom_event"] >= 2 + 5  # the SDK examples, the 2020 capture
    assert by_type["product_action"] >= 2
    custom = rows(
        db_path,
        "SELECT name, latitude, longitude, details FROM events WHERE event_id = ?",
        "f93adf6a-be2c-4dd9-be7a-3bac9a0987ee",
    )
    assert custom == [
        (
            "customEvent",
            47.6062,
            122.3231,
            '{"attributes": {"event_attribute": "value"}, "custom_event_type": "other"}',
        )
    ]
    identities = rows(
        db_path,
        "SELECT kind, type, encoding, value FROM identities WHERE user_key = 'mpid:12345' "
        "AND account_id = 123456",
    )
    assert ("user", "email", "md5", "e179e95c00e7718ab4a23840f992ea63") in identities
    assert ("device", "android_id", "raw", "a0504a8cfa15ce2c") in identities
    assert ("partner", "a_partner_id", "raw", "partnerId") in identities
    consents = rows(
        db_path,
        "SELECT regulation, purpose, consented_before, consented_after FROM consent_changes",
    )
    assert ("gdpr", "consentPurpose", 0, 1) in consents
    assert ("ccpa", "data_sale_opt_out", 0, 1) in consents
    assert rows(db_path, "SELECT * FROM audience_subscriptions") == [
        (
            123456,
            1234,
            "New Users Low Engagement",
            "mp_1234",
            "active",
            "416d2087-8b21-476d-95da-1b78a7f44261",
        )
    ]
    changes = rows(
        db_path,
        "SELECT audience_id, list_name, user_key, action, user_attributes FROM audience_changes",
    )
    assert sorted(changes) == [
        (456, "mp_456", "mpid:12345", "add", "{}"),
        (654, "mp_654", "mpid:12345", "delete", "{}"),
        (
            789,
            "mp_789",
            "mpid:12345",
            "attribute_update",
            '{"Churned": null, "Some Key": "9999999"}',
        ),
    ]
    assert sorted(
        rows(db_path, "SELECT audience_id, user_key, user_attributes FROM audience_members")
    ) == [
        (456, "mpid:12345", "{}"),
        (789, "mpid:12345", '{"Some Key": "9999999"}'),
    ]
    assert rows(db_path, "SELECT * FROM dsr_requests") == [
        (
            "1e2c8cf4-f985-4398-b482-a520860d3bf6",
            "erasure",
            "gdpr",
            "2024-05-01T19:45:44.067235+00:00",
            '["android_advertising_id", "email"]',
            0,
            0,
        )
    ]


def jane_batch() -> bytes:
    """A batch from Jane, with her e-mail hashed as the partner registered it (SHA-256)."""
    request = fh.EventProcessingRequest(
        account=fh.Account(account_id=5, account_settings={"apiKey": "k", "attributeLimit": "1"}),
        user_identities=[
            fh.UserIdentity(
                type="email", encoding="sha256", value=hashlib.sha256(JANE.encode()).hexdigest()
            )
        ],
        runtime_environment=fh.AndroidRuntimeEnvironment(
            identities=[
                fh.DeviceIdentity(type="google_advertising_id", encoding="raw", value="gaid-1")
            ]
        ),
        events=[
            fh.SessionStartEvent(),
            fh.ScreenViewEvent(screen_name="Home", attributes={"a": "1", "b": "2"}),
            fh.UserAttributeChangeEvent(added={"plan": "gold"}),
            fh.SessionEndEvent(session_length_ms=1000),
        ],
    )
    return dumps(request)


# --------------------------------------------------------------------------- HTTP


def test_every_example_request_over_http(http_url: str, db_path: Path) -> None:
    assert len(REQUEST_FILES) == 8
    for path in REQUEST_FILES:
        status, headers, answer = post(http_url, path.read_bytes())
        assert status == 200, (path.name, answer)
        assert headers["content-type"] == "application/json"
        check_answer(path, answer)
    check_database(db_path)


def test_registration_needs_no_token_but_everything_else_does(http_url: str, db_path: Path) -> None:
    status, _, answer = post(http_url, (DATA / "ModuleRegistrationRequest.json").read_bytes(), None)
    assert status == 200
    registration = parse(answer)
    assert isinstance(registration, fh.ModuleRegistrationResponse)
    assert registration.event_processing_registration is not None
    settings = {s.id: s for s in registration.event_processing_registration.account_settings}
    api_key = settings["apiKey"]
    assert isinstance(api_key, fh.TextSetting) and api_key.required and api_key.confidential
    for name in ("EventProcessingRequest_android.json", "DsrProcessingRequest.json"):
        assert post(http_url, (DATA / name).read_bytes(), None)[0] == 401
        assert post(http_url, (DATA / name).read_bytes(), "wrong")[0] == 401
    assert not db_path.exists()  # no hook ran


def test_a_batch_without_the_api_key_is_a_400(http_url: str, db_path: Path) -> None:
    body = json.loads((DATA / "EventProcessingRequest_ios.json").read_bytes())
    del body["account"]["account_settings"]["apiKey"]
    status, _, answer = post(http_url, json.dumps(body).encode())
    assert status == 400
    assert json.loads(answer) == {
        "error": "invalid_settings",
        "message": "The required account setting 'apiKey' (API Key) is missing.",
    }
    body["account"]["account_settings"].update(apiKey="k", attributeLimit="500")
    status, _, answer = post(http_url, json.dumps(body).encode())
    assert status == 400
    assert (
        "'attributeLimit' (Attributes per event) must be at most 100"
        in json.loads(answer)["message"]
    )
    assert rows(db_path, "SELECT count(*) FROM batches") == [(0,)]


def test_verification_requests_leave_no_rows(http_url: str, db_path: Path) -> None:
    status, _, answer = post(http_url, b'{"type": "event_processing_request", "events": []}')
    assert status == 200 and isinstance(parse(answer), fh.EventProcessingResponse)
    status, _, answer = post(http_url, b'{"type": "audience_membership_change_request"}')
    assert status == 200 and isinstance(parse(answer), fh.AudienceMembershipChangeResponse)
    # No hook ran, so the database was never even opened.
    assert not db_path.exists()


def test_settings_shape_what_is_stored_and_a_dsr_erases_the_user(
    http_url: str, db_path: Path
) -> None:
    assert post(http_url, jane_batch())[0] == 200
    assert post(http_url, (DATA / "EventProcessingRequest_android.json").read_bytes())[0] == 200
    events = rows(db_path, "SELECT event_type, name, details FROM events WHERE account_id = 5")
    assert sorted(events) == [
        ("screen_view", "Home", '{"attributes": {"a": "1"}}'),  # attributeLimit = 1
        ("session_end", None, '{"session_length_ms": 1000}'),
        ("session_start", None, "{}"),
        ("user_attribute_change", None, '{"added": {"plan": "gold"}, "removed": {}}'),
    ]
    assert rows(db_path, "SELECT count(*) FROM identities WHERE account_id = 5") == [(2,)]

    status, _, answer = post(http_url, (DATA / "DsrProcessingRequest.json").read_bytes())
    assert status == 200 and isinstance(parse(answer), fh.DsrProcessingResponse)
    for table in ("batches", "events", "identities"):
        assert rows(db_path, f"SELECT count(*) FROM {table} WHERE account_id = 5") == [(0,)]
    # Nobody else's rows are touched.
    assert rows(db_path, "SELECT count(*) FROM events WHERE account_id = 123456") == [(2,)]
    [(users, erased)] = rows(db_path, "SELECT users_found, rows_erased FROM dsr_requests")
    assert users == 1 and erased == 1 + 4 + 2


def test_an_audience_removal_is_recorded(http_url: str, db_path: Path) -> None:
    body = json.loads((DATA / "AudienceSubscriptionRequest.json").read_bytes())
    body["action"] = "remove"
    status, _, answer = post(http_url, json.dumps(body).encode())
    assert status == 200
    response = parse(answer)
    assert isinstance(response, fh.AudienceSubscriptionResponse)
    assert response.audience_subscription_settings == {}
    assert rows(db_path, "SELECT status FROM audience_subscriptions") == [("removed",)]


# --------------------------------------------------------------------------- Lambda


def test_every_example_request_through_lambda(lambda_client: Any, db_path: Path) -> None:
    for path in REQUEST_FILES:
        response, answer = invoke(lambda_client, path.read_bytes())
        assert response["StatusCode"] == 200
        assert "FunctionError" not in response, (path.name, answer)
        check_answer(path, answer)
    check_database(db_path)


def test_a_lambda_error_is_a_function_error(lambda_client: Any, db_path: Path) -> None:
    body = json.loads((DATA / "EventProcessingRequest_android.json").read_bytes())
    body["account"]["account_settings"]["includeUserAttributes"] = "sometimes"
    response, answer = invoke(lambda_client, json.dumps(body).encode())
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(answer)
    assert error["errorType"] == "InvalidSettingsError"
    assert error["errorMessage"] == (
        "The account setting 'includeUserAttributes' (Store user attributes) must be true or "
        "false, got 'sometimes'."
    )
    response, answer = invoke(lambda_client, b'{"type": "event_processing_response"}')
    assert json.loads(answer)["errorType"] == "UnsupportedMessageError"
    assert rows(db_path, "SELECT count(*) FROM batches") == [(0,)]


# --------------------------------------------------------------------------- python -m


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_http_entry_point(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "cli.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.sqlite_partner.http",
            "--port",
            str(port),
            "--token",
            TOKEN,
            "--db",
            str(db),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_port(port, process, "the partner")
        path = DATA / "EventProcessingRequest_ios.json"
        assert post(url, path.read_bytes(), None)[0] == 401
        status, _, answer = post(url, path.read_bytes())
        assert status == 200
        check_answer(path, answer)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert rows(db, "SELECT request_id FROM batches") == [("66062a39-ea83-450e-9d5e-92829b6e565d",)]
