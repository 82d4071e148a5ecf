"""``GET /nativesdks/v1/{key}/audience?mpid=N`` against a real ``patchbay serve`` (the
conftest ``server``): the audience ids of a user the web input has seen, computed by the
segment stage from a batch the Web SDK uploaded; nothing for other users; 401, 422 and the
input's rate limit."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest

from tests.activate.test_engine_support import wait_for
from tests.conftest import Server, add_input, run_cli
from tests.segment.test_process import wait_for_segment_lead

pytestmark = pytest.mark.slow


def get(server: Server, path: str) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Accept": "*/*", "Origin": "https://s.example"})
        response = connection.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, json.loads(response.read())
    finally:
        connection.close()


def upload(server: Server, key: str, mpid: str, tier: str) -> None:
    batch = {"source_request_id": f"r-{mpid}", "mpid": mpid, "user_attributes": {"tier": tier}}
    status, _, body = server.post(
        f"/webevents/v3/JS/{key}/events",
        json.dumps(batch).encode(),
        {"Content-Type": "text/plain;charset=UTF-8"},
        auth=None,
    )
    assert status == 202, body


def test_the_audiences_of_a_user_the_web_input_has_seen(
    server: Server, data_dir: Path, tmp_path: Path
) -> None:
    site = add_input(data_dir, "site", "web")
    other = add_input(data_dir, "other-site", "web")
    definition = {
        "name": "gold",
        "criteria": {"user_attribute": "tier", "op": "eq", "value": "gold"},
    }
    path = tmp_path / "gold.json"
    path.write_text(json.dumps(definition))
    done = run_cli("audiences", "create", str(path), "--json", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    audience_id = json.loads(done.stdout)["id"]
    wait_for_segment_lead(server)

    upload(server, site.key, "4242", "gold")
    upload(server, other.key, "4343", "gold")  # a member the site has not seen
    audience = f"/nativesdks/v1/{site.key}/audience?mpid="

    def memberships(mpid: str) -> list[dict[str, Any]]:
        status, headers, body = get(server, audience + mpid)
        assert status == 200, body
        assert headers["access-control-allow-origin"] == "*"
        assert body["dt"] == "cam" and isinstance(body["ct"], int) and body["id"]
        found: list[dict[str, Any]] = body["audience_memberships"]
        return found

    wait_for(lambda: memberships("4242") != [], what="the site's user in the audience")
    assert memberships("4242") == [{"audience_id": audience_id}]
    other_audience = f"/nativesdks/v1/{other.key}/audience?mpid=4343"
    wait_for(lambda: get(server, other_audience)[2]["audience_memberships"] != [], what="4343")
    assert memberships("4343") == []  # in the audience, but not seen by this input
    assert memberships("999999") == []  # no such user

    for query, status in (("mpid=abc", 422), ("mpid=99999999999999999999", 422), ("", 422)):
        answer = get(server, f"/nativesdks/v1/{site.key}/audience?{query}")
        assert answer[0] == status, query
        assert answer[2]["errors"][0]["message"].startswith("mpid: ")
    for key in ("pk_unknown", server.credentials.key):
        status, headers, body = get(server, f"/nativesdks/v1/{key}/audience?mpid=4242")
        assert status == 401
        assert body["errors"][0]["code"] == "UNAUTHORIZED"
        assert headers["access-control-allow-origin"] == "*"

    # the input's rate limit (the Events API's, per second) applies here too
    limited = add_input(data_dir, "limited-site", "web", rate_limit=1)
    answers = [get(server, f"/nativesdks/v1/{limited.key}/audience?mpid=1") for _ in range(5)]
    assert answers[0][0] == 200
    refused = [a for a in answers if a[0] == 429]
    assert refused, [a[0] for a in answers]
    assert refused[0][1]["retry-after"] == "1"
    assert refused[0][2]["errors"][0]["code"] == "TOO_MANY_REQUESTS"
