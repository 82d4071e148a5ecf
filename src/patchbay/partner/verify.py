"""The checks a platform runs against a partner before it lists the integration.

:func:`verify` registers the partner (without storing it), then sends it one request of
every kind it registered, built from its registration the way the platform would build it,
and checks each answer. Every check gives a :class:`CheckResult` (PASS, WARN, FAIL or SKIP,
with the latency and a precise detail); :class:`VerifyReport` collects them and renders the
JSON report. The request builders (:func:`event_processing_request`, ...) are plain
functions of a registration, so tests and the delivery engine can use them too.

The checks, in order:

* ``transport``: the endpoint is HTTPS (spec §5.2; plain HTTP is a warning, for local tests).
* ``registration``, ``registration.settings``, ``registration.permissions``,
  ``registration.supported_types``: the registration answer, checked by
  :func:`patchbay.partner.registration.validate_registration`. It is sent without the token,
  as the platform does. When it fails, every later check is skipped.
* ``event_processing``: an ``event_processing_request`` carrying one event of every
  registered type, on the first registered runtime environment, with the fields the
  permissions unlock and the registered identity types; ``event_processing.runtimes``: one
  small request per other registered runtime environment; ``event_processing.verification``:
  the periodic verification request (``"events": []``, spec §5.3).
* With audience processing: ``audience_subscription.add``, ``audience_membership_change.add``,
  ``.delete``, ``.attribute_update``, ``audience_membership_change.verification`` (no
  ``user_profiles``, spec §1.5) and ``audience_subscription.remove``.
* With DSR processing: ``dsr_processing`` (an erasure request).
* ``latency``: the verification request sent ``samples`` more times.

Each answer must be the matching response type (spec §1.2) and carry an ``id`` (a UUID: the
SDK gives every response a fresh one; echoing the request's id is allowed by the older docs,
spec §1.1); a missing ``timestamp_ms`` or ``firehose_version`` is a warning. Returned audience
subscription settings must be registered ones. HTTP answers should be 200 or 202.

Latency (spec §5): HTTP endpoints must answer in under 100 ms, Lambda functions in under
200 ms on average. One slow call is a warning on its check (a cold start or a first
connection is expected); the ``latency`` check fails when the median of the samples is over
the budget.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from ipaddress import ip_address
from typing import Any, Final, cast
from urllib.parse import urlsplit

import msgspec

from patchbay import __version__
from patchbay.firehose import (
    Account,
    ApplicationStateTransitionEvent,
    AttributionEvent,
    Audience,
    AudienceMembershipChangeRequest,
    AudienceSubscriptionRequest,
    AudienceSubscriptionResponse,
    BaseEvent,
    BaseMessage,
    BooleanSetting,
    CCPAConsent,
    CCPAConsentStateNotification,
    ConsentState,
    CustomEvent,
    DeviceIdentity,
    DsrProcessingRequest,
    ErrorEvent,
    Event,
    EventProcessingRegistration,
    EventProcessingRequest,
    FloatSetting,
    GDPRConsent,
    GDPRConsentStateNotification,
    Impression,
    ImpressionEvent,
    IntegerSetting,
    Location,
    ModuleRegistrationRequest,
    ModuleRegistrationResponse,
    OpenDsrIdentity,
    PartnerIdentity,
    Permissions,
    PlatformFields,
    PrivacySettingChangeEvent,
    Product,
    ProductActionEvent,
    Promotion,
    PromotionActionEvent,
    PushMessageOpenEvent,
    PushMessageReceiptEvent,
    PushSubscriptionEvent,
    RuntimeEnvironment,
    ScreenViewEvent,
    SessionEndEvent,
    SessionStartEvent,
    Setting,
    SystemNotification,
    TextSetting,
    UserAttributeAudienceEvent,
    UserAttributeChangeEvent,
    UserIdentity,
    UserIdentityChangeEvent,
    UserProfile,
)
from patchbay.firehose.enums import EventType, RuntimeEnvironmentType
from patchbay.firehose.environment import (
    AlexaRuntimeEnvironment,
    AndroidRuntimeEnvironment,
    BaseRuntimeEnvironment,
    FireTvRuntimeEnvironment,
    GenericRuntimeEnvironment,
    IosRuntimeEnvironment,
    RokuRuntimeEnvironment,
    SmartTvRuntimeEnvironment,
    TvosRuntimeEnvironment,
    WebRuntimeEnvironment,
    XboxRuntimeEnvironment,
)
from patchbay.partner.registration import Problem, fetch_registration
from patchbay.partner.transport import (
    HttpTarget,
    InvalidResponseError,
    PartnerFunctionError,
    PartnerStatusError,
    PartnerTimeoutError,
    Reply,
    Target,
    Timeouts,
    Transport,
    TransportError,
    UnexpectedResponseTypeError,
    open_transport,
)

__all__ = [
    "DEFAULT_LATENCY_SAMPLES",
    "HTTP_LATENCY_BUDGET_MS",
    "LAMBDA_LATENCY_BUDGET_MS",
    "CheckResult",
    "Status",
    "VerifyReport",
    "account_settings_for",
    "audience_membership_change_request",
    "audience_subscription_request",
    "check_answer",
    "dsr_processing_request",
    "event_processing_request",
    "run_checks",
    "sample_events",
    "verify",
]

#: Firehose over HTTPS: "under 100 ms" (spec §5.2).
HTTP_LATENCY_BUDGET_MS: Final = 100.0
#: Firehose over Lambda: "average under 200 ms for 99% of calls" (spec §5.1).
LAMBDA_LATENCY_BUDGET_MS: Final = 200.0
#: How many extra verification requests the ``latency`` check sends.
DEFAULT_LATENCY_SAMPLES: Final = 5

#: The customer account the verification requests come from.
VERIFY_ACCOUNT_ID: Final = 90210
_AUDIENCE_ID: Final = 4242
_AUDIENCE_NAME: Final = "Verify: frequent buyers"


class Status(StrEnum):
    """The result of one check."""

    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(slots=True)
class CheckResult:
    """One check: its name, result, latency (when a call was made) and detail."""

    check: str
    status: Status
    detail: str
    latency_ms: float | None = None
    request_type: str | None = None
    response_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The check as it appears in the JSON report."""
        return {
            "check": self.check,
            "result": self.status.value,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "detail": self.detail,
            "request_type": self.request_type,
            "response_type": self.response_type,
        }


