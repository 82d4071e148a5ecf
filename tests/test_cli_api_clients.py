"""``patchbay api-clients``: add, list, rotate, disable, enable, remove, with the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from patchbay.backends.sqlite import open_sqlite
from patchbay.collect.inputs import hash_secret
from tests.conftest import run_cli


def test_api_clients_commands(store_dir: Path) -> None:
    data_dir = store_dir
    added = run_cli(
        "api-clients", "add", "crm", "--scope", "profiles:read", "--json", data_dir=data_dir
    )
    assert added.returncode == 0, added.stderr
    made = json.loads(added.stdout)
    assert made["name"] == "crm" and made["scopes"] == ["profiles:read"]
    assert made["client_id"].startswith("pc_") and made["client_secret"].startswith("pcs_")

    # Only the secret's hash is stored.
    backend = open_sqlite(data_dir)
    try:
        stored = backend.api_clients.get_client("crm")
    finally:
        backend.close()
    assert stored is not None and stored.secret_hash == hash_secret(made["client_secret"])
    assert made["client_secret"] not in (data_dir / "patchbay.db").read_bytes().decode("latin-1")

    unknown = run_cli("api-clients", "add", "bi", "--scope", "profiles:write", data_dir=data_dir)
    assert unknown.returncode == 1
    assert "unknown scope 'profiles:write': expected one of profiles:read" in unknown.stderr
    assert run_cli("api-clients", "add", "bi", data_dir=data_dir).returncode == 2  # no --scope
    again = run_cli("api-clients", "add", "crm", "--scope", "profiles:read", data_dir=data_dir)
    assert again.returncode == 1 and "already exists" in again.stderr

    shown = run_cli("api-clients", "add", "bi", "--scope", "profiles:read", data_dir=data_dir)
    assert shown.returncode == 0 and "client_secret:" in shown.stdout
    assert "cannot be shown again" in shown.stderr

    listed = run_cli("api-clients", "list", "--json", data_dir=data_dir)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["name"], r["enabled"], r["scopes"]) for r in rows] == [
        ("crm", True, ["profiles:read"]),
        ("bi", True, ["profiles:read"]),
    ]
    assert "secret" not in listed.stdout.replace("secret_set_at_ms", "")

    rotated = run_cli("api-clients", "rotate", "crm", "--json", data_dir=data_dir)
    new = json.loads(rotated.stdout)
    assert new["client_id"] == made["client_id"] and new["client_secret"] != made["client_secret"]

    assert run_cli("api-clients", "disable", "crm", data_dir=data_dir).returncode == 0
    table = run_cli("api-clients", "list", data_dir=data_dir).stdout
    assert "crm" in table and " no " in table
    assert run_cli("api-clients", "enable", "crm", data_dir=data_dir).returncode == 0
    removed = run_cli("api-clients", "remove", "bi", data_dir=data_dir)
    assert removed.returncode == 0 and "removed" in removed.stdout
    missing = run_cli("api-clients", "remove", "bi", data_dir=data_dir)
    assert missing.returncode == 1 and "no API client named 'bi'" in missing.stderr
    listed = run_cli("api-clients", "list", "--json", data_dir=data_dir)
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == ["crm"]
