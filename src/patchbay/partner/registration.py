"""Register a partner module: ask it to describe itself, check the answer, store it.

:func:`register` sends a ``module_registration_request`` (without the token: the
registration call must work unauthenticated), checks the
``module_registration_response`` strictly with :func:`validate_registration`, tries the
token on an HTTP partner with the verification request (:func:`check_access`: a 401 or 403
is an :class:`AccessRefusedError`), and only then stores the module in a
:class:`~patchbay.backends.abstract.ModuleStore`. Re-registering a name replaces the
module (its first registration time is kept and every registration is kept as history).

The checks (docs/firehose.md D5: the wire format accepts incomplete registrations,
so completeness is checked here). Each finding is a :class:`Problem` with a JSON path and a
section; errors reject the registration, warnings are reported:

* shape: a ``module_registration_response``; ``name`` and ``version`` set; ``description``
  at most 230 characters; at least one of event, audience or DSR processing; OAuth2
  configurations with their URLs; positive bulk configuration values.
* settings: every setting is an object with a known ``type``, a non-empty ``id`` and
  ``name``; boolean ``required``/``confidential``/``visible``; ``confidential`` only on text
  settings; ids unique where their values share a map (event account and connection settings
  both arrive in ``account.account_settings``); ``min_value`` <= ``default_value`` <=
  ``max_value``. A required setting that is hidden and has no default is a warning.
* permissions: known identity types and encodings, no type twice, at most one partner
  identity permission (its name cannot change later, DOCS-FH) with a non-empty type.
* supported types: event types, runtime environments, notification types and DSR types are
  known literals, not repeated, and not empty where the processing kind is registered;
  ``push_messaging_provider_id`` is set when ``push_message_receipt`` is registered;
  ``max_data_age_hours`` is -1 or positive. Event types that need a permission the module
  lacks (``user_attribute_change``, ``user_identity_change``) are warnings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

import msgspec

from patchbay.activate.targets import TargetError, TargetPolicy, mask_url
from patchbay.backends.abstract import ModuleStore
from patchbay.backends.records import ModuleRecord
from patchbay.errors import PatchbayError
from patchbay.firehose import (
    AudienceMembershipChangeRequest,
    AudienceProcessingRegistration,
    BaseMessage,
    DsrProcessingRegistration,
    EventProcessingRegistration,
    EventProcessingRequest,
    FirehoseError,
    FloatSetting,
    IntegerSetting,
    ModuleRegistrationRequest,
    ModuleRegistrationResponse,
    OAuth2Authentication,
    Permissions,
    Setting,
    TextSetting,
    parse,
    to_dict,
)
from patchbay.firehose.enums import (
    DeviceIdentityType,
    DsrType,
    EventType,
    IdentityEncoding,
    MessageType,
    OAuth2AccessTokenType,
    OAuth2GrantType,
    RuntimeEnvironmentType,
    SettingType,
    SystemNotificationType,
    UserIdentityType,
)
from patchbay.firehose.settings import KitSetting, SelectSetting
from patchbay.logs import config_changed
from patchbay.partner.transport import (
    HttpTarget,
    InvalidResponseError,
    LambdaTarget,
    PartnerStatusError,
    Target,
    TargetRefusedError,
    Timeouts,
    Transport,
    excerpt,
    open_transport,
)

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MODULE_NAME",
    "AccessRefusedError",
    "Problem",
    "Registered",
    "RegistrationAnswer",
    "RegistrationError",
    "check_access",
    "check_module_name",
    "check_target",
    "fetch_registration",
    "module_record",
    "module_summary",
    "partner_answer",
    "register",
    "registration_of",
    "validate_registration",
    "verification_request",
]

#: The longest description the directory shows (DOCS-FH: "under 230 characters").
MAX_DESCRIPTION_CHARS: Final = 230

#: What a module name (Patchbay's key for a module) looks like.
MODULE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

Section = Literal["shape", "settings", "permissions", "supported_types"]
Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a registration: where (a JSON path), what, and how bad."""

    section: Section
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class RegistrationError(PatchbayError):
    """The partner's registration was rejected; ``problems`` lists every finding."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        errors = [str(p) for p in self.problems if p.severity == "error"]
        super().__init__("; ".join(errors) or "invalid registration")


@dataclass(frozen=True, slots=True)
class RegistrationAnswer:
    """A partner's registration: the parsed response (``None`` when it could not be read),
    the raw JSON, the call's latency and the findings."""

    response: ModuleRegistrationResponse | None
    raw: bytes
    latency_ms: float
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """The findings that reject the registration."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """The findings that are only reported."""
        return [p for p in self.problems if p.severity == "warning"]


@dataclass(frozen=True, slots=True)
class Registered:
    """A stored registration: the module, the warnings, the latency, and whether it
    replaced an earlier registration of the same name."""

    module: ModuleRecord
    warnings: list[Problem]
    latency_ms: float
    replaced: bool


# --------------------------------------------------------------------------- fetching


async def fetch_registration(transport: Transport) -> RegistrationAnswer:
    """Send a ``module_registration_request`` (without the token) and check the answer.

    Transport failures (including an answer of another message type) raise
    :class:`~patchbay.partner.transport.TransportError`; an answer that is a registration
    but does not parse or does not pass the checks comes back with its problems.
    """
    try:
        reply = await transport.send(
            ModuleRegistrationRequest(), authenticate=False, lenient=True, check_type=True
        )
    except InvalidResponseError as exc:
        if exc.cause is None or not exc.raw:
            raise
        _, problems = validate_registration(exc.raw)
        if not any(p.severity == "error" for p in problems):
            raise
        return RegistrationAnswer(None, exc.raw, exc.latency_ms or 0.0, problems)
    response, problems = validate_registration(reply.body)
    return RegistrationAnswer(response, reply.body, reply.latency_ms, problems)


def check_module_name(name: str) -> str:
    """``name`` if it is a valid module name, else ``ValueError``."""
    if not MODULE_NAME.fullmatch(name):
        raise ValueError(
            f"invalid module name {name!r}: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return name


async def register(
    store: ModuleStore,
    name: str,
    target: Target,
    *,
    timeouts: Timeouts | None = None,
    now_ms: int | None = None,
    policy: TargetPolicy | None = None,
) -> Registered:
    """Ask the partner at ``target`` for its registration, check it, check that the partner
    accepts the calls that will follow (:func:`check_access`), and store it as module
    ``name`` (replacing a module of that name). Nothing is stored when a step fails.

    With a ``policy`` (:mod:`patchbay.activate.targets`) the target's URL is checked first
    (a refused address or scheme, or a token over plain http to a host not known to be
    loopback or allow-listed, raises :class:`~patchbay.partner.transport.TargetRefusedError`
    before anything is sent), and the registration call connects only where it allows.

    Raises :class:`RegistrationError` when the registration has errors,
    :class:`AccessRefusedError` when the partner answers 401 or 403 (to the registration
    request, or to the authenticated verification request with the token), and
    :class:`~patchbay.partner.transport.TransportError` when the partner cannot be called or
    answers something else than a registration.
    """
    check_module_name(name)
    if policy is not None:
        check_target(target, policy)
    async with open_transport(target, timeouts=timeouts, policy=policy) as transport:
        try:
            answer = await fetch_registration(transport)
        except PartnerStatusError as exc:
            if exc.status in _REFUSED:
                raise AccessRefusedError(
                    f"{target.describe()} refused the registration request, which is sent"
                    f" without a token as mParticle sends it: {partner_answer(exc)} (the"
                    " partner must answer module_registration_request without a token)",
                    status=exc.status,
                    answer=partner_answer(exc),
                ) from None
            raise
        if answer.errors or answer.response is None:
            raise RegistrationError(answer.problems)
        await check_access(transport, answer.response)
    when = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    record = module_record(name, target, answer.response, answer.raw, when)
    replaced = store.get_module(name) is not None
    stored = store.put_module(record)
    config_changed(
        "module",
        name,
        "update" if replaced else "create",
        version=stored.version,
        transport=stored.target.transport,
    )
    return Registered(stored, answer.warnings, answer.latency_ms, replaced)


#: The statuses of a partner that refuses the caller.
_REFUSED: Final = frozenset({401, 403})


class AccessRefusedError(PatchbayError):
    """The partner refused the platform's calls (HTTP 401 or 403): a wrong or missing
    token. ``status`` is its HTTP status, ``answer`` its answer in one line."""

    def __init__(self, message: str, *, status: int, answer: str) -> None:
        super().__init__(message)
        self.status = status
        self.answer = answer


def partner_answer(exc: PartnerStatusError) -> str:
    """A partner's error answer in one line: ``HTTP <status>`` and its message (the
    ``error`` and ``message`` of a JSON error body, else the start of the body)."""
    text = exc.body
    try:
        decoded = msgspec.json.decode(exc.response.body) if exc.response else None
    except msgspec.DecodeError:
        decoded = None
    if isinstance(decoded, dict):
        parts = [str(decoded[k]) for k in ("error", "message") if decoded.get(k)]
        if parts:
            text = excerpt(": ".join(parts))
    return f"HTTP {exc.status}: {text or '(empty body)'}"


def verification_request(response: ModuleRegistrationResponse) -> BaseMessage:
    """The platform's periodic verification request for a module: an
    event processing request without events, or for a module that processes audiences
    only, a membership change without user profiles. A partner answers it without doing
    anything, and must authenticate it like any call after the registration."""
    if (
        response.event_processing_registration is None
        and response.audience_processing_registration is not None
    ):
        return AudienceMembershipChangeRequest()
    return EventProcessingRequest(events=[])


async def check_access(transport: Transport, response: ModuleRegistrationResponse) -> None:
    """Check that an HTTP partner accepts the token the module will be called with.

    The registration request is sent without the token, so it proves nothing
    about the token; this sends the verification request (:func:`verification_request`)
    with it, as every later call is sent. A 401 or 403 raises :class:`AccessRefusedError`
    (a token the partner refuses, or none where it wants one), and failing to reach the
    partner raises :class:`~patchbay.partner.transport.TransportError`. Any other answer
    means the token was accepted (what the answers are worth is what ``patchbay partner
    verify`` checks). Lambda targets are not checked: AWS authorizes every call alike.
    """
    target = transport.target
    if not isinstance(target, HttpTarget):
        return
    try:
        await transport.send(
            verification_request(response), authenticate=True, lenient=True, check_type=False
        )
    except PartnerStatusError as exc:
        if exc.status not in _REFUSED:
            return
        answer = partner_answer(exc)
        if target.token:
            message = (
                f"{target.url} refused the token: it answered an authenticated verification"
                f" request with {answer} (check --token or $PATCHBAY_PARTNER_TOKEN)"
            )
        else:
            message = (
                f"{target.url} refused a call without a token: it answered the verification"
                f" request with {answer} (give the partner's token with --token or"
                " $PATCHBAY_PARTNER_TOKEN)"
            )
        raise AccessRefusedError(message, status=exc.status, answer=answer) from None
    except InvalidResponseError:
        return  # it answered, so the token was let through


def check_target(target: Target, policy: TargetPolicy) -> Target:
    """``target`` if ``policy`` lets modules send there (its URL, or its Lambda endpoint
    URL); else :class:`~patchbay.partner.transport.TargetRefusedError`."""
    try:
        match target:
            case HttpTarget(url=url, token=token):
                policy.check_url(url, credentials=bool(token))
            case LambdaTarget(endpoint_url=endpoint) if endpoint:
                policy.check_url(endpoint)
    except TargetError as exc:
        raise TargetRefusedError(str(exc), target=target.describe()) from None
    return target


# --------------------------------------------------------------------------- validation


def validate_registration(
    raw: bytes | str | Mapping[str, Any],
) -> tuple[ModuleRegistrationResponse | None, list[Problem]]:
    """Check a registration response; return it parsed (``None`` if it cannot be read) and
    every finding, errors first."""
    problems: list[Problem] = []
    if isinstance(raw, Mapping):
        data: Any = raw
    else:
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            return None, [Problem("shape", "$", f"not JSON: {exc}")]
    if not isinstance(data, Mapping):
        return None, [Problem("shape", "$", "not a JSON object")]
    kind = data.get("type")
    if kind != MessageType.MODULE_REGISTRATION_RESPONSE:
        where = "missing" if kind is None else repr(kind)
        problems.append(
            Problem("shape", "$.type", f"expected 'module_registration_response', got {where}")
        )
        return None, problems
    problems.extend(_check_raw_settings(data))
    try:
        message = parse(data, lenient=True)
    except FirehoseError as exc:
        path = getattr(exc, "path", "$")
        if not any(p.severity == "error" and _related(p.path, path) for p in problems):
            problems.append(Problem(_section_of(path), path, str(exc)))
        return None, _sorted(problems)
    assert isinstance(message, ModuleRegistrationResponse)
    problems.extend(_check_model(message))
    if not any(p.severity == "error" for p in problems):
        try:
            parse(data)  # the strict reading a Java partner's platform would apply
        except FirehoseError as exc:
            path = getattr(exc, "path", "$")
            problems.append(Problem(_section_of(path), path, str(exc)))
    return message, _sorted(problems)


def _related(a: str, b: str) -> bool:
    """Whether two JSON paths point at the same value or one contains the other."""
    return a.startswith(b) or b.startswith(a)


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: p.severity != "error")


def _section_of(path: str) -> Section:
    if "settings" in path:
        return "settings"
    if "permissions" in path:
        return "permissions"
    if "supported_" in path:
        return "supported_types"
    return "shape"


#: Where settings live in a registration, and which lists share one value map.
_SETTING_LISTS: Final = (
    ("event_processing_registration", "account_settings", "account"),
    ("event_processing_registration", "event_connection_settings", "account"),
    ("audience_processing_registration", "account_settings", "audience_account"),
    ("audience_processing_registration", "audience_subscription_settings", "audience"),
    ("dsr_processing_registration", "account_settings", "dsr_account"),
)
_SETTING_TYPES: Final = tuple(t.value for t in SettingType)


def _check_raw_settings(data: Mapping[str, Any]) -> Iterable[Problem]:
    """Checks on the settings' JSON, before parsing, so that every bad setting is named."""
    seen: dict[str, dict[str, str]] = {}
    for kind, key, scope in _SETTING_LISTS:
        registration = data.get(kind)
        if not isinstance(registration, Mapping) or registration.get(key) is None:
            continue
        yield from check_raw_settings(
            registration[key], f"$.{kind}.{key}", seen.setdefault(scope, {})
        )