@dataclass(slots=True)
class VerifyReport:
    """Every check of one verification run."""

    target: str
    transport: str
    latency_budget_ms: float
    started_at_ms: int
    finished_at_ms: int = 0
    module: dict[str, str | None] | None = None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No check failed (warnings allowed)."""
        return not any(c.status is Status.FAIL for c in self.checks)

    @property
    def result(self) -> Status:
        """FAIL if any check failed, else WARN if any warned, else PASS."""
        found = {c.status for c in self.checks}
        for status in (Status.FAIL, Status.WARN):
            if status in found:
                return status
        return Status.PASS

    def failures(self) -> list[CheckResult]:
        """The failed checks."""
        return [c for c in self.checks if c.status is Status.FAIL]

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (documented in docs/modules.md). Never contains the token."""
        counts = {s.value: sum(1 for c in self.checks if c.status is s) for s in Status}
        return {
            "patchbay_version": __version__,
            "target": self.target,
            "transport": self.transport,
            "module": self.module,
            "started_at": _iso(self.started_at_ms),
            "finished_at": _iso(self.finished_at_ms or self.started_at_ms),
            "latency_budget_ms": self.latency_budget_ms,
            "result": self.result.value,
            "counts": counts,
            "checks": [c.to_dict() for c in self.checks],
        }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- running


async def verify(
    target: Target,
    *,
    timeouts: Timeouts | None = None,
    latency_budget_ms: float | None = None,
    latency_samples: int = DEFAULT_LATENCY_SAMPLES,
) -> VerifyReport:
    """Run every check against the partner at ``target`` (see the module doc).

    ``latency_budget_ms`` defaults to 100 ms over HTTP and 200 ms over Lambda.
    """
    async with open_transport(target, timeouts=timeouts) as transport:
        return await run_checks(
            transport, latency_budget_ms=latency_budget_ms, latency_samples=latency_samples
        )


async def run_checks(
    transport: Transport,
    *,
    latency_budget_ms: float | None = None,
    latency_samples: int = DEFAULT_LATENCY_SAMPLES,
) -> VerifyReport:
    """Run every check over an open transport."""
    target = transport.target
    is_http = isinstance(target, HttpTarget)
    budget = latency_budget_ms or (HTTP_LATENCY_BUDGET_MS if is_http else LAMBDA_LATENCY_BUDGET_MS)
    report = VerifyReport(
        target=target.describe(),
        transport="http" if is_http else "lambda",
        latency_budget_ms=budget,
        started_at_ms=_now_ms(),
    )
    runner = _Runner(transport, report, budget)
    report.checks.append(_transport_check(target))
    registration = await runner.registration()
    if registration is not None:
        report.module = {"name": registration.name, "version": registration.version}
        await runner.processing(registration)
        await runner.latency(registration, latency_samples)
    report.finished_at_ms = _now_ms()
    return report


def _transport_check(target: Target) -> CheckResult:
    if not isinstance(target, HttpTarget):
        return CheckResult("transport", Status.PASS, f"AWS Lambda function {target.function}")
    parts = urlsplit(target.url)
    if parts.scheme == "https":
        return CheckResult("transport", Status.PASS, "HTTPS endpoint")
    local = parts.hostname == "localhost" or _is_loopback(parts.hostname or "")
    where = "a loopback address (local testing)" if local else parts.hostname
    return CheckResult(
        "transport",
        Status.WARN,
        f"plain HTTP to {where}: Firehose endpoints must use HTTPS (TLS 1.1+)",
    )


def _is_loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


#: Extra checks on an answer: (request, reply) -> problems as (status, text).
AnswerCheck = Callable[[BaseMessage, Reply], list[tuple[Status, str]]]

_REGISTRATION_SECTIONS: Final = (
    ("registration", "shape"),
    ("registration.settings", "settings"),
    ("registration.permissions", "permissions"),
    ("registration.supported_types", "supported_types"),
)

_SKIPPED_AFTER_REGISTRATION: Final = (
    "event_processing",
    "audience_processing",
    "dsr_processing",
    "latency",
)


