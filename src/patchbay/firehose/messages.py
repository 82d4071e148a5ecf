"""The ten message types, tagged on ``type``, and the :data:`Message` union.

Requests go from the platform to the partner, responses back. A new message gets a random
``id``, the current ``timestamp_ms`` and ``firehose_version`` 3.2.0, like the Java SDK; a
response does not echo its request's id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from patchbay.firehose._base import (
    KEEP_EMPTY,
    NON_DEFAULT,
    FirehoseStruct,
    Int32,
    Int64,
    now_ms,
    one_of,
    struct_tag,
)
from patchbay.firehose.account import Account, PlatformFields
from patchbay.firehose.audience import UserProfile
from patchbay.firehose.consent import ConsentState, SystemNotification
from patchbay.firehose.dsr import OpenDsrIdentity, OpenDsrIdentityKey
from patchbay.firehose.enums import (
    FIREHOSE_VERSION,
    AudienceSubscriptionAction,
    DsrType,
    MessageType,
    RegulationType,
)
from patchbay.firehose.environment import RuntimeEnvironment
from patchbay.firehose.events import Event
from patchbay.firehose.identities import PartnerIdentity, UserIdentity
from patchbay.firehose.registration import (
    AudienceProcessingRegistration,
    DsrProcessingRegistration,
    EventProcessingRegistration,
    Permissions,
)


class BaseMessage(FirehoseStruct, tag_field="type"):
    """The envelope every message has. ``firehose_version`` is the sender's SDK version; when
    absent on input, 3.2.0 is assumed."""

    id: uuid.UUID = msgspec.field(default_factory=uuid.uuid4)
    timestamp_ms: Int64 = msgspec.field(default_factory=now_ms)
    firehose_version: str = FIREHOSE_VERSION

    @property
    def type(self) -> MessageType:
        """The ``type`` discriminator."""
        return MessageType(struct_tag(self))


class ModuleRegistrationRequest(BaseMessage, tag="module_registration_request"):
    """Asks the partner to describe itself. Must be answered without authentication."""


class ModuleRegistrationResponse(BaseMessage, tag="module_registration_response"):
    """The partner's registration. ``name`` and ``version`` are required by the docs;
    ``description`` may hold inline HTML and must stay under 230 characters."""

    sdk_version: str = FIREHOSE_VERSION
    name: str | None = None
    description: str | None = None
    version: str | None = None
    permissions: Permissions | None = None
    event_processing_registration: EventProcessingRegistration | None = None
    audience_processing_registration: AudienceProcessingRegistration | None = None
    dsr_processing_registration: DsrProcessingRegistration | None = None


class EventProcessingRequest(BaseMessage, tag="event_processing_request"):
    """One batch: one user on one device or app, with its events.

    ``events`` is always written, as ``[]`` when empty (Java partners fail on a missing
    ``events``). A request with no events is a verification request (or, with
    ``allow_eventless_batches``, an eventless batch). Most other fields need a permission;
    see :class:`~.registration.Permissions`.
    """

    source_id: str | None = None
    account: Account | None = None
    partner_identities: list[PartnerIdentity] = []
    user_identities: list[UserIdentity] = []
    user_attributes: dict[str, str] = {}
    user_attribute_lists: dict[str, list[str]] = {}
    runtime_environment: RuntimeEnvironment | None = None
    integration_attributes: dict[str, str] = {}
    events: Annotated[list[Event], KEEP_EMPTY] = []
    source_channel: str | None = None  # see enums.ChannelSourceType; not checked
    device_application_stamp: str | None = None
    consent_state: ConsentState | None = None
    system_notifications: list[SystemNotification] = []
    mpid: str | None = None
    platform_fields: PlatformFields | None = None


class EventProcessingResponse(BaseMessage, tag="event_processing_response"):
    """The answer to an event processing request. ``suspend_subscription`` is written only
    when true (what the platform does with it is undocumented)."""

    suspend_subscription: Annotated[bool, NON_DEFAULT] = False


class AudienceSubscriptionRequest(BaseMessage, tag="audience_subscription_request"):
    """A customer connected (``add``), changed (``update``) or removed (``remove``) an
    audience connection. ``previous_audience_subscription_settings`` comes with ``update``."""

    account: Account | None = None
    audience_id: Int32 = 0
    audience_name: str | None = None
    audience_description: str | None = None
    audience_subscription_settings: dict[str, str] = {}
    previous_audience_subscription_settings: dict[str, str] = {}
    action: Annotated[str, one_of(AudienceSubscriptionAction)] | None = None


class AudienceSubscriptionResponse(BaseMessage, tag="audience_subscription_response"):
    """Settings the partner wants stored with the subscription and sent back in later
    membership changes; each key must be a registered audience subscription setting."""

    audience_subscription_settings: dict[str, str] = {}


class AudienceMembershipChangeRequest(BaseMessage, tag="audience_membership_change_request"):
    """Users added to or removed from audiences.

    ``user_profiles`` is ``None`` in the platform's periodic verification requests, which
    must be answered with a plain response; an empty list is written as ``[]``.
    """

    account: Account | None = None
    user_profiles: Annotated[list[UserProfile] | None, KEEP_EMPTY] = None


class AudienceMembershipChangeResponse(BaseMessage, tag="audience_membership_change_response"):
    """The answer to a membership change. ``suspend_subscription`` is always written."""

    suspend_subscription: bool = False


class DsrProcessingRequest(BaseMessage, tag="dsr_processing_request"):
    """A data subject request (erasure).

    ``submitted_time`` is read from an ISO-8601 string (the platform's form) or epoch
    seconds (the Java SDK's form) and written as epoch seconds with nine decimals.
    """

    account: Account | None = None
    subject_request_id: str | None = None
    subject_request_type: Annotated[str, one_of(DsrType)] | None = None
    submitted_time: datetime | None = None
    subject_identities: dict[OpenDsrIdentityKey, OpenDsrIdentity] = {}
    api_version: str | None = None
    regulation: Annotated[str, one_of(RegulationType)] | None = None


class DsrProcessingResponse(BaseMessage, tag="dsr_processing_response"):
    """The answer to a data subject request (envelope only)."""


#: Any message, chosen by its ``type``: what :func:`~.serialize.parse` returns.
Message = (
    ModuleRegistrationRequest
    | ModuleRegistrationResponse
    | EventProcessingRequest
    | EventProcessingResponse
    | AudienceSubscriptionRequest
    | AudienceSubscriptionResponse
    | AudienceMembershipChangeRequest
    | AudienceMembershipChangeResponse
    | DsrProcessingRequest
    | DsrProcessingResponse
)
