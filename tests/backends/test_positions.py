"""The contract of :class:`~patchbay.backends.abstract.StagePositions`, on every backend,
and how a stage uses it with the log: read after its checkpoint, commit, resume."""

from __future__ import annotations

import pytest

from patchbay.backends.abstract import Backend, BatchLog, StagePositions
from patchbay.backends.records import CheckpointMoved, LogPosition, NewBatch, StoredBatch
from tests.deployments import Stores


@pytest.fixture
def positions(backend: Backend) -> StagePositions:
    return backend.positions


def at(partition: int, offset: int) -> LogPosition:
    return LogPosition(partition, offset)


def new(n: int) -> NewBatch:
    return NewBatch(
        batch_id=f"b{n}",
        input_id="in",
        received_at_ms=1_000 + n,
        channel="server_to_server",
        body=b'{"n": %d}' % n,
    )


def poll(positions: StagePositions, log: BatchLog, stage: str, limit: int) -> list[StoredBatch]:
    """What ``stage`` reads next from partition 0 of ``log``, after its checkpoint."""
    return log.read(0, positions.get(stage).get(0), limit)


def test_never_committed_stage_has_an_empty_checkpoint(positions: StagePositions) -> None:
    """A stage that never committed starts from nothing."""
    assert positions.get("activate") == {}


def test_stages_are_independent(positions: StagePositions) -> None:
    """Each stage has its own checkpoint; committing one leaves the others."""
    positions.commit("firehose", {0: at(0, 5)})
    positions.commit("warehouse", {0: at(0, 2)})
    assert positions.get("firehose") == {0: at(0, 5)}
    assert positions.get("warehouse") == {0: at(0, 2)}
    assert positions.get("other") == {}
    positions.commit("firehose", {0: at(0, 9)})
    assert positions.get("firehose") == {0: at(0, 9)}
    assert positions.get("warehouse") == {0: at(0, 2)}


def test_fenced_commit_applies_only_from_where_it_started(positions: StagePositions) -> None:
    """A commit given the positions it started from (``since``; ``None``: no position
    yet) applies only if the stage's stored positions are still those, and raises
    ``CheckpointMoved`` naming the partitions that moved otherwise, changing nothing.
    Another stage's positions are not compared."""
    positions.commit("activate", {0: at(0, 3)}, since={0: None})
    positions.commit("segment", {1: at(1, 8)})
    positions.commit("activate", {1: at(1, 2)}, since={1: None})
    with pytest.raises(CheckpointMoved) as caught:
        positions.commit("activate", {0: at(0, 5), 1: at(1, 4)}, since={0: at(0, 3), 1: None})
    assert caught.value.partitions == [1]
    with pytest.raises(CheckpointMoved):
        positions.commit("activate", {0: at(0, 9)}, since={0: at(0, 2)})
    assert positions.get("activate") == {0: at(0, 3), 1: at(1, 2)}
    positions.commit("activate", {0: at(0, 5), 1: at(1, 4)}, since={0: at(0, 3), 1: at(1, 2)})
    assert positions.get("activate") == {0: at(0, 5), 1: at(1, 4)}
    assert positions.get("segment") == {1: at(1, 8)}


def test_an_unsynced_commit_is_read_back_and_fenced_alike(positions: StagePositions) -> None:
    """``synced=False`` (a stage that keeps its own checkpoint) records the same positions,
    fenced the same way."""
    positions.commit("segment", {0: at(0, 4)}, since={0: None}, synced=False)
    assert positions.get("segment") == {0: at(0, 4)}
    with pytest.raises(CheckpointMoved):
        positions.commit("segment", {0: at(0, 6)}, since={0: at(0, 3)}, synced=False)
    positions.commit("segment", {0: at(0, 6)}, since={0: at(0, 4)}, synced=False)
    assert positions.get("segment") == {0: at(0, 6)}


def test_checkpoint_per_partition(positions: StagePositions) -> None:
    """A commit moves the partitions it names and keeps the others; an empty commit
    changes nothing; the returned checkpoint is a copy."""
    positions.commit("activate", {0: at(0, 3), 1: at(1, 7)})
    positions.commit("activate", {1: at(1, 8), 2: at(2, 1)})
    positions.commit("activate", {})
    assert positions.get("activate") == {0: at(0, 3), 1: at(1, 8), 2: at(2, 1)}
    returned = positions.get("activate")
    returned[0] = at(0, 100)
    assert positions.get("activate")[0] == at(0, 3)


def test_a_stage_may_rewind(positions: StagePositions) -> None:
    """A commit replaces the position even when it is older (a stage rewinding to
    reprocess)."""
    positions.commit("activate", {0: at(0, 9)})
    positions.commit("activate", {0: at(0, 1)})
    assert positions.get("activate") == {0: at(0, 1)}


def test_read_commit_and_rewind_over_the_log(backend: Backend) -> None:
    """A stage reads the log after its checkpoint: what it committed is not read again,
    what it read without committing is; rewinding reprocesses; stages read independently."""
    log, positions = backend.log, backend.positions
    log.append([new(i) for i in range(10)])
    first = poll(positions, log, "resolve", 4)
    assert [b.batch_id for b in first] == ["b0", "b1", "b2", "b3"]
    positions.commit("resolve", {0: first[-1].position})
    second = poll(positions, log, "resolve", 4)
    assert [b.batch_id for b in second] == ["b4", "b5", "b6", "b7"]
    assert [b.batch_id for b in poll(positions, log, "resolve", 4)] == [b.batch_id for b in second]
    assert len(poll(positions, log, "forward", 100)) == 10
    positions.commit("resolve", {0: first[0].position})
    assert [b.batch_id for b in poll(positions, log, "resolve", 2)] == ["b1", "b2"]


@pytest.mark.persists
def test_checkpoints_persist_and_a_stage_resumes_after_reopen(
    stores: Stores, backend: Backend
) -> None:
    """Checkpoints committed before closing are there after reopening, and a stage resumes
    reading after its checkpoint, not after what it read but did not commit."""
    backend.log.append([new(i) for i in range(10)])
    first = poll(backend.positions, backend.log, "resolve", 4)
    backend.positions.commit("resolve", {0: first[-1].position})
    backend.positions.commit("warehouse", {0: at(0, 2), 3: at(3, 4)})
    poll(backend.positions, backend.log, "resolve", 4)  # read, never committed

    reopened = stores.reopen(backend)
    assert reopened.positions.get("resolve") == {0: first[-1].position}
    assert reopened.positions.get("warehouse") == {0: at(0, 2), 3: at(3, 4)}
    rest = poll(reopened.positions, reopened.log, "resolve", 100)
    assert [b.batch_id for b in rest] == [f"b{i}" for i in range(4, 10)]
    reopened.positions.commit("resolve", {0: rest[-1].position})
    assert poll(reopened.positions, reopened.log, "resolve", 100) == []
    assert reopened.log.end(0) == rest[-1].position
