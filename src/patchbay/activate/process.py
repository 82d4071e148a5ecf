"""The delivery engine in a process of its own, so that sending uses a core of its own.

:class:`DeliveryProcess` runs the engine in a child process (:mod:`patchbay.child`: spawned,
restarted when it exits on its own, stopped with the server, its metrics on the server's
``/metrics``). The parent sends it ``("wake", outputs)`` when the outbox got deliveries for
those outputs (without it the engine still finds them at its next poll).

Nothing is lost whatever stops first: deliveries are durable in the outbox before the child
hears of them, and the child removes one only after the partner accepted it.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from prometheus_client import CollectorRegistry

from patchbay.activate.engine import DeliveryEngine, EngineConfig
from patchbay.child import ChildProcess, Message, ParentLink, child_setup
from patchbay.settings import Settings

log = structlog.get_logger("patchbay.activate")


class DeliveryProcess(ChildProcess):
    """Runs the delivery engine in a child process over the backend ``settings`` name."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        super().__init__("delivery", run_delivery, (settings,), registry)

    def notify(self, outputs: set[str]) -> None:
        """Wake the child's workers of ``outputs`` (callable from any thread)."""
        self.send(("wake", sorted(outputs)))


def run_delivery(link: ParentLink, settings: Settings) -> None:
    """The child process's entry point."""
    child_setup(settings.log_level)
    try:
        import uvloop

        uvloop.run(_run_engine(link, settings))
    except ImportError:  # pragma: no cover - uvloop comes with the server's dependencies
        asyncio.run(_run_engine(link, settings))


async def _run_engine(link: ParentLink, settings: Settings) -> None:
    from patchbay.backends import open_backend
    from patchbay.backoff import StorageBackoff
    from patchbay.clock import SystemClock
    from patchbay.metrics import DeliveryMetrics

    backend = open_backend(settings)
    clock = SystemClock()
    engine = DeliveryEngine(
        backend,
        clock,
        EngineConfig.from_settings(settings),
        DeliveryMetrics(link.registry),
        backoff=StorageBackoff("delivery", clock, link.registry),
    )
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        stopped.set()

    def on_message(message: Message) -> None:
        if message[0] == "wake":
            engine.notify(set(message[1]))

    def on_stop() -> None:
        loop.call_soon_threadsafe(stopped.set)

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    await engine.start()
    link.listen(on_message, on_stop)
    log.info("delivery_engine_started", backend=backend.name)
    try:
        await stopped.wait()
    finally:
        await engine.stop()
        backend.close()
        log.info("delivery_engine_stopped", terminated=terminated)
