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

The child processes the partitions it owns (:mod:`patchbay.assignment`): every one, but
on a Kafka log, where it joins a consumer group of the segment stage's own
(``KAFKA_GROUP.segment``), so that the segment children of all the processors share the
partitions between them, whichever processor resolves them; its commits are fenced like
every stage's.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import structlog
from prometheus_client import CollectorRegistry

from patchbay.child import ChildProcess, Message, ParentLink, child_setup
from patchbay.pipeline import StageElsewhere
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


def run_segment(link: ParentLink, settings: Settings) -> None:
    """The child process's entry point."""
    from patchbay.assignment import open_assignment
    from patchbay.backends import open_backend
    from patchbay.backoff import StorageBackoff
    from patchbay.clock import SystemClock
    from patchbay.metrics import SegmentMetrics, fenced_counter
    from patchbay.pipeline import StageFeed
    from patchbay.segment.stage import SegmentStage

    child_setup(settings.log_level)
    backend = open_backend(settings)

    def notify(outputs: set[str]) -> None:
        link.send(("notify", sorted(outputs)))

    stage = SegmentStage(backend, SystemClock(), notify, metrics=SegmentMetrics(link.registry))
    backoff = StorageBackoff(stage.name, registry=link.registry)
    assignment = open_assignment(
        backend,
        group=f"{settings.kafka_group}.{stage.name}",
        session_timeout_s=settings.kafka_session_timeout_s,
        registry=link.registry,
        stage=stage.name,
    )
    feed = StageFeed(
        stage,
        backend,
        idle_s=POLL_S,
        page=PAGE,
        backoff=backoff,
        owned=assignment.owned,
        fenced=fenced_counter(link.registry, stage.name),
    )
    terminated = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True  # (no locks in a signal handler: the loop below looks)

    signal.signal(signal.SIGTERM, on_sigterm)
    link.listen()
    feed.start()
    log.info("segment_stage_started", backend=backend.name)
    try:
        while not (link.stopping.wait(0.2) or terminated):
            pass
    finally:
        feed.stop()
        assignment.close()
        backend.close()
        log.info("segment_stage_stopped", terminated=terminated)
