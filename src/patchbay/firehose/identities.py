"""User, device and partner identities: ``{type, encoding, value}``.

Where they appear: an event processing request carries user identities in
``user_identities``, device identities in ``runtime_environment.identities`` and partner
identities in ``partner_identities``; an audience membership change carries all three per
user profile. A partner receives only the types it registered, encoded as it registered them.
"""

from __future__ import annotations

from typing import Annotated

from patchbay.firehose._base import FirehoseStruct, NonEmptyStr, one_of
from patchbay.firehose.enums import DeviceIdentityType, IdentityEncoding, UserIdentityType

EncodingField = Annotated[str, one_of(IdentityEncoding)]


class Identity(FirehoseStruct):
    """Base of the three identity kinds. ``value`` must not be empty (the Java constructor
    rejects it); hashed values are lower-case hex of the trimmed, lower-cased identity."""


class UserIdentity(Identity):
    """A user identity; ``type`` is one of :class:`~.enums.UserIdentityType`."""

    type: Annotated[str, one_of(UserIdentityType)]
    encoding: EncodingField
    value: NonEmptyStr


class DeviceIdentity(Identity):
    """A device identity; ``type`` is one of :class:`~.enums.DeviceIdentityType`."""

    type: Annotated[str, one_of(DeviceIdentityType)]
    encoding: EncodingField
    value: NonEmptyStr


class PartnerIdentity(Identity):
    """A partner identity; ``type`` is free text (by convention ``PartnerName_IdentityName``;
    ``$cookie_sync_id`` is the cookie-sync id)."""

    type: str
    encoding: EncodingField
    value: NonEmptyStr
