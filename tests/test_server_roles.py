"""``serve``'s roles: the settings and flag that name them, what each assembles
(:func:`patchbay.server.create_app`), and their refusal on an embedded backend."""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from patchbay.backends.abstract import Backend
from patchbay.backends.memory import open_memory
from patchbay.cli import main
from patchbay.clock import SystemClock
from patchbay.collect.inputs import create_input
from patchbay.config import ConfigError, load_settings
from patchbay.partner.lambda_local import BackgroundServer
from patchbay.server import create_app
from patchbay.settings import Secret, Settings
from tests.collect.test_storage_full_http import Running, batch

TOKEN = "metrics-token-for-tests"


def test_roles_from_flags_variable_and_file(tmp_path: Path) -> None:
    """``roles`` is a list: repeated ``--role``, a comma-separated variable, a TOML list."""
    file = tmp_path / "patchbay.toml"
    file.write_text('roles = ["process"]\n')
    assert load_settings({}, {}).roles == ("all",)
    assert load_settings({}, {}, file).roles == ("process",)
    env = {"PATCHBAY_ROLES": "ingest, deliver"}
    assert load_settings({}, env, file).roles == ("ingest", "deliver")
    assert load_settings({"roles": ("deliver",)}, env, file).roles == ("deliver",)


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"PATCHBAY_ROLES": "ingest,cook"}, "PATCHBAY_ROLES"),
        ({"PATCHBAY_ROLES": ","}, "PATCHBAY_ROLES"),
        ({"PATCHBAY_ROLES": "all,deliver"}, "'all' already runs every role"),
        ({"PATCHBAY_DELIVERY_LEASE_S": "15"}, "delivery_lease_s (15) must be longer"),
        ({"PATCHBAY_DELIVERY_TIMEOUT_S": "1m"}, "delivery_connect_timeout_s (65)"),
    ],
)
def test_wrong_roles_and_leases_are_refused(env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        load_settings({}, env)


def test_what_each_role_runs() -> None:
    assert Settings().runs("ingest") and not Settings().scaled_roles
    ingest = Settings(roles=("ingest",))
    assert ingest.runs("ingest") and not ingest.runs("deliver") and ingest.scaled_roles
    every = Settings(roles=("deliver", "process", "ingest"))
    assert not every.scaled_roles


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_an_embedded_backend_refuses_roles(tmp_path: Path, backend: str) -> None:
    """Several processes cannot share the embedded store: a role other than ``all`` is
    refused, before anything is opened."""
    settings = Settings(
        backend=backend,  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
        roles=("deliver",),
        delivery_process=False,
        segment_process=False,
    )
    with pytest.raises(ConfigError, match="cannot share it with other Patchbay processes"):
        create_app(settings)
    assert not (tmp_path / "data").exists()


def test_the_scale_out_mode_refuses_the_segment_stage_in_the_server(tmp_path: Path) -> None:
    """In the scale-out mode the segment stage runs in its child, which competes for the
    stage's lead: a processor without it is refused, before anything is opened."""
    settings = Settings(
        data_dir=tmp_path / "data",
        state=Secret("postgresql://nobody@127.0.0.1:9/none"),
        log="kafka://127.0.0.1:9",
        roles=("process",),
        segment_process=False,
    )
    with pytest.raises(ConfigError, match="segment_process = false"):
        create_app(settings)
    assert not (tmp_path / "data").exists()


def test_serve_role_on_the_embedded_store_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("PATCHBAY_STATE", "PATCHBAY_LOG", "PATCHBAY_CONFIG", "PATCHBAY_ROLES"):
        monkeypatch.delenv(variable, raising=False)
    args = ["serve", "--role", "ingest", "--role", "process", "--data-dir", str(tmp_path / "d")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "roles = ingest,process: the sqlite backend's store" in result.output
    assert "scale-out mode" in result.output


@pytest.fixture
def shared() -> tuple[Backend, str]:
    """A memory backend standing in for a shared one (the refusal above goes by the
    backend's name), so that an app of each role can be looked at in this process; and
    the Basic credentials of an input."""
    backend = dataclasses.replace(open_memory(), name="shared")
    made = create_input(backend.inputs, "app", "server", 10_000, SystemClock())
    return backend, "Basic " + base64.b64encode(f"{made.key}:{made.secret}".encode()).decode()


def serving(shared: tuple[Backend, str], *roles: str) -> Running:
    """An app of ``roles`` over the shared backend, started."""
    settings = Settings(
        roles=roles,  # type: ignore[arg-type]
        delivery_process=False,
        segment_process=False,
        metrics_token=Secret(TOKEN),
    )
    backend, basic = shared
    return Running(backend, BackgroundServer(create_app(settings, backend=backend)).start(), basic)


def test_each_role_serves_health_and_metrics_and_only_its_own_apis(
    shared: tuple[Backend, str],
) -> None:
    """Every role answers ``/healthz`` (naming its roles) and ``/metrics`` (with the
    token), with the resolve conflicts of what it resolves (IDSync in ``ingest``, the stage
    in ``process``); only ``ingest`` has the HTTP APIs, the others answer the usual JSON
    404."""
    for roles, apis, resolvers in [
        (("ingest",), True, ["idsync"]),
        (("process",), False, ["stage"]),
        (("deliver",), False, []),
    ]:
        running = serving(shared, *roles)
        try:
            status, _, health = running.call("GET", "/healthz")
            assert (status, health["status"], health["roles"]) == (200, "ok", list(roles))
            assert running.call("GET", "/metrics")[0] == 401
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            status, _, text = running.call("GET", "/metrics", headers=bearer)
            assert status == 200 and "patchbay_http_requests_total" in text
            conflicts = re.findall(r'patchbay_resolve_conflicts_total\{where="(\w+)"\} 0', text)
            assert conflicts == resolvers
            status, _, answer = running.events("/v2/events", batch())
            if apis:
                assert status == 202, answer
            else:
                assert status == 404
                assert [e["code"] for e in answer["errors"]] == ["NOT_FOUND"]
        finally:
            running.server.stop()


def test_a_process_role_handles_what_an_ingest_role_accepted(
    shared: tuple[Backend, str],
) -> None:
    """Two apps over one store, one ``ingest`` and one ``process``: the batch the first
    accepts is resolved by the second (found at its poll; nothing wakes it)."""
    ingest = serving(shared, "ingest")
    process = serving(shared, "process")
    try:
        assert ingest.events("/v2/events", batch())[0] == 202
        state = shared[0].state
        deadline = time.monotonic() + 30
        while not state.checkpoint():
            assert time.monotonic() < deadline, "the process role resolved nothing"
            time.sleep(0.05)
    finally:
        ingest.server.stop()
        process.server.stop()
