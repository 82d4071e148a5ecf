"""The ``runtime_environment`` of a request, from ``device_info``, ``application_info`` and
the batch's stamps.

The type comes from ``device_info.platform``, else ``application_info.os``, else
``unknown``. Each Firehose runtime class has its own set of fields; the candidate values are
built once under their Firehose names and each class keeps the ones it declares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from patchbay.activate.permissions import DEVICE_IDENTITY_TYPES, device_identities
from patchbay.collect.batch import Batch, DeviceInfo
from patchbay.collect.fields import LooseBool
from patchbay.firehose import (
    AlexaRuntimeEnvironment,
    AndroidRuntimeEnvironment,
    FireTvRuntimeEnvironment,
    GenericRuntimeEnvironment,
    IosRuntimeEnvironment,
    Permissions,
    RokuRuntimeEnvironment,
    RuntimeEnvironment,
    SmartTvRuntimeEnvironment,
    TvosRuntimeEnvironment,
    WebRuntimeEnvironment,
    XboxRuntimeEnvironment,
)
from patchbay.firehose.enums import DeviceIdentityType, RuntimeEnvironmentType

R = RuntimeEnvironmentType

_BY_PLATFORM: Final[Mapping[str, RuntimeEnvironmentType]] = {
    "ios": R.IOS,
    "android": R.ANDROID,
    "web": R.MOBILEWEB,
    "tvos": R.TVOS,
    "roku": R.ROKU,
    "fire_tv": R.FIRETV,
    "firetv": R.FIRETV,
    "xbox": R.XBOX,
    "alexa": R.ALEXA,
    "smart_tv": R.SMARTTV,
    "smarttv": R.SMARTTV,
}

_BY_OS: Final[Mapping[str, RuntimeEnvironmentType]] = {
    "ios": R.IOS,
    "unityios": R.IOS,
    "android": R.ANDROID,
    "unityandroid": R.ANDROID,
    "mobileweb": R.MOBILEWEB,
    "tvos": R.TVOS,
    "roku": R.ROKU,
    "firetv": R.FIRETV,
    "xbox": R.XBOX,
    "alexa": R.ALEXA,
    "smarttv": R.SMARTTV,
}

_CLASSES: Final[Mapping[RuntimeEnvironmentType, type[RuntimeEnvironment]]] = {
    R.UNKNOWN: GenericRuntimeEnvironment,
    R.SMARTTV: SmartTvRuntimeEnvironment,
    R.ALEXA: AlexaRuntimeEnvironment,
    R.ANDROID: AndroidRuntimeEnvironment,
    R.IOS: IosRuntimeEnvironment,
    R.TVOS: TvosRuntimeEnvironment,
    R.ROKU: RokuRuntimeEnvironment,
    R.XBOX: XboxRuntimeEnvironment,
    R.FIRETV: FireTvRuntimeEnvironment,
    R.MOBILEWEB: WebRuntimeEnvironment,
}

#: Where the push token goes, per runtime (``mobileweb`` has a ``push_token`` field instead).
_PUSH_TOKEN_TYPE: Final[Mapping[RuntimeEnvironmentType, DeviceIdentityType]] = {
    R.IOS: DeviceIdentityType.APPLE_PUSH_NOTIFICATION_TOKEN,
    R.TVOS: DeviceIdentityType.APPLE_PUSH_NOTIFICATION_TOKEN,
    R.ANDROID: DeviceIdentityType.GOOGLE_CLOUD_MESSAGING_TOKEN,
    R.FIRETV: DeviceIdentityType.GOOGLE_CLOUD_MESSAGING_TOKEN,
}

#: The web runtime's names for three native fields.
_WEB_NAMES: Final = {
    "manufacturer": "device_manufacturer",
    "model": "device_model",
    "country": "device_country",
}

_INT32: Final = (-(2**31), 2**31 - 1)
_INT64: Final = (-(2**63), 2**63 - 1)


def runtime_type(batch: Batch) -> RuntimeEnvironmentType:
    """The Firehose runtime type of a batch (``unknown`` when nothing says otherwise)."""
    platform = batch.device_info.platform if batch.device_info else None
    if platform and (found := _BY_PLATFORM.get(platform.strip().lower())) is not None:
        return found
    os_name = batch.application_info.os if batch.application_info else None
    if os_name and (found := _BY_OS.get(os_name.strip().lower())) is not None:
        return found
    return R.UNKNOWN


def device_identity_values(batch: Batch, kind: RuntimeEnvironmentType) -> dict[str, str]:
    """The batch's device identities as ``{firehose type: value}`` (values as sent)."""
    info = batch.device_info
    if info is None:
        return {}
    values: dict[str, str] = {}
    for key, firehose_type in DEVICE_IDENTITY_TYPES.items():
        value = getattr(info, key)
        if isinstance(value, str):
            values[firehose_type] = value
    token_type = _PUSH_TOKEN_TYPE.get(kind)
    if token_type is not None and info.push_token:
        values[token_type] = info.push_token
    return values


