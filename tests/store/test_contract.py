"""The contract of the store interfaces (:mod:`patchbay.store.base`), run on every backend.

Each backend is a :class:`Backend` in :data:`BACKENDS`: a name and a function that opens
the store kept at a location (a fresh temporary directory per test). Opening the same
location again must reopen the same data, which is how persistence is tested. To add a
backend (PostgreSQL, say), append a ``Backend`` whose ``open`` connects to a database or
schema derived from the location (and creates it when missing); every test below then runs
on it too.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchbay.store.appender import GroupCommitAppender
from patchbay.store.base import (
    AppendResult,
    Credential,
    DuplicateName,
    Input,
    NewBatch,
    Store,
    StoredBatch,
)
from patchbay.store.sqlite import SqliteStore


@dataclass(frozen=True)
class Backend:
    """A store implementation under test."""

    name: str
    #: Opens the store kept at ``location``; called again, reopens the same data.
    open: Callable[[Path], Store]


BACKENDS = [
    Backend("sqlite", lambda location: SqliteStore(location / "data")),
    Backend("sqlite-normal", lambda location: SqliteStore(location / "data", "normal")),
]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.param
    return backend


class Opener:
    """Opens and reopens the store of one test, and closes whatever is left open."""

    def __init__(self, backend: Backend, location: Path) -> None:
        self._backend = backend
        self._location = location
        self._open: list[Store] = []

    def __call__(self) -> Store:
        store = self._backend.open(self._location)
        self._open.append(store)
        return store

    def reopen(self, store: Store) -> Store:
        """Close ``store`` and open the same data again."""
        self._open.remove(store)
        store.close()
        return self()

    def close_all(self) -> None:
        while self._open:
            self._open.pop().close()


@pytest.fixture
def opener(backend: Backend, tmp_path: Path) -> Iterator[Opener]:
    made = Opener(backend, tmp_path)
    yield made
    made.close_all()


@pytest.fixture
def log(opener: Opener) -> Store:
    return opener()


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
) -> NewBatch:
    """A new batch; its body names ``tag`` so that it can be recognised when read back."""
    return NewBatch(
        batch_id=str(uuid.uuid4()),
        input_id=input_id,
        received_at_ms=at,
        channel=channel,
        body=body if body is not None else f'{{"tag":"{tag}"}}'.encode(),
        ip=ip,
        source_request_id=srid,
        historical=historical,
    )


def as_stored(offset: int, new: NewBatch) -> StoredBatch:
    return StoredBatch(
        offset=offset,
        batch_id=new.batch_id,
        input_id=new.input_id,
        received_at_ms=new.received_at_ms,
        channel=new.channel,
        body=new.body,
        ip=new.ip,
        historical=new.historical,
    )


def offsets_of(result: AppendResult) -> list[int]:
    """The offsets of a result in which nothing was a duplicate."""
    assert None not in result.offsets
    return [o for o in result.offsets if o is not None]


def everything(log: Store) -> list[StoredBatch]:
    return log.read(0, 1_000_000)


def strictly_increasing(values: Sequence[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


# -- the batch log --------------------------------------------------------------------------


def test_empty_log(log: Store) -> None:
    assert log.last_offset() == 0
    assert log.read(0, 10) == []
    assert log.committed("anyone") == 0


def test_append_returns_offsets_in_order(log: Store) -> None:
    news = [batch(f"b{i}") for i in range(5)]
    result = log.append(news, 0)
    offsets = offsets_of(result)
    assert len(offsets) == 5
    assert all(o > 0 for o in offsets)
    assert strictly_increasing(offsets)
    assert (result.stored, result.duplicates) == (5, 0)
    assert everything(log) == [as_stored(o, n) for o, n in zip(offsets, news, strict=True)]
    assert log.last_offset() == offsets[-1]


def test_offsets_strictly_increase_across_appends(log: Store) -> None:
    offsets: list[int] = []
    for size in [1, 3, 0, 7, 1, 2, 0, 5]:
        result = log.append([batch(f"{len(offsets)}-{i}") for i in range(size)], 0)
        assert len(result.offsets) == size
        offsets += offsets_of(result)
        if offsets:
            assert log.last_offset() == offsets[-1]
    assert len(offsets) == 19
    assert strictly_increasing(offsets)
    assert [s.offset for s in everything(log)] == offsets


def test_empty_append_changes_nothing(log: Store) -> None:
    log.append([batch("a")], 0)
    before = log.last_offset()
    result = log.append([], 0)
    assert result.offsets == []
    assert (result.stored, result.duplicates) == (0, 0)
    assert log.last_offset() == before


def test_stored_fields_round_trip(log: Store) -> None:
    news = [
        batch("plain"),
        batch("ip", ip="2001:db8::1", channel="partner", historical=True, at=1_234_567_890_123),
        batch(body='{"name":"Zoë 🎉","n":[1,2.5,null]}'.encode()),
        batch(body=b"[]" * 50_000),  # 100 kB
        batch(input_id="input-2", ip="10.0.0.1"),
    ]
    offsets = offsets_of(log.append(news, 0))
    assert everything(log) == [as_stored(o, n) for o, n in zip(offsets, news, strict=True)]


def test_read_pages_in_order(log: Store) -> None:
    news = [batch(f"b{i}") for i in range(25)]
    offsets: list[int] = []
    for start in range(0, 25, 4):
        offsets += offsets_of(log.append(news[start : start + 4], 0))

    pages: list[list[StoredBatch]] = []
    after = 0
    while page := log.read(after, 7):
        assert len(page) <= 7
        pages.append(page)
        after = page[-1].offset
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    read = [s for p in pages for s in p]
    assert [s.offset for s in read] == offsets
    assert [s.batch_id for s in read] == [n.batch_id for n in news]

    assert [s.batch_id for s in log.read(offsets[9], 5)] == [n.batch_id for n in news[10:15]]
    assert [s.offset for s in log.read(offsets[9] - 1, 1)] == [offsets[9]]
    assert log.read(offsets[-1], 10) == []
    assert log.read(offsets[-1] + 1000, 10) == []
    assert [s.offset for s in log.read(0, 1)] == [offsets[0]]


def test_dedup_within_the_window(log: Store) -> None:
    first = log.append([batch("first", srid="req-1", at=1_000)], 0)
    assert first.stored == 1
    again = log.append([batch("again", srid="req-1", at=2_000)], 500)
    assert again.offsets == [None]
    assert (again.stored, again.duplicates) == (0, 1)
    assert [s.body for s in everything(log)] == [b'{"tag":"first"}']


def test_dedup_window_includes_its_start(log: Store) -> None:
    log.append([batch("first", srid="req-1", at=1_000)], 0)
    assert log.append([batch("again", srid="req-1", at=2_000)], 1_000).offsets == [None]
    assert log.append([batch("later", srid="req-1", at=2_000)], 1_001).stored == 1


def test_dedup_outside_the_window_stores_again(log: Store) -> None:
    (old,) = offsets_of(log.append([batch("old", srid="req-1", at=1_000)], 0))
    result = log.append([batch("new", srid="req-1", at=5_000)], 2_000)
    (new,) = offsets_of(result)
    assert new > old
    # The batch stored again is now the one the window is measured from.
    assert log.append([batch("dup", srid="req-1", at=6_000)], 4_000).offsets == [None]
    assert [s.body for s in everything(log)] == [b'{"tag":"old"}', b'{"tag":"new"}']


def test_dedup_within_one_append(log: Store) -> None:
    result = log.append(
        [
            batch("a", srid="x"),
            batch("a-again", srid="x"),
            batch("b", srid="y"),
            batch("no-id-1"),
            batch("no-id-2"),
            batch("b-again", srid="y"),
            batch("x-other-input", srid="x", input_id="input-2"),
        ],
        0,
    )
    offsets = result.offsets
    assert [o is None for o in offsets] == [False, True, False, False, False, True, False]
    assert (result.stored, result.duplicates) == (5, 2)
    stored = [o for o in offsets if o is not None]
    assert strictly_increasing(stored)
    assert [s.body for s in everything(log)] == [
        b'{"tag":"a"}',
        b'{"tag":"b"}',
        b'{"tag":"no-id-1"}',
        b'{"tag":"no-id-2"}',
        b'{"tag":"x-other-input"}',
    ]


def test_dedup_is_per_input(log: Store) -> None:
    log.append([batch("one", srid="same", input_id="input-1")], 0)
    assert log.append([batch("two", srid="same", input_id="input-2")], 0).stored == 1
    assert log.append([batch("three", srid="same", input_id="input-1")], 0).stored == 0
    assert log.append([batch("four", srid="same", input_id="input-2")], 0).stored == 0


def test_batches_without_source_request_id_are_never_duplicates(log: Store) -> None:
    for _ in range(3):
        assert log.append([batch("same"), batch("same")], 0).stored == 2
    assert len(everything(log)) == 6


def test_forget_dedup_before(log: Store) -> None:
    log.append([batch("a", srid="a", at=1_000), batch("b", srid="b", at=2_000)], 0)
    log.append([batch("c", srid="c", at=3_000)], 0)
    assert log.forget_dedup_before(2_000) == 1  # only entries strictly older
    assert log.forget_dedup_before(2_000) == 0
    # Forgotten: stored again even with a window reaching back to the start of time.
    assert log.append([batch("a2", srid="a", at=4_000)], 0).stored == 1
    # Kept: still duplicates.
    assert log.append([batch("b2", srid="b", at=4_000), batch("c2", srid="c")], 0).stored == 0
    assert len(everything(log)) == 4  # forgetting drops no batch
    assert log.forget_dedup_before(10_000) == 3
    assert log.append([batch("b3", srid="b"), batch("c3", srid="c")], 0).stored == 2


def test_failed_append_stores_nothing(log: Store) -> None:
    log.append([batch("before")], 0)
    last = log.last_offset()
    broken = NewBatch(
        batch_id="broken",
        input_id="input-1",
        received_at_ms=1_000,
        channel="server_to_server",
        body=None,  # type: ignore[arg-type]  # not bytes: the backend must refuse it
    )
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own error type
        log.append([batch("good", srid="good"), broken], 0)
    assert log.last_offset() == last
    assert [s.body for s in everything(log)] == [b'{"tag":"before"}']
    # The good batch's source_request_id was not remembered either.
    assert log.append([batch("good", srid="good")], 0).stored == 1


def test_committed_offsets_per_consumer(log: Store) -> None:
    assert log.committed("firehose") == 0
    log.commit("firehose", 5)
    log.commit("warehouse", 2)
    assert log.committed("firehose") == 5
    assert log.committed("warehouse") == 2
    assert log.committed("other") == 0
    log.commit("firehose", 9)
    assert log.committed("firehose") == 9
    assert log.committed("warehouse") == 2


def test_state_persists_across_reopen(opener: Opener, log: Store) -> None:
    news = [batch(f"b{i}", srid=f"s{i}") for i in range(3)]
    offsets = offsets_of(log.append(news, 0))
    log.commit("firehose", offsets[1])
    log.commit("warehouse", offsets[2])

    reopened = opener.reopen(log)
    assert everything(reopened) == [as_stored(o, n) for o, n in zip(offsets, news, strict=True)]
    assert reopened.last_offset() == offsets[-1]
    assert reopened.committed("firehose") == offsets[1]
    assert reopened.committed("warehouse") == offsets[2]
    # The de-duplication entries survive too, and new offsets continue after the old ones.
    assert reopened.append([batch("dup", srid="s0")], 0).offsets == [None]
    (later,) = offsets_of(reopened.append([batch("later")], 0))
    assert later > offsets[-1]


# -- inputs and credentials -----------------------------------------------------------------


def make_input(name: str, created_at_ms: int = 1_000, **changes: object) -> Input:
    fields: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "type": "server",
        "rate_limit": 270.0,
        "enabled": True,
        "created_at_ms": created_at_ms,
    }
    fields.update(changes)
    return Input(**fields)  # type: ignore[arg-type]


def make_credential(item: Input, created_at_ms: int = 1_000, key: str | None = None) -> Credential:
    return Credential(
        key=key or f"pk_{uuid.uuid4().hex}",
        input_id=item.id,
        secret_hash=f"sha256:{uuid.uuid4().hex}",
        created_at_ms=created_at_ms,
        enabled=True,
    )


def test_inputs_add_get_list(log: Store) -> None:
    assert log.list_inputs() == []
    web = make_input("web", 3_000, type="web", rate_limit=0.0)
    ios = make_input("ios", 1_000, type="ios", rate_limit=12.5, enabled=False)
    feed = make_input("a-feed", 2_000, type="feed")
    for item in (web, ios, feed):
        log.add_input(item, make_credential(item))
    assert log.get_input("web") == web
    assert log.get_input(web.id) == web
    assert log.get_input("ios") == ios
    assert log.get_input("nope") is None
    assert log.list_inputs() == [ios, feed, web]  # oldest first


def test_duplicate_input_name(log: Store) -> None:
    first = make_input("server")
    log.add_input(first, make_credential(first))
    second = make_input("server", 2_000)
    credential = make_credential(second)
    with pytest.raises(DuplicateName):
        log.add_input(second, credential)
    # Nothing of the refused input was stored.
    assert log.list_inputs() == [first]
    assert log.get_input(second.id) is None
    assert log.find_credential(credential.key) is None
    assert log.credentials(second.id) == []


def test_input_enable_disable_and_rate_limit(opener: Opener, log: Store) -> None:
    item = make_input("server")
    other = make_input("other", 2_000)
    log.add_input(item, make_credential(item))
    log.add_input(other, make_credential(other))
    log.set_input_enabled(item.id, False)
    assert log.get_input("server") == make_changed(item, enabled=False)
    log.set_rate_limit(item.id, 0.5)
    assert log.get_input("server") == make_changed(item, enabled=False, rate_limit=0.5)
    log.set_input_enabled(item.id, True)
    log.set_rate_limit(item.id, 0)
    expected = make_changed(item, enabled=True, rate_limit=0.0)
    assert log.get_input("server") == expected
    assert log.get_input("other") == other  # untouched
    reopened = opener.reopen(log)
    assert reopened.list_inputs() == [expected, other]


def make_changed(item: Input, **changes: object) -> Input:
    fields = {f: getattr(item, f) for f in item.__struct_fields__}
    fields.update(changes)
    return Input(**fields)  # type: ignore[arg-type]


def test_credentials_add_find_enable_disable(opener: Opener, log: Store) -> None:
    item = make_input("server")
    other = make_input("other", 2_000)
    first = make_credential(item, 1_000)
    log.add_input(item, first)
    log.add_input(other, make_credential(other))
    second = make_credential(item, 2_000)
    third = make_credential(item, 2_000)  # same time: still listed in the order added
    log.add_credential(second)
    log.add_credential(third)
    assert log.credentials(item.id) == [first, second, third]
    assert log.credentials("no-such-input") == []

    assert log.find_credential(second.key) == (second, item)
    assert log.find_credential("pk_unknown") is None

    log.set_credential_enabled(first.key, False)
    disabled = Credential(
        key=first.key,
        input_id=item.id,
        secret_hash=first.secret_hash,
        created_at_ms=first.created_at_ms,
        enabled=False,
    )
    assert log.find_credential(first.key) == (disabled, item)
    assert log.credentials(item.id) == [disabled, second, third]

    # The credential carries its input's current state.
    log.set_input_enabled(item.id, False)
    found = log.find_credential(second.key)
    assert found is not None
    assert found[1].enabled is False

    log.set_credential_enabled(first.key, True)
    reopened = opener.reopen(log)
    assert reopened.find_credential(first.key) == (first, make_changed(item, enabled=False))
    assert [c.key for c in reopened.credentials(item.id)] == [first.key, second.key, third.key]


# -- group commit ---------------------------------------------------------------------------


def test_group_commit_gives_each_caller_its_own_offsets(log: Store) -> None:
    appender = GroupCommitAppender(log, max_group_batches=40)

    async def one(caller: int) -> tuple[list[NewBatch], AppendResult]:
        news = [batch(f"{caller}-{i}", input_id=f"input-{caller % 3}") for i in range(caller % 5)]
        return news, await appender.append(news, 0)

    async def main() -> list[tuple[list[NewBatch], AppendResult]]:
        return await asyncio.gather(*(one(caller) for caller in range(300)))

    try:
        results = asyncio.run(main())
    finally:
        appender.close()

    stored = {s.offset: s for s in everything(log)}
    seen: set[int] = set()
    for news, result in results:
        offsets = offsets_of(result)
        assert len(offsets) == len(news)
        assert strictly_increasing(offsets)
        for offset, new in zip(offsets, news, strict=True):
            assert stored[offset] == as_stored(offset, new)
        assert seen.isdisjoint(offsets)
        seen.update(offsets)
    assert seen == set(stored)
    assert len(seen) == sum(caller % 5 for caller in range(300))


def test_group_commit_deduplicates_across_callers(log: Store) -> None:
    appender = GroupCommitAppender(log)

    async def one(caller: int) -> AppendResult:
        return await appender.append(
            [batch(f"same-{caller}", srid="same"), batch(f"own-{caller}", srid=f"own-{caller}")],
            0,
        )

    async def main() -> list[AppendResult]:
        return await asyncio.gather(*(one(caller) for caller in range(50)))

    try:
        results = asyncio.run(main())
    finally:
        appender.close()
    assert sum(r.offsets[0] is not None for r in results) == 1
    assert all(r.offsets[1] is not None for r in results)
    assert len(everything(log)) == 51


class FailingLog:
    """A batch log that waits for a gate, then fails (or passes through) every append."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.fail = True
        self.calls = 0

    def append(self, batches: Sequence[NewBatch], dedup_since_ms: int) -> AppendResult:
        self.calls += 1
        assert self.gate.wait(30)
        if self.fail:
            raise OSError("disk on fire")
        return self.inner.append(batches, dedup_since_ms)


def test_group_commit_propagates_a_store_error_to_every_waiter(log: Store) -> None:
    failing = FailingLog(log)
    appender = GroupCommitAppender(failing)  # type: ignore[arg-type]

    async def main() -> tuple[list[AppendResult | BaseException], int, AppendResult]:
        tasks = [
            asyncio.create_task(appender.append([batch(f"{i}", srid=f"s{i}")], 0))
            for i in range(20)
        ]
        while failing.calls == 0:  # the first append is in the store, the rest queued
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        failing.gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        calls = failing.calls
        failing.fail = False  # the store recovers: the appender must still work
        after = await appender.append([batch("after", srid="s0")], 0)
        return outcomes, calls, after

    try:
        outcomes, calls, after = asyncio.run(main())
    finally:
        appender.close()
    assert len(outcomes) == 20
    for outcome in outcomes:
        assert isinstance(outcome, OSError)
        assert str(outcome) == "disk on fire"
    # The callers queued behind the blocked append failed together, as one group.
    assert calls <= 2
    assert after.stored == 1
    assert [s.body for s in everything(log)] == [b'{"tag":"after"}']
