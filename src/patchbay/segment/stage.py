"""The segment stage: keeps every audience's memberships up to date as resolved batches
arrive and as time passes, and turns membership changes into Audience Data for partners.

It is a stage of the pipeline (:mod:`patchbay.pipeline`): :meth:`SegmentStage.handle`
takes resolved batches (the engine counts and evaluates them exactly once, see
:mod:`.engine`), and :meth:`SegmentStage.tick`, called on the same thread every tenth of
a second, does what time drives:

1. reloads the audiences when they changed (a new or changed audience is picked up within
   a second);
2. re-evaluates the users whose windowed events left their windows;
3. builds new and changed audiences over the stored history, a step at a time, for at
   most :data:`BUILD_BUDGET_S` per tick, so live batches keep flowing meanwhile;
4. sends: each output's pending membership changes become
   ``audience_membership_change_request`` messages in the durable outbox, once the output
   accepted the audience's subscription, batched as the module's registration asks
   (``bulk_configuration``), then the delivery engine sends them like any delivery
   (retries, parking, replay, isolation between outputs). An output has one membership
   message in the outbox at a time, so its partner gets them in order (also with several
   deliverers: only the one leasing the message sends it, and only its success removes
   it; docs/scale-out.md); the changes that happen meanwhile go in the next one (a user's
   add and delete in between collapse).

The outbox is written before the pending changes are removed: a crash in between builds
the same messages again, with the same ids, and the outbox keeps one of each. The engine's
commits are not synced one by one (:meth:`AudienceStore.commit`): the store is synced
before messages go into the outbox, so a power failure never takes back a change a
partner may have heard of, nor gives its message's id to another.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator, Sequence

import structlog

from patchbay.backends.abstract import Backend
from patchbay.backends.records import (
    AudienceConnection,
    Delivery,
    ModuleDestination,
    PendingChange,
    SegmentChanges,
)
from patchbay.clock import Clock
from patchbay.errors import StorageFull
from patchbay.firehose import ModuleRegistrationResponse
from patchbay.metrics import SegmentMetrics
from patchbay.resolve.stage import ResolvedBatch
from patchbay.segment.engine import EXPIRE_PAGE, SegmentEngine
from patchbay.segment.messages import flush_policy, membership_requests

log = structlog.get_logger("patchbay.segment")

#: How long each tick may spend building audiences.
BUILD_BUDGET_S = 0.05
#: How long each tick may spend on users whose windows changed.
EXPIRE_BUDGET_S = 0.2
#: The most user profiles in one membership change request.
MAX_PROFILES = 1000
#: How often pending membership changes are looked at when none were recorded since.
RECHECK_S = 0.25
#: How often the audience sizes and builds shown in ``/metrics`` are read again.
METRICS_INTERVAL_S = 5.0
#: Name of the delivery connection of membership change messages.
AUDIENCE_CONNECTION = "audiences"
#: The stage's name (its checkpoint's): a constant of its own, which a compiled build reads
#: where ``SegmentStage.name``, an attribute of each instance there, is not a string.
STAGE = "segment"


class SegmentStage:
    """The pipeline stage of audiences; see the module documentation."""

    name = STAGE
    keeps_history = True

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        notify: Callable[[set[str]], None] | None = None,
        build_budget_s: float = BUILD_BUDGET_S,
        max_profiles: int = MAX_PROFILES,
        metrics: SegmentMetrics | None = None,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._notify = notify
        self._build_budget = build_budget_s
        self._max_profiles = max_profiles
        self.engine = self._new_engine()
        self._registrations: dict[tuple[str, int], ModuleRegistrationResponse] = {}
        self._metrics = metrics
        self._measured_at = 0.0
        self._shown: set[str] = set()
        self._pending_shown: set[str] = set()
        self._last_sent: dict[str, list[str]] = {}
        self._flushed_recorded = 0
        self._looked_at = 0.0
        self.sent = 0

    def _new_engine(self) -> SegmentEngine:
        backend = self._backend
        return SegmentEngine(
            backend.audiences, backend.state, backend.log, backend.inputs, self._clock
        )

    @contextlib.contextmanager
    def _resumed_when_full(self) -> Iterator[None]:
        """On a full store the commit was rolled back, but the engine's memory may be ahead
        of it: a new engine starts again from what is committed (its checkpoint)."""
        try:
            yield
        except StorageFull:
            self.engine = self._new_engine()
            raise

    def resume(self, partitions: Collection[int]) -> None:
        """Start ``partitions`` again from the stored checkpoint (the feed gained them, or
        another processor moved them on): a new engine reads it."""
        self.engine = self._new_engine()

    def handle(self, batches: Sequence[ResolvedBatch]) -> None:
        """Count and evaluate ``batches`` (durably, with the stage's own checkpoint)."""
        with self._resumed_when_full():
            self.engine.refresh()
            self.engine.apply(batches)
        self._publish()

    def tick(self) -> None:
        """Reload audiences, expire windows, build, send; see the module documentation."""
        with self._resumed_when_full():
            self.engine.refresh()
            deadline = time.monotonic() + EXPIRE_BUDGET_S
            while self.engine.expire() == EXPIRE_PAGE and time.monotonic() < deadline:
                pass
            if self.engine.building():
                self.engine.timed(self._build_budget)
            self.flush()
        self._publish()

    def _publish(self) -> None:
        """Move the engine's counts to the metrics; every few seconds, sizes and builds."""
        metrics, engine = self._metrics, self.engine
        if metrics is None:
            return
        names = {a.id: a.name for a in engine.catalog.audiences.values()}
        for counts, metric in ((engine.joins, metrics.joins), (engine.leaves, metrics.leaves)):
            for audience_id, n in counts.items():
                if audience_id in names:
                    metric.labels(names[audience_id]).inc(n)
            counts.clear()
        metrics.batches.inc(engine.counted)
        metrics.expired.inc(engine.expired)
        engine.counted = engine.expired = 0
        if time.monotonic() - self._measured_at < METRICS_INTERVAL_S:
            return
        self._measured_at = time.monotonic()
        store = self._backend.audiences
        sizes = store.sizes()
        for audience_id, name in names.items():
            metrics.members.labels(name).set(sizes.get(audience_id, 0))
            build = engine.builds.get(audience_id)
            ratio = 1.0
            if build is not None and build.phase != "live":
                ratio = build.users_done / build.users_total if build.users_total else 0.0
            metrics.built.labels(name).set(ratio)
        for gone in self._shown - set(names.values()):
            metrics.forget(gone)
        self._shown = set(names.values())
        pending = store.pending_outputs()
        for output in {*pending, *self._pending_shown}:
            metrics.pending.labels(output).set(pending.get(output, (0, 0))[0])
        self._pending_shown = set(pending)

    # -- sending -----------------------------------------------------------------------

    def flush(self, force: bool = False) -> int:
        """Put the pending membership changes of every output that is due into the outbox
        (``force``: whatever the batching policy); return how many messages."""
        recorded = self.engine.pending_recorded
        if not force and recorded == self._flushed_recorded and not self._recheck():
            return 0  # nothing new since the last look, and not time to look again
        self._flushed_recorded = recorded
        self._looked_at = self._clock.monotonic()
        store = self._backend.audiences
        waiting = store.pending_outputs()
        if not waiting:
            return 0
        now = self._clock.now_ms()
        connections = store.list_audience_connections()
        sent = 0
        for output_name, (count, oldest_ms) in sorted(waiting.items()):
            mine = {c.audience_id: c for c in connections if c.output == output_name}
            sent += self._flush_output(output_name, mine, count, oldest_ms, now, force)
        self.sent += sent
        return sent

    def _flush_output(
        self,
        output_name: str,
        connections: dict[int, AudienceConnection],
        count: int,
        oldest_ms: int,
        now: int,
        force: bool,
    ) -> int:
        store = self._backend.audiences
        output = self._backend.outputs.get_output(output_name)
        registration = self._registration(output.destination) if output else None
        if output is None or registration is None:
            # the output or its module is gone: what waited for it can never be sent
            self._drop(output_name, "output or module missing")
            return 0
        threshold, wait_s = flush_policy(registration)
        if not force and count < threshold and now - oldest_ms < wait_s * 1000:
            return 0
        if self._in_flight(output_name):
            return 0  # in order: the next message once the output took the last one
        made = 0
        while True:
            changes = store.pending(output_name, self._max_profiles * 4)
            ready = [c for c in changes if self._ready(c, connections)]
            gone = [c.seq for c in changes if c.audience_id not in connections]
            if not ready:
                if gone:
                    store.commit(SegmentChanges(flushed=gone))
                return made
            mpids = {c.mpid for c in ready}
            profiles = self._backend.state.profiles(mpids)
            requests = membership_requests(
                output,
                registration,
                connections,
                self.engine.records,
                ready,
                profiles,
                self._max_profiles,
            )
            deliveries = [
                Delivery(
                    id=delivery_id,
                    output=output_name,
                    connection_id=AUDIENCE_CONNECTION,
                    batch_offset=0,
                    payload=payload,
                    created_at_ms=now,
                    since_ms=now,
                    next_attempt_ms=now,
                )
                for delivery_id, payload in requests
            ]
            if deliveries:
                store.sync()  # the changes are durable before a partner may hear of them
                self._backend.outbox.enqueue(deliveries)
                self._last_sent[output_name] = [d.id for d in deliveries]
            store.commit(SegmentChanges(flushed=[c.seq for c in ready] + gone))
            made += len(deliveries)
            if deliveries and self._notify is not None:
                self._notify({output_name})
            if len(changes) < self._max_profiles * 4 or deliveries:
                return made

    def _recheck(self) -> bool:
        """Whether to look at the pending changes although none were recorded since the
        last look: what waits for a batching delay, a subscription or a message in flight
        is looked at again every :data:`RECHECK_S` (counting them reads every one)."""
        return self._clock.monotonic() - self._looked_at >= RECHECK_S

    def _in_flight(self, output_name: str) -> bool:
        """Whether the last membership messages put in the outbox for the output are still
        there (pending or parked): the next ones wait for them, so that a partner receives
        a user's joins and leaves in the order they happened (the engine sends an output's
        deliveries concurrently)."""
        last = self._last_sent.get(output_name)
        if not last:
            return False
        outbox = self._backend.outbox
        last[:] = [i for i in last if outbox.get_delivery(i) is not None]
        return bool(last)

    @staticmethod
    def _ready(change: PendingChange, connections: dict[int, AudienceConnection]) -> bool:
        connection = connections.get(change.audience_id)
        return connection is not None and connection.subscribed_at_ms is not None

    def _drop(self, output_name: str, reason: str) -> None:
        store = self._backend.audiences
        while changes := store.pending(output_name, 10_000):
            store.commit(SegmentChanges(flushed=[c.seq for c in changes]))
            log.warning(
                "audience_changes_dropped", output=output_name, count=len(changes), reason=reason
            )

    def _registration(self, destination: object) -> ModuleRegistrationResponse | None:
        if not isinstance(destination, ModuleDestination):
            return None
        module = self._backend.modules.get_module(destination.module)
        if module is None:
            return None
        key = (module.name, module.updated_at_ms)
        cached = self._registrations.get(key)
        if cached is None:
            from patchbay.partner.registration import registration_of

            cached = self._registrations[key] = registration_of(module)
        return cached
