"""The Profile API's access control, in process: API clients only, the OAuth token endpoint
(oauthlib, RFC 6749 errors, a bounded body), tokens checked against their client on every
use, and MPIDs that are not signed 64-bit integers."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.applications import Starlette

from patchbay.api_clients import create_client, rotate_secret
from patchbay.backends.abstract import Backend
from patchbay.backends.records import StateChanges
from patchbay.clock import ManualClock
from patchbay.collect.inputs import NewCredentials, create_input
from patchbay.http import EXCEPTION_HANDLERS
from patchbay.logs import configure_logging
from patchbay.partner.lambda_local import BackgroundServer
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import add_identity, new_profile
from patchbay.resolve.profile_http import TOKEN_LIFETIME_S, ProfileApi
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.strategy import IdentityStrategy

LIMIT = 2048
PROFILE = "/userprofile/v1/1/2/3/4242"


@dataclass
class Api:
    host: str
    port: int
    backend: Backend
    clock: ManualClock
    client_id: str
    client_secret: str
    ios: NewCredentials

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            raw = response.read()
            return response.status, dict(response.headers), json.loads(raw) if raw else None
        finally:
            conn.close()

    def token(self, fields: dict[str, str], json_body: bool = True, **headers: str) -> Any:
        if json_body:
            body = json.dumps(fields).encode()
        else:
            body = urllib.parse.urlencode(fields).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return self.request("POST", "/oauth/token", body, headers)

    def bearer(self) -> str:
        status, _, answer = self.token(
            {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "audience": "https://api.mparticle.com",
                "grant_type": "client_credentials",
            }
        )
        assert status == 200, answer
        return f"Bearer {answer['access_token']}"

    def profile(self, auth: str, path: str = PROFILE) -> tuple[int, dict[str, str], Any]:
        return self.request("GET", path, headers={"Authorization": auth})


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


@pytest.fixture
def api(backend: Backend) -> Iterator[Api]:
    clock = ManualClock()
    customer = Identity("customer_id", "c-1")
    profile = new_profile(4242, clock.now_ms())
    add_identity(profile, customer, clock.now_ms())
    backend.state.commit(StateChanges(profiles={4242: profile}, linked={customer: [4242]}), {})
    ios = create_input(backend.inputs, "ios-app", "ios", 0, clock)
    client = create_client(backend.api_clients, "crm", ["profiles:read"], clock)
    service = ResolveService(backend.state, Resolver(IdentityStrategy()), clock)
    profiles = ProfileApi(backend.api_clients, service, clock, max_body_bytes=LIMIT)
    app = Starlette(routes=profiles.routes(), exception_handlers=EXCEPTION_HANDLERS)
    with BackgroundServer(app).start() as server:
        yield Api(
            server.host,
            server.port,
            backend,
            clock,
            client.client_id,
            client.client_secret,
            ios,
        )


# -- who may read profiles ------------------------------------------------------------------


def test_an_api_client_reads_profiles_with_a_token_or_basic(api: Api) -> None:
    status, _, doc = api.profile(api.bearer())
    assert status == 200 and doc["mpid"] == 4242
    status, _, doc = api.profile(basic(api.client_id, api.client_secret))
    assert status == 200 and doc["mpid"] == 4242
    body = json.dumps({"identity": {"type": "customerid", "value": "c-1"}}).encode()
    status, _, doc = api.request(
        "POST", "/userprofile/v1/resolve/1/2/3", body, {"Authorization": api.bearer()}
    )
    assert status == 200 and doc["mpid"] == 4242


def test_an_inputs_key_and_secret_are_refused_everywhere(api: Api) -> None:
    """An ios input's credentials ship inside the app: they read no profile."""
    status, headers, answer = api.token(
        {
            "client_id": api.ios.key,
            "client_secret": api.ios.secret,
            "grant_type": "client_credentials",
        }
    )
    assert status == 401
    assert answer["error"] == "invalid_client"
    assert "api-clients add" in answer["error_description"]
    status, headers, answer = api.profile(basic(api.ios.key, api.ios.secret))
    assert status == 401 and answer["errors"][0]["code"] == "UNAUTHORIZED"
    assert "api-clients add" in answer["errors"][0]["message"]
    assert "Bearer" in headers["www-authenticate"]


@pytest.mark.parametrize(
    ("auth", "status"),
    [("", 401), ("Bearer nope", 401), ("Basic dTpw", 401), ("Basic !!!", 401)],
)
def test_missing_or_bad_credentials(api: Api, auth: str, status: int) -> None:
    got, _, answer = api.profile(auth)
    assert got == status and answer["errors"][0]["code"] == "UNAUTHORIZED"


