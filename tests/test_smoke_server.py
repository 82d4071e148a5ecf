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