def check_raw_settings(
    settings: Any, base: str, ids: dict[str, str], types: Collection[str] = _SETTING_TYPES
) -> Iterable[Problem]:
    """Checks on the JSON of a list of settings at ``base`` (a JSON path) before parsing:
    each an object with an id, a name and one of ``types``, flags of the right type, no id
    repeated (``ids``: those seen so far, with where)."""
    if not isinstance(settings, list):
        yield Problem("settings", base, "expected a list of settings")
        return
    for i, setting in enumerate(settings):
        path = f"{base}[{i}]"
        if not isinstance(setting, Mapping):
            yield Problem("settings", path, "a setting must be an object")
            continue
        setting_id = setting.get("id")
        label = f"setting {setting_id!r}" if isinstance(setting_id, str) else "setting"
        if not isinstance(setting_id, str) or not setting_id.strip():
            yield Problem("settings", f"{path}.id", "setting without an id")
        kind_of = setting.get("type")
        if kind_of not in types:
            got = "no type" if kind_of is None else f"unknown type {kind_of!r}"
            choices = ", ".join(repr(t) for t in types)
            yield Problem(
                "settings", f"{path}.type", f"{label} has {got}: expected one of {choices}"
            )
        name = setting.get("name")
        if not isinstance(name, str) or not name.strip():
            required = " required" if setting.get("required") is True else ""
            yield Problem("settings", f"{path}.name", f"{required} {label} has no name".strip())
        for flag in ("required", "confidential", "visible"):
            if flag in setting and not isinstance(setting[flag], bool | None):
                yield Problem(
                    "settings",
                    f"{path}.{flag}",
                    f"{label}: {flag} must be true or false, got {setting[flag]!r}",
                )
        if setting.get("confidential") is True and kind_of != "text":
            yield Problem(
                "settings",
                f"{path}.confidential",
                f"{label}: only text settings can be confidential",
            )
        if kind_of == "boolean" and setting.get("required") is not None:
            yield Problem(
                "settings",
                f"{path}.required",
                f"{label}: boolean settings have no 'required' (ignored)",
                "warning",
            )
        if isinstance(setting_id, str) and setting_id.strip():
            if setting_id in ids:
                yield Problem(
                    "settings",
                    f"{path}.id",
                    f"duplicate setting id {setting_id!r} (also at {ids[setting_id]})",
                )
            else:
                ids[setting_id] = path


