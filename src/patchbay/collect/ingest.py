"""From a request body to stamped batches ready for the log: pure functions, no I/O.

The HTTP layer reads and authenticates the request, calls :func:`prepare_single` or
:func:`prepare_bulk`, appends what they return and answers with what they rejected.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from patchbay.backends.records import Input, NewBatch
from patchbay.collect.batch import Batch
from patchbay.collect.decode import BadInput, decode_batch, split_bulk
from patchbay.collect.userkey import user_key

#: Historical batches must be at least this old (mParticle: 72 hours).
HISTORICAL_MIN_AGE_MS = 72 * 3600 * 1000

#: mParticle's ``source_info.channel`` for each kind of input.
SERVER_CHANNEL = "server_to_server"
PARTNER_CHANNEL = "partner"
WEB_CHANNEL = "javascript"


class Rejection(msgspec.Struct, frozen=True):
    """A batch of a bulk request that was not stored, and why."""

    index: int
    code: str
    message: str


@dataclass(slots=True)
class Prepared:
    """The batches of one request to append, and those rejected."""

    batches: list[NewBatch] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RequestStamps:
    """What the server knows about a request: who sent it, from where, when."""

    input: Input
    ip: str | None
    received_at_ms: int
    historical: bool = False
    #: The ``source_info.channel`` (``None``: :func:`channel_of` the input).
    channel: str | None = None


def channel_of(item: Input) -> str:
    """The ``source_info.channel`` stamped on batches from ``item``."""
    return PARTNER_CHANNEL if item.type == "feed" else SERVER_CHANNEL


def historical_problem(batch: Batch, now_ms: int) -> str | None:
    """Why ``batch`` may not go to the historical endpoint, or ``None`` if it may.

    mParticle's rules: the batch has events, each with ``timestamp_unixtime_ms``, and every
    timestamp is at least 72 hours old.
    """
    if not batch.events:
        return "events: a historical batch needs at least one event"
    newest = now_ms - HISTORICAL_MIN_AGE_MS
    for i, event in enumerate(batch.events):
        ts = event.data.timestamp_unixtime_ms
        if ts is None:
            return f"events[{i}].data.timestamp_unixtime_ms: required on the historical endpoint"
        if ts > newest:
            return (
                f"events[{i}].data.timestamp_unixtime_ms: less than 72 hours old;"
                " send recent data to /v2/bulkevents"
            )
    return None


def new_batch_ids(count: int) -> list[str]:
    """``count`` random version 4 UUIDs as strings.

    One ``os.urandom`` call for all of them, not one per batch (as ``uuid.uuid4`` would):
    ``os.urandom`` releases the GIL, and under load each release made the event loop wait
    for the appender thread to hand it back (about a fifth of the loop's time on a
    100-batch request).
    """
    raw = os.urandom(16 * count)
    return [str(uuid.UUID(bytes=raw[i : i + 16], version=4)) for i in range(0, 16 * count, 16)]


#: The uuid5 namespace of the batch ids derived from a ``source_request_id``.
BATCH_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://patchbay.dev/collect/batch")


def batch_id_of(input_id: str, source_request_id: str) -> str:
    """The id of the batch that input ``input_id`` sent with ``source_request_id``: the same
    for every copy of it, so that a copy stored twice (sent again after a 503 while the
    first was being stored) carries the ids of the first (its delivery and event ids, a new
    user's MPID) and is processed as the same batch again, never as another one."""
    return str(uuid.uuid5(BATCH_NAMESPACE, f"{input_id}\x1f{source_request_id}"))


def batch_ids(batches: Sequence[Batch], input_id: str) -> list[str]:
    """The id of each of ``batches`` sent by input ``input_id``: derived from its
    ``source_request_id`` (:func:`batch_id_of`), else random (:func:`new_batch_ids`, one
    call for all of those)."""
    randoms = iter(new_batch_ids(sum(b.source_request_id is None for b in batches)))
    return [
        next(randoms) if b.source_request_id is None else batch_id_of(input_id, b.source_request_id)
        for b in batches
    ]


def _stamp(batch: Batch, body: bytes, stamps: RequestStamps) -> NewBatch:
    """``batch`` alone as a batch to append (its id: :func:`batch_ids`)."""
    return _stamped(batch, body, stamps, batch_ids([batch], stamps.input.id)[0])


def _stamped(batch: Batch, body: bytes, stamps: RequestStamps, batch_id: str) -> NewBatch:
    return NewBatch(
        batch_id=batch_id,
        input_id=stamps.input.id,
        received_at_ms=stamps.received_at_ms,
        channel=stamps.channel or channel_of(stamps.input),
        body=body,
        ip=batch.ip or stamps.ip,
        source_request_id=batch.source_request_id,
        historical=stamps.historical,
        partition_key=user_key(batch),
    )


def _check(body: bytes, stamps: RequestStamps) -> Batch:
    batch = decode_batch(body)
    if stamps.historical and (problem := historical_problem(batch, stamps.received_at_ms)):
        path, _, reason = problem.partition(": ")
        raise BadInput(path, reason)
    return batch


def prepare_single(body: bytes, stamps: RequestStamps) -> Prepared:
    """The one batch of a ``/v2/events`` body; raises :class:`BadInput` if it is invalid."""
    batch = _check(body, stamps)
    return Prepared(batches=[_stamp(batch, body, stamps)], events=[batch.event_count])


def prepare_bulk(body: bytes, stamps: RequestStamps, max_batches: int) -> Prepared:
    """The valid batches of a bulk body and the rejected ones, each with its error.

    Raises :class:`BadInput` when the body as a whole is wrong (not a JSON array, too many
    batches).
    """
    prepared = Prepared()
    checked: list[tuple[bytes, Batch]] = []
    for index, raw in enumerate(split_bulk(body, max_batches)):
        try:
            checked.append((raw, _check(raw, stamps)))
        except BadInput as exc:
            prepared.rejected.append(Rejection(index, "BAD_REQUEST", str(exc)))
    ids = batch_ids([batch for _, batch in checked], stamps.input.id)
    for (raw, batch), batch_id in zip(checked, ids, strict=True):
        prepared.batches.append(_stamped(batch, raw, stamps, batch_id))
        prepared.events.append(batch.event_count)
    return prepared


_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_OBJECT_OR_NULL = msgspec.json.Decoder(dict[str, msgspec.Raw] | None)
_encode = msgspec.json.Encoder().encode


def with_user_agent(body: bytes, user_agent: str) -> bytes:
    """``body`` (a valid batch) with ``device_info.http_header_user_agent`` set: every other
    value is kept byte for byte (only whitespace between the keys of the batch and of its
    ``device_info`` goes)."""
    top = _OBJECT.decode(body)
    device = dict(_OBJECT_OR_NULL.decode(top.get("device_info", b"null")) or {})
    device["http_header_user_agent"] = msgspec.Raw(_encode(user_agent))
    top["device_info"] = msgspec.Raw(_encode(device))
    return _encode(top)


def prepare_web(body: bytes, stamps: RequestStamps, user_agent: str | None) -> Prepared:
    """The one batch of a Web SDK request (``/webevents/v3/JS/{key}/events``), stored as an
    Events API batch: the request's ``User-Agent`` becomes the device's, unless the batch
    names one. Raises :class:`BadInput` if it is invalid."""
    batch = decode_batch(body)
    device = batch.device_info
    if user_agent and (device is None or device.http_header_user_agent is None):
        body = with_user_agent(body, user_agent)
    return Prepared(batches=[_stamp(batch, body, stamps)], events=[batch.event_count])
