"""Work that ``patchbay serve`` runs in child processes, so it uses a core of its own.

Collecting and resolving share the server's process and its GIL; the delivery engine
(:mod:`patchbay.activate.process`) and the segment stage (:mod:`patchbay.segment.process`)
only need the backend, which a child opens itself from the settings it is given (the
embedded backend's files can be opened by any process). This module is what the two have in
common:

* :class:`ChildProcess`, the parent's side: starts ``target(link, *args)`` in a fresh
  interpreter (``spawn``), talks to it over a pipe, shows the child's metrics on the
  server's ``/metrics`` (:class:`ChildMetrics`), and starts a new child when one exits on
  its own. :meth:`ChildProcess.stop` asks the child to finish and waits for it (then kills
  it). A child is named ``pb-NAME`` in ``ps`` and ``top`` (``pb-delivery``, ``pb-segment``).
* :class:`ParentLink`, the child's side (whose umask is ``0o077``, as every Patchbay
  process's): the pipe, a metrics registry of the child's own whose samples go to the parent
  every :data:`METRICS_INTERVAL_S`, and the messages from the parent. :func:`child_setup`
  prepares a child: logging (JSON lines on the stderr it shares with the server, uncaught
  exceptions included), a SIGTERM when its parent dies (a SIGKILLed server takes its
  children along), and Ctrl-C left to the parent.

Messages are tuples whose first item names them: ``("stop",)`` to the child; ``("metrics",
families)`` from it; any other message goes to the callbacks each side is given.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from patchbay.datadir import owner_only_umask

log = structlog.get_logger("patchbay.child")

#: How often a child sends its metrics to the parent.
METRICS_INTERVAL_S = 0.25
#: How long a stopping child may take to finish its work by default.
STOP_TIMEOUT_S = 15.0
#: Pause before a child that exited on its own is started again.
RESTART_DELAY_S = 1.0

Message = tuple[Any, ...]


class ChildMetrics(Collector):
    """The metrics a child sent last, shown in the parent's registry. What the counters
    and histograms of children gone before counted is added to them, so they never go
    back when a new child starts from zero."""

    _CUMULATIVE = frozenset({"counter", "histogram", "summary"})

    def __init__(self) -> None:
        self.families: list[Metric] = []
        self._gone: dict[str, Metric] = {}  # what the children gone counted, by family

    def bank(self) -> None:
        """The child is gone: keep what its counters and histograms counted."""
        self._gone = {
            f.name: _added(self._gone.get(f.name), f)
            for f in self.families
            if f.type in self._CUMULATIVE
        } | {name: f for name, f in self._gone.items() if name not in self._names()}
        self.families = []

    def _names(self) -> set[str]:
        return {f.name for f in self.families}

    def collect(self) -> Iterable[Metric]:
        out = []
        for family in self.families:
            gone = self._gone.get(family.name)
            out.append(family if gone is None else _added(gone, family))
        names = self._names()
        return out + [f for name, f in self._gone.items() if name not in names]


def _added(gone: Metric | None, family: Metric) -> Metric:
    """``family``'s samples plus ``gone``'s, by sample name and labels (``_created`` left out)."""
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for sample in (*(gone.samples if gone else ()), *family.samples):
        if not sample.name.endswith("_created"):
            key = (sample.name, tuple(sorted(sample.labels.items())))
            values[key] = values.get(key, 0.0) + sample.value
    added = Metric(family.name, family.documentation, family.type, family.unit)
    for (name, labels), value in values.items():
        added.add_sample(name, dict(labels), value)
    return added


class ChildProcess:
    """Runs ``target(link, *args)`` in a child process; see the module documentation.

    ``name`` names the process and its log lines; ``on_message`` gets the child's messages
    other than metrics (on the thread that reads them); ``registry`` shows the child's
    metrics (none: dropped)."""

    def __init__(
        self,
        name: str,
        target: Callable[..., None],
        args: tuple[Any, ...],
        registry: CollectorRegistry | None = None,
        on_message: Callable[[Message], None] | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.name = name
        self._target = target
        self._args = args
        self._on_message = on_message
        self._stop_timeout = stop_timeout_s
        self._metrics = ChildMetrics()
        if registry is not None:
            registry.register(self._metrics)
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
            target=self._watch, name=f"patchbay-{self.name}-process", daemon=True
        )
        self._watcher.start()

    def send(self, message: Message) -> None:
        """Send ``message`` to the child (dropped while there is none; any thread)."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._conn.send(message)

    def stop(self) -> None:
        """Ask the child to finish, and wait for it (killed after the stop timeout)."""
        self._stopping.set()
        self.send(("stop",))
        process = self._process
        if process is not None:
            process.join(self._stop_timeout)
            if process.is_alive():
                log.warning("child_process_killed", process=self.name, pid=process.pid)
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
            target=_child_entry,
            args=(self.name, self._target, child, self._args),
            name=f"patchbay-{self.name}",
            daemon=False,
        )
        process.start()
        child.close()
        with self._lock:
            self._conn = parent
        self._process = process
        log.info("child_process_started", process=self.name, pid=process.pid)

    def _watch(self) -> None:
        """Take the child's messages; start a new child if one exits on its own."""
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
                (log.info if code == 0 else log.error)(
                    "child_process_exited", process=self.name, exit_code=code
                )
                self._metrics.bank()
                time.sleep(RESTART_DELAY_S)
                if self._stopping.is_set():
                    return
                self.restarts += 1
                self._spawn()
                continue
            if message[0] == "metrics":
                self._metrics.families = message[1]
            elif self._on_message is not None:
                self._on_message(message)


