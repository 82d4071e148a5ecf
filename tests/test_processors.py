"""Processors sharing the log's partitions (Kafka consumer group) over one PostgreSQL state:
each resolves its share; one that leaves hands its partitions to the other, and a commit it
still had in flight is refused (fenced), so every batch is resolved exactly once and the
profiles are those of one embedded-mode run."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import msgspec
import pytest

from patchbay.backends.abstract import Backend
from patchbay.backends.kafka import KafkaBatchLog
from patchbay.backends.kafka.group import KafkaGroupAssignment
from patchbay.backends.memory import open_memory
from patchbay.backends.postgres import PostgresDatabase, open_postgres
from patchbay.backends.records import (
    Checkpoint,
    LogPosition,
    NewBatch,
    Since,
    StateChanges,
)
from patchbay.clock import ManualClock
from patchbay.collect.decode import decode_batch
from patchbay.collect.userkey import user_key
from patchbay.pipeline import Pipeline
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolvedBatch, ResolveStage
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.secretbox import SecretBox, key_path
from tests import infra
from tests.resolve.harness import WrappedState

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

PARTITIONS = 6
USERS = 24
#: Rebalances and catching up take seconds: generous deadlines, no timing assertions.
DEADLINE_S = 90.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in time"
        time.sleep(0.05)


def batches(start: int, stop: int) -> list[NewBatch]:
    """Batches ``start`` to ``stop``, one attribute per batch: each user's carry its key
    (as the Events API stamps it), so they stay in one partition, in order."""
    made = []
    for i in range(start, stop):
        user = i % USERS
        body = {
            "user_identities": {"customer_id": f"user{user}"},
            "user_attributes": {f"b{i}": i, "last": i},
        }
        made.append(
            NewBatch(
                f"batch-{i}",
                f"input-{user}",
                1_000 + i,
                "server_to_server",
                _json(body),
                partition_key=user_key(decode_batch(_json(body))),
            )
        )
    return made


_json = msgspec.json.encode


class Commits:
    """The resolved positions of every commit that went through, across processors (and
    written to ``path``, a line each, by a processor in another process)."""

    def __init__(self, path: Path | None = None) -> None:
        self.positions: list[LogPosition] = []
        self.lock = threading.Lock()
        self._file = path.open("a", buffering=1) if path is not None else None

    def add(self, positions: Collection[LogPosition]) -> None:
        with self.lock:
            self.positions.extend(positions)
            if self._file is not None:
                self._file.writelines(f"{p}\n" for p in positions)


class RecordedState(WrappedState):
    """A processor's state store: records what each successful commit resolved; while
    ``hold`` is set, a commit waits for ``release`` first (a processor stalled mid-commit)."""

    def __init__(self, inner: Backend, commits: Commits) -> None:
        super().__init__(inner.state)
        self.commits = commits
        self.hold = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()

    def commit(
        self,
        changes: StateChanges,
        checkpoint: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        if self.hold.is_set() and changes.resolved:
            self.held.set()
            assert self.release.wait(DEADLINE_S)
        self.inner.commit(changes, checkpoint, since, before)
        self.commits.add([p for p, _ in changes.resolved])


class Tally:
    """A stage after resolve that notes every batch it handles (and keeps the resolved
    users, so that the test can count them)."""

    name = "tally"
    keeps_history = True

    def __init__(self) -> None:
        self.handled: set[LogPosition] = set()

    def handle(self, batches: Sequence[ResolvedBatch]) -> None:
        self.handled.update(b.stored.position for b in batches)


@dataclasses.dataclass
class Processor:
    backend: Backend
    state: RecordedState
    assignment: KafkaGroupAssignment
    pipeline: Pipeline
    tally: Tally

    def owned(self) -> frozenset[int]:
        return self.assignment.owned()


class Cluster:
    """A schema, a topic and a consumer group of this test's own."""

    def __init__(self, location: Path, name: str, commits: Commits) -> None:
        self.location = location
        self.name = name
        self.schema = f"p_{name}"
        self.topic = f"patchbay.test.processors.{name}"
        self.group = f"processors-{name}"
        (location / "data").mkdir(mode=0o700, exist_ok=True)
        self.box = SecretBox(key_path(location / "data", None))
        self.commits = commits
        self.opened: list[Backend] = []

    def backend(self) -> Backend:
        db = PostgresDatabase(infra.postgres_url(), schema=self.schema, pool_size=4)
        log = KafkaBatchLog(infra.kafka_url(), topic=self.topic, partitions=PARTITIONS)
        backend = open_postgres(db, log, self.box)
        self.opened.append(backend)
        return backend

    def processor(self) -> Processor:
        opened = self.backend()
        state = RecordedState(opened, self.commits)
        backend = dataclasses.replace(opened, state=state)
        assignment = KafkaGroupAssignment(
            infra.kafka_url(), self.topic, self.group, session_timeout_s=6.0
        )
        service = ResolveService(state, Resolver(IdentityStrategy()), ManualClock(5_000))
        tally = Tally()
        pipeline = Pipeline(backend, service, [tally], assignment=assignment)
        return Processor(backend, state, assignment, pipeline, tally)

    def close(self) -> None:
        for backend in self.opened:
            backend.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, uuid.uuid4().hex[:12], Commits())
    yield made
    made.close()


def ends(backend: Backend) -> Checkpoint:
    return {
        p: end for p in range(backend.log.partitions) if (end := backend.log.end(p)) is not None
    }


