"""``patchbay partner verify``: passes against the example partner over HTTP and through the
local Lambda server, and fails with a precise reason against partners broken on purpose."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from examples.sqlite_partner.http import build_app
from patchbay.firehose import (
    AudienceSubscriptionResponse,
    EventProcessingRequest,
    EventProcessingResponse,
    ModuleRegistrationResponse,
    dumps,
    parse,
    to_dict,
)
from patchbay.firehose.lambda_handler import lambda_handler
from patchbay.partner.lambda_local import LocalLambda
from patchbay.partner.transport import HttpTarget
from patchbay.partner.verify import (
    CheckResult,
    Status,
    VerifyReport,
    audience_membership_change_request,
    dsr_processing_request,
    event_processing_request,
    verify,
)
from tests.conftest import create_store, run_cli
from tests.partner.partners import (
    TOKEN,
    Answer,
    DemoPartner,
    ScriptedPartner,
    answer_json,
    demo_registration,
    demo_script,
    serving,
)

pytestmark = pytest.mark.slow

#: Generous, so that a busy machine cannot turn a passing partner into a failing one.
RELAXED_BUDGET = ["--latency-budget-ms", "5000"]

EXAMPLE_CHECKS = [
    "transport",
    "registration",
    "registration.settings",
    "registration.permissions",
    "registration.supported_types",
    "event_processing",
    "event_processing.runtimes",
    "event_processing.verification",
    "audience_subscription.add",
    "audience_membership_change.add",
    "audience_membership_change.delete",
    "audience_membership_change.attribute_update",
    "audience_membership_change.verification",
    "audience_subscription.remove",
    "dsr_processing",
    "latency",
]


def _verify_cli(
    tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = tmp_path / "report.json"
    done = run_cli("partner", "verify", *args, "--report", str(report), data_dir=tmp_path / "data")
    assert report.exists(), done.stderr
    return done, json.loads(report.read_text())


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report["checks"]}


# --------------------------------------------------------------------------- the example


@pytest.fixture
def example_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "partner.db"
    monkeypatch.setenv("SQLITE_PARTNER_DB", str(db))
    return db


def test_example_partner_passes_over_http(tmp_path: Path, example_db: Path) -> None:
    with serving(build_app(str(example_db), TOKEN)) as url:
        done, report = _verify_cli(tmp_path, "--url", url, "--token", TOKEN, *RELAXED_BUDGET)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = _checks(report)
    assert list(checks) == EXAMPLE_CHECKS
    # plain HTTP on loopback is only a warning; everything else passes
    assert checks["transport"]["result"] == "WARN"
    assert {c["result"] for name, c in checks.items() if name != "transport"} == {"PASS"}
    assert report["result"] == "WARN"
    assert report["transport"] == "http"
    assert report["target"] == url
    assert report["module"] == {"name": "SQLite Example", "version": "1.0.0"}
    assert report["latency_budget_ms"] == 5000
    assert report["counts"] == {"PASS": 15, "WARN": 1, "FAIL": 0, "SKIP": 0}
    assert checks["event_processing"]["request_type"] == "event_processing_request"
    assert checks["event_processing"]["response_type"] == "event_processing_response"
    assert checks["event_processing"]["latency_ms"] > 0
    assert "6 events" in checks["event_processing"]["detail"]
    # the table
    lines = done.stdout.splitlines()
    assert lines[0] == f"verifying {url}"
    assert lines[1].split() == ["CHECK", "RESULT", "LATENCY", "MS", "DETAIL"]
    assert lines[2].split()[:2] == ["transport", "WARN"]
    assert lines[-1] == "WARN: 15 passed, 1 warned, 0 failed, 0 skipped"
    assert TOKEN not in done.stdout + done.stderr + json.dumps(report)
    # what the partner stored came from the verification requests
    assert example_db.exists()


def test_example_partner_passes_through_the_local_lambda(
    aws_env: None, tmp_path: Path, example_db: Path
) -> None:
    functions = {"sqlite-partner": "examples.sqlite_partner.handler:handler"}
    with LocalLambda(functions).serve() as server:
        done, report = _verify_cli(
            tmp_path, "--lambda", "sqlite-partner", "--endpoint-url", server.url, *RELAXED_BUDGET
        )
    assert done.returncode == 0, done.stdout + done.stderr
    checks = _checks(report)
    assert list(checks) == EXAMPLE_CHECKS
    assert {c["result"] for c in checks.values()} == {"PASS"}
    assert report["result"] == "PASS"
    assert report["transport"] == "lambda"
    assert "AWS Lambda function sqlite-partner" in checks["transport"]["detail"]


def test_verify_a_registered_module(tmp_path: Path, example_db: Path) -> None:
    data_dir = create_store(tmp_path / "data")
    with serving(build_app(str(example_db), TOKEN)) as url:
        done = run_cli(
            "modules", "register", "sqlite", "--url", url, "--token", TOKEN, data_dir=data_dir
        )
        assert done.returncode == 0, done.stderr
        done, report = _verify_cli(tmp_path, "--module", "sqlite", *RELAXED_BUDGET)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["module"]["name"] == "SQLite Example"
    done = run_cli("partner", "verify", "--module", "nope", data_dir=data_dir)
    assert done.returncode == 1
    assert "no module named 'nope'" in done.stderr


# --------------------------------------------------------------------------- broken on purpose


def _on(kind: str, answer: Callable[[dict[str, Any], dict[str, Any]], Answer]) -> Any:
    """A change that replaces the answers to requests of type ``kind``."""

    def change(request: dict[str, Any], normal: dict[str, Any]) -> Answer | None:
        return answer(request, normal) if request.get("type") == kind else None

    return change


def _without_id(request: dict[str, Any], normal: dict[str, Any]) -> Answer | None:
    if request["type"] == "module_registration_request":
        return None
    return answer_json({k: v for k, v in normal.items() if k != "id"})


BROKEN = [
    pytest.param(
        {
            "change": _on(
                "event_processing_request",
                lambda r, n: answer_json(to_dict(AudienceSubscriptionResponse())),
            )
        },
        "event_processing",
        "wrong response type: expected event_processing_response, got"
        " audience_subscription_response",
        id="wrong-response-type",
    ),
    pytest.param(
        {"change": _without_id},
        "event_processing",
        "the response has no `id` (required: a UUID)",
        id="missing-id",
    ),
    pytest.param(
        {"change": _on("event_processing_request", lambda r, n: answer_json(n, delay_s=0.6))},
        "latency",
        "too slow: median 6",
        id="slow",
    ),
    pytest.param(
        {
            "change": _on(
                "event_processing_request",
                lambda r, n: Answer(500, b'{"error": "internal", "message": "db locked"}'),
            )
        },
        "event_processing",
        'HTTP 500: {"error": "internal", "message": "db locked"}',
        id="http-500",
    ),
    pytest.param(
        {
            "change": _on(
                "audience_subscription_request",
                lambda r, n: answer_json(
                    to_dict(AudienceSubscriptionResponse(audience_subscription_settings={"x": "1"}))
                ),
            )
        },
        "audience_subscription.add",
        "returned audience_subscription_settings that are not registered: 'x'",
        id="unregistered-subscription-setting",
    ),
    pytest.param(
        {
            "change": _on(
                "audience_membership_change_request",
                lambda r, n: answer_json({**n, "suspend_subscription": "sometimes"}),
            )
        },
        "audience_membership_change.add",
        "invalid answer: the answer is not a Firehose message: Expected `bool`, got `str`"
        " - at `$.suspend_subscription`",
        id="audience-answer-not-strictly-valid",
    ),
    pytest.param(
        {
            "change": _on(
                "audience_membership_change_request",
                lambda r, n: answer_json(to_dict(EventProcessingResponse())),
            )
        },
        "audience_membership_change.verification",
        "wrong response type: expected audience_membership_change_response, got"
        " event_processing_response",
        id="audience-answer-wrong-type",
    ),
    pytest.param(
        {"registration": lambda r: r.pop("name")},
        "registration",
        "$.name: the module has no name",
        id="registration-missing-name",
    ),
    pytest.param(
        {
            "registration": lambda r: r["event_processing_registration"][
                "supported_event_types"
            ].append("page_view")
        },
        "registration.supported_types",
        "$.event_processing_registration.supported_event_types[6]: unknown event type 'page_view'",
        id="registration-unknown-event-type",
    ),
    pytest.param(
        {
            "registration": lambda r: r["event_processing_registration"]["account_settings"][0].pop(
                "name"
            )
        },
        "registration.settings",
        "$.event_processing_registration.account_settings[0].name: required setting 'apiKey'"
        " has no name",
        id="registration-required-setting-without-name",
    ),
    pytest.param(
        {
            "change": _on(
                "module_registration_request",
                lambda r, n: answer_json({**n, "type": "event_processing_response"}),
            )
        },
        "registration",
        "wrong response type: expected module_registration_response, got event_processing_response",
        id="registration-wrong-type",
    ),
]


@pytest.mark.parametrize(("broken", "check", "reason"), BROKEN)
def test_broken_partners_fail_with_a_precise_reason(
    tmp_path: Path, broken: dict[str, Any], check: str, reason: str
) -> None:
    registration = None
    if "registration" in broken:
        registration = to_dict(demo_registration())
        broken["registration"](registration)
    partner = ScriptedPartner(demo_script(registration=registration, change=broken.get("change")))
    with serving(partner) as url:
        done, report = _verify_cli(tmp_path, "--url", url, "--latency-samples", "3")
    assert done.returncode == 1, done.stdout
    assert report["result"] == "FAIL"
    result = _checks(report)[check]
    assert result["result"] == "FAIL", result
    assert reason in result["detail"]
    assert any(line.split()[:2] == [check, "FAIL"] for line in done.stdout.splitlines())
    if check.startswith("registration"):
        # nothing else can be checked without a registration
        assert _checks(report)["event_processing"]["result"] == "SKIP"


def test_slow_partner_warns_on_each_check(tmp_path: Path) -> None:
    change = _on("event_processing_request", lambda r, n: answer_json(n, delay_s=0.6))
    with serving(ScriptedPartner(demo_script(change=change))) as url:
        report = asyncio.run(verify(HttpTarget(url), latency_samples=1))
    by_name = {c.check: c for c in report.checks}
    assert by_name["event_processing"].status is Status.WARN
    assert by_name["event_processing"].detail.startswith("slow: ")
    assert "(budget 100 ms)" in by_name["event_processing"].detail
    assert by_name["latency"].status is Status.FAIL
    assert by_name["dsr_processing"].status is Status.PASS


def test_an_audience_only_partner_gets_the_audience_checks() -> None:
    registration = msgspec.structs.replace(
        demo_registration(), event_processing_registration=None, dsr_processing_registration=None
    )
    partner = ScriptedPartner(demo_script(DemoPartner(registration)))
    with serving(partner) as url:
        report = asyncio.run(verify(HttpTarget(url), latency_budget_ms=5000, latency_samples=2))
    by_name = {c.check: c for c in report.checks}
    assert list(by_name) == [
        "transport",
        "registration",
        "registration.settings",
        "registration.permissions",
        "registration.supported_types",
        "audience_subscription.add",
        "audience_membership_change.add",
        "audience_membership_change.delete",
        "audience_membership_change.attribute_update",
        "audience_membership_change.verification",
        "audience_subscription.remove",
        "latency",
    ]
    assert {c.status for name, c in by_name.items() if name != "transport"} == {Status.PASS}
    add = by_name["audience_subscription.add"]
    assert (add.request_type, add.response_type) == (
        "audience_subscription_request",
        "audience_subscription_response",
    )
    sent = [request for _, request in partner.requests]
    assert [r["type"] for r in sent] == [
        "module_registration_request",
        "audience_subscription_request",
        *["audience_membership_change_request"] * 4,
        "audience_subscription_request",
        *["audience_membership_change_request"] * 2,  # the latency samples
    ]
    subscribe, member_add, verification, remove = sent[1], sent[2], sent[5], sent[6]
    # the visible subscription settings, with placeholder values; the account's settings
    assert subscribe["action"] == "add"
    assert subscribe["audience_subscription_settings"] == {"listName": "verify-listName"}
    assert subscribe["account"]["account_settings"] == {"apiKey": "verify-apiKey"}
    # what the partner answered is sent back with the membership changes
    [profile] = member_add["user_profiles"]
    [audience] = profile["audiences"]
    assert audience["action"] == "add"
    assert audience["audience_subscription_settings"] == {
        "listName": "verify-listName",
        "listId": "L-77",
    }
    assert "user_profiles" not in verification
    assert remove["action"] == "remove"


def test_timeout_fails(tmp_path: Path) -> None:
    change = _on("dsr_processing_request", lambda r, n: answer_json(n, delay_s=1.5))
    with serving(ScriptedPartner(demo_script(change=change))) as url:
        done, report = _verify_cli(tmp_path, "--url", url, "--timeout", "0.3")
    assert done.returncode == 1
    assert _checks(report)["dsr_processing"]["detail"] == (
        f"timeout: no answer from {url} within 0.3 s"
    )


def _failing_events(event: Any, context: Any) -> dict[str, Any]:
    if event.get("type") == "event_processing_request" and event.get("events"):
        raise KeyError("apiKey")
    return lambda_handler(DemoPartner())(event, context)


def test_lambda_function_error_fails(aws_env: None, tmp_path: Path) -> None:
    with LocalLambda({"broken": _failing_events}).serve() as server:
        done, report = _verify_cli(tmp_path, "--lambda", "broken", "--endpoint-url", server.url)
    assert done.returncode == 1
    assert _checks(report)["event_processing"]["detail"] == (
        "function error (Unhandled): KeyError 'apiKey'"
    )
    assert _checks(report)["event_processing.verification"]["result"] == "PASS"


def test_unreachable_partner(tmp_path: Path) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    done, report = _verify_cli(tmp_path, "--url", url)
    assert done.returncode == 1
    assert _checks(report)["registration"]["detail"].startswith(f"cannot reach {url}")
    assert [c["result"] for c in report["checks"]][2:] == ["SKIP"] * 4


# --------------------------------------------------------------------------- the requests


def test_requests_follow_the_registration() -> None:
    registration = demo_registration()
    request = event_processing_request(registration)
    # it reads back as the same message, and carries every registered event type
    assert parse(to_dict(request)) == request
    events = registration.event_processing_registration
    assert events is not None
    assert [e.type for e in request.events] == events.supported_event_types
    assert request.runtime_environment is not None
    assert request.runtime_environment.type == "ios"
    assert request.account is not None
    assert request.account.account_settings == {
        "apiKey": "verify-secret-apiKey",
        "sandbox": "True",
        "batchSize": "10",
    }
    assert [(i.type, i.encoding) for i in request.user_identities] == [
        ("email", "sha256"),
        ("customer", "raw"),
    ]
    email = hashlib.sha256(b"verify.user@example.com").hexdigest()
    assert request.user_identities[0].value == email
    assert [i.type for i in request.partner_identities] == ["Demo_user_id"]
    assert request.mpid is not None  # allow_access_mpid
    assert request.consent_state is None  # no allow_consent_state
    assert request.device_application_stamp is None
    assert [n.type for n in request.system_notifications] == ["gdpr_consent_state"]
    receipt = next(e for e in request.events if e.type == "push_message_receipt")
    assert "demo" in json.loads(receipt.payload)
    empty = event_processing_request(registration, events=[])
    assert empty.events == []
    assert b'"events":[]' in dumps(empty)
    web = event_processing_request(registration, runtime="mobileweb")
    assert web.runtime_environment is not None and web.runtime_environment.type == "mobileweb"
    assert web.source_channel == "javascript"


def test_audience_and_dsr_requests() -> None:
    registration = demo_registration()
    verification = audience_membership_change_request(registration, None)
    assert verification.user_profiles is None
    assert "user_profiles" not in to_dict(verification)
    change = audience_membership_change_request(registration, "attribute_update", {"listId": "L"})
    assert change.user_profiles is not None
    [profile] = change.user_profiles
    [audience] = profile.audiences
    assert audience.action == "attribute_update"
    assert audience.audience_subscription_settings == {"listName": "verify-listName", "listId": "L"}
    assert [a.action for a in audience.user_attributes] == ["upsert", "upsert", "delete"]
    dsr = dsr_processing_request(registration)
    assert dsr.subject_request_type == "erasure"
    assert set(dsr.subject_identities) == {"email", "controller_customer_id"}
    assert parse(to_dict(dsr)) == dsr


def test_minimal_registration_gets_minimal_requests() -> None:
    registration = ModuleRegistrationResponse(name="x", version="1")
    request = event_processing_request(registration)
    assert isinstance(request, EventProcessingRequest)
    assert request.events == []
    assert request.user_identities == []
    assert request.runtime_environment is not None
    assert request.runtime_environment.type == "unknown"


def test_the_text_report() -> None:
    report = VerifyReport("https://partner.example/fh", "http", 100.0, started_at_ms=0)
    report.checks += [
        CheckResult("transport", Status.PASS, "HTTPS endpoint"),
        CheckResult("event_processing", Status.FAIL, "HTTP 500: boom", 12.345),
    ]
    assert report.to_text() == [
        "verifying https://partner.example/fh",
        "CHECK             RESULT  LATENCY MS  DETAIL",
        "transport         PASS             -  HTTPS endpoint",
        "event_processing  FAIL          12.3  HTTP 500: boom",
        "FAIL: 1 passed, 0 warned, 1 failed, 0 skipped",
    ]
    assert report.counts() == report.to_dict()["counts"]
