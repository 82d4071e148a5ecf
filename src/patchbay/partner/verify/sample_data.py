"""The values the verification requests carry: identities, and a plausible device of each
runtime environment."""

from __future__ import annotations

from typing import Any, Final

from patchbay.firehose.environment import (
    AlexaRuntimeEnvironment,
    AndroidRuntimeEnvironment,
    BaseRuntimeEnvironment,
    FireTvRuntimeEnvironment,
    GenericRuntimeEnvironment,
    IosRuntimeEnvironment,
    RokuRuntimeEnvironment,
    SmartTvRuntimeEnvironment,
    TvosRuntimeEnvironment,
    WebRuntimeEnvironment,
    XboxRuntimeEnvironment,
)

#: Sample identity values (raw; hashed per the registered encoding).
USER_IDENTITIES: Final = {
    "customer": "cust-000123",
    "email": "verify.user@example.com",
    "facebook": "100004567890123",
    "twitter": "verify_user",
    "google": "108765432109876543210",
    "microsoft": "verify.user@outlook.example",
    "yahoo": "verify.user@yahoo.example",
    "mobile_number": "+15555550123",
    "phone_number_2": "+15555550124",
    "phone_number_3": "+15555550125",
}
DEVICE_IDENTITIES: Final = {
    "android_id": "a1b2c3d4e5f60718",
    "google_advertising_id": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "ios_advertising_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "ios_vendor_id": "1F4C5E2A-9B3D-4C8E-A1F2-3D4E5F6A7B8C",
    "google_cloud_messaging_token": "fcm-token-APA91bHun4MxP5egoKMwt2KZFBaFUH",
    "apple_push_notification_token": (
        "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad"
    ),
    "roku_advertising_id": "e5b1a0a4-2b9e-5c3d-8f7e-6a5b4c3d2e1f",
    "microsoft_advertising_id": "7b2c1d4e-3f5a-4b6c-8d7e-9f0a1b2c3d4e",
    "microsoft_publisher_id": "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
    "fire_advertising_id": "df07c7dc-cea7-4a89-b328-810ff5acb15d",
    "roku_publisher_id": "0f1e2d3c-4b5a-4968-8776-655443322110",
}


RUNTIME_CLASSES: Final[dict[str, type[BaseRuntimeEnvironment]]] = {
    "unknown": GenericRuntimeEnvironment,
    "smarttv": SmartTvRuntimeEnvironment,
    "alexa": AlexaRuntimeEnvironment,
    "android": AndroidRuntimeEnvironment,
    "ios": IosRuntimeEnvironment,
    "tvos": TvosRuntimeEnvironment,
    "mobileweb": WebRuntimeEnvironment,
    "roku": RokuRuntimeEnvironment,
    "xbox": XboxRuntimeEnvironment,
    "firetv": FireTvRuntimeEnvironment,
}

#: A plausible device of each kind; only the fields a runtime has are used.
DEVICES: Final[dict[str, dict[str, Any]]] = {
    "android": {
        "brand": "google",
        "product": "shiba",
        "name": "shiba",
        "manufacturer": "Google",
        "model": "Pixel 8",
        "os_version": "14",
        "build_id": "UQ1A.240205.004",
        "screen_height": 2400,
        "screen_width": 1080,
        "screen_dpi": 420,
        "android_sdk_level": 34,
        "network_carrier": "T-Mobile",
        "network_country": "us",
        "supports_telephony": True,
        "bluetooth_enabled": True,
        "install_referrer": "utm_source=verify",
    },
    "ios": {
        "brand": "Apple",
        "product": "iPhone15,2",
        "name": "iPhone",
        "manufacturer": "Apple",
        "model": "iPhone15,2",
        "os_version": "17.4",
        "build_id": "21E219",
        "screen_height": 2556,
        "screen_width": 1179,
        "cpu_architecture": "arm64",
        "network_carrier": "Verizon",
        "network_country": "us",
        "radio_access_technology": "CTRadioAccessTechnologyLTE",
        "is_sandboxed": False,
        "att_authorization_status": "authorized",
        "att_timestamp_unixtime_ms": 1_714_000_000_000,
    },
    "tvos": {
        "brand": "Apple",
        "model": "AppleTV14,1",
        "os_version": "17.4",
        "screen_height": 2160,
        "screen_width": 3840,
        "cpu_architecture": "arm64",
    },
    "mobileweb": {
        "device_manufacturer": "Apple",
        "device_model": "Macintosh",
        "os_version": "14.4",
        "screen_height": 900,
        "screen_width": 1440,
        "device_country": "US",
        "limit_ad_tracking": "false",
        "is_dst": "true",
    },
    "roku": {"brand": "Roku", "model": "3941X", "os_version": "12.5", "cpu_architecture": "arm"},
    "xbox": {
        "brand": "Microsoft",
        "model": "Xbox Series X",
        "os_version": "10.0.25398",
        "screen_height": 2160,
        "screen_width": 3840,
    },
    "firetv": {
        "brand": "Amazon",
        "model": "AFTKA",
        "os_version": "7.6.6.9",
        "screen_height": 2160,
        "screen_width": 3840,
        "cpu_architecture": "arm64",
    },
    "unknown": {
        "brand": "Generic",
        "model": "Server",
        "os_version": "1.0",
        "screen_height": 1080,
        "screen_width": 1920,
    },
    "smarttv": {
        "brand": "Samsung",
        "model": "QN90C",
        "os_version": "Tizen 7.0",
        "screen_height": 2160,
        "screen_width": 3840,
    },
    "alexa": {"brand": "Amazon", "model": "Echo Show 8", "os_version": "1.0"},
}

#: Fields every device kind gets (where the runtime has them).
COMMON_DEVICE: Final[dict[str, Any]] = {
    "country": "US",
    "locale_language": "en",
    "locale_country": "US",
    "timezone_offset": -5,
    "timezone_name": "America/New_York",
    "is_tablet": False,
    "application_name": "Patchbay Verify",
    "application_version": "4.2.0",
    "application_package": "com.example.verify",
}
