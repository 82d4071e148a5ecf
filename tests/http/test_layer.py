"""The HTTP layer: one error shape, CORS and request metrics, on a small app built like
``create_app``'s (the same middleware and exception handlers), driven over ASGI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from patchbay.errors import ResolveConflict, StorageFull
from patchbay.http import EXCEPTION_HANDLERS, middleware
from patchbay.http.cors import CorsPolicy
from patchbay.http.errors import HttpError, error_response
from patchbay.http.request_metrics import UNMATCHED
from patchbay.metrics import Metrics

Answer = tuple[int, dict[str, str], bytes]


async def _ok(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


async def _boom(request: Request) -> Response:
    raise RuntimeError("secret internals")


async def _refuse(request: Request) -> Response:
    raise HttpError(403, "FORBIDDEN", "x-mp-key: unknown key")


async def _full(request: Request) -> Response:
    raise StorageFull("/srv/patchbay/state.db", "database or disk is full")


async def _conflict(request: Request) -> Response:
    raise ResolveConflict("the profile of 42 changed since read")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def app(metrics: Metrics) -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id}", _ok, methods=["GET"]),
            Route("/boom", _boom, methods=["GET"]),
            Route("/v1/{mpid}/modify", _ok, methods=["POST"]),
            Route("/v1/refuse", _refuse, methods=["POST"]),
            Route("/v1/full", _full, methods=["POST"]),
            Route("/v1/conflict", _conflict, methods=["POST"]),
        ],
        middleware=middleware(metrics, CorsPolicy(("/v1/",))),
        exception_handlers=EXCEPTION_HANDLERS,
    )


def call(
    app: Starlette,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Answer:
    """One request straight to the ASGI app (``path`` may have a query string): status,
    lower-cased headers, body."""
    messages: list[Message] = []
    path, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except RuntimeError as exc:  # Starlette re-raises after answering 500
            assert str(exc) == "secret internals"

    asyncio.run(run())
    start = messages[0]
    answered = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, answered


def one_error(answer: Answer) -> dict[str, str]:
    """The only error of an answer in the one shape."""
    _, headers, body = answer
    assert headers["content-type"] == "application/json"
    parsed = json.loads(body)
    assert list(parsed) == ["errors"], parsed
    (error,) = parsed["errors"]
    assert sorted(error) == ["code", "message"]
    return dict(error)


def test_an_unknown_route_is_a_json_404(app: Starlette) -> None:
    answer = call(app, "GET", "/nowhere")
    assert answer[0] == 404
    assert one_error(answer) == {"code": "NOT_FOUND", "message": "GET /nowhere: no such route"}


def test_a_wrong_method_is_a_json_405_with_allow(app: Starlette) -> None:
    answer = call(app, "DELETE", "/items/7")
    assert answer[0] == 405
    assert set(answer[1]["allow"].split(", ")) == {"GET", "HEAD"}
    error = one_error(answer)
    assert error["code"] == "METHOD_NOT_ALLOWED"
    assert error["message"].startswith("DELETE /items/7: method not allowed")


def test_an_exception_is_a_json_500_without_internals(app: Starlette) -> None:
    answer = call(app, "GET", "/boom")
    assert answer[0] == 500
    assert one_error(answer) == {"code": "INTERNAL_SERVER_ERROR", "message": "internal error"}
    assert b"secret" not in answer[2]


def test_a_raised_http_error_answers_in_the_shape(app: Starlette) -> None:
    answer = call(app, "POST", "/v1/refuse")
    assert answer[0] == 403
    assert one_error(answer) == {"code": "FORBIDDEN", "message": "x-mp-key: unknown key"}
    assert answer[1]["access-control-allow-origin"] == "*"


def test_a_full_store_is_a_json_503_with_retry_after(app: Starlette) -> None:
    """Every API (IDSync, the Profile API...) answers a write the store had no room for so,
    without naming where the store is."""
    answer = call(app, "POST", "/v1/full")
    assert answer[0] == 503
    assert answer[1]["retry-after"] == "30"
    assert one_error(answer) == {
        "code": "STORAGE_FULL",
        "message": "the server's storage is full: nothing was stored; retry later",
    }
    assert b"/srv" not in answer[2]


def test_an_identity_change_that_kept_conflicting_is_a_json_503_with_retry_after(
    app: Starlette,
) -> None:
    """IDSync answers a change other resolvers kept invalidating (after its retries) so,
    without naming the user."""
    answer = call(app, "POST", "/v1/conflict")
    assert answer[0] == 503
    assert answer[1]["retry-after"] == "1"
    assert one_error(answer)["code"] == "RESOLVE_CONFLICT"
    assert b"42" not in answer[2]


def test_the_legacy_shape_adds_error_beside_errors() -> None:
    response = error_response(404, "NOT_FOUND", "no output x", legacy=True)
    assert json.loads(response.body) == {
        "errors": [{"code": "NOT_FOUND", "message": "no output x"}],
        "error": "no output x",
    }


def test_cors_preflight(app: Starlette) -> None:
    status, headers, body = call(
        app,
        "OPTIONS",
        "/v1/42/modify",
        {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-mp-key"} <= allowed
    assert headers["access-control-max-age"] == "86400"


def test_cors_on_simple_requests_of_covered_paths_only(app: Starlette) -> None:
    status, headers, _ = call(app, "POST", "/v1/42/modify", {"Origin": "https://shop.example"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "*"
    status, headers, _ = call(app, "GET", "/items/1", {"Origin": "https://shop.example"})
    assert status == 200
    assert "access-control-allow-origin" not in headers
    status, headers, _ = call(app, "OPTIONS", "/items/1", {"Origin": "https://shop.example"})
    assert status == 405
    assert "access-control-allow-origin" not in headers


def count(metrics: Metrics, route: str, status: int) -> float:
    value = metrics.registry.get_sample_value(
        "patchbay_http_requests_total", {"route": route, "status": str(status)}
    )
    return value or 0.0


def test_requests_are_counted_per_route_template_and_status(
    app: Starlette, metrics: Metrics
) -> None:
    call(app, "GET", "/items/1")
    call(app, "GET", "/items/2")
    call(app, "DELETE", "/items/3")
    call(app, "GET", "/boom")
    call(app, "GET", "/nowhere")
    call(app, "GET", "/elsewhere")
    call(app, "OPTIONS", "/v1/42/modify")
    assert count(metrics, "/items/{item_id}", 200) == 2
    assert count(metrics, "/items/{item_id}", 405) == 1
    assert count(metrics, "/boom", 500) == 1
    assert count(metrics, UNMATCHED, 404) == 2
    assert count(metrics, "/v1/{mpid}/modify", 204) == 1
    assert count(metrics, "/items/1", 200) == 0
    text = metrics.render().decode()
    assert 'route="/items/1"' not in text
    assert 'route="/nowhere"' not in text
    histogram = "patchbay_http_request_duration_seconds"
    assert (
        metrics.registry.get_sample_value(f"{histogram}_count", {"route": "/items/{item_id}"}) == 3
    )
    assert f'{histogram}_bucket{{le="0.001",route="/boom"}}' in text