class ParentLink:
    """The child's end of the pipe; see the module documentation."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        #: The child's metrics: what is registered here is shown on the parent's /metrics.
        self.registry = CollectorRegistry()
        #: Set when the parent asks the child to stop or goes away.
        self.stopping = threading.Event()

    def send(self, message: Message) -> None:
        """Send ``message`` to the parent (dropped if the parent is gone; any thread)."""
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._conn.send(message)

    def send_metrics(self) -> None:
        """Send the registry's samples now."""
        self.send(("metrics", list(self.registry.collect())))

    def listen(
        self,
        on_message: Callable[[Message], None] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        """Start the threads that take the parent's messages (``on_message``; ``on_stop``
        once asked to stop or when the parent is gone) and send the metrics."""

        def read() -> None:
            while True:
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    break  # the parent is gone
                if message[0] == "stop":
                    break
                if on_message is not None:
                    on_message(message)
            self.stopping.set()
            if on_stop is not None:
                on_stop()

        def send_metrics() -> None:
            while not self.stopping.wait(METRICS_INTERVAL_S):
                self.send_metrics()

        threading.Thread(target=read, name="patchbay-parent-pipe", daemon=True).start()
        threading.Thread(target=send_metrics, name="patchbay-parent-metrics", daemon=True).start()


def child_setup(log_level: str) -> None:
    """What every child does first: logging, a SIGTERM when the parent dies, and Ctrl-C
    left to the parent (which stops its children)."""
    from patchbay.logs import configure_logging

    configure_logging(log_level, catch_uncaught=True)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _child_entry(
    name: str, target: Callable[..., None], conn: Connection, args: tuple[Any, ...]
) -> None:
    from patchbay.logs import configure_logging

    configure_logging()  # until the target's child_setup sets the level: JSON from the start
    _name_process(f"pb-{name}")
    owner_only_umask()  # inherited from the server too; set here whoever started it
    link = ParentLink(conn)
    try:
        target(link, *args)
    except Exception:
        # logged as JSON, not printed as text by multiprocessing; the parent starts another
        log.exception("child_process_failed", process=name)
        sys.exit(1)
    finally:
        link.send_metrics()


def _name_process(name: str) -> None:
    """Name the process as ``ps`` and ``top`` show it (Linux: at most 15 bytes)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_name = 15
        libc.prctl(pr_set_name, name.encode()[:15])


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent dies (a SIGKILLed server)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
