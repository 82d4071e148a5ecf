"""Sealed secrets (patchbay.collect.sealing) and how inputs' credentials use them."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from patchbay.backends.memory import open_memory
from patchbay.clock import SystemClock
from patchbay.collect.inputs import (
    INPUT_TYPES,
    check_idsync_key_only,
    create_input,
    hash_secret,
    key_only_allowed,
    rotate_credentials,
)
from patchbay.collect.sealing import PREFIX, LazyBox, SealingError, SecretBox, key_file, load_box
from patchbay.settings import Settings


def test_a_sealed_secret_opens_only_with_its_key_and_box(tmp_path: Path) -> None:
    box = load_box(tmp_path / "k")
    sealed = box.seal("ps_secret", "pk_a")
    assert sealed.startswith(PREFIX)
    assert "ps_secret" not in sealed
    assert box.seal("ps_secret", "pk_a") != sealed  # a random nonce each time
    assert box.open(sealed, "pk_a") == "ps_secret"
    assert box.open(sealed, "pk_b") is None  # bound to the API key
    assert load_box(tmp_path / "other").open(sealed, "pk_a") is None
    assert box.open(sealed[:-4] + "AAAA", "pk_a") is None
    for damaged in ("", "aesgcm1:", "aesgcm1:!!!", "aesgcm1:AAAA", "sha256:00", "aesgcm2:x"):
        assert box.open(damaged, "pk_a") is None, damaged
    assert "ps_" not in repr(box)


def test_the_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "credentials.key"
    first = load_box(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["credentials.key"]
    sealed = first.seal("s", "k")
    assert load_box(path).open(sealed, "k") == "s"


def test_processes_racing_to_make_the_key_agree(tmp_path: Path) -> None:
    path = tmp_path / "credentials.key"
    boxes: list[SecretBox] = []
    threads = [threading.Thread(target=lambda: boxes.append(load_box(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sealed = boxes[0].seal("s", "k")
    assert all(box.open(sealed, "k") == "s" for box in boxes)


def test_a_bad_key_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "credentials.key"
    path.write_text("not a key\n")
    with pytest.raises(SealingError, match=r"credentials.key: not a credentials key"):
        load_box(path)
    with pytest.raises(SealingError, match="not a credentials key"):
        LazyBox(path).get()
    with pytest.raises(SealingError, match="32 bytes"):
        SecretBox(b"short")


def test_key_file_default_and_setting(tmp_path: Path) -> None:
    assert key_file(Settings(data_dir=tmp_path)) == tmp_path / "credentials.key"
    elsewhere = tmp_path / "keys" / "patchbay.key"
    assert key_file(Settings(data_dir=tmp_path, credentials_key_file=elsewhere)) == elsewhere


def test_client_secrets_are_sealed_server_secrets_never(tmp_path: Path) -> None:
    box = load_box(tmp_path / "credentials.key")
    store = open_memory().inputs
    clock = SystemClock()
    for type_ in INPUT_TYPES:
        created = create_input(store, type_, type_, 0, clock, box=box)
        (credential,) = store.credentials(created.id)
        assert credential.secret_hash == hash_secret(created.secret)
        if type_ in ("server", "feed"):
            assert credential.secret_sealed is None, type_
        else:
            assert credential.secret_sealed is not None, type_
            assert box.open(credential.secret_sealed, created.key) == created.secret
    item = store.get_input("ios")
    assert item is not None
    rotated = rotate_credentials(store, item, clock, keep_old=True, box=box)
    found = store.find_credential(rotated.key)
    assert found is not None and found[0].secret_sealed is not None
    assert box.open(found[0].secret_sealed, rotated.key) == rotated.secret
    # Without a box, nothing is sealed (signatures of that key cannot be checked).
    plain = create_input(store, "no-box", "android", 0, clock)
    assert [c.secret_sealed for c in store.credentials(plain.id)] == [None]


def test_which_inputs_accept_their_key_alone() -> None:
    store = open_memory().inputs
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
