"""Outputs and connections: validating their settings against a module's registration, and
showing them without their secrets.

A module output's account settings are checked against the ``account_settings`` of the
module's ``event_processing_registration``; a connection's settings against its
``event_connection_settings``. Unknown ids, missing required values and values of the
wrong type are refused; settings not given get the registration's ``default_value``.
Values are kept and sent as strings (that is how they reach the partner,
``Account.account_settings``). Confidential text settings are shown as ``***``, and so are
passwords and token-like query parameters in a webhook's URL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from patchbay.activate.targets import TargetError, TargetPolicy, mask_url
from patchbay.backends.records import Circuit, Connection, Filters, Output, QueueStats
from patchbay.firehose import Account, ModuleRegistrationResponse
from patchbay.firehose.errors import SettingError
from patchbay.firehose.settings import (
    BooleanSetting,
    FloatSetting,
    IntegerSetting,
    KitSetting,
    SelectSetting,
    Setting,
    TextSetting,
)

#: Names of outputs: what the CLI and the admin API call them.
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: A webhook output's options (``--setting ID=VALUE``); ``token`` is confidential.
WEBHOOK_SETTINGS: Final[tuple[Setting, ...]] = (
    TextSetting(id="token", name="Bearer token", confidential=True),
)

MASK: Final = "***"


def check_name(name: str) -> str:
    """``name`` if it is a valid output name."""
    if not NAME_PATTERN.fullmatch(name):
        raise SettingError(f"invalid name {name!r}: letters, digits, '_', '.' and '-' (at most 64)")
    return name


def parse_setting_args(items: Iterable[str]) -> dict[str, str]:
    """``ID=VALUE`` arguments as a dict (the value may contain '=')."""
    settings: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingError(f"a setting is ID=VALUE, not {item!r}")
        settings[key.strip()] = value
    return settings


def account_settings_of(registration: ModuleRegistrationResponse) -> list[Setting]:
    """The account settings a module declares: its event processing's, then those of its
    audience processing not declared already (an output holds one set of values for
    both)."""
    events = registration.event_processing_registration
    audiences = registration.audience_processing_registration
    found = list(events.account_settings) if events else []
    seen = {s.id for s in found}
    for setting in audiences.account_settings if audiences else []:
        if setting.id not in seen:
            seen.add(setting.id)
            found.append(setting)
    return found


def output_account(output: Output) -> Account:
    """The ``account`` of requests to ``output``: its account setting values, for the
    requests that carry no connection settings (audience messages: their settings travel
    in ``audience_subscription_settings``)."""
    return Account(account_id=0, account_settings=dict(output.settings))


def connection_settings_of(registration: ModuleRegistrationResponse) -> list[Setting]:
    """The connection settings a module's event processing declares."""
    events = registration.event_processing_registration
    return list(events.event_connection_settings) if events else []


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _check_value(setting: KitSetting, value: str) -> tuple[str | None, str]:
    """(problem, normalised value)."""
    label = f"setting {setting.id!r}"
    if isinstance(setting, BooleanSetting):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return None, "true"
        if lowered in _FALSE:
            return None, "false"
        return f"{label} must be true or false", value
    if isinstance(setting, IntegerSetting):
        try:
            number = int(value.strip())
        except ValueError:
            return f"{label} must be an integer", value
        if setting.min_value is not None and number < setting.min_value:
            return f"{label} must be at least {setting.min_value}", value
        if setting.max_value is not None and number > setting.max_value:
            return f"{label} must be at most {setting.max_value}", value
        return None, str(number)
    if isinstance(setting, FloatSetting):
        try:
            real = float(value.strip())
        except ValueError:
            return f"{label} must be a number", value
        if not math.isfinite(real):
            return f"{label} must be a finite number", value
        if setting.min_value is not None and real < setting.min_value:
            return f"{label} must be at least {setting.min_value:g}", value
        if setting.max_value is not None and real > setting.max_value:
            return f"{label} must be at most {setting.max_value:g}", value
        return None, value.strip()
    if isinstance(setting, SelectSetting) and value not in setting.options:
        allowed = ", ".join(repr(o) for o in setting.options)
        return f"{label} must be one of {allowed}", value
    return None, value


def _default(setting: KitSetting) -> str | None:
    if isinstance(setting, BooleanSetting):
        return "true" if setting.default_value or setting.checked else "false"
    if setting.default_value is None:
        return None
    return str(setting.default_value)


def _required(setting: KitSetting) -> bool:
    return not isinstance(setting, BooleanSetting) and setting.required


