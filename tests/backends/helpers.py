"""Builders and readers shared by the contract suites."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from patchbay.backends.abstract import Backend, BatchLog
from patchbay.backends.records import LogPosition, NewBatch, StoredBatch
from patchbay.backends.sqlite.db import SqliteDatabase

_T = TypeVar("_T")

#: More than any test appends: a read that returns everything.
ALL = 1_000_000


def batch(
    tag: str = "",
    *,
    input_id: str = "input-1",
    srid: str | None = None,
    at: int = 1_000,
    ip: str | None = None,
    historical: bool = False,
    channel: str = "server_to_server",
    body: bytes | None = None,
    user: str | None = None,
) -> NewBatch:
    """A new batch; its body names ``tag`` so that it can be recognised when read back. Its
    partition key is ``user``, else one per input (a test's batches of one input share a
    partition)."""
    return NewBatch(
        batch_id=str(uuid.uuid4()),
        input_id=input_id,
        received_at_ms=at,
        channel=channel,
        body=body if body is not None else f'{{"tag":"{tag}"}}'.encode(),
        ip=ip,
        source_request_id=srid,
        historical=historical,
        partition_key=user if user is not None else f"user-of:{input_id}",
    )


def as_stored(position: LogPosition, new: NewBatch) -> StoredBatch:
    """What the log must return for ``new`` appended at ``position``."""
    return StoredBatch(
        offset=position.offset,
        batch_id=new.batch_id,
        input_id=new.input_id,
        received_at_ms=new.received_at_ms,
        channel=new.channel,
        body=new.body,
        ip=new.ip,
        historical=new.historical,
        partition=position.partition,
        source_request_id=new.source_request_id,
    )


def everything(log: BatchLog) -> list[StoredBatch]:
    """Every batch of the log, partition by partition, each in log order."""
    return [b for p in range(log.partitions) for b in log.read(p, None, ALL)]


def bodies(log: BatchLog) -> list[bytes]:
    """The bodies of every batch (in log order when everything is in one partition)."""
    return [b.body for b in everything(log)]


def increasing_per_partition(positions: Iterable[LogPosition]) -> bool:
    """Whether, within each partition, ``positions`` strictly increase."""
    by_partition: dict[int, list[LogPosition]] = {}
    for position in positions:
        by_partition.setdefault(position.partition, []).append(position)
    return all(a < b for part in by_partition.values() for a, b in itertools.pairwise(part))


def stored(positions: Sequence[LogPosition | None]) -> list[LogPosition]:
    """The positions of an append in which nothing was a duplicate."""
    assert None not in positions
    return [p for p in positions if p is not None]


#: SQLite's largest ``max_page_count``: no cap.
NO_PAGE_CAP = 4294967294


def sqlite_databases(store: object) -> list[SqliteDatabase]:
    """The SQLite databases a store (or every store of a :class:`Backend`) writes through."""
    if isinstance(store, SqliteDatabase):
        return [store]
    stores = (
        [
            getattr(store, f.name)
            for f in dataclasses.fields(store)
            if f.name not in ("name", "migrations", "resources")
        ]
        if isinstance(store, Backend)
        else [store]
    )
    found = {id(v): v for s in stores for v in _attributes(s) if isinstance(v, SqliteDatabase)}
    return list(found.values())


def _attributes(store: object) -> list[object]:
    """``store``'s attributes' values (a compiled store's too, which has no ``__dict__``)."""
    if hasattr(store, "__dict__"):
        return list(vars(store).values())
    return [getattr(store, name) for name in dir(store) if not name.startswith("__")]


def fill(store: object, full: bool = True) -> None:
    """Make ``store`` (a database, a store or a whole :class:`Backend` of the embedded
    backend) full:
    ``PRAGMA max_page_count`` caps each of its databases at its size, on every connection
    (open and to come), so that SQLite answers a write that needs a page more with its real
    ``SQLITE_FULL``, as on a full disk; ``full=False`` lifts the cap."""
    for db in sqlite_databases(store):
        db.pragma(f"PRAGMA max_page_count = {1 if full else NO_PAGE_CAP}")


def at_once(*calls: Callable[[], _T]) -> list[_T]:
    """Run ``calls`` on threads started together; their results (raises the first error)."""
    results: dict[int, _T] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = calls[index]()
        except BaseException as exc:  # noqa: BLE001 - raised by the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(calls))]
