"""Builders for the translation tests: resolved batches and registrations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from patchbay.backends.records import StoredBatch
from patchbay.collect.decode import decode_batch
from patchbay.firehose import (
    DeviceIdentityPermission,
    EventProcessingRegistration,
    ModuleRegistrationResponse,
    PartnerIdentityPermission,
    Permissions,
    UserIdentityPermission,
)
from patchbay.firehose.enums import (
    DeviceIdentityType,
    EventType,
    RuntimeEnvironmentType,
    SystemNotificationType,
    UserIdentityType,
)
from patchbay.resolve.profile import new_profile
from patchbay.resolve.stage import ResolvedBatch

DATA = Path(__file__).parent.parent / "data" / "activate"

#: When the test batches were received (after every event of the official sample).
RECEIVED_MS = 1_558_388_290_000

ALLOW_FLAGS = tuple(name for name in Permissions.__struct_fields__ if name.startswith("allow_"))


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def resolved(
    body: dict[str, Any] | bytes,
    *,
    batch_id: str = "5f0e2d1c-0000-4000-8000-000000000001",
    channel: str = "server_to_server",
    historical: bool = False,
    received_at_ms: int = RECEIVED_MS,
    ip: str | None = None,
    mpid: int | None = None,
) -> ResolvedBatch:
    """A resolved batch for ``body``: stored, decoded, resolved to ``mpid`` (default: the
    batch's own ``mpid``, else 42) with a fresh profile."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    batch = decode_batch(raw)
    stored = StoredBatch(
        offset=1,
        batch_id=batch_id,
        input_id="input-1",
        received_at_ms=received_at_ms,
        channel=channel,
        body=raw,
        ip=ip if ip is not None else batch.ip,
        historical=historical,
    )
    user = mpid if mpid is not None else (batch.user_id or 42)
    return ResolvedBatch(stored, batch, user, new_profile(user, received_at_ms))


def registration(
    *,
    events: list[str] | None = None,
    runtimes: list[str] | None = None,
    user: list[UserIdentityPermission] | None = None,
    device: list[DeviceIdentityPermission] | None = None,
    partner: list[PartnerIdentityPermission] | None = None,
    allow: bool | dict[str, bool] = True,
    max_age_hours: int = -1,
    push_provider: str | None = None,
    sdk_version: str = "3.2.0",
) -> ModuleRegistrationResponse:
    """A registration: by default the worked example's broad one (mapping §5)."""
    flags = (
        dict.fromkeys(ALLOW_FLAGS, allow)
        if isinstance(allow, bool)
        else {**dict.fromkeys(ALLOW_FLAGS, False), **allow}
    )
    return ModuleRegistrationResponse(
        sdk_version=sdk_version,
        name="Test Partner",
        version="1.0",
        permissions=Permissions(
            user_identities=user
            if user is not None
            else [UserIdentityPermission(type=t, encoding="raw") for t in UserIdentityType],
            device_identities=device
            if device is not None
            else [DeviceIdentityPermission(type=t, encoding="raw") for t in DeviceIdentityType],
            partner_identities=partner or [],
            **flags,
        ),
        event_processing_registration=EventProcessingRegistration(
            supported_event_types=events if events is not None else [t.value for t in EventType],
            supported_runtime_environments=runtimes
            if runtimes is not None
            else [t.value for t in RuntimeEnvironmentType],
            supported_system_notification_types=[t.value for t in SystemNotificationType],
            max_data_age_hours=max_age_hours,
            push_messaging_provider_id=push_provider,
        ),
    )
