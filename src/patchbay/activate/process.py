"""The delivery engine in a process of its own, so that sending uses a core of its own.

Everything else of ``patchbay serve`` (collecting, resolving, translating into the outbox)
shares one Python process and one GIL; the delivery engine only needs the outbox, which
the child opens itself from the backend settings it is given (the embedded backend's files
can be opened by any process). :class:`DeliveryProcess` starts the engine in a child
process (``spawn``: a fresh interpreter) and talks to it over a pipe:

* to the child: ``("wake", outputs)`` when the sink enqueued deliveries for those outputs
  (without it the engine still finds them at its next poll), and ``("stop",)``;
* from the child: ``("metrics", calls)`` every quarter second, the calls the engine made on
  its metrics object, replayed by the parent on the ``/metrics`` registry.

Nothing is lost whatever stops first: deliveries are durable in the outbox before the child
hears of them, and the child removes one only after the partner accepted it. The child stops
when the parent closes the pipe (or dies: it also asks the kernel for a SIGTERM when its
parent goes away), and the parent starts a new child if one exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import structlog

from patchbay.activate.engine import DeliveryEngine, DeliveryMetricsLike, EngineConfig
from patchbay.settings import Settings

log = structlog.get_logger("patchbay.activate")

#: How often the child sends its metric calls to the parent.
METRICS_INTERVAL_S = 0.25
#: How long a stopping child may take to finish its sends and acknowledgements.
STOP_TIMEOUT_S = 15.0
#: Pause before a child that exited on its own is started again.
RESTART_DELAY_S = 1.0

_METRIC_CALLS = frozenset({"attempt", "retry", "parked", "queue", "forget"})


@dataclass(frozen=True)
class ChildConfig:
    """What the child needs: the settings it opens the backend from (pickled for ``spawn``)."""

    settings: Settings


class ForwardingMetrics:
    """The engine's metrics object in the child: records each call, sent in groups."""

    def __init__(self, conn: Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self._lock = lock
        self._calls: list[tuple[str, tuple[Any, ...]]] = []

    def attempt(self, output: str, ok: bool, seconds: float) -> None:
        self._calls.append(("attempt", (output, ok, seconds)))

    def retry(self, output: str) -> None:
        self._calls.append(("retry", (output,)))

    def parked(self, output: str) -> None:
        self._calls.append(("parked", (output,)))

    def queue(self, output: str, pending: int, parked: int, age_s: float, paused: bool) -> None:
        self._calls.append(("queue", (output, pending, parked, age_s, paused)))

    def forget(self, output: str) -> None:
        self._calls.append(("forget", (output,)))

    def flush(self) -> None:
        """Send the calls recorded so far (dropped if the parent is gone)."""
        calls, self._calls = self._calls, []
        if calls:
            with self._lock, contextlib.suppress(OSError, ValueError):
                self._conn.send(("metrics", calls))


class DeliveryProcess:
    """Runs the delivery engine in a child process; see the module documentation."""

    def __init__(self, config: ChildConfig, metrics: DeliveryMetricsLike) -> None:
        self._config = config
        self._metrics = metrics
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: Any = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before :meth:`start`)."""
        return None if self._process is None else int(self._process.pid)

    def start(self) -> None:
        """Start the child and the thread that reads from it."""
        self._spawn()
        self._watcher = threading.Thread(
            target=self._watch, name="patchbay-delivery-process", daemon=True
        )
        self._watcher.start()

    def notify(self, outputs: set[str]) -> None:
        """Wake the child's workers of ``outputs`` (callable from any thread)."""
        self._send(("wake", sorted(outputs)))

    def stop(self) -> None:
        """Ask the child to finish its sends and acknowledgements, and wait for it."""
        self._stopping.set()
        self._send(("stop",))
        process = self._process
        if process is not None:
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                log.warning("delivery_process_killed", pid=process.pid)
                process.kill()
                process.join()
        if self._watcher is not None:
            self._watcher.join(5.0)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _spawn(self) -> None:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=run_child, args=(self._config, child), name="patchbay-delivery", daemon=False
        )
        process.start()
        child.close()
        with self._lock:
            self._conn = parent
        self._process = process
        log.info("delivery_process_started", pid=process.pid)

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._conn.send(message)

    def _watch(self) -> None:
        """Replay the child's metric calls; start a new child if one exits on its own."""
        while True:
            conn = self._conn
            if conn is None:
                return
            try:
                message = conn.recv()
            except (EOFError, OSError):
                if self._stopping.is_set():
                    return
                self._process.join(5.0)
                code = self._process.exitcode
                # 0: it stopped on a SIGTERM of its own (e.g. a service manager signalling the
                # whole process group); anything else is a crash. Either way a new one starts,
                # and the server's own stop will stop that one.
                (log.info if code == 0 else log.error)("delivery_process_exited", exit_code=code)
                time.sleep(RESTART_DELAY_S)
                if self._stopping.is_set():
                    return
                self.restarts += 1
                self._spawn()
                continue
            if message[0] == "metrics":
                for name, args in message[1]:
                    if name in _METRIC_CALLS:
                        getattr(self._metrics, name)(*args)


# -- the child ----------------------------------------------------------------------------


def run_child(config: ChildConfig, conn: Connection) -> None:
    """The child process's entry point."""
    from patchbay.logs import configure_logging

    configure_logging(config.settings.log_level)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    try:
        import uvloop

        uvloop.run(_run_engine(config, conn))
    except ImportError:  # pragma: no cover - uvloop comes with the server's dependencies
        asyncio.run(_run_engine(config, conn))


async def _run_engine(config: ChildConfig, conn: Connection) -> None:
    from patchbay.backends import open_backend
    from patchbay.clock import SystemClock

    settings = config.settings
    backend = open_backend(settings)
    metrics = ForwardingMetrics(conn, threading.Lock())
    engine_config = EngineConfig.from_settings(settings)
    engine = DeliveryEngine(backend, SystemClock(), engine_config, metrics)
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        stopped.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if message[0] == "wake":
                engine.notify(set(message[1]))
            elif message[0] == "stop":
                break
        loop.call_soon_threadsafe(stopped.set)

    await engine.start()
    threading.Thread(target=read, name="patchbay-delivery-pipe", daemon=True).start()
    log.info("delivery_engine_started", backend=backend.name)

    async def flush_metrics() -> None:
        while True:
            await asyncio.sleep(METRICS_INTERVAL_S)
            metrics.flush()

    flusher = asyncio.create_task(flush_metrics())
    try:
        await stopped.wait()
    finally:
        flusher.cancel()
        await engine.stop()
        metrics.flush()
        backend.close()
        log.info("delivery_engine_stopped", terminated=terminated)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent dies (a SIGKILLed server)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
