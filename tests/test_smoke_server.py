"""The server starts, answers health checks and stores a batch."""

from __future__ import annotations

import json

from tests.conftest import Server


def test_health_and_one_batch(server: Server) -> None:
    status, body = server.get("/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    status, _, answer = server.post("/v2/events", b'{"events": []}')
    assert status == 202, answer
    assert json.loads(answer) == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert len(server.stored()) == 1


def test_unknown_routes_and_wrong_methods_answer_json(server: Server) -> None:
    status, body = server.get("/no/such/route")
    assert status == 404
    assert json.loads(body) == {
        "errors": [{"code": "NOT_FOUND", "message": "GET /no/such/route: no such route"}]
    }
    status, body = server.get("/v2/events")
    assert status == 405
    assert json.loads(body)["errors"][0]["code"] == "METHOD_NOT_ALLOWED"
    status, body = server.get("/metrics")
    assert 'patchbay_http_requests_total{route="unmatched",status="404"} 1.0' in body.decode()
    assert 'patchbay_http_requests_total{route="/v2/events",status="405"} 1.0' in body.decode()
