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
    assert (
        run_cli(
            "outputs", "add", "f", "--file", str(tmp_path / "x.jsonl"), data_dir=data_dir
        ).returncode
        == 0
    )
    both = run_cli("outputs", "add", "z", "--file", "a", "--webhook", "http://x", data_dir=data_dir)
    assert both.returncode != 0
    assert run_cli("outputs", "pause", "w", data_dir=data_dir).returncode == 0
    status = run_cli("outputs", "status", data_dir=data_dir).stdout.splitlines()
    assert status[0].split()[:6] == ["OUTPUT", "KIND", "STATE", "PENDING", "PARKED", "OLDEST"]
    rows = {line.split()[0]: line.split() for line in status[1:]}
    assert rows["w"][2] == "paused" and rows["f"][2] == "active"
    assert "paused by an operator" in run_cli("outputs", "status", data_dir=data_dir).stdout
    assert run_cli("outputs", "resume", "w", data_dir=data_dir).returncode == 0
    assert "paused" not in run_cli("outputs", "status", data_dir=data_dir).stdout
    assert run_cli("outputs", "pause", "nope", data_dir=data_dir).returncode != 0
    replay = run_cli("deliveries", "replay", data_dir=data_dir)
    assert replay.returncode != 0 and "--output" in replay.stderr
    assert "replaying 0" in run_cli("deliveries", "replay", "--all", data_dir=data_dir).stdout
    assert run_cli("deliveries", "parked", "--output", "nope", data_dir=data_dir).returncode != 0
