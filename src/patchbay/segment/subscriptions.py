"""The ``audience_subscription_request`` an output receives when an audience is connected to
it (``add``), changed while connected (``update``: new settings, a new name or description)
or removed from it (``remove``), as a :class:`~patchbay.backends.records.Delivery` for the
outbox.

The request carries the output's ``account`` as event requests do (the output's account
setting values, ``account_id`` 0), the audience's id, name and description, and the
connection's ``audience_subscription_settings``: the values the customer gave, checked
against the module's ``audience_processing_registration.audience_subscription_settings``,
with the registered defaults of those not given (as connection settings are filled), and
only the registered ones. What the partner answered to the subscription
(``partner_settings``) is laid over them, as in membership changes, so that ``update`` and
``remove`` name what the partner made of the audience (a list id, say). ``update`` also
carries the settings it replaces (``previous``, the partner's answer laid over them too).

Each request gets a fresh random id, used as the Firehose ``id`` and as the delivery's id:
a subscription change happens once, so there is nothing to de-duplicate, and a retry of the
delivery sends the same id again.
"""

from __future__ import annotations

import uuid
from typing import Literal

from patchbay.activate.outputs import output_account, validate_settings
from patchbay.backends.records import AudienceConnection, AudienceRecord, Delivery, Output
from patchbay.firehose import (
    FIREHOSE_VERSION,
    AudienceSubscriptionRequest,
    ModuleRegistrationResponse,
    SettingError,
    dumps,
)
from patchbay.firehose.settings import Setting

#: What happened to the connection.
SubscriptionAction = Literal["add", "update", "remove"]


def connection_id_of(audience_id: int) -> str:
    """The ``connection_id`` of an audience's deliveries in the outbox."""
    return f"audience:{audience_id}"


def subscription_settings_of(registration: ModuleRegistrationResponse) -> list[Setting]:
    """The audience subscription settings a module declares (none without audience
    processing)."""
    audiences = registration.audience_processing_registration
    return list(audiences.audience_subscription_settings) if audiences else []


def subscription_values(
    registration: ModuleRegistrationResponse, settings: dict[str, str]
) -> dict[str, str]:
    """``settings`` limited to the registered subscription settings, with the registered
    defaults of those missing (what the partner receives)."""
    declared = subscription_settings_of(registration)
    known = {s.id for s in declared}
    given = {k: v for k, v in settings.items() if k in known}
    try:
        return validate_settings(declared, given, "audience subscription")
    except SettingError:
        # the module registered again with a setting the connection lacks: send what it has
        return given


def subscription_request(
    output: Output,
    registration: ModuleRegistrationResponse,
    audience: AudienceRecord,
    connection: AudienceConnection,
    action: SubscriptionAction,
    previous: dict[str, str] | None = None,
    *,
    now_ms: int,
) -> Delivery:
    """The delivery of the ``action`` subscription request of ``audience`` on ``output``
    (``previous``: the settings an ``update`` replaces)."""
    message_id = uuid.uuid4()
    partner = connection.partner_settings
    request = AudienceSubscriptionRequest(
        id=message_id,
        timestamp_ms=now_ms,
        firehose_version=registration.sdk_version or FIREHOSE_VERSION,
        account=output_account(output),
        audience_id=audience.id,
        audience_name=audience.name,
        audience_description=audience.description or None,
        audience_subscription_settings=subscription_values(
            registration, {**connection.settings, **partner}
        ),
        previous_audience_subscription_settings=(
            subscription_values(registration, {**previous, **partner})
            if action == "update" and previous is not None
            else {}
        ),
        action=action,
    )
    return Delivery(
        id=str(message_id),
        output=output.name,
        connection_id=connection_id_of(audience.id),
        batch_offset=0,
        payload=dumps(request),
        created_at_ms=now_ms,
        since_ms=now_ms,
        next_attempt_ms=now_ms,
    )
