"""The data directory is its user's alone (patchbay.datadir)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from patchbay.datadir import DataDirError, create_owner_only, prepare_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_dir_is_created_0700(tmp_path: Path) -> None:
    data = tmp_path / "a" / "data"
    prepare_data_dir(data)
    assert mode(data) == 0o700


@pytest.mark.parametrize("dir_mode", [0o755, 0o750, 0o701, 0o710])
def test_a_data_dir_others_can_access_is_refused(tmp_path: Path, dir_mode: int) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(dir_mode)
    expected = (
        f"data directory {data} has mode {dir_mode:04o}: group or others can access it;"
        f" run: chmod 700 {data}"
    )
    with pytest.raises(DataDirError) as raised:
        prepare_data_dir(data)
    assert str(raised.value) == expected


def test_files_left_readable_are_made_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data_dir(data)
    for name in ("patchbay.db", "patchbay.db-wal", "patchbay.db-shm", "secrets.key"):
        (data / name).write_bytes(b"x")
        (data / name).chmod(0o644)
    prepare_data_dir(data)
    assert {p.name: mode(p) for p in data.iterdir()} == dict.fromkeys(
        ("patchbay.db", "patchbay.db-wal", "patchbay.db-shm", "secrets.key"), 0o600
    )


def test_create_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    create_owner_only(path)
    assert mode(path) == 0o600 and path.read_bytes() == b""
    path.write_bytes(b"kept")
    path.chmod(0o644)
    create_owner_only(path)
    assert mode(path) == 0o600 and path.read_bytes() == b"kept"
