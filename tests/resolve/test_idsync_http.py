"""The IDSync HTTP API against a real ``patchbay serve``.

Identify, search, login, logout, modify and alias through HTTP; the requests built from
mParticle's Swagger file and the Web SDK's bodies; bad input, authentication and CORS; and
durability: what IDSync answered survives a restart and a rebuild of the state from the log.

One server serves most of the module; every test uses identity values of its own (random),
so the tests stay independent of each other. The durability tests run servers of their own.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from patchbay.clock import SystemClock
from patchbay.collect.inputs import create_input
from patchbay.resolve.profile_view import merge_documents, profile_document
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.strategy import IdentityStrategy
from tests.conftest import (
    DATA,
    Credentials,
    Server,
    add_input,
    run_cli,
    start_server,
    stop_server,
)
from tests.deployments import Deployment

pytestmark = pytest.mark.slow

SWAGGER: dict[str, Any] = json.loads((DATA / "idsync" / "identity-swagger.json").read_text())
SWAGGER_IDENTITIES: list[str] = list(SWAGGER["definitions"]["Identities"]["properties"])
DEVICE_NAMES = {
    "ios_idfa",
    "android_aaid",
    "amp_id",
    "android_uuid",
    "ios_idfv",
    "push_token",
    "roku_publisher_id",
    "roku_aid",
    "device_application_stamp",
}
LOGIN_NAMES = {"customerid", "email"}  # the default strategy's unique identity types

T = TypeVar("T")


@dataclass
class Idsync:
    """The module's server: ``server.credentials`` is a server input, ``web`` a web input."""

    server: Server
    web: Credentials


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, module_deployment: Deployment
) -> Iterator[Idsync]:
    data_dir = tmp_path_factory.mktemp("idsync") / "data"
    credentials = add_input(data_dir, "test-server")
    web = add_input(data_dir, "test-web", "web")
    running = start_server(data_dir)
    running.credentials = credentials
    running.deployment = module_deployment
    yield Idsync(running, web)
    stop_server(running)


# --- helpers -------------------------------------------------------------------------------