def _choices(enum: type[StrEnum]) -> str:
    return ", ".join(repr(m.value) for m in enum)


def _check_model(message: ModuleRegistrationResponse) -> Iterable[Problem]:
    yield from _check_shape(message)
    if message.permissions is not None:
        yield from _check_permissions(message.permissions)
    events = message.event_processing_registration
    if events is not None:
        yield from _check_event_registration(events, message.permissions)
    audience = message.audience_processing_registration
    if audience is not None:
        yield from _check_audience_registration(audience)
    dsr = message.dsr_processing_registration
    if dsr is not None:
        yield from _check_dsr_registration(dsr)


def _check_shape(message: ModuleRegistrationResponse) -> Iterable[Problem]:
    if not (message.name or "").strip():
        yield Problem("shape", "$.name", "the module has no name")
    if not (message.version or "").strip():
        yield Problem("shape", "$.version", "the module has no version")
    description = message.description or ""
    if len(description) > MAX_DESCRIPTION_CHARS:
        yield Problem(
            "shape",
            "$.description",
            f"the description has {len(description)} characters (at most {MAX_DESCRIPTION_CHARS})",
        )
    if not description.strip():
        yield Problem("shape", "$.description", "no description", "warning")
    if (
        message.event_processing_registration is None
        and message.audience_processing_registration is None
        and message.dsr_processing_registration is None
    ):
        yield Problem(
            "shape",
            "$",
            "registers no processing: expected event_processing_registration,"
            " audience_processing_registration or dsr_processing_registration",
        )


