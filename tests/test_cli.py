"""The ``patchbay`` command line, run as a real process (``python -m patchbay``)."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from patchbay.backends.records import NewBatch
from patchbay.backends.sqlite import DB_FILE, open_sqlite
from patchbay.cli import main
from patchbay.secretbox import KEY_FILE, SecretBox
from tests.conftest import (
    DATA,
    Credentials,
    Server,
    add_input,
    create_store,
    free_port,
    run_cli,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

STAMP_KEYS = [
    "offset",
    "batch_id",
    "input_id",
    "received_at_ms",
    "channel",
    "ip",
    "historical",
    "batch",
]


def ok(*args: str, data_dir: Path) -> str:
    """Run the CLI, require success, return its stdout."""
    done = run_cli(*args, data_dir=data_dir)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def fails(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI and require it to fail."""
    done = run_cli(*args, data_dir=data_dir)
    assert done.returncode != 0, (args, done.stdout)
    return done


def listed(data_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in ok("inputs", "list", "--json", data_dir=data_dir).splitlines()
    ]


def rotate(data_dir: Path, name: str, *flags: str) -> Credentials:
    fields = json.loads(ok("inputs", "rotate", name, *flags, "--json", data_dir=data_dir))
    assert set(fields) == {"id", "key", "secret"}
    return Credentials(fields["id"], fields["key"], fields["secret"])


def post_one(server: Server, credentials: Credentials, body: bytes = b'{"events": []}') -> int:
    status, _, _ = server.post("/v2/events", body, auth=credentials.basic)
    return status


# -- inputs ---------------------------------------------------------------------------------


def test_inputs_add_json_prints_id_key_and_secret(data_dir: Path) -> None:
    out = ok("inputs", "add", "web-app", "--type", "web", "--json", data_dir=data_dir)
    fields = json.loads(out)
    assert list(fields) == ["id", "key", "secret"]
    assert uuid.UUID(fields["id"])
    assert fields["key"].startswith("pk_")
    assert fields["secret"].startswith("ps_")
    assert fields["key"] != fields["secret"]
    assert out.count("\n") == 1  # exactly one line of JSON


