"""The delivery engine sharing the outbox with another deliverer: it sends only what it
leased, never a delivery after its lease went to another, and what another held once that
lease expires."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from patchbay.activate.engine import (
    EMBEDDED_DELIVERER,
    DeliveryEngine,
    EngineConfig,
    deliverer_id,
)
from patchbay.backends import EMBEDDED_BACKENDS
from patchbay.backends.abstract import Backend
from patchbay.backends.memory import open_memory
from patchbay.partner.transport import Timeouts
from tests.activate.test_engine_support import Deliveries, Recorder, async_wait_for
from tests.activate.test_engine_workers import FAST, enqueue, recorder, run_engine, webhook
from tests.conftest import CountingClock

__all__ = ["recorder"]  # the fixture

LEASE_MS = round(FAST.lease_s * 1000)


def pending(store: Deliveries) -> int:
    stats = store.stats().get("hook")
    return stats.pending if stats else 0


def went_round(clock: CountingClock) -> Callable[[], Awaitable[None]]:
    async def wait() -> None:
        start = clock.reads
        await async_wait_for(lambda: clock.reads >= start + 20, what="the worker's loop")

    return wait


def test_the_engine_leaves_what_another_deliverer_holds(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    """Deliveries another deliverer leased wait for its lease to expire; the rest go at
    once; the engine's own acknowledgements name it."""
    rec, url = recorder
    clock = CountingClock()

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        # the embedded store's one deliverer, or a name of this engine's own
        assert (engine.deliverer == EMBEDDED_DELIVERER) == (backend.name in EMBEDDED_BACKENDS)
        webhook(store, "hook", url + "/hook")
        await engine.refresh()
        # due a second from now, so that the other deliverer leases two of them before the
        # engine (polling on threads of its own) can see any
        due_at = clock.now_ms() + 1_000
        enqueue(store, "hook", 3, due_at)
        held = store.due("hook", due_at, 2, owner="other", lease_ms=LEASE_MS)
        assert [d.id for d in held] == ["hook-0", "hook-1"]
        clock.advance(1.0)
        engine.notify({"hook"})
        await async_wait_for(lambda: pending(store) == 2, what="the free delivery")
        await went_round(clock)()
        assert [r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook")] == ["hook-2"]
        clock.advance(FAST.lease_s)
        await async_wait_for(lambda: pending(store) == 0, what="the expired leases' deliveries")
        sent = sorted(r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook"))
        assert sent == ["hook-0", "hook-1", "hook-2"]

    run_engine(backend, body, clock=clock)


def test_no_send_after_the_lease_went_to_another(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    """The engine's leases expire while it is busy with a slow send and another deliverer
    takes them: the engine sends none of them, its late success removes nothing, and once
    the other's lease expires in turn the engine sends all (at least once)."""
    rec, url = recorder
    rec.set("/hook", delay_s=0.5)
    clock = CountingClock()
    config = dataclasses.replace(FAST, concurrency=1)

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "hook", url + "/hook")
        await engine.refresh()
        enqueue(store, "hook", 3, clock.now_ms())
        engine.notify({"hook"})
        await async_wait_for(lambda: len(rec.at("/hook")) == 1, what="the first send")
        clock.advance(FAST.lease_s)  # every lease of the engine has expired
        taken = store.due("hook", clock.now_ms(), 10, owner="other", lease_ms=LEASE_MS)
        assert len(taken) == 3
        await async_wait_for(lambda: len(rec.at("/hook", handled=True)) == 1, what="the answer")
        for _ in range(3):
            await went_round(clock)()
        assert len(rec.at("/hook")) == 1 and pending(store) == 3
        clock.advance(FAST.lease_s)
        await async_wait_for(lambda: pending(store) == 0, what="every delivery")
        assert sorted(r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook")) == [
            "hook-0",
            "hook-0",
            "hook-1",
            "hook-2",
        ]

    run_engine(backend, body, clock=clock, config=config)


def test_a_lease_must_outlast_a_send() -> None:
    """An engine whose lease could end during a send (its timeouts) is refused, and a
    shared outbox's deliverers have names of their own."""
    config = EngineConfig(timeouts=Timeouts(total=50.0, connect=10.0), lease_s=60.0)
    with pytest.raises(ValueError, match="lease"):
        DeliveryEngine(open_memory(), CountingClock(), config)
    assert deliverer_id("postgres") != deliverer_id("postgres")
    assert deliverer_id("sqlite") == deliverer_id("memory") == EMBEDDED_DELIVERER
