"""The contract of :class:`~patchbay.backends.abstract.Outbox`, on every backend."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import msgspec
import pytest

from patchbay.backends.abstract import Backend, Outbox
from patchbay.backends.records import Delivery, QueueStats
from patchbay.backends.sqlite import DELIVERIES_FILE, open_sqlite
from tests.deployments import Stores

NOW = 1_700_000_000_000


@pytest.fixture
def outbox(backend: Backend) -> Outbox:
    return backend.outbox


def delivery(i: int, output: str = "hook", at: int = NOW, created: int | None = None) -> Delivery:
    """Delivery ``d<i>``, due at ``at`` (created then, unless ``created`` says)."""
    return Delivery(
        id=f"d{i}",
        output=output,
        connection_id="c1",
        batch_offset=i,
        payload=b'{"n": %d}' % i,
        created_at_ms=at if created is None else created,
        since_ms=at,
        next_attempt_ms=at,
    )


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


def test_empty_outbox(outbox: Outbox) -> None:
    """A new outbox has nothing due, parked or counted; unknown ids change nothing."""
    assert outbox.due("hook", NOW, 10) == []
    assert outbox.parked() == []
    assert outbox.stats() == {}
    assert outbox.get_delivery("d1") is None
    assert outbox.replay(NOW) == 0
    assert outbox.enqueue([]) == 0
    outbox.succeeded("d1")
    outbox.succeeded_many([])
    outbox.retry_at("d1", 1, NOW, "x")
    outbox.park("d1", 1, "x", NOW)
    assert outbox.get_delivery("d1") is None


def test_enqueue_is_idempotent(outbox: Outbox) -> None:
    """Only deliveries with a new id are added (also when repeated in one call), and the
    first one enqueued is kept."""
    assert outbox.enqueue([delivery(1), delivery(2)]) == 2
    assert outbox.enqueue([delivery(1), delivery(2), delivery(3)]) == 1
    changed = msgspec.structs.replace(delivery(4), payload=b"first")
    assert outbox.enqueue([changed, delivery(4), delivery(4)]) == 1
    assert ids(outbox.due("hook", NOW, 10)) == ["d1", "d2", "d3", "d4"]
    assert outbox.get_delivery("d4") == changed
    assert outbox.get_delivery("d1") == delivery(1)


def test_due_respects_time_limit_output_and_exclusions(outbox: Outbox) -> None:
    """``due`` gives the pending deliveries of one output due at ``now`` (inclusive), at
    most ``limit``, without the excluded ids."""
    outbox.enqueue([delivery(1), delivery(2, at=NOW + 5000), delivery(3, output="other")])
    assert ids(outbox.due("hook", NOW - 1, 10)) == []
    assert ids(outbox.due("hook", NOW, 10)) == ["d1"]
    assert ids(outbox.due("hook", NOW + 5000, 10)) == ["d1", "d2"]
    assert ids(outbox.due("hook", NOW + 5000, 1)) == ["d1"]
    assert ids(outbox.due("hook", NOW + 5000, 10, ["d1"])) == ["d2"]
    assert ids(outbox.due("other", NOW, 10)) == ["d3"]
    assert outbox.due("missing", NOW, 10) == []


def test_due_oldest_due_first_then_created(outbox: Outbox) -> None:
    """Due deliveries come by ``next_attempt_ms``, then ``created_at_ms``."""
    outbox.enqueue(
        [
            delivery(1, at=NOW + 2, created=NOW),
            delivery(2, at=NOW + 1, created=NOW + 9),
            delivery(3, at=NOW + 1, created=NOW + 3),
            delivery(4, at=NOW, created=NOW + 20),
        ]
    )
    assert ids(outbox.due("hook", NOW + 10, 10)) == ["d4", "d3", "d2", "d1"]


def test_due_fills_the_limit_past_exclusions(outbox: Outbox) -> None:
    """Excluded ids do not count against ``limit``; ``limit`` 0 gives nothing."""
    outbox.enqueue([delivery(i, at=NOW + i) for i in range(6)])
    assert ids(outbox.due("hook", NOW + 10, 2, ["d0", "d1", "d3"])) == ["d2", "d4"]
    assert outbox.due("hook", NOW + 10, 0) == []
    assert outbox.due("hook", NOW + 10, 0, ["d0"]) == []


def test_retry_park_replay(outbox: Outbox) -> None:
    """A retried delivery is due again later with its attempt and error; a parked one is
    not due and keeps its error; a replay makes it pending, due now, with a new window and
    no attempts, the same message under the same id; success removes it."""
    outbox.enqueue([delivery(1), delivery(2)])
    outbox.retry_at("d1", 1, NOW + 1000, "HTTP 503")
    assert ids(outbox.due("hook", NOW, 10)) == ["d2"]
    assert ids(outbox.due("hook", NOW + 1000, 10)) == ["d2", "d1"]
    assert outbox.get_delivery("d1") == msgspec.structs.replace(
        delivery(1), attempts=1, next_attempt_ms=NOW + 1000, last_error="HTTP 503"
    )
    outbox.park("d1", 2, "HTTP 400", NOW + 2000)
    parked = outbox.parked()
    assert parked == [
        msgspec.structs.replace(
            delivery(1),
            state="parked",
            attempts=2,
            next_attempt_ms=NOW + 1000,
            last_error="HTTP 400",
            parked_at_ms=NOW + 2000,
        )
    ]
    assert outbox.due("hook", NOW + 10_000, 10) == [delivery(2)]
    assert outbox.parked("other") == []
    assert outbox.stats()["hook"] == QueueStats(pending=1, parked=1, oldest_pending_ms=NOW)
    outbox.retry_at("d1", 5, NOW, "ignored")  # a parked delivery is not retried
    assert outbox.get_delivery("d1") == parked[0]

    assert outbox.replay(NOW + 9000, output="hook") == 1
    assert outbox.replay(NOW + 9000, output="hook") == 0
    again = outbox.get_delivery("d1")
    assert again == msgspec.structs.replace(
        delivery(1), since_ms=NOW + 9000, next_attempt_ms=NOW + 9000, last_error="HTTP 400"
    )
    outbox.succeeded("d1")
    assert outbox.get_delivery("d1") is None
    assert ids(outbox.due("hook", NOW + 10_000, 10)) == ["d2"]


def test_parked_oldest_first_by_output_with_limit(outbox: Outbox) -> None:
    """Parked deliveries come oldest parked first (then oldest created), of one output or
    all, at most ``limit``."""
    outbox.enqueue(
        [
            delivery(1, created=NOW + 1),
            delivery(2, created=NOW),
            delivery(3, output="other"),
            delivery(4),
        ]
    )
    outbox.park("d1", 1, "x", NOW + 500)
    outbox.park("d2", 1, "x", NOW + 500)
    outbox.park("d3", 1, "x", NOW + 100)
    outbox.park("d4", 1, "x", NOW + 900)
    assert ids(outbox.parked()) == ["d3", "d2", "d1", "d4"]
    assert ids(outbox.parked("hook")) == ["d2", "d1", "d4"]
    assert ids(outbox.parked("hook", limit=2)) == ["d2", "d1"]
    assert ids(outbox.parked(limit=1)) == ["d3"]
    assert outbox.parked("missing") == []


def test_replay_by_output_and_ids(outbox: Outbox) -> None:
    """A replay takes only parked deliveries, of ``output`` and among ``ids`` when given."""
    outbox.enqueue([delivery(1), delivery(2), delivery(3, output="other"), delivery(4)])
    for i in (1, 2, 3):
        outbox.park(f"d{i}", 1, "x", NOW)
    assert outbox.replay(NOW, ids=["d2", "d4", "missing"]) == 1
    assert ids(outbox.parked()) == ["d1", "d3"]
    assert outbox.replay(NOW, output="other", ids=["d1"]) == 0
    assert outbox.replay(NOW, output="other") == 1
    assert ids(outbox.parked()) == ["d1"]
    assert outbox.replay(NOW + 1) == 1
    assert outbox.parked() == []
    assert ids(outbox.due("hook", NOW + 1, 10)) == ["d2", "d4", "d1"]


def test_succeeded_many(outbox: Outbox) -> None:
    """``succeeded_many`` removes every delivery named, ignoring unknown ids."""
    outbox.enqueue([delivery(i) for i in range(5)])
    outbox.succeeded_many(["d0", "d2", "d4", "missing"])
    outbox.succeeded_many([])
    assert ids(outbox.due("hook", NOW, 10)) == ["d1", "d3"]


def test_stats_by_output(outbox: Outbox) -> None:
    """Stats count pending and parked deliveries by output, with the oldest pending
    creation time; outputs with no delivery are absent."""
    outbox.enqueue(
        [
            delivery(1, created=NOW + 5),
            delivery(2, created=NOW + 3),
            delivery(3, created=NOW + 1),
            delivery(4, output="other"),
        ]
    )
    outbox.park("d3", 1, "x", NOW)
    outbox.park("d4", 1, "x", NOW)
    assert outbox.stats() == {
        "hook": QueueStats(pending=2, parked=1, oldest_pending_ms=NOW + 3),
        "other": QueueStats(pending=0, parked=1, oldest_pending_ms=None),
    }
    outbox.succeeded_many(["d1", "d2", "d3"])
    assert outbox.stats() == {"other": QueueStats(parked=1)}


def test_enqueue_from_threads(outbox: Outbox) -> None:
    """Threads enqueueing overlapping deliveries at once add each id exactly once."""
    threads, per_thread = 4, 60
    added: list[int] = []
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            start.wait()
            for first in range(thread * 20, thread * 20 + per_thread, 5):
                added.append(outbox.enqueue([delivery(i) for i in range(first, first + 5)]))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    expected = {f"d{i}" for i in range((threads - 1) * 20 + per_thread)}
    assert sum(added) == len(expected)
    assert set(ids(outbox.due("hook", NOW, 1000))) == expected


LEASE = 1000


def test_two_owners_never_get_the_same_delivery_while_a_lease_holds(outbox: Outbox) -> None:
    """``due`` leases what it hands out: another owner gets the rest, the owner itself
    gets its own again (renewed); a look without an owner sees them all."""
    outbox.enqueue([delivery(i) for i in range(1, 5)])
    assert ids(outbox.due("hook", NOW, 2, owner="a", lease_ms=LEASE)) == ["d1", "d2"]
    assert ids(outbox.due("hook", NOW, 10, owner="b", lease_ms=LEASE)) == ["d3", "d4"]
    assert outbox.due("hook", NOW + LEASE - 1, 10, owner="c", lease_ms=LEASE) == []
    assert len(outbox.due("hook", NOW + LEASE - 1, 10)) == 4  # a look, leased or not
    assert ids(outbox.due("hook", NOW + 500, 10, owner="a", lease_ms=LEASE)) == ["d1", "d2"]
    assert ids(outbox.due("hook", NOW + 500, 10, ["d1"], owner="a", lease_ms=LEASE)) == ["d2"]
    # a's renewed leases hold past the first ones' end; b's have expired
    later = NOW + LEASE
    assert ids(outbox.due("hook", later, 10, owner="c", lease_ms=LEASE)) == ["d3", "d4"]


def test_an_expired_lease_goes_to_another_owner(outbox: Outbox) -> None:
    """Once a lease expires, the delivery goes to whoever asks; the first owner's late
    success, retry or park then changes nothing, the new owner's success removes it."""
    outbox.enqueue([delivery(1)])
    assert ids(outbox.due("hook", NOW, 10, owner="a", lease_ms=LEASE)) == ["d1"]
    assert outbox.due("hook", NOW + LEASE - 1, 10, owner="b", lease_ms=LEASE) == []
    assert ids(outbox.due("hook", NOW + LEASE, 10, owner="b", lease_ms=LEASE)) == ["d1"]
    outbox.succeeded("d1", owner="a")
    outbox.succeeded_many(["d1"], owner="a")
    outbox.retry_at("d1", 1, NOW + 10 * LEASE, "late", owner="a")
    outbox.park("d1", 1, "late", NOW, owner="a")
    assert outbox.get_delivery("d1") == delivery(1)
    assert outbox.due("hook", NOW + LEASE, 10, owner="a", lease_ms=LEASE) == []
    outbox.succeeded("d1", owner="b")
    assert outbox.get_delivery("d1") is None


