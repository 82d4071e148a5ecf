"""Where :class:`~patchbay.settings.Settings` come from: command-line flags, ``PATCHBAY_*``
environment variables and a TOML file, in that order of precedence, then the defaults.

This is the only module that reads the process environment (:func:`settings_from_process`);
:func:`load_settings` itself is given its sources. See docs/configuration.md.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from patchbay.errors import PatchbayError
from patchbay.settings import Secret, Settings

#: The environment variable naming the TOML file (``--config`` wins over it).
CONFIG_ENV = "PATCHBAY_CONFIG"
#: Every setting's name: its TOML key, and its variable once upper-cased after ``PATCHBAY_``.
FIELDS: tuple[str, ...] = Settings.__struct_fields__
#: The settings that have a command-line flag (on ``patchbay serve``; ``data_dir`` everywhere).
FLAGS: dict[str, str] = {
    "data_dir": "--data-dir",
    "host": "--host",
    "port": "--port",
    "max_request_bytes": "--max-request-bytes",
    "max_batches_per_request": "--max-batches",
    "dedup_window_s": "--dedup-window",
    "durability": "--durability",
    "log_level": "--log-level",
    "identity_strategy": "--identity-strategy",
    "delivery_process": "--delivery-process/--no-delivery-process",
    "segment_process": "--segment-process/--no-segment-process",
    "admin_token": "--admin-token",
}


class ConfigError(PatchbayError):
    """A setting that cannot be used; the message names the flag, variable or key."""


def env_var(field: str) -> str:
    """The environment variable of setting ``field``."""
    return "PATCHBAY_" + field.upper()


def load_settings(
    flags: Mapping[str, Any], env: Mapping[str, str], file: Path | None = None
) -> Settings:
    """The settings given by ``flags`` (setting name to value), else by ``env`` (variable
    name to string; empty ones are ignored), else by the TOML ``file`` (by default the one
    ``env[PATCHBAY_CONFIG]`` names, if any), else the defaults."""
    if file is None and env.get(CONFIG_ENV):
        file = Path(env[CONFIG_ENV])
    values: dict[str, Any] = {}
    if file is not None:
        values.update(_checked(read_toml(file), strict=True, name=lambda f: f"{file}: {f}"))
    given: dict[str, Any] = {f: env[env_var(f)] for f in FIELDS if env.get(env_var(f))}
    for field in _LISTS:
        if field in given:  # a comma-separated list in a variable
            given[field] = [item.strip() for item in given[field].split(",") if item.strip()]
    values.update(_checked(given, strict=False, name=env_var))
    unknown = sorted(set(flags) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    values.update(_checked(flags, strict=True, name=lambda f: FLAGS.get(f, f)))
    return Settings(**values)


def settings_from_process(flags: Mapping[str, Any], file: Path | None = None) -> Settings:
    """:func:`load_settings` with this process's environment."""
    return load_settings(flags, os.environ, file)


def read_toml(path: Path) -> dict[str, Any]:
    """The settings of a TOML file, every key checked to be a setting's name."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (see docs/configuration.md)")
    return document


_TYPES = {f.name: f.type for f in msgspec.structs.fields(Settings)}
#: The settings that are lists (comma-separated in a variable).
_LISTS = ("allowed_targets",)


def _checked(raw: Mapping[str, Any], *, strict: bool, name: Callable[[str], str]) -> dict[str, Any]:
    """Each value converted to its setting's type (``strict=False``: from a string)."""
    converted = {}
    for field, value in raw.items():
        try:
            converted[field] = msgspec.convert(
                value, _TYPES[field], strict=strict, dec_hook=_from_string
            )
        except msgspec.ValidationError as exc:
            shown = "***" if field == "admin_token" else repr(value)
            raise ConfigError(f"{name(field)}: {exc} (got {shown})") from None
        if field == "allowed_targets":
            _check_targets(converted[field], name(field))
    return converted


def _check_targets(entries: tuple[str, ...] | None, named: str) -> None:
    """Refuse an ``allowed_targets`` entry that is neither a CIDR nor a host name."""
    from patchbay.activate.targets import TargetError, TargetPolicy

    try:
        TargetPolicy.from_setting(entries)
    except TargetError as exc:
        raise ConfigError(f"{named}: {str(exc).removeprefix('allowed_targets: ')}") from None


def _from_string(type_: type, value: Any) -> Any:
    if isinstance(value, type_):
        return value
    if isinstance(value, str) and type_ in (Path, Secret):
        return type_(value)
    raise TypeError(f"Expected `str`, got `{type(value).__name__}`")