def _check_enum_list(
    values: Sequence[str], enum: type[StrEnum], path: str, what: str, section: Section
) -> Iterable[Problem]:
    known = {m.value for m in enum}
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value not in known:
            yield Problem(
                section,
                f"{path}[{i}]",
                f"unknown {what} {value!r}: expected one of {_choices(enum)}",
            )
        elif value in seen:
            yield Problem(section, f"{path}[{i}]", f"{what} {value!r} is listed twice")
        seen.add(value)


def _check_permissions(permissions: Permissions) -> Iterable[Problem]:
    base = "$.permissions"
    kinds: tuple[tuple[str, str, Sequence[Any], type[StrEnum] | None], ...] = (
        ("user_identities", "user identity", permissions.user_identities, UserIdentityType),
        (
            "device_identities",
            "device identity",
            permissions.device_identities,
            DeviceIdentityType,
        ),
        ("partner_identities", "partner identity", permissions.partner_identities, None),
    )
    encodings = {m.value for m in IdentityEncoding}
    for key, what, items, enum in kinds:
        seen: set[str] = set()
        for i, item in enumerate(items):
            path = f"{base}.{key}[{i}]"
            if enum is not None and item.type not in {m.value for m in enum}:
                yield Problem(
                    "permissions",
                    f"{path}.type",
                    f"unknown {what} type {item.type!r}: expected one of {_choices(enum)}",
                )
            if enum is None and not item.type.strip():
                yield Problem("permissions", f"{path}.type", "partner identity without a type")
            if item.encoding not in encodings:
                yield Problem(
                    "permissions",
                    f"{path}.encoding",
                    f"unknown encoding {item.encoding!r}: expected one of"
                    f" {_choices(IdentityEncoding)}",
                )
            if item.type in seen:
                yield Problem("permissions", f"{path}.type", f"{item.type!r} is listed twice")
            seen.add(item.type)
    if len(permissions.partner_identities) > 1:
        yield Problem(
            "permissions",
            f"{base}.partner_identities",
            f"{len(permissions.partner_identities)} partner identity permissions:"
            " at most one may be registered",
        )


