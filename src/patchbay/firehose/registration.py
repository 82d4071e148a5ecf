"""The parts of a module registration response: permissions and the per-kind registrations
(event, audience and DSR processing)."""

from __future__ import annotations

from typing import Annotated

from patchbay.firehose._base import NON_DEFAULT, FirehoseStruct, Int32, one_of
from patchbay.firehose.auth import Authentication
from patchbay.firehose.enums import (
    DeviceIdentityType,
    DsrType,
    EventType,
    IdentityEncoding,
    RuntimeEnvironmentType,
    SystemNotificationType,
    UserIdentityType,
)
from patchbay.firehose.settings import Setting

EncodingField = Annotated[str, one_of(IdentityEncoding)]


class UserIdentityPermission(FirehoseStruct):
    """A user identity type the partner receives, in ``encoding``.

    If any identity permission is ``required``, only users with at least one of the required
    identities are sent.
    """

    type: Annotated[str, one_of(UserIdentityType)]
    encoding: EncodingField
    required: bool = False


class DeviceIdentityPermission(FirehoseStruct):
    """A device identity type the partner receives, in ``encoding``."""

    type: Annotated[str, one_of(DeviceIdentityType)]
    encoding: EncodingField
    required: bool = False


class PartnerIdentityPermission(FirehoseStruct):
    """The partner identity type the partner receives (only one may be registered)."""

    type: str
    encoding: EncodingField
    required: bool = False


class Permissions(FirehoseStruct):
    """What the partner may receive. The ``allow_*`` flags are left out of the JSON when
    false; each unlocks the request fields named in its comment."""

    device_identities: list[DeviceIdentityPermission] = []
    user_identities: list[UserIdentityPermission] = []
    partner_identities: list[PartnerIdentityPermission] = []
    # events[].location
    allow_access_location: Annotated[bool, NON_DEFAULT] = False
    # runtime_environment.client_ip_address
    allow_access_ip_address: Annotated[bool, NON_DEFAULT] = False
    # device_application_stamp
    allow_access_device_application_stamp: Annotated[bool, NON_DEFAULT] = False
    # the device fields of runtime_environment (device identities are sent regardless)
    allow_device_info: Annotated[bool, NON_DEFAULT] = False
    # user_attributes, user_attribute_lists and user_attribute_change events
    allow_user_attributes: Annotated[bool, NON_DEFAULT] = False
    # consent_state
    allow_consent_state: Annotated[bool, NON_DEFAULT] = False
    # audiences[].user_attributes of audience membership changes
    allow_audience_user_attributes: Annotated[bool, NON_DEFAULT] = False
    # runtime_environment.http_header_user_agent
    allow_access_http_user_agent: Annotated[bool, NON_DEFAULT] = False
    # mpid of event requests and user profiles
    allow_access_mpid: Annotated[bool, NON_DEFAULT] = False
    # platform_fields (SDK 3.2.0)
    allow_platform_fields: Annotated[bool, NON_DEFAULT] = False
    # batches left without events are still sent (SDK 3.2.0)
    allow_eventless_batches: Annotated[bool, NON_DEFAULT] = False


class EventProcessingRegistration(FirehoseStruct):
    """Event processing: settings, and which events, runtimes and notifications to send.

    ``max_data_age_hours`` (-1 = all data) is always written. ``push_messaging_provider_id``
    is required with ``push_message_receipt``: only receipts whose payload has that key are
    forwarded.
    """

    account_settings: list[Setting] = []
    event_connection_settings: list[Setting] = []
    supported_event_types: list[Annotated[str, one_of(EventType)]] = []
    supported_runtime_environments: list[Annotated[str, one_of(RuntimeEnvironmentType)]] = []
    supported_system_notification_types: list[Annotated[str, one_of(SystemNotificationType)]] = []
    max_data_age_hours: Int32 = 24
    push_messaging_provider_id: str | None = None
    authentication: Authentication | None = None


class BulkConfiguration(FirehoseStruct):
    """Bulk forwarding of audience messages (SDK 3.0.0): presumably the platform holds
    messages until this many accumulate or this many minutes pass."""

    bulk_forward_wait_for_messages: Int32 | None = None
    bulk_forward_wait_in_minutes: Int32 | None = None


class AudienceProcessingRegistration(FirehoseStruct):
    """Audience processing: account settings and per-audience subscription settings."""

    account_settings: list[Setting] = []
    authentication: Authentication | None = None
    bulk_configuration: BulkConfiguration | None = None
    audience_subscription_settings: list[Setting] = []


class DsrProcessingRegistration(FirehoseStruct):
    """Data subject request processing (SDK 2.9.0). ``domain`` is "the domain for request
    callbacks"; the callback flow is undocumented."""

    account_settings: list[Setting] = []
    supported_dsr_types: list[Annotated[str, one_of(DsrType)]] = []
    domain: str | None = None
