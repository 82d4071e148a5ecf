"""The log consumer: polling in order, committing, resuming after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchbay.store.base import NewBatch
from patchbay.store.reader import LogConsumer
from patchbay.store.sqlite import SqliteStore


def _batch(n: int) -> NewBatch:
    return NewBatch(
        batch_id=f"b{n}",
        input_id="in",
        received_at_ms=1_000 + n,
        channel="server_to_server",
        body=b'{"n": %d}' % n,
    )


def test_poll_commit_and_resume(data_dir: Path) -> None:
    store = SqliteStore(data_dir)
    store.append([_batch(i) for i in range(10)], 0)
    consumer = LogConsumer(store, "resolve")
    assert consumer.lag() == 10
    first = consumer.poll(4)
    assert [b.batch_id for b in first] == ["b0", "b1", "b2", "b3"]
    consumer.commit()
    second = consumer.poll(4)  # read but not committed: seen again after a restart
    assert [b.batch_id for b in second] == ["b4", "b5", "b6", "b7"]
    store.close()

    reopened = SqliteStore(data_dir)
    again = LogConsumer(reopened, "resolve")
    assert again.position == first[-1].offset
    assert [b.batch_id for b in again.poll(100)] == [f"b{i}" for i in range(4, 10)]
    assert again.poll() == []
    assert again.lag() == 0
    other = LogConsumer(reopened, "forward")  # consumers are independent
    assert len(other.poll(100)) == 10
    reopened.close()


def test_commit_beyond_position_is_refused(store: SqliteStore) -> None:
    store.append([_batch(1)], 0)
    consumer = LogConsumer(store, "c")
    with pytest.raises(ValueError, match="only read up to 0"):
        consumer.commit(1)
    consumer.poll()
    consumer.commit(1)
    assert store.committed("c") == 1


def test_seek_reprocesses(store: SqliteStore) -> None:
    store.append([_batch(i) for i in range(3)], 0)
    consumer = LogConsumer(store, "c")
    assert len(consumer.poll()) == 3
    consumer.seek(1)
    assert [b.batch_id for b in consumer.poll()] == ["b1", "b2"]
    with pytest.raises(ValueError):
        consumer.seek(-1)
