"""Profiles built from the official samples; the Profile API and the profiles CLI end to end."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchbay.backends.abstract import Backend
from patchbay.resolve.profile_view import profile_document
from tests.conftest import (
    DATA,
    ApiClientCredentials,
    Server,
    add_api_client,
    add_input,
    run_cli,
    start_server,
    stop_server,
)
from tests.deployments import Deployment
from tests.resolve.harness import World

SAMPLE = DATA / "inbound" / "api-evangelist-mparticle__json-schema_mparticle-eventsapi-sample.json"
MASTER = (
    DATA
    / "inbound"
    / "mParticle-docs__src_pages_developers_server_json-reference_index.md__master-sample.json"
)


def _ids(doc: dict[str, Any], key: str) -> dict[str, str]:
    return {i["type"]: i["value"] for i in doc[key]}


def test_profile_from_the_official_sample(backend: Backend) -> None:
    world = World(backend)
    try:
        mpid = world.send(json.loads(SAMPLE.read_text()))
        doc = profile_document(world.profile(mpid))
    finally:
        world.close()
    assert mpid == -7636538281262557000  # the batch's own mpid is adopted
    assert doc["mpid"] == mpid
    assert _ids(doc, "user_identities") == {"customer_id": "123456"}
    # The all-zero advertising ids are blocked values; the nulls are absent.
    assert _ids(doc, "device_identities") == {
        "ios_advertising_id": "1cc8138f-8aaf-410a-b0b9-6465cfb2af6a",
        "ios_idfv": "0f129dcb-d5b9-450b-9003-a38a7b7e946d",
        "device_application_stamp": "3fb44a79-df2d-446d-acf1-e87eda854ae1",
    }
    assert doc["user_attributes"] == {"Test attribute": "Test value"}
    assert doc["consent_state"]["gdpr"]["location_collection"]["consented"] is True
    assert doc["consent_state"]["gdpr"]["parental"]["consented"] is False
    assert doc["consent_state"]["ccpa"]["data_sale_opt_out"]["consented"] is True
    assert doc["is_opted_out"] is False
    assert doc["inputs"] == ["in-1"]


def test_profile_from_the_master_sample(backend: Backend) -> None:
    world = World(backend)
    try:
        batch = json.loads(MASTER.read_text())
        mpid = world.send(batch)
        doc = profile_document(world.profile(mpid))
    finally:
        world.close()
    assert _ids(doc, "user_identities") == batch["user_identities"]
    assert _ids(doc, "device_identities") == {
        "ios_advertising_id": "613ff528-afd1-4c1b-9628-e6ed25ece9c0",
        "ios_idfv": "8c61383f-2216-4713-8c1c-1cb0a5d7a4cc",
        "push_token": batch["device_info"]["push_token"],
    }
    # deleted_user_attributes names attributes the batch does not set: nothing else changes.
    assert doc["user_attributes"] == batch["user_attributes"]


def test_both_samples_for_one_customer_make_one_profile(backend: Backend) -> None:
    world = World(backend)
    try:
        first = world.send(json.loads(SAMPLE.read_text()))
        again = dict(json.loads(SAMPLE.read_text()))
        del again["mpid"]
        again["user_attributes"] = {"plan": "gold"}
        assert world.send(again) == first  # found by customer_id
        assert world.profile(first).user_attributes == {
            "Test attribute": "Test value",
            "plan": "gold",
        }
    finally:
        world.close()


@pytest.fixture(scope="module")
def resolving_server(
    tmp_path_factory: pytest.TempPathFactory, module_deployment: Deployment
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("profiles") / "data"
    credentials = add_input(data_dir, "profiles-test")
    running = start_server(data_dir)
    running.credentials = credentials
    running.deployment = module_deployment
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def api_client(resolving_server: Server) -> ApiClientCredentials:
    """An API client with the profiles:read scope (made next to the running server)."""
    return add_api_client(resolving_server.data_dir, "profiles-reader")


def _wait_for(server: Server, path: str, auth: str) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        status, _, body = _get(server, path, auth)
        if status != 404 or time.monotonic() > deadline:
            return status, json.loads(body)
        time.sleep(0.05)


def _get(server: Server, path: str, auth: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(server.url + path, headers={"Authorization": auth})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _ask_token(server: Server, client_id: str, secret: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps(
        {
            "client_id": client_id,
            "client_secret": secret,
            "audience": "https://api.mparticle.com",
            "grant_type": "client_credentials",
        }
    ).encode()
    status, _, answer = server.post("/oauth/token", body, auth=None)
    return status, json.loads(answer)


def _token(server: Server, client: ApiClientCredentials) -> str:
    status, token = _ask_token(server, client.client_id, client.client_secret)
    assert status == 200, token
    assert token["token_type"] == "Bearer" and token["expires_in"] == 28800
    return f"Bearer {token['access_token']}"


def test_profile_api_by_mpid_and_by_identity(
    resolving_server: Server, api_client: ApiClientCredentials
) -> None:
    server = resolving_server
    batch = {
        "mpid": 4242,
        "user_identities": {"customerid": "api-1", "email": "api@x.io"},
        "user_attributes": {"tier": "gold"},
    }
    assert server.post("/v2/events", json.dumps(batch).encode())[0] == 202
    bearer = _token(server, api_client)
    status, doc = _wait_for(server, "/userprofile/v1/1/2/3/4242?fields=user_identities", bearer)
    assert status == 200, doc
    assert doc["mpid"] == 4242
    assert _ids(doc, "user_identities") == {"customer_id": "api-1", "email": "api@x.io"}
    assert "user_attributes" not in doc and "device_identities" not in doc

    body = json.dumps(
        {"environment_type": "production", "identity": {"type": "email", "value": "api@x.io"}}
    ).encode()
    status, _, answer = server.post(
        "/userprofile/v1/resolve/1/2/3?fields=user_attributes", body, auth=bearer
    )
    assert status == 200, answer
    assert json.loads(answer)["user_attributes"] == {"tier": "gold"}
    # HTTP Basic with the API client's id and secret works too.
    status, _, _ = _get(server, "/userprofile/v1/1/2/3/4242", api_client.basic)
    assert status == 200


@pytest.mark.parametrize(
    ("path", "auth", "status", "code"),
    [
        ("/userprofile/v1/1/2/3/4242", None, 401, "UNAUTHORIZED"),
        ("/userprofile/v1/1/2/3/4242", "Bearer nope", 401, "UNAUTHORIZED"),
        ("/userprofile/v1/1/2/3/4242", "Basic dTpw", 401, "UNAUTHORIZED"),
        ("/userprofile/v1/1/2/3/4242", "input", 401, "UNAUTHORIZED"),
        ("/userprofile/v1/1/2/3/999999", "default", 404, "NOT_FOUND"),
        ("/userprofile/v1/1/2/3/abc", "default", 400, "BAD_REQUEST"),
        ("/userprofile/v1/1/2/3/99999999999999999999", "default", 400, "BAD_REQUEST"),
        ("/userprofile/v1/1/2/3/4242?fields=passwords", "default", 400, "BAD_REQUEST"),
    ],
)
def test_profile_api_errors(
    resolving_server: Server,
    api_client: ApiClientCredentials,
    path: str,
    auth: str | None,
    status: int,
    code: str,
) -> None:
    headers = {"default": api_client.basic, "input": resolving_server.credentials.basic}
    header = headers.get(auth or "", auth or "")
    got, _, body = _get(resolving_server, path, header)
    assert got == status
    assert json.loads(body)["errors"][0]["code"] == code


def test_oauth_token_refuses_wrong_secret(
    resolving_server: Server, api_client: ApiClientCredentials
) -> None:
    status, answer = _ask_token(resolving_server, api_client.client_id, "wrong")
    assert status == 401 and answer["error"] == "invalid_client"


def test_only_api_clients_read_profiles_and_tokens_follow_their_client(
    data_dir: Path, deployment: Deployment
) -> None:
    """End to end over HTTP: an ios input's key and secret (they ship inside the app) get no
    token and no profile; an API client's do; its token is refused right after
    `api-clients disable`, and after `api-clients rotate`."""
    ios = add_input(data_dir, "ios-app", "ios")
    client = add_api_client(data_dir, "crm")
    server = start_server(data_dir)
    server.credentials = ios
    path = "/userprofile/v1/1/2/3/77"
    try:
        assert server.post("/v2/events", json.dumps({"mpid": 77}).encode())[0] == 202
        status, answer = _ask_token(server, ios.key, ios.secret)
        assert status == 401 and answer["error"] == "invalid_client"
        assert "api-clients add" in answer["error_description"]
        status, _, body = _get(server, path, ios.basic)
        assert status == 401 and json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"

        bearer = _token(server, client)
        assert _wait_for(server, path, bearer)[0] == 200
        assert _get(server, path, client.basic)[0] == 200

        disabled = run_cli("api-clients", "disable", "crm", data_dir=data_dir)
        assert disabled.returncode == 0, disabled.stderr
        status, _, body = _get(server, path, bearer)
        assert status == 401 and "disabled" in json.loads(body)["errors"][0]["message"]
        assert _get(server, path, client.basic)[0] == 401
        assert _ask_token(server, client.client_id, client.client_secret)[0] == 401
        assert run_cli("api-clients", "enable", "crm", data_dir=data_dir).returncode == 0
        assert _get(server, path, bearer)[0] == 200

        rotated = run_cli("api-clients", "rotate", "crm", "--json", data_dir=data_dir)
        assert rotated.returncode == 0, rotated.stderr
        status, _, body = _get(server, path, bearer)
        assert status == 401 and "new secret" in json.loads(body)["errors"][0]["message"]
        assert _ask_token(server, client.client_id, client.client_secret)[0] == 401
        fresh = ApiClientCredentials(client.client_id, json.loads(rotated.stdout)["client_secret"])
        assert _get(server, path, _token(server, fresh))[0] == 200
    finally:
        stop_server(server)


def test_cli_show_find_and_reprocess(data_dir: Path, deployment: Deployment) -> None:
    credentials = add_input(data_dir, "cli")
    server = start_server(data_dir)
    server.credentials = credentials
    try:
        batches = [
            {"user_identities": {"email": f"u{i}@x.io"}, "device_info": {"ios_idfv": f"dev-{i}"}}
            for i in range(5)
        ]
        assert server.post("/v2/bulkevents", json.dumps(batches).encode())[0] == 202
        _wait_until_resolved(data_dir, "u4@x.io")
        # reprocess refuses to run next to the server (in either mode), and says why.
        busy = run_cli("reprocess", data_dir=data_dir)
        assert busy.returncode != 0 and "patchbay serve" in busy.stderr
    finally:
        stop_server(server)
    before = {i: _find(data_dir, f"u{i}@x.io")["mpid"] for i in range(5)}
    shown = run_cli("profiles", "show", str(before[0]), data_dir=data_dir)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["user_identities"][0]["value"] == "u0@x.io"
    by_device = run_cli("profiles", "find", "--ios-idfv", "dev-3", data_dir=data_dir)
    assert json.loads(by_device.stdout)["mpid"] == before[3]

    replay = run_cli("reprocess", "--from", "0", data_dir=data_dir)
    assert replay.returncode == 0, replay.stderr
    assert "resolved 5 batches" in replay.stderr
    assert {i: _find(data_dir, f"u{i}@x.io")["mpid"] for i in range(5)} == before

    missing = run_cli("profiles", "find", "--email", "nobody@x.io", data_dir=data_dir)
    assert missing.returncode == 1 and "no user has email" in missing.stderr
    two = run_cli("profiles", "find", "--email", "a", "--customer-id", "b", data_dir=data_dir)
    assert two.returncode == 2


def _find(data_dir: Path, email: str) -> dict[str, Any]:
    done = run_cli("profiles", "find", "--email", email, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _wait_until_resolved(data_dir: Path, email: str) -> None:
    deadline = time.monotonic() + 20
    while run_cli("profiles", "find", "--email", email, data_dir=data_dir).returncode != 0:
        assert time.monotonic() < deadline, "the resolve stage did not catch up"
        time.sleep(0.1)


# -- audience memberships (the segment stage's, read from the audience store) -------------------


def test_profile_document_lists_audience_memberships() -> None:
    from patchbay.resolve.profile import new_profile

    profile = new_profile(42, 1_700_000_000_000)
    assert profile_document(profile)["audience_memberships"] == []
    doc = profile_document(profile, memberships=[{"audience_id": 3, "audience_name": "gold"}])
    # mParticle's shape; Patchbay's audiences do not expire
    assert doc["audience_memberships"] == [
        {"audience_id": 3, "audience_name": "gold", "expiration_timestamp_ms": None}
    ]
    fields = ("user_attributes",)
    assert "audience_memberships" not in profile_document(profile, fields, [{"x": 1}])


def test_profile_api_and_cli_show_audience_memberships(
    data_dir: Path, deployment: Deployment
) -> None:
    import base64

    from patchbay.api_clients import create_client
    from patchbay.backends.records import SegmentChanges, StateChanges
    from patchbay.clock import SystemClock
    from patchbay.partner.lambda_local import BackgroundServer
    from patchbay.resolve.identities import Identity
    from patchbay.resolve.profile import add_identity, new_profile
    from patchbay.segment.service import AudienceService
    from patchbay.server import create_app

    def audience(name: str) -> dict[str, Any]:
        return {"name": name, "criteria": {"user_attribute": "tier", "op": "exists"}}

    customer = Identity("customer_id", "aud-1")
    backend = deployment.open(data_dir, create=True)
    try:
        profile = new_profile(4242, 1_700_000_000_000)
        add_identity(profile, customer, 1_700_000_000_000)
        backend.state.commit(StateChanges(profiles={4242: profile}, linked={customer: [4242]}), {})
        service = AudienceService(backend, SystemClock())
        gold = service.create(audience("gold"))["id"]
        silver = service.create(audience("silver"))["id"]
        service.create(audience("bronze"))
        backend.audiences.commit(SegmentChanges(joined=[(gold, 4242), (silver, 4242)]))
        client = create_client(backend.api_clients, "app", ["profiles:read"], SystemClock())
    finally:
        backend.close()
    expected = [
        {"audience_id": gold, "audience_name": "gold", "expiration_timestamp_ms": None},
        {"audience_id": silver, "audience_name": "silver", "expiration_timestamp_ms": None},
    ]

    shown = run_cli("profiles", "show", "4242", data_dir=data_dir)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["audience_memberships"] == expected
    found = run_cli("profiles", "find", "--customer-id", "aud-1", data_dir=data_dir)
    assert json.loads(found.stdout)["audience_memberships"] == expected

    secret = f"{client.client_id}:{client.client_secret}".encode()
    basic = "Basic " + base64.b64encode(secret).decode()
    app = create_app(deployment.settings(data_dir, delivery_process=False))
    with BackgroundServer(app).start() as server:
        status, _, body = _get(server, "/userprofile/v1/1/2/3/4242", basic)  # type: ignore[arg-type]
        assert status == 200 and json.loads(body)["audience_memberships"] == expected
        request = urllib.request.Request(
            server.url + "/userprofile/v1/resolve/1/2/3?fields=audience_memberships",
            data=json.dumps({"identity": {"type": "customer_id", "value": "aud-1"}}).encode(),
            headers={"Authorization": basic, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            doc = json.loads(response.read())
        assert doc["audience_memberships"] == expected and "user_attributes" not in doc