def test_basic_with_a_wrong_secret_or_a_disabled_client(api: Api) -> None:
    assert api.profile(basic(api.client_id, "pcs_wrong"))[0] == 401
    assert api.profile(basic("crm", api.client_secret))[0] == 401  # the name is not the id
    api.backend.api_clients.set_client_enabled(api.client_id, False)
    assert api.profile(basic(api.client_id, api.client_secret))[0] == 401


# -- the token endpoint ----------------------------------------------------------------------


def test_token_as_json_form_or_basic(api: Api) -> None:
    credentials = {"client_id": api.client_id, "client_secret": api.client_secret}
    grant = {"grant_type": "client_credentials"}
    for status, _, answer in (
        api.token({**credentials, **grant}),
        api.token({**credentials, **grant}, json_body=False),
        api.token(grant, json_body=False, Authorization=basic(api.client_id, api.client_secret)),
        # curl -d '{...}' sends JSON under a form Content-Type: still read as JSON
        api.token({**credentials, **grant}, Content_Type="application/x-www-form-urlencoded"),
    ):
        assert status == 200, answer
        assert answer["token_type"] == "Bearer"
        assert answer["expires_in"] == TOKEN_LIFETIME_S
        assert answer["scope"] == "profiles:read"
        assert api.profile(f"Bearer {answer['access_token']}")[0] == 200


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        ({"client_secret": "pcs_wrong"}, 401, "invalid_client"),
        ({"client_id": "pc_nobody"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"scope": "profiles:write"}, 400, "invalid_scope"),
    ],
)
def test_token_errors_are_rfc_6749s(
    api: Api, fields: dict[str, str], status: int, error: str
) -> None:
    base = {
        "client_id": api.client_id,
        "client_secret": api.client_secret,
        "grant_type": "client_credentials",
    }
    got, headers, answer = api.token({**base, **fields})
    assert (got, answer["error"]) == (status, error), answer
    assert headers["cache-control"] == "no-store"