def test_acknowledging_ends_the_lease(outbox: Outbox) -> None:
    """A retry, a park (then a replay) or a success by the owner ends its lease: the
    delivery is anyone's again (or gone)."""
    outbox.enqueue([delivery(1), delivery(2), delivery(3)])
    assert len(outbox.due("hook", NOW, 10, owner="a", lease_ms=LEASE)) == 3
    outbox.retry_at("d1", 1, NOW, "HTTP 503", owner="a")
    assert ids(outbox.due("hook", NOW, 10, owner="b", lease_ms=LEASE)) == ["d1"]
    outbox.park("d2", 1, "HTTP 400", NOW, owner="a")
    assert outbox.replay(NOW) == 1
    assert ids(outbox.due("hook", NOW, 10, owner="c", lease_ms=LEASE)) == ["d2"]
    outbox.succeeded_many(["d3"], owner="a")
    assert outbox.get_delivery("d3") is None
    # without an owner (an operator's command), acknowledging acts whoever holds it
    outbox.succeeded("d1")
    assert outbox.get_delivery("d1") is None


def test_owners_leasing_from_threads_share_the_deliveries(outbox: Outbox) -> None:
    """Owners leasing and acknowledging at once, on threads, each get a share: every
    delivery goes to exactly one of them."""
    total, owners = 200, 4
    outbox.enqueue([delivery(i) for i in range(total)])
    got: dict[str, list[str]] = {f"o{n}": [] for n in range(owners)}
    start = threading.Barrier(owners)
    errors: list[BaseException] = []

    def work(owner: str) -> None:
        try:
            start.wait()
            while found := outbox.due("hook", NOW, 7, owner=owner, lease_ms=60_000):
                got[owner].extend(ids(found))
                outbox.succeeded_many(ids(found), owner=owner)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(o,)) for o in got]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    handed = [i for found in got.values() for i in found]
    assert sorted(handed) == sorted(f"d{i}" for i in range(total))  # each exactly once
    assert outbox.stats() == {}


