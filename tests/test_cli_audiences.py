"""``patchbay audiences``: every command and its errors, on a sqlite data directory, with
the example SQLite partner registered through the CLI as the module that takes audiences."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.sqlite_partner.http import build_app
from patchbay.backends.records import AudienceBuild, SegmentChanges
from patchbay.backends.sqlite import open_sqlite
from patchbay.cli.audiences import progress_text, serve_running
from patchbay.firehose import AudienceSubscriptionRequest, parse
from patchbay.locking import data_dir_lock
from patchbay.partner.lambda_local import BackgroundServer
from tests.conftest import Server, run_cli
from tests.segment.audience_setup import definition, events_registration, register

API_KEY = "sqlite-partner-key-5tG"


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


def ok(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    return done


def fails(*args: str, data_dir: Path, exit_code: int = 1) -> str:
    done = run_cli(*args, data_dir=data_dir)
    assert done.returncode == exit_code, (done.stdout, done.stderr)
    assert done.stderr.startswith("Error:") or exit_code != 1, done.stderr
    return done.stderr


def subscriptions(data_dir: Path, output: str = "o") -> list[AudienceSubscriptionRequest]:
    """The subscription requests waiting in the outbox for ``output`` (strictly parsed)."""
    backend = open_sqlite(data_dir)
    try:
        found = []
        for delivery in backend.outbox.due(output, 2**62, 100):
            message = parse(delivery.payload)
            assert isinstance(message, AudienceSubscriptionRequest)
            found.append(message)
        backend.outbox.succeeded_many([str(m.id) for m in found])
        return found
    finally:
        backend.close()


@pytest.fixture
def partner_url(tmp_path: Path) -> Iterator[str]:
    with BackgroundServer(build_app(str(tmp_path / "p.db"))).start() as server:
        yield server.url + "/firehose"


@pytest.fixture
def outputs(store_dir: Path, partner_url: str, tmp_path: Path) -> Path:
    """Module ``sq`` (the example partner: audiences, user attributes allowed) with output
    ``o``; module ``events`` (no audience processing) with output ``e``; webhook ``w``."""
    data_dir = store_dir
    ok("modules", "register", "sq", "--url", partner_url, data_dir=data_dir)
    ok("outputs", "add", "o", "--module", "sq", "--setting", f"apiKey={API_KEY}",
       data_dir=data_dir)  # fmt: skip
    ok("outputs", "add", "w", "--webhook", "http://127.0.0.1:9/x", data_dir=data_dir)
    backend = open_sqlite(data_dir)
    try:
        register(backend, "events", events_registration())
    finally:
        backend.close()
    ok("outputs", "add", "e", "--module", "events", data_dir=data_dir)
    return data_dir


def test_create_list_show_update_delete(outputs: Path, tmp_path: Path) -> None:
    data_dir = outputs
    gold = write(tmp_path / "gold.json", definition("gold", description="Gold tier"))
    created = ok("audiences", "create", str(gold), "--json", data_dir=data_dir)
    assert json.loads(created.stdout) == {"id": 1, "name": "gold"}
    assert "will be computed when `patchbay serve` starts" in created.stderr
    yaml_file = tmp_path / "silver.yaml"
    yaml_file.write_text("name: silver\ncriteria:\n  user_attribute: tier\n  op: eq\n"
                         "  value: silver\n")  # fmt: skip
    made = ok("audiences", "create", str(yaml_file), "--no-wait", data_dir=data_dir)
    assert "created audience 'silver' (id 2)" in made.stdout
    [logged] = [json.loads(line) for line in made.stderr.splitlines()]  # nothing else
    assert (logged["event"], logged["name"], logged["change"]) == (
        "config_changed",
        "silver",
        "create",
    )

    listed = ok("audiences", "list", data_dir=data_dir).stdout.splitlines()
    assert listed[0].split() == ["ID", "NAME", "SIZE", "STATUS", "OUTPUTS"]
    assert listed[1].split() == ["1", "gold", "0", "building", "-"]
    rows = [json.loads(line) for line in ok("audiences", "list", "--json", data_dir=data_dir)
            .stdout.splitlines()]  # fmt: skip
    assert [r["name"] for r in rows] == ["gold", "silver"]

    shown = ok("audiences", "show", "gold", data_dir=data_dir).stdout
    assert "description: Gold tier" in shown and '"user_attribute": "tier"' in shown
    as_json = json.loads(ok("audiences", "show", "1", "--json", data_dir=data_dir).stdout)
    assert as_json["name"] == "gold" and as_json["definition"]["name"] == "gold"

    platinum = write(tmp_path / "p.json", definition("gold", tier="platinum"))
    updated = ok("audiences", "update", "gold", str(platinum), "--no-wait", data_dir=data_dir)
    assert "version 2; computed again" in updated.stdout
    renamed = write(tmp_path / "r.json", definition("golden", tier="platinum"))
    ok("audiences", "update", "gold", str(renamed), "--no-wait", data_dir=data_dir)
    assert "golden" in ok("audiences", "list", data_dir=data_dir).stdout

    deleted = ok("audiences", "delete", "golden", data_dir=data_dir)
    assert "deleted audience 'golden'" in deleted.stdout
    assert "golden" not in ok("audiences", "list", data_dir=data_dir).stdout


def test_definition_errors(outputs: Path, tmp_path: Path) -> None:
    data_dir = outputs
    ok("audiences", "create", str(write(tmp_path / "a.json", definition("a"))), "--no-wait",
       data_dir=data_dir)  # fmt: skip
    ok("audiences", "create", str(write(tmp_path / "b.json", definition("b", "a"))), "--no-wait",
       data_dir=data_dir)  # fmt: skip
    bad = definition("c")
    bad["criteria"]["all"][0]["op"] = "resembles"
    message = fails("audiences", "create", str(write(tmp_path / "c.json", bad)), data_dir=data_dir)
    assert "c.json" in message and "criteria.all[0].op" in message
    unknown = write(tmp_path / "d.json", definition("d", "nobody"))
    assert "unknown audience 'nobody'" in fails(
        "audiences", "create", str(unknown), data_dir=data_dir
    )
    duplicate = write(tmp_path / "a2.json", definition("a", tier="x"))
    assert "already exists" in fails("audiences", "create", str(duplicate), data_dir=data_dir)
    cycle = write(tmp_path / "a3.json", definition("a", "b"))
    assert "cycle" in fails("audiences", "update", "a", str(cycle), data_dir=data_dir)
    rename = write(tmp_path / "a4.json", definition("z"))
    assert "cannot be renamed: 'b' refer" in fails(
        "audiences", "update", "a", str(rename), data_dir=data_dir
    )
    assert "cannot be deleted: 'b' refer" in fails("audiences", "delete", "a", data_dir=data_dir)
    assert "no audience named 'nope'" in fails("audiences", "show", "nope", data_dir=data_dir)
    assert "cannot read" in fails(
        "audiences", "create", str(tmp_path / "missing.json"), data_dir=data_dir
    )
    assert [r.split()[1] for r in ok("audiences", "list", data_dir=data_dir)
            .stdout.splitlines()[1:]] == ["a", "b"]  # fmt: skip


def test_create_from_stdin(store_dir: Path) -> None:
    data_dir = store_dir
    done = subprocess.run(
        [sys.executable, "-m", "patchbay", "audiences", "create", "-", "--json",
         "--data-dir", str(data_dir)],
        input=json.dumps(definition("piped")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "piped"


def test_connect_and_disconnect(outputs: Path, tmp_path: Path) -> None:
    data_dir = outputs
    ok("audiences", "create", str(write(tmp_path / "g.json", definition("gold"))), "--no-wait",
       data_dir=data_dir)  # fmt: skip
    assert "no output named 'nope'" in fails(
        "audiences", "connect", "gold", "--output", "nope", data_dir=data_dir
    )
    assert "'w' is a webhook output" in fails(
        "audiences", "connect", "gold", "--output", "w", data_dir=data_dir
    )
    assert "module 'events' (output 'e') does not process audiences" in fails(
        "audiences", "connect", "gold", "--output", "e", data_dir=data_dir
    )
    assert "unknown audience subscription setting 'bogus'" in fails(
        "audiences", "connect", "gold", "--output", "o", "--setting", "bogus=1",
        data_dir=data_dir,
    )  # fmt: skip
    assert "a setting is ID=VALUE" in fails(
        "audiences", "connect", "gold", "--output", "o", "--setting", "novalue",
        data_dir=data_dir, exit_code=2,
    )  # fmt: skip
    assert subscriptions(data_dir) == []

    done = ok("audiences", "connect", "gold", "--output", "o", "--attribute", "tier",
              data_dir=data_dir)  # fmt: skip
    assert "connected audience 'gold' to 'o'" in done.stdout
    [add] = subscriptions(data_dir)
    assert add.action == "add" and add.audience_name == "gold"
    assert add.account is not None and add.account.account_settings["apiKey"] == API_KEY
    assert API_KEY not in ok("audiences", "show", "gold", data_dir=data_dir).stdout

    same = ok("audiences", "connect", "gold", "--output", "o", "--attribute", "tier",
              data_dir=data_dir)  # fmt: skip
    assert "unchanged" in same.stdout and subscriptions(data_dir) == []
    changed = ok("audiences", "connect", "gold", "--output", "o", "--setting", "listName=vip",
                 "--json", data_dir=data_dir)  # fmt: skip
    assert json.loads(changed.stdout)["action"] == "update"
    [update] = subscriptions(data_dir)
    assert update.action == "update"
    assert update.audience_subscription_settings == {"listName": "vip"}
    assert update.previous_audience_subscription_settings == {}

    listed = ok("audiences", "list", data_dir=data_dir).stdout.splitlines()
    assert listed[1].split()[-1] == "o"
    done = ok("audiences", "disconnect", "gold", "--output", "o", data_dir=data_dir)
    assert "disconnected audience 'gold' from 'o'" in done.stdout
    [remove] = subscriptions(data_dir)
    assert remove.action == "remove" and remove.audience_subscription_settings == {
        "listName": "vip"
    }
    assert "not connected" in fails(
        "audiences", "disconnect", "gold", "--output", "o", data_dir=data_dir
    )
    ok("audiences", "connect", "gold", "--output", "o", data_dir=data_dir)
    subscriptions(data_dir)
    assert "removed from 'o'" in ok("audiences", "delete", "gold", data_dir=data_dir).stdout
    assert [r.action for r in subscriptions(data_dir)] == ["remove"]


def test_members_stream_in_pages(store_dir: Path, tmp_path: Path) -> None:
    data_dir = store_dir
    ok("audiences", "create", str(write(tmp_path / "g.json", definition("gold"))), "--no-wait",
       data_dir=data_dir)  # fmt: skip
    ok("audiences", "create", str(write(tmp_path / "e.json", definition("empty"))), "--no-wait",
       data_dir=data_dir)  # fmt: skip
    mpids = [-(2**63), *range(1, 25_001), 2**63 - 1]
    backend = open_sqlite(data_dir)
    try:
        backend.audiences.commit(SegmentChanges(joined=[(1, m) for m in mpids]))
    finally:
        backend.close()
    lines = ok("audiences", "members", "gold", data_dir=data_dir).stdout.splitlines()
    assert [int(x) for x in lines] == mpids
    assert json.loads(ok("audiences", "members", "gold", "--json", data_dir=data_dir).stdout) == (
        mpids
    )
    assert ok("audiences", "members", "empty", data_dir=data_dir).stdout == ""
    assert json.loads(ok("audiences", "members", "empty", "--json", data_dir=data_dir).stdout) == []
    assert "no audience named 'x'" in fails("audiences", "members", "x", data_dir=data_dir)


def test_following_the_build_while_serve_runs(store_dir: Path, tmp_path: Path) -> None:
    data_dir = store_dir
    ok("audiences", "create", str(write(tmp_path / "g.json", definition("gold"))), "--no-wait",
       data_dir=data_dir)  # fmt: skip
    assert not serve_running(data_dir)
    backend = open_sqlite(data_dir)
    try:
        backend.audiences.commit(
            SegmentChanges(
                joined=[(1, 7), (1, 8)],
                builds=[AudienceBuild(1, 1, "live", 0, users_done=2, users_total=2)],
            )
        )
    finally:
        backend.close()
    with data_dir_lock(data_dir):  # as patchbay serve holds it
        assert serve_running(data_dir)
        described = write(tmp_path / "d.json", definition("gold", description="Gold"))
        done = ok("audiences", "update", "gold", str(described), data_dir=data_dir)
        assert "audience 'gold' (version 1) is live: 2 members" in done.stderr
        changed = write(tmp_path / "c.json", definition("gold", tier="x"))
        timed_out = run_cli("audiences", "update", "gold", str(changed), "--timeout", "1",
                            data_dir=data_dir)  # fmt: skip
        assert timed_out.returncode == 3, timed_out.stderr
        assert "waiting for the segment stage" in timed_out.stderr
        assert "still being computed after 1s" in timed_out.stderr
        # the commands do not take the lock
        assert "gold" in ok("audiences", "list", data_dir=data_dir).stdout
    assert not serve_running(data_dir)


def test_progress_text() -> None:
    base = {"name": "a", "version": 2, "size": 1234}
    live = {**base, "build": {"phase": "live"}}
    assert progress_text(live) == "audience 'a' (version 2) is live: 1,234 members"
    evaluating = {**base, "build": {"phase": "evaluating", "users_done": 50, "users_total": 200}}
    assert "evaluating users: 50 / 200 (25%)" in progress_text(evaluating)
    scanning: dict[str, Any] = {
        **base,
        "build": {"phase": "scanning", "conditions": {"building": 2, "scanned": 5000}},
    }
    assert "scanning: 2 event condition(s) being counted" in progress_text(scanning)
    assert "5,000 batches scanned" in progress_text(scanning)
    assert "retention" not in progress_text(scanning)
    history = {"partition": 0, "from": "0:51", "from_received_at": "2026-12-01T00:00:00+00:00"}
    removed = [{**history, "to": "0:90", "removed_upto": "0:50"}]
    scanning["build"]["history"] = removed
    assert (
        "counted over the stored batches (from 0:51, received 2026-12-01T00:00:00+00:00;"
        " older ones removed by retention), 5,000 batches scanned"
    ) in progress_text(scanning)


def test_with_patchbay_serve(server: Server, tmp_path: Path) -> None:
    """The segment stage in serve computes what the commands define, while they run."""
    event = {"event_type": "custom_event", "data": {"event_name": "buy"}}
    batch = {"mpid": 4242, "user_attributes": {"tier": "gold"}, "events": [event]}
    assert server.post("/v2/events", json.dumps(batch).encode())[0] == 202
    data_dir = server.data_dir
    buyers = {"name": "buyers", "criteria": {"all": [
        {"event": {"type": "custom_event", "name": "buy"}, "count": {"min": 1}},
        {"user_attribute": "tier", "op": "eq", "value": "gold"}]}}  # fmt: skip
    done = ok("audiences", "create", str(write(tmp_path / "b.json", buyers)), "--timeout", "60",
              data_dir=data_dir)  # fmt: skip
    assert "audience 'buyers' (version 1) is live: 1 member" in done.stderr
    assert ok("audiences", "members", "buyers", data_dir=data_dir).stdout.split() == ["4242"]
    profile = json.loads(ok("profiles", "show", "4242", data_dir=data_dir).stdout)
    assert profile["audience_memberships"] == [
        {"audience_id": 1, "audience_name": "buyers", "expiration_timestamp_ms": None}
    ]
    buyers["criteria"]["all"][1]["value"] = "silver"  # type: ignore[index]
    done = ok("audiences", "update", "buyers", str(write(tmp_path / "b.json", buyers)),
              "--timeout", "60", data_dir=data_dir)  # fmt: skip
    assert "audience 'buyers' (version 2) is live: 0 members" in done.stderr
    assert ok("audiences", "members", "buyers", data_dir=data_dir).stdout == ""
