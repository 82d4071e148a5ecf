"""The batch: mParticle's unit of upload, the body of ``/v2/events`` and an item of a bulk.

A batch holds one user's events plus what is known about the user, the device and the app.
Every field is optional; types, enum values and numeric ranges are checked, unknown keys are
ignored here and kept in the stored bytes (real SDKs send keys no schema lists).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from patchbay.collect.events import Event, GeoLocation, Model
from patchbay.collect.fields import Int64, LooseBool, UserAttributeValue, parse_mpid

Environment = Literal["production", "development", "unknown"]

Channel = Literal[
    "native", "javascript", "pixel", "desktop", "partner", "server_to_server", "unknown", "All"
]

#: The user identity types of the inbound ``user_identities`` map.
USER_IDENTITY_TYPES: tuple[str, ...] = (
    "customer_id",
    "email",
    "other",
    "facebook",
    "twitter",
    "google",
    "microsoft",
    "yahoo",
    "alias",
    "facebook_custom_audience_id",
    "other_id_2",
    "other_id_3",
    "other_id_4",
    "other_id_5",
    "other_id_6",
    "other_id_7",
    "other_id_8",
    "other_id_9",
    "other_id_10",
    "mobile_number",
    "phone_number_2",
    "phone_number_3",
)


class DeviceInfo(Model):
    """The device: identifiers and properties."""

    brand: str | None = None
    product: str | None = None
    device: str | None = None
    android_uuid: str | None = None
    device_manufacturer: str | None = None
    platform: str | None = None
    os_version: str | None = None
    device_model: str | None = None
    screen_height: Int64 | None = None
    screen_width: Int64 | None = None
    screen_dpi: Int64 | None = None
    device_country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    network_country: str | None = None
    network_carrier: str | None = None
    network_code: str | None = None
    network_mobile_country_code: str | None = None
    timezone_offset: float | None = None
    build_identifier: str | None = None
    http_header_user_agent: str | None = None
    ios_advertising_id: str | None = None
    ios_idfv: str | None = None
    android_advertising_id: str | None = None
    roku_advertising_id: str | None = None
    roku_publisher_id: str | None = None
    fire_advertising_id: str | None = None
    microsoft_advertising_id: str | None = None
    microsoft_publisher_id: str | None = None
    amp_id: str | None = None
    push_token: str | None = None
    cpu_architecture: str | None = None
    is_tablet: LooseBool | None = None
    push_notification_sound_enabled: LooseBool | None = None
    push_notification_vibrate_enabled: LooseBool | None = None
    radio_access_technology: str | None = None
    supports_telephony: LooseBool | None = None
    has_nfc: LooseBool | None = None
    bluetooth_enabled: LooseBool | None = None
    bluetooth_version: str | None = None
    att_authorization_status: (
        Literal["authorized", "denied", "not_determined", "restricted"] | None
    ) = None
    att_timestamp_unixtime_ms: Int64 | None = None
    build_version_release: str | None = None
    limit_ad_tracking: LooseBool | None = None
    is_dst: LooseBool | None = None


class ApplicationInfo(Model):
    """The app that sent the data."""

    application_name: str | None = None
    application_version: str | None = None
    application_build_number: str | None = None
    install_referrer: str | None = None
    package: str | None = None
    os: str | None = None
    apple_search_ads_attributes: dict[str, dict[str, str | None]] | None = None
    sideloaded_kits_count: Int64 | None = None


class UserIdentities(Model):
    """The user's identities, one value per identity type.

    The official Python and Node SDKs send ``customerid``; :attr:`customer` merges it with
    ``customer_id``.
    """

    customer_id: str | None = None
    customerid: str | None = None
    email: str | None = None
    other: str | None = None
    facebook: str | None = None
    twitter: str | None = None
    google: str | None = None
    microsoft: str | None = None
    yahoo: str | None = None
    alias: str | None = None
    facebook_custom_audience_id: str | None = None
    other_id_2: str | None = None
    other_id_3: str | None = None
    other_id_4: str | None = None
    other_id_5: str | None = None
    other_id_6: str | None = None
    other_id_7: str | None = None
    other_id_8: str | None = None
    other_id_9: str | None = None
    other_id_10: str | None = None
    mobile_number: str | None = None
    phone_number_2: str | None = None
    phone_number_3: str | None = None

    def identities(self) -> dict[str, str]:
        """The identities as ``{type: value}``, ``customerid`` read as ``customer_id``."""
        found = {t: v for t in USER_IDENTITY_TYPES if (v := getattr(self, t)) is not None}
        if "customer_id" not in found and self.customerid is not None:
            found["customer_id"] = self.customerid
        return found


class ConsentPurpose(Model):
    """The consent given or refused for one purpose."""

    consented: LooseBool | None = None
    document: str | None = None
    timestamp_unixtime_ms: Int64 | None = None
    location: str | None = None
    hardware_id: str | None = None
    regulation: str | None = None
    purpose: str | None = None


class ConsentState(Model):
    """GDPR consent per purpose and the CCPA data sale opt-out."""

    gdpr: dict[str, ConsentPurpose | None] | None = None
    ccpa: dict[str, ConsentPurpose | None] | None = None


class DataPlan(Model):
    """The data plan a batch claims to follow."""

    plan_id: str | None = None
    plan_version: Int64 | None = None


class BatchContext(Model):
    """The batch's context: its data plan and location."""

    data_plan: DataPlan | None = None
    location: GeoLocation | None = None


class SourceInfo(Model):
    """Where the batch came from (set by the server; clients need not send it)."""

    channel: Channel | None = None
    partner: str | None = None
    replay_request_id: str | None = None
    replay_job_id: str | None = None
    is_historical: LooseBool | None = None


class AttributionInfo(Model):
    """The install attribution of the user."""

    service_provider: str | None = None
    publisher: str | None = None
    campaign: str | None = None


class Batch(Model):
    """One user's data: the body of ``POST /v2/events``."""

    events: list[Event] | None = None
    source_request_id: str | None = None
    environment: Environment | None = None
    ip: str | None = None
    schema_version: Int64 | None = None
    device_info: DeviceInfo | None = None
    application_info: ApplicationInfo | None = None
    user_attributes: dict[str, UserAttributeValue] | None = None
    deleted_user_attributes: list[str] | None = None
    user_identities: UserIdentities | None = None
    partner_identities: dict[str, str | None] | None = None
    integration_attributes: dict[str, dict[str, str | None] | None] | None = None
    consent_state: ConsentState | None = None
    context: BatchContext | None = None
    mpid: Int64 | str | None = None
    mp_deviceid: str | None = None
    api_key: str | None = None
    api_keys: list[str] | None = None
    partner_identity: str | None = None
    source_info: SourceInfo | None = None
    attribution_info: AttributionInfo | None = None
    timestamp_unixtime_ms: Int64 | None = None
    batch_id: Int64 | str | None = None
    origin_mpid: Int64 | None = None
    sdk_version: str | None = None
    job_id: str | None = None
    modified: bool | None = None

    @property
    def user_id(self) -> int | None:
        """The batch's ``mpid`` as an integer (it may be sent as a string)."""
        return None if self.mpid is None else parse_mpid(self.mpid)

    @property
    def event_count(self) -> int:
        """How many events the batch carries."""
        return len(self.events) if self.events else 0


#: The body of ``POST /v2/bulkevents``: each item is decoded on its own, so that one bad
#: batch does not reject the others.
BulkBody = list[msgspec.Raw]
