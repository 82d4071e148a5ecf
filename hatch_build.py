"""Hatchling build hook: a wheel's hot modules compiled to C extensions with mypyc.

The modules named in ``[tool.hatch.build.targets.wheel.hooks.custom] compiled`` (the segment
stage's evaluation and its store) are type-checked and compiled with mypyc when a wheel is
built; the wheel then carries both the extensions and the ``.py`` files (an extension is
imported first). An editable install (development) stays pure Python.

``PATCHBAY_COMPILE`` chooses: ``auto`` (the default) compiles when mypyc and a C compiler
are there and otherwise builds a pure-Python wheel with a warning; ``1`` compiles or fails;
``0`` never compiles. docs/performance.md has what the compiled modules gain.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

CHOICES = ("auto", "1", "0")


class CompileHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        choice = os.environ.get("PATCHBAY_COMPILE", "auto")
        if choice not in CHOICES:
            raise ValueError(f"PATCHBAY_COMPILE={choice!r}: expected one of {', '.join(CHOICES)}")
        if version == "editable" or choice == "0":
            return
        modules = [str(m) for m in self.config.get("compiled", [])]
        try:
            built = self._compile(modules)
        except Exception as error:
            if choice == "1":
                raise
            print(
                f"patchbay build: not compiled ({type(error).__name__}: {error});"
                " building a pure-Python wheel (slower segment stage)",
                file=sys.stderr,
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        for path, name in built:
            build_data["force_include"][str(path)] = name

    def _compile(self, modules: list[str]) -> list[tuple[Path, str]]:
        """Compile ``modules`` (paths from the project root); the extensions built, each
        with its path in the wheel; the temporary build directory goes in any case."""
        work = Path(tempfile.mkdtemp(prefix="patchbay-compile-"))
        try:
            built = self._build(modules, work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)  # (finalize removes it after a success)
            raise
        self._work = work
        return built

    def _build(self, modules: list[str], work: Path) -> list[tuple[Path, str]]:
        from mypyc.build import mypycify  # (the build's requirements: requirements/build.in)
        from setuptools import Distribution  # type: ignore[import-untyped]

        cwd = Path.cwd()
        os.chdir(self.root)  # (mypy reads its settings from pyproject.toml)
        try:
            extensions = mypycify(modules, opt_level="3", target_dir=str(work / "c"))
        finally:
            os.chdir(cwd)
        distribution = Distribution({"ext_modules": extensions, "script_name": "hatch_build"})
        command = distribution.get_command_obj("build_ext")
        command.build_lib = str(work / "lib")
        command.build_temp = str(work / "temp")
        command.ensure_finalized()
        command.run()
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = [
            (path, path.relative_to(work / "lib").as_posix())
            for path in (work / "lib").rglob(f"*{suffix}")
        ]
        if len(built) < len(modules):
            raise RuntimeError(f"mypyc built {len(built)} extensions for {len(modules)} modules")
        return built

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
