"""The checks of :func:`verify`, in order (see :mod:`patchbay.partner.verify`)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from ipaddress import ip_address
from typing import Final
from urllib.parse import urlsplit

from patchbay.activate.targets import TargetPolicy
from patchbay.firehose import (
    AudienceSubscriptionResponse,
    BaseEvent,
    BaseMessage,
    ModuleRegistrationRequest,
    ModuleRegistrationResponse,
)
from patchbay.firehose._base import now_ms as _now_ms
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
from patchbay.partner.verify.report import CheckResult, Status, VerifyReport
from patchbay.partner.verify.samples import (
    AUDIENCE_ID,
    audience_membership_change_request,
    audience_subscription_request,
    dsr_processing_request,
    event_processing_request,
    sample_events,
)

#: Firehose over HTTPS: "under 100 ms".
HTTP_LATENCY_BUDGET_MS: Final = 100.0
#: Firehose over Lambda: "average under 200 ms for 99% of calls".
LAMBDA_LATENCY_BUDGET_MS: Final = 200.0
#: How many extra verification requests the ``latency`` check sends.
DEFAULT_LATENCY_SAMPLES: Final = 5

# --------------------------------------------------------------------------- running


async def verify(
    target: Target,
    *,
    timeouts: Timeouts | None = None,
    latency_budget_ms: float | None = None,
    latency_samples: int = DEFAULT_LATENCY_SAMPLES,
    policy: TargetPolicy | None = None,
) -> VerifyReport:
    """Run every check against the partner at ``target`` (see the module doc).

    ``latency_budget_ms`` defaults to 100 ms over HTTP and 200 ms over Lambda. ``policy``:
    where the checks may connect (:mod:`patchbay.activate.targets`).
    """
    async with open_transport(target, timeouts=timeouts, policy=policy) as transport:
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
                f"audience {AUDIENCE_ID} added",
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
                f"audience {AUDIENCE_ID} removed",
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
    """Findings about one well-typed answer: its status and envelope."""
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
