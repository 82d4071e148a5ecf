"""Grouped acknowledgements and the outbox reads of the engine: successes are removed in
groups, a failed or lost group commit only resends (same ids, never lost), and a worker
never sends a delivery twice while it holds it."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from patchbay.activate.engine import DeliveryEngine
from patchbay.backends import open_backend
from patchbay.backends.abstract import Backend
from patchbay.config import settings_from_process
from patchbay.resolve.stage import StageRunner
from tests.activate.test_engine_support import (
    Deliveries,
    Recorder,
    async_wait_for,
    deliveries_of,
    wait_for,
)
from tests.activate.test_engine_workers import FAST, enqueue, recorder, run_engine, webhook
from tests.deployments import Deployment

__all__ = ["recorder"]  # the fixture

ROOT = Path(__file__).resolve().parents[2]


def pending(store: Deliveries, output: str) -> int:
    stats = store.stats().get(output)
    return stats.pending if stats else 0


def test_successes_are_removed_in_groups(backend: Backend, recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    config = replace(FAST, concurrency=8, page=4, ack_delay_s=0.3, ack_max=1000)

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "hook", url + "/hook")
        await engine.refresh()
        ids = enqueue(store, "hook", 40, engine.clock.now_ms())
        engine.notify({"hook"})
        await async_wait_for(lambda: len(rec.at("/hook")) == 40, what="40 deliveries")
        await async_wait_for(lambda: pending(store, "hook") == 0, what="an empty outbox")
        # a handful of commits for 40 successes, and no delivery sent twice
        assert 1 <= engine.acks.commits <= 10
        sent = sorted(r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook"))
        assert sent == sorted(ids)

    run_engine(backend, body, config=config)


def test_a_full_group_commits_at_once(backend: Backend, recorder: tuple[Recorder, str]) -> None:
    _, url = recorder
    # one send at a time, so that a group holds exactly ack_max successes
    config = replace(FAST, concurrency=1, ack_delay_s=3600.0, ack_max=5)

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "hook", url + "/hook")
        await engine.refresh()
        enqueue(store, "hook", 10, engine.clock.now_ms())
        engine.notify({"hook"})
        await async_wait_for(lambda: pending(store, "hook") == 0, what="two full groups")
        assert engine.acks.commits == 2

    run_engine(backend, body, config=config)


class FailingAcks:
    """A backend's outputs and outbox whose first group commits fail."""

    def __init__(self, store: Deliveries, failures: int = 2) -> None:
        self.store = store
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def succeeded_many(self, delivery_ids: Sequence[str], owner: str | None = None) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("disk I/O error")
        self.store.succeeded_many(delivery_ids, owner)


def test_a_failed_group_commit_resends_and_loses_nothing(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    rec, url = recorder
    failing = cast(Deliveries, FailingAcks(deliveries_of(backend)))
    config = replace(FAST, concurrency=4, ack_delay_s=0.05)

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "hook", url + "/hook")
        await engine.refresh()
        ids = enqueue(store, "hook", 6, engine.clock.now_ms())
        engine.notify({"hook"})
        await async_wait_for(lambda: pending(store, "hook") == 0, what="an empty outbox")
        sent = [r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook")]
        assert set(sent) == set(ids)
        assert len(sent) > len(ids)  # the unacknowledged ones were sent again

    run_engine(dataclasses.replace(backend, outputs=failing, outbox=failing), body, config=config)


#: An engine on the stores of the test's deployment (the environment names them) that
#: never commits its acknowledgements; its leases are short, so that after its death
#: another deliverer of a shared outbox takes its deliveries soon.
_CRASHING_ENGINE = """
import asyncio, sys
from pathlib import Path
from patchbay.activate.engine import DeliveryEngine, EngineConfig
from patchbay.backends import open_backend
from patchbay.clock import SystemClock
from patchbay.config import settings_from_process
from patchbay.partner.transport import Timeouts

async def main() -> None:
    backend = open_backend(settings_from_process({"data_dir": Path(sys.argv[1])}))
    config = EngineConfig(concurrency=4, poll_s=0.05, refresh_s=0.1,
                          ack_delay_s=3600.0, ack_max=1_000_000,
                          timeouts=Timeouts(total=1.0, connect=0.5), lease_s=2.0)
    engine = DeliveryEngine(backend, SystemClock(), config)
    await engine.start()
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_sigkill_before_the_group_commit_resends_with_the_same_ids(
    data_dir: Path, deployment: Deployment, recorder: tuple[Recorder, str]
) -> None:
    """An engine killed after its sends were accepted, before it acknowledged them: the
    next engine on the same stores (``deployment``: the environment names them) sends
    each again once, under its id (on a shared outbox, once the dead one's leases end)."""
    rec, url = recorder
    backend = open_backend(settings_from_process({"data_dir": data_dir}))
    try:
        store = deliveries_of(backend)
        webhook(store, "hook", url + "/hook")
        ids = enqueue(store, "hook", 8, int(time.time() * 1000))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        process = subprocess.Popen(
            [sys.executable, "-c", _CRASHING_ENGINE, str(data_dir)], env=env, cwd=ROOT
        )
        try:
            wait_for(lambda: len(rec.at("/hook", handled=True)) == 8, what="8 accepted")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        # accepted, but the group was never committed: all still pending
        assert pending(store, "hook") == 8

        async def body(engine: DeliveryEngine, store: Deliveries) -> None:
            await async_wait_for(lambda: pending(store, "hook") == 0, what="an empty outbox")

        run_engine(backend, body)
    finally:
        backend.close()
    sent = [r.headers["x-patchbay-delivery-id"] for r in rec.at("/hook")]
    assert sorted(sent) == sorted(ids * 2)  # each resent once, with its id


def test_the_stage_runner_steps_when_woken() -> None:
    steps: list[float] = []
    stepped = threading.Event()

    def step() -> int:
        steps.append(time.monotonic())
        stepped.set()
        return 0

    runner = StageRunner(step, idle_sleep_s=60.0)  # the poll alone would take a minute
    runner.start()
    try:
        assert stepped.wait(5.0)
        stepped.clear()
        woken = time.monotonic()
        runner.wake()
        assert stepped.wait(5.0), "the wake-up did not run a step"
        assert steps[-1] >= woken
    finally:
        runner.stop()  # also prompt: stop wakes the thread
