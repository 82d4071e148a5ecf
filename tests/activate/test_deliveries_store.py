"""The outbox in deliveries.db: idempotent enqueue, due, retry, park and replay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from patchbay.activate.store import Connection, Delivery, DuplicateOutput, Filters, Output
from patchbay.store.sqlite_deliveries import DELIVERIES_FILE, SqliteDeliveryStore

NOW = 1_700_000_000_000


def delivery(i: int, output: str = "hook", at: int = NOW) -> Delivery:
    return Delivery(
        id=f"d{i}",
        output=output,
        connection_id="c1",
        batch_offset=i,
        payload=b'{"n": %d}' % i,
        created_at_ms=at,
        since_ms=at,
        next_attempt_ms=at,
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[SqliteDeliveryStore]:
    store = SqliteDeliveryStore(tmp_path)
    yield store
    store.close()


def test_file_of_its_own(tmp_path: Path, outbox: SqliteDeliveryStore) -> None:
    assert (tmp_path / DELIVERIES_FILE).exists()


def test_enqueue_is_idempotent(outbox: SqliteDeliveryStore) -> None:
    assert outbox.enqueue([delivery(1), delivery(2)]) == 2
    assert outbox.enqueue([delivery(1), delivery(2), delivery(3)]) == 1
    assert [d.id for d in outbox.due("hook", NOW, 10)] == ["d1", "d2", "d3"]


def test_due_respects_time_limit_and_exclusions(outbox: SqliteDeliveryStore) -> None:
    outbox.enqueue([delivery(1), delivery(2, at=NOW + 5000), delivery(3, output="other")])
    assert [d.id for d in outbox.due("hook", NOW, 10)] == ["d1"]
    assert [d.id for d in outbox.due("hook", NOW + 5000, 10)] == ["d1", "d2"]
    assert [d.id for d in outbox.due("hook", NOW + 5000, 10, ["d1"])] == ["d2"]
    assert outbox.next_due_ms("hook") == NOW
    assert outbox.next_due_ms("nothing") is None


def test_retry_park_replay(outbox: SqliteDeliveryStore) -> None:
    outbox.enqueue([delivery(1), delivery(2)])
    outbox.retry_at("d1", 1, NOW + 1000, "HTTP 503")
    assert [d.id for d in outbox.due("hook", NOW, 10)] == ["d2"]
    first = outbox.get_delivery("d1")
    assert first is not None and first.attempts == 1 and first.last_error == "HTTP 503"
    outbox.park("d1", 2, "HTTP 400", NOW + 2000)
    parked = outbox.parked()
    assert [d.id for d in parked] == ["d1"]
    assert parked[0].last_error == "HTTP 400" and parked[0].state == "parked"
    assert outbox.parked("other") == []
    stats = outbox.stats()["hook"]
    assert (stats.pending, stats.parked) == (1, 1)
    assert outbox.replay(NOW + 9000, output="hook") == 1
    again = outbox.get_delivery("d1")
    assert again is not None
    assert again.state == "pending" and again.since_ms == NOW + 9000 and again.attempts == 0
    assert again.payload == b'{"n": 1}'  # the same message, the same id
    outbox.succeeded("d1")
    assert outbox.get_delivery("d1") is None


def test_replay_by_id(outbox: SqliteDeliveryStore) -> None:
    outbox.enqueue([delivery(1), delivery(2)])
    outbox.park("d1", 1, "x", NOW)
    outbox.park("d2", 1, "x", NOW)
    assert outbox.replay(NOW, ids=["d2"]) == 1
    assert [d.id for d in outbox.parked()] == ["d1"]


def test_outputs_and_connections(outbox: SqliteDeliveryStore) -> None:
    output = Output("hook", "webhook", NOW, NOW, url="http://x", settings={"token": "hunter2"})
    outbox.add_output(output)
    with pytest.raises(DuplicateOutput):
        outbox.add_output(output)
    assert outbox.get_output("hook") == output
    assert "hunter2" not in repr(output)
    assert outbox.set_paused("hook", True, "because", NOW + 1)
    paused = outbox.get_output("hook")
    assert paused is not None and paused.paused and paused.paused_reason == "because"
    assert not outbox.set_paused("missing", True, None, NOW)
    filters = Filters(environment="production", event_types=["custom_event"], sample_percent=50)
    connection = Connection("c1", "input-1", "hook", NOW, {"a": "1"}, filters)
    outbox.add_connection(connection)
    with pytest.raises(DuplicateOutput):
        outbox.add_connection(Connection("c2", "input-1", "hook", NOW))
    assert outbox.list_connections() == [connection]
    assert outbox.remove_connection("c1")
    assert not outbox.remove_connection("c1")


def test_pending_deliveries_survive_reopening(tmp_path: Path) -> None:
    store = SqliteDeliveryStore(tmp_path)
    store.enqueue([delivery(1)])
    store.close()
    store = SqliteDeliveryStore(tmp_path)
    try:
        assert [d.id for d in store.due("hook", NOW, 10)] == ["d1"]
    finally:
        store.close()


def test_succeeded_many_removes_in_one_transaction(outbox: SqliteDeliveryStore) -> None:
    outbox.enqueue([delivery(i) for i in range(5)])
    outbox.succeeded_many(["d0", "d2", "d4", "missing"])
    outbox.succeeded_many([])
    assert [d.id for d in outbox.due("hook", NOW, 10)] == ["d1", "d3"]


def test_due_fills_the_limit_past_exclusions(outbox: SqliteDeliveryStore) -> None:
    outbox.enqueue([delivery(i, at=NOW + i) for i in range(6)])
    assert [d.id for d in outbox.due("hook", NOW + 10, 2, ["d0", "d1", "d3"])] == ["d2", "d4"]
    assert outbox.due("hook", NOW + 10, 0) == []