def check_settings(settings: Sequence[KitSetting], path: str, hidden_ok: bool) -> Iterable[Problem]:
    """Checks on parsed settings at ``path``: bounds and defaults within them, a choice's
    options and default, required settings customers cannot see."""
    for i, setting in enumerate(settings):
        where = f"{path}[{i}]"
        label = f"setting {setting.id!r}"
        if isinstance(setting, IntegerSetting | FloatSetting):
            low, high, default = setting.min_value, setting.max_value, setting.default_value
            if low is not None and high is not None and low > high:
                yield Problem(
                    "settings", where, f"{label}: min_value {low} is above max_value {high}"
                )
            if default is not None and (
                (low is not None and default < low) or (high is not None and default > high)
            ):
                yield Problem(
                    "settings",
                    f"{where}.default_value",
                    f"{label}: default_value {default} is outside [{low}, {high}]",
                )
        if isinstance(setting, SelectSetting):
            yield from _check_select(setting, where)
        required = isinstance(
            setting, TextSetting | IntegerSetting | FloatSetting | SelectSetting
        ) and (setting.required)
        default_value = getattr(setting, "default_value", None)
        if required and not setting.visible and default_value is None and not hidden_ok:
            yield Problem(
                "settings",
                where,
                f"{label} is required but hidden and has no default: customers cannot set it",
                "warning",
            )