class _Runner:
    """Sends the requests and records one result per check."""

    def __init__(self, transport: Transport, report: VerifyReport, budget_ms: float) -> None:
        self.transport = transport
        self.report = report
        self.budget_ms = budget_ms
        self.is_http = isinstance(transport.target, HttpTarget)

    def add(self, result: CheckResult) -> CheckResult:
        self.report.checks.append(result)
        return result

    def skip_rest(self, reason: str) -> None:
        for name in _SKIPPED_AFTER_REGISTRATION:
            self.add(CheckResult(name, Status.SKIP, reason))

    async def registration(self) -> ModuleRegistrationResponse | None:
        request_type = str(ModuleRegistrationRequest().type)
        try:
            answer = await fetch_registration(self.transport)
        except TransportError as exc:
            self.add(
                CheckResult(
                    "registration",
                    Status.FAIL,
                    _transport_failure(exc),
                    exc.latency_ms,
                    request_type,
                    _got_type(exc),
                )
            )
            self.skip_rest("the registration failed")
            return None
        for name, section in _REGISTRATION_SECTIONS:
            found = [p for p in answer.problems if p.section == section]
            result = _problems_result(name, found)
            if name == "registration":
                result.latency_ms = answer.latency_ms
                result.request_type = request_type
                result.response_type = "module_registration_response"
                if result.status is Status.PASS and answer.response is not None:
                    result.detail = (
                        f"{answer.response.name} {answer.response.version}"
                        f" ({_kinds(answer.response)})"
                    )
                    result = self._with_latency(result, answer.latency_ms)
            self.add(result)
        if answer.errors or answer.response is None:
            self.skip_rest("the registration is invalid")
            return None
        return answer.response

    async def processing(self, registration: ModuleRegistrationResponse) -> None:
        events = registration.event_processing_registration
        if events is not None:
            request = event_processing_request(registration)
            runtime = request.runtime_environment.type if request.runtime_environment else "-"
            await self.exchange(
                "event_processing",
                request,
                f"{len(request.events)} events ({_type_list(request.events)}) from {runtime}",
            )
            await self.other_runtimes(registration)
            await self.exchange(
                "event_processing.verification",
                event_processing_request(registration, events=[]),
                'verification request ("events": [])',
            )
        audience = registration.audience_processing_registration
        if audience is not None:
            returned: dict[str, str] = {}
            add = audience_subscription_request(registration, "add")
            reply = await self.exchange(
                "audience_subscription.add",
                add,
                f"audience {_AUDIENCE_ID} added",
                _subscription_check(registration),
            )
            if reply is not None and isinstance(reply.message, AudienceSubscriptionResponse):
                returned = reply.message.audience_subscription_settings
            for action in ("add", "delete", "attribute_update"):
                await self.exchange(
                    f"audience_membership_change.{action}",
                    audience_membership_change_request(registration, action, returned),
                    f"1 user profile, action {action}",
                )
            await self.exchange(
                "audience_membership_change.verification",
                audience_membership_change_request(registration, None),
                "verification request (no user_profiles)",
            )
            await self.exchange(
                "audience_subscription.remove",
                audience_subscription_request(registration, "remove", returned),
                f"audience {_AUDIENCE_ID} removed",
                _subscription_check(registration),
            )
        if registration.dsr_processing_registration is not None:
            await self.exchange(
                "dsr_processing", dsr_processing_request(registration), "GDPR erasure request"
            )

    async def other_runtimes(self, registration: ModuleRegistrationResponse) -> None:
        events = registration.event_processing_registration
        assert events is not None
        others = events.supported_runtime_environments[1:]
        if not others:
            return
        latencies: list[float] = []
        first = sample_events(registration)[:1]
        for runtime in others:
            request = event_processing_request(registration, runtime=runtime, events=first)
            outcome, _ = await self.call("event_processing.runtimes", request, runtime, None)
            if outcome.status is Status.FAIL:
                outcome.detail = f"runtime {runtime!r}: {outcome.detail}"
                self.add(outcome)
                return
            if outcome.latency_ms is not None:
                latencies.append(outcome.latency_ms)
        result = CheckResult(
            "event_processing.runtimes",
            Status.PASS,
            "a batch from each of " + ", ".join(others) + ": event_processing_response",
            max(latencies) if latencies else None,
            "event_processing_request",
            "event_processing_response",
        )
        self.add(self._with_latency(result, result.latency_ms))

    async def exchange(
        self, name: str, request: BaseMessage, what: str, extra: AnswerCheck | None = None
    ) -> Reply | None:
        result, reply = await self.call(name, request, what, extra)
        self.add(result)
        return reply

    async def call(
        self, name: str, request: BaseMessage, what: str, extra: AnswerCheck | None
    ) -> tuple[CheckResult, Reply | None]:
        request_type = str(request.type)
        try:
            reply = await self.transport.send(request)
        except TransportError as exc:
            failed = CheckResult(
                name,
                Status.FAIL,
                _transport_failure(exc),
                exc.latency_ms,
                request_type,
                _got_type(exc),
            )
            return failed, None
        findings = check_answer(request, reply, self.is_http)
        if extra is not None and reply.message is not None:
            findings.extend(extra(request, reply))
        response_type = str(reply.message.type) if reply.message is not None else None
        result = _findings_result(name, findings, f"{what}: {response_type or 'no body'}")
        result.latency_ms = reply.latency_ms
        result.request_type = request_type
        result.response_type = response_type
        return self._with_latency(result, reply.latency_ms), reply

    def _with_latency(self, result: CheckResult, latency_ms: float | None) -> CheckResult:
        if latency_ms is None or latency_ms <= self.budget_ms or result.status is Status.FAIL:
            return result
        note = f"slow: {latency_ms:.0f} ms (budget {self.budget_ms:g} ms)"
        result.detail = f"{note}; {result.detail}" if result.detail else note
        result.status = Status.WARN
        return result

    async def latency(self, registration: ModuleRegistrationResponse, samples: int) -> None:
        if samples <= 0:
            self.add(CheckResult("latency", Status.SKIP, "no samples asked for"))
            return
        request_of: Callable[[], BaseMessage]
        if registration.event_processing_registration is not None:
            request_of = lambda: event_processing_request(registration, events=[])  # noqa: E731
        elif registration.audience_processing_registration is not None:
            request_of = lambda: audience_membership_change_request(registration, None)  # noqa: E731
        else:
            request_of = ModuleRegistrationRequest
        latencies: list[float] = []
        kind = str(request_of().type)
        for _ in range(samples):
            request = request_of()
            try:
                reply = await self.transport.send(
                    request, authenticate=not isinstance(request, ModuleRegistrationRequest)
                )
            except TransportError as exc:
                self.add(
                    CheckResult(
                        "latency",
                        Status.FAIL,
                        f"sample {len(latencies) + 1}: {_transport_failure(exc)}",
                        exc.latency_ms,
                        kind,
                    )
                )
                return
            latencies.append(reply.latency_ms)
        median = statistics.median(latencies)
        worst = max(latencies)
        summary = (
            f"median {median:.1f} ms, mean {statistics.fmean(latencies):.1f} ms,"
            f" max {worst:.1f} ms over {samples} {kind}s (budget {self.budget_ms:g} ms"
            f" {'over HTTP' if self.is_http else 'over Lambda'})"
        )
        if median > self.budget_ms:
            status = Status.FAIL
            summary = f"too slow: {summary}"
        elif worst > self.budget_ms:
            status = Status.WARN
            summary = f"some calls over budget: {summary}"
        else:
            status = Status.PASS
        self.add(CheckResult("latency", status, summary, median, kind))