@pytest.mark.persists
def test_deliveries_persist_across_reopen(stores: Stores, backend: Backend) -> None:
    """Pending and parked deliveries, with their attempts, are there after reopening."""
    backend.outbox.enqueue([delivery(1), delivery(2), delivery(3)])
    backend.outbox.retry_at("d2", 1, NOW + 5, "HTTP 503")
    backend.outbox.park("d3", 2, "HTTP 400", NOW + 7)
    expected = [backend.outbox.get_delivery(f"d{i}") for i in (1, 2, 3)]
    outbox = stores.reopen(backend).outbox
    assert [outbox.get_delivery(f"d{i}") for i in (1, 2, 3)] == expected
    assert ids(outbox.due("hook", NOW + 5, 10)) == ["d1", "d2"]
    assert ids(outbox.parked()) == ["d3"]


def test_sqlite_keeps_the_outbox_in_a_file_of_its_own(tmp_path: Path) -> None:
    """The embedded backend keeps deliveries in ``deliveries.db``."""
    backend = open_sqlite(tmp_path)
    try:
        backend.outbox.enqueue([delivery(1)])
    finally:
        backend.close()
    assert (tmp_path / DELIVERIES_FILE).exists()


def test_sqlite_adds_the_lease_columns_to_an_earlier_outbox(tmp_path: Path) -> None:
    """A ``deliveries.db`` of an earlier version (no lease columns) gets them when opened:
    its pending deliveries can be leased."""
    open_sqlite(tmp_path).close()
    with sqlite3.connect(tmp_path / DELIVERIES_FILE) as db:
        db.execute("ALTER TABLE deliveries DROP COLUMN leased_by")
        db.execute("ALTER TABLE deliveries DROP COLUMN leased_until_ms")
    backend = open_sqlite(tmp_path)
    try:
        backend.outbox.enqueue([delivery(1)])
        assert ids(backend.outbox.due("hook", NOW, 10, owner="a", lease_ms=LEASE)) == ["d1"]
        assert backend.outbox.due("hook", NOW, 10, owner="b", lease_ms=LEASE) == []
    finally:
        backend.close()