def _check_select(setting: SelectSetting, where: str) -> Iterable[Problem]:
    label = f"setting {setting.id!r}"
    if not setting.options:
        yield Problem("settings", f"{where}.options", f"{label}: a select needs options")
    for i, option in enumerate(setting.options):
        if option in setting.options[:i]:
            yield Problem("settings", f"{where}.options[{i}]", f"{label}: {option!r} is repeated")
    if setting.default_value is not None and setting.default_value not in setting.options:
        yield Problem(
            "settings",
            f"{where}.default_value",
            f"{label}: default_value {setting.default_value!r} is not one of its options",
        )


def _check_event_registration(
    events: EventProcessingRegistration, permissions: Permissions | None
) -> Iterable[Problem]:
    base = "$.event_processing_registration"
    yield from check_settings(events.account_settings, f"{base}.account_settings", False)
    yield from check_settings(
        events.event_connection_settings, f"{base}.event_connection_settings", False
    )
    types = events.supported_event_types
    if not types:
        yield Problem(
            "supported_types",
            f"{base}.supported_event_types",
            "event processing is registered but supported_event_types is empty",
        )
    yield from _check_enum_list(
        types, EventType, f"{base}.supported_event_types", "event type", "supported_types"
    )
    if not events.supported_runtime_environments:
        yield Problem(
            "supported_types",
            f"{base}.supported_runtime_environments",
            "event processing is registered but supported_runtime_environments is empty",
        )
    yield from _check_enum_list(
        events.supported_runtime_environments,
        RuntimeEnvironmentType,
        f"{base}.supported_runtime_environments",
        "runtime environment",
        "supported_types",
    )
    yield from _check_enum_list(
        events.supported_system_notification_types,
        SystemNotificationType,
        f"{base}.supported_system_notification_types",
        "system notification type",
        "supported_types",
    )
    if (
        EventType.PUSH_MESSAGE_RECEIPT in types
        and not (events.push_messaging_provider_id or "").strip()
    ):
        yield Problem(
            "supported_types",
            f"{base}.push_messaging_provider_id",
            "push_message_receipt is registered without a push_messaging_provider_id",
        )
    if events.max_data_age_hours != -1 and events.max_data_age_hours < 1:
        yield Problem(
            "supported_types",
            f"{base}.max_data_age_hours",
            f"max_data_age_hours is {events.max_data_age_hours}: expected -1 (all data)"
            " or a positive number of hours",
        )
    granted = permissions or Permissions()
    if EventType.USER_ATTRIBUTE_CHANGE in types and not granted.allow_user_attributes:
        yield Problem(
            "supported_types",
            f"{base}.supported_event_types",
            "user_attribute_change needs permissions.allow_user_attributes: none will be sent",
            "warning",
        )
    if EventType.USER_IDENTITY_CHANGE in types and not granted.user_identities:
        yield Problem(
            "supported_types",
            f"{base}.supported_event_types",
            "user_identity_change needs user identity permissions: its identities will be empty",
            "warning",
        )
    if events.authentication is not None:
        yield from _check_authentication(events.authentication, f"{base}.authentication")


