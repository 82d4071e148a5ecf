"""Where :class:`~patchbay.settings.Settings` come from: command-line flags, ``PATCHBAY_*``
environment variables and a TOML file, in that order of precedence, then the defaults.

This is the only module that reads the process environment (:func:`settings_from_process`);
:func:`load_settings` itself is given its sources. See docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
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
    "log": "--log",
    "state": "--state",
    "host": "--host",
    "port": "--port",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
    "roles": "--role",
    "kafka_options": "--kafka-option",
    "kafka_producer_options": "--kafka-producer-option",
    "kafka_consumer_options": "--kafka-consumer-option",
    "max_request_bytes": "--max-request-bytes",
    "max_batches_per_request": "--max-batches",
    "dedup_window_s": "--dedup-window",
    "max_header_bytes": "--max-header-bytes",
    "header_timeout_s": "--header-timeout",
    "body_timeout_s": "--body-timeout",
    "max_connections": "--max-connections",
    "log_retention_s": "--log-retention",
    "log_retention_bytes": "--log-retention-bytes",
    "durability": "--durability",
    "log_level": "--log-level",
    "log_summary_interval_s": "--log-summary-interval",
    "identity_strategy": "--identity-strategy",
    "delivery_process": "--delivery-process/--no-delivery-process",
    "segment_process": "--segment-process/--no-segment-process",
    "admin_token": "--admin-token",
    "admin_token_file": "--admin-token-file",
    "metrics_token_file": "--metrics-token-file",
    "secrets_key_file": "--secrets-key-file",
}
#: The settings whose value may be read from a file: the secret, then its file's setting.
TOKEN_FILES: dict[str, str] = {
    "admin_token": "admin_token_file",
    "metrics_token": "metrics_token_file",
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
        _merge(values, _checked(read_toml(file), strict=True, name=lambda f: f"{file}: {f}"))
    given: dict[str, Any] = {f: env[env_var(f)] for f in FIELDS if env.get(env_var(f))}
    for field in _LISTS:
        if field in given:  # a comma-separated list in a variable
            given[field] = [item.strip() for item in given[field].split(",") if item.strip()]
    for field in _OPTIONS:
        if field in given:  # KEY=VALUE,... in a variable
            given[field] = split_entries(given[field])
    _merge(values, _checked(given, strict=False, name=env_var))
    unknown = sorted(set(flags) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    _merge(values, _checked(flags, strict=True, name=lambda f: FLAGS.get(f, f)))
    for secret, file_field in TOKEN_FILES.items():
        path = values.get(file_field)
        if path is not None:
            values[secret] = read_token_file(path, file_field)
    return _consistent(Settings(**values))


def _consistent(settings: Settings) -> Settings:
    """``settings``, unless two of them contradict each other."""
    longest_send_s = settings.delivery_timeout_s + settings.delivery_connect_timeout_s
    if settings.delivery_lease_s <= longest_send_s:
        raise ConfigError(
            f"delivery_lease_s ({settings.delivery_lease_s:g}) must be longer than a send can"
            f" take: delivery_timeout_s + delivery_connect_timeout_s ({longest_send_s:g})"
        )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        given, missing = ("tls_cert", "tls_key")
        if settings.tls_cert is None:
            given, missing = missing, given
        raise ConfigError(
            f"{given} is set but not {missing} ({FLAGS[missing]}, {env_var(missing)}): HTTPS"
            " needs both, plain HTTP neither"
        )
    if "all" in settings.roles and len(set(settings.roles)) > 1:
        raise ConfigError("roles: 'all' already runs every role; give it alone")
    return settings


def _merge(values: dict[str, Any], layer: dict[str, Any]) -> None:
    """Add ``layer`` (a source of higher precedence) to ``values``. A token and its file
    are one setting: the one a layer gives replaces the other of the layers below, and a
    layer may not give both."""
    for secret, file_field in TOKEN_FILES.items():
        if layer.get(secret) is not None and layer.get(file_field) is not None:
            raise ConfigError(f"{secret} and {file_field} are both set: keep one")
        if secret in layer:
            values.pop(file_field, None)
        if file_field in layer:
            values.pop(secret, None)
    for field in _OPTIONS:  # merged property by property
        if field in layer:
            layer = {**layer, field: {**values.get(field, {}), **layer[field]}}
    values.update(layer)


def read_token_file(path: Path, field: str) -> Secret:
    """The token in the file ``path`` (setting ``field``): its first line, which must not be
    empty; the file must not be readable by group or others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{field} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{field} {path}: not UTF-8 text") from None
    if mode & 0o077:
        raise ConfigError(f"{field} {path} can be read by group or others; run: chmod 600 {path}")
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"{field} {path}: the file is empty (expected the token)")
    return Secret(token)


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
_LISTS = ("allowed_targets", "trusted_proxies", "roles")
#: The settings of librdkafka properties: a table in the file, ``KEY=VALUE,...`` in a
#: variable, a repeated ``--...-option KEY=VALUE`` flag.
_OPTIONS = ("kafka_options", "kafka_producer_options", "kafka_consumer_options")