def test_token_body_is_not_json_of_strings(api: Api) -> None:
    status, _, answer = api.request("POST", "/oauth/token", b'{"client_id": 1}')
    assert status == 400 and answer["error"] == "invalid_request"
    assert "client_id" in answer["error_description"]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_token_body_with_a_repeated_key_is_refused(api: Api, content_type: str | None) -> None:
    """Which client_id would be meant? Neither: 400, and no token."""
    body = (
        f'{{"client_id": "{api.client_id}", "client_secret": "{api.client_secret}",'
        f' "grant_type": "client_credentials", "\\u0063lient_id": "pc_other"}}'
    ).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, answer = api.request("POST", "/oauth/token", body, headers)
    assert status == 400, answer
    assert answer["error"] == "invalid_request"
    assert answer["error_description"] == "client_id: duplicate key"
    assert "access_token" not in answer


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/oauth/token", "text/plain"),
        ("/oauth/token", "multipart/form-data; boundary=x"),
        ("/userprofile/v1/resolve/1/2/3", "text/plain;charset=UTF-8"),
        ("/userprofile/v1/resolve/1/2/3", "application/x-www-form-urlencoded"),
    ],
)
def test_a_body_of_another_type_is_415(api: Api, path: str, content_type: str) -> None:
    """The token endpoint takes a form or JSON, the resolve route JSON (undeclared: JSON)."""
    fields = {"client_id": api.client_id, "client_secret": api.client_secret}
    token = {**fields, "grant_type": "client_credentials"}
    body = json.dumps(
        token if path == "/oauth/token" else {"identity": {"type": "customer_id", "value": "c-1"}}
    ).encode()
    headers = {
        "Content-Type": content_type,
        "Authorization": basic(api.client_id, api.client_secret),
    }
    status, _, answer = api.request("POST", path, body, headers)
    assert status == 415, answer
    if path == "/oauth/token":
        assert answer["error"] == "invalid_request"
        assert answer["error_description"].startswith("unsupported Content-Type")
        assert "access_token" not in answer
    else:
        assert answer["errors"][0]["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_resolve_body_with_a_repeated_key_is_400(api: Api) -> None:
    body = b'{"identity": {"type": "customer_id", "value": "c-1", "value": "c-2"}}'
    status, _, answer = api.request(
        "POST", "/userprofile/v1/resolve/1/2/3", body, {"Authorization": api.bearer()}
    )
    assert status == 400, answer
    assert answer["errors"] == [{"code": "BAD_REQUEST", "message": "identity.value: duplicate key"}]


def test_token_body_is_bounded(api: Api) -> None:
    """Over the limit: 413 before reading (Content-Length) and while reading (chunked)."""
    big = json.dumps({"client_id": "x" * LIMIT, "client_secret": "y"}).encode()
    status, _, answer = api.request("POST", "/oauth/token", big)
    assert status == 413 and answer["error"] == "invalid_request"
    assert str(LIMIT) in answer["error_description"]

    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    try:
        conn.request("POST", "/oauth/token", body=iter([big[:1000], big[1000:]]))
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"] == "invalid_request"
    finally:
        conn.close()


def test_resolve_body_is_bounded(api: Api) -> None:
    body = json.dumps({"identity": {"type": "email", "value": "x" * LIMIT}}).encode()
    status, _, answer = api.request(
        "POST", "/userprofile/v1/resolve/1/2/3", body, {"Authorization": api.bearer()}
    )
    assert status == 413 and answer["errors"][0]["code"] == "REQUEST_TOO_LARGE"


# -- a token follows its client --------------------------------------------------------------


def test_a_token_is_refused_once_its_client_is_disabled(api: Api) -> None:
    bearer = api.bearer()
    assert api.profile(bearer)[0] == 200
    api.backend.api_clients.set_client_enabled(api.client_id, False)
    status, _, answer = api.profile(bearer)
    assert status == 401 and "disabled" in answer["errors"][0]["message"]
    assert (
        api.token(
            {
                "client_id": api.client_id,
                "client_secret": api.client_secret,
                "grant_type": "client_credentials",
            }
        )[0]
        == 401
    )
    api.backend.api_clients.set_client_enabled(api.client_id, True)
    assert api.profile(bearer)[0] == 200


def test_a_token_is_refused_once_its_clients_secret_is_rotated(api: Api) -> None:
    bearer = api.bearer()
    client = api.backend.api_clients.get_client(api.client_id)
    assert client is not None
    rotated = rotate_secret(api.backend.api_clients, client, api.clock)
    status, _, answer = api.profile(bearer)
    assert status == 401 and "new secret" in answer["errors"][0]["message"]
    assert api.profile(basic(api.client_id, api.client_secret))[0] == 401
    api.client_secret = rotated.client_secret
    assert api.profile(api.bearer())[0] == 200


def test_a_token_is_refused_once_its_client_is_removed(api: Api) -> None:
    bearer = api.bearer()
    assert api.backend.api_clients.remove_client(api.client_id)
    status, _, answer = api.profile(bearer)
    assert status == 401 and "removed" in answer["errors"][0]["message"]


def test_a_token_expires(api: Api) -> None:
    bearer = api.bearer()
    api.clock.advance(TOKEN_LIFETIME_S - 1)
    assert api.profile(bearer)[0] == 200
    api.clock.advance(1)
    assert api.profile(bearer)[0] == 401


def test_tokens_are_not_logged_even_at_debug(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """oauthlib logs every token it issues at DEBUG: Patchbay keeps its logger at INFO."""
    configure_logging("debug")
    with caplog.at_level(logging.DEBUG):
        bearer = api.bearer()
    token = bearer.removeprefix("Bearer ")
    assert token not in caplog.text and api.client_secret not in caplog.text
    assert logging.getLogger("oauthlib").getEffectiveLevel() >= logging.INFO


# -- MPIDs in the path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mpid",
    ["99999999999999999999", "9223372036854775808", "-9223372036854775809", "abc", "1_000", "0x10"],
)
def test_an_mpid_that_is_not_a_signed_64_bit_integer_is_a_400(api: Api, mpid: str) -> None:
    status, _, answer = api.profile(api.bearer(), f"/userprofile/v1/1/2/3/{mpid}")
    assert status == 400, answer
    assert answer["errors"][0]["code"] == "BAD_REQUEST"
    assert answer["errors"][0]["message"].startswith("mpid: ")


@pytest.mark.parametrize("mpid", ["9223372036854775807", "-9223372036854775808"])
def test_the_ends_of_the_64_bit_range_are_mpids(api: Api, mpid: str) -> None:
    status, _, answer = api.profile(api.bearer(), f"/userprofile/v1/1/2/3/{mpid}")
    assert status == 404 and answer["errors"][0]["code"] == "NOT_FOUND"
