"""Soak: steady traffic to two Firehose outputs while their partners fail and the server is
killed; what was lost, duplicated or parked, how long each output took to catch up, and what
the run cost (memory, disk, log lines).

Run from the repository root::

    .venv/bin/python bench/soak.py                          # the issue's scenario, 10 minutes
    .venv/bin/python bench/soak.py --duration 60 --rate 500 # a quick run, the schedule scaled

It starts, on a fresh data dir:

* one local Firehose partner per output, each a process of its own: bench/forward.py's
  partner (a ``MessageProcessor`` that records, per request, the output, ``source_id`` (the
  batch's ``source_request_id``), the message id and ``time.time()`` on receipt) behind a
  fault controller the soak drives over a control port: ``normal``, ``down`` (the listening
  socket closed and open connections dropped: connection refused), ``error`` (every request
  answered 500) and ``slow D`` (every request answered after D seconds);
* one module and one output per partner (``partner-a``, ``partner-b``, ...), an input without
  rate limit and a connection to each output, then ``patchbay serve`` (``--log-level`` info:
  the log an operator reads);
* a load process posting ``/v2/bulkevents`` at ``--rate`` events/s, paced (open loop), that
  retries a request refused or failed (same body, same ``source_request_id``) until a 202:
  a batch is *accepted* once a 202 acknowledged it.

The schedule (times scale with ``--duration``; the issue's at 600 s): partner A down
60-120 s, 240-300 s and 420-480 s; partner B answering 500 at 150-180 s and 5 s per request
at 330-360 s; ``patchbay serve`` SIGKILLed at 550 s and started again at once on the same
data dir (its children, ``pb-delivery`` and ``pb-segment``, get a SIGTERM when it dies).
The floor, first, in the same run: the same load for ``--floor-duration`` seconds without any
fault, on a data dir and partners of its own. After the load it waits until every accepted
batch reached every output (``--drain-timeout``), stops everything and reads the partners'
records, then prints markdown tables: accepted, delivered per output, missing, duplicates
under different ids, parked; each fault's catch-up time and each output's p99 during it;
peak RSS per process; the data dir's size over time; log lines per minute; and the goals,
PASS or FAIL. Exit 0 when the run worked (goals met or not), 1 with ``--strict`` and a goal
missed, 2 when something went wrong. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from base64 import b64encode
from dataclasses import asdict, dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # bench/common.py
    children_of,
    exit_status,
    free_port,
    machine_cpu_s,
    percentile,
    process_cpu_s,
    run_child,
    run_config,
    start_server,
    stop_process,
    wait_http,
)
from forward import (  # bench/forward.py: the partner, the CLI in-process, request ids
    OUTPUT_SETTING,
    TOKEN,
    partner_app,
    patchbay_cli,
    srid_key,
)
from ingest import Template, fill, make_pool, srid_prefix  # bench/ingest.py

#: The issue's goals.
GOAL_P99_MS = 250.0
GOAL_LOG_LINES_PER_MIN = 100
#: The data dir is "flat" when it grew by at most this fraction over the span checked.
FLAT_GROWTH = 0.10

#: The issue's schedule for a 600 s run: (kind, output index, start s, end s). Scaled to
#: ``--duration``; ``kill`` has no end (the server is started again at once).
ISSUE_DURATION_S = 600.0
ISSUE_SCHEDULE: tuple[tuple[str, int, float, float], ...] = (
    ("down", 0, 60, 120),
    ("error", 1, 150, 180),
    ("down", 0, 240, 300),
    ("slow", 1, 330, 360),
    ("down", 0, 420, 480),
    ("kill", -1, 550, 550),
)
FAULT_KINDS = ("down", "error", "slow", "kill")
INPUT = "soak"


# -- the partner with its fault controller (a process of its own) -------------------------


def _partner_main(port: int, control_port: int, out: Path) -> None:
    import uvloop

    uvloop.run(_partner(port, control_port, out))


async def _partner(port: int, control_port: int, out: Path) -> None:
    """bench/forward.py's partner on ``port``, and on ``control_port`` its fault controller:
    one command per line (``normal``, ``down``, ``error``, ``slow SECONDS``, ``stats``,
    ``dump``, ``quit``), one JSON line back."""
    import uvicorn

    partner = partner_app(out)
    fault: dict[str, Any] = {"mode": "normal", "delay": 0.0}
    answered: collections.Counter[str] = collections.Counter()  # POSTs by mode

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            mode = fault["mode"]
            answered[mode] += 1
            if mode == "error":
                headers = [(b"content-type", b"text/plain")]
                await send({"type": "http.response.start", "status": 500, "headers": headers})
                await send({"type": "http.response.body", "body": b"injected failure"})
                return
            if mode == "slow":
                await asyncio.sleep(fault["delay"])
        await partner.app(scope, receive, send)

    server: uvicorn.Server | None = None
    serving: asyncio.Task[None] | None = None

    async def up() -> None:
        nonlocal server, serving
        if server is not None:
            return
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http="httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                raise SystemExit(f"the partner could not listen on {port}")
            await asyncio.sleep(0.01)

    async def down() -> None:
        nonlocal server, serving
        if server is None or serving is None:
            return
        server.should_exit = True  # closes the listening socket and every connection
        await serving
        server = serving = None

    done = asyncio.Event()

    async def command(line: str) -> dict[str, Any]:
        word, _, arg = line.strip().partition(" ")
        if word in ("normal", "error", "slow"):
            await up()
            fault["mode"], fault["delay"] = word, float(arg or 0)
        elif word == "down":
            fault["mode"] = "down"
            await down()
        elif word == "dump":
            partner.dump()
        elif word == "quit":
            await down()
            partner.dump()
            done.set()
        elif word != "stats":
            return {"error": f"unknown command {word!r}"}
        return {**partner.stats(), "mode": fault["mode"], "answered": dict(answered)}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(msgspec.json.encode(await command(line.decode())) + b"\n")
            await writer.drain()
        writer.close()

    control = await asyncio.start_server(handle, "127.0.0.1", control_port)
    await up()
    await done.wait()
    control.close()


@dataclass
class Partner:
    name: str
    port: int
    control_port: int
    out: Path
    process: subprocess.Popen[bytes]

    def control(self, command: str) -> dict[str, Any]:
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=60) as sock:
            sock.sendall(command.encode() + b"\n")
            answer: dict[str, Any] = json.loads(sock.makefile("rb").readline())
        return answer

    def records(self) -> list[list[Any]]:
        """What it received so far: (output, source_id, message id, events, time.time())."""
        self.control("dump")
        records: list[list[Any]] = msgspec.json.decode(self.out.read_bytes())["records"]
        return records

    def stop(self) -> int | None:
        with contextlib.suppress(OSError):
            self.control("quit")
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_partner(name: str, base: Path) -> Partner:
    port, control_port = free_port(), free_port()
    out, log_path = base / f"{name}.json", base / f"{name}.log"
    command = [sys.executable, __file__, "--serve-partner", str(port)]
    command += ["--control-port", str(control_port), "--partner-out", str(out)]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/stats", process, log_path, f"the partner {name}")
    return Partner(name, port, control_port, out, process)


# -- the load (a process of its own) ------------------------------------------------------


@dataclass
class LoadConfig:
    url: str
    auth: str
    pool: list[Template]
    rate_batches: float
    start_at: float  # time.time() of the first request
    duration_s: float
    run: int
    finish_s: float = 60.0  # how long after the duration a refused request is still retried
    retry_delay_s: float = 0.25


@dataclass
class LoadResult:
    #: one per acknowledged request: (worker, first counter, batches, 202 time, rejected)
    requests: list[tuple[int, int, int, float, list[int]]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)  # every answer, retries included
    failures: dict[str, int] = field(default_factory=dict)  # errors without an answer
    retries: int = 0
    duplicates: int = 0  # batches a retry's 202 called duplicates (stored before)
    late: int = 0
    given_up: int = 0
    errors: list[str] = field(default_factory=list)
    ended: float = 0.0


async def _load(cfg: LoadConfig) -> LoadResult:
    import aiohttp

    result = LoadResult()
    decoder = msgspec.json.Decoder()
    await asyncio.sleep(max(0.0, cfg.start_at - time.time()))
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + cfg.duration_s
    counters = [0] * 256

    async def post(session: aiohttp.ClientSession, n: int) -> None:
        template = cfg.pool[n % len(cfg.pool)]
        worker = n % 256
        counter = counters[worker]
        counters[worker] += len(template.id_offsets)
        body = fill(template, srid_prefix(cfg.run, worker), counter)
        while True:
            status: int | None = None
            try:
                async with session.post("/v2/bulkevents", data=body) as response:
                    status = response.status
                    payload = await response.read()
                result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                kind = type(exc).__name__
                result.failures[kind] = result.failures.get(kind, 0) + 1
            if status == 202:
                break
            if status is not None and status < 500 and status not in (408, 429):
                if len(result.errors) < 20:
                    result.errors.append(f"HTTP {status}: {payload[:300]!r}")
                return
            if loop.time() > end + cfg.finish_s:
                result.given_up += 1
                return
            result.retries += 1
            await asyncio.sleep(cfg.retry_delay_s)
        acked = time.time()
        answer = decoder.decode(payload)
        result.duplicates += answer["duplicates"]
        rejected = [r["index"] for r in answer["rejected"]]
        result.requests.append((worker, counter, len(template.id_offsets), acked, rejected))

    batches = len(cfg.pool[0].id_offsets)
    interval = batches / cfg.rate_batches
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    headers = {"Authorization": cfg.auth, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        cfg.url, connector=connector, timeout=timeout, headers=headers
    ) as session:
        at, n = start, 0
        while at < end:
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                result.late += 1
            task = asyncio.create_task(post(session, n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            at += interval
        if tasks:
            await asyncio.gather(*tasks)
    result.ended = time.time()
    return result


def run_load(cfg: LoadConfig, conn: Connection) -> None:
    """Entry point of the load process: run, send back a LoadResult."""
    run_child(lambda: _load(cfg), conn, "load client")


# -- the schedule -------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str  # down, error, slow, kill
    output: str | None  # None: the server (kill)
    start: float  # seconds from the start of the load
    end: float  # kill: when the new server answered /healthz (set during the run)
    label: str


def schedule(duration: float, outputs: list[str], kinds: set[str]) -> list[Fault]:
    """The issue's schedule scaled to ``duration``, the faults of ``kinds`` only (a fault of
    an output the run does not have is left out)."""
    scale = duration / ISSUE_DURATION_S
    faults: list[Fault] = []
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for kind, index, start, end in ISSUE_SCHEDULE:
        if kind not in kinds or index >= len(outputs):
            continue
        output = outputs[index] if index >= 0 else None
        who = output or "serve"
        counts[(kind, who)] += 1
        what = {"down": "down", "error": "500s", "slow": "slow", "kill": "SIGKILL"}[kind]
        faults.append(
            Fault(kind, output, start * scale, end * scale, f"{who} {what} #{counts[(kind, who)]}")
        )
    return faults


# -- sampling: memory, disk, CPU ------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid`` in bytes; empty when it is gone."""
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def child_role(pid: int) -> str | None:
    """A child of the server not named pb-*: multiprocessing's resource tracker, or None
    (a pb-* child that has not named itself yet)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return "serve: resource tracker" if b"resource_tracker" in command else None


def dir_bytes(path: Path) -> tuple[int, int]:
    """The size of the files under ``path``: all of them, and without SQLite's write-ahead
    logs (``-wal``, ``-shm``: they grow and shrink with checkpoints; the stores' own files
    grow only while they hold more)."""
    total = stores = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                size = os.stat(os.path.join(root, name)).st_size
                total += size
                stores += 0 if name.endswith(("-wal", "-shm")) else size
    return total, stores


@dataclass
class Samples:
    peak_rss: dict[str, int] = field(default_factory=dict)  # role -> bytes
    pids: dict[int, str] = field(default_factory=dict)  # pid -> role
    #: (s from the start, bytes, bytes without the write-ahead logs)
    data_dir: list[tuple[float, int, int]] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # the largest files, at the end
    queue_peak: dict[str, int] = field(default_factory=dict)  # output -> most pending

    def sample_queues(self, port: int) -> None:
        """The outbox's pending deliveries per output, from the server's ``/metrics``."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return  # the server is being restarted
        prefix = 'patchbay_delivery_queue_depth{output="'
        for line in text.splitlines():
            if line.startswith(prefix):
                name, _, value = line[len(prefix) :].partition('"} ')
                self.queue_peak[name] = max(self.queue_peak.get(name, 0), int(float(value)))

    def track(self, pid: int, role: str) -> None:
        self.pids.setdefault(pid, role)

    def sample_memory(self, server_pid: int | None) -> None:
        if server_pid is not None:  # pb-delivery, pb-segment: named once started
            for pid, name in children_of(server_pid).items():
                if role := name if name.startswith("pb-") else child_role(pid):
                    self.pids[pid] = role
        for pid, role in list(self.pids.items()):
            status = proc_status(pid)
            if not status:
                del self.pids[pid]
                continue
            peak = max(status.get("VmHWM", 0), status.get("VmRSS", 0))
            self.peak_rss[role] = max(self.peak_rss.get(role, 0), peak)


