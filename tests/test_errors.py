"""Every exception Patchbay defines on purpose derives from :class:`PatchbayError`.

Walks every module of the ``patchbay`` package (a module that needs an optional extra that
is not installed is skipped) and checks each public exception class defined there, so that a
stray ``class FooError(Exception)`` fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import patchbay
from patchbay.errors import PatchbayError
from patchbay.firehose.errors import SettingError


def _modules() -> list[ModuleType]:
    found = [patchbay]
    for info in pkgutil.walk_packages(patchbay.__path__, prefix="patchbay."):
        try:
            found.append(importlib.import_module(info.name))
        except ImportError as exc:  # an optional extra (e.g. boto3) is not installed
            if exc.name is None or exc.name.split(".")[0] == "patchbay":
                raise
    return found


def _exceptions() -> list[type[BaseException]]:
    classes: dict[str, type[BaseException]] = {}
    for module in _modules():
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                classes[f"{value.__module__}.{value.__qualname__}"] = value
    return [classes[k] for k in sorted(classes)]


EXCEPTIONS = _exceptions()


def test_the_walk_finds_the_known_errors() -> None:
    names = {f"{e.__module__}.{e.__qualname__}" for e in EXCEPTIONS}
    assert {
        "patchbay.errors.PatchbayError",
        "patchbay.locking.AlreadyRunning",
        "patchbay.config.ConfigError",
        "patchbay.firehose.errors.SettingError",
        "patchbay.partner.transport.TransportError",
        "patchbay.backends.records.DuplicateName",
    } <= names


@pytest.mark.parametrize("error", EXCEPTIONS, ids=lambda e: f"{e.__module__}.{e.__qualname__}")
def test_every_error_derives_from_patchbay_error(error: type[BaseException]) -> None:
    assert issubclass(error, PatchbayError)


def test_a_setting_error_lists_its_problems() -> None:
    one = SettingError("the setting 'x' is missing")
    assert one.problems == ["the setting 'x' is missing"]
    assert str(one) == "the setting 'x' is missing"
    many = SettingError("a is wrong", "b is wrong")
    assert many.problems == ["a is wrong", "b is wrong"]
    assert str(many) == "a is wrong; b is wrong"
    assert isinstance(many, ValueError)