def test_inputs_add_plain_shows_the_secret_once(data_dir: Path) -> None:
    done = run_cli("inputs", "add", "ios-app", "--type", "ios", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    found = dict(re.findall(r"^(id|key|secret):\s+(\S+)$", done.stdout, re.MULTILINE))
    assert set(found) == {"id", "key", "secret"}
    assert "cannot be shown again" in done.stderr
    (item,) = listed(data_dir)
    assert (item["id"], item["name"], item["type"]) == (found["id"], "ios-app", "ios")
    assert [k["key"] for k in item["keys"]] == [found["key"]]


def test_inputs_add_unknown_type_fails_clearly(data_dir: Path) -> None:
    done = fails("inputs", "add", "x", "--type", "mainframe", data_dir=data_dir)
    assert "--type" in done.stderr
    assert "mainframe" in done.stderr
    for choice in ("server", "ios", "web", "feed"):
        assert choice in done.stderr
    assert done.stdout == ""
    assert not data_dir.exists()  # a refused input creates no store


def test_inputs_add_empty_name_fails(data_dir: Path) -> None:
    done = fails("inputs", "add", "", "--type", "server", data_dir=data_dir)
    assert "the name must have 1 to 200 characters" in done.stderr
    assert not data_dir.exists()
    create_store(data_dir)
    done = fails("inputs", "add", "", "--type", "server", data_dir=data_dir)
    assert "the name must have 1 to 200 characters" in done.stderr
    assert listed(data_dir) == []


def test_inputs_add_negative_rate_limit_fails(data_dir: Path) -> None:
    done = fails("inputs", "add", "x", "--type", "server", "--rate-limit", "-1", data_dir=data_dir)
    assert "--rate-limit" in done.stderr
    assert not data_dir.exists()


def test_inputs_add_duplicate_name_fails(data_dir: Path) -> None:
    first = add_input(data_dir, "backend")
    done = fails("inputs", "add", "backend", "--type", "web", "--json", data_dir=data_dir)
    assert "an input named 'backend' already exists" in done.stderr
    assert done.stdout == ""
    (item,) = listed(data_dir)
    assert (item["id"], item["type"]) == (first.id, "server")
    assert [k["key"] for k in item["keys"]] == [first.key]


def test_inputs_list_shows_keys_but_never_secrets(data_dir: Path) -> None:
    server_creds = add_input(data_dir, "backend", rate_limit=50)
    feed_creds = add_input(data_dir, "partner-feed", type_="feed")
    rotated = rotate(data_dir, "backend", "--keep-old")
    secrets = [server_creds.secret, feed_creds.secret, rotated.secret]

    table = ok("inputs", "list", data_dir=data_dir)
    lines = table.splitlines()
    header = ["NAME", "TYPE", "RATE/S", "ENABLED", "KEY-ONLY", "ORIGINS", "KEYS"]
    assert lines[0].split() == header
    assert len(lines) == 3
    assert lines[1].split()[:6] == ["backend", "server", "50", "yes", "no", "*"]
    assert lines[2].split()[:6] == ["partner-feed", "feed", "unlimited", "yes", "no", "*"]
    assert server_creds.key in lines[1] and rotated.key in lines[1]
    assert feed_creds.key in lines[2]

    as_json = ok("inputs", "list", "--json", data_dir=data_dir)
    items = [json.loads(line) for line in as_json.splitlines()]
    assert [i["name"] for i in items] == ["backend", "partner-feed"]
    backend, feed = items
    assert set(backend) == {
        "id",
        "name",
        "type",
        "rate_limit",
        "enabled",
        "created_at_ms",
        "idsync_key_only",
        "allowed_origins",
        "keys",
    }
    assert backend["idsync_key_only"] is False
    assert (backend["id"], backend["rate_limit"], backend["enabled"]) == (server_creds.id, 50, True)
    assert [k["key"] for k in backend["keys"]] == [server_creds.key, rotated.key]
    assert all(set(k) == {"key", "enabled", "created_at_ms"} for k in backend["keys"])
    assert (feed["type"], feed["rate_limit"]) == ("feed", 0)

    for output in (table, as_json):
        for secret in secrets:
            assert secret not in output
        assert "sha256" not in output
        assert "secret" not in output.lower()


def test_secret_is_stored_only_as_a_hash(data_dir: Path) -> None:
    created = add_input(data_dir, "backend")
    rotated = rotate(data_dir, "backend", "--keep-old")
    assert not (data_dir / KEY_FILE).exists()  # no client input: no key needed
    app = add_input(data_dir, "app", "ios")
    app_rotated = rotate(data_dir, "app")
    every = (created, rotated, app, app_rotated)
    for creds in every:
        for path in data_dir.iterdir():  # the database, its WAL, the key file
            assert creds.secret.encode() not in path.read_bytes(), path
    conn = sqlite3.connect(data_dir / DB_FILE)
    try:
        rows = {
            key: (hashed, sealed)
            for key, hashed, sealed in conn.execute(
                "SELECT key, secret_hash, secret_sealed FROM credentials"
            )
        }
    finally:
        conn.close()
    for creds in every:
        hashed = "sha256:" + hashlib.sha256(creds.secret.encode()).hexdigest()
        assert rows[creds.key][0] == hashed
    # A server input's secret is never sealed; a client input's is, and opens only with the
    # secrets key (mode 0600) for its own API key.
    assert rows[created.key][1] is None and rows[rotated.key][1] is None
    key_file = data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    box = SecretBox(key_file)
    for creds in (app, app_rotated):
        sealed = rows[creds.key][1]
        assert sealed is not None and sealed.startswith("aesgcm1:")
        assert box.open_bound(sealed, creds.key) == creds.secret
        assert box.open_bound(sealed, created.key) is None


def test_idsync_key_only_on_and_off(data_dir: Path) -> None:
    add_input(data_dir, "backend")
    add_input(data_dir, "site", "web")
    add_input(data_dir, "app", "ios")
    add_input(data_dir, "tv", "roku", idsync_key_only=True)

    def key_only() -> dict[str, bool]:
        return {i["name"]: i["idsync_key_only"] for i in listed(data_dir)}

    assert key_only() == {"backend": False, "site": True, "app": False, "tv": True}
    assert ok("inputs", "set-idsync-key-only", "app", "on", data_dir=data_dir) == (
        "input 'app': IDSync key-only on\n"
    )
    ok("inputs", "set-idsync-key-only", "tv", "off", data_dir=data_dir)
    assert key_only() == {"backend": False, "site": True, "app": True, "tv": False}
    table = ok("inputs", "list", data_dir=data_dir).splitlines()
    assert [line.split()[4] for line in table[1:]] == ["no", "yes", "yes", "no"]

    done = fails("inputs", "set-idsync-key-only", "backend", "on", data_dir=data_dir)
    assert "a server input never accepts its key alone on IDSync" in done.stderr
    done = fails("inputs", "set-idsync-key-only", "site", "off", data_dir=data_dir)
    assert "a web input always accepts its key alone on IDSync" in done.stderr

    done = fails("inputs", "set-idsync-key-only", "app", "maybe", data_dir=data_dir)
    assert "'maybe' is not one of 'on', 'off'" in done.stderr
    done = fails("inputs", "set-idsync-key-only", "nope", "on", data_dir=data_dir)
    assert "no input named 'nope'" in done.stderr
    done = fails("inputs", "add", "feed", "--type", "feed", "--idsync-key-only", data_dir=data_dir)
    assert "a feed input never accepts its key alone on IDSync" in done.stderr
    assert key_only() == {"backend": False, "site": True, "app": True, "tv": False}


def test_allowed_origins_of_web_inputs(data_dir: Path) -> None:
    """``--allowed-origin`` (repeatable) on ``inputs add``, ``set-allowed-origins`` later:
    origins are stored as browsers send them, shown by ``inputs list``, and refused for
    other input types and for what is not an origin."""
    add_input(
        data_dir,
        "shop",
        "web",
        allowed_origins=[
            "HTTPS://Shop.Example:443/",
            "http://localhost:8080",
            "https://shop.example",
        ],
    )
    add_input(data_dir, "blog", "web")

    def origins() -> dict[str, list[str]]:
        return {i["name"]: i["allowed_origins"] for i in listed(data_dir)}

    assert origins() == {"shop": ["https://shop.example", "http://localhost:8080"], "blog": []}
    table = ok("inputs", "list", data_dir=data_dir).splitlines()
    assert [line.split()[5] for line in table[1:]] == [
        "https://shop.example,http://localhost:8080",
        "*",
    ]
    assert ok(
        "inputs", "set-allowed-origins", "blog", "https://blog.example", data_dir=data_dir
    ) == ("input 'blog': allowed origins https://blog.example\n")
    ok("inputs", "set-allowed-origins", "shop", data_dir=data_dir)
    assert origins() == {"shop": [], "blog": ["https://blog.example"]}

    done = fails("inputs", "add", "api", "--type", "server", "--allowed-origin",
                 "https://shop.example", data_dir=data_dir)  # fmt: skip
    assert "only web inputs" in done.stderr
    for wrong in ("shop.example", "https://shop.example/path", "ftp://shop.example", "https://"):
        done = fails("inputs", "set-allowed-origins", "blog", wrong, data_dir=data_dir)
        assert "not an origin" in done.stderr, wrong
    assert origins() == {"shop": [], "blog": ["https://blog.example"]}


def test_unknown_input_name_fails_clearly(data_dir: Path) -> None:
    add_input(data_dir, "backend")
    for args in (
        ("inputs", "rotate", "nope"),
        ("inputs", "disable", "nope"),
        ("inputs", "enable", "nope"),
        ("inputs", "set-rate-limit", "nope", "5"),
    ):
        done = fails(*args, data_dir=data_dir)
        assert "no input named 'nope'" in done.stderr, args
    done = fails("inputs", "disable-key", "pk_nope", data_dir=data_dir)
    assert "no such key" in done.stderr


def test_rotate_disables_the_old_key(server: Server) -> None:
    old = server.credentials
    assert post_one(server, old) == 202
    new = rotate(server.data_dir, "test-server")
    assert new.id == old.id
    assert new.key != old.key and new.secret != old.secret
    assert post_one(server, old) == 403
    assert post_one(server, new) == 202
    (item,) = listed(server.data_dir)
    assert [(k["key"], k["enabled"]) for k in item["keys"]] == [(old.key, False), (new.key, True)]


def test_rotate_keep_old_keeps_both_until_disable_key(server: Server) -> None:
    old = server.credentials
    new = rotate(server.data_dir, "test-server", "--keep-old")
    assert post_one(server, old) == 202
    assert post_one(server, new) == 202
    # Someone guessing: the old key with the new secret does not work.
    assert post_one(server, Credentials(old.id, old.key, new.secret)) == 403

    out = ok("inputs", "disable-key", old.key, data_dir=server.data_dir)
    assert "disabled" in out
    assert post_one(server, old) == 403
    assert post_one(server, new) == 202

    newest = rotate(server.data_dir, "test-server")
    assert post_one(server, new) == 403
    assert post_one(server, newest) == 202
    assert len(server.stored()) == 4


def test_disable_and_enable(server: Server) -> None:
    assert ok("inputs", "disable", "test-server", data_dir=server.data_dir).strip() == (
        "input 'test-server' disabled"
    )
    status, _, body = server.post("/v2/events", b'{"events": []}')
    assert status == 403, body
    assert listed(server.data_dir)[0]["enabled"] is False
    assert "no" in ok("inputs", "list", data_dir=server.data_dir).splitlines()[1].split()

    assert ok("inputs", "enable", "test-server", data_dir=server.data_dir).strip() == (
        "input 'test-server' enabled"
    )
    assert post_one(server, server.credentials) == 202
    assert listed(server.data_dir)[0]["enabled"] is True
    assert len(server.stored()) == 1


def test_set_rate_limit(server: Server) -> None:
    out = ok("inputs", "set-rate-limit", "test-server", "0.01", data_dir=server.data_dir)
    assert out.strip() == "input 'test-server': 0.01 batches/s"
    assert listed(server.data_dir)[0]["rate_limit"] == 0.01
    # The running server applies the new limit: one batch passes, the next must wait.
    assert post_one(server, server.credentials) == 202
    status, headers, _ = server.post("/v2/events", b'{"events": []}')
    assert status == 429
    assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) >= 1

    out = ok("inputs", "set-rate-limit", "test-server", "0", data_dir=server.data_dir)
    assert out.strip() == "input 'test-server': 0 batches/s"
    assert listed(server.data_dir)[0]["rate_limit"] == 0
    assert "unlimited" in ok("inputs", "list", data_dir=server.data_dir)
    assert post_one(server, server.credentials) == 202
    assert len(server.stored()) == 2

    done = fails("inputs", "set-rate-limit", "test-server", "-5", data_dir=server.data_dir)
    assert "BATCHES_PER_S" in done.stderr or "-5" in done.stderr