def _kinds(registration: ModuleRegistrationResponse) -> str:
    kinds = []
    events = registration.event_processing_registration
    if events is not None:
        kinds.append(f"{len(events.supported_event_types)} event types")
    if registration.audience_processing_registration is not None:
        kinds.append("audiences")
    if registration.dsr_processing_registration is not None:
        kinds.append("DSR")
    return ", ".join(kinds) or "no processing"


def _problems_result(name: str, problems: Sequence[Problem]) -> CheckResult:
    findings = [(Status.FAIL if p.severity == "error" else Status.WARN, str(p)) for p in problems]
    return _findings_result(name, findings, "ok")


def _findings_result(name: str, findings: Sequence[tuple[Status, str]], ok: str) -> CheckResult:
    """FAIL/WARN with the failures and warnings, else PASS with ``ok`` and any notes."""
    failures = [text for status, text in findings if status is Status.FAIL]
    warnings = [text for status, text in findings if status is Status.WARN]
    notes = [text for status, text in findings if status is Status.PASS]
    if failures:
        return CheckResult(name, Status.FAIL, "; ".join(failures + warnings))
    if warnings:
        return CheckResult(name, Status.WARN, "; ".join(warnings))
    return CheckResult(name, Status.PASS, "; ".join([ok, *notes]))


def _type_list(events: Sequence[BaseEvent]) -> str:
    names = [str(e.type) for e in events]
    return ", ".join(names) if len(names) <= 4 else ", ".join(names[:3]) + ", ..."


def _transport_failure(exc: TransportError) -> str:
    if isinstance(exc, UnexpectedResponseTypeError):
        return f"wrong response type: expected {exc.expected}, got {exc.got}"
    if isinstance(exc, PartnerStatusError):
        kind = "HTTP" if exc.target.startswith("http") else "Lambda"
        return f"{kind} {exc.status}: {exc.body or '(empty body)'}"
    if isinstance(exc, PartnerFunctionError):
        what = " ".join(x for x in (exc.error_type, exc.error_message or exc.body) if x)
        return f"function error ({exc.kind}): {what}"
    if isinstance(exc, PartnerTimeoutError):
        return f"timeout: {exc}"
    if isinstance(exc, InvalidResponseError):
        return f"invalid answer: {exc}"
    return str(exc)


def _got_type(exc: TransportError) -> str | None:
    return exc.got if isinstance(exc, UnexpectedResponseTypeError) else None


# --------------------------------------------------------------------------- answers


def check_answer(
    request: BaseMessage, reply: Reply, is_http: bool = True
) -> list[tuple[Status, str]]:
    """Findings about one well-typed answer: its status and envelope (spec §1.1, §5.2)."""
    findings: list[tuple[Status, str]] = []
    if is_http and reply.status not in (200, 202):
        findings.append((Status.WARN, f"HTTP {reply.status}: mParticle expects 200 or 202"))
    if reply.message is None:
        findings.append(
            (
                Status.WARN,
                f"accepted with HTTP {reply.status} and no body: the response could not be checked",
            )
        )
        return findings
    data = reply.json() or {}
    raw_id = data.get("id")
    if raw_id is None or raw_id == "":
        findings.append((Status.FAIL, "the response has no `id` (required: a UUID)"))
    elif str(raw_id).lower() == str(request.id):
        findings.append((Status.PASS, "the response echoes the request id"))
    for key in ("timestamp_ms", "firehose_version"):
        if key not in data:
            findings.append((Status.WARN, f"the response has no `{key}`"))
    if getattr(reply.message, "suspend_subscription", False) is True:
        findings.append((Status.WARN, "the partner asks to suspend the subscription"))
    return findings