def _check_audience_registration(audience: AudienceProcessingRegistration) -> Iterable[Problem]:
    base = "$.audience_processing_registration"
    yield from check_settings(audience.account_settings, f"{base}.account_settings", False)
    yield from check_settings(
        audience.audience_subscription_settings, f"{base}.audience_subscription_settings", True
    )
    bulk = audience.bulk_configuration
    if bulk is not None:
        for key in ("bulk_forward_wait_for_messages", "bulk_forward_wait_in_minutes"):
            value = getattr(bulk, key)
            if value is not None and value < 1:
                yield Problem(
                    "shape", f"{base}.bulk_configuration.{key}", f"{key} must be positive"
                )
    if audience.authentication is not None:
        yield from _check_authentication(audience.authentication, f"{base}.authentication")


def _check_dsr_registration(dsr: DsrProcessingRegistration) -> Iterable[Problem]:
    base = "$.dsr_processing_registration"
    yield from check_settings(dsr.account_settings, f"{base}.account_settings", False)
    if not dsr.supported_dsr_types:
        yield Problem(
            "supported_types",
            f"{base}.supported_dsr_types",
            "DSR processing is registered but supported_dsr_types is empty",
        )
    yield from _check_enum_list(
        dsr.supported_dsr_types,
        DsrType,
        f"{base}.supported_dsr_types",
        "DSR type",
        "supported_types",
    )


def _check_authentication(auth: OAuth2Authentication, path: str) -> Iterable[Problem]:
    for key in ("authorization_url", "token_url"):
        if not (getattr(auth, key) or "").strip():
            yield Problem("shape", f"{path}.{key}", f"OAuth2 authentication without {key}")
    if auth.grant_type is not None and auth.grant_type not in {m.value for m in OAuth2GrantType}:
        yield Problem(
            "shape",
            f"{path}.grant_type",
            f"unknown grant_type {auth.grant_type!r}: expected one of {_choices(OAuth2GrantType)}",
        )
    token_types = {m.value for m in OAuth2AccessTokenType}
    if auth.access_token_type is not None and auth.access_token_type not in token_types:
        yield Problem(
            "shape",
            f"{path}.access_token_type",
            f"unknown access_token_type {auth.access_token_type!r}: expected one of"
            f" {_choices(OAuth2AccessTokenType)}",
        )
    for i, scope in enumerate(auth.scopes):
        if not (scope.name or "").strip() or not (scope.description or "").strip():
            yield Problem("shape", f"{path}.scopes[{i}]", "a scope needs a name and a description")


