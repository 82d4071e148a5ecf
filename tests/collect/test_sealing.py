"""Secrets sealed for IDSync (patchbay.secretbox.SecretBox.seal_bound) and how inputs'
credentials use them."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from patchbay.backends.abstract import Backend
from patchbay.clock import SystemClock
from patchbay.collect.inputs import (
    INPUT_TYPES,
    check_idsync_key_only,
    create_input,
    hash_secret,
    key_only_allowed,
    rotate_credentials,
)
from patchbay.secretbox import BOUND_PREFIX, KEY_FILE, SecretBox, SecretsError, key_path


def test_a_sealed_secret_opens_only_with_its_key_file_and_api_key(tmp_path: Path) -> None:
    box = SecretBox(tmp_path / "k")
    sealed = box.seal_bound("ps_secret", "pk_a")
    assert sealed.startswith(BOUND_PREFIX)
    assert "ps_secret" not in sealed
    assert box.seal_bound("ps_secret", "pk_a") != sealed  # a random nonce each time
    assert box.open_bound(sealed, "pk_a") == "ps_secret"
    assert box.open_bound(sealed, "pk_b") is None  # bound to the API key
    other = SecretBox(tmp_path / "other")
    other.seal("made")  # (creates its key file)
    assert other.open_bound(sealed, "pk_a") is None
    assert box.open_bound(sealed[:-4] + "AAAA", "pk_a") is None
    for damaged in ("", "aesgcm1:", "aesgcm1:!!!", "aesgcm1:AAAA", "sha256:00", "aesgcm2:x"):
        assert box.open_bound(damaged, "pk_a") is None, damaged
    # the Fernet values of the same key file are another scheme: neither opens the other
    assert box.open_bound(box.seal("ps_secret"), "pk_a") is None
    assert "ps_" not in repr(box)


def test_the_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / KEY_FILE
    sealed = SecretBox(path).seal_bound("s", "k")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]
    assert SecretBox(path).open_bound(sealed, "k") == "s"


def test_processes_racing_to_make_the_key_agree(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    sealed: list[str] = []
    threads = [
        threading.Thread(target=lambda: sealed.append(SecretBox(path).seal_bound("s", "k")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(SecretBox(path).open_bound(s, "k") == "s" for s in sealed)


def test_a_missing_or_bad_key_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    with pytest.raises(SecretsError, match=f"the key file {path} is missing"):
        SecretBox(path).open_bound("aesgcm1:AAAA", "k")
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(SecretsError, match=f"key file {path} does not hold a key"):
        SecretBox(path).open_bound("aesgcm1:AAAA", "k")


def test_key_file_default_and_setting(tmp_path: Path) -> None:
    assert key_path(tmp_path) == tmp_path / "secrets.key"
    elsewhere = tmp_path / "keys" / "patchbay.key"
    assert key_path(tmp_path, elsewhere) == elsewhere


def test_client_secrets_are_sealed_server_secrets_never(tmp_path: Path, backend: Backend) -> None:
    box = SecretBox(tmp_path / KEY_FILE)
    store = backend.inputs
    clock = SystemClock()
    for type_ in INPUT_TYPES:
        created = create_input(store, type_, type_, 0, clock, box=box)
        (credential,) = store.credentials(created.id)
        assert credential.secret_hash == hash_secret(created.secret)
        if type_ in ("server", "feed"):
            assert credential.secret_sealed is None, type_
        else:
            assert credential.secret_sealed is not None, type_
            assert box.open_bound(credential.secret_sealed, created.key) == created.secret
    item = store.get_input("ios")
    assert item is not None
    rotated = rotate_credentials(store, item, clock, keep_old=True, box=box)
    found = store.find_credential(rotated.key)
    assert found is not None and found[0].secret_sealed is not None
    assert box.open_bound(found[0].secret_sealed, rotated.key) == rotated.secret
    # Without a box, nothing is sealed (signatures of that key cannot be checked).
    plain = create_input(store, "no-box", "android", 0, clock)
    assert [c.secret_sealed for c in store.credentials(plain.id)] == [None]


def test_which_inputs_accept_their_key_alone(backend: Backend) -> None:
    store = backend.inputs
    clock = SystemClock()
    for type_ in INPUT_TYPES:
        create_input(store, type_, type_, 0, clock)
    allowed = {i.type for i in store.list_inputs() if key_only_allowed(i)}
    assert allowed == {"web"}
    created = create_input(store, "ios-open", "ios", 0, clock, idsync_key_only=True)
    item = store.get_input(created.id)
    assert item is not None and key_only_allowed(item)
    for type_ in ("server", "feed"):
        with pytest.raises(ValueError, match=f"a {type_} input never accepts its key alone"):
            create_input(store, f"{type_}-open", type_, 0, clock, idsync_key_only=True)
        # Even a stored flag (an edited database) does not open a server-side input.
        server = store.get_input(type_)
        assert server is not None
        store.set_idsync_key_only(server.id, True)
        server = store.get_input(type_)
        assert server is not None and not key_only_allowed(server)
    with pytest.raises(ValueError, match="a web input always accepts its key alone"):
        check_idsync_key_only("web", False)
    check_idsync_key_only("android", False)
    check_idsync_key_only("android", True)
