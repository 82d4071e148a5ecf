"""CORS on the Web SDK's paths: preflights, ``Access-Control-Allow-Origin`` on every answer
(errors included), and the origins a web input allows; first on a small app over ASGI, then
against a real ``patchbay serve`` (the conftest ``server``)."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.http import EXCEPTION_HANDLERS, middleware
from patchbay.http.cors import WEB_SDK_PATH_PREFIXES, CorsPolicy, request_key
from patchbay.http.errors import error_response
from patchbay.metrics import Metrics
from tests.conftest import Server, add_input
from tests.http.test_layer import call

SHOP = "https://shop.example"
#: The keys of the small app: one restricted to SHOP, one open to any origin.
ORIGINS = {"pk_shop": (SHOP,), "pk_open": ()}


def check(key: str, origin: str) -> bool | None:
    allowed = ORIGINS.get(key)
    return None if not allowed else origin in allowed


async def _ok(request: Request) -> Response:
    return Response(b"{}", 202, media_type="application/json")


async def _refuse(request: Request) -> Response:
    return error_response(401, "UNAUTHORIZED", "key: unknown")


@pytest.fixture
def app() -> Starlette:
    return Starlette(
        routes=[
            Route("/webevents/v3/JS/{key}/events", _ok, methods=["POST"]),
            Route("/nativesdks/v1/{key}/audience", _refuse, methods=["GET"]),
            Route("/identity/v1/identify", _ok, methods=["POST"]),
        ],
        middleware=middleware(Metrics(), CorsPolicy(WEB_SDK_PATH_PREFIXES, origins=check)),
        exception_handlers=EXCEPTION_HANDLERS,
    )


def test_the_key_is_found_in_the_path_or_in_x_mp_key() -> None:
    none = Headers({})
    assert request_key("/webevents/v3/JS/pk_a/events", none) == "pk_a"
    assert request_key("/webevents/v1/JS/pk_a/Forwarding", none) == "pk_a"
    assert request_key("/webevents/v1/identity/pk_a/Alias", none) == "pk_a"
    assert request_key("/tags/JS/v2/pk_a/config", none) == "pk_a"
    assert request_key("/nativesdks/v1/pk_a/audience", none) == "pk_a"
    assert request_key("/identity/v1/identify", Headers({"x-mp-key": "pk_b"})) == "pk_b"
    assert request_key("/identity/v1/identify", none) is None


@pytest.mark.parametrize(
    "path", ["/webevents/v3/JS/pk_open/events", "/tags/JS/v2/pk_open/config", "/identity/v1/login"]
)
def test_a_preflight_of_an_open_key_allows_any_origin(app: Starlette, path: str) -> None:
    status, headers, body = call(
        app, "OPTIONS", path, {"Origin": SHOP, "Access-Control-Request-Method": "POST"}
    )
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-mp-key"} <= allowed
    assert "vary" not in headers


def test_every_answer_of_a_covered_path_carries_the_origin(app: Starlette) -> None:
    """Errors too: a 401 of the route, a 404 and a 405 of the router."""
    for method, path, expected in (
        ("POST", "/webevents/v3/JS/pk_open/events", 202),
        ("GET", "/nativesdks/v1/pk_open/audience", 401),
        ("GET", "/webevents/v9/nothing", 404),
        ("GET", "/webevents/v3/JS/pk_open/events", 405),
    ):
        status, headers, _ = call(app, method, path, {"Origin": SHOP})
        assert status == expected
        assert headers["access-control-allow-origin"] == "*", path


def test_a_restricted_key_echoes_an_allowed_origin(app: Starlette) -> None:
    status, headers, _ = call(app, "POST", "/webevents/v3/JS/pk_shop/events", {"Origin": SHOP})
    assert status == 202
    assert headers["access-control-allow-origin"] == SHOP
    assert headers["vary"] == "Origin"
    status, headers, _ = call(app, "OPTIONS", "/nativesdks/v1/pk_shop/audience", {"Origin": SHOP})
    assert (status, headers["access-control-allow-origin"]) == (204, SHOP)
    assert headers["vary"] == "Origin"


def test_a_restricted_key_refuses_other_origins(app: Starlette) -> None:
    """403 in the error shape: a preflight without Allow-Origin (the browser sends nothing
    more), a request with its origin echoed (the SDK sees the 403 and drops the batch, where
    a hidden answer would make it send the batch again for ever); the x-mp-key of IDSync
    alike."""
    evil = {"Origin": "https://evil.example"}
    for method, path, headers_in in (
        ("POST", "/webevents/v3/JS/pk_shop/events", evil),
        ("OPTIONS", "/webevents/v3/JS/pk_shop/events", evil),
        ("POST", "/identity/v1/identify", {**evil, "x-mp-key": "pk_shop"}),
    ):
        status, headers, body = call(app, method, path, headers_in)
        assert status == 403, path
        if method == "OPTIONS":
            assert "access-control-allow-origin" not in headers
        else:
            assert headers["access-control-allow-origin"] == "https://evil.example"
        assert headers["vary"] == "Origin"
        (error,) = json.loads(body)["errors"]
        assert error["code"] == "FORBIDDEN"
        assert error["message"].startswith("Origin: ")


def test_a_request_without_origin_is_left_to_the_route(app: Starlette) -> None:
    """Not a browser's cross-origin call (a server, curl): the key's route decides."""
    status, headers, _ = call(app, "POST", "/webevents/v3/JS/pk_shop/events")
    assert status == 202
    assert headers["access-control-allow-origin"] == "*"


# --- against a real server -----------------------------------------------------------------


def send(
    server: Server, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body, {k.replace("_", "-"): v for k, v in headers.items()})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_a_web_inputs_allowed_origins_on_a_real_server(server: Server, data_dir: Path) -> None:
    """``--allowed-origin``: the allowed page uploads and identifies; another page is refused
    (nothing stored); an open web input and every Web SDK path answer CORS, errors included."""
    shop = add_input(data_dir, "shop", "web", allowed_origins=["HTTPS://Shop.example:443/"])
    blog = add_input(data_dir, "blog", "web")
    batch = json.dumps({"source_request_id": "r-1", "mpid": "7", "events": []}).encode()
    events = f"/webevents/v3/JS/{shop.key}/events"
    text = "text/plain;charset=UTF-8"

    status, headers, _ = send(
        server, "OPTIONS", events, Origin=SHOP, Access_Control_Request_Method="POST"
    )
    assert (status, headers["access-control-allow-origin"], headers["vary"]) == (
        204,
        SHOP,
        "Origin",
    )
    status, headers, _ = send(server, "POST", events, batch, Origin=SHOP, Content_Type=text)
    assert (status, headers["access-control-allow-origin"]) == (202, SHOP)
    assert len(server.stored()) == 1

    evil = "https://evil.example"
    status, headers, _ = send(server, "POST", events, b"{}", Origin=evil, Content_Type=text)
    assert (status, headers["access-control-allow-origin"]) == (403, evil)  # seen, dropped
    identify = json.dumps({"known_identities": {"customerid": "ada"}}).encode()
    status, headers, _ = send(
        server, "POST", "/identity/v1/identify", identify, Origin=evil, X_MP_Key=shop.key,
        Content_Type="application/json",
    )  # fmt: skip
    assert status == 403
    assert len(server.stored()) == 1

    # an open web input: any origin, on every Web SDK path, errors included
    for method, path in (
        ("OPTIONS", f"/webevents/v3/JS/{blog.key}/events"),
        ("OPTIONS", "/identity/v1/identify"),
        ("OPTIONS", f"/webevents/v1/identity/{blog.key}/Alias"),
        ("OPTIONS", f"/tags/JS/v2/{blog.key}/config"),
        ("OPTIONS", f"/nativesdks/v1/{blog.key}/audience"),
        ("POST", "/webevents/v3/JS/pk_unknown/events"),
        ("GET", f"/nativesdks/v1/{blog.key}/audience?mpid=x"),
        ("GET", "/tags/JS/v2/pk_unknown/nothing"),
    ):
        status, headers, _ = send(server, method, path, Origin=evil)
        assert status in (204, 401, 404, 422), (method, path, status)
        assert headers["access-control-allow-origin"] == "*", (method, path)