# -- batches --------------------------------------------------------------------------------


def post_batches(server: Server) -> list[bytes]:
    """Three batches (one of them historical), as sent."""
    bodies = [
        b'{"events": [], "source_request_id": "one"}',
        b'{"environment":"development","user_identities":{"email":"a@example.com"}}',
    ]
    for body in bodies:
        assert post_one(server, server.credentials, body) == 202
    historical = (
        b'{"source_request_id": "old", "events": [{"event_type": "session_start",'
        b' "data": {"timestamp_unixtime_ms": 1500000000000}}]}'
    )
    status, _, answer = server.post("/v2/bulkevents/historical", b"[" + historical + b"]")
    assert status == 202, answer
    return [*bodies, historical]


def check_line(line: str, sent: bytes, server: Server) -> dict[str, Any]:
    stamped = json.loads(line)
    assert list(stamped) == STAMP_KEYS
    assert stamped["input_id"] == server.credentials.id
    assert stamped["channel"] == "server_to_server"
    assert stamped["ip"] == "127.0.0.1"
    assert uuid.UUID(stamped["batch_id"])
    assert isinstance(stamped["received_at_ms"], int) and stamped["received_at_ms"] > 1.6e12
    assert stamped["batch"] == json.loads(sent)
    assert sent.decode() in line  # the batch is embedded byte for byte
    return stamped


