"""The embedded backend keeps the credentials it stores to call partners encrypted, with a
key in a file apart (patchbay.secretbox), and encrypts what an earlier version stored in
plain text when it opens."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path

import msgspec
import pytest

from patchbay.backends.records import (
    AudienceConnection,
    AudienceRecord,
    Connection,
    Delivery,
    ModuleRecord,
    Output,
    WebhookDestination,
)
from patchbay.backends.sqlite import DB_FILE, DELIVERIES_FILE, SEGMENT_FILE, open_sqlite
from patchbay.errors import StorageFull
from patchbay.partner.targets import HttpTarget
from patchbay.secretbox import KEY_FILE, PAYLOAD_PREFIX, SecretBox, SecretsError

NOW = 1_700_000_000_000
MODULE_TOKEN = "module-token-0123456789"
WEBHOOK_TOKEN = "webhook-token-0123456789"
CONNECTION_SECRET = "connection-secret-0123456789"
AUDIENCE_SECRET = "audience-secret-0123456789"
PARTNER_ANSWER = "partner-answer-0123456789"
QUEUED_SECRET = "queued-account-secret-0123456789"
SECRETS = (
    MODULE_TOKEN,
    WEBHOOK_TOKEN,
    CONNECTION_SECRET,
    AUDIENCE_SECRET,
    PARTNER_ANSWER,
    QUEUED_SECRET,
)


def module() -> ModuleRecord:
    return ModuleRecord(
        name="demo",
        display_name="Demo",
        version="1.0.0",
        target=HttpTarget("https://demo.example.com/firehose", MODULE_TOKEN),
        registration=b"{}",
        created_at_ms=NOW,
        updated_at_ms=NOW,
    )


def output() -> Output:
    return Output("hook", WebhookDestination("http://x"), NOW, NOW, {"token": WEBHOOK_TOKEN})


def connection() -> Connection:
    return Connection("c1", "input-a", "hook", NOW, {"apiKey": CONNECTION_SECRET})


def audience_connection(audience_id: int) -> AudienceConnection:
    return AudienceConnection(
        audience_id, "hook", NOW, settings={"list": AUDIENCE_SECRET}, attributes=["$email"]
    )


def delivery(delivery_id: str = "d1") -> Delivery:
    """A queued request carrying an account setting, as the activate stage makes them."""
    payload = msgspec.json.encode(
        {
            "type": "event_processing_request",
            "account": {"account_settings": {"apiKey": QUEUED_SECRET}},
        }
    )
    return Delivery(delivery_id, "hook", "c1", 7, payload, NOW, NOW, NOW)


def fill(data: Path) -> int:
    """Store one of each secret and queue a delivery; the audience's id."""
    backend = open_sqlite(data)
    try:
        backend.modules.put_module(module())
        backend.outputs.add_output(output())
        backend.outputs.add_connection(connection())
        added = backend.audiences.add_audience(AudienceRecord(0, "buyers", "", b"{}", NOW, NOW, 1))
        backend.audiences.put_audience_connection(audience_connection(added.id))
        backend.audiences.subscribed(added.id, "hook", {"list_id": PARTNER_ANSWER}, NOW)
        backend.outbox.enqueue([delivery()])
        return added.id
    finally:
        backend.close()


def raw_bytes(data: Path) -> bytes:
    """Every byte of every file in the data directory but the key file."""
    return b"".join(p.read_bytes() for p in sorted(data.iterdir()) if p.name != KEY_FILE)


def assert_read_back(data: Path, audience_id: int, key_file: Path | None = None) -> None:
    backend = open_sqlite(data, key_file=key_file)
    try:
        assert backend.modules.get_module("demo") == module()
        assert backend.modules.list_modules() == [module()]
        assert backend.outputs.get_output("hook") == output()
        assert backend.outputs.list_connections() == [connection()]
        (found,) = backend.audiences.list_audience_connections()
        assert found.settings == {"list": AUDIENCE_SECRET}
        assert found.partner_settings == {"list_id": PARTNER_ANSWER}
        assert found.audience_id == audience_id
        assert backend.outbox.due("hook", NOW, 10) == [delivery()]
        assert backend.outbox.get_delivery("d1") == delivery()
    finally:
        backend.close()


def test_secrets_are_encrypted_at_rest_and_read_back(tmp_path: Path) -> None:
    """No stored credential is in any database file (or its WAL) in plain text; the key
    file is apart, 0600, and the stores read every credential back."""
    data = tmp_path / "data"
    audience_id = fill(data)
    stored = raw_bytes(data)
    for secret in SECRETS:
        assert secret.encode() not in stored, secret
    key_file = data / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().strip() not in stored  # the key is in no database
    assert_read_back(data, audience_id)


