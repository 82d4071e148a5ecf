"""Identity types: their canonical names, and the names clients use for them.

Patchbay names identities as mParticle's batch format and Profile API do (``customer_id``,
``email``, ``ios_advertising_id``...). The SDKs and IDSync use other spellings
(``customerid``, ``other2``, ``ios_idfa``); :func:`canonical_type` maps every spelling to the
canonical one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from patchbay.collect.batch import USER_IDENTITY_TYPES, Batch

#: Device identity types: the ids in ``device_info`` plus the mParticle device id.
DEVICE_IDENTITY_TYPES: tuple[str, ...] = (
    "device_application_stamp",
    "ios_advertising_id",
    "ios_idfv",
    "android_advertising_id",
    "android_uuid",
    "push_token",
    "roku_advertising_id",
    "roku_publisher_id",
    "fire_advertising_id",
    "microsoft_advertising_id",
    "microsoft_publisher_id",
    "amp_id",
)

ALL_IDENTITY_TYPES = (*USER_IDENTITY_TYPES, *DEVICE_IDENTITY_TYPES)

_ALIASES: dict[str, str] = {
    # The Python and Node SDKs, and IDSync.
    "customerid": "customer_id",
    "facebookcustomaudienceid": "facebook_custom_audience_id",
    **{f"other{n}": f"other_id_{n}" for n in range(2, 11)},
    # IDSync device names.
    "ios_idfa": "ios_advertising_id",
    "android_aaid": "android_advertising_id",
    "roku_aid": "roku_advertising_id",
    "fire_aid": "fire_advertising_id",
    # The batch's mp_deviceid is the device application stamp.
    "mp_deviceid": "device_application_stamp",
    "das": "device_application_stamp",
}

#: The IDSync spelling of each canonical type, for answers (``matched_identities``).
IDSYNC_NAMES: dict[str, str] = {
    "customer_id": "customerid",
    "facebook_custom_audience_id": "facebookcustomaudienceid",
    **{f"other_id_{n}": f"other{n}" for n in range(2, 11)},
    "ios_advertising_id": "ios_idfa",
    "android_advertising_id": "android_aaid",
    "roku_advertising_id": "roku_aid",
    "fire_advertising_id": "fire_aid",
}


class Identity(NamedTuple):
    """One identity: its canonical type and its value."""

    type: str
    value: str


def canonical_type(name: str) -> str | None:
    """The canonical identity type for any spelling of it, or ``None`` if unknown."""
    lowered = name.strip().lower()
    lowered = _ALIASES.get(lowered, lowered)
    return lowered if lowered in ALL_IDENTITY_TYPES else None


def is_device_type(identity_type: str) -> bool:
    """Whether ``identity_type`` identifies a device rather than a person."""
    return identity_type in DEVICE_IDENTITY_TYPES


def batch_identities(batch: Batch) -> Iterator[Identity]:
    """The user and device identities a batch carries, canonical, non-empty."""
    if batch.user_identities is not None:
        for identity_type, value in batch.user_identities.identities().items():
            if value:
                yield Identity(identity_type, value)
    device = batch.device_info
    if device is not None:
        for identity_type in DEVICE_IDENTITY_TYPES[1:]:
            device_value: str | None = getattr(device, identity_type, None)
            if device_value:
                yield Identity(identity_type, device_value)
    if batch.mp_deviceid:
        yield Identity("device_application_stamp", batch.mp_deviceid)
