"""The checks a platform runs against a partner before it lists the integration.

:func:`verify` registers the partner (without storing it), then sends it one request of
every kind it registered, built from its registration the way the platform would build it,
and checks each answer. Every check gives a :class:`CheckResult` (PASS, WARN, FAIL or SKIP,
with the latency and a precise detail); :class:`VerifyReport` collects them and renders the
JSON report. The request builders (:func:`event_processing_request`, ...) are plain
functions of a registration, so tests and the delivery engine can use them too.

Modules: :mod:`.checks` runs the checks, :mod:`.report` holds their results and renders
them (JSON, text table), :mod:`.samples` builds the requests from the values in
:mod:`.sample_data`.

The checks, in order:

* ``transport``: the endpoint is HTTPS (plain HTTP is a warning, for local tests).
* ``registration``, ``registration.settings``, ``registration.permissions``,
  ``registration.supported_types``: the registration answer, checked by
  :func:`patchbay.partner.registration.validate_registration`. It is sent without the token,
  as the platform does. When it fails, every later check is skipped.
* ``event_processing``: an ``event_processing_request`` carrying one event of every
  registered type, on the first registered runtime environment, with the fields the
  permissions unlock and the registered identity types; ``event_processing.runtimes``: one
  small request per other registered runtime environment; ``event_processing.verification``:
  the periodic verification request (``"events": []``).
* With audience processing: ``audience_subscription.add``, ``audience_membership_change.add``,
  ``.delete``, ``.attribute_update``, ``audience_membership_change.verification`` (no
  ``user_profiles``) and ``audience_subscription.remove``.
* With DSR processing: ``dsr_processing`` (an erasure request).
* ``latency``: the verification request sent ``samples`` more times.

Each answer must be the matching response type and carry an ``id`` (a UUID: the SDK gives
every response a fresh one; echoing the request's id is allowed by the older docs); a missing
``timestamp_ms`` or ``firehose_version`` is a warning. Returned audience
subscription settings must be registered ones. HTTP answers should be 200 or 202.

Latency: HTTP endpoints must answer in under 100 ms, Lambda functions in under
200 ms on average. One slow call is a warning on its check (a cold start or a first
connection is expected); the ``latency`` check fails when the median of the samples is over
the budget.
"""

from patchbay.partner.verify.checks import (
    DEFAULT_LATENCY_SAMPLES,
    HTTP_LATENCY_BUDGET_MS,
    LAMBDA_LATENCY_BUDGET_MS,
    check_answer,
    run_checks,
    verify,
)
from patchbay.partner.verify.report import CheckResult, Status, VerifyReport
from patchbay.partner.verify.samples import (
    VERIFY_ACCOUNT_ID,
    account_settings_for,
    audience_membership_change_request,
    audience_subscription_request,
    dsr_processing_request,
    event_processing_request,
    sample_events,
)

__all__ = [
    "DEFAULT_LATENCY_SAMPLES",
    "HTTP_LATENCY_BUDGET_MS",
    "LAMBDA_LATENCY_BUDGET_MS",
    "VERIFY_ACCOUNT_ID",
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
