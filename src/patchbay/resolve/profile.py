"""User profiles and the pure functions that update them from batches and merges."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from patchbay.collect.batch import Batch, ConsentPurpose
from patchbay.collect.events import OptOut, UserAttributeChange
from patchbay.collect.fields import UserAttributeValue
from patchbay.resolve.identities import Identity, is_device_type


class IdentityRecord(msgspec.Struct, frozen=True, gc=False):
    """An identity of a profile and when it was first and last seen."""

    type: str
    value: str
    first_seen_ms: int
    last_seen_ms: int


class Consent(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """The latest consent decision for one purpose."""

    consented: bool
    timestamp_unixtime_ms: int
    document: str | None = None
    location: str | None = None
    hardware_id: str | None = None


class Profile(msgspec.Struct, kw_only=True):
    """Everything known about one user (one MPID).

    ``merged_into`` is set on a profile that was folded into another one: the survivor
    holds its data, and look-ups follow the pointer.
    """

    mpid: int
    created_at_ms: int
    last_seen_ms: int
    identities: list[IdentityRecord] = msgspec.field(default_factory=list)
    user_attributes: dict[str, UserAttributeValue] = msgspec.field(default_factory=dict)
    gdpr: dict[str, Consent] = msgspec.field(default_factory=dict)
    ccpa: dict[str, Consent] = msgspec.field(default_factory=dict)
    opted_out: bool = False
    inputs: list[str] = msgspec.field(default_factory=list)
    merged_into: int | None = None

    def identity(self, identity_type: str) -> str | None:
        """The newest value of a user identity type, or ``None``."""
        found = [r for r in self.identities if r.type == identity_type]
        return max(found, key=lambda r: r.last_seen_ms).value if found else None

    def has(self, identity: Identity) -> bool:
        """Whether the profile holds this identity."""
        return any(r.type == identity.type and r.value == identity.value for r in self.identities)

    def user_identities(self) -> list[IdentityRecord]:
        """The user (not device) identities."""
        return [r for r in self.identities if not is_device_type(r.type)]

    def device_identities(self) -> list[IdentityRecord]:
        """The device identities."""
        return [r for r in self.identities if is_device_type(r.type)]


def new_profile(mpid: int, now_ms: int) -> Profile:
    """An empty profile first seen at ``now_ms``."""
    return Profile(mpid=mpid, created_at_ms=now_ms, last_seen_ms=now_ms)


def add_identity(profile: Profile, identity: Identity, seen_ms: int) -> None:
    """Record ``identity`` on ``profile``; a user identity type holds one value."""
    kept: list[IdentityRecord] = []
    first = seen_ms
    for record in profile.identities:
        if record.type == identity.type and record.value == identity.value:
            first = min(first, record.first_seen_ms)
            seen_ms = max(seen_ms, record.last_seen_ms)
            continue
        if record.type == identity.type and not is_device_type(identity.type):
            continue  # a user identity type is replaced by its new value
        kept.append(record)
    kept.append(IdentityRecord(identity.type, identity.value, first, seen_ms))
    profile.identities = kept


def remove_identity(profile: Profile, identity: Identity) -> None:
    """Forget ``identity`` on ``profile``."""
    profile.identities = [
        r for r in profile.identities if not (r.type == identity.type and r.value == identity.value)
    ]


def _consent(purpose: ConsentPurpose | None) -> Consent | None:
    if purpose is None or purpose.consented is None:
        return None
    consented = purpose.consented
    if isinstance(consented, str):
        consented = consented.strip().lower() == "true"
    return Consent(
        consented=consented,
        timestamp_unixtime_ms=purpose.timestamp_unixtime_ms or 0,
        document=purpose.document,
        location=purpose.location,
        hardware_id=purpose.hardware_id,
    )


def _latest(into: dict[str, Consent], purposes: dict[str, ConsentPurpose | None] | None) -> None:
    for name, purpose in (purposes or {}).items():
        consent = _consent(purpose)
        if consent is None:
            continue
        current = into.get(name.lower())
        if current is None or consent.timestamp_unixtime_ms >= current.timestamp_unixtime_ms:
            into[name.lower()] = consent


def apply_batch(profile: Profile, batch: Batch, input_id: str, seen_ms: int) -> None:
    """Update ``profile`` with a batch's attributes, consent, opt-out and times.

    Identities are not touched here: the resolver decides which to link.
    """
    profile.last_seen_ms = max(profile.last_seen_ms, seen_ms)
    profile.created_at_ms = min(profile.created_at_ms, seen_ms)
    if input_id not in profile.inputs:
        profile.inputs.append(input_id)
    for name, value in (batch.user_attributes or {}).items():
        profile.user_attributes[name] = value
    for name in batch.deleted_user_attributes or ():
        profile.user_attributes.pop(name, None)
    for event in batch.events or ():
        if isinstance(event, UserAttributeChange):
            data = event.data
            if not data.user_attribute_name:
                continue
            if data.deleted is True or data.deleted == "true":
                profile.user_attributes.pop(data.user_attribute_name, None)
            else:
                profile.user_attributes[data.user_attribute_name] = data.new
        elif isinstance(event, OptOut) and event.data.is_opted_out is not None:
            opted = event.data.is_opted_out
            profile.opted_out = opted is True or (isinstance(opted, str) and opted == "true")
    if batch.consent_state is not None:
        _latest(profile.gdpr, batch.consent_state.gdpr)
        _latest(profile.ccpa, batch.consent_state.ccpa)


def merge_profiles(survivor: Profile, absorbed: Profile) -> None:
    """Fold ``absorbed`` into ``survivor``; the survivor's values win where both have one."""
    for record in absorbed.identities:
        if is_device_type(record.type) or survivor.identity(record.type) is None:
            identity = Identity(record.type, record.value)
            add_identity(survivor, identity, record.last_seen_ms)
            _keep_first_seen(survivor, identity, record.first_seen_ms)
    for name, value in absorbed.user_attributes.items():
        survivor.user_attributes.setdefault(name, value)
    for mine, theirs in ((survivor.gdpr, absorbed.gdpr), (survivor.ccpa, absorbed.ccpa)):
        for purpose, consent in theirs.items():
            current = mine.get(purpose)
            if current is None or consent.timestamp_unixtime_ms > current.timestamp_unixtime_ms:
                mine[purpose] = consent
    survivor.created_at_ms = min(survivor.created_at_ms, absorbed.created_at_ms)
    survivor.last_seen_ms = max(survivor.last_seen_ms, absorbed.last_seen_ms)
    survivor.inputs.extend(i for i in absorbed.inputs if i not in survivor.inputs)
    absorbed.merged_into = survivor.mpid


def _keep_first_seen(profile: Profile, identity: Identity, first_seen_ms: int) -> None:
    profile.identities = [
        msgspec.structs.replace(r, first_seen_ms=min(r.first_seen_ms, first_seen_ms))
        if r.type == identity.type and r.value == identity.value
        else r
        for r in profile.identities
    ]


def identities_of(records: Iterable[IdentityRecord]) -> list[Identity]:
    """The identities of some records."""
    return [Identity(r.type, r.value) for r in records]