def uid(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def request_body(**fields: Any) -> dict[str, Any]:
    return {"environment": "development", "request_id": str(uuid.uuid4()), **fields}


def call(
    server: Server,
    path: str,
    payload: Any,
    auth: str | None = "default",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """POST ``payload`` (JSON, or raw bytes); status, lower-cased headers, parsed body."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, answer_headers, answer = server.post(path, raw, headers, auth)
    parsed = json.loads(answer) if answer else None
    return status, {k.lower(): v for k, v in answer_headers.items()}, parsed


def error_of(status: int, headers: dict[str, str], answer: Any) -> tuple[str, str]:
    """The one error of an error answer, checked for the Events API's shape."""
    assert status >= 400
    assert headers["content-type"].startswith("application/json"), headers
    assert list(answer) == ["errors"], answer
    (error,) = answer["errors"]
    assert sorted(error) == ["code", "message"], error
    return str(error["code"]), str(error["message"])


def identify(
    server: Server,
    identities: dict[str, Any],
    path: str = "/v1/identify",
    as_input: Credentials | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Identify with the server input's secret, or with the key alone of ``as_input``."""
    how: dict[str, Any] = {} if as_input is None else key_only(as_input)
    body = request_body(known_identities=identities, **fields)
    status, _, answer = call(server, path, body, **how)
    assert status == 200, answer
    return dict(answer)


def search(server: Server, identities: dict[str, str]) -> str | None:
    """The MPID IDSync's search finds, or ``None`` on its 404."""
    status, headers, answer = call(server, "/v1/search", request_body(known_identities=identities))
    if status == 404:
        assert error_of(status, headers, answer)[0] == "NOT_FOUND"
        return None
    assert status == 200, answer
    assert answer["is_ephemeral"] is False
    return str(answer["mpid"])


def modify(
    server: Server, mpid: str, *changes: tuple[str, str | None, str | None]
) -> tuple[int, Any]:
    payload = request_body(
        identity_changes=[
            {"identity_type": t, "old_value": old, "new_value": new} for t, old, new in changes
        ]
    )
    status, _, answer = call(server, f"/v1/{mpid}/modify", payload)
    return status, answer


def log_size(server: Server) -> int:
    return len(server.stored())


def show_profile(server: Server, mpid: str) -> dict[str, Any]:
    """The profile of ``mpid`` (following merges) and its merges, read from its store."""
    backend = server.open_store()
    try:
        service = ResolveService(backend.state, Resolver(IdentityStrategy()), SystemClock())
        profile = service.profile(int(mpid))
        assert profile is not None, mpid
        doc = profile_document(profile)
        doc["merges"] = merge_documents(service.merges(profile.mpid))
        return doc
    finally:
        backend.close()


def eventually(check: Callable[[], T | None], what: str, timeout_s: float = 30) -> T:
    """Poll ``check`` until it returns something (the resolve stage runs on its own)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def key_only(credentials: Credentials) -> dict[str, Any]:
    """Keyword arguments of :func:`call` for the Web SDK's key-only authentication."""
    return {"auth": None, "headers": {"x-mp-key": credentials.key}}


def sdk_date(offset: timedelta = timedelta(0)) -> str:
    """Now (plus ``offset``) as the mobile SDKs send ``Date``: ISO 8601 basic."""
    return (datetime.now(UTC) + offset).strftime("%Y%m%dT%H%M%SZ")


def signed(
    credentials: Credentials,
    path: str,
    body: bytes,
    date: str | None = None,
    secret: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of :func:`call` for a request signed as the mobile SDKs sign it:
    ``hex(HMAC-SHA256(secret, "POST\n" + date + "\n" + path + body))``."""
    date = date or sdk_date()
    key = (secret or credentials.secret).encode()
    message = f"POST\n{date}\n{path}".encode() + body
    signature = hmac.new(key, message, hashlib.sha256).hexdigest()
    headers = {"x-mp-key": credentials.key, "Date": date, "x-mp-signature": signature}
    return {"auth": None, "headers": headers}


# --- a minimal Swagger 2.0 schema check ------------------------------------------------------


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/definitions/")
        schema = SWAGGER["definitions"][name]
    return schema


def check_schema(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """Assert that ``value`` follows ``schema`` (the keywords the IDSync file uses)."""
    schema = _resolve(schema)
    for part in schema.get("allOf", []):
        check_schema(value, part, path)
    kind = schema.get("type")
    expected: dict[str, Any] = {
        "object": dict,
        "string": str,
        "integer": int,
        "boolean": bool,
        "array": list,
    }
    if kind is not None:
        assert isinstance(value, expected[kind]), f"{path}: {value!r} is not {kind}"
        if kind == "integer":
            assert not isinstance(value, bool), path
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in value, f"{path}: {name} is required"
        for name, item in value.items():
            if name in properties:
                check_schema(item, properties[name], f"{path}.{name}")
            else:
                assert schema.get("additionalProperties", True) is not False, f"{path}.{name}"
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            check_schema(item, schema["items"], f"{path}[{i}]")


def response_schema(path: str, status: int) -> dict[str, Any]:
    response = SWAGGER["paths"][path]["post"]["responses"][str(status)]
    name = response["$ref"].removeprefix("#/responses/")
    return dict(SWAGGER["responses"][name]["schema"])


def body_schema(path: str) -> dict[str, Any]:
    for parameter in SWAGGER["paths"][path]["post"]["parameters"]:
        name = parameter["$ref"].removeprefix("#/parameters/")
        resolved = SWAGGER["parameters"][name]
        if resolved["in"] == "body":
            return dict(resolved["schema"])
    raise AssertionError(f"no body parameter for {path}")


# --- identify, login, logout, search -----------------------------------------------------------


def test_identify_creates_a_user_and_is_stable(api: Idsync) -> None:
    server = api.server
    identities = {"customerid": uid("c-"), "device_application_stamp": uid("d-")}
    first = identify(server, identities)
    assert set(first) == {"context", "mpid", "matched_identities", "is_ephemeral", "is_logged_in"}
    assert isinstance(first["mpid"], str) and int(first["mpid"]) != 0
    assert isinstance(first["context"], str) and first["context"]
    assert first["matched_identities"] == identities
    assert first["is_logged_in"] is True
    assert first["is_ephemeral"] is False

    again = identify(server, identities)
    assert again["mpid"] == first["mpid"]
    assert identify(server, identities, path="/identity/v1/identify")["mpid"] == first["mpid"]
    assert identify(server, {"customerid": identities["customerid"]})["mpid"] == first["mpid"]
    assert search(server, {"customerid": identities["customerid"]}) == first["mpid"]

    anonymous = identify(server, {"device_application_stamp": uid("d-")})
    assert anonymous["mpid"] != first["mpid"]
    assert anonymous["is_logged_in"] is False


def test_identify_with_the_sdk_names(api: Idsync) -> None:
    """IDSync's spellings (``other2``, ``ios_idfa``...) map to the canonical types."""
    server = api.server
    identities = {
        "other2": uid(),
        "mobile_number": uid(),
        "ios_idfa": uid(),
        "facebookcustomaudienceid": uid(),
    }
    answer = identify(server, identities)
    assert answer["matched_identities"] == identities
    assert answer["is_logged_in"] is False
    for name, value in identities.items():
        assert search(server, {name: value}) == answer["mpid"]
    doc = show_profile(server, answer["mpid"])
    assert {i["type"] for i in doc["user_identities"]} == {
        "other_id_2",
        "mobile_number",
        "facebook_custom_audience_id",
    }
    assert [i["type"] for i in doc["device_identities"]] == ["ios_advertising_id"]


def test_concurrent_identifies_of_a_new_identity_make_one_user(api: Idsync) -> None:
    """Staging, appending and committing a change is atomic: no two users get one email."""
    server = api.server
    identities = {"email": f"{uid()}@example.com"}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: identify(server, identities), range(32)))
    assert len({a["mpid"] for a in answers}) == 1
    assert search(server, identities) == answers[0]["mpid"]


def test_login_after_anonymous_identify_merges_into_the_known_user(api: Idsync) -> None:
    server = api.server
    customer = uid("c-")
    known = identify(server, {"customerid": customer, "device_application_stamp": uid("d-")})
    device = uid("d-")
    anonymous = identify(server, {"device_application_stamp": device})
    assert anonymous["is_logged_in"] is False
    assert anonymous["mpid"] != known["mpid"]

    login = identify(
        server,
        {"customerid": customer, "device_application_stamp": device},
        path="/v1/login",
        previous_mpid=anonymous["mpid"],
    )
    assert login["mpid"] == known["mpid"]
    assert login["is_logged_in"] is True
    # The anonymous user was folded into the known one (the default strategy's login rule).
    assert search(server, {"device_application_stamp": device}) == known["mpid"]
    doc = show_profile(server, anonymous["mpid"])
    assert str(doc["mpid"]) == known["mpid"]
    assert {(str(m["from_mpid"]), m["reason"]) for m in doc["merges"]} >= {
        (anonymous["mpid"], "login")
    }


def test_login_with_a_new_identity_promotes_the_anonymous_user(api: Idsync) -> None:
    server = api.server
    device = uid("d-")
    anonymous = identify(server, {"device_application_stamp": device})
    login = identify(
        server,
        {"customerid": uid("c-"), "device_application_stamp": device},
        path="/v1/login",
        previous_mpid=anonymous["mpid"],
    )
    assert login["mpid"] == anonymous["mpid"]
    assert login["is_logged_in"] is True


def test_login_merges_the_previous_anonymous_user_without_a_shared_device(api: Idsync) -> None:
    server = api.server
    anonymous = identify(server, {"device_application_stamp": uid("d-")})
    login = identify(
        server, {"customerid": uid("c-")}, path="/v1/login", previous_mpid=anonymous["mpid"]
    )
    assert login["mpid"] != anonymous["mpid"]
    assert str(show_profile(server, anonymous["mpid"])["mpid"]) == login["mpid"]

    # A previous user that is logged in is never merged.
    other = identify(
        server, {"customerid": uid("c-")}, path="/v1/login", previous_mpid=login["mpid"]
    )
    assert other["mpid"] != login["mpid"]
    assert str(show_profile(server, login["mpid"])["mpid"]) == login["mpid"]


def test_logout_answers_the_devices_anonymous_user(api: Idsync) -> None:
    server = api.server
    device = uid("d-")
    anonymous = identify(server, {"device_application_stamp": device})
    # An anonymous device's logout answers its user.
    out = identify(server, {"device_application_stamp": device}, path="/v1/logout")
    assert out["mpid"] == anonymous["mpid"]
    assert out["is_logged_in"] is False

    customer = uid("c-")
    login = identify(
        server,
        {"customerid": customer, "device_application_stamp": device},
        path="/v1/login",
        previous_mpid=anonymous["mpid"],
    )
    assert login["is_logged_in"] is True  # the anonymous user became the known one

    out = identify(server, {"device_application_stamp": device}, path="/v1/logout")
    assert out["is_logged_in"] is False
    assert out["mpid"] != login["mpid"]
    assert out["matched_identities"] == {"device_application_stamp": device}
    assert identify(server, {"device_application_stamp": device}, path="/v1/logout") == out
    # It is now the device's user ...
    assert identify(server, {"device_application_stamp": device})["mpid"] == out["mpid"]
    # ... until the user logs in again: the anonymous user folds into the known one.
    again = identify(
        server,
        {"customerid": customer, "device_application_stamp": device},
        path="/v1/login",
        previous_mpid=out["mpid"],
    )
    assert again["mpid"] == login["mpid"]
    assert str(show_profile(server, out["mpid"])["mpid"]) == login["mpid"]


def test_search_answers_404_then_200_and_never_creates(api: Idsync) -> None:
    server = api.server
    email = f"{uid()}@example.com"
    before = log_size(server)
    assert search(server, {"email": email}) is None
    assert search(server, {"email": email}) is None
    assert log_size(server) == before

    created = identify(server, {"email": email})
    status, headers, answer = call(
        server, "/identity/v1/search?cb=1", request_body(known_identities={"email": email})
    )
    assert status == 200, answer
    assert answer["mpid"] == created["mpid"]
    assert answer["matched_identities"] == {"email": email}
    assert answer["is_logged_in"] is True
    assert headers["access-control-allow-origin"] == "*"
    size = log_size(server)
    assert search(server, {"email": email, "other": uid()}) == created["mpid"]
    assert log_size(server) == size


def test_read_only_identify_creates_nothing(api: Idsync) -> None:
    server = api.server
    email = f"{uid()}@example.com"
    before = log_size(server)
    status, _, answer = call(
        server, "/v1/identify?read_only=true", request_body(known_identities={"email": email})
    )
    assert status == 200, answer
    assert answer["is_ephemeral"] is True  # not stored: a made-up MPID
    assert search(server, {"email": email}) is None
    status, _, answer = call(
        server, "/v1/login?read_only=true", request_body(known_identities={"email": email})
    )
    assert status == 200 and answer["is_ephemeral"] is True
    assert search(server, {"email": email}) is None
    assert log_size(server) == before

    created = identify(server, {"email": email})
    size = log_size(server)
    status, _, answer = call(
        server, "/v1/identify?read_only=1", request_body(known_identities={"email": email})
    )
    assert status == 200
    assert answer["mpid"] == created["mpid"]
    assert answer["is_ephemeral"] is False
    assert log_size(server) == size


# --- modify and alias ----------------------------------------------------------------------------


def test_modify_adds_changes_and_removes(api: Idsync) -> None:
    server = api.server
    user = identify(server, {"customerid": uid("c-"), "device_application_stamp": uid("d-")})
    mpid = user["mpid"]
    first, second = f"{uid()}@example.com", f"{uid()}@example.com"

    status, answer = modify(server, mpid, ("email", None, first))
    assert status == 200, answer
    assert answer == {
        "change_results": [{"identity_type": "email", "modified_mpid": mpid, "applied": True}]
    }
    assert search(server, {"email": first}) == mpid

    status, answer = modify(server, mpid, ("email", first, second))
    assert status == 200, answer
    assert search(server, {"email": first}) is None
    assert search(server, {"email": second}) == mpid

    status, answer = modify(server, mpid, ("email", second, None), ("other3", None, "o3"))
    assert status == 200, answer
    assert [r["identity_type"] for r in answer["change_results"]] == ["email", "other3"]
    assert search(server, {"email": second}) is None
    assert search(server, {"other3": "o3"}) == mpid
    doc = show_profile(server, mpid)
    assert {i["type"] for i in doc["user_identities"]} == {"customer_id", "other_id_3"}


def test_modify_refuses_an_identity_another_user_owns(api: Idsync) -> None:
    server = api.server
    email = f"{uid()}@example.com"
    owner = identify(server, {"email": email})
    other = identify(server, {"customerid": uid("c-")})
    status, answer = modify(server, other["mpid"], ("email", None, email))
    assert status == 200, answer
    (result,) = answer["change_results"]
    assert result["applied"] is False
    assert result["reason"] == "owned by another user"
    assert search(server, {"email": email}) == owner["mpid"]


def test_modify_an_unknown_user_is_404(api: Idsync) -> None:
    server = api.server
    before = log_size(server)
    status, headers, answer = call(
        server,
        "/v1/123456789/modify",
        request_body(identity_changes=[{"identity_type": "email", "new_value": "x@example.com"}]),
    )
    assert error_of(status, headers, answer) == ("NOT_FOUND", "mpid: no user 123456789")
    assert status == 404
    assert log_size(server) == before


def test_alias_merges_the_source_into_the_destination(api: Idsync) -> None:
    server = api.server
    device = uid("d-")
    # The web input's users: its key alone may alias only those.
    source = identify(server, {"device_application_stamp": device}, as_input=api.web)
    destination = identify(server, {"customerid": uid("c-")}, as_input=api.web)
    alias = {
        "request_id": str(uuid.uuid4()),
        "request_type": "alias",
        "environment": "production",
        "api_key": api.web.key,
        "data": {
            "destination_mpid": destination["mpid"],
            "source_mpid": source["mpid"],
            "start_unixtime_ms": 1_700_000_000_000,
            "end_unixtime_ms": 1_700_000_100_000,
            "scope": "device",
            "device_application_stamp": device,
        },
    }
    status, headers, answer = call(
        server, f"/webevents/v1/identity/{api.web.key}/Alias", alias, auth=None
    )
    assert status == 202, answer
    assert answer is None  # mParticle answers an alias with an empty 202
    assert headers["access-control-allow-origin"] == "*"
    assert search(server, {"device_application_stamp": device}) == destination["mpid"]
    doc = show_profile(server, source["mpid"])
    assert str(doc["mpid"]) == destination["mpid"]
    assert [(str(m["from_mpid"]), m["reason"]) for m in doc["merges"]] == [
        (source["mpid"], "alias")
    ]


def test_alias_errors(api: Idsync) -> None:
    server = api.server
    user = identify(server, {"customerid": uid("c-")})
    other = identify(server, {"customerid": uid("c-")})

    def alias(source: str, destination: str) -> dict[str, Any]:
        return request_body(
            request_type="alias", data={"source_mpid": source, "destination_mpid": destination}
        )

    web_path = f"/v1/identity/{api.web.key}/Alias"
    status, headers, answer = call(server, web_path, alias("42", user["mpid"]), auth=None)
    assert status == 404
    assert error_of(status, headers, answer)[0] == "NOT_FOUND"
    status, headers, answer = call(server, web_path, alias(user["mpid"], user["mpid"]), auth=None)
    assert status == 400
    assert error_of(status, headers, answer) == (
        "BAD_REQUEST",
        "data.source_mpid: the same user as data.destination_mpid",
    )
    status, headers, answer = call(server, web_path, request_body(), auth=None)
    assert error_of(status, headers, answer)[1] == '$: missing required field "data"'
    # A server input's key alone does not authenticate; with its secret it does.
    server_path = f"/identity/v1/identity/{server.credentials.key}/Alias"
    status, headers, answer = call(
        server, server_path, alias(other["mpid"], user["mpid"]), auth=None
    )
    assert status == 403
    assert error_of(status, headers, answer)[0] == "FORBIDDEN"
    status, _, answer = call(server, server_path, alias(other["mpid"], user["mpid"]))
    assert status == 202, answer
    # The key in the path must belong to the authenticated input.
    status, headers, answer = call(server, web_path, alias(user["mpid"], other["mpid"]))
    assert status == 403
    status, headers, answer = call(
        server, "/v1/identity/pk_nobody/Alias", alias(user["mpid"], other["mpid"]), auth=None
    )
    assert status == 403


# --- the Swagger file and the Web SDK ------------------------------------------------------------


def test_the_swagger_paths_are_served(api: Idsync) -> None:
    server = api.server
    user = identify(server, {"customerid": uid("c-")})
    for path in SWAGGER["paths"]:
        url = SWAGGER["basePath"] + path.replace("{mpid}", user["mpid"])
        status, _, answer = call(server, url, {})
        assert status == 400, (path, answer)  # served, and the empty body is refused
        check_schema(answer, response_schema(path, 400))


@pytest.mark.parametrize("operation", ["/identify", "/login", "/logout"])
def test_every_swagger_identity_in_every_identity_request(api: Idsync, operation: str) -> None:
    server = api.server
    base = _resolve(SWAGGER["definitions"]["IdentityBaseRequest"])["properties"]
    platforms = _resolve(base["client_sdk"])["properties"]["platform"]
    platforms = _resolve(platforms)["enum"]
    environments = base["environment"]["enum"]
    for i, name in enumerate(SWAGGER_IDENTITIES):
        value = uid(f"{name}-")
        payload = {
            "client_sdk": {
                "platform": platforms[i % len(platforms)],
                "sdk_vendor": "mparticle",
                "sdk_version": "5.0.0",
            },
            "context": "from-a-previous-answer",
            "environment": environments[i % len(environments)],
            "request_id": str(uuid.uuid4()),
            "request_timestamp_ms": 1_795_951_733_270,
            "known_identities": {name: value},
        }
        check_schema(payload, body_schema(operation))
        status, _, answer = call(server, SWAGGER["basePath"] + operation, payload)
        assert status == 200, (name, answer)
        check_schema(answer, response_schema(operation, 200))
        assert set(answer) == {
            "context",
            "mpid",
            "matched_identities",
            "is_ephemeral",
            "is_logged_in",
        }
        if operation == "/logout":
            # A logout keeps only device ids: the answer is an anonymous user.
            expected = {name: value} if name in DEVICE_NAMES else {}
            assert answer["matched_identities"] == expected, name
            assert answer["is_logged_in"] is False
        else:
            assert answer["matched_identities"] == {name: value}, name
            assert answer["is_logged_in"] is (name in LOGIN_NAMES), name
            assert search(server, {name: value}) == answer["mpid"]


def test_every_swagger_identity_change(api: Idsync) -> None:
    server = api.server
    change_schema = SWAGGER["definitions"]["IdentityChange"]
    for name in change_schema["properties"]["identity_type"]["enum"]:
        user = identify(server, {"device_application_stamp": uid("d-")})
        value = uid(f"{name}-")
        payload = request_body(
            client_sdk={"platform": "other", "sdk_vendor": "mparticle", "sdk_version": "1"},
            identity_changes=[{"identity_type": name, "old_value": None, "new_value": value}],
        )
        # The Swagger file types old_value as a string; JSON null is how an add is sent.
        check_schema(
            {**payload, "identity_changes": [{**payload["identity_changes"][0], "old_value": ""}]},
            body_schema("/{mpid}/modify"),
        )
        status, _, answer = call(server, f"/v1/{user['mpid']}/modify", payload)
        assert status == 200, (name, answer)
        check_schema(answer, response_schema("/{mpid}/modify", 200))
        assert answer["change_results"] == [
            {"identity_type": name, "modified_mpid": user["mpid"], "applied": True}
        ]
        assert search(server, {name: value}) == user["mpid"], name
        status, answer = modify(server, user["mpid"], (name, value, None))
        assert status == 200, answer
        assert search(server, {name: value}) is None, name


# The bodies the Web SDK 2.68.0 sends (docs: web-sdk.md, sections 2.2 and 2.4), verbatim but
# for the placeholders.
WEB_IDENTITY_BODY = """
{ "client_sdk": {"platform":"web","sdk_vendor":"mparticle","sdk_version":"2.68.0"},
  "context": null,
  "environment": "production",
  "request_id": "<uuid>",
  "request_timestamp_ms": 1795951733270,
  "previous_mpid": null | "<mpid>",
  "known_identities": { "customerid":"cust-42", "email":"a@example.com",
                        "device_application_stamp":"<uuid>" } }
"""
WEB_MODIFY_CHANGES = """
[{"old_value":"a@example.com","new_value":"b@example.com","identity_type":"email"}]
"""
WEB_ALIAS_BODY = """
{"request_id":"<uuid>","request_type":"alias","environment":"production","api_key":"<key>",
 "data":{"destination_mpid":"<destination>","source_mpid":"<source>",
         "start_unixtime_ms":1795951000000,"end_unixtime_ms":1795951733270,"scope":"device",
         "device_application_stamp":"<uuid>"}}
"""
WEB_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "text/plain;charset=UTF-8",
    "Origin": "https://127.0.0.1:8443",
}


def web_identity_body(device: str, previous: str | None, identities: bool) -> dict[str, Any]:
    text = WEB_IDENTITY_BODY.replace('null | "<mpid>"', json.dumps(previous))
    body: dict[str, Any] = json.loads(text.replace("<uuid>", device))
    body["request_id"] = str(uuid.uuid4())
    if not identities:  # "Logout without identities sends only device_application_stamp"
        body["known_identities"] = {"device_application_stamp": device}
    return body


def test_the_web_sdk_session(api: Idsync) -> None:
    """Identify, login, modify, alias and logout as the Web SDK sends them."""
    server = api.server
    headers = {**WEB_HEADERS, "x-mp-key": api.web.key}

    def send(path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        status, answer_headers, answer = call(server, path, body, auth=None, headers=headers)
        assert answer_headers["access-control-allow-origin"] == "*"
        return status, answer_headers, answer

    device = str(uuid.uuid4())
    anonymous_body = web_identity_body(device, None, identities=False)
    status, _, first = send("/identity/v1/identify", anonymous_body)
    assert status == 200, first
    assert first["is_logged_in"] is False

    login_body = web_identity_body(device, first["mpid"], identities=True)
    status, _, login = send("/identity/v1/login", login_body)
    assert status == 200, login
    assert login["is_logged_in"] is True
    assert login["mpid"] == first["mpid"]  # cust-42 is new: the anonymous user logs in
    assert login["matched_identities"] == login_body["known_identities"]

    modify_body = {
        k: v for k, v in login_body.items() if k not in ("previous_mpid", "known_identities")
    }
    modify_body["identity_changes"] = json.loads(WEB_MODIFY_CHANGES)
    status, _, changed = send(f"/identity/v1/{login['mpid']}/modify", modify_body)
    assert status == 200, changed
    assert changed["change_results"] == [
        {"identity_type": "email", "modified_mpid": login["mpid"], "applied": True}
    ]
    assert search(server, {"email": "b@example.com"}) == login["mpid"]
    assert search(server, {"email": "a@example.com"}) is None

    other_device = str(uuid.uuid4())
    status, _, other = send(
        "/identity/v1/identify", web_identity_body(other_device, None, identities=False)
    )
    assert status == 200
    alias_text = (
        WEB_ALIAS_BODY.replace("<key>", api.web.key)
        .replace("<destination>", login["mpid"])
        .replace("<source>", other["mpid"])
        .replace("<uuid>", other_device)
    )
    status, _, answer = call(
        server,
        f"/webevents/v1/identity/{api.web.key}/Alias",
        json.loads(alias_text),
        auth=None,
        headers=WEB_HEADERS,  # the Web SDK sends no x-mp-key with an alias
    )
    assert status == 202, answer
    assert search(server, {"device_application_stamp": other_device}) == login["mpid"]

    status, _, out = send("/identity/v1/logout", web_identity_body(device, login["mpid"], False))
    assert status == 200, out
    assert out["is_logged_in"] is False
    assert out["mpid"] != login["mpid"]
    assert search(server, {"customerid": "cust-42"}) == login["mpid"]


# --- bad input, authentication, CORS, metrics ----------------------------------------------------

IDENTIFY_OK = {"environment": "production", "known_identities": {"email": "x@example.com"}}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/identify", b"{nope", "$: invalid JSON: "),
        ("/v1/identify", b"", "$: invalid JSON: the body is empty or cut short"),
        ("/v1/login", b"[]", "$: expected `object`, got `array`"),
        (
            "/v1/identify",
            {"known_identities": {"email": "x"}},
            '$: missing required field "environment"',
        ),
        (
            "/v1/logout",
            {**IDENTIFY_OK, "environment": "staging"},
            "environment: expected one of production, development",
        ),
        (
            "/v1/identify",
            {"environment": "production"},
            '$: missing required field "known_identities"',
        ),
        (
            "/v1/identify",
            {**IDENTIFY_OK, "known_identities": {}},
            "known_identities: at least one identity is required",
        ),
        (
            "/v1/search",
            {**IDENTIFY_OK, "known_identities": {}},
            "known_identities: at least one identity is required",
        ),
        (
            "/v1/identify",
            {**IDENTIFY_OK, "known_identities": {"fax": "1"}},
            "known_identities.fax: unknown identity type 'fax': expected one of customerid, email",
        ),
        (
            "/v1/search",
            {**IDENTIFY_OK, "known_identities": {"email": 5}},
            "known_identities.email: expected a string or null",
        ),
        (
            "/v1/identify",
            {**IDENTIFY_OK, "known_identities": {"email": None, "other": ""}},
            "known_identities: at least one identity needs a value",
        ),
        (
            "/v1/identify",
            {**IDENTIFY_OK, "known_identities": {"customerid": "a", "customer_id": "b"}},
            "known_identities.customer_id: a second, different value for customer_id",
        ),
        (
            "/v1/login",
            {**IDENTIFY_OK, "previous_mpid": "abc"},
            "previous_mpid: expected a signed 64-bit integer or a numeric string",
        ),
        (
            "/v1/identify",
            {**IDENTIFY_OK, "client_sdk": "web"},
            "client_sdk: expected `object | null`, got `str`",
        ),
        (
            "/v1/identify",
            {**IDENTIFY_OK, "request_timestamp_ms": "now"},
            "request_timestamp_ms: expected `int | null`, got `str`",
        ),
        (
            "/v1/identify",
            b'{"environment":"production","known_identities":{"email":"x"},"\xff":1}',
            "$: the body is not valid UTF-8",
        ),
        (
            "/v1/1/modify",
            {"environment": "production"},
            '$: missing required field "identity_changes"',
        ),
        (
            "/v1/1/modify",
            {
                "environment": "production",
                "identity_changes": [{"identity_type": "fax", "new_value": "1"}],
            },
            "identity_changes[0].identity_type: unknown identity type 'fax'",
        ),
        (
            "/v1/1/modify",
            {"environment": "production", "identity_changes": [{"identity_type": "email"}]},
            "identity_changes[0]: old_value and new_value are both null",
        ),
        (
            "/v1/1/modify",
            {"environment": "production", "identity_changes": [{"new_value": "x"}]},
            'identity_changes[0]: missing required field "identity_type"',
        ),
        (
            "/v1/abc/modify",
            {"environment": "production", "identity_changes": []},
            "mpid (in the path): expected a signed 64-bit integer or a numeric string",
        ),
        (
            "/v1/identity/{key}/Alias",
            {"environment": "production", "data": {"source_mpid": "x", "destination_mpid": "1"}},
            "data.source_mpid: expected a signed 64-bit integer or a numeric string",
        ),
        (
            "/v1/identity/{key}/Alias",
            {
                "environment": "production",
                "request_type": "merge",
                "data": {"source_mpid": "2", "destination_mpid": "1"},
            },
            "request_type: expected one of alias",
        ),
        (
            "/v1/identity/{key}/Alias",
            {
                "environment": "production",
                "data": {
                    "source_mpid": "2",
                    "destination_mpid": "1",
                    "start_unixtime_ms": 5,
                    "end_unixtime_ms": 4,
                },
            },
            "data.end_unixtime_ms: before data.start_unixtime_ms",
        ),
    ],
)
def test_bad_requests_are_400_and_write_nothing(
    api: Idsync, path: str, body: Any, message: str
) -> None:
    server = api.server
    before = log_size(server)
    status, headers, answer = call(server, path.replace("{key}", server.credentials.key), body)
    assert status == 400, answer
    code, got = error_of(status, headers, answer)
    assert code == "BAD_REQUEST"
    assert got.startswith(message), got
    assert headers["access-control-allow-origin"] == "*"
    assert log_size(server) == before


def test_an_oversized_body_is_413(api: Idsync) -> None:
    body = {**IDENTIFY_OK, "pad": "x" * 70_000}
    status, headers, answer = call(api.server, "/v1/identify", body)
    assert status == 413
    assert error_of(status, headers, answer)[0] == "REQUEST_TOO_LARGE"


def test_a_repeated_key_is_400_and_changes_nothing(api: Idsync) -> None:
    """A key twice in one object: decoders keep the last, another reader the first."""
    server = api.server
    first, second = uid("dup-") + "@example.com", uid("dup-") + "@example.com"
    mpid = identify(server, {"email": first})["mpid"]
    key = server.credentials.key
    before = log_size(server)
    for path, body, where in (
        (
            "/v1/identify",
            f'{{"known_identities": {{"email": "{second}", "email": "x@example.com"}}}}',
            "known_identities.email",
        ),
        (
            f"/v1/{mpid}/modify",
            '{"identity_changes": [{"identity_type": "email", "old_value": null,'
            f' "new_value": "{second}", "\\u006eew_value": "y@example.com"}}]}}',
            "identity_changes[0].new_value",
        ),
        (
            f"/v1/identity/{key}/Alias",
            f'{{"data": {{"source_mpid": "{mpid}", "destination_mpid": "1",'
            ' "destination_mpid": "2"}}',
            "data.destination_mpid",
        ),
    ):
        status, headers, answer = call(server, path, body.encode())
        assert status == 400, answer
        assert error_of(status, headers, answer) == ("BAD_REQUEST", f"{where}: duplicate key")
    assert log_size(server) == before
    assert search(server, {"email": second}) is None
    assert search(server, {"email": first}) == mpid


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain;charset=UTF-8", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json; charset=utf-8", 200),  # the SDKs send application/json
    ],
)
def test_a_body_declared_as_anything_but_json_is_415(
    api: Idsync, content_type: str, status: int
) -> None:
    server = api.server
    email = uid("type-") + "@example.com"
    before = log_size(server)
    got, headers, answer = call(
        server,
        "/v1/identify",
        request_body(known_identities={"email": email}),
        headers={"Content-Type": content_type},
    )
    assert got == status, answer
    if status == 415:
        code, message = error_of(got, headers, answer)
        assert code == "UNSUPPORTED_MEDIA_TYPE"
        assert message.startswith("$: unsupported Content-Type"), message
        assert log_size(server) == before
        assert search(server, {"email": email}) is None
    else:
        assert search(server, {"email": email}) == answer["mpid"]


