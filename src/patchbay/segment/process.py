"""The segment stage in a process of its own, so that audiences use a core of their own.

In ``patchbay serve`` collecting and resolving share one process and one GIL; the segment
stage, the busiest stage after resolve, runs in a child process (:mod:`patchbay.child`:
spawned, restarted when it exits on its own, stopped with the server, its metrics on the
server's ``/metrics``). The child runs the stage's :class:`~patchbay.pipeline.StageFeed`
without hand-offs: every :data:`POLL_S` it reads what resolve committed since its checkpoint
back from storage (the batches from the log, their users from the resolved users), a page
at a time, with the stage's tick (window expiries, builds, sends) between pages. When it
put membership messages in the outbox it sends ``("notify", outputs)``, which the parent
passes on to the delivery engine.

Nothing is lost or counted twice whatever stops first: the stage's engine commits its own
checkpoint with its state (:mod:`.engine`), and resolve keeps the resolved users while the
stage reads them (``keeps_history``).

One segment stage runs at a time across the processors of the scale-out mode: its work on
time (window expiries, builds, sending what is pending) is global, and one user's
batches may be on two partitions (seen anonymously, then logged in), which two stages
would update at once. So every child competes for the stage's lead
(:mod:`patchbay.leadership`: a PostgreSQL advisory lock; on the embedded store the one
child always leads). The leader runs the stage over every partition; the others are hot
standbys that read nothing and try for the lead every :data:`~patchbay.leadership.POLL_S`.
A leader that loses the lead stops the stage, drops it (a new one starts from the stored
checkpoints next time) and becomes a standby. Until it notices, each of its stage's
writes needs the lead to be held when it starts (:class:`LeaderOnly`: every commit,
including the time-driven ones, and every enqueue of membership messages), which the
PostgreSQL lead guarantees to have stopped before a new leader acts
(:mod:`patchbay.backends.postgres.leadership`); its checkpointed commits, and the
positions its feed commits as it stops, are fenced like every stage's besides, so they
never overwrite the next leader's.
"""

from __future__ import annotations

import dataclasses
import gc
import signal
import time
from collections.abc import Callable
from typing import Any, cast

import structlog
from prometheus_client import CollectorRegistry

from patchbay.backends.abstract import AudienceStore, Backend
from patchbay.backends.records import Checkpoint, SegmentChanges, Since
from patchbay.child import ChildProcess, Message, ParentLink, child_setup
from patchbay.heap import collect_rarely
from patchbay.leadership import Leadership, ensure_leading
from patchbay.pipeline import StageElsewhere, StageFeed
from patchbay.segment import runs_compiled
from patchbay.settings import Settings

log = structlog.get_logger("patchbay.segment")

#: How often the child looks for batches resolve committed since its checkpoint.
POLL_S = 0.02
#: The most resolved batches the child reads back and hands the stage at once.
PAGE = 500


class SegmentProcess(ChildProcess):
    """Runs the segment stage in a child process over the backend ``settings`` name;
    ``notify`` wakes the delivery engine for outputs the stage put messages in the outbox
    for."""

    #: What the parent's pipeline knows of the stage (it keeps the resolved users for it).
    stage = StageElsewhere("segment", keeps_history=True)

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        notify: Callable[[set[str]], None] | None = None,
    ) -> None:
        def on_message(message: Message) -> None:
            if message[0] == "notify" and notify is not None:
                notify(set(message[1]))

        super().__init__("segment", run_segment, (settings,), registry, on_message)


class LeaderOnly:
    """``store`` for the stage of a leader: its writes (:meth:`commit`, and :meth:`sync`,
    which comes before every enqueue of membership messages) raise
    :class:`~patchbay.leadership.NotLeader` once ``leadership`` is not held."""

    def __init__(self, store: AudienceStore, leadership: Leadership) -> None:
        self._store = store
        self._leadership = leadership

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def commit(
        self,
        changes: SegmentChanges,
        checkpoint: Checkpoint | None = None,
        since: Since | None = None,
    ) -> None:
        """The store's commit, while leading."""
        ensure_leading(self._leadership)
        self._store.commit(changes, checkpoint, since)

    def sync(self) -> None:
        """The store's sync, while leading."""
        ensure_leading(self._leadership)
        self._store.sync()


def run_segment(link: ParentLink, settings: Settings) -> None:
    """The child process's entry point: a standby until it leads, the stage while it
    does."""
    from patchbay.backends import open_backend
    from patchbay.leadership import POLL_S as LEADER_POLL_S
    from patchbay.leadership import open_leadership
    from patchbay.metrics import leader_gauge

    child_setup(settings.log_level)
    backend = open_backend(settings)
    leadership = open_leadership(backend, "segment")
    collect_rarely()
    leading = leader_gauge(link.registry, "segment")
    leading.set(0)
    terminated = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True  # (no locks in a signal handler: the loops look)

    def stop_within(seconds: float) -> bool:
        """Wait up to ``seconds``; whether the child is to stop."""
        deadline = time.monotonic() + seconds
        while not (link.stopping.wait(min(0.2, seconds)) or terminated):
            if time.monotonic() >= deadline:
                return False
        return True

    signal.signal(signal.SIGTERM, on_sigterm)
    link.listen()
    lead = _Lead(link, backend, leadership)
    log.info(
        "segment_stage_started",
        backend=backend.name,
        compiled=runs_compiled(),
        gc_threshold=gc.get_threshold(),
    )
    try:
        while not (link.stopping.is_set() or terminated):
            if not leadership.acquire():  # a standby: nothing but this, every second
                stop_within(LEADER_POLL_S)
                continue
            log.info("segment_leader_acquired", backend=backend.name)
            leading.set(1)
            lead.start()
            try:
                while not stop_within(LEADER_POLL_S):
                    if not leadership.acquire():
                        log.warning("segment_leader_lost", backend=backend.name)
                        break
            finally:
                leading.set(0)
                lead.stop()
    finally:
        leadership.release()
        backend.close()
        log.info("segment_stage_stopped", terminated=terminated)


class _Lead:
    """The stage of a leader, over every partition: started anew (from the stored
    checkpoints) each time this process takes the lead."""

    def __init__(self, link: ParentLink, backend: Backend, leadership: Leadership) -> None:
        from patchbay.backoff import StorageBackoff
        from patchbay.metrics import SegmentMetrics, fenced_counter

        audiences = cast(AudienceStore, LeaderOnly(backend.audiences, leadership))
        self._backend = dataclasses.replace(backend, audiences=audiences)
        self._link = link
        # (registered once: a process may lead several times)
        self._metrics = SegmentMetrics(link.registry)
        self._backoff = StorageBackoff("segment", registry=link.registry)
        self._fenced = fenced_counter(link.registry, "segment")
        self._feed: StageFeed | None = None

    def start(self) -> None:
        from patchbay.assignment import AllPartitions
        from patchbay.clock import SystemClock
        from patchbay.segment.stage import SegmentStage

        def notify(outputs: set[str]) -> None:
            self._link.send(("notify", sorted(outputs)))

        backend = self._backend
        stage = SegmentStage(backend, SystemClock(), notify, metrics=self._metrics)
        self._feed = StageFeed(
            stage,
            backend,
            idle_s=POLL_S,
            page=PAGE,
            backoff=self._backoff,
            owned=AllPartitions(backend.log.partitions).owned,
            fenced=self._fenced,
        )
        self._feed.start()

    def stop(self) -> None:
        if self._feed is not None:
            self._feed.stop()
            self._feed = None