def test_batches_limit_prints_oldest_first_with_stamps(server: Server) -> None:
    sent = post_batches(server)
    out = ok("batches", "--limit", "2", data_dir=server.data_dir)
    lines = out.splitlines()
    assert len(lines) == 2
    first, second = (
        check_line(line, body, server) for line, body in zip(lines, sent, strict=False)
    )
    assert first["offset"] < second["offset"]
    assert (first["historical"], second["historical"]) == (False, False)

    everything = ok("batches", data_dir=server.data_dir).splitlines()
    assert everything[:2] == lines
    assert len(everything) == 3
    third = check_line(everything[2], sent[2], server)
    assert third["historical"] is True
    assert [json.loads(line)["offset"] for line in everything] == [
        s.offset for s in server.stored()
    ]

    after = ok("batches", "--after", str(first["offset"]), data_dir=server.data_dir)
    assert after.splitlines() == everything[1:]
    assert ok("batches", "--after", str(third["offset"]), data_dir=server.data_dir) == ""
    assert ok("batches", "--limit", "10", data_dir=server.data_dir).splitlines() == everything


def test_batches_on_an_empty_store_prints_nothing(store_dir: Path) -> None:
    assert ok("batches", "--limit", "5", data_dir=store_dir) == ""


def test_batches_limit_must_be_positive(store_dir: Path) -> None:
    done = fails("batches", "--limit", "0", data_dir=store_dir)
    assert "--limit" in done.stderr


