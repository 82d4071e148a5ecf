"""Runtime environments: the device and app an event batch came from, tagged on ``type``.

Every kind shares the :class:`BaseRuntimeEnvironment` fields. Integer fields are Java
``int``/``long``: they default to 0 and are always written. Booleans other than ``is_debug``
are nullable and written only when set. Device fields need the ``allow_device_info``
permission; device ``identities`` are sent regardless.
"""

from __future__ import annotations

from typing import Annotated

from patchbay.firehose._base import NON_DEFAULT, FirehoseStruct, Int32, Int64, one_of, struct_tag
from patchbay.firehose.enums import AttAuthorizationStatus, RuntimeEnvironmentType
from patchbay.firehose.identities import DeviceIdentity


class BaseRuntimeEnvironment(FirehoseStruct, tag_field="type"):
    """Fields common to every runtime environment."""

    is_debug: Annotated[bool, NON_DEFAULT] = False
    client_ip_address: str | None = None  # needs allow_access_ip_address
    sdk_version: str | None = None  # the client SDK's version; absent for server-to-server
    http_header_user_agent: str | None = None  # needs allow_access_http_user_agent
    identities: list[DeviceIdentity] = []

    @property
    def type(self) -> RuntimeEnvironmentType:
        """The ``type`` discriminator."""
        return RuntimeEnvironmentType(struct_tag(self))


class _DeviceBasics(BaseRuntimeEnvironment):
    """Device and app fields shared by the native runtimes (not ``mobileweb``)."""

    build_id: str | None = None
    brand: str | None = None
    product: str | None = None
    name: str | None = None
    manufacturer: str | None = None
    os_version: str | None = None
    model: str | None = None


class GenericRuntimeEnvironment(_DeviceBasics, tag="unknown"):
    """``unknown`` (also the base of ``smarttv`` and ``alexa``)."""

    screen_height: Int32 = 0
    screen_width: Int32 = 0
    screen_dpi: Int32 = 0
    country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    timezone_offset: Int32 = 0
    timezone_name: str | None = None
    is_tablet: bool | None = None
    supports_telephony: bool | None = None
    has_nfc: bool | None = None
    bluetooth_enabled: bool | None = None
    bluetooth_version: str | None = None
    application_name: str | None = None
    application_version: str | None = None
    application_package: str | None = None


class SmartTvRuntimeEnvironment(GenericRuntimeEnvironment, tag="smarttv"):
    """``smarttv``: generic fields. The Java SDK reads it as generic and rewrites it as
    ``unknown``; this model keeps ``smarttv``."""


class AlexaRuntimeEnvironment(GenericRuntimeEnvironment, tag="alexa"):
    """``alexa``: generic fields (same caveat as :class:`SmartTvRuntimeEnvironment`)."""


class AndroidRuntimeEnvironment(_DeviceBasics, tag="android"):
    """``android``."""

    screen_height: Int32 = 0
    screen_width: Int32 = 0
    screen_dpi: Int32 = 0
    country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    network_country: str | None = None
    network_carrier: str | None = None
    network_code: str | None = None
    network_mobile_country_code: str | None = None
    timezone_offset: Int32 = 0
    timezone_name: str | None = None
    is_tablet: bool | None = None
    supports_telephony: bool | None = None
    has_nfc: bool | None = None
    bluetooth_enabled: bool | None = None
    bluetooth_version: str | None = None
    android_sdk_level: Int32 = 0
    application_name: str | None = None
    application_version: str | None = None
    application_package: str | None = None
    install_referrer: str | None = None


class IosRuntimeEnvironment(_DeviceBasics, tag="ios"):
    """``ios``."""

    screen_height: Int32 = 0
    screen_width: Int32 = 0
    country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    network_country: str | None = None
    network_carrier: str | None = None
    network_code: str | None = None
    network_mobile_country_code: str | None = None
    timezone_offset: Int32 = 0
    timezone_name: str | None = None
    cpu_architecture: str | None = None
    is_tablet: bool | None = None
    radio_access_technology: str | None = None
    application_name: str | None = None
    application_version: str | None = None
    application_package: str | None = None
    is_sandboxed: bool | None = None
    apple_search_ads_attribution: dict[str, dict[str, str]] = {}
    att_authorization_status: Annotated[str, one_of(AttAuthorizationStatus)] | None = None
    att_timestamp_unixtime_ms: Int64 = 0


class TvosRuntimeEnvironment(_DeviceBasics, tag="tvos"):
    """``tvos``: the iOS fields without network, radio, tablet, sandbox and search ads."""

    screen_height: Int32 = 0
    screen_width: Int32 = 0
    country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    timezone_offset: Int32 = 0
    timezone_name: str | None = None
    cpu_architecture: str | None = None
    application_name: str | None = None
    application_version: str | None = None
    application_package: str | None = None
    att_authorization_status: Annotated[str, one_of(AttAuthorizationStatus)] | None = None
    att_timestamp_unixtime_ms: Int64 = 0


class RokuRuntimeEnvironment(_DeviceBasics, tag="roku"):
    """``roku`` (no screen fields)."""

    country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    timezone_offset: Int32 = 0
    timezone_name: str | None = None
    cpu_architecture: str | None = None
    application_name: str | None = None
    application_version: str | None = None
    application_package: str | None = None


class XboxRuntimeEnvironment(_DeviceBasics, tag="xbox"):
    """``xbox``: the Roku fields plus screen size."""

    screen_height: Int32 = 0
    screen_width: Int32 = 0
    country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    timezone_offset: Int32 = 0
    timezone_name: str | None = None
    cpu_architecture: str | None = None
    application_name: str | None = None
    application_version: str | None = None
    application_package: str | None = None


class FireTvRuntimeEnvironment(_DeviceBasics, tag="firetv"):
    """``firetv``: the Roku fields plus screen size."""

    screen_height: Int32 = 0
    screen_width: Int32 = 0
    country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    timezone_offset: Int32 = 0
    timezone_name: str | None = None
    cpu_architecture: str | None = None
    application_name: str | None = None
    application_version: str | None = None
    application_package: str | None = None


class WebRuntimeEnvironment(BaseRuntimeEnvironment, tag="mobileweb"):
    """``mobileweb``. Note the names ``device_manufacturer``, ``device_model`` and
    ``device_country``, and the string-typed ``limit_ad_tracking`` and ``is_dst``."""

    build_id: str | None = None
    brand: str | None = None
    product: str | None = None
    name: str | None = None
    device_manufacturer: str | None = None
    os_version: str | None = None
    device_model: str | None = None
    screen_height: Int32 = 0
    screen_width: Int32 = 0
    screen_dpi: Int32 = 0
    device_country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    network_country: str | None = None
    network_carrier: str | None = None
    network_code: str | None = None
    network_mobile_country_code: str | None = None
    timezone_offset: Int32 = 0
    push_token: str | None = None
    is_tablet: bool | None = None
    radio_access_technology: str | None = None
    limit_ad_tracking: str | None = None
    is_dst: str | None = None


#: Any runtime environment, chosen by its ``type``.
RuntimeEnvironment = (
    GenericRuntimeEnvironment
    | SmartTvRuntimeEnvironment
    | AlexaRuntimeEnvironment
    | AndroidRuntimeEnvironment
    | IosRuntimeEnvironment
    | TvosRuntimeEnvironment
    | RokuRuntimeEnvironment
    | XboxRuntimeEnvironment
    | FireTvRuntimeEnvironment
    | WebRuntimeEnvironment
)
