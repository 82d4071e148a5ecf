"""Audience membership changes: user profiles and their audience changes."""

from __future__ import annotations

from typing import Annotated

from patchbay.firehose._base import FirehoseStruct, Int32, one_of
from patchbay.firehose.enums import AudienceAction, UserAttributeAction
from patchbay.firehose.identities import DeviceIdentity, PartnerIdentity, UserIdentity


class UserAttributeAudienceEvent(FirehoseStruct):
    """A user attribute change sent with an audience change (needs
    ``allow_audience_user_attributes``). Every field may be missing: the SDK's own example
    has an empty ``{}`` entry."""

    key: str | None = None
    value: str | None = None
    action: Annotated[str, one_of(UserAttributeAction)] | None = None
    list_value: list[str] = []


class Audience(FirehoseStruct):
    """One audience the user was added to, removed from, or whose attributes changed."""

    audience_id: Int32 = 0
    audience_name: str | None = None
    audience_subscription_settings: dict[str, str] = {}
    action: Annotated[str, one_of(AudienceAction)] | None = None
    user_attributes: list[UserAttributeAudienceEvent] = []


class UserProfile(FirehoseStruct):
    """One user and their audience changes. ``mpid`` is a signed int64 written as a string
    (needs ``allow_access_mpid``)."""

    user_identities: list[UserIdentity] = []
    device_identities: list[DeviceIdentity] = []
    partner_identities: list[PartnerIdentity] = []
    audiences: list[Audience] = []
    mpid: str | None = None
