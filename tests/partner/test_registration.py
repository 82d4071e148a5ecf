"""Registering partner modules: over HTTP and Lambda, what is stored, the checks on the
registration, and the CLI (which never shows the token)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from patchbay.backends.abstract import ModuleStore
from patchbay.backends.sqlite import open_sqlite
from patchbay.firehose import ModuleRegistrationResponse, to_dict
from patchbay.firehose.asgi import asgi_app
from patchbay.firehose.lambda_handler import lambda_handler
from patchbay.partner.lambda_local import LocalLambda
from patchbay.partner.registration import (
    AccessRefusedError,
    RegistrationError,
    module_summary,
    register,
    registration_of,
    validate_registration,
)
from patchbay.partner.transport import (
    HttpTarget,
    LambdaTarget,
    PartnerConnectionError,
    UnexpectedResponseTypeError,
)
from tests.conftest import free_port, run_cli, wait_for_port
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


@pytest.fixture
def modules(data_dir: Path) -> Iterator[ModuleStore]:
    backend = open_sqlite(data_dir)
    yield backend.modules
    backend.close()


@pytest.fixture(scope="module")
def partner_url() -> Iterator[str]:
    """The demo partner over HTTP; it requires the token for everything but registration."""
    with serving(asgi_app(DemoPartner(), token=TOKEN)) as url:
        yield url


@pytest.fixture(scope="module")
def open_partner_url() -> Iterator[str]:
    """The demo partner over HTTP, accepting any caller (no token)."""
    with serving(asgi_app(DemoPartner(), token=None)) as url:
        yield url


@pytest.fixture(scope="module")
def lambda_url() -> Iterator[str]:
    with LocalLambda({"demo": lambda_handler(DemoPartner())}).serve() as server:
        yield server.url


def _registration_dict() -> dict[str, Any]:
    return to_dict(demo_registration())


# --------------------------------------------------------------------------- storing


def test_register_over_http_stores_the_module(modules: ModuleStore, partner_url: str) -> None:
    target = HttpTarget(partner_url, TOKEN)
    done = asyncio.run(register(modules, "demo", target, now_ms=1_700_000_000_000))
    assert not done.replaced
    assert done.warnings == []
    stored = modules.get_module("demo")
    assert stored == done.module
    assert stored is not None
    assert (stored.name, stored.display_name, stored.version) == ("demo", "Demo Partner", "2.1.0")
    assert stored.description == "Sends <b>events</b> and audiences to Demo."
    assert stored.sdk_version == "3.2.0"
    assert stored.target == HttpTarget(partner_url, TOKEN)
    assert stored.supported_event_types == [
        "session_start",
        "custom_event",
        "screen_view",
        "product_action",
        "push_message_receipt",
        "user_attribute_change",
    ]
    assert stored.supported_runtime_environments == ["ios", "android", "mobileweb"]
    assert stored.supported_system_notification_types == ["gdpr_consent_state"]
    assert stored.audience and stored.dsr
    assert stored.supported_dsr_types == ["erasure"]
    assert stored.permissions["allow_access_mpid"] is True
    assert stored.permissions["user_identities"] == [
        {"type": "email", "encoding": "sha256", "required": True},
        {"type": "customer", "encoding": "raw", "required": False},
    ]
    assert [s["id"] for s in stored.account_settings] == ["apiKey", "sandbox"]
    assert stored.account_settings[0]["confidential"] is True
    assert stored.account_settings[0]["required"] is True
    assert stored.connection_settings == [
        {
            "type": "integer",
            "id": "batchSize",
            "name": "Batch size",
            "visible": True,
            "min_value": 10,
            "max_value": 500,
            "required": False,
        }
    ]
    assert [s["id"] for s in stored.audience_subscription_settings] == ["listName", "listId"]
    assert stored.created_at_ms == stored.updated_at_ms == 1_700_000_000_000
    raw = json.loads(stored.registration)
    assert raw["type"] == "module_registration_response"
    assert raw["name"] == "Demo Partner"
    # the stored registration reads back into the model, and the target is callable again
    assert registration_of(stored).permissions == demo_registration().permissions
    assert stored.target == target


def test_register_over_lambda(aws_env: None, modules: ModuleStore, lambda_url: str) -> None:
    target = LambdaTarget("demo", region="eu-west-1", endpoint_url=lambda_url)
    done = asyncio.run(register(modules, "demo-lambda", target))
    stored = modules.get_module("demo-lambda")
    assert stored == done.module
    assert stored is not None
    assert stored.target == LambdaTarget("demo", "eu-west-1", lambda_url)
    assert stored.display_name == "Demo Partner"


def test_register_with_the_cli_over_lambda(aws_env: None, store_dir: Path, lambda_url: str) -> None:
    data_dir = store_dir
    done = run_cli(
        "modules",
        "register",
        "demo-fn",
        "--lambda",
        "demo",
        "--endpoint-url",
        lambda_url,
        data_dir=data_dir,
    )
    assert done.returncode == 0, done.stderr
    assert "registered module 'demo-fn': Demo Partner 2.1.0" in done.stdout
    assert "lambda_function:" in done.stdout
    backend = open_sqlite(data_dir)
    try:
        stored = backend.modules.get_module("demo-fn")
    finally:
        backend.close()
    assert stored is not None
    assert stored.target == LambdaTarget("demo", "us-east-1", lambda_url)


def test_reregistering_updates_the_module(modules: ModuleStore) -> None:
    registration = _registration_dict()
    partner = ScriptedPartner(demo_script(registration=registration))
    with serving(partner) as url:
        first = asyncio.run(register(modules, "demo", HttpTarget(url), now_ms=1_000))
        registration["version"] = "2.2.0"
        registration["event_processing_registration"]["supported_event_types"].append("error")
        second = asyncio.run(register(modules, "demo", HttpTarget(url, TOKEN), now_ms=5_000))
    assert not first.replaced and second.replaced
    stored = modules.get_module("demo")
    assert stored is not None
    assert stored.version == "2.2.0"
    assert stored.supported_event_types[-1] == "error"
    assert stored.target == HttpTarget(url, TOKEN)
    assert (stored.created_at_ms, stored.updated_at_ms) == (1_000, 5_000)
    history = modules.module_history("demo")
    assert [(h.version, h.registered_at_ms) for h in history] == [
        ("2.1.0", 1_000),
        ("2.2.0", 5_000),
    ]
    assert [m.name for m in modules.list_modules()] == ["demo"]


def test_the_registration_request_carries_no_token(modules: ModuleStore) -> None:
    partner = ScriptedPartner(demo_script())
    with serving(partner) as url:
        asyncio.run(register(modules, "demo", HttpTarget(url, TOKEN)))
    [(headers, request), (checked_headers, check)] = partner.requests
    assert request["type"] == "module_registration_request"
    assert "authorization" not in headers
    # then the token is tried on the verification request, as every later call sends it
    assert check["type"] == "event_processing_request"
    assert check["events"] == []
    assert checked_headers["authorization"] == f"Token {TOKEN}"


def test_delete_module(modules: ModuleStore, partner_url: str) -> None:
    asyncio.run(register(modules, "a", HttpTarget(partner_url, TOKEN)))
    asyncio.run(register(modules, "b", HttpTarget(partner_url, TOKEN)))
    assert [m.name for m in modules.list_modules()] == ["a", "b"]
    assert modules.delete_module("a")
    assert [m.name for m in modules.list_modules()] == ["b"]
    assert modules.module_history("a") == []


# --------------------------------------------------------------------------- checks


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(registration: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = registration
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()
_EPR = "event_processing_registration"

INVALID = [
    pytest.param(_set("name", _DELETE), "$.name: the module has no name", id="missing-name"),
    pytest.param(_set("version", " "), "$.version: the module has no version", id="blank-version"),
    pytest.param(
        _set("description", "x" * 231),
        "$.description: the description has 231 characters (at most 230)",
        id="long-description",
    ),
    pytest.param(
        lambda r: [
            r.pop(k)
            for k in (_EPR, "audience_processing_registration", "dsr_processing_registration")
        ],
        "$: registers no processing",
        id="no-processing",
    ),
    pytest.param(
        _set(f"{_EPR}.supported_event_types.1", "page_view"),
        f"$.{_EPR}.supported_event_types[1]: unknown event type 'page_view': expected one of"
        " 'session_start'",
        id="unknown-event-type",
    ),
    pytest.param(
        _set(f"{_EPR}.supported_event_types", []),
        "supported_event_types is empty",
        id="no-event-types",
    ),
    pytest.param(
        _set(f"{_EPR}.supported_event_types.1", "session_start"),
        "event type 'session_start' is listed twice",
        id="duplicate-event-type",
    ),
    pytest.param(
        _set(f"{_EPR}.supported_runtime_environments.0", "windows"),
        f"$.{_EPR}.supported_runtime_environments[0]: unknown runtime environment 'windows'",
        id="unknown-runtime",
    ),
    pytest.param(
        _set(f"{_EPR}.supported_runtime_environments", _DELETE),
        "supported_runtime_environments is empty",
        id="no-runtimes",
    ),
    pytest.param(
        _set(f"{_EPR}.push_messaging_provider_id", _DELETE),
        f"$.{_EPR}.push_messaging_provider_id: push_message_receipt is registered without a"
        " push_messaging_provider_id",
        id="push-without-provider",
    ),
    pytest.param(
        _set(f"{_EPR}.max_data_age_hours", 0),
        "max_data_age_hours is 0",
        id="max-data-age",
    ),
    pytest.param(
        _set(f"{_EPR}.account_settings.0.name", _DELETE),
        f"$.{_EPR}.account_settings[0].name: required setting 'apiKey' has no name",
        id="required-setting-without-name",
    ),
    pytest.param(
        _set(f"{_EPR}.account_settings.1.id", ""),
        f"$.{_EPR}.account_settings[1].id: setting without an id",
        id="setting-without-id",
    ),
    pytest.param(
        _set(f"{_EPR}.account_settings.0.type", "password"),
        f"$.{_EPR}.account_settings[0].type: setting 'apiKey' has unknown type 'password'",
        id="unknown-setting-type",
    ),
    pytest.param(
        _set(f"{_EPR}.event_connection_settings.0.id", "apiKey"),
        f"$.{_EPR}.event_connection_settings[0].id: duplicate setting id 'apiKey' (also at"
        f" $.{_EPR}.account_settings[0])",
        id="duplicate-setting-id",
    ),
    pytest.param(
        _set(f"{_EPR}.event_connection_settings.0.confidential", True),
        "setting 'batchSize': only text settings can be confidential",
        id="confidential-integer",
    ),
    pytest.param(
        _set(f"{_EPR}.account_settings.0.required", "yes"),
        "setting 'apiKey': required must be true or false, got 'yes'",
        id="required-not-boolean",
    ),
    pytest.param(
        _set(f"{_EPR}.event_connection_settings.0.min_value", 1000),
        "setting 'batchSize': min_value 1000 is above max_value 500",
        id="min-above-max",
    ),
    pytest.param(
        lambda r: r["permissions"]["partner_identities"].append(
            {"type": "Demo_other_id", "encoding": "raw"}
        ),
        "$.permissions.partner_identities: 2 partner identity permissions: at most one may be"
        " registered",
        id="two-partner-identities",
    ),
    pytest.param(
        _set("permissions.user_identities.1.type", "phone"),
        "$.permissions.user_identities[1].type: unknown user identity type 'phone'",
        id="unknown-identity-type",
    ),
    pytest.param(
        _set("permissions.device_identities.0.encoding", "base64"),
        "$.permissions.device_identities[0].encoding: unknown encoding 'base64'",
        id="unknown-encoding",
    ),
    pytest.param(
        _set("dsr_processing_registration.supported_dsr_types", []),
        "DSR processing is registered but supported_dsr_types is empty",
        id="dsr-without-types",
    ),
    pytest.param(
        _set(f"{_EPR}.authentication", {"type": "oauth2", "authorization_url": "https://a"}),
        f"$.{_EPR}.authentication.token_url: OAuth2 authentication without token_url",
        id="oauth-without-token-url",
    ),
    pytest.param(
        _set(
            "audience_processing_registration.bulk_configuration",
            {"bulk_forward_wait_in_minutes": 0},
        ),
        "bulk_forward_wait_in_minutes must be positive",
        id="bulk-zero",
    ),
    pytest.param(
        _set("permissions.user_identities", {"type": "email"}),
        "$.permissions.user_identities",
        id="wrong-json-type",
    ),
]


@pytest.mark.parametrize(("change", "reason"), INVALID)
def test_invalid_registrations_are_rejected_with_a_precise_reason(
    change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    registration = _registration_dict()
    change(registration)
    _, problems = validate_registration(json.dumps(registration))
    errors = [str(p) for p in problems if p.severity == "error"]
    assert any(reason in e for e in errors), errors


def test_a_valid_registration_has_no_problems() -> None:
    message, problems = validate_registration(json.dumps(_registration_dict()))
    assert problems == []
    assert isinstance(message, ModuleRegistrationResponse)


def test_warnings_do_not_reject() -> None:
    registration = _registration_dict()
    registration["permissions"]["allow_user_attributes"] = False
    del registration["description"]
    message, problems = validate_registration(json.dumps(registration))
    assert message is not None
    assert {p.severity for p in problems} == {"warning"}
    texts = [str(p) for p in problems]
    assert "$.description: no description" in texts
    assert any("user_attribute_change needs permissions.allow_user_attributes" in t for t in texts)


def test_not_a_registration() -> None:
    _, problems = validate_registration(b'{"type": "event_processing_response"}')
    assert [str(p) for p in problems] == [
        "$.type: expected 'module_registration_response', got 'event_processing_response'"
    ]
    _, problems = validate_registration(b"nope")
    assert str(problems[0]).startswith("$: not JSON")


def test_register_rejects_and_stores_nothing(modules: ModuleStore) -> None:
    registration = _registration_dict()
    del registration["name"]
    registration[_EPR]["supported_event_types"].append("page_view")
    partner = ScriptedPartner(demo_script(registration=registration))
    with serving(partner) as url, pytest.raises(RegistrationError) as caught:
        asyncio.run(register(modules, "demo", HttpTarget(url)))
    assert "$.name: the module has no name" in str(caught.value)
    assert "unknown event type 'page_view'" in str(caught.value)
    assert modules.get_module("demo") is None


def test_register_needs_a_registration_answer(modules: ModuleStore) -> None:
    wrong = ScriptedPartner(
        lambda request, headers: answer_json({"type": "event_processing_response"})
    )
    expected = "expected module_registration_response, got event_processing_response"
    with serving(wrong) as url, pytest.raises(UnexpectedResponseTypeError, match=expected):
        asyncio.run(register(modules, "demo", HttpTarget(url)))
    with pytest.raises(PartnerConnectionError):
        asyncio.run(register(modules, "demo", HttpTarget(f"http://127.0.0.1:{free_port()}")))
    with pytest.raises(ValueError, match="invalid module name"):
        asyncio.run(register(modules, "no spaces", HttpTarget("http://127.0.0.1:1")))


# --------------------------------------------------------------------------- CLI


def test_cli_register_failure_exits_non_zero_with_the_reason(store_dir: Path) -> None:
    data_dir = store_dir
    registration = _registration_dict()
    registration[_EPR]["account_settings"][0].pop("name")
    with serving(ScriptedPartner(demo_script(registration=registration))) as url:
        done = run_cli("modules", "register", "demo", "--url", url, data_dir=data_dir)
    assert done.returncode == 1
    assert (
        f"registration of 'demo' rejected (1 error(s)): $.{_EPR}.account_settings[0].name:"
        " required setting 'apiKey' has no name"
    ) in done.stderr
    unreachable = f"http://127.0.0.1:{free_port()}/firehose"
    done = run_cli("modules", "register", "demo", "--url", unreachable, data_dir=data_dir)
    assert done.returncode == 1
    assert f"registration of 'demo' failed, nothing stored: cannot reach {unreachable}" in (
        done.stderr
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://x", "--lambda", "f"], "either --url URL or --lambda FUNCTION"),
        ([], "either --url URL or --lambda FUNCTION"),
        (["--lambda", "f", "--token", "t"], "--token goes with --url"),
        (["--url", "http://x", "--region", "eu-west-1"], "--region and --endpoint-url go with"),
    ],
)
def test_cli_target_usage_errors(data_dir: Path, args: list[str], message: str) -> None:
    done = run_cli("modules", "register", "demo", *args, data_dir=data_dir)
    assert done.returncode == 2
    assert message in done.stderr
    done = run_cli("modules", "register", "bad name", "--url", "http://x", data_dir=data_dir)
    assert done.returncode == 2
    assert "invalid module name 'bad name'" in done.stderr


def test_cli_never_shows_the_token(store_dir: Path, partner_url: str) -> None:
    data_dir = store_dir
    outputs = []
    done = run_cli(
        "modules", "register", "demo", "--url", partner_url, "--token", TOKEN, data_dir=data_dir
    )
    assert done.returncode == 0, done.stderr
    outputs.append(done)
    assert "registered module 'demo': Demo Partner 2.1.0" in done.stdout
    assert "token:" in done.stdout and "set" in done.stdout
    for args in (["list"], ["list", "--json"], ["show", "demo"], ["show", "demo", "--json"]):
        done = run_cli("modules", *args, data_dir=data_dir)
        assert done.returncode == 0, done.stderr
        outputs.append(done)
    done = run_cli(
        "modules",
        "register",
        "demo",
        "--url",
        partner_url,
        "--token",
        TOKEN,
        "--json",
        data_dir=data_dir,
    )
    assert done.returncode == 0, done.stderr
    outputs.append(done)
    for output in outputs:
        assert TOKEN not in output.stdout + output.stderr
    listed = json.loads(outputs[2].stdout)
    assert listed["name"] == "demo"
    assert listed["token"] == "set"
    shown = json.loads(outputs[4].stdout)
    assert shown["token"] == "set"
    assert shown["registrations"] == 1
    assert shown["registration"]["name"] == "Demo Partner"
    assert shown["supported_event_types"][0] == "session_start"
    assert json.loads(outputs[5].stdout)["token"] == "set"
    assert "demo" in outputs[1].stdout and "set" in outputs[1].stdout
    # the token is stored, for the platform's later calls
    backend = open_sqlite(data_dir)
    try:
        module = backend.modules.get_module("demo")
    finally:
        backend.close()
    assert module is not None and module.target == HttpTarget(partner_url, TOKEN)
    assert TOKEN not in repr(module)
    assert TOKEN not in json.dumps(module_summary(module, with_registration=True))


def test_cli_token_from_the_environment(
    store_dir: Path, partner_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = store_dir
    monkeypatch.setenv("PATCHBAY_PARTNER_TOKEN", TOKEN)
    done = run_cli("modules", "register", "demo", "--url", partner_url, "--json", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["token"] == "set"
    assert TOKEN not in done.stdout + done.stderr
    backend = open_sqlite(data_dir)
    try:
        module = backend.modules.get_module("demo")
    finally:
        backend.close()
    assert module is not None and module.target == HttpTarget(partner_url, TOKEN)


def test_cli_without_token_says_not_set(store_dir: Path, open_partner_url: str) -> None:
    data_dir = store_dir
    done = run_cli(
        "modules", "register", "open", "--url", open_partner_url, "--json", data_dir=data_dir
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["token"] == "not set"
    done = run_cli("modules", "show", "missing", data_dir=data_dir)
    assert done.returncode == 1
    assert "no module named 'missing'" in done.stderr


# --------------------------------------------------------------------------- access


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def example_partner(db: Path, token: str) -> Iterator[str]:
    """The SQLite example partner started as its users start it (``python -m
    examples.sqlite_partner.http --token ...``); yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.sqlite_partner.http",
            "--port",
            str(port),
            "--token",
            token,
            "--db",
            str(db),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, "the example partner")
        yield f"http://127.0.0.1:{port}/firehose"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stored_modules(data_dir: Path) -> list[str]:
    done = run_cli("modules", "list", "--json", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["name"] for line in done.stdout.splitlines()]