def _subscription_check(registration: ModuleRegistrationResponse) -> AnswerCheck:
    audience = registration.audience_processing_registration
    known = {s.id for s in audience.audience_subscription_settings} if audience else set()

    def check(request: BaseMessage, reply: Reply) -> list[tuple[Status, str]]:
        message = reply.message
        if not isinstance(message, AudienceSubscriptionResponse):
            return []
        unknown = sorted(set(message.audience_subscription_settings) - known)
        if unknown:
            return [
                (
                    Status.FAIL,
                    "returned audience_subscription_settings that are not registered: "
                    + ", ".join(repr(k) for k in unknown),
                )
            ]
        return []

    return check


# --------------------------------------------------------------------------- requests


def account_settings_for(settings: Sequence[Setting]) -> dict[str, str | None]:
    """Values for ``settings`` as a customer would enter them: the registered default, or a
    placeholder of the right type within ``min_value``/``max_value``. Booleans are written
    ``True``/``False``, as the platform sends them (spec §2.6.4)."""
    values: dict[str, str | None] = {}
    for setting in settings:
        if isinstance(setting, TextSetting):
            placeholder = (
                f"verify-secret-{setting.id}" if setting.confidential else f"verify-{setting.id}"
            )
            values[setting.id] = setting.default_value or placeholder
        elif isinstance(setting, IntegerSetting):
            number = setting.default_value
            if number is None:
                number = _within(1, setting.min_value, setting.max_value)
            values[setting.id] = str(number)
        elif isinstance(setting, FloatSetting):
            value = setting.default_value
            if value is None:
                value = float(_within(1.0, setting.min_value, setting.max_value))
            values[setting.id] = repr(value)
        elif isinstance(setting, BooleanSetting):
            values[setting.id] = "True" if setting.default_value else "False"
    return values


def _within(value: float, low: float | None, high: float | None) -> Any:
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return value


def _account(settings: Sequence[Setting]) -> Account:
    return Account(account_id=VERIFY_ACCOUNT_ID, account_settings=account_settings_for(settings))


#: Sample identity values (raw; hashed per the registered encoding).
_USER_IDENTITIES: Final = {
    "customer": "cust-000123",
    "email": "verify.user@example.com",
    "facebook": "100004567890123",
    "twitter": "verify_user",
    "google": "108765432109876543210",
    "microsoft": "verify.user@outlook.example",
    "yahoo": "verify.user@yahoo.example",
    "mobile_number": "+15555550123",
    "phone_number_2": "+15555550124",
    "phone_number_3": "+15555550125",
}
_DEVICE_IDENTITIES: Final = {
    "android_id": "a1b2c3d4e5f60718",
    "google_advertising_id": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "ios_advertising_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "ios_vendor_id": "1F4C5E2A-9B3D-4C8E-A1F2-3D4E5F6A7B8C",
    "google_cloud_messaging_token": "fcm-token-APA91bHun4MxP5egoKMwt2KZFBaFUH",
    "apple_push_notification_token": (
        "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad"
    ),
    "roku_advertising_id": "e5b1a0a4-2b9e-5c3d-8f7e-6a5b4c3d2e1f",
    "microsoft_advertising_id": "7b2c1d4e-3f5a-4b6c-8d7e-9f0a1b2c3d4e",
    "microsoft_publisher_id": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
    "fire_advertising_id": "df07c7dc-cea7-4a89-b328-810ff5acb15d",
    "roku_publisher_id": "0f1e2d3c-4b5a-4968-8776-655443322110",
}


def _encode(value: str, encoding: str) -> str:
    if encoding == "raw":
        return value
    return hashlib.new(encoding, value.strip().lower().encode()).hexdigest()


def _user_identities(permissions: Permissions) -> list[UserIdentity]:
    return [
        UserIdentity(
            type=p.type,
            encoding=p.encoding,
            value=_encode(_USER_IDENTITIES.get(p.type, f"verify-{p.type}-000123"), p.encoding),
        )
        for p in permissions.user_identities
    ]


def _device_identities(permissions: Permissions) -> list[DeviceIdentity]:
    return [
        DeviceIdentity(
            type=p.type,
            encoding=p.encoding,
            value=_encode(_DEVICE_IDENTITIES.get(p.type, str(uuid.uuid4())), p.encoding),
        )
        for p in permissions.device_identities
    ]


def _partner_identities(permissions: Permissions) -> list[PartnerIdentity]:
    return [
        PartnerIdentity(
            type=p.type, encoding=p.encoding, value=_encode("verify-partner-7f3a", p.encoding)
        )
        for p in permissions.partner_identities
    ]


_RUNTIME_CLASSES: Final[dict[str, type[BaseRuntimeEnvironment]]] = {
    "unknown": GenericRuntimeEnvironment,
    "smarttv": SmartTvRuntimeEnvironment,
    "alexa": AlexaRuntimeEnvironment,
    "android": AndroidRuntimeEnvironment,
    "ios": IosRuntimeEnvironment,
    "tvos": TvosRuntimeEnvironment,
    "mobileweb": WebRuntimeEnvironment,
    "roku": RokuRuntimeEnvironment,
    "xbox": XboxRuntimeEnvironment,
    "firetv": FireTvRuntimeEnvironment,
}