# --------------------------------------------------------------------------- records


def module_record(
    name: str,
    target: Target,
    response: ModuleRegistrationResponse,
    raw: bytes,
    now_ms: int,
) -> ModuleRecord:
    """The module to store for a checked registration."""
    events = response.event_processing_registration
    audience = response.audience_processing_registration
    dsr = response.dsr_processing_registration
    account: list[Setting] = []
    for group in (
        events.account_settings if events else [],
        audience.account_settings if audience else [],
        dsr.account_settings if dsr else [],
    ):
        known = {s.id for s in account}
        account.extend(s for s in group if s.id not in known)
    if isinstance(target, HttpTarget) and not target.token:
        target = HttpTarget(target.url)
    return ModuleRecord(
        name=name,
        target=target,
        display_name=(response.name or "").strip(),
        version=(response.version or "").strip(),
        description=response.description,
        sdk_version=response.sdk_version,
        registration=raw,
        created_at_ms=now_ms,
        updated_at_ms=now_ms,
        permissions=to_dict(response.permissions) if response.permissions else {},
        account_settings=[to_dict(s) for s in account],
        connection_settings=[to_dict(s) for s in events.event_connection_settings]
        if events
        else [],
        audience_subscription_settings=[to_dict(s) for s in audience.audience_subscription_settings]
        if audience
        else [],
        supported_event_types=list(events.supported_event_types) if events else [],
        supported_runtime_environments=list(events.supported_runtime_environments)
        if events
        else [],
        supported_system_notification_types=list(events.supported_system_notification_types)
        if events
        else [],
        audience=audience is not None,
        dsr=dsr is not None,
        supported_dsr_types=list(dsr.supported_dsr_types) if dsr else [],
    )


def registration_of(module: ModuleRecord) -> ModuleRegistrationResponse:
    """The stored registration, parsed again (the delivery engine's view of the module)."""
    message = parse(module.registration, lenient=True)
    assert isinstance(message, ModuleRegistrationResponse)
    return message


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _setting_summary(setting: Mapping[str, object]) -> dict[str, object]:
    keys = ("id", "name", "type", "required", "confidential", "visible", "default_value")
    return {k: setting[k] for k in keys if k in setting}


def module_summary(module: ModuleRecord, *, with_registration: bool = False) -> dict[str, Any]:
    """What ``patchbay modules list/show`` print: never the token, only whether it is set;
    URLs with their credentials masked."""
    summary: dict[str, Any] = {
        "name": module.name,
        "display_name": module.display_name,
        "version": module.version,
        "description": module.description,
        "sdk_version": module.sdk_version,
        "transport": module.target.transport,
    }
    match module.target:
        case HttpTarget(url=url, token=token):
            summary["url"] = mask_url(url)
            summary["token"] = "set" if token else "not set"
        case LambdaTarget(function=function, region=region, endpoint_url=endpoint_url):
            summary["lambda_function"] = function
            summary["lambda_region"] = region
            summary["lambda_endpoint_url"] = mask_url(endpoint_url) if endpoint_url else None
    summary.update(
        {
            "supported_event_types": module.supported_event_types,
            "supported_runtime_environments": module.supported_runtime_environments,
            "supported_system_notification_types": module.supported_system_notification_types,
            "audience": module.audience,
            "dsr": module.dsr,
            "supported_dsr_types": module.supported_dsr_types,
            "permissions": module.permissions,
            "account_settings": [_setting_summary(s) for s in module.account_settings],
            "connection_settings": [_setting_summary(s) for s in module.connection_settings],
            "audience_subscription_settings": [
                _setting_summary(s) for s in module.audience_subscription_settings
            ],
            "created_at": _iso(module.created_at_ms),
            "updated_at": _iso(module.updated_at_ms),
            "created_at_ms": module.created_at_ms,
            "updated_at_ms": module.updated_at_ms,
        }
    )
    if with_registration:
        summary["registration"] = msgspec.json.decode(module.registration)
    return summary