def _bool(value: LooseBool | None) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _text_bool(value: LooseBool | None) -> str | None:
    flag = _bool(value)
    return None if flag is None else ("true" if flag else "false")


def _int(value: float | None, bounds: tuple[int, int] = _INT32) -> int | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    number = int(value)
    return number if bounds[0] <= number <= bounds[1] else None


def _device_fields(batch: Batch, kind: RuntimeEnvironmentType) -> dict[str, Any]:
    info = batch.device_info or DeviceInfo()
    app = batch.application_info
    fields: dict[str, Any] = {
        "build_id": info.build_identifier,
        "brand": info.brand,
        "product": info.product,
        "name": info.device,
        "manufacturer": info.device_manufacturer,
        "os_version": info.os_version,
        "model": info.device_model,
        "screen_height": _int(info.screen_height),
        "screen_width": _int(info.screen_width),
        "screen_dpi": _int(info.screen_dpi),
        "country": info.device_country,
        "locale_language": info.locale_language,
        "locale_country": info.locale_country,
        "network_country": info.network_country,
        "network_carrier": info.network_carrier,
        "network_code": info.network_code,
        "network_mobile_country_code": info.network_mobile_country_code,
        "timezone_offset": _int(info.timezone_offset),
        "cpu_architecture": info.cpu_architecture,
        "is_tablet": _bool(info.is_tablet),
        "supports_telephony": _bool(info.supports_telephony),
        "has_nfc": _bool(info.has_nfc),
        "bluetooth_enabled": _bool(info.bluetooth_enabled),
        "bluetooth_version": info.bluetooth_version,
        "radio_access_technology": info.radio_access_technology,
        "limit_ad_tracking": _text_bool(info.limit_ad_tracking),
        "is_dst": _text_bool(info.is_dst),
        "att_authorization_status": info.att_authorization_status,
        "att_timestamp_unixtime_ms": _int(info.att_timestamp_unixtime_ms, _INT64),
    }
    if kind == R.MOBILEWEB:
        fields["push_token"] = info.push_token
        for native, web in _WEB_NAMES.items():
            fields[web] = fields.pop(native)
    if app is not None:
        fields["application_name"] = app.application_name
        fields["application_version"] = app.application_version
        fields["application_package"] = app.package
        fields["install_referrer"] = app.install_referrer
        if app.apple_search_ads_attributes:
            fields["apple_search_ads_attribution"] = {
                version: {k: v for k, v in (values or {}).items() if v is not None}
                for version, values in app.apple_search_ads_attributes.items()
            }
    return fields


def runtime_environment(
    batch: Batch,
    kind: RuntimeEnvironmentType,
    ip: str | None,
    permissions: Permissions,
) -> RuntimeEnvironment:
    """The runtime environment of ``kind`` for the batch, with what ``permissions`` allow.

    ``type``, ``is_debug``, ``sdk_version`` and the registered device identities are always
    sent; the IP, the user agent and the device and app fields each need their permission.
    """
    cls = _CLASSES[kind]
    declared = set(cls.__struct_fields__)
    values: dict[str, Any] = {
        "is_debug": batch.environment == "development",
        "sdk_version": batch.sdk_version,
        "identities": device_identities(device_identity_values(batch, kind), permissions),
    }
    if permissions.allow_access_ip_address:
        values["client_ip_address"] = ip
    if permissions.allow_access_http_user_agent and batch.device_info is not None:
        values["http_header_user_agent"] = batch.device_info.http_header_user_agent
    if permissions.allow_device_info:
        values.update(_device_fields(batch, kind))
    kept = {k: v for k, v in values.items() if k in declared and v is not None}
    return cls(**kept)