#: A plausible device of each kind; only the fields a runtime has are used.
_DEVICES: Final[dict[str, dict[str, Any]]] = {
    "android": {
        "brand": "google",
        "product": "shiba",
        "name": "shiba",
        "manufacturer": "Google",
        "model": "Pixel 8",
        "os_version": "14",
        "build_id": "UQ1A.240205.004",
        "screen_height": 2400,
        "screen_width": 1080,
        "screen_dpi": 420,
        "android_sdk_level": 34,
        "network_carrier": "T-Mobile",
        "network_country": "us",
        "supports_telephony": True,
        "bluetooth_enabled": True,
        "install_referrer": "utm_source=verify",
    },
    "ios": {
        "brand": "Apple",
        "product": "iPhone15,2",
        "name": "iPhone",
        "manufacturer": "Apple",
        "model": "iPhone15,2",
        "os_version": "17.4",
        "build_id": "21E219",
        "screen_height": 2556,
        "screen_width": 1179,
        "cpu_architecture": "arm64",
        "network_carrier": "Verizon",
        "network_country": "us",
        "radio_access_technology": "CTRadioAccessTechnologyLTE",
        "is_sandboxed": False,
        "att_authorization_status": "authorized",
        "att_timestamp_unixtime_ms": 1_714_000_000_000,
    },
    "tvos": {
        "brand": "Apple",
        "model": "AppleTV14,1",
        "os_version": "17.4",
        "screen_height": 2160,
        "screen_width": 3840,
        "cpu_architecture": "arm64",
    },
    "mobileweb": {
        "device_manufacturer": "Apple",
        "device_model": "Macintosh",
        "os_version": "14.4",
        "screen_height": 900,
        "screen_width": 1440,
        "device_country": "US",
        "limit_ad_tracking": "false",
        "is_dst": "true",
    },
    "roku": {"brand": "Roku", "model": "3941X", "os_version": "12.5", "cpu_architecture": "arm"},
    "xbox": {
        "brand": "Microsoft",
        "model": "Xbox Series X",
        "os_version": "10.0.25398",
        "screen_height": 2160,
        "screen_width": 3840,
    },
    "firetv": {
        "brand": "Amazon",
        "model": "AFTKA",
        "os_version": "7.6.6.9",
        "screen_height": 2160,
        "screen_width": 3840,
        "cpu_architecture": "arm64",
    },
    "unknown": {
        "brand": "Generic",
        "model": "Server",
        "os_version": "1.0",
        "screen_height": 1080,
        "screen_width": 1920,
    },
    "smarttv": {
        "brand": "Samsung",
        "model": "QN90C",
        "os_version": "Tizen 7.0",
        "screen_height": 2160,
        "screen_width": 3840,
    },
    "alexa": {"brand": "Amazon", "model": "Echo Show 8", "os_version": "1.0"},
}

#: Fields every device kind gets (where the runtime has them).
_COMMON_DEVICE: Final[dict[str, Any]] = {
    "country": "US",
    "locale_language": "en",
    "locale_country": "US",
    "timezone_offset": -5,
    "timezone_name": "America/New_York",
    "is_tablet": False,
    "application_name": "Patchbay Verify",
    "application_version": "4.2.0",
    "application_package": "com.example.verify",
}


def _runtime_environment(runtime: str, permissions: Permissions) -> BaseRuntimeEnvironment:
    cls = _RUNTIME_CLASSES.get(runtime, GenericRuntimeEnvironment)
    names = {f.name for f in msgspec.structs.fields(cls)}
    fields: dict[str, Any] = {
        "sdk_version": "8.19.0" if runtime != "mobileweb" else "2.28.0",
        "identities": _device_identities(permissions),
    }
    if permissions.allow_device_info:
        device = {**_COMMON_DEVICE, **_DEVICES.get(runtime, {})}
        fields.update({k: v for k, v in device.items() if k in names})
    if permissions.allow_access_ip_address:
        fields["client_ip_address"] = "203.0.113.7"
    if permissions.allow_access_http_user_agent:
        fields["http_header_user_agent"] = (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
        )
    return cls(**fields)


def sample_events(
    registration: ModuleRegistrationResponse, now_ms: int | None = None
) -> list[BaseEvent]:
    """One realistic event of every type the module registered, in registration order."""
    events_reg = registration.event_processing_registration
    if events_reg is None:
        return []
    permissions = registration.permissions or Permissions()
    start = (now_ms if now_ms is not None else _now_ms()) - 60_000
    location = (
        Location(latitude=40.7128, longitude=-74.006, accuracy=12.5)
        if permissions.allow_access_location
        else None
    )
    provider = events_reg.push_messaging_provider_id or "verify"
    out: list[BaseEvent] = []
    for i, kind in enumerate(dict.fromkeys(events_reg.supported_event_types)):
        make = _EVENT_FACTORIES.get(kind)
        if make is None:
            continue
        event = make(permissions, provider)
        event = msgspec.structs.replace(
            event, timestamp_ms=start + i * 1_000, session_id=1_714_000_123_456, location=location
        )
        out.append(event)
    return out


def _product(sku: str, name: str, price: str, quantity: str) -> Product:
    return Product(
        id=sku,
        name=name,
        brand="Acme",
        category="Outdoor",
        variant="blue",
        position=1,
        price=Decimal(price),
        quantity=Decimal(quantity),
        total_amount=Decimal(price) * Decimal(quantity),
        attributes={"color": "blue"},
    )


def _push_payload(provider: str) -> str:
    return json.dumps(
        {
            "aps": {"alert": {"title": "Back in stock", "body": "Your item is available."}},
            provider: {"campaignId": 1234, "templateId": 5678, "messageId": "verify-msg-1"},
        },
        separators=(",", ":"),
    )