def test_cli_register_with_a_token_the_example_partner_refuses(
    store_dir: Path, tmp_path: Path
) -> None:
    data_dir = store_dir
    partner_db = tmp_path / "partner.db"
    with example_partner(partner_db, TOKEN) as url:
        wrong = run_cli(
            "modules", "register", "ex", "--url", url, "--token", "not-the-token", data_dir=data_dir
        )
        missing = run_cli("modules", "register", "ex", "--url", url, data_dir=data_dir)
        stored_after_refusals = _stored_modules(data_dir)
        right = run_cli(
            "modules", "register", "ex", "--url", url, "--token", TOKEN, data_dir=data_dir
        )
    assert wrong.returncode == 1, wrong.stdout
    assert wrong.stdout == ""
    [line] = wrong.stderr.splitlines()
    assert line == (
        f"Error: registration of 'ex' refused, nothing stored: {url} refused the token: it"
        " answered an authenticated verification request with HTTP 401: unauthorized: Missing"
        " or wrong token: send 'Authorization: Token <token>'. (check --token or"
        " $PATCHBAY_PARTNER_TOKEN)"
    )
    assert "not-the-token" not in wrong.stderr
    assert missing.returncode == 1, missing.stdout
    assert f"{url} refused a call without a token: it answered the verification request with" in (
        missing.stderr
    )
    assert "HTTP 401: unauthorized" in missing.stderr
    assert "(give the partner's token with --token or $PATCHBAY_PARTNER_TOKEN)" in missing.stderr
    assert stored_after_refusals == []
    assert right.returncode == 0, right.stderr
    assert _stored_modules(data_dir) == ["ex"]
    # the verification requests reached no code of the partner's: not even its tables exist
    if partner_db.exists():
        with sqlite3.connect(partner_db) as db:
            assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


