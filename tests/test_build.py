"""The compiled build (hatch_build.py, scripts/compile.sh): a wheel compiles the segment
stage with mypyc unless told not to, and the suite runs what it built.

``scripts/test.sh`` runs the suite on ``build/compiled`` with ``PATCHBAY_TEST_COMPILED=1``:
then the segment stage must be compiled here and in the ``patchbay`` processes the tests
start, so that a build that quietly fell back to pure Python fails instead of passing
untested."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from patchbay.segment import runs_compiled

ROOT = Path(__file__).resolve().parents[1]
EXPECT_COMPILED = os.environ.get("PATCHBAY_TEST_COMPILED") == "1"


@pytest.mark.skipif(not EXPECT_COMPILED, reason="the suite runs the source (no build/compiled)")
def test_the_suite_runs_the_compiled_segment_stage() -> None:
    import patchbay.segment.engine as engine

    assert runs_compiled(), engine.__file__
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from patchbay.segment import runs_compiled; print(runs_compiled())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "True"


@pytest.mark.skipif(EXPECT_COMPILED, reason="the suite runs build/compiled")
def test_the_source_runs_pure_python() -> None:
    assert not runs_compiled()


def _wheel(tmp_path: Path, choice: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        env={**os.environ, "PATCHBAY_COMPILE": choice, **env},
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_a_wheel_without_compiling_is_pure_python(tmp_path: Path) -> None:
    built = _wheel(tmp_path, "0")
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "patchbay/segment/engine.py" in names
    assert not [n for n in names if n.endswith(".so")]


@pytest.mark.slow
def test_an_unknown_compile_choice_is_refused(tmp_path: Path) -> None:
    built = _wheel(tmp_path, "sometimes")
    assert built.returncode != 0
    assert "PATCHBAY_COMPILE='sometimes': expected one of auto, 1, 0" in built.stderr
    assert not list(tmp_path.glob("*.whl"))


@pytest.mark.slow
def test_a_failed_compile_falls_back_to_pure_python_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    built = _wheel(tmp_path, "auto", CC="false", TMPDIR=str(scratch))  # (no C compiler)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert not list(scratch.glob("patchbay-compile-*"))