_EVENT_FACTORIES: Final[dict[str, Callable[[Permissions, str], BaseEvent]]] = {
    EventType.SESSION_START: lambda p, _: SessionStartEvent(),
    EventType.SESSION_END: lambda p, _: SessionEndEvent(session_length_ms=63_000),
    EventType.CUSTOM_EVENT: lambda p, _: CustomEvent(
        name="Viewed Article",
        custom_event_type="navigation",
        attributes={"article_id": "A-1029", "section": "outdoors"},
        custom_flags={"verify.flag": "true"},
    ),
    EventType.SCREEN_VIEW: lambda p, _: ScreenViewEvent(
        screen_name="Product Detail", attributes={"product_id": "SKU-42"}
    ),
    EventType.ERROR: lambda p, _: ErrorEvent(
        message="NullPointerException in CartView",
        is_crash=False,
        stack_trace=(
            "java.lang.NullPointerException\n\tat com.example.CartView.render(CartView.java:42)"
        ),
        breadcrumbs=["Opened cart", "Tapped checkout"],
        attributes={"screen": "cart"},
    ),
    EventType.PRIVACY_SETTING_CHANGE: lambda p, _: PrivacySettingChangeEvent(
        setting="app_data_collection", is_enabled=True
    ),
    EventType.USER_ATTRIBUTE_CHANGE: lambda p, _: UserAttributeChangeEvent(
        added={"plan": "premium", "$City": "Boston"}, removed={"trial": "true"}
    ),
    EventType.USER_IDENTITY_CHANGE: lambda p, _: UserIdentityChangeEvent(
        added=_user_identities(p)[:1], removed=[]
    ),
    EventType.PUSH_SUBSCRIPTION: lambda p, _: PushSubscriptionEvent(
        action="subscribe", token=_DEVICE_IDENTITIES["apple_push_notification_token"]
    ),
    EventType.APPLICATION_STATE_TRANSITION: lambda p, _: ApplicationStateTransitionEvent(
        application_state="foreground", launch_referral="https://example.com/promo"
    ),
    EventType.PUSH_MESSAGE_RECEIPT: lambda p, provider: PushMessageReceiptEvent(
        payload=_push_payload(provider)
    ),
    EventType.PUSH_MESSAGE_OPEN: lambda p, provider: PushMessageOpenEvent(
        payload=_push_payload(provider)
    ),
    EventType.PRODUCT_ACTION: lambda p, _: ProductActionEvent(
        action="purchase",
        transaction_id="T-100045",
        affiliation="Acme Online",
        total_amount=Decimal("64.47"),
        tax_amount=Decimal("4.48"),
        shipping_amount=Decimal("5.00"),
        currency_code="USD",
        coupon_code="SPRING10",
        products=[
            _product("SKU-42", "Trail Bottle", "18.33", "3"),
            _product("SKU-7", "Cap", "0.00", "1"),
        ],
        attributes={"checkout_step": "3"},
    ),
    EventType.PROMOTION_ACTION: lambda p, _: PromotionActionEvent(
        action="view",
        promotions=[
            Promotion(id="PROMO-1", name="Spring sale", creative="banner-a", position="top")
        ],
    ),
    EventType.IMPRESSION: lambda p, _: ImpressionEvent(
        impressions=[
            Impression(
                impression_list_name="Search results",
                products=[_product("SKU-42", "Trail Bottle", "18.33", "1")],
            )
        ]
    ),
    EventType.ATTRIBUTION: lambda p, _: AttributionEvent(
        name="install",
        partner_name="Acme Ads",
        publisher_name="Example Network",
        campaign_name="spring-2024",
        attributes={"ad_group": "outdoors"},
    ),
}


def _notifications(kinds: Sequence[str], now_ms: int) -> list[SystemNotification]:
    found: list[SystemNotification] = []
    for kind in kinds:
        if kind == "gdpr_consent_state":
            found.append(
                GDPRConsentStateNotification(
                    purpose="marketing",
                    old_gdpr_consent_state=GDPRConsent(
                        consented=False, timestamp_unixtime_ms=now_ms - 86_400_000
                    ),
                    new_gdpr_consent_state=GDPRConsent(
                        consented=True,
                        document="privacy_policy_v2",
                        timestamp_unixtime_ms=now_ms - 30_000,
                        location="example.com/privacy",
                        hardware_id="verify-hw-1",
                    ),
                )
            )
        elif kind == "ccpa_consent_state":
            found.append(
                CCPAConsentStateNotification(
                    old_ccpa_consent_state=CCPAConsent(
                        consented=False, timestamp_unixtime_ms=now_ms - 86_400_000
                    ),
                    new_ccpa_consent_state=CCPAConsent(
                        consented=True,
                        document="ccpa_notice_v1",
                        timestamp_unixtime_ms=now_ms - 30_000,
                    ),
                )
            )
    return found


