"""The audience store on PostgreSQL under concurrency: several processes (here, several
databases on one schema) and an owner's write racing the segment stage's commit; ids
int32; connections sealed at rest. The contract itself is tests/backends/test_audiences.py."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from patchbay.backends.postgres import PostgresDatabase
from patchbay.backends.postgres.audiences import PostgresAudienceStore
from patchbay.backends.records import MAX_AUDIENCE_ID, DuplicateName, SegmentChanges
from patchbay.errors import PatchbayError
from patchbay.secretbox import SecretBox
from tests import infra
from tests.backends.test_audiences import ALL, NOW, add, audience, build, change, connection

Opener = Callable[[], tuple[PostgresDatabase, PostgresAudienceStore]]


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox(tmp_path / "key")


@pytest.fixture
def open_store(box: SecretBox) -> Iterator[Opener]:
    """Opens the store on one fresh schema, each time through a database (a pool) of its
    own, as another process would."""
    schema = "a_" + uuid.uuid4().hex[:12]
    opened: list[PostgresDatabase] = []

    def opener() -> tuple[PostgresDatabase, PostgresAudienceStore]:
        db = PostgresDatabase(infra.postgres_url(), schema=schema, pool_size=4)
        opened.append(db)
        return db, PostgresAudienceStore(db, box)

    yield opener
    for db in opened:
        db.close()


def run_all(work: Callable[[int], None], threads: int) -> None:
    """Run ``work(0..threads-1)`` on threads started at once; raise what any raised."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait()
            work(index)
        except BaseException as exc:  # noqa: BLE001 - raised below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]


@contextlib.contextmanager
def held(db: PostgresDatabase, statements: list[str], *params: object) -> Iterator[None]:
    """Run ``statements`` (each with ``params``) in a transaction left open while the
    block runs (another process in the middle of a write), then commit it."""
    with db.transaction() as conn:
        for statement in statements:
            conn.execute(statement, params)
        yield