def _checked(raw: Mapping[str, Any], *, strict: bool, name: Callable[[str], str]) -> dict[str, Any]:
    """Each value converted to its setting's type (``strict=False``: from a string)."""
    converted: dict[str, Any] = {}
    for field, value in raw.items():
        if field in _OPTIONS:
            converted[field] = _kafka_options(value, name(field))
            continue
        if field.endswith("_s") and isinstance(value, str):
            try:
                value = parse_seconds(value)
            except ValueError as exc:
                raise ConfigError(f"{name(field)}: {exc}") from None
        try:
            converted[field] = msgspec.convert(
                value, _TYPES[field], strict=strict, dec_hook=_from_string
            )
        except msgspec.ValidationError as exc:
            shown = "***" if _TYPES[field] == Secret | None else repr(value)
            raise ConfigError(f"{name(field)}: {exc} (got {shown})") from None
        if field == "allowed_targets":
            _check_targets(converted[field], name(field))
        if field == "trusted_proxies":
            _check_networks(converted[field], name(field))
        if field in _URL_SCHEMES and converted[field] is not None:
            _check_url(converted[field], field, name(field))
    return converted


def split_entries(text: str) -> list[str]:
    """The ``KEY=VALUE`` entries of a variable: separated by commas, ``\\,`` being a comma
    in a value and ``\\\\`` a backslash."""
    entries, current, chars = [], [], iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            current.append(following if following in (",", "\\") else char + following)
        elif char == ",":
            entries.append("".join(current))
            current = []
        else:
            current.append(char)
    entries.append("".join(current))
    return [entry.strip() for entry in entries if entry.strip()]


def _kafka_options(value: Any, named: str) -> dict[str, Any]:
    """A setting of librdkafka properties from a table, or from ``KEY=VALUE`` entries
    (flags, a variable); checked by :func:`~patchbay.backends.kafka.options.check_options`.
    No error shows a value: it may be a password."""
    from patchbay.backends.kafka.options import check_options

    if isinstance(value, Mapping):
        raw = dict(value)
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        raw = {}
        for index, entry in enumerate(value, 1):
            key, sep, text = entry.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(
                    f"{named}: entry {index} of {len(value)} is not KEY=VALUE (a comma inside"
                    " a value in a variable is written \\,)"
                )
            if key in raw:
                raise ConfigError(f"{named}: {key} is given twice")
            raw[key] = text
    else:
        raise ConfigError(f"{named}: expected a table of librdkafka properties")
    try:
        return check_options(raw)
    except ValueError as exc:
        raise ConfigError(f"{named}: {exc}") from None


_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_seconds(text: str) -> float:
    """A duration setting: seconds (``"90"``, ``"1.5"``) or a number and a unit, ``s``,
    ``m``, ``h`` or ``d`` (``"7d"``); ``ValueError`` for anything else."""
    found = _DURATION.fullmatch(text)
    if found is None:
        raise ValueError(
            f"expected seconds or a duration such as '90s', '15m', '12h', '7d', not {text!r}"
        )
    return float(found.group(1)) * _UNIT_S[found.group(2)]


#: The settings that are URLs, and the schemes each takes.
_URL_SCHEMES = {"log": ("kafka",), "state": ("postgresql", "postgres")}
_KAFKA_URL = re.compile(r"kafka://(?:[^\s,/:]+:\d{1,5})(?:,[^\s,/:]+:\d{1,5})*/?")


def _check_url(value: str | Secret, field: str, named: str) -> None:
    """Refuse a ``log`` that is not ``kafka://HOST:PORT[,...]`` or a ``state`` that is not a
    PostgreSQL URL (without showing it: it may hold a password)."""
    text = value.reveal() if isinstance(value, Secret) else value
    scheme = text.partition("://")[0]
    if scheme not in _URL_SCHEMES[field] or "://" not in text:
        expected = " or ".join(f"{s}://" for s in _URL_SCHEMES[field])
        raise ConfigError(f"{named}: expected a URL starting with {expected}")
    if field == "log" and not _KAFKA_URL.fullmatch(text):
        raise ConfigError(f"{named}: expected kafka://HOST:PORT[,HOST:PORT...], not {text!r}")


def _check_networks(entries: tuple[str, ...], named: str) -> None:
    """Refuse an entry that is not an IP address or a CIDR."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{named}: {entry!r} is not an IP address or a CIDR (e.g. 10.0.0.5 or 10.0.0.0/24)"
            ) from None


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
