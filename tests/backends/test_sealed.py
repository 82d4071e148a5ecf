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
    ModuleRecord,
    Output,
    WebhookDestination,
)
from patchbay.backends.sqlite import DB_FILE, DELIVERIES_FILE, SEGMENT_FILE, open_sqlite
from patchbay.errors import StorageFull
from patchbay.partner.targets import HttpTarget
from patchbay.secretbox import KEY_FILE, SecretBox, SecretsError

NOW = 1_700_000_000_000
MODULE_TOKEN = "module-token-0123456789"
WEBHOOK_TOKEN = "webhook-token-0123456789"
CONNECTION_SECRET = "connection-secret-0123456789"
AUDIENCE_SECRET = "audience-secret-0123456789"
PARTNER_ANSWER = "partner-answer-0123456789"
SECRETS = (MODULE_TOKEN, WEBHOOK_TOKEN, CONNECTION_SECRET, AUDIENCE_SECRET, PARTNER_ANSWER)


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


def fill(data: Path) -> int:
    """Store one of each secret; the audience's id."""
    backend = open_sqlite(data)
    try:
        backend.modules.put_module(module())
        backend.outputs.add_output(output())
        backend.outputs.add_connection(connection())
        added = backend.audiences.add_audience(AudienceRecord(0, "buyers", "", b"{}", NOW, NOW, 1))
        backend.audiences.put_audience_connection(audience_connection(added.id))
        backend.audiences.subscribed(added.id, "hook", {"list_id": PARTNER_ANSWER}, NOW)
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
    assert MODULE_TOKEN.encode() in raw_bytes(data)

    assert_read_back(data, audience_id)  # opens: migrates

    stored = raw_bytes(data)
    for secret in SECRETS:
        assert secret.encode() not in stored, secret
    with sqlite3.connect(data / DB_FILE) as db:
        (token,) = db.execute("SELECT token FROM modules").fetchone()
    db.close()
    assert token.startswith("pbenc1:")
    assert_read_back(data, audience_id)


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