def test_authentication(api: Idsync) -> None:
    server, web = api.server, api.web
    body = request_body(known_identities={"customerid": uid("c-")})

    def status_of(**kwargs: Any) -> tuple[int, str, dict[str, str]]:
        status, headers, answer = call(server, "/v1/identify", body, **kwargs)
        if status >= 400:
            return status, error_of(status, headers, answer)[1], headers
        return status, "", headers

    status, message, headers = status_of(auth=None)
    assert status == 401
    assert headers["www-authenticate"].startswith("Basic")
    assert status_of(auth="Bearer abc")[0] == 401
    assert status_of(auth="Basic !!!")[0] == 401
    assert status_of(auth=basic(server.credentials.key, "wrong"))[0] == 403
    assert status_of(auth=basic("pk_nobody", "x"))[0] == 403
    assert status_of()[0] == 200
    assert status_of(auth=web.basic)[0] == 200
    # Key-only, as the Web SDK does: for client inputs only.
    assert status_of(**key_only(web))[0] == 200
    status, message, _ = status_of(**key_only(server.credentials))
    assert status == 403
    assert "use HTTP Basic" in message
    assert status_of(auth=None, headers={"x-mp-key": "pk_nobody"})[0] == 403
    # A signature is checked, never skipped for the key alone: a wrong one is refused.
    status, message, _ = status_of(
        auth=None,
        headers={"x-mp-key": web.key, "Date": sdk_date(), "x-mp-signature": "ab" * 32},
    )
    assert status == 403
    assert message.startswith("x-mp-signature: does not match")


