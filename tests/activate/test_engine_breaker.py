"""The circuit breaker in the delivery engine, on a test clock against a real HTTP endpoint:
an output that fails stops being sent to, one probe at a time tests it, and once it works
everything that waited is delivered; state changes are recorded, counted and logged once,
failures summed up."""

from __future__ import annotations

import asyncio
import dataclasses

from structlog.testing import capture_logs

from patchbay.activate.breaker import BreakerPolicy, BreakerState
from patchbay.activate.engine import DeliveryEngine
from patchbay.backends.abstract import Backend
from patchbay.clock import ManualClock
from tests.activate.test_engine_support import Recorder, async_wait_for, deliveries_of, serve
from tests.activate.test_engine_workers import FAST, enqueue, webhook

CONFIG = dataclasses.replace(
    FAST,
    concurrency=4,
    breaker=BreakerPolicy(failures_to_open=3, base_delay_s=10.0, max_delay_s=40.0),
)


class CircuitCalls:
    """The engine's metrics calls about breakers (the rest ignored)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    def circuit(self, output: str, state: str, opened: bool) -> None:
        self.calls.append((output, state, opened))

    def attempt(self, output: str, ok: bool, seconds: float) -> None:
        pass

    def retry(self, output: str) -> None:
        pass

    def parked(self, output: str) -> None:
        pass

    def queue(self, output: str, pending: int, parked: int, age_s: float, paused: bool) -> None:
        pass

    def forget(self, output: str) -> None:
        pass


async def polls(engine: DeliveryEngine, output: str, count: int = 10) -> None:
    """Give the worker ``count`` chances to send (nothing moves the test clock)."""
    for _ in range(count):
        engine.notify({output})
        await asyncio.sleep(CONFIG.poll_s)


def test_the_breaker_opens_probes_one_at_a_time_and_closes(backend: Backend) -> None:
    rec = Recorder()
    rec.set("/down", status=503)
    endpoint = serve(rec.app)
    clock = ManualClock()
    metrics = CircuitCalls()
    store = deliveries_of(backend)

    def sent() -> int:
        return len(rec.at("/down"))

    async def main() -> None:
        engine = DeliveryEngine(backend, clock, CONFIG, metrics, random_=lambda: 1.0)
        await engine.start()
        try:
            webhook(store, "down", endpoint.url + "/down")
            await engine.refresh()
            ids = enqueue(store, "down", 30, clock.now_ms())
            engine.notify({"down"})
            worker = engine.workers["down"]
            await async_wait_for(lambda: worker.breaker.state is BreakerState.OPEN, what="open")
            assert store.circuits()["down"].state == "open"
            assert "503" in (store.circuits()["down"].error or "")
            await polls(engine, "down")
            before = sent()
            assert before < 30  # stopped long before the queue was tried
            await polls(engine, "down")
            assert sent() == before  # nothing while open: no retry storm

            clock.advance(10)  # the first probe: one request, which fails
            await async_wait_for(lambda: sent() == before + 1, what="the first probe")
            await async_wait_for(lambda: worker.breaker.state is BreakerState.OPEN)
            await polls(engine, "down")
            assert sent() == before + 1

            clock.advance(19)  # the next probe comes 20 s after the first
            await polls(engine, "down")
            assert sent() == before + 1
            clock.advance(1.01)
            await async_wait_for(lambda: sent() == before + 2, what="the second probe")

            rec.set("/down", status=200)  # the endpoint works again
            clock.advance(40)
            await async_wait_for(
                lambda: len(rec.at("/down", handled=True)) == 30, what="everything delivered"
            )
            await async_wait_for(
                lambda: "down" not in store.stats() or not store.stats()["down"].pending
            )
            delivered = [r.headers["x-patchbay-delivery-id"] for r in rec.at("/down", handled=True)]
            assert sorted(delivered) == sorted(ids)  # each once, under its own id
            assert worker.breaker.state is BreakerState.CLOSED
            assert store.circuits()["down"].state == "closed"
        finally:
            await engine.stop()

    try:
        with capture_logs() as logs:
            asyncio.run(main())
    finally:
        endpoint.stop()
    states = [(state, opened) for output, state, opened in metrics.calls if output == "down"]
    assert states == [
        ("open", True),
        ("probing", False),
        ("open", False),
        ("probing", False),
        ("open", False),
        ("probing", False),
        ("closed", False),
    ]
    events = [e["event"] for e in logs if e["log_level"] in ("info", "warning", "error")]
    assert events.count("output_circuit_open") == 1
    assert events.count("output_circuit_closed") == 1
    assert "delivery_retrying" not in events and "delivery_parked" not in events


def test_failures_are_summed_up_per_output(backend: Backend) -> None:
    rec = Recorder()
    rec.set("/bad", status=400, body=b'{"message": "no"}')
    rec.set("/flaky", status=500)
    endpoint = serve(rec.app)
    clock = ManualClock()
    store = deliveries_of(backend)

    async def main() -> None:
        engine = DeliveryEngine(backend, clock, CONFIG)
        await engine.start()
        try:
            for name in ("bad", "flaky", "good"):
                webhook(store, name, f"{endpoint.url}/{name}")
            await engine.refresh()
            for name in ("bad", "flaky", "good"):
                enqueue(store, name, 5, clock.now_ms())
            engine.notify({"bad", "flaky", "good"})
            await async_wait_for(lambda: len(rec.at("/good", handled=True)) == 5)
            await async_wait_for(lambda: store.stats()["bad"].parked == 5)
            await async_wait_for(lambda: engine.workers["flaky"].breaker.state is BreakerState.OPEN)
            with capture_logs() as logs:
                engine.summarize()
                engine.summarize()  # nothing new: no line
        finally:
            await engine.stop()
        lines = {line["output"]: line for line in logs if line["event"] == "output_failures"}
        assert set(lines) == {"bad", "flaky"}
        assert lines["bad"]["failed"] == 5 and lines["bad"]["parked"] == 5
        assert "400" in lines["bad"]["last_error"]
        assert lines["flaky"]["failed"] >= 3 and lines["flaky"]["parked"] == 0
        assert lines["flaky"]["circuit"] == "open"
        assert all(line["log_level"] == "warning" for line in lines.values())

    try:
        asyncio.run(main())
    finally:
        endpoint.stop()