def _refusing(status: int, on: str) -> ScriptedPartner:
    """The demo partner, answering ``status`` to requests of type ``on``."""

    def change(request: dict[str, Any], normal: dict[str, Any]) -> Answer | None:
        if request.get("type") != on:
            return None
        return answer_json({"error": "forbidden", "message": "Key revoked."}, status=status)

    return ScriptedPartner(demo_script(change=change))


@pytest.mark.parametrize("status", [401, 403])
def test_register_stores_nothing_when_the_verification_request_is_refused(
    modules: ModuleStore, status: int
) -> None:
    partner = _refusing(status, "event_processing_request")
    with serving(partner) as url, pytest.raises(AccessRefusedError) as caught:
        asyncio.run(register(modules, "demo", HttpTarget(url, TOKEN)))
    assert caught.value.status == status
    assert caught.value.answer == f"HTTP {status}: forbidden: Key revoked."
    assert f"{url} refused the token" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert modules.get_module("demo") is None


def test_register_refused_registration_request_names_the_partner_answer(
    modules: ModuleStore,
) -> None:
    partner = _refusing(401, "module_registration_request")
    with serving(partner) as url, pytest.raises(AccessRefusedError) as caught:
        asyncio.run(register(modules, "demo", HttpTarget(url, TOKEN)))
    assert caught.value.status == 401
    assert "refused the registration request, which is sent without a token" in str(caught.value)
    assert len(partner.requests) == 1  # the token was never tried
    assert "HTTP 401: forbidden: Key revoked." in str(caught.value)
    assert modules.get_module("demo") is None


def test_register_an_audience_only_partner_checks_with_a_membership_verification(
    modules: ModuleStore,
) -> None:
    registration = _registration_dict()
    del registration[_EPR]
    del registration["dsr_processing_registration"]
    partner = ScriptedPartner(demo_script(registration=registration))
    with serving(partner) as url:
        asyncio.run(register(modules, "aud", HttpTarget(url, TOKEN)))
    [_, (headers, check)] = partner.requests
    assert check == {**check, "type": "audience_membership_change_request"}
    assert "user_profiles" not in check
    assert headers["authorization"] == f"Token {TOKEN}"


def test_register_other_answers_to_the_verification_request_are_not_about_the_token(
    modules: ModuleStore,
) -> None:
    # A partner that fails the verification request for another reason accepted the token:
    # registering works (what its answers are worth is `patchbay partner verify`'s job).
    with serving(_refusing(500, "event_processing_request")) as url:
        asyncio.run(register(modules, "demo", HttpTarget(url, TOKEN)))
    assert modules.get_module("demo") is not None