# -- the run ------------------------------------------------------------------------------


def serve_has_option(option: str) -> bool:
    """Whether ``patchbay serve`` of this checkout has ``option``."""
    return option in patchbay_cli("serve", "--help")


def setup(data_dir: Path, partners: list[Partner]) -> dict[str, str]:
    """An input without rate limit; per partner a module, an output and a connection."""
    where = ("--data-dir", str(data_dir))
    creds: dict[str, str] = json.loads(  # first: it creates the store
        patchbay_cli(
            "inputs", "add", INPUT, "--type", "server", "--rate-limit", "0", "--json", *where
        )
    )
    for p in partners:
        module = f"soak-{p.name}"
        url = f"http://127.0.0.1:{p.port}/firehose"
        patchbay_cli("modules", "register", module, "--url", url, "--token", TOKEN, *where)
        setting = f"{OUTPUT_SETTING}={p.name}"
        patchbay_cli("outputs", "add", p.name, "--module", module, "--setting", setting, *where)
        patchbay_cli("connections", "add", "--input", INPUT, "--output", p.name, *where)
    return creds


@dataclass
class Run:
    """What the run observed, for the analysis."""

    t0: float
    faults: list[Fault]
    load: LoadResult
    records: dict[str, list[list[Any]]]
    samples: Samples
    log_path: Path
    parked: dict[str, int]
    drain_s: float
    drained: bool
    cpu: dict[str, float]
    retention: str
    errors: list[str]


