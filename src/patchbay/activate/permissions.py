"""A module's permissions applied to identities.

Identities are sent only for the types the module registered, once per registered
permission, in the registered encoding. Hashed encodings are the lower-case hex digest of
the UTF-8 bytes of the trimmed, lower-cased value; ``raw`` is the value as stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Protocol

from patchbay.firehose import (
    DeviceIdentity,
    PartnerIdentity,
    Permissions,
    UserIdentity,
)
from patchbay.firehose.enums import DeviceIdentityType, IdentityEncoding, UserIdentityType

#: Inbound ``user_identities`` key (and ``user_identity_change`` ``identity_type``) → Firehose
#: ``UserIdentity.type``. ``alias`` and ``facebook_custom_audience_id`` have no literal.
USER_IDENTITY_TYPES: Final[Mapping[str, UserIdentityType]] = {
    "customer_id": UserIdentityType.CUSTOMER,
    "customerid": UserIdentityType.CUSTOMER,
    "email": UserIdentityType.EMAIL,
    "other": UserIdentityType.OTHER,
    "facebook": UserIdentityType.FACEBOOK,
    "twitter": UserIdentityType.TWITTER,
    "google": UserIdentityType.GOOGLE,
    "microsoft": UserIdentityType.MICROSOFT,
    "yahoo": UserIdentityType.YAHOO,
    **{f"other_id_{n}": UserIdentityType(f"other{n}") for n in range(2, 11)},
    "mobile_number": UserIdentityType.MOBILE_NUMBER,
    "phone_number_2": UserIdentityType.PHONE_NUMBER_2,
    "phone_number_3": UserIdentityType.PHONE_NUMBER_3,
}

#: ``device_info`` key → Firehose ``DeviceIdentity.type`` (``push_token`` depends on the
#: runtime and is handled by :mod:`.runtime`).
DEVICE_IDENTITY_TYPES: Final[Mapping[str, DeviceIdentityType]] = {
    "ios_advertising_id": DeviceIdentityType.IOS_ADVERTISING_ID,
    "ios_idfv": DeviceIdentityType.IOS_VENDOR_ID,
    "android_advertising_id": DeviceIdentityType.GOOGLE_ADVERTISING_ID,
    "android_uuid": DeviceIdentityType.ANDROID_ID,
    "roku_advertising_id": DeviceIdentityType.ROKU_ADVERTISING_ID,
    "roku_publisher_id": DeviceIdentityType.ROKU_PUBLISHER_ID,
    "microsoft_advertising_id": DeviceIdentityType.MICROSOFT_ADVERTISING_ID,
    "microsoft_publisher_id": DeviceIdentityType.MICROSOFT_PUBLISHER_ID,
    "fire_advertising_id": DeviceIdentityType.FIRE_ADVERTISING_ID,
}

_HASHES: Final = {
    IdentityEncoding.MD5: hashlib.md5,
    IdentityEncoding.SHA1: hashlib.sha1,
    IdentityEncoding.SHA256: hashlib.sha256,
}

_ZERO_ID: Final = "00000000-0000-0000-0000-000000000000"


class _Permission(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def encoding(self) -> str: ...
    @property
    def required(self) -> bool: ...


def encode(value: str, encoding: str) -> str | None:
    """``value`` in ``encoding``; ``None`` for a blank value or an unknown encoding."""
    if not value.strip():
        return None
    if encoding == IdentityEncoding.RAW:
        return value
    hasher = _HASHES.get(encoding)  # type: ignore[call-overload]
    if hasher is None:
        return None
    digest: str = hasher(value.strip().lower().encode("utf-8")).hexdigest()
    return digest


def usable(value: str | None) -> bool:
    """Whether an identity value counts as present: not blank, not an all-zero
    advertising id (which means the user opted out, DOCS-INPUT)."""
    return value is not None and bool(value.strip()) and value.strip() != _ZERO_ID


def _encoded(
    values: Mapping[str, str], permissions: Sequence[_Permission]
) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for permission in permissions:
        value = values.get(permission.type)
        if value is None or not usable(value):
            continue
        encoded = encode(value, permission.encoding)
        if encoded is not None:
            out.append((permission.type, permission.encoding, encoded))
    return out


def user_identities(values: Mapping[str, str], permissions: Permissions) -> list[UserIdentity]:
    """The user identities (``{firehose type: value}``) the module may receive."""
    return [
        UserIdentity(type=t, encoding=e, value=v)
        for t, e, v in _encoded(values, permissions.user_identities)
    ]


def device_identities(values: Mapping[str, str], permissions: Permissions) -> list[DeviceIdentity]:
    """The device identities (``{firehose type: value}``) the module may receive."""
    return [
        DeviceIdentity(type=t, encoding=e, value=v)
        for t, e, v in _encoded(values, permissions.device_identities)
    ]


def partner_identities(
    values: Mapping[str, str], permissions: Permissions
) -> list[PartnerIdentity]:
    """The partner identities (inbound ``partner_identities`` map) the module may receive."""
    return [
        PartnerIdentity(type=t, encoding=e, value=v)
        for t, e, v in _encoded(values, permissions.partner_identities)
    ]


def meets_required(
    permissions: Permissions,
    user: Mapping[str, str],
    device: Mapping[str, str],
    partner: Mapping[str, str],
) -> bool:
    """Whether the batch may be sent under the ``required`` identity rule.

    With no required permission, always. Otherwise the batch must hold at least one of the
    required identities, across user, device and partner identities together; presence is
    what counts, not the encoding.
    """
    groups: Iterable[tuple[Sequence[_Permission], Mapping[str, str]]] = (
        (permissions.user_identities, user),
        (permissions.device_identities, device),
        (permissions.partner_identities, partner),
    )
    required = False
    for perms, values in groups:
        for permission in perms:
            if not permission.required:
                continue
            required = True
            if usable(values.get(permission.type)):
                return True
    return not required