def test_cors_preflight(api: Idsync) -> None:
    for path in (
        "/identity/v1/identify",
        "/identity/v1/login",
        "/identity/v1/logout",
        "/identity/v1/search",
        "/identity/v1/123/modify",
        f"/webevents/v1/identity/{api.web.key}/Alias",
    ):
        request = urllib.request.Request(
            api.server.url + path,
            method="OPTIONS",
            headers={
                "Origin": "https://127.0.0.1:8443",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-mp-key",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 204, path
            headers = {k.lower(): v for k, v in response.headers.items()}
            assert response.read() == b""
        assert headers["access-control-allow-origin"] == "*"
        assert "POST" in headers["access-control-allow-methods"]
        allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
        assert {"content-type", "x-mp-key"} <= allowed
    # Answers, errors included, carry Access-Control-Allow-Origin.
    _, headers, _ = call(api.server, "/identity/v1/identify", IDENTIFY_OK, auth=None)
    assert headers["access-control-allow-origin"] == "*"


def test_requests_are_counted(api: Idsync) -> None:
    identify(api.server, {"customerid": uid("c-")})
    call(api.server, "/v1/search", request_body(known_identities={"email": uid()}))
    status, metrics = api.server.get("/metrics")
    assert status == 200
    text = metrics.decode()
    assert 'patchbay_http_requests_total{route="/v1/identify",status="200"}' in text
    assert 'patchbay_http_requests_total{route="/v1/search",status="404"}' in text
    assert 'patchbay_rejects_total{reason="not_found"}' in text


# --- access: key-only per input, signatures, the users of a key, rate limits --------------------


def test_key_only_is_off_for_mobile_inputs_until_turned_on(api: Idsync) -> None:
    server = api.server
    name = uid("ios-")
    ios = add_input(server.data_dir, name, "ios")
    body = request_body(known_identities={"customerid": uid("c-")})

    def key_only_status() -> tuple[int, str]:
        status, headers, answer = call(server, "/v1/identify", body, **key_only(ios))
        return status, error_of(status, headers, answer)[1] if status >= 400 else ""

    status, message = key_only_status()
    assert status == 403
    assert message.startswith("x-mp-key: this ios input does not accept its key alone")
    assert "set-idsync-key-only" in message
    assert call(server, "/v1/identify", body, auth=ios.basic)[0] == 200  # its secret works

    done = run_cli("inputs", "set-idsync-key-only", name, "on", data_dir=server.data_dir)
    assert done.returncode == 0, done.stderr
    assert key_only_status() == (200, "")
    done = run_cli("inputs", "set-idsync-key-only", name, "off", data_dir=server.data_dir)
    assert done.returncode == 0, done.stderr
    assert key_only_status()[0] == 403

    # Turned on at creation; still never for a server input.
    android = add_input(server.data_dir, uid("android-"), "android", idsync_key_only=True)
    assert call(server, "/v1/identify", body, **key_only(android))[0] == 200
    assert call(server, "/v1/identify", body, **key_only(server.credentials))[0] == 403


def test_mobile_sdk_signatures(api: Idsync) -> None:
    """The iOS and Android SDKs' HMAC signature over ``/v1/...``, ``Date`` in either form."""
    server = api.server
    ios = add_input(server.data_dir, uid("ios-"), "ios")
    customer = uid("c-")
    body = json.dumps(request_body(known_identities={"customerid": customer})).encode()

    def send(path: str, how: dict[str, Any], payload: bytes = body) -> tuple[int, str]:
        status, headers, answer = call(server, path, payload, **how)
        return status, error_of(status, headers, answer)[1] if status >= 400 else ""

    assert send("/v1/identify", signed(ios, "/v1/identify", body)) == (200, "")
    user = search(server, {"customerid": customer})
    assert user is not None
    # Under /identity/v1: signed over the path called, or over its /v1 form.
    assert send("/identity/v1/identify", signed(ios, "/identity/v1/identify", body))[0] == 200
    assert send("/identity/v1/identify", signed(ios, "/v1/identify", body))[0] == 200
    http_date = format_datetime(datetime.now(UTC), usegmt=True)
    assert send("/v1/identify", signed(ios, "/v1/identify", body, http_date))[0] == 200
    query = "/v1/identify?read_only=true"
    assert send(query, signed(ios, query, body))[0] == 200

    before = log_size(server)
    assert send("/v1/identify", signed(ios, "/v1/identify", body, secret="ps_wrong")) == (
        403,
        "x-mp-signature: does not match the request signed with the key's secret",
    )
    tampered = body.replace(customer.encode(), uid("c-").encode())
    assert send("/v1/identify", signed(ios, "/v1/identify", body), tampered)[0] == 403
    assert send("/v1/identify", signed(ios, "/v1/search", body))[0] == 403
    # A captured request is good for 15 minutes either side of the server's clock.
    assert (
        send("/v1/identify", signed(ios, "/v1/identify", body, sdk_date(-timedelta(minutes=14))))[0]
        == 200
    )
    for offset in (timedelta(minutes=-16), timedelta(minutes=16)):
        status, message = send("/v1/identify", signed(ios, "/v1/identify", body, sdk_date(offset)))
        assert status == 401
        assert message.startswith("Date: more than 15 minutes from the server's clock")
    how = signed(ios, "/v1/identify", body)
    del how["headers"]["Date"]
    assert send("/v1/identify", how) == (401, "Date: required with x-mp-signature")
    how = signed(ios, "/v1/identify", body, "yesterday")
    assert send("/v1/identify", how)[1].startswith("Date: expected ISO 8601 basic")
    # A server input never signs: its secret is not kept for it.
    status, message = send("/v1/identify", signed(server.credentials, "/v1/identify", body))
    assert status == 401
    assert "use HTTP Basic" in message
    assert log_size(server) == before

    # A signed caller proved it holds the secret: it may modify any user, as HTTP Basic.
    other = identify(server, {"customerid": uid("c-")})
    modify_body = json.dumps(
        request_body(
            identity_changes=[{"identity_type": "email", "new_value": f"{uid()}@example.com"}]
        )
    ).encode()
    path = f"/v1/{other['mpid']}/modify"
    assert send(path, signed(ios, path, modify_body), modify_body)[0] == 200


def test_a_key_made_before_signatures_is_refused_until_rotated(api: Idsync) -> None:
    server = api.server
    name = uid("ios-")
    backend = server.open_store()
    try:  # without the secrets key: as a key made before sealing
        made = create_input(backend.inputs, name, "ios", 0, SystemClock())
        assert [c.secret_sealed for c in backend.inputs.credentials(made.id)] == [None]
    finally:
        backend.close()
    ios = Credentials(made.id, made.key, made.secret)
    body = json.dumps(request_body(known_identities={"customerid": uid("c-")})).encode()
    status, headers, answer = call(
        server, "/v1/identify", body, **signed(ios, "/v1/identify", body)
    )
    assert status == 401
    message = error_of(status, headers, answer)[1]
    assert message.startswith("x-mp-signature: this key cannot be checked")
    assert "patchbay inputs rotate" in message
    done = run_cli("inputs", "rotate", name, "--keep-old", "--json", data_dir=server.data_dir)
    assert done.returncode == 0, done.stderr
    fields = json.loads(done.stdout)
    rotated = Credentials(fields["id"], fields["key"], fields["secret"])
    status, _, answer = call(server, "/v1/identify", body, **signed(rotated, "/v1/identify", body))
    assert status == 200, answer


def test_a_lost_secrets_key_refuses_signatures_and_says_so(
    tmp_path: Path, deployment: Deployment
) -> None:
    data_dir = tmp_path / "data"
    ios = add_input(data_dir, "app", "ios")
    key_file = data_dir / "secrets.key"
    key_file.write_text("damaged\n")  # before the server's first signed request reads it
    server = start_server(data_dir)
    try:
        body = json.dumps(request_body(known_identities={"customerid": uid("c-")})).encode()
        status, headers, answer = call(
            server, "/v1/identify", body, **signed(ios, "/v1/identify", body)
        )
        assert status == 500
        assert error_of(status, headers, answer) == (
            "INTERNAL_SERVER_ERROR",
            "x-mp-signature: the server cannot check signatures now (see its log)",
        )
        server_log = server.log_path.read_text()
        assert "secrets_key_unusable" in server_log
        assert "does not hold a key" in server_log
        assert ios.secret not in server_log
        # Basic still works: it does not need the key.
        assert call(server, "/v1/identify", body, auth=ios.basic)[0] == 200
    finally:
        stop_server(server)


def test_a_key_alone_changes_only_the_users_of_its_input(api: Idsync) -> None:
    """With a public web key one cannot modify another input's users, or alias them."""
    server, web = api.server, api.web
    mine = identify(server, {"customerid": uid("c-")}, as_input=web)
    also_mine = identify(server, {"device_application_stamp": uid("d-")}, as_input=web)
    theirs = identify(server, {"customerid": uid("c-")})  # the server input's user
    before = log_size(server)

    email = f"{uid()}@example.com"
    changes = request_body(identity_changes=[{"identity_type": "email", "new_value": email}])
    status, headers, answer = call(server, f"/v1/{theirs['mpid']}/modify", changes, **key_only(web))
    assert status == 403
    assert error_of(status, headers, answer) == (
        "FORBIDDEN",
        f"mpid (in the path): user {theirs['mpid']} was not seen by this input; a request"
        " authenticated by the key alone may change only the users of its own input (sign it,"
        " or use HTTP Basic)",
    )
    assert headers["access-control-allow-origin"] == "*"

    def alias(source: str, destination: str) -> tuple[int, str]:
        body = request_body(data={"source_mpid": source, "destination_mpid": destination})
        status, headers, answer = call(
            server, f"/webevents/v1/identity/{web.key}/Alias", body, auth=None
        )
        return status, error_of(status, headers, answer)[1] if status >= 400 else ""

    status, message = alias(theirs["mpid"], mine["mpid"])  # take their profile into mine
    assert status == 403
    assert message.startswith(f"data.source_mpid: user {theirs['mpid']} was not seen")
    status, message = alias(mine["mpid"], theirs["mpid"])
    assert status == 403
    assert message.startswith(f"data.destination_mpid: user {theirs['mpid']} was not seen")
    # Nothing changed, nothing was written.
    assert log_size(server) == before
    assert search(server, {"email": email}) is None
    assert str(show_profile(server, theirs["mpid"])["mpid"]) == theirs["mpid"]
    assert str(show_profile(server, mine["mpid"])["mpid"]) == mine["mpid"]

    # Its own users it may change; the server input (its secret) may change any.
    status, _, answer = call(server, f"/v1/{mine['mpid']}/modify", changes, **key_only(web))
    assert status == 200, answer
    assert alias(also_mine["mpid"], mine["mpid"]) == (202, "")
    assert modify(server, theirs["mpid"], ("email", None, f"{uid()}@example.com"))[0] == 200


def test_idsync_is_rate_limited_per_input(api: Idsync) -> None:
    server = api.server
    slow = add_input(server.data_dir, uid("web-"), "web", rate_limit=1)
    body = request_body(known_identities={"customerid": uid("c-")})
    before = log_size(server)
    answers = [call(server, "/v1/identify", body, **key_only(slow)) for _ in range(4)]
    statuses = [status for status, _, _ in answers]
    assert statuses[0] == 200
    assert 429 in statuses, statuses
    status, headers, answer = next(a for a in answers if a[0] == 429)
    assert error_of(status, headers, answer) == (
        "TOO_MANY_REQUESTS",
        "$: over the input's limit of 1 IDSync requests per second",
    )
    assert int(headers["retry-after"]) >= 1
    assert headers["access-control-allow-origin"] == "*"
    assert log_size(server) == before + 1  # the first identify only
    # Other inputs have buckets of their own.
    assert call(server, "/v1/identify", body, **key_only(api.web))[0] == 200
    time.sleep(1.1)
    assert call(server, "/v1/identify", body, **key_only(slow))[0] == 200


# --- IDSync and the Events API --------------------------------------------------------------------


def test_events_with_the_idsync_mpid_land_on_that_user(api: Idsync) -> None:
    server = api.server
    customer, email = uid("c-"), f"{uid()}@example.com"
    user = identify(server, {"customerid": customer, "device_application_stamp": uid("d-")})
    batch = {
        "mpid": user["mpid"],
        "environment": "development",
        "user_attributes": {"tier": "gold"},
        "user_identities": {"email": email},
        "events": [
            {
                "event_type": "custom_event",
                "data": {"event_name": "hi", "custom_event_type": "other"},
            }
        ],
    }
    status, _, answer = call(server, "/v2/events", batch)
    assert status == 202, answer
    assert eventually(lambda: search(server, {"email": email}), "the batch") == user["mpid"]
    doc = show_profile(server, user["mpid"])
    assert doc["user_attributes"] == {"tier": "gold"}
    assert {(i["type"], i["value"]) for i in doc["user_identities"]} == {
        ("customer_id", customer),
        ("email", email),
    }


# --- durability -----------------------------------------------------------------------------------


class Servers:
    """One data directory, served by a server that can be restarted."""

    def __init__(self, data_dir: Path, deployment: Deployment) -> None:
        self.credentials = add_input(data_dir, "test-server")
        self.deployment = deployment
        self.current = self._start(data_dir)

    def _start(self, data_dir: Path) -> Server:
        running = start_server(data_dir)
        running.credentials = self.credentials
        running.deployment = self.deployment
        return running

    def restart(self, wipe_state: bool = False) -> Server:
        """Stop the server and start it again, after losing its resolve state (profiles,
        identity links, merges and the resolve checkpoint) with ``wipe_state``."""
        data_dir = self.current.data_dir
        stop_server(self.current)
        if wipe_state:
            backend = self.current.open_store()
            try:
                backend.state.reset()
                assert backend.state.checkpoint() == {}
            finally:
                backend.close()
        self.current = self._start(data_dir)
        return self.current


@pytest.fixture
def servers(tmp_path: Path, deployment: Deployment) -> Iterator[Servers]:
    running = Servers(tmp_path / "data", deployment)
    yield running
    stop_server(running.current)


def test_idsync_changes_survive_a_restart_and_a_rebuild_from_the_log(servers: Servers) -> None:
    server = servers.current
    customer, device = uid("c-"), uid("d-")
    user = identify(server, {"customerid": customer, "device_application_stamp": device})
    second_device = uid("d-")
    anonymous = identify(server, {"device_application_stamp": second_device})
    promoted = identify(
        server,
        {"customerid": uid("c-"), "device_application_stamp": second_device},
        path="/v1/login",
        previous_mpid=anonymous["mpid"],
    )
    assert promoted["mpid"] == anonymous["mpid"]
    email = f"{uid()}@example.com"
    assert modify(server, user["mpid"], ("email", None, email))[0] == 200
    # A login that folds an anonymous user into the known one, and an alias.
    merged_device = uid("d-")
    merged = identify(server, {"device_application_stamp": merged_device})
    login = identify(
        server,
        {"customerid": customer, "device_application_stamp": merged_device},
        path="/v1/login",
        previous_mpid=merged["mpid"],
    )
    assert login["mpid"] == user["mpid"]
    alias_device = uid("d-")
    aliased = identify(server, {"device_application_stamp": alias_device})
    status, _, answer = call(
        server,
        f"/v1/identity/{servers.credentials.key}/Alias",
        {
            "request_id": str(uuid.uuid4()),
            "request_type": "alias",
            "environment": "production",
            "api_key": servers.credentials.key,
            "data": {"destination_mpid": user["mpid"], "source_mpid": aliased["mpid"]},
        },
    )
    assert status == 202, answer
    out = identify(server, {"device_application_stamp": device}, path="/v1/logout")
    assert out["mpid"] != user["mpid"]

    expected_searches: list[tuple[dict[str, str], str]] = [
        ({"customerid": customer}, user["mpid"]),
        ({"email": email}, user["mpid"]),
        ({"customerid": promoted["matched_identities"]["customerid"]}, promoted["mpid"]),
        ({"device_application_stamp": second_device}, promoted["mpid"]),
        ({"device_application_stamp": merged_device}, user["mpid"]),
        ({"device_application_stamp": alias_device}, user["mpid"]),
    ]

    def device_user(srv: Server) -> str:
        status, _, answer = call(
            srv,
            "/v1/identify?read_only=true",
            request_body(known_identities={"device_application_stamp": device}),
        )
        assert status == 200, answer
        return str(answer["mpid"])

    def state_matches(srv: Server) -> bool | None:
        found = [search(srv, identities) for identities, _ in expected_searches]
        if found != [mpid for _, mpid in expected_searches]:
            return None
        return device_user(srv) == out["mpid"] or None

    assert state_matches(server)

    # Each change was appended to the log (channel idsync) before the state changed.
    records = [b for b in server.stored() if b.channel == "idsync"]
    assert {b.input_id for b in records} == {servers.credentials.id}
    recorded = {str(json.loads(b.body)["mpid"]) for b in records}
    assert {user["mpid"], anonymous["mpid"], out["mpid"]} <= recorded

    server = servers.restart()
    assert state_matches(server)  # the state file kept everything

    server = servers.restart(wipe_state=True)
    eventually(lambda: state_matches(server), "the state rebuilt from the log")
    # The rebuilt state answers as before, and identifying again changes nothing.
    assert identify(server, {"customerid": customer})["mpid"] == user["mpid"]
    assert identify(server, {"email": email})["mpid"] == user["mpid"]
