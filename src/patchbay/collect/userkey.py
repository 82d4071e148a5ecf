"""The partition key of a batch: a stable key of its user, read from the batch as received.

A partitioned log (Kafka, the in-memory one) puts a batch in the partition of a hash of this
key (:meth:`patchbay.backends.records.NewBatch.partition`), so that one user's batches stay
in one partition, in order, while different users spread over every partition and the
processors that own them. The key is computed at collection time, before resolution, from
the batch alone (:func:`user_key`): the first of

1. its ``mpid`` (what SDKs send once IDSync gave them one);
2. its strongest user identity, in the order of the batch format's user identity types
   (``customer_id``, then ``email``, then the others: the default strategy's priority);
3. its device identity: ``mp_deviceid`` (the device application stamp), then the device ids
   of ``device_info`` in the strategy's order (``ios_advertising_id``, ``ios_idfv``...);

and ``None`` when it names nobody: the log then uses the input id and the batch's
``source_request_id`` (or, without one, its random batch id), which spreads such batches at
random.

Values that never identify anyone (``""``, ``null``, ``0``... the default blocked values)
are skipped, so they do not pile unrelated batches onto one partition.

A retry of a batch repeats its body, input and ``source_request_id``, so it gets the same
key and lands in the partition of its first copy.
"""

from __future__ import annotations

from patchbay.collect.batch import USER_IDENTITY_TYPES, Batch
from patchbay.resolve.identities import DEVICE_IDENTITY_TYPES
from patchbay.resolve.strategy import DEFAULT_BLOCKED_VALUES

_BLOCKED = frozenset(v.strip().lower() for v in DEFAULT_BLOCKED_VALUES)
#: The device ids of ``device_info``, in the strategy's order (the stamp comes first).
_DEVICE_INFO_TYPES = DEVICE_IDENTITY_TYPES[1:]


def _usable(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in _BLOCKED


def user_key(batch: Batch) -> str | None:
    """The partition key of ``batch`` (``TYPE:VALUE``), or ``None`` if it names no user
    nor device; see the module docs. Pure: the same batch always gives the same key."""
    if batch.mpid is not None:
        mpid = batch.user_id
        if mpid:  # 0 is "no user", as the resolver reads it
            return f"mpid:{mpid}"
    if batch.user_identities is not None:
        found = batch.user_identities.identities()
        for identity_type in USER_IDENTITY_TYPES:
            value = found.get(identity_type)
            if _usable(value):
                return f"{identity_type}:{value}"
    if _usable(batch.mp_deviceid):
        return f"device_application_stamp:{batch.mp_deviceid}"
    device = batch.device_info
    if device is not None:
        for identity_type in _DEVICE_INFO_TYPES:
            value = getattr(device, identity_type, None)
            if _usable(value):
                return f"{identity_type}:{value}"
    return None


def mpid_key(mpid: int) -> str:
    """The partition key of a batch about the user ``mpid`` (as :func:`user_key` gives for
    a batch carrying that ``mpid``)."""
    return f"mpid:{mpid}"