#: mParticle's official sample batch, pretty-printed over 706 lines.
SAMPLE_BATCH = (
    DATA / "inbound" / "mParticle-docs__static_schema_mparticle.inbound.eventsapi.sample.json"
)


def test_batches_prints_a_pretty_printed_batch_on_one_line(server: Server) -> None:
    sample = SAMPLE_BATCH.read_bytes()
    assert sample.count(b"\n") > 100
    # Line breaks a JSON string may hold as they are, which str.splitlines() splits at too.
    breaks = '{\r\n  "events": [],\r\n  "user_attributes": {"bio": "a\u2028b\u2029c\u0085d"}\r\n}'
    sent = [sample, breaks.encode()]
    for body in sent:
        assert post_one(server, server.credentials, body) == 202
    out = ok("batches", data_dir=server.data_dir)
    lines = out.splitlines()  # splits at U+2028, U+2029 and U+0085 too
    assert len(lines) == 2
    for line, body in zip(lines, sent, strict=True):
        stamped = json.loads(line)
        assert list(stamped) == STAMP_KEYS
        assert stamped["batch"] == json.loads(body)
        # the same members in the same order as sent
        assert list(stamped["batch"]) == list(json.loads(body))


def test_batches_prints_a_damaged_batch_as_one_json_string(store_dir: Path) -> None:
    backend = open_sqlite(store_dir)
    try:
        backend.log.append(
            [
                NewBatch("b-1", "input-1", 1_700_000_000_000, "server_to_server", body)
                for body in (b'{\n  "events": [\n', b"\x00\xff\xfe\nbinary\r\n", b'{"ok": 1}')
            ]
        )
    finally:
        backend.close()
    lines = ok("batches", data_dir=store_dir).splitlines()
    assert [json.loads(line)["batch"] for line in lines] == [
        '{\n  "events": [\n',
        "\x00\ufffd\ufffd\nbinary\r\n",
        {"ok": 1},
    ]
    assert lines[2].endswith(',"batch":{"ok": 1}}')  # one line of JSON: as it came


