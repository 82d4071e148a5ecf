"""Kit descriptors: the JSON a kit's publisher writes so that Patchbay can register it.

``{"name": "Appboy", "suffix": "v4", "module_id": 28, "description": "...",
"settings": [...]}``: ``name`` and ``suffix`` are what the kit passes to the SDK (the SDK
finds a kit's code under ``name`` or ``name-suffix``, the kit's key here), ``module_id`` the
number it reports its forwarding statistics under. ``settings`` declares what an operator
enters when connecting the kit, with the setting types of Firehose registrations (text,
integer, float, boolean) and ``select`` (a choice among ``options``), checked by the same
code (:func:`patchbay.partner.registration.check_raw_settings` and ``check_settings``).
Every problem is reported with its JSON path, and nothing is stored when there is one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from patchbay.errors import PatchbayError
from patchbay.firehose.enums import SettingType
from patchbay.firehose.settings import KitSetting
from patchbay.partner.registration import Problem, check_raw_settings, check_settings

#: Kit names and suffixes: what the SDK's kits use (no ``-``: it joins name and suffix).
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]{0,63}")
#: The types a kit setting may have.
KIT_SETTING_TYPES: Final = (*(t.value for t in SettingType), "select")
_FIELDS: Final = ("name", "suffix", "module_id", "description", "settings")
_MSGSPEC_PATH: Final = re.compile(r" - at `(\$[^`]*)`$")


class KitDescriptor(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A parsed descriptor."""

    name: str
    module_id: int
    suffix: str | None = None
    description: str = ""
    settings: list[KitSetting] = []

    @property
    def key(self) -> str:
        """``name-suffix``, or ``name`` without a suffix."""
        return kit_key(self.name, self.suffix)


class DescriptorError(PatchbayError):
    """A descriptor was refused; ``problems`` lists every finding (``path: message``)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems if p.severity == "error"))


def kit_key(name: str, suffix: str | None) -> str:
    """How the SDK keys a kit: ``name-suffix``, or ``name``."""
    return f"{name}-{suffix}" if suffix else name


def parse_descriptor(raw: bytes | str | Mapping[str, Any]) -> tuple[KitDescriptor, list[Problem]]:
    """The descriptor and its warnings; raises :class:`DescriptorError` listing every error."""
    if isinstance(raw, Mapping):
        data: Any = raw
    else:
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise DescriptorError([Problem("shape", "$", f"not JSON: {exc}")]) from None
    if not isinstance(data, Mapping):
        raise DescriptorError([Problem("shape", "$", "a descriptor is a JSON object")])
    problems = list(_check_raw(data))
    if not any(p.severity == "error" for p in problems):
        try:
            descriptor = msgspec.convert(data, KitDescriptor)
        except msgspec.ValidationError as exc:
            message = str(exc)
            found = _MSGSPEC_PATH.search(message)
            path = found.group(1) if found else "$"
            problems.append(Problem("shape", path, _MSGSPEC_PATH.sub("", message)))
        else:
            problems.extend(check_settings(descriptor.settings, "$.settings", hidden_ok=False))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DescriptorError(errors)
    return descriptor, problems


def _check_raw(data: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for key in data:
        if key not in _FIELDS:
            known = ", ".join(_FIELDS)
            problems.append(Problem("shape", f"$.{key}", f"unknown field (known: {known})"))
    for key in ("name", "suffix"):
        value = data.get(key)
        if value is None and key == "suffix":
            continue
        if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
            got = "missing" if value is None else f"got {value!r}"
            problems.append(
                Problem(
                    "shape",
                    f"$.{key}",
                    f"the kit's {key} as the SDK knows it: letters, digits, '_' and '.'"
                    f" (at most 64), {got}",
                )
            )
    module_id = data.get("module_id")
    if isinstance(module_id, bool) or not isinstance(module_id, int) or module_id <= 0:
        got = "missing" if module_id is None else f"got {module_id!r}"
        problems.append(Problem("shape", "$.module_id", f"a positive integer, {got}"))
    if "description" in data and not isinstance(data["description"], str):
        problems.append(Problem("shape", "$.description", "expected a string"))
    if data.get("settings") is not None:
        problems.extend(check_raw_settings(data["settings"], "$.settings", {}, KIT_SETTING_TYPES))
    return problems
