"""Kits end to end on a running ``patchbay serve``: the Braze example registered and
connected with the real CLI, the Web SDK's config over HTTP, forwarding statistics in
``/metrics`` and in ``kits show`` (after a restart too), and the admin HTTP API."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from patchbay.kits.hashing import event_name_hash, event_type_hash, user_attribute_hash
from patchbay.kits.service import subscription_id, workspace_token
from tests.conftest import Server, add_input, run_cli, start_server, stop_server

EXAMPLES = Path(__file__).parents[2] / "examples" / "kits"
TEXT = {"Content-Type": "text/plain;charset=UTF-8"}
TOKEN = "admin-token-kits"


def ok(*args: str, data_dir: Path) -> str:
    done = run_cli(*args, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    return done.stdout


def config(server: Server, key: str, env: int = 0) -> tuple[int, dict[str, Any]]:
    status, body = server.get(f"/tags/JS/v2/{key}/config?env={env}&plan_id=p&plan_version=2")
    return status, json.loads(body)


def wait_for(check: Any, what: str) -> Any:
    deadline = time.monotonic() + 15
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_braze_config_and_forwarding(server: Server) -> None:
    web = add_input(server.data_dir, "site", "web")
    status, before = config(server, web.key)
    assert status == 200 and before["kitConfigs"] == []
    registered = json.loads(
        ok("kits", "register", str(EXAMPLES / "braze.json"), "--json", data_dir=server.data_dir)
    )
    assert registered["key"] == "Appboy-v4" and registered["action"] == "register"
    connected = json.loads(
        ok(
            "kits",
            "connect",
            "Appboy",
            "--input",
            "site",
            "--setting",
            "apiKey=braze-secret-key",
            "--setting",
            'cluster={"JS":"localhost:8444/braze"}',
            "--setting",
            "userIdentificationType=MPID",
            "--setting",
            "doNotLoadFontAwesome=true",
            "--exclude-event-type",
            "Navigation",
            "--exclude-event-name",
            "Clicked Buy",
            "--exclude-event-name",
            "Transaction:Refund",
            "--exclude-screen-name",
            "Checkout",
            "--exclude-user-attribute",
            "age",
            "--exclude-user-identity",
            "email",
            "--json",
            data_dir=server.data_dir,
        )
    )
    assert connected["settings"]["apiKey"] == "***"
    # the server sees the change within about a second
    body = wait_for(lambda: (b := config(server, web.key)[1])["kitConfigs"] and b, "the config")
    assert body["appName"] == "site"
    assert body["workspaceToken"] == workspace_token(web.id)
    assert body["minWebviewBridgeVersion"] == 2
    assert body["flags"] == {"eventBatchingIntervalMillis": "5000"}
    assert body["pixelConfigs"] == [] and "dataPlanResult" not in body
    assert body["kitConfigs"] == [
        {
            "name": "Appboy",
            "suffix": "v4",
            "moduleId": 28,
            "isDebug": False,
            "isVisible": True,
            "isDebugString": "false",
            "hasDebugString": "false",
            "settings": {
                "apiKey": "braze-secret-key",
                "cluster": '{"JS":"localhost:8444/braze"}',
                "userIdentificationType": "MPID",
                "doNotLoadFontAwesome": "True",
                "enableHtmlInAppMessages": "False",
                "register_inapp": "True",
                "forwardScreenViews": "False",
                "setEventNameForPageView": "False",
                "bundleCommerceEventData": "False",
                "forwardSkuAsProductName": "False",
                "ABKSessionTimeoutKey": "1800",
            },
            "eventSubscriptionId": subscription_id("Appboy-v4", web.id, False),
            "excludeAnonymousUser": False,
            "eventTypeFilters": [event_type_hash(1)],
            "eventNameFilters": [
                *(event_name_hash(t, "Clicked Buy") for t in range(10)),
                event_name_hash(4, "Refund"),
            ],
            "screenNameFilters": [event_name_hash(0, "Checkout")],
            "screenAttributeFilters": [],
            "attributeFilters": [],
            "userAttributeFilters": [user_attribute_hash("age")],
            "userIdentityFilters": [7],
            "consentRegulationFilters": [],
            "consentRegulationPurposeFilters": [],
            "messageTypeFilters": [],
            "messageTypeStateFilters": [],
        }
    ]
    assert config(server, web.key, env=1)[1]["kitConfigs"] == []
    # a key that is no web input's
    status, error = config(server, server.credentials.key)
    assert status == 401 and error["errors"][0]["code"] == "UNAUTHORIZED"
    assert config(server, "pk_nobody")[0] == 401

    # forwarding statistics
    stat = {"mid": 28, "esid": 1, "n": "Bought", "dt": 4, "et": 8, "dbg": False, "ct": 1}
    single = json.dumps(stat).encode()
    for _ in range(2):
        status, _, _ = server.post(f"/webevents/v1/JS/{web.key}/Forwarding", single, TEXT, None)
        assert status == 202
    batch = {"uuid": "u-1", "data": [{**stat, "dt": 3}, {**stat, "mid": 999}]}
    status, _, _ = server.post(
        f"/webevents/v2/JS/{web.key}/Forwarding", json.dumps(batch).encode(), TEXT, None
    )
    assert status == 202
    for bad in (b"{", b"[]", b'{"mid": "x"}', b'{"data": 3}'):
        for version in ("v1", "v2"):
            path = f"/webevents/{version}/JS/{web.key}/Forwarding"
            status, _, answer = server.post(path, bad, TEXT, None)
            assert status == 422, (version, bad)
            assert json.loads(answer)["errors"][0]["code"] == "UNPROCESSABLE_ENTITY"
    status, _, _ = server.post("/webevents/v1/JS/pk_nobody/Forwarding", single, TEXT, None)
    assert status == 401
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    for line in (
        'patchbay_kit_forwarded_events_total{event_type="custom_event",input="site",kit="Appboy"}'
        " 2.0",
        'patchbay_kit_forwarded_events_total{event_type="screen_view",input="site",kit="Appboy"}'
        " 1.0",
        'patchbay_kit_forwarded_events_total{event_type="custom_event",input="site",kit="999"} 1.0',
    ):
        assert line in metrics

    def shown() -> dict[str, Any]:
        return dict(json.loads(ok("kits", "show", "Appboy", "--json", data_dir=server.data_dir)))

    kit = wait_for(lambda: (k := shown())["forwarded"]["events"] == 3 and k, "the totals")
    assert kit["forwarded"]["last_seen"] is not None
    [connection] = kit["connections"]
    assert connection["input"] == "site" and connection["environment"] == "production"
    assert connection["settings"]["apiKey"] == "***"
    assert "braze-secret-key" not in server.log_path.read_text()
    stop_server(server)
    assert shown()["forwarded"]["events"] == 3


def test_cli_errors_and_unregister(server: Server) -> None:
    data_dir = server.data_dir
    add_input(data_dir, "site", "web")
    bad = data_dir.parent / "bad.json"
    bad.write_text(json.dumps({"name": "A-B", "module_id": "7", "settings": [{"type": "x"}]}))
    done = run_cli("kits", "register", str(bad), data_dir=data_dir)
    assert done.returncode == 1
    assert "error: $.name:" in done.stderr and "error: $.module_id:" in done.stderr
    assert "error: $.settings[0].type:" in done.stderr and "nothing stored" in done.stderr
    assert "KIT" in ok("kits", "list", data_dir=data_dir)
    assert ok("kits", "list", "--json", data_dir=data_dir) == ""
    for example in sorted(EXAMPLES.glob("*.json")):
        assert "registered kit" in ok("kits", "register", str(example), data_dir=data_dir)
    assert "updated kit 'Appboy-v4'" in ok(
        "kits", "register", str(EXAMPLES / "braze.json"), data_dir=data_dir
    )
    listed = [
        json.loads(line) for line in ok("kits", "list", "--json", data_dir=data_dir).splitlines()
    ]
    assert [k["key"] for k in listed] == [
        "Amplitude",
        "Appboy-v4",
        "GoogleAnalyticsEventForwarder",
        "MixpanelEventForwarder",
    ]
    refused = run_cli("kits", "connect", "Amplitude", "--input", "test-server", data_dir=data_dir)
    assert refused.returncode == 1 and "web inputs only" in refused.stderr
    refused = run_cli(
        "kits",
        "connect",
        "Amplitude",
        "--input",
        "site",
        "--setting",
        "colour=red",
        "--setting",
        "uploadBatchSize=many",
        data_dir=data_dir,
    )
    assert refused.returncode == 1
    for part in (
        "'apiKey'",
        "unknown kit setting 'colour'",
        "'uploadBatchSize' must be an integer",
    ):
        assert part in refused.stderr
    ok(
        "kits",
        "connect",
        "Amplitude",
        "--input",
        "site",
        "--setting",
        "apiKey=a",
        data_dir=data_dir,
    )
    ok(
        "kits",
        "connect",
        "Amplitude",
        "--input",
        "site",
        "--setting",
        "apiKey=b",
        "--development",
        data_dir=data_dir,
    )
    rows = [line.split() for line in ok("kits", "list", data_dir=data_dir).splitlines()]
    assert ["Amplitude", "53", "15", "2"] in rows
    refused = run_cli("kits", "unregister", "Amplitude", data_dir=data_dir)
    assert refused.returncode == 1 and "connected to 2 input(s)" in refused.stderr
    ok("kits", "disconnect", "Amplitude", "--input", "site", data_dir=data_dir)
    assert "(development)" in ok(
        "kits", "disconnect", "Amplitude", "--input", "site", "--development", data_dir=data_dir
    )
    assert "unregistered kit 'Amplitude'" in ok(
        "kits", "unregister", "Amplitude", data_dir=data_dir
    )
    shown = run_cli("kits", "show", "Amplitude", data_dir=data_dir)
    assert shown.returncode == 1 and "no kit named 'Amplitude'" in shown.stderr
    text = ok("kits", "show", "Appboy-v4", data_dir=data_dir)
    assert "apiKey (text, required, confidential)" in text


def request(
    url: str, method: str, path: str, body: Any = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_admin_api(data_dir: Path) -> None:
    web = add_input(data_dir, "site", "web")
    server = start_server(data_dir, "--admin-token", TOKEN)
    try:
        url, base = server.url, "/admin/v1/kits"
        assert request(url, "GET", base, token=None)[0] == 401
        descriptor = json.loads((EXAMPLES / "mixpanel.json").read_text())
        status, kit = request(url, "POST", base, descriptor)
        assert status == 201 and kit["key"] == "MixpanelEventForwarder"
        assert request(url, "POST", base, descriptor)[1]["action"] == "update"
        status, error = request(url, "POST", base, {**descriptor, "module_id": "x"})
        assert status == 400 and error["errors"][0]["message"].startswith("$.module_id:")
        status, error = request(
            url, "POST", f"{base}/MixpanelEventForwarder/connections", {"input": "site"}
        )
        assert status == 400 and "'token'" in error["error"]
        connection = {
            "input": "site",
            "settings": {"token": "mp-token", "useMixpanelPeople": "true"},
            "development": True,
            "exclude": {"event_types": ["Search"]},
        }
        status, made = request(
            url, "POST", f"{base}/MixpanelEventForwarder/connections", connection
        )
        assert status == 201 and made["environment"] == "development"
        body = wait_for(
            lambda: (b := config(server, web.key, env=1)[1])["kitConfigs"] and b, "the config"
        )
        [entry] = body["kitConfigs"]
        assert entry["isDebug"] is True and entry["eventTypeFilters"] == [event_type_hash(3)]
        assert entry["settings"]["useMixpanelPeople"] == "True" and "suffix" not in entry
        assert request(url, "GET", base)[1][0]["connections"] == 1
        assert (
            request(url, "GET", f"{base}/MixpanelEventForwarder")[1]["connections"][0]["settings"][
                "token"
            ]
            == "mp-token"
        )
        assert request(url, "DELETE", f"{base}/MixpanelEventForwarder")[0] == 400
        path = f"{base}/MixpanelEventForwarder/connections/site"
        assert request(url, "DELETE", path)[0] == 404
        assert request(url, "DELETE", path + "?development=true")[0] == 200
        assert request(url, "DELETE", f"{base}/MixpanelEventForwarder")[0] == 200
        assert request(url, "GET", f"{base}/MixpanelEventForwarder")[0] == 404
        wait_for(lambda: config(server, web.key, env=1)[1]["kitConfigs"] == [], "the removal")
    finally:
        stop_server(server)