class Waiting:
    """A call on a thread of its own, started by :meth:`start`, which returns once the
    call waits for a lock; :meth:`finish` waits for its end and raises what it raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        self._call = call
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self._call()
        except BaseException as exc:  # noqa: BLE001 - raised by finish()
            self._errors.append(exc)

    def start(self, db: PostgresDatabase) -> Waiting:
        self._thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with db.transaction() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).fetchone()
            if row and row[0]:
                return self
            time.sleep(0.02)
        raise AssertionError("the call never waited for the open transaction")

    def finish(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        if self._errors:
            raise self._errors[0]


def test_processes_adding_audiences_at_once_get_distinct_ids(open_store: Opener) -> None:
    """Processes adding audiences at once each get ids of their own, one of them gets a
    name all want, and the version moved once per audience added."""
    stores = [open_store()[1] for _ in range(2)]
    taken: list[int] = []
    refused: list[int] = []

    def work(index: int) -> None:
        store = stores[index % 2]
        for i in range(5):
            taken.append(store.add_audience(audience(f"t{index}-{i}")).id)
        try:
            taken.append(store.add_audience(audience("wanted")).id)
        except DuplicateName:
            refused.append(index)

    run_all(work, 4)
    assert len(taken) == len(set(taken)) == 4 * 5 + 1
    assert len(refused) == 3
    assert [a.id for a in stores[0].list_audiences()] == sorted(taken)
    assert stores[1].version() == len(taken)


def test_audience_ids_stop_at_the_maximum(open_store: Opener) -> None:
    """Ids are int32: the store gives ``MAX_AUDIENCE_ID`` and refuses to go past it."""
    db, store = open_store()
    add(store, "first")
    with db.transaction() as conn:
        conn.execute(f"ALTER TABLE audiences ALTER COLUMN id RESTART WITH {MAX_AUDIENCE_ID}")
    assert add(store, "last") == [MAX_AUDIENCE_ID]
    version = store.version()
    with pytest.raises(PatchbayError, match="no audience id"):
        store.add_audience(audience("beyond"))
    assert [x.name for x in store.list_audiences()] == ["first", "last"]
    assert store.version() == version


def test_a_commit_racing_a_delete_of_its_audience_leaves_nothing(open_store: Opener) -> None:
    """A commit joining members of an audience another process is deleting waits for the
    delete and leaves its joins, build and pending changes out: no member, count or
    pending change of a deleted audience remains."""
    db, store = open_store()
    a, b = add(store, "a", "b")
    store.put_audience_connection(connection(a))
    changes = SegmentChanges(
        joined=[(a, 1), (b, 1)], pending=[change(a, 1)], builds=[build(a), build(b)]
    )
    deleting = [
        "DELETE FROM audiences WHERE id = %s",
        "DELETE FROM audience_connections WHERE audience_id = %s",
    ]
    with held(db, deleting, a):
        commit = Waiting(lambda: store.commit(changes)).start(db)
    commit.finish()
    assert store.sizes() == {b: 1}
    assert store.members(a, None, ALL) == []
    assert store.memberships(1) == [b]
    assert store.builds() == [build(b)]
    assert store.pending("hook", ALL) == []


def test_a_commit_racing_a_removal_of_its_connection_leaves_nothing(
    open_store: Opener,
) -> None:
    """A commit adding pending changes for a connection another process is removing
    waits for the removal and leaves them out."""
    db, store = open_store()
    (a,) = add(store, "a")
    store.put_audience_connection(connection(a))
    store.put_audience_connection(connection(a, "other"))
    statement = "DELETE FROM audience_connections WHERE audience_id = %s AND output = %s"
    changes = SegmentChanges(pending=[change(a, 1), change(a, 1, "other")])
    with held(db, [statement], a, "hook"):
        commit = Waiting(lambda: store.commit(changes)).start(db)
    commit.finish()
    assert store.pending("hook", ALL) == []
    assert [p.output for p in store.pending("other", ALL)] == ["other"]


def test_a_put_racing_a_subscription_keeps_the_partners_answer(
    open_store: Opener, box: SecretBox
) -> None:
    """Putting a connection while the partner's answer is being recorded waits for it and
    keeps it."""
    db, store = open_store()
    (a,) = add(store, "a")
    store.put_audience_connection(connection(a))
    answered = connection(a, partner_settings={"key": "k-1"}, subscribed_at_ms=NOW)
    doc = box.seal_bytes(msgspec.msgpack.encode(answered))
    statement = "UPDATE audience_connections SET doc = %s WHERE audience_id = %s"
    replacement = connection(a, settings={"list": "y"})
    with held(db, [statement], doc, a):
        put = Waiting(lambda: store.put_audience_connection(replacement)).start(db)
    put.finish()
    assert store.list_audience_connections() == [
        msgspec.structs.replace(replacement, partner_settings={"key": "k-1"}, subscribed_at_ms=NOW)
    ]


def test_processes_committing_the_same_memberships_at_once(open_store: Opener) -> None:
    """Commits of several processes joining and leaving the same memberships at once all
    succeed; the member counts match the members, and every pending change has a seq of
    its own."""
    stores = [open_store()[1] for _ in range(2)]
    ids = add(stores[0], "a", "b", "c")
    for audience_id in ids:
        stores[0].put_audience_connection(connection(audience_id))
    commits = 10

    def work(index: int) -> None:
        rng = random.Random(index)
        for _ in range(commits):
            pairs = [(rng.choice(ids), rng.randrange(20)) for _ in range(15)]
            stores[index % 2].commit(
                SegmentChanges(
                    joined=pairs[:8],
                    left=pairs[8:],
                    pending=[change(a, m) for a, m in pairs[:2]],
                )
            )

    run_all(work, 4)
    store = stores[1]
    assert store.sizes() == {a: n for a in ids if (n := len(store.members(a, None, ALL)))}
    seqs = [p.seq for p in store.pending("hook", ALL)]
    assert len(seqs) == len(set(seqs)) == 4 * commits * 2


def test_connections_are_sealed_at_rest(open_store: Opener) -> None:
    """A connection's settings and the partner's answer are stored encrypted and read back."""
    db, store = open_store()
    (a,) = add(store, "a")
    store.put_audience_connection(connection(a, settings={"list": "secret-list-0123"}))
    store.subscribed(a, "hook", {"key": "secret-answer-0123"}, NOW)
    with db.transaction() as conn:
        stored = conn.execute("SELECT * FROM audience_connections").fetchall()
    assert "secret-" not in repr(stored)
    (found,) = store.list_audience_connections()
    assert found.settings == {"list": "secret-list-0123"}
    assert found.partner_settings == {"key": "secret-answer-0123"}