def test_plain_text_secrets_of_an_earlier_version_are_encrypted_on_open(tmp_path: Path) -> None:
    """Values an earlier version stored in plain text are encrypted by the first open, and
    no copy of them stays in the files (free pages overwritten, WAL truncated)."""
    data = tmp_path / "data"
    audience_id = fill(data)
    (data / KEY_FILE).unlink()  # as before encryption: no key file, plain-text values
    with sqlite3.connect(data / DB_FILE) as db:
        db.execute("UPDATE modules SET token = ?", (MODULE_TOKEN,))
    db.close()
    with sqlite3.connect(data / DELIVERIES_FILE) as db:
        db.execute("UPDATE outputs SET settings = ?", (msgspec.json.encode(output().settings),))
        db.execute(
            "UPDATE connections SET settings = ?",
            (msgspec.json.encode(connection().settings).decode(),),
        )
    db.close()
    plain = msgspec.structs.replace(
        audience_connection(audience_id),
        partner_settings={"list_id": PARTNER_ANSWER},
        subscribed_at_ms=NOW,
    )
    with sqlite3.connect(data / SEGMENT_FILE) as db:
        db.execute("UPDATE audience_connections SET doc = ?", (msgspec.msgpack.encode(plain),))
    db.close()
    with sqlite3.connect(data / DELIVERIES_FILE) as db:  # queued before payloads were sealed
        db.execute("UPDATE deliveries SET payload = ?", (delivery().payload,))
        db.execute("PRAGMA user_version = 0")
    db.close()
    stored = raw_bytes(data)
    assert MODULE_TOKEN.encode() in stored
    assert QUEUED_SECRET.encode() in stored

    assert_read_back(data, audience_id)  # opens: migrates

    stored = raw_bytes(data)
    for secret in SECRETS:
        assert secret.encode() not in stored, secret
    with sqlite3.connect(data / DB_FILE) as db:
        (token,) = db.execute("SELECT token FROM modules").fetchone()
    db.close()
    assert token.startswith("pbenc1:")
    with sqlite3.connect(data / DELIVERIES_FILE) as db:
        (payload,) = db.execute("SELECT payload FROM deliveries").fetchone()
        (version,) = db.execute("PRAGMA user_version").fetchone()
    db.close()
    assert payload.startswith(PAYLOAD_PREFIX)
    assert version == 1
    assert_read_back(data, audience_id)


def test_a_sealed_payload_opens_only_for_its_delivery(tmp_path: Path) -> None:
    """A payload is bound to its delivery's id (moved to another row, it does not open),
    and every process seals with a key of its own and nonces that never repeat."""
    data = tmp_path / "data"
    fill(data)
    backend = open_sqlite(data)
    try:
        backend.outbox.enqueue([delivery("d2")])
    finally:
        backend.close()
    with sqlite3.connect(data / DELIVERIES_FILE) as db:
        rows = dict(db.execute("SELECT id, payload FROM deliveries").fetchall())
        db.execute("UPDATE deliveries SET payload = ? WHERE id = 'd2'", (rows["d1"],))
    db.close()
    backend = open_sqlite(data)
    try:
        assert backend.outbox.get_delivery("d1") == delivery()
        with pytest.raises(SecretsError, match="cannot be decrypted"):
            backend.outbox.get_delivery("d2")
    finally:
        backend.close()
    start = len(PAYLOAD_PREFIX)
    salts = {bytes(p[start : start + 16]) for p in rows.values()}
    assert len(salts) == 2  # d1 and d2 were sealed by two opens of the store
    box = SecretBox(data / KEY_FILE)
    sealed = [box.seal_payload(b"{}", "x") for _ in range(3)]
    assert len({s[start + 16 : start + 28] for s in sealed}) == 3
    assert all(box.open_payload(s, "x") == b"{}" for s in sealed)


def test_the_key_file_can_be_elsewhere(tmp_path: Path) -> None:
    """``key_file`` (the ``secrets_key_file`` setting) puts the key outside the data
    directory; the data directory then holds no key."""
    data, key_file = tmp_path / "data", tmp_path / "keys" / "patchbay.key"
    backend = open_sqlite(data, key_file=key_file)
    try:
        backend.modules.put_module(module())
    finally:
        backend.close()
    assert not (data / KEY_FILE).exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    backend = open_sqlite(data, key_file=key_file)
    try:
        assert backend.modules.get_module("demo") == module()
    finally:
        backend.close()


def test_a_missing_or_wrong_key_file_is_a_clear_error(tmp_path: Path) -> None:
    """Without the key file, with another key, or with a key file others can read, reading
    a secret fails with an error naming the key file (never garbage, never the secret)."""
    data = tmp_path / "data"
    fill(data)
    key_file = data / KEY_FILE
    original = key_file.read_bytes()

    def read_module(key_file: Path | None = None) -> None:
        backend = open_sqlite(data, key_file=key_file)
        try:
            backend.modules.get_module("demo")
        finally:
            backend.close()

    key_file.unlink()
    with pytest.raises(SecretsError, match=f"the key file {key_file} is missing") as missing:
        read_module()
    SecretBox(key_file).seal("a new key is made")
    with pytest.raises(SecretsError, match=f"cannot be decrypted with the key in {key_file}"):
        read_module()
    elsewhere = tmp_path / "elsewhere.key"  # in the data directory it would be made 0600
    elsewhere.write_bytes(original)
    elsewhere.chmod(0o644)
    with pytest.raises(SecretsError, match=f"run: chmod 600 {elsewhere}"):
        read_module(elsewhere)
    assert MODULE_TOKEN not in str(missing.value)


def test_a_key_file_without_room_is_storage_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for a new key: StorageFull (the APIs' 503), no key file, and a key once there
    is room."""

    def no_room(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    box = SecretBox(tmp_path / KEY_FILE)
    monkeypatch.setattr("patchbay.secretbox.os.write", no_room)
    with pytest.raises(StorageFull, match="No space left on device"):
        box.seal("partner-token")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert box.open(box.seal("partner-token")) == "partner-token"
