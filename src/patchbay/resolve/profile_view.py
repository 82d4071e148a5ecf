"""How a profile is shown: the Profile API's JSON shape, also used by the CLI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from patchbay.backends.records import MergeRecord
from patchbay.resolve.profile import IdentityRecord, Profile

#: The ``fields`` the Profile API can return (``mpid`` and the times always come).
PROFILE_FIELDS = (
    "device_identities",
    "user_identities",
    "user_attributes",
    "audience_memberships",
    "attribution",
    "consent",
)


def _identities(records: list[IdentityRecord]) -> list[dict[str, Any]]:
    return [
        {
            "type": r.type,
            "encoding": "none",
            "value": r.value,
            "created_timestamp_ms": r.first_seen_ms,
            "last_seen_timestamp_ms": r.last_seen_ms,
        }
        for r in sorted(records, key=lambda r: (r.type, r.first_seen_ms, r.value))
    ]


def profile_document(
    profile: Profile,
    fields: tuple[str, ...] = PROFILE_FIELDS,
    memberships: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The profile in the Profile API's shape, with only the requested ``fields``.

    ``memberships`` are the audiences the user belongs to (``audience_id`` and
    ``audience_name``, from :meth:`patchbay.segment.service.AudienceService.memberships`).
    mParticle also gives each an ``expiration_timestamp_ms``: Patchbay's audiences do not
    expire, so it is ``null``. When the user joined is not kept, so it is not shown."""
    doc: dict[str, Any] = {
        "mpid": profile.mpid,
        "created_timestamp_ms": profile.created_at_ms,
        "last_stored_timestamp_ms": profile.last_seen_ms,
        "is_opted_out": profile.opted_out,
        "limit_ad_tracking": False,
        "inputs": list(profile.inputs),
    }
    if "device_identities" in fields:
        doc["device_identities"] = _identities(profile.device_identities())
    if "user_identities" in fields:
        doc["user_identities"] = _identities(profile.user_identities())
    if "user_attributes" in fields:
        doc["user_attributes"] = dict(profile.user_attributes)
    if "audience_memberships" in fields:
        doc["audience_memberships"] = [
            {
                "audience_id": m["audience_id"],
                "audience_name": m["audience_name"],
                "expiration_timestamp_ms": None,
            }
            for m in memberships
        ]
    if "consent" in fields:
        doc["consent_state"] = {
            "gdpr": {k: _consent(v) for k, v in sorted(profile.gdpr.items())},
            "ccpa": {k: _consent(v) for k, v in sorted(profile.ccpa.items())},
        }
    return doc


def _consent(value: Any) -> dict[str, Any]:
    return {
        "consented": value.consented,
        "timestamp_unixtime_ms": value.timestamp_unixtime_ms,
        "document": value.document,
        "location": value.location,
        "hardware_id": value.hardware_id,
    }


def merge_documents(merges: list[MergeRecord]) -> list[dict[str, Any]]:
    """The merge history of a profile."""
    return [
        {
            "from_mpid": m.from_mpid,
            "to_mpid": m.to_mpid,
            "reason": m.reason,
            "at_ms": m.at_ms,
            "log_offset": m.offset,
        }
        for m in merges
    ]
