"""The outputs/connections/deliveries commands: validation against the module's
registration, confidential settings never printed, and the tables."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.sqlite_partner.http import build_app
from patchbay.partner.lambda_local import BackgroundServer
from tests.conftest import add_input, run_cli

SECRET = "very-secret-api-key"


@pytest.fixture
def partner_url(tmp_path: Path) -> Iterator[str]:
    with BackgroundServer(build_app(str(tmp_path / "p.db"))).start() as server:
        yield server.url + "/firehose"


@pytest.mark.usefixtures("deployment")
def test_module_outputs_are_validated_and_secrets_hidden(data_dir: Path, partner_url: str) -> None:
    add_input(data_dir, "app")  # which creates the store
    assert (
        run_cli("modules", "register", "sq", "--url", partner_url, data_dir=data_dir).returncode
        == 0
    )
    missing = run_cli("outputs", "add", "o", "--module", "sq", data_dir=data_dir)
    assert missing.returncode != 0 and "'apiKey'" in missing.stderr and "required" in missing.stderr
    wrong = run_cli(
        "outputs", "add", "o", "--module", "sq", "--setting", f"apiKey={SECRET}",
        "--setting", "includeUserAttributes=perhaps", data_dir=data_dir,
    )  # fmt: skip
    assert wrong.returncode != 0 and "true or false" in wrong.stderr
    assert SECRET not in wrong.stderr + wrong.stdout
    unknown = run_cli("outputs", "add", "o", "--module", "nope", data_dir=data_dir)
    assert unknown.returncode != 0 and "no module named 'nope'" in unknown.stderr
    done = run_cli(
        "outputs", "add", "o", "--module", "sq", "--setting", f"apiKey={SECRET}",
        data_dir=data_dir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout
    for args in (("outputs", "list"), ("outputs", "show", "o"), ("outputs", "show", "o", "--json")):
        out = run_cli(*args, data_dir=data_dir)
        assert out.returncode == 0 and SECRET not in out.stdout
    shown = json.loads(run_cli("outputs", "show", "o", "--json", data_dir=data_dir).stdout)
    assert shown["settings"]["apiKey"] == "***"
    assert shown["settings"]["includeUserAttributes"] == "true"  # the default
    bad_limit = run_cli(
        "connections", "add", "--input", "app", "--output", "o",
        "--setting", "attributeLimit=1000", data_dir=data_dir,
    )  # fmt: skip
    assert bad_limit.returncode != 0 and "at most 100" in bad_limit.stderr
    bad_type = run_cli(
        "connections", "add", "--input", "app", "--output", "o", "--event-types", "nonsense",
        data_dir=data_dir,
    )  # fmt: skip
    assert bad_type.returncode != 0 and "unknown event types" in bad_type.stderr
    ok = run_cli(
        "connections", "add", "--input", "app", "--output", "o", "--event-types",
        "custom_event,screen_view", "--environment", "production", "--json", data_dir=data_dir,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    connection = json.loads(ok.stdout)
    assert connection["settings"] == {"attributeLimit": "20"}
    listed = run_cli("connections", "list", data_dir=data_dir).stdout
    assert connection["id"] in listed and "custom_event" in listed
    again = run_cli("connections", "add", "--input", "app", "--output", "o", data_dir=data_dir)
    assert again.returncode != 0 and "already connected" in again.stderr
    removed = run_cli("connections", "remove", "--input", "app", "--output", "o", data_dir=data_dir)
    assert removed.returncode == 0 and "removed 1" in removed.stdout


def test_webhook_and_file_outputs_pause_resume_status(store_dir: Path, tmp_path: Path) -> None:
    data_dir = store_dir
    assert run_cli("outputs", "add", "w", "--webhook", "ftp://x", data_dir=data_dir).returncode
    made = run_cli(
        "outputs", "add", "w", "--webhook", "http://127.0.0.1:9/hook", "--setting",
        "token=tok-secret", data_dir=data_dir,
    )  # fmt: skip
    assert made.returncode == 0 and "tok-secret" not in made.stdout
    assert run_cli("outputs", "add", "f", "--file", "x.jsonl", data_dir=data_dir).returncode == 0
    both = run_cli("outputs", "add", "z", "--file", "a", "--webhook", "http://x", data_dir=data_dir)
    assert both.returncode != 0
    assert run_cli("outputs", "pause", "w", data_dir=data_dir).returncode == 0
    status = run_cli("outputs", "status", data_dir=data_dir).stdout.splitlines()
    header = ["OUTPUT", "KIND", "STATE", "CIRCUIT", "PENDING", "PARKED", "OLDEST"]
    assert status[0].split()[:7] == header
    rows = {line.split()[0]: line.split() for line in status[1:]}
    assert rows["w"][2:4] == ["paused", "closed"] and rows["f"][2:4] == ["active", "closed"]
    assert "paused by an operator" in run_cli("outputs", "status", data_dir=data_dir).stdout
    assert run_cli("outputs", "resume", "w", data_dir=data_dir).returncode == 0
    assert "paused" not in run_cli("outputs", "status", data_dir=data_dir).stdout
    assert run_cli("outputs", "pause", "nope", data_dir=data_dir).returncode != 0
    replay = run_cli("deliveries", "replay", data_dir=data_dir)
    assert replay.returncode != 0 and "--output" in replay.stderr
    assert "replaying 0" in run_cli("deliveries", "replay", "--all", data_dir=data_dir).stdout
    assert run_cli("deliveries", "parked", "--output", "nope", data_dir=data_dir).returncode != 0


def test_refused_targets_and_file_paths_are_errors_when_added(
    store_dir: Path, tmp_path: Path
) -> None:
    data_dir = store_dir
    for url in ("http://169.254.169.254/", "http://0xa9fea9fe/", "http://[::ffff:a9fe:a9fe]/"):
        done = run_cli("outputs", "add", "w", "--webhook", url, data_dir=data_dir)
        assert done.returncode == 1 and "never sends there" in done.stderr, done.stderr
    done = run_cli(
        "outputs", "add", "w", "--webhook", "http://hooks.example/x", "--setting",
        "token=tok-secret", data_dir=data_dir,
    )  # fmt: skip
    assert done.returncode == 1 and "plain http" in done.stderr
    assert "tok-secret" not in done.stderr
    for path in (str(data_dir / "patchbay.db"), "../state.db", str(tmp_path / "x.jsonl")):
        done = run_cli("outputs", "add", "f", "--file", path, data_dir=data_dir)
        assert done.returncode == 1 and "outside the outputs directory" in done.stderr
    assert run_cli("outputs", "list", data_dir=data_dir).stdout.count("\n") == 1  # header only
    assert (data_dir / "outputs").stat().st_mode & 0o777 == 0o700
    for url in ("http://169.254.169.254/firehose", "ftp://partner.example/"):
        done = run_cli("modules", "register", "m", "--url", url, data_dir=data_dir)
        assert done.returncode == 1
        assert "never sends there" in done.stderr or "not an http(s) URL" in done.stderr
    done = run_cli(
        "modules", "register", "m", "--url", "http://partner.example/f", "--token", "tk-secret",
        data_dir=data_dir,
    )  # fmt: skip
    assert done.returncode == 1 and "plain http" in done.stderr and "tk-secret" not in done.stderr


def test_urls_are_shown_with_their_credentials_masked(store_dir: Path, partner_url: str) -> None:
    data_dir = store_dir
    secret_url = partner_url.replace("http://", "http://bob:hunter2@") + "?token=abc123"
    done = run_cli("modules", "register", "sq", "--url", secret_url, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    hook = "https://bob:hunter2@hooks.example/x?api_key=abc123"
    done = run_cli("outputs", "add", "w", "--webhook", hook, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    shown = [done.stdout + done.stderr]
    for args in (
        ("modules", "list"),
        ("modules", "list", "--json"),
        ("modules", "show", "sq"),
        ("modules", "show", "sq", "--json"),
        ("outputs", "list"),
        ("outputs", "list", "--json"),
        ("outputs", "show", "w"),
    ):
        listed = run_cli(*args, data_dir=data_dir)
        assert listed.returncode == 0, listed.stderr
        shown.append(listed.stdout + listed.stderr)
    text = "\n".join(shown)
    assert "hunter2" not in text and "abc123" not in text
    assert "bob:***@" in text and "token=***" in text and "api_key=***" in text


def test_allowed_targets_narrows_where_outputs_may_send(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = store_dir
    monkeypatch.setenv("PATCHBAY_ALLOWED_TARGETS", "hooks.example,10.0.0.0/8")
    ok = run_cli("outputs", "add", "a", "--webhook", "https://hooks.example/x", data_dir=data_dir)
    assert ok.returncode == 0, ok.stderr
    token = run_cli(
        "outputs", "add", "b", "--webhook", "http://hooks.example/x", "--setting", "token=t",
        data_dir=data_dir,
    )  # fmt: skip
    assert token.returncode == 0, token.stderr  # allow-listed: plain http is trusted
    for url in ("http://127.0.0.1:9/x", "https://11.0.0.1/x"):
        done = run_cli("outputs", "add", "c", "--webhook", url, data_dir=data_dir)
        assert done.returncode == 1 and "not in allowed_targets" in done.stderr
    monkeypatch.setenv("PATCHBAY_ALLOWED_TARGETS", "169.254.169.254")
    done = run_cli("outputs", "list", data_dir=data_dir)
    assert done.returncode == 2 and "PATCHBAY_ALLOWED_TARGETS" in done.stderr
