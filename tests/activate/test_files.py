"""File outputs stay inside the outputs directory (patchbay.activate.files): checked when
added (after symlinks and ``..``) and again at every write (no symlink followed, no hard
link, nothing but a regular file)."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path

import pytest

from patchbay.activate.engine import FileSender
from patchbay.activate.files import OutputPathError, OutputsDir
from patchbay.backends.records import Delivery
from patchbay.errors import StorageFull
from patchbay.settings import Settings


@pytest.fixture
def outputs(tmp_path: Path) -> OutputsDir:
    return OutputsDir(tmp_path / "data" / "outputs", tmp_path / "data")


def write(outputs: OutputsDir, path: str | Path, line: bytes = b"x") -> None:
    with os.fdopen(outputs.open_append(str(path)), "ab") as handle:
        handle.write(line + b"\n")


def test_default_directory_is_in_the_data_dir_and_created_owner_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    found = OutputsDir.from_settings(settings)
    assert found.root == (tmp_path / "data" / "outputs").absolute()
    place = found.place("events.jsonl")
    assert place == (tmp_path / "data" / "outputs" / "events.jsonl").resolve()
    assert stat.S_IMODE(found.root.stat().st_mode) == 0o700
    custom = OutputsDir.from_settings(Settings(data_dir=tmp_path, outputs_dir=tmp_path / "o"))
    assert custom.root == (tmp_path / "o").absolute()


def test_relative_and_inside_paths_are_taken(outputs: OutputsDir) -> None:
    root = outputs.ensure()
    assert outputs.place("a/b.jsonl") == root / "a" / "b.jsonl"
    assert outputs.place(str(root / "c.jsonl")) == root / "c.jsonl"
    assert outputs.place(str(root / "x" / ".." / "d.jsonl")) == root / "d.jsonl"


@pytest.mark.parametrize(
    "path",
    ["../patchbay.db", "../../escape.jsonl", "a/../../x", "/etc/passwd", ".", "", "a\0b"],
)
def test_paths_outside_are_refused_when_added(outputs: OutputsDir, path: str) -> None:
    with pytest.raises(OutputPathError) as caught:
        outputs.place(path)
    if path not in ("", "a\0b"):
        assert "outside the outputs directory" in str(caught.value)
        assert "outputs_dir" in str(caught.value)


def test_the_live_data_dir_is_refused(outputs: OutputsDir, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "patchbay.db").write_bytes(b"live")
    with pytest.raises(OutputPathError, match="outside the outputs directory"):
        outputs.place(str(data / "patchbay.db"))
    with pytest.raises(OutputPathError, match="outside the outputs directory"):
        write(outputs, data / "patchbay.db")
    assert (data / "patchbay.db").read_bytes() == b"live"


def test_a_symlink_out_of_the_directory_is_refused_when_added(
    outputs: OutputsDir, tmp_path: Path
) -> None:
    root = outputs.ensure()
    (root / "link.jsonl").symlink_to(tmp_path / "data" / "patchbay.db")
    (root / "dir").symlink_to(tmp_path)
    for path in ("link.jsonl", str(root / "link.jsonl"), "dir/x.jsonl"):
        with pytest.raises(OutputPathError, match="outside the outputs directory"):
            outputs.place(path)


def test_a_directory_holding_the_data_dir_is_refused(tmp_path: Path) -> None:
    around = OutputsDir(tmp_path, tmp_path / "data")
    with pytest.raises(OutputPathError, match="holds the data directory"):
        around.place("x.jsonl")
    same = OutputsDir(tmp_path / "data", tmp_path / "data")
    with pytest.raises(OutputPathError, match="holds the data directory"):
        same.place("x.jsonl")


def test_writes_append_to_a_private_file(outputs: OutputsDir) -> None:
    path = outputs.place("sub/dir/events.jsonl")
    write(outputs, path, b"1")
    write(outputs, path, b"2")
    assert path.read_bytes() == b"1\n2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_file_replaced_by_a_symlink_is_never_written(outputs: OutputsDir, tmp_path: Path) -> None:
    path = outputs.place("events.jsonl")
    write(outputs, path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    path.unlink()
    path.symlink_to(victim)
    with pytest.raises(OutputPathError, match="changed on disk"):
        write(outputs, path)
    assert victim.read_bytes() == b"keep"


def test_a_directory_replaced_by_a_symlink_is_never_written(
    outputs: OutputsDir, tmp_path: Path
) -> None:
    path = outputs.place("sub/events.jsonl")
    write(outputs, path)
    path.unlink()
    path.parent.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path.parent.symlink_to(elsewhere)
    with pytest.raises(OutputPathError, match="changed on disk"):
        write(outputs, path)
    assert list(elsewhere.iterdir()) == []


def test_a_hard_link_or_a_fifo_is_never_written(outputs: OutputsDir, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    path = outputs.place("events.jsonl")
    os.link(victim, path)
    with pytest.raises(OutputPathError, match="hard link"):
        write(outputs, path)
    assert victim.read_bytes() == b"keep"
    fifo = outputs.place("fifo.jsonl")
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match="changed on disk"):
        write(outputs, fifo)


def test_an_existing_output_outside_says_how_to_fix_it(outputs: OutputsDir, tmp_path: Path) -> None:
    outside = tmp_path / "old.jsonl"
    with pytest.raises(OutputPathError) as caught:
        write(outputs, outside)
    message = str(caught.value)
    assert str(outside) in message and "outputs_dir" in message
    assert "patchbay deliveries replay" in message
    assert not outside.exists()


def test_a_full_disk_leaves_no_partial_line(
    outputs: OutputsDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file output's disk fills mid-line: StorageFull (the engine backs off, the delivery
    stays pending and counts no attempt) and the file is as it was."""
    path = outputs.place("events.jsonl")
    write(outputs, path, b"kept")
    sender = FileSender(path, outputs)
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 4:
            return real_write(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    delivery = Delivery("d1", "file", "c1", 1, b'{"a":"12345678"}', 0, 0, 0)
    monkeypatch.setattr("patchbay.activate.engine.os.write", half_then_full)
    with pytest.raises(StorageFull):
        asyncio.run(sender.send(delivery, 0))
    assert path.read_bytes() == b"kept\n"
    monkeypatch.undo()
    assert asyncio.run(sender.send(delivery, 0)).ok
    assert path.read_bytes() == b'kept\n{"a":"12345678"}\n'
    asyncio.run(sender.close())