def reference(appended: list[NewBatch]) -> dict[str, Profile]:
    """The profile of each user after one embedded-mode resolver took every batch."""
    backend = open_memory(partitions=PARTITIONS)
    backend.log.append(appended)
    ResolveStage(backend.log, backend.state, Resolver(IdentityStrategy())).run_until_caught_up()
    return profiles(backend)


def profiles(backend: Backend) -> dict[str, Profile]:
    found = {}
    for user in range(USERS):
        (mpid,) = backend.state.users_with(Identity("customer_id", f"user{user}"))
        profile = backend.state.profile(mpid)
        assert profile is not None
        found[f"user{user}"] = profile
    return found


def shared(processors: Collection[Processor]) -> bool:
    """Whether every processor owns a share, the shares disjoint and covering the log."""
    owned = [p.owned() for p in processors]
    covered = frozenset().union(*owned)
    return (
        all(owned)
        and covered == frozenset(range(PARTITIONS))
        and sum(map(len, owned)) == (PARTITIONS)
    )


def test_processors_share_partitions_and_a_leaver_applies_nothing_twice(
    cluster: Cluster,
) -> None:
    """Two processors each resolve a share of the partitions, together every batch once.
    One stalls mid-commit and leaves the group: the other takes its partitions over from
    their committed checkpoint, and the stalled commit, let go once the new owner moved
    the partition on, is refused. Every batch was committed exactly once, every stage
    checkpoint reaches the end of each partition, and the profiles are those of one
    embedded-mode run."""
    writer = cluster.backend()
    first_half, second_half = batches(0, 240), batches(240, 480)
    writer.log.append(first_half)
    a, b = cluster.processor(), cluster.processor()
    try:
        wait_for(lambda: shared([a, b]), "a share each")
        a.pipeline.start()
        b.pipeline.start()
        wait_for(lambda: writer.state.checkpoint() == ends(writer), "the first half resolved")
        assert a.tally.handled and b.tally.handled

        b.state.hold.set()  # b stalls in its next commit, then leaves the group
        writer.log.append(second_half)
        assert b.state.held.wait(DEADLINE_S)
        b.assignment.close()
        wait_for(lambda: a.owned() == frozenset(range(PARTITIONS)), "a owns every partition")
        wait_for(lambda: writer.state.checkpoint() == ends(writer), "everything resolved")
        b.state.release.set()  # the stalled commit: its partition moved on meanwhile
        wait_for(lambda: b.pipeline.resolve.fenced == 1, "b's stalled commit refused")
        wait_for(lambda: writer.positions.get("tally") == ends(writer), "the stage at every end")
    finally:
        b.state.release.set()
        for processor in (a, b):
            processor.pipeline.stop()
            processor.assignment.close()

    every = [at for p in range(PARTITIONS) for at in _positions(writer, p)]
    assert sorted(cluster.commits.positions) == sorted(every)  # each once
    assert len(every) == 480
    assert sum(len(writer.state.resolved(p, None, 1000)) for p in range(PARTITIONS)) == 480
    assert a.tally.handled | b.tally.handled == set(every)  # (at least once)
    assert a.pipeline.resolve.fenced == 0
    assert profiles(writer) == reference(first_half + second_half)


def _positions(backend: Backend, partition: int) -> list[LogPosition]:
    return [s.position for s in backend.log.read(partition, None, 1000)]


def test_a_killed_processor_loses_nothing_and_applies_nothing_twice(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A processor in another process is killed (SIGKILL) while batches stream in: once the
    group's session timeout passes, the other takes its partitions over from their
    committed checkpoints. Every batch is resolved, none committed twice, and the
    profiles are those of one embedded-mode run."""
    writer = cluster.backend()
    first_half, second_half = batches(0, 240), batches(240, 480)
    writer.log.append(first_half)
    out = tmp_path / "child-commits"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.test_processors", str(tmp_path), cluster.name, str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    a = cluster.processor()
    try:
        wait_for(lambda: 0 < len(a.owned()) < PARTITIONS, "a share each")
        a.pipeline.start()
        wait_for(lambda: writer.state.checkpoint() == ends(writer), "the first half resolved")
        assert out.exists() and out.read_text()  # the child resolved its share
        for start in range(0, len(second_half), 20):
            writer.log.append(second_half[start : start + 20])
            if start == 100:
                child.send_signal(signal.SIGKILL)
            time.sleep(0.05)
        assert child.wait(DEADLINE_S) == -signal.SIGKILL
        wait_for(lambda: a.owned() == frozenset(range(PARTITIONS)), "a owns every partition")
        wait_for(lambda: writer.state.checkpoint() == ends(writer), "everything resolved")
        wait_for(lambda: writer.positions.get("tally") == ends(writer), "the stage at every end")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        a.pipeline.stop()
        a.assignment.close()

    every = [at for p in range(PARTITIONS) for at in _positions(writer, p)]
    recorded = cluster.commits.positions + [
        LogPosition.parse(line) for line in out.read_text().split()
    ]
    assert len(recorded) == len(set(recorded))  # none twice
    assert set(recorded) <= set(every)
    assert sum(len(writer.state.resolved(p, None, 1000)) for p in range(PARTITIONS)) == 480
    assert profiles(writer) == reference(first_half + second_half)


def run_processor(location: Path, name: str, out: Path) -> None:
    """A processor of ``name``'s cluster in this process, until killed."""
    cluster = Cluster(location, name, Commits(out))
    processor = cluster.processor()
    processor.pipeline.start()
    threading.Event().wait()


if __name__ == "__main__":
    run_processor(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