def apply(fault: Fault, partners: dict[str, Partner], slow_delay: float, on: bool) -> None:
    """Start (``on``) or end a partner's fault."""
    assert fault.output is not None
    command = "normal"
    if on:
        command = {"down": "down", "error": "error", "slow": f"slow {slow_delay}"}[fault.kind]
    partners[fault.output].control(command)


def soak(
    args: argparse.Namespace, pool: list[Template], workdir: Path, duration: float, kinds: set[str]
) -> Run:
    """One run on a fresh data dir in ``workdir``: ``duration`` seconds of load, the
    schedule's faults of ``kinds``, the drain; what it observed."""
    errors: list[str] = []
    names = [f"partner-{chr(ord('a') + i)}" for i in range(args.outputs)]
    faults = schedule(duration, names, kinds)
    workdir.mkdir()
    data_dir = workdir / "data"
    log_path = workdir / "serve.log"
    partners = {name: start_partner(name, workdir) for name in names}
    samples = Samples()
    for p in partners.values():
        samples.track(p.process.pid, p.name)
    server: subprocess.Popen[bytes] | None = None
    client: Any = None
    try:
        creds = setup(data_dir, list(partners.values()))
        extra: list[str] = []
        retention = "not asked"
        if args.log_retention is not None:
            if serve_has_option("--log-retention"):
                extra += ["--log-retention", args.log_retention]
                retention = args.log_retention
            else:
                retention = "not in this build"
                print("note: patchbay serve has no --log-retention: run without it", flush=True)
        port = free_port()

        def serve() -> subprocess.Popen[bytes]:
            process = start_server(data_dir, port, args.durability, log_path, args.log_level, extra)
            samples.track(process.pid, "serve")
            return process

        server = serve()
        auth = "Basic " + b64encode(f"{creds['key']}:{creds['secret']}".encode()).decode()
        mean_events = statistics.mean(p.total_events for p in pool) / len(pool[0].id_offsets)
        t0 = time.time() + 3.0  # the load process's start-up
        cfg = LoadConfig(
            url=f"http://127.0.0.1:{port}",
            auth=auth,
            pool=pool,
            rate_batches=args.rate / mean_events,
            start_at=t0,
            duration_s=duration,
            run=random.Random(args.seed).getrandbits(32) ^ (os.getpid() << 8) & 0xFFFFFFFF,
        )
        spawn = multiprocessing.get_context("spawn")
        ours, theirs = spawn.Pipe(duplex=False)
        client = spawn.Process(target=run_load, args=(cfg, theirs), name="soak-load")
        client.start()
        theirs.close()
        samples.track(client.pid, "load client")
        print(
            f"{workdir.name}: {duration:g}s at {args.rate:,.0f} events/s to {len(names)} outputs;"
            f" faults: {', '.join(f'{f.label} at {f.start:.0f}s' for f in faults) or 'none'}",
            flush=True,
        )
        # (time, fault, on) in order; a kill is one step (the restart follows at once)
        steps = sorted(
            [(f.start, i, True) for i, f in enumerate(faults)]
            + [(f.end, i, False) for i, f in enumerate(faults) if f.kind != "kill"]
        )
        sample_every = args.sample_every or min(10.0, max(1.0, duration / 60))
        next_disk = 0.0
        cpu_before = cpu_now(server.pid, partners, client.pid)
        while True:
            now = time.time() - t0
            while steps and steps[0][0] <= now:
                _, i, on = steps.pop(0)
                fault = faults[i]
                if fault.kind == "kill":
                    cpu_before["serve"] -= process_cpu_s(server.pid) or 0.0
                    server.send_signal(signal.SIGKILL)
                    server.wait()
                    print(f"  {now:6.1f}s {fault.label}; starting it again", flush=True)
                    server = serve()
                    fault.end = time.time() - t0
                    cpu_before["serve"] += process_cpu_s(server.pid) or 0.0
                    print(f"  {fault.end:6.1f}s patchbay serve answers again", flush=True)
                else:
                    apply(fault, partners, args.slow_delay, on)
                    print(f"  {now:6.1f}s {fault.label} {'begins' if on else 'ends'}", flush=True)
            samples.sample_memory(server.pid)
            samples.sample_queues(port)
            if now >= next_disk:
                samples.data_dir.append((now, *dir_bytes(data_dir)))
                next_disk += sample_every
            if now >= duration:
                break
            time.sleep(max(0.0, min(1.0, (steps[0][0] - now) if steps else 1.0)))
        cpu_after = cpu_now(server.pid, partners, client.pid)
        cpu = {k: (cpu_after[k] - v) / duration for k, v in cpu_before.items()}
        cpu["other"] = max(0.0, cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine"))
        if not ours.poll(cfg.finish_s + 120):
            client.kill()
            raise SystemExit("the load process did not finish")
        load: LoadResult = ours.recv()
        client.join(30)
        errors += [f"load: {e}" for e in load.errors]
        expected = set(accepted(load))
        print(
            f"load done: {len(expected):,} batches accepted; waiting for every output"
            f" (at most {args.drain_timeout:g}s) ...",
            flush=True,
        )
        drain_from = time.monotonic()
        drained = wait_drained(partners, expected, args.drain_timeout, samples, server.pid)
        drain_s = time.monotonic() - drain_from
        samples.data_dir.append((time.time() - t0, *dir_bytes(data_dir)))
        code = stop_process(server)
        if code not in (0, -signal.SIGTERM):
            errors.append(f"patchbay serve exited with {code}")
        server = None
        parked = parked_by_output(data_dir)
        samples.data_dir.append((time.time() - t0, *dir_bytes(data_dir)))  # at rest
        files = sorted(data_dir.iterdir(), key=lambda f: -f.stat().st_size)
        samples.files = {f.name: f.stat().st_size for f in files[:6]}
    finally:
        if client is not None and client.is_alive():
            client.kill()
        if server is not None:
            stop_process(server)
        for p in partners.values():
            if (status := p.stop()) not in (0, None):
                errors.append(f"{p.name} exited with {status}")
    records = {n: msgspec.json.decode(p.out.read_bytes())["records"] for n, p in partners.items()}
    return Run(
        t0,
        faults,
        load,
        records,
        samples,
        log_path,
        parked,
        drain_s,
        drained,
        cpu,
        retention,
        errors,
    )


def wait_drained(
    partners: dict[str, Partner],
    expected: set[tuple[int, int]],
    timeout: float,
    samples: Samples,
    server_pid: int,
) -> bool:
    """Wait until every partner received every batch of ``expected``; whether they did."""
    deadline = time.monotonic() + timeout
    while True:
        samples.sample_memory(server_pid)
        counted = all(p.control("stats")["messages"] >= len(expected) for p in partners.values())
        if counted and all(expected <= received_keys(p.records()) for p in partners.values()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


def cpu_now(
    server_pid: int, partners: dict[str, Partner], client_pid: int | None
) -> dict[str, float]:
    values = {
        "serve": process_cpu_s(server_pid) or 0.0,  # with its children
        "partners": sum(process_cpu_s(p.process.pid) or 0.0 for p in partners.values()),
        "load client": process_cpu_s(client_pid or 0) or 0.0,
    }
    values["machine"] = machine_cpu_s() or 0.0
    return values


def parked_by_output(data_dir: Path) -> dict[str, int]:
    """Deliveries parked per output, from ``patchbay outputs status --json``."""
    out = patchbay_cli("outputs", "status", "--json", "--data-dir", str(data_dir))
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {str(r.get("name") or r.get("output")): int(r.get("parked", 0)) for r in rows}


def accepted(load: LoadResult) -> dict[tuple[int, int], float]:
    """(worker, counter) of every batch a 202 acknowledged, with the time of that 202."""
    acked: dict[tuple[int, int], float] = {}
    for worker, counter, batches, at, rejected in load.requests:
        skip = set(rejected)
        for i in range(batches):
            if i not in skip:
                acked.setdefault((worker, counter + i), at)
    return acked


def received_keys(records: list[list[Any]]) -> set[tuple[int, int]]:
    return {srid_key(r[1]) for r in records if r[1]}


# -- analysis -----------------------------------------------------------------------------


@dataclass
class OutputFigures:
    delivered: int = 0  # distinct accepted batches received
    missing: int = 0
    duplicates_other_id: int = 0  # batches received under two or more message ids
    redeliveries_same_id: int = 0  # receipts of a (batch, message id) already received
    unexpected: int = 0  # received, never acknowledged to the client
    parked: int = 0
    p99_quiet_ms: float = float("nan")
    p99_by_fault: dict[str, float] = field(default_factory=dict)
    catch_up_s: dict[str, float] = field(default_factory=dict)


def analyse(run: Run, outputs: list[str]) -> dict[str, OutputFigures]:
    """Per output: what arrived of what was accepted, under which ids, how late."""
    acked = {k: at - run.t0 for k, at in accepted(run.load).items()}  # s from the start
    figures: dict[str, OutputFigures] = {}
    firsts: dict[str, dict[tuple[int, int], float]] = {}
    for name in outputs:
        fig = figures[name] = OutputFigures(parked=run.parked.get(name, 0))
        first = firsts[name] = {}  # batch -> first receipt, s from the start
        ids: dict[tuple[int, int], set[str]] = collections.defaultdict(set)
        for output, srid, message_id, _events, received in run.records.get(name, []):
            if output != name or not srid:
                fig.unexpected += 1
                continue
            key = srid_key(srid)
            if message_id in ids[key]:
                fig.redeliveries_same_id += 1
            ids[key].add(message_id)
            first[key] = min(first.get(key, float("inf")), received - run.t0)
        fig.duplicates_other_id = sum(1 for v in ids.values() if len(v) > 1)
        fig.delivered = sum(1 for k in acked if k in first)
        fig.missing = len(acked) - fig.delivered
        fig.unexpected += sum(1 for k in first if k not in acked)
        for fault in run.faults:
            if fault.output not in (None, name):
                continue
            # what the fault held back: acknowledged by its end, received after its start
            late = [
                first.get(k, float("inf"))
                for k, at in acked.items()
                if at <= fault.end and first.get(k, float("inf")) > fault.start
            ]
            fig.catch_up_s[fault.label] = max(0.0, max(late, default=fault.end) - fault.end)
    # a fault's span: from its start to the end of the longest catch-up after it
    spans = [
        (
            f.start,
            f.end + max(min(fig.catch_up_s.get(f.label, 0.0), 1e9) for fig in figures.values()),
        )
        for f in run.faults
    ]
    for name, fig in figures.items():
        first = firsts[name]
        latency = {k: (first[k] - at) * 1000 for k, at in acked.items() if k in first}
        fig.p99_quiet_ms = percentile(
            [v for k, v in latency.items() if not any(s <= acked[k] <= e for s, e in spans)], 99
        )
        for f in run.faults:
            during = [v for k, v in latency.items() if f.start <= acked[k] <= f.end]
            fig.p99_by_fault[f.label] = percentile(during, 99)
    return figures


@dataclass
class LogFigures:
    lines: int = 0
    per_minute: list[int] = field(default_factory=list)
    #: per output: the most lines naming it in any 60 s, and their events (most common first)
    output_peak_per_min: dict[str, int] = field(default_factory=dict)
    output_events: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def count_log(path: Path, t0: float, duration: float) -> LogFigures:
    """The server's log lines (both processes' lines, the restart's too) from the start of
    the load: per minute, and per output (lines whose ``output`` field names it)."""
    figures = LogFigures()
    minutes = max(1, int(duration // 60) + (duration % 60 > 0))
    figures.per_minute = [0] * minutes
    by_output: dict[str, list[float]] = collections.defaultdict(list)
    events: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    last = -1.0  # lines before the first timestamp: the server's start, before the load
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return figures
    for raw in lines:
        entry: Any = None
        with contextlib.suppress(msgspec.DecodeError):
            entry = msgspec.json.decode(raw)
        if isinstance(entry, dict) and "timestamp" in entry:
            with contextlib.suppress(ValueError):
                last = datetime.fromisoformat(entry["timestamp"]).timestamp() - t0
        if last < 0 or last > duration:
            continue
        figures.lines += 1
        figures.per_minute[min(minutes - 1, int(last // 60))] += 1
        if isinstance(entry, dict) and isinstance(entry.get("output"), str):
            by_output[entry["output"]].append(last)
            events[entry["output"]][str(entry.get("event"))] += 1
    for name, times in by_output.items():
        times.sort()
        peak, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] < t - 60:
                lo += 1
            peak = max(peak, hi - lo + 1)
        figures.output_peak_per_min[name] = peak
        figures.output_events[name] = events[name].most_common(3)
    return figures


# -- output -------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def ms(v: float) -> str:
    return "-" if v != v else f"{v:,.0f}"  # NaN: no batch in the window


def report(
    args: argparse.Namespace,
    run: Run,
    figs: dict[str, OutputFigures],
    logs: LogFigures,
    floor: dict[str, OutputFigures],
) -> tuple[str, dict[str, tuple[bool | None, str]]]:
    outputs = list(figs)
    acked = accepted(run.load)
    lines: list[str] = []
    add = lines.append
    head = "| | " + " | ".join(outputs) + " |"
    rule = "|---|" + "---:|" * len(outputs)
    add(
        f"accepted: {len(acked):,} batches ({len(run.load.requests):,} requests acknowledged;"
        f" {run.load.retries:,} retries of refused or failed requests, {run.load.duplicates:,}"
        f" batches answered as duplicates, {run.load.given_up} requests given up,"
        f" {run.load.late} sent late by the pacer);"
        f" drained {'in' if run.drained else 'NOT within'} {run.drain_s:.0f}s after the load"
    )
    add("")
    add(head)
    add(rule)

    def row(label: str, values: list[str]) -> None:
        add(f"| {label} | " + " | ".join(values) + " |")

    row("delivered (distinct batches)", [f"{figs[o].delivered:,}" for o in outputs])
    row("missing", [f"{figs[o].missing:,}" for o in outputs])
    row("duplicates under different ids", [f"{figs[o].duplicates_other_id:,}" for o in outputs])
    row("redelivered under the same id", [f"{figs[o].redeliveries_same_id:,}" for o in outputs])
    row("unexpected (never acknowledged)", [f"{figs[o].unexpected:,}" for o in outputs])
    row("parked at the end", [f"{figs[o].parked:,}" for o in outputs])
    row(
        "most deliveries pending (outbox)",
        [f"{run.samples.queue_peak.get(o, 0):,}" for o in outputs],
    )
    row("p99 ms away from faults and catch-ups", [ms(figs[o].p99_quiet_ms) for o in outputs])
    if floor:
        row(
            f"floor: p99 ms, {args.floor_duration:g}s without fault",
            [ms(floor[o].p99_quiet_ms) if o in floor else "-" for o in outputs],
        )
        row(
            "floor: missing, duplicates under different ids",
            [f"{floor[o].missing}, {floor[o].duplicates_other_id}" for o in outputs if o in floor],
        )
    add("")
    add(
        "| fault | window s | "
        + " | ".join(f"{o} catch-up s" for o in outputs)
        + " | "
        + " | ".join(f"{o} p99 ms" for o in outputs)
        + " |"
    )
    add("|---|---|" + "---:|" * (2 * len(outputs)))
    for f in run.faults:
        catch = [
            "-"
            if f.label not in figs[o].catch_up_s
            else (
                "never"
                if figs[o].catch_up_s[f.label] == float("inf")
                else f"{figs[o].catch_up_s[f.label]:.1f}"
            )
            for o in outputs
        ]
        p99 = [
            ("(faulted) " if o == f.output else "") + ms(figs[o].p99_by_fault[f.label])
            for o in outputs
        ]
        add(
            f"| {f.label} | {f.start:.0f}-{f.end:.0f} | "
            + " | ".join(catch)
            + " | "
            + " | ".join(p99)
            + " |"
        )
    add("")
    add("| process | peak RSS MiB |")
    add("|---|---:|")
    for role, peak in sorted(run.samples.peak_rss.items()):
        add(f"| {role} | {mib(peak)} |")
    add("")
    points = run.samples.data_dir
    step = max(1, len(points) // 10)
    shown = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
    add("| data dir at s | " + " | ".join(f"{t:.0f}" for t, _, _ in shown) + " |")
    add("|---|" + "---:|" * len(shown))
    add("| MiB | " + " | ".join(mib(b) for _, b, _ in shown) + " |")
    add("| MiB without WAL | " + " | ".join(mib(b) for _, _, b in shown) + " |")
    add("")
    add(
        "data dir after the drain, stopped (the last column): "
        + ", ".join(f"{name} {mib(size)} MiB" for name, size in run.samples.files.items())
    )
    add("")
    add(
        "| log lines in minute | "
        + " | ".join(str(i + 1) for i in range(len(logs.per_minute)))
        + " |"
    )
    add("|---|" + "---:|" * len(logs.per_minute))
    add("| all | " + " | ".join(f"{n:,}" for n in logs.per_minute) + " |")
    add("")
    failing = sorted({f.output for f in run.faults if f.output})
    for o in failing:
        top = ", ".join(f"{e} {n:,}" for e, n in logs.output_events.get(o, []))
        peak = logs.output_peak_per_min.get(o, 0)
        add(f"log lines naming {o}: at most {peak:,} in any 60 s ({top or 'none'})")

    goals: dict[str, tuple[bool | None, str]] = {}
    missing = sum(f.missing for f in figs.values())
    goals["nothing missing"] = (missing == 0, f"{missing:,}")
    dups = sum(f.duplicates_other_id for f in figs.values())
    goals["no duplicates under different ids"] = (dups == 0, f"{dups:,}")
    worst = float("nan")
    for f in run.faults:
        if f.output is None:
            continue
        for o in outputs:
            if o != f.output:
                v = figs[o].p99_by_fault[f.label]
                worst = v if worst != worst or v > worst else worst
    goals[f"healthy output's p99 during the other's faults < {GOAL_P99_MS:g} ms"] = (
        None if worst != worst else worst < GOAL_P99_MS,
        f"{ms(worst)} ms",
    )
    goals["data dir flat after the retention window"] = flat_goal(args, run)
    peak_failing = max((logs.output_peak_per_min.get(o, 0) for o in failing), default=0)
    goals[f"< {GOAL_LOG_LINES_PER_MIN} log lines a minute per failing output"] = (
        peak_failing < GOAL_LOG_LINES_PER_MIN if failing else None,
        f"{peak_failing:,}/min",
    )
    add("")
    for name, (ok, value) in goals.items():
        verdict = "n/a" if ok is None else "PASS" if ok else "FAIL"
        add(f"goal: {name + ':':64} {verdict:4}  {value}")
    return "\n".join(lines), goals


def flat_goal(args: argparse.Namespace, run: Run) -> tuple[bool | None, str]:
    """Growth of the data dir without its write-ahead logs after the retention window (with
    no log retention in effect: over the second half of the load): the largest size in the
    later half of that span against the largest in the earlier half. Retention removes in
    passes, so the size is a saw-tooth; it is flat when its peaks do not climb."""
    points = [(t, b) for t, _, b in run.samples.data_dir if t <= args.duration]
    if run.retention not in ("not asked", "not in this build"):
        since = parse_seconds(run.retention)
        what = f"after {since:g}s"
    else:
        since = args.duration / 2
        what = f"second half, log retention {run.retention}"
    after = [(t, b) for t, b in points if t >= since]
    if len(after) < 2 or after[0][1] == 0:
        return None, f"too short ({what})"
    middle = (after[0][0] + after[-1][0]) / 2
    earlier = max(after[: max(1, sum(1 for t, _ in after if t < middle))], key=lambda p: p[1])
    later = max((p for p in after if p[0] >= middle), key=lambda p: p[1], default=after[-1])
    growth = (later[1] - earlier[1]) / earlier[1]
    per_min = (later[1] - earlier[1]) / max(1e-9, later[0] - earlier[0]) * 60
    peaks = f"peaks {mib(earlier[1])} then {mib(later[1])} MiB"
    return growth <= FLAT_GROWTH, f"{growth:+.0%}, {peaks}, {mib(per_min)} MiB/min ({what})"


def parse_seconds(text: str) -> float:
    """``600``, ``90s``, ``10m``, ``2h``, ``1d``: seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


# -- main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    parser.add_argument("--rate", type=float, default=3000.0, help="events/s offered (3000)")
    parser.add_argument("--outputs", type=int, default=2, help="outputs, a partner each (2)")
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help="faults to inject, comma-separated: down,error,slow,kill (all); none: no fault",
    )
    parser.add_argument(
        "--slow-delay", type=float, default=5.0, help="seconds per request when slow (5)"
    )
    parser.add_argument("--log-level", default="info", help="of patchbay serve (info, its default)")
    parser.add_argument(
        "--log-retention",
        metavar="SECONDS",
        help="passed to patchbay serve --log-retention when it has the option",
    )
    parser.add_argument(
        "--floor-duration",
        type=float,
        default=60.0,
        help="seconds of the floor: the same load without fault, on a data dir of its own,"
        " first (60; 0: none)",
    )
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--sample-every", type=float, default=None, help="data dir size (s)")
    parser.add_argument("--batches-per-request", type=int, default=10)
    parser.add_argument("--events-per-batch", type=int, default=10, help="mean; varies +-20%%")
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    parser.add_argument("--pool", type=int, default=64, help="distinct bodies (64)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (its path is printed)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--serve-partner", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--control-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--partner-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    kinds = [k.strip() for k in args.faults.split(",") if k.strip() and k.strip() != "none"]
    if unknown := set(kinds) - set(FAULT_KINDS):
        parser.error(f"--faults: unknown {', '.join(sorted(unknown))}")
    args.faults = kinds
    if args.outputs < 1:
        parser.error("--outputs: at least 1")
    return args


def main() -> int:
    args = parse_args()
    if args.serve_partner is not None:
        _partner_main(args.serve_partner, args.control_port, args.partner_out)
        return 0
    from patchbay.settings import DEFAULT_MAX_REQUEST_BYTES

    pool, _ = make_pool(
        args.pool,
        args.seed,
        args.batches_per_request,
        args.events_per_batch,
        DEFAULT_MAX_REQUEST_BYTES,
    )
    workdir = Path(tempfile.mkdtemp(prefix="patchbay-soak-"))
    floor: dict[str, OutputFigures] = {}
    errors: list[str] = []
    try:
        if args.floor_duration > 0:
            floor_run = soak(args, pool, workdir / "floor", args.floor_duration, set())
            floor = analyse(floor_run, list(floor_run.records))
            errors += [f"floor: {e}" for e in floor_run.errors]
            if not floor_run.drained:
                errors.append(f"floor: not drained within {args.drain_timeout:g}s")
        run = soak(args, pool, workdir / "soak", args.duration, set(args.faults))
        outputs = list(run.records)
        figs = analyse(run, outputs)
        logs = count_log(run.log_path, run.t0, args.duration)
    finally:
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text, goals = report(args, run, figs, logs, floor)
    print()
    print(text)
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in run.cpu.items())
    print(f"\nCPU over the load (cores of {os.cpu_count()}): {cpu}")
    if run.cpu.get("other", 0.0) > 0.2:
        print("WARNING: other processes used the CPU during the run; latencies are pessimistic")
    errors += run.errors
    if not run.drained:
        errors.append(
            f"not every accepted batch reached every output within {args.drain_timeout:g}s"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": run_config(args, ("serve_partner", "control_port", "partner_out")),
                    "accepted_batches": len(accepted(run.load)),
                    "load": {k: v for k, v in asdict(run.load).items() if k != "requests"},
                    "outputs": {o: asdict(f) for o, f in figs.items()},
                    "faults": [asdict(f) for f in run.faults],
                    "peak_rss_bytes": run.samples.peak_rss,
                    "outbox_peak_pending": run.samples.queue_peak,
                    "data_dir_bytes": run.samples.data_dir,
                    "log": asdict(logs),
                    "cpu_cores": run.cpu,
                    "log_retention": run.retention,
                    "drain_s": run.drain_s,
                    "goals": {k: v[0] for k, v in goals.items()},
                    "errors": errors,
                },
                indent=2,
                default=str,
            )
        )
    return exit_status(errors, goals, args.strict)


if __name__ == "__main__":
    sys.exit(main())
