"""The lock files in requirements/ agree with pyproject.toml: every dependency is locked at
a version its range allows, with hashes, and the runtime ranges have upper bounds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCKS = {
    "requirements/server.txt": ["server", "lambda", "scale"],
    "requirements/dev.txt": ["dev"],
}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)")


def _locked(path: str) -> dict[str, tuple[Version, list[str]]]:
    """Each locked package's version and hashes (a pin may have environment markers)."""
    entries: dict[str, tuple[Version, list[str]]] = {}
    name = ""
    for line in (ROOT / path).read_text().splitlines():
        pin = _PIN.match(line)
        if pin:
            name = canonicalize_name(pin.group(1))
            entries[name] = (Version(pin.group(2)), [])
        elif line.strip().startswith("--hash=sha256:"):
            entries[name][1].append(line.strip())
    return entries


def _requirements(extras: list[str]) -> list[Requirement]:
    """The project's own requirements for ``extras``, expanding ``patchbay[...]``."""
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        for text in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "patchbay":
                found += _requirements(sorted(requirement.extras))
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("path", sorted(LOCKS))
def test_every_package_is_locked_with_hashes(path: str) -> None:
    locked = _locked(path)
    assert locked, f"{path} locks nothing"
    assert all(hashes for _, hashes in locked.values()), [
        name for name, (_, hashes) in locked.items() if not hashes
    ]


@pytest.mark.parametrize("path", sorted(LOCKS))
def test_each_requirement_is_locked_inside_its_range(path: str) -> None:
    locked = _locked(path)
    build = (ROOT / "requirements/build.in").read_text().splitlines()
    wanted = _requirements(LOCKS[path]) + [
        Requirement(line.split("#")[0]) for line in build if line.split("#")[0].strip()
    ]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {path}: run scripts/lock.sh"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{path} locks {name}=={version}, outside {requirement}: run scripts/lock.sh"
        )


def test_the_build_backend_is_locked() -> None:
    """Set-up builds Patchbay without build isolation, from the locked backend."""
    for path in LOCKS:
        locked = _locked(path)
        for text in PYPROJECT["build-system"]["requires"]:
            requirement = Requirement(text)
            version = locked[canonicalize_name(requirement.name)][0]
            assert requirement.specifier.contains(version), f"{path}: {requirement}"


def test_runtime_dependencies_have_upper_bounds() -> None:
    """A wheel installed beside other packages must not accept a future major release that
    nobody tested: every runtime range is capped (the lock then picks inside it)."""
    for requirement in _requirements(["server", "lambda", "scale"]):
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {"<", "<=", "==", "~="}, f"{requirement} has no upper bound"