def validate_settings(
    definitions: Sequence[KitSetting], given: Mapping[str, str], what: str = "account"
) -> dict[str, str]:
    """The settings to store: ``given`` checked against ``definitions`` plus defaults (the
    Firehose setting types, and the choices of kit settings).

    Raises :class:`~patchbay.firehose.errors.SettingError` listing every problem (values of
    confidential settings are never quoted).
    """
    by_id = {s.id: s for s in definitions}
    problems: list[str] = []
    for key in given:
        if key not in by_id:
            known = ", ".join(sorted(by_id)) or "none"
            problems.append(f"unknown {what} setting {key!r} (known: {known})")
    result: dict[str, str] = {}
    for setting in definitions:
        if setting.id in given:
            problem, value = _check_value(setting, given[setting.id])
            if problem:
                problems.append(problem)
            elif _required(setting) and not value.strip():
                problems.append(f"{what} setting {setting.id!r} is required")
            else:
                result[setting.id] = value
            continue
        default = _default(setting)
        if default is not None:
            result[setting.id] = default
        elif _required(setting):
            problems.append(
                f"{what} setting {setting.id!r} ({setting.name}) is required:"
                f" --setting {setting.id}=VALUE"
            )
    if problems:
        raise SettingError(*problems)
    return result


def confidential_ids(definitions: Iterable[KitSetting]) -> set[str]:
    """The ids of the settings whose values must not be shown."""
    return {s.id for s in definitions if isinstance(s, TextSetting) and s.confidential}


def masked(settings: Mapping[str, str], secret: set[str]) -> dict[str, str]:
    """``settings`` with the confidential values replaced by ``***``."""
    return {k: (MASK if k in secret and v else v) for k, v in settings.items()}


def confidential_values(
    output: Output,
    registration: ModuleRegistrationResponse | None,
    connections: Iterable[Connection] = (),
) -> tuple[str, ...]:
    """The values of the confidential settings of ``output`` and its ``connections``,
    longest first: a module output's confidential account and connection settings
    (``registration``: its module's), a webhook's token."""
    account, connection = (
        (WEBHOOK_SETTINGS, [])
        if registration is None
        else (account_settings_of(registration), connection_settings_of(registration))
    )
    secret = confidential_ids(account)
    found = {v for k, v in output.settings.items() if k in secret and v}
    secret = confidential_ids(connection)
    found.update(v for c in connections for k, v in c.settings.items() if k in secret and v)
    return tuple(sorted(found, key=len, reverse=True))


def redacted(text: str, values: Iterable[str]) -> str:
    """``text`` with every occurrence of ``values`` replaced by ``***`` (a partner's answer
    quoted in a delivery error may echo a key it was sent)."""
    for value in values:
        text = text.replace(value, MASK)
    return text


def check_webhook_url(url: str, policy: TargetPolicy, *, token: bool = False) -> str:
    """``url`` if a webhook (with a ``token`` or not) may send there under ``policy``: an
    http(s) URL, not a refused address, no credentials over plain http to a host not known
    to be loopback or allow-listed (:meth:`TargetPolicy.check_url`)."""
    try:
        policy.check_url(url, credentials=token)
    except TargetError as exc:
        raise SettingError(str(exc)) from None
    return url


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def output_summary(output: Output, secret: set[str]) -> dict[str, Any]:
    """What ``outputs list/show`` and the admin API show: confidential settings masked, and
    credentials in a webhook's URL (:func:`~patchbay.activate.targets.mask_url`)."""
    summary: dict[str, Any] = {"name": output.name, **msgspec.to_builtins(output.destination)}
    if isinstance(summary.get("url"), str):
        summary["url"] = mask_url(summary["url"])
    summary.update(
        {
            "settings": masked(output.settings, secret),
            "paused": output.paused,
            "paused_reason": output.paused_reason,
            "created_at": iso_ms(output.created_at_ms),
            "updated_at": iso_ms(output.updated_at_ms),
        }
    )
    return summary


def connection_summary(
    connection: Connection, input_name: str | None, secret: set[str]
) -> dict[str, Any]:
    """A connection for people: its input's name, settings masked, filters set."""
    filters = connection.filters
    return {
        "id": connection.id,
        "input": input_name or connection.input_id,
        "input_id": connection.input_id,
        "output": connection.output,
        "settings": masked(connection.settings, secret),
        "filters": _filters_dict(filters),
        "created_at": iso_ms(connection.created_at_ms),
    }


def _filters_dict(filters: Filters) -> dict[str, Any]:
    value = msgspec.to_builtins(filters)
    assert isinstance(value, dict)
    return value


def status_row(
    output: Output, stats: QueueStats | None, circuit: Circuit | None, now_ms: int
) -> dict[str, Any]:
    """One line of ``outputs status``: state, circuit breaker (as the delivery engine last
    recorded it), queue depth, parked, oldest pending age."""
    stats = stats or QueueStats()
    age = None if stats.oldest_pending_ms is None else max(0, now_ms - stats.oldest_pending_ms)
    circuit = circuit or Circuit("closed", output.created_at_ms)
    return {
        "name": output.name,
        "kind": output.kind,
        "state": "paused" if output.paused else "active",
        "paused_reason": output.paused_reason,
        "circuit": circuit.state,
        "circuit_since_s": round(max(0, now_ms - circuit.since_ms) / 1000, 1),
        "circuit_error": circuit.error,
        "pending": stats.pending,
        "parked": stats.parked,
        "oldest_pending_age_s": None if age is None else round(age / 1000, 1),
    }
