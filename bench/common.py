"""What the benchmarks share: ports, starting and stopping processes, CPU accounting,
percentiles."""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from patchbay.backends import Backend, open_backend
from patchbay.settings import Settings


def open_store(data_dir: Path | None, durability: str = "full") -> Backend:
    """The backend a benchmark works on, opened as every composition root opens one: the
    embedded store in ``data_dir``, or the in-memory backend when ``data_dir`` is None."""
    if data_dir is None:
        return open_backend(
            Settings(backend="memory", delivery_process=False, segment_process=False)
        )
    return open_backend(store_settings(data_dir, durability))


def store_settings(data_dir: Path, durability: str = "full") -> Settings:
    """The settings of the embedded store in ``data_dir`` (what a child process opens it
    from), logging warnings and errors only, as the benchmarks' servers do."""
    level: Literal["full", "normal"] = "full" if durability == "full" else "normal"
    return Settings(data_dir=data_dir, durability=level, log_level="warning")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    """Wait until ``url`` answers 200; exit with the end of the log if ``process`` dies or
    30 s pass."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{what} did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.05)


def start_server(
    data_dir: Path,
    port: int,
    durability: str,
    log_path: Path,
    log_level: str = "warning",
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """``patchbay serve`` on ``port`` (its log appended to ``log_path``; warnings and errors
    by default), with ``extra`` options, once it answers."""
    command = [sys.executable, "-m", "patchbay", "serve", "--data-dir", str(data_dir)]
    command += ["--port", str(port), "--durability", durability, "--log-level", log_level]
    command += extra
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    wait_http(f"http://127.0.0.1:{port}/healthz", process, log_path, "patchbay serve")
    return process


def stop_process(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait; 0 or -SIGTERM (uvicorn re-raises the signal once shut down) is clean."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def machine_cpu_s() -> float | None:
    """Busy CPU seconds of the whole machine since boot (all cores), Linux only."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all threads) and of its running
    children (``patchbay serve``'s delivery process), Linux only."""
    if not Path(f"/proc/{pid}").exists():
        return None
    total = 0.0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if stat_path.parent.name == str(pid) or fields[1] == str(pid):  # itself, or a child
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their names (``comm``), Linux only."""
    found: dict[int, str] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        if stat.rsplit(")", 1)[1].split()[1] == str(pid):
            found[int(stat_path.parent.name)] = name
    return found


def child_pid(parent: int, name: str) -> int | None:
    """The pid of ``parent``'s child process named ``name`` (as ``ps`` shows it, e.g.
    ``pb-segment``); ``None`` when there is none."""
    return next((pid for pid, comm in children_of(parent).items() if comm == name), None)


def server_metric(port: int, name: str) -> float:
    """The sum of a metric's samples in a ``patchbay serve``'s ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{")
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def run_config(args: argparse.Namespace, leave_out: Collection[str] = ()) -> dict[str, Any]:
    """A run's options as JSON values (paths as text), for the ``--json`` results."""
    return {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in leave_out
    }


def run_child(main: Callable[[], Coroutine[Any, Any, object]], conn: Connection, what: str) -> None:
    """A benchmark's child process: run ``main`` on uvloop and send its result back through
    ``conn`` (or what failed, before raising it)."""
    try:
        import uvloop

        result = uvloop.run(main())
    except BaseException as exc:
        conn.send(f"{what} failed: {type(exc).__name__}: {exc}")
        raise
    conn.send(result)


def exit_status(
    errors: Sequence[str], goals: Mapping[str, tuple[bool | None, str]], strict: bool
) -> int:
    """Print ``errors``; 2 with any, else 1 when ``strict`` and a goal was missed (``None``:
    not measured, not missed), else 0."""
    sys.stdout.flush()
    for e in errors:
        print(f"ERROR: {e}", file=sys.stderr)
    if errors:
        return 2
    if strict and not all(ok is not False for ok, _ in goals.values()):
        return 1
    return 0