def event_processing_request(
    registration: ModuleRegistrationResponse,
    *,
    runtime: str | None = None,
    events: Sequence[BaseEvent] | None = None,
) -> EventProcessingRequest:
    """An event processing request as the platform would send it to this module.

    ``events``: by default one of every registered type (:func:`sample_events`); ``[]`` for
    the verification request. ``runtime``: the runtime environment (default: the first
    registered one). Only
    the fields the permissions unlock are set, with the registered identity types and
    encodings, and account settings for every account and connection setting.
    """
    events_reg = registration.event_processing_registration or EventProcessingRegistration()
    permissions = registration.permissions or Permissions()
    now = _now_ms()
    chosen = sample_events(registration, now) if events is None else list(events)
    runtimes = events_reg.supported_runtime_environments
    runtime = runtime or (runtimes[0] if runtimes else RuntimeEnvironmentType.UNKNOWN.value)
    settings = [*events_reg.account_settings, *events_reg.event_connection_settings]
    request = EventProcessingRequest(
        account=_account(settings),
        partner_identities=_partner_identities(permissions),
        user_identities=_user_identities(permissions),
        runtime_environment=cast("RuntimeEnvironment", _runtime_environment(runtime, permissions)),
        events=cast("list[Event]", chosen),
        source_channel="javascript" if runtime == "mobileweb" else "native",
        system_notifications=_notifications(events_reg.supported_system_notification_types, now),
    )
    extra: dict[str, Any] = {}
    if permissions.allow_user_attributes:
        extra["user_attributes"] = {"$FirstName": "Ada", "$City": "Boston", "plan": "premium"}
        extra["user_attribute_lists"] = {"interests": ["hiking", "cycling"]}
    if permissions.allow_access_device_application_stamp:
        extra["device_application_stamp"] = "6b3e1c42-5f0d-4a7e-9a8b-2c1d0e9f8a7b"
    if permissions.allow_consent_state:
        extra["consent_state"] = ConsentState(
            gdpr_consent_state={
                "marketing": GDPRConsent(
                    consented=True, document="privacy_policy_v2", timestamp_unixtime_ms=now - 30_000
                )
            },
            ccpa_consent_state={
                "data_sale_opt_out": CCPAConsent(
                    consented=False, timestamp_unixtime_ms=now - 30_000
                )
            },
        )
    if permissions.allow_access_mpid:
        extra["mpid"] = "-5227515829034156637"
    if permissions.allow_platform_fields:
        extra["platform_fields"] = PlatformFields(
            mp_account_id=VERIFY_ACCOUNT_ID,
            mp_account_name="Verify Inc.",
            workspace_id=7,
            workspace_name="Production",
            input_name="iOS",
            app_name="Patchbay Verify",
            app_version="4.2.0",
        )
    return msgspec.structs.replace(request, **extra) if extra else request


def _subscription_values(registration: ModuleRegistrationResponse) -> dict[str, str]:
    audience = registration.audience_processing_registration
    if audience is None:
        return {}
    visible = [s for s in audience.audience_subscription_settings if s.visible]
    return {k: v for k, v in account_settings_for(visible).items() if v is not None}


def audience_subscription_request(
    registration: ModuleRegistrationResponse,
    action: str = "add",
    previous: Mapping[str, str] | None = None,
) -> AudienceSubscriptionRequest:
    """A customer connects (``add``), changes (``update``) or removes (``remove``) an
    audience. The customer-entered values are those of the visible subscription settings;
    ``previous`` adds the partner's returned settings (sent back on later requests)."""
    audience = registration.audience_processing_registration
    values = {**_subscription_values(registration), **(previous or {})}
    return AudienceSubscriptionRequest(
        account=_account(audience.account_settings if audience else []),
        audience_id=_AUDIENCE_ID,
        audience_name=_AUDIENCE_NAME,
        audience_description="Users with three or more purchases in 30 days",
        audience_subscription_settings=values,
        previous_audience_subscription_settings=dict(values) if action == "update" else {},
        action=action,
    )


def audience_membership_change_request(
    registration: ModuleRegistrationResponse,
    action: str | None,
    returned: Mapping[str, str] | None = None,
) -> AudienceMembershipChangeRequest:
    """Users added to (``add``), removed from (``delete``) or with changed attributes in
    (``attribute_update``) the verification audience; ``action=None`` is the periodic
    verification request (no ``user_profiles``)."""
    audience = registration.audience_processing_registration
    account = _account(audience.account_settings if audience else [])
    if action is None:
        return AudienceMembershipChangeRequest(account=account)
    permissions = registration.permissions or Permissions()
    attributes: list[UserAttributeAudienceEvent] = []
    if permissions.allow_audience_user_attributes:
        attributes = [
            UserAttributeAudienceEvent(key="plan", value="premium", action="upsert"),
            UserAttributeAudienceEvent(
                key="interests", list_value=["hiking", "cycling"], action="upsert"
            ),
        ]
        if action == "attribute_update":
            attributes.append(UserAttributeAudienceEvent(key="trial", action="delete"))
    profile = UserProfile(
        user_identities=_user_identities(permissions),
        device_identities=_device_identities(permissions),
        partner_identities=_partner_identities(permissions),
        audiences=[
            Audience(
                audience_id=_AUDIENCE_ID,
                audience_name=_AUDIENCE_NAME,
                audience_subscription_settings={
                    **_subscription_values(registration),
                    **(returned or {}),
                },
                action=action,
                user_attributes=attributes if action != "delete" else [],
            )
        ],
        mpid="-5227515829034156637" if permissions.allow_access_mpid else None,
    )
    return AudienceMembershipChangeRequest(account=account, user_profiles=[profile])


def dsr_processing_request(registration: ModuleRegistrationResponse) -> DsrProcessingRequest:
    """A GDPR erasure request for the verification user."""
    dsr = registration.dsr_processing_registration
    return DsrProcessingRequest(
        account=_account(dsr.account_settings if dsr else []),
        subject_request_id=str(uuid.uuid4()),
        subject_request_type="erasure",
        submitted_time=datetime.now(UTC).replace(microsecond=0),
        subject_identities={
            "email": OpenDsrIdentity(encoding="raw", value=_USER_IDENTITIES["email"]),
            "controller_customer_id": OpenDsrIdentity(
                encoding="raw", value=_USER_IDENTITIES["customer"]
            ),
        },
        api_version="3.0",
        regulation="gdpr",
    )
