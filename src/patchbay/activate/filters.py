"""A connection's filters, as pure functions of a batch: what reaches the output.

Applied in this order: environment, consent, user sampling (each drops the whole batch),
then event types, event names and event attribute names (each drops events or
attributes). A batch that had events and has none left is not forwarded; a batch that
never had events (user attributes only) is, if the batch-level rules let it through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from patchbay.backends.records import Filters
from patchbay.collect.batch import Batch
from patchbay.collect.events import Event, event_name_of, event_type_of

#: The environments a connection can be limited to.
ENVIRONMENTS = ("production", "development")


#: Users fall in one of this many buckets by a hash of their MPID: samples go in 0.01 % steps.
SAMPLE_BUCKETS = 10_000


def sampled_in(mpid: int, percent: float) -> bool:
    """Whether user ``mpid`` is in a ``percent`` sample: the same answer every time, and a
    user in a smaller sample is in every larger one."""
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    digest = hashlib.sha256(str(mpid).encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % SAMPLE_BUCKETS  # 0.01 % steps
    # rounded: 0.07 * 100 is 7.000000000000001 in floating point, which took an 8th bucket
    return bucket < round(percent * SAMPLE_BUCKETS / 100, 6)


def consented(batch: Batch, purposes: Sequence[str]) -> bool:
    """Whether every named GDPR purpose is consented in the batch's consent state (purpose
    names compared case-insensitively)."""
    if not purposes:
        return True
    gdpr = batch.consent_state.gdpr if batch.consent_state else None
    given = {name.lower(): bool(p.consented) for name, p in (gdpr or {}).items() if p is not None}
    return all(given.get(purpose.lower(), False) for purpose in purposes)


def _filter_attributes(event: Event, filters: Filters) -> Event:
    attributes = event.data.custom_attributes
    if not attributes or not (filters.attributes_keep or filters.attributes_drop):
        return event
    keep = set(filters.attributes_keep)
    drop = set(filters.attributes_drop)
    kept = {k: v for k, v in attributes.items() if (not keep or k in keep) and k not in drop}
    if len(kept) == len(attributes):
        return event
    data = msgspec.structs.replace(event.data, custom_attributes=kept or None)
    return msgspec.structs.replace(event, data=data)


def _event_passes(event: Event, filters: Filters) -> bool:
    if filters.event_types and event_type_of(event) not in filters.event_types:
        return False
    name = event_name_of(event)
    if filters.event_names_keep and name not in filters.event_names_keep:
        return False
    return not (filters.event_names_drop and name in filters.event_names_drop)


def apply_filters(batch: Batch, mpid: int, filters: Filters) -> Batch | None:
    """The batch as the connection forwards it, or ``None`` when nothing is forwarded."""
    if filters.environment and (batch.environment or "production") != filters.environment:
        return None
    if not consented(batch, filters.consent_purposes):
        return None
    if not sampled_in(mpid, filters.sample_percent):
        return None
    if not batch.events:
        return batch
    events = [
        _filter_attributes(event, filters)
        for event in batch.events
        if _event_passes(event, filters)
    ]
    if not events:
        return None
    if len(events) == len(batch.events) and all(
        a is b for a, b in zip(events, batch.events, strict=True)
    ):
        return batch
    return msgspec.structs.replace(batch, events=events)
