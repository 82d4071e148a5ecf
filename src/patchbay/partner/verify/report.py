"""The result of a verification: one :class:`CheckResult` per check, collected in a
:class:`VerifyReport` that renders them as the JSON report (:meth:`VerifyReport.to_dict`) or
as text (:meth:`VerifyReport.to_text`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from patchbay import __version__


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

    def counts(self) -> dict[str, int]:
        """How many checks gave each result, by its name."""
        return {s.value: sum(1 for c in self.checks if c.status is s) for s in Status}

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (documented in docs/modules.md). Never contains the token."""
        return {
            "patchbay_version": __version__,
            "target": self.target,
            "transport": self.transport,
            "module": self.module,
            "started_at": _iso(self.started_at_ms),
            "finished_at": _iso(self.finished_at_ms or self.started_at_ms),
            "latency_budget_ms": self.latency_budget_ms,
            "result": self.result.value,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_text(self) -> list[str]:
        """The text report, as lines: the target, a table of the checks (result, latency,
        detail) and the counts."""
        rows = [
            (c.check, c.status.value, "-" if c.latency_ms is None else f"{c.latency_ms:.1f}")
            for c in self.checks
        ]
        width = max(len("CHECK"), *(len(check) for check, _, _ in rows))
        lines = [
            f"verifying {self.target}",
            f"{'CHECK':{width}}  RESULT  {'LATENCY MS':>10}  DETAIL",
        ]
        lines += [
            f"{check:{width}}  {status:6}  {latency:>10}  {c.detail}"
            for (check, status, latency), c in zip(rows, self.checks, strict=True)
        ]
        n = self.counts()
        lines.append(
            f"{self.result.value}: {n['PASS']} passed, {n['WARN']} warned,"
            f" {n['FAIL']} failed, {n['SKIP']} skipped"
        )
        return lines


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