def test_batches_follow_prints_new_batches(server: Server) -> None:
    before = b'{"source_request_id": "before-follow"}'
    assert post_one(server, server.credentials, before) == 202
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "patchbay",
            "batches",
            "--follow",
            "--data-dir",
            str(server.data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[bytes] = queue.Queue()
    assert process.stdout is not None and process.stderr is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        check_line(lines.get(timeout=30).decode(), before, server)
        # The follower is running and has printed everything so far; post one more.
        after = b'{"source_request_id": "after-follow", "events": []}'
        assert post_one(server, server.credentials, after) == 202
        check_line(lines.get(timeout=30).decode(), after, server)
        assert process.poll() is None  # still following
    finally:
        process.terminate()
        process.wait(timeout=15)
        reader.join(timeout=15)
        stdout.close()
        process.stderr.close()
    assert lines.empty()


# -- serve ----------------------------------------------------------------------------------


def test_serve_creates_a_missing_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "not-there-yet"
    assert not data_dir.exists()
    server = start_server(data_dir)
    try:
        assert data_dir.is_dir()
        assert (data_dir / DB_FILE).is_file()
        status, body = server.get("/healthz")
        assert status == 200
        assert json.loads(body) == {
            "status": "ok",
            "last_offset": 0,
            "roles": ["ingest", "process", "deliver"],
        }
    finally:
        stop_server(server)
    # A graceful stop: uvicorn re-raises the SIGTERM it handled once it has shut down.
    assert server.process.returncode in (0, -signal.SIGTERM)
    assert '"event": "stopped"' in server.log_path.read_text()


def test_version(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "patchbay", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("patchbay, version ")


# -- a data dir that is not there -------------------------------------------------------------

#: Every command but those that create a store (``serve``, ``inputs add``), with arguments
#: that get it as far as opening the store.
NEEDS_A_STORE: dict[str, list[str]] = {
    "inputs list": [],
    "inputs rotate": ["app"],
    "inputs disable": ["app"],
    "inputs enable": ["app"],
    "inputs disable-key": ["pk_x"],
    "inputs set-rate-limit": ["app", "5"],
    "inputs set-idsync-key-only": ["app", "on"],
    "inputs set-allowed-origins": ["app"],
    "api-clients add": ["crm", "--scope", "profiles:read"],
    "api-clients list": [],
    "api-clients rotate": ["crm"],
    "api-clients disable": ["crm"],
    "api-clients enable": ["crm"],
    "api-clients remove": ["crm"],
    "batches": ["--limit", "1"],
    "profiles show": ["1"],
    "profiles find": ["--email", "a@example.com"],
    "reprocess": [],
    "modules register": ["acme", "--url", "http://127.0.0.1:9/never-called"],
    "modules list": [],
    "modules show": ["acme"],
    "partner verify": ["--module", "acme"],
    "outputs add": ["hook", "--webhook", "http://127.0.0.1:9/"],
    "outputs list": [],
    "outputs show": ["hook"],
    "outputs pause": ["hook"],
    "outputs resume": ["hook"],
    "outputs status": [],
    "connections add": ["--input", "app", "--output", "hook"],
    "connections list": [],
    "connections remove": ["--input", "app", "--output", "hook"],
    "deliveries parked": [],
    "deliveries replay": ["--output", "hook"],
    "audiences create": ["AUDIENCE_FILE"],
    "audiences update": ["buyers", "AUDIENCE_FILE"],
    "audiences list": [],
    "audiences show": ["buyers"],
    "audiences members": ["buyers"],
    "audiences delete": ["buyers"],
    "audiences connect": ["buyers", "--output", "hook"],
    "audiences disconnect": ["buyers", "--output", "hook"],
    "kits register": ["AUDIENCE_FILE"],
    "kits list": [],
    "kits show": ["Appboy"],
    "kits connect": ["Appboy", "--input", "site"],
    "kits disconnect": ["Appboy", "--input", "site"],
    "kits unregister": ["Appboy"],
    "db upgrade": [],
}
CREATES_A_STORE = {"serve", "inputs add"}
#: Commands that use no store (tests/http/test_devcert.py).
USES_NO_STORE = {"dev-cert"}


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append(f"{prefix}{name}")
    return found


def test_every_command_is_checked_on_a_missing_data_dir() -> None:
    assert not CREATES_A_STORE & set(NEEDS_A_STORE)
    assert set(_commands(main)) == set(NEEDS_A_STORE) | CREATES_A_STORE | USES_NO_STORE


@pytest.mark.parametrize("command", sorted(NEEDS_A_STORE))
def test_commands_fail_on_a_missing_data_dir_and_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.delenv("PATCHBAY_DATA_DIR", raising=False)
    monkeypatch.delenv("PATCHBAY_CONFIG", raising=False)
    audience = tmp_path / "buyers.json"
    audience.write_text('{"name": "buyers", "criteria": {"event": "purchase"}}')
    missing = tmp_path / "typo" / "data"
    args = [str(audience) if a == "AUDIENCE_FILE" else a for a in NEEDS_A_STORE[command]]
    result = CliRunner().invoke(main, [*command.split(), *args, "--data-dir", str(missing)])
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: no Patchbay data at {missing} (give --data-dir or PATCHBAY_DATA_DIR;"
        " `patchbay serve` or `patchbay inputs add` creates one)\n"
    )
    assert not (tmp_path / "typo").exists()


def test_a_missing_data_dir_is_named_in_full(tmp_path: Path) -> None:
    # Run from another directory, with the default (relative) data dir: the error says
    # where it looked, rather than printing nothing.
    done = subprocess.run(
        [sys.executable, "-m", "patchbay", "batches"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")},
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"Error: no Patchbay data at {tmp_path / 'patchbay-data'} (give --data-dir or"
        " PATCHBAY_DATA_DIR; `patchbay serve` or `patchbay inputs add` creates one)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_commands_that_create_a_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    add_input(data_dir, "app")
    assert (data_dir / DB_FILE).is_file()
    assert [i["name"] for i in listed(data_dir)] == ["app"]
    # `serve` creating one is test_serve_creates_a_missing_data_dir


def test_a_data_dir_under_a_regular_file_is_a_one_line_error(tmp_path: Path) -> None:
    # (A directory without write permission cannot be tested as root, who may write anyway.)
    regular = tmp_path / "a-file"
    regular.write_text("not a directory")
    data_dir = regular / "data"
    for args in (["inputs", "add", "app", "--type", "web"], ["inputs", "list"], ["reprocess"]):
        done = fails(*args, data_dir=data_dir)
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line.startswith("Error: ")
        assert str(data_dir) in line
    done = fails("inputs", "add", "app", "--type", "web", data_dir=data_dir)
    assert done.stderr == (f"Error: cannot open the Patchbay data at {data_dir}: Not a directory\n")
    # serve, too (it creates a store where there is none)
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "patchbay", "serve", "--data-dir", str(data_dir), "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == (f"Error: cannot open the Patchbay data at {data_dir}: Not a directory\n")
    # and a data dir that is a regular file itself
    done = fails("batches", data_dir=regular)
    assert "is a file" in done.stderr
    assert regular.read_text() == "not a directory"


def test_a_store_that_is_not_a_database_is_a_one_line_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / DB_FILE).write_text("not sqlite")
    done = fails("inputs", "list", data_dir=data_dir)
    assert done.stderr == (
        f"Error: cannot open the Patchbay data at {data_dir}: file is not a database\n"
    )
