"""Forwarding benchmark: bulk requests in, Firehose requests out to N outputs of a local partner.

Run from the repository root::

    .venv/bin/python bench/forward.py [--outputs 1,5,20] [--duration 15] [--rate EVENTS_PER_S]

For each output count N, on a fresh data dir, it:

* starts a fast local Firehose partner in a process of its own (a ``MessageProcessor`` served
  by ``patchbay.firehose.asgi.asgi_app`` on uvicorn with uvloop and httptools) that records,
  for each request, the output (an account setting), ``source_id`` (the batch's
  ``source_request_id``), the message id, the event count and ``time.time()`` on receipt;
* registers it (``patchbay modules register``), creates N outputs of it (``patchbay outputs
  add --module``), one input (``--rate-limit 0``) and N connections, and starts
  ``patchbay serve``;
* phase 1, maximum: a separate client process posts bulk requests to ``/v2/bulkevents`` as
  fast as they are accepted (or at ``--rate``), keeping at most ``--max-backlog``
  acknowledged but not yet delivered messages in the pipeline (so the queue never grows
  without bound and the drain stays short); it measures the events delivered per second at
  the partner, in total and per output, and the latency from each batch's 202 to the
  partner's receipt (p50, p99);
* phase 2, half load: the same at half the maximum measured in phase 1, paced evenly
  (open loop); p99 of the same latency;
* waits for every accepted batch to reach every output (``--drain-timeout``) and reports
  any missing one as an error.

The floor, in the same run: the partner alone, a bare aiohttp client (its own process)
posting event processing requests of the same size (the ones the platform sent it)
directly to it. It prints a table, checks the goals (>= 50,000 events/s to one output; with
20 outputs >= a third of that in output-events/s; p99 < 250 ms at half load) and exits 0
unless ``--strict`` and a goal is missed (1) or something went wrong (2). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # bench/common.py
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
from ingest import Template, fill, make_pool, srid_prefix  # bench/ingest.py

#: The issue's goals.
GOAL_ONE_OUTPUT_EVENTS_PER_S = 50_000
GOAL_TWENTY_OUTPUTS_EVENTS_PER_S = GOAL_ONE_OUTPUT_EVENTS_PER_S / 3
GOAL_HALF_LOAD_P99_MS = 250.0

MODULE = "bench"
TOKEN = "bench-partner-token"
OUTPUT_SETTING = "outputName"
SAMPLE_BODIES = 256


# -- the partner (its own process) --------------------------------------------------------


@dataclass
class PartnerApp:
    """The bench partner's ASGI app, its counters (what ``GET /stats`` answers) and a
    function writing what it received so far to the ``out`` file (done at every shutdown)."""

    app: Any
    stats: Callable[[], dict[str, Any]]
    dump: Callable[[], None]


def _partner_main(port: int, out: Path, audiences: bool = False) -> None:
    """Serve the bench partner on ``port``; on shutdown write what it received to ``out``."""
    import uvicorn

    uvicorn.run(
        partner_app(out, audiences).app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )


def partner_app(out: Path, audiences: bool = False) -> PartnerApp:
    """The bench partner: accepts everything, records one tuple per request: the output
    (its account setting ``outputName``), ``source_id``, the message id, the event count and
    ``time.time()`` on receipt.

    With ``audiences`` it also registers audience processing (no bulk configuration: changes
    are sent at once), answers subscription and membership change requests (the SDK's
    defaults), and records one tuple per (user, audience) change: the MPID, the audience
    id, the action and ``time.time()`` on receipt (bench/audiences.py)."""
    from patchbay.firehose import (
        AudienceMembershipChangeRequest,
        AudienceMembershipChangeResponse,
        AudienceProcessingRegistration,
        AudienceSubscriptionRequest,
        AudienceSubscriptionResponse,
        DeviceIdentityPermission,
        EventProcessingRegistration,
        EventProcessingRequest,
        EventProcessingResponse,
        MessageProcessor,
        ModuleRegistrationResponse,
        Permissions,
        TextSetting,
        UserIdentityPermission,
        dumps,
    )
    from patchbay.firehose.asgi import asgi_app
    from patchbay.firehose.enums import (
        DeviceIdentityType,
        EventType,
        IdentityEncoding,
        RuntimeEnvironmentType,
        UserIdentityType,
    )

    class BenchPartner(MessageProcessor):
        """Accepts everything; records one tuple per request, nothing per event."""

        def __init__(self) -> None:
            self.records: list[tuple[str | None, str | None, str, int, float]] = []
            self.samples: list[str] = []
            self.events = 0
            #: audiences: (mpid, audience id, action, time.time()) per change received
            self.changes: list[tuple[str | None, int, str | None, float]] = []
            self.subscriptions = 0
            self.audience_messages = 0
            self.added: dict[int, set[str | None]] = {}  # audience id -> MPIDs added

        def registration(self) -> ModuleRegistrationResponse:
            raw = IdentityEncoding.RAW
            return ModuleRegistrationResponse(
                name="Bench Partner",
                version="1.0.0",
                description="Counts what it receives (bench/forward.py).",
                permissions=Permissions(
                    user_identities=[
                        UserIdentityPermission(
                            type=UserIdentityType.EMAIL, encoding=IdentityEncoding.SHA256
                        ),
                        UserIdentityPermission(type=UserIdentityType.CUSTOMER, encoding=raw),
                    ],
                    device_identities=[
                        DeviceIdentityPermission(
                            type=DeviceIdentityType.IOS_ADVERTISING_ID, encoding=raw
                        ),
                        DeviceIdentityPermission(
                            type=DeviceIdentityType.GOOGLE_ADVERTISING_ID, encoding=raw
                        ),
                    ],
                    allow_access_ip_address=True,
                    allow_device_info=True,
                    allow_user_attributes=True,
                    allow_access_mpid=True,
                ),
                event_processing_registration=EventProcessingRegistration(
                    account_settings=[
                        TextSetting(id=OUTPUT_SETTING, name="Output name", required=True)
                    ],
                    supported_event_types=[e for e in EventType if "push_message" not in e],
                    supported_runtime_environments=list(RuntimeEnvironmentType),
                ),
                audience_processing_registration=(
                    AudienceProcessingRegistration() if audiences else None
                ),
            )

        def process_event_processing_request(
            self, request: EventProcessingRequest
        ) -> EventProcessingResponse:
            received = time.time()
            settings = request.account.account_settings if request.account else {}
            count = len(request.events)
            self.records.append(
                (settings.get(OUTPUT_SETTING), request.source_id, str(request.id), count, received)
            )
            self.events += count
            if len(self.samples) < SAMPLE_BODIES:
                self.samples.append(dumps(request).decode())
            return EventProcessingResponse()

        def process_audience_subscription_request(
            self, request: AudienceSubscriptionRequest
        ) -> AudienceSubscriptionResponse:
            self.subscriptions += 1
            return super().process_audience_subscription_request(request)

        def process_audience_membership_change_request(
            self, request: AudienceMembershipChangeRequest
        ) -> AudienceMembershipChangeResponse:
            received = time.time()
            self.audience_messages += 1
            for profile in request.user_profiles or ():
                for audience in profile.audiences:
                    self.changes.append(
                        (profile.mpid, audience.audience_id, audience.action, received)
                    )
                    if audience.action == "add":
                        self.added.setdefault(audience.audience_id, set()).add(profile.mpid)
            return super().process_audience_membership_change_request(request)

    partner = BenchPartner()
    inner = asgi_app(partner, token=TOKEN, threaded=False)
    encode = msgspec.json.encode

    def stats() -> dict[str, Any]:
        counts: dict[str, Any] = {"messages": len(partner.records), "events": partner.events}
        if audiences:
            counts["subscriptions"] = partner.subscriptions
            counts["audience_messages"] = partner.audience_messages
            counts["audience_changes"] = len(partner.changes)
        return counts

    def dump() -> None:
        received = {"records": partner.records, "samples": partner.samples}
        out.write_bytes(encode(received | {"changes": partner.changes}))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    dump()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/stats":
            body = encode(stats())
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["method"] == "GET" and audiences:
            prefix = "/added/"  # the MPIDs added to an audience: /added/AUDIENCE_ID
            if scope["path"].startswith(prefix):
                audience_id = int(scope["path"][len(prefix) :])
                body = encode(sorted(m for m in partner.added.get(audience_id, ()) if m))
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await inner(scope, receive, send)

    return PartnerApp(app, stats, dump)


def start_partner(
    port: int, out: Path, log_path: Path, audiences: bool = False
) -> subprocess.Popen[bytes]:
    """The partner (``_partner_main``) in a process of its own, once it answers."""
    command = [sys.executable, __file__, "--serve-partner", str(port), "--partner-out", str(out)]
    if audiences:
        command.append("--partner-audiences")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    wait_http(f"http://127.0.0.1:{port}/stats", process, log_path, "the partner")
    return process


def partner_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        stats: dict[str, Any] = json.loads(r.read())
    return stats


def partner_added(port: int, audience_id: int) -> set[str]:
    """The MPIDs the partner (with audiences) received an ``add`` of ``audience_id`` for."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/added/{audience_id}", timeout=5) as r:
        return set(json.loads(r.read()))


# -- processes ----------------------------------------------------------------------------


def patchbay_cli(*args: str) -> str:
    """Run a ``patchbay`` command in this process (the same click command as the shell's,
    without an interpreter start-up per command); its output, or SystemExit."""
    from click.testing import CliRunner

    from patchbay.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"patchbay {' '.join(args[:2])} failed:\n{result.output}")
    return result.stdout  # its log lines go to stderr


def setup(data_dir: Path, partner_port: int, n_outputs: int) -> dict[str, str]:
    """Module, N outputs, one input without a rate limit, N connections; the credentials."""
    where = ("--data-dir", str(data_dir))
    url = f"http://127.0.0.1:{partner_port}/firehose"
    creds: dict[str, str] = json.loads(  # first: it creates the store
        patchbay_cli(
            "inputs", "add", "bench", "--type", "server", "--rate-limit", "0", "--json", *where
        )
    )
    patchbay_cli("modules", "register", MODULE, "--url", url, "--token", TOKEN, *where)
    for name in output_names(n_outputs):
        patchbay_cli(
            "outputs",
            "add",
            name,
            "--module",
            MODULE,
            "--setting",
            f"{OUTPUT_SETTING}={name}",
            *where,
        )
        patchbay_cli("connections", "add", "--input", "bench", "--output", name, *where)
    return creds


def output_names(n: int) -> list[str]:
    return [f"out-{i:02d}" for i in range(n)]


# -- the load client (its own process) ----------------------------------------------------


@dataclass
class PhaseConfig:
    url: str
    auth: str
    partner_port: int
    pool: list[Template]
    concurrency: int
    warmup_s: float
    duration_s: float
    run: int
    phase: int
    outputs: int
    max_backlog: int
    rate_batches: float | None  # None: as fast as accepted (closed loop)


@dataclass
class PhaseResult:
    #: one per acknowledged request: (worker, first counter, batches, 202 time, rejected)
    requests: list[tuple[int, int, int, float, list[int]]] = field(default_factory=list)
    #: the index in the pool of each acknowledged request's body (same order as requests)
    pool_indexes: list[int] = field(default_factory=list)
    window_from: float = 0.0  # time.time()
    window_to: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    accepted_batches: int = 0
    accepted_events: int = 0
    gated_s: float = 0.0  # time the workers waited for the backlog to shrink
    #: the partner's counters as the client polled them: (time.time(), messages, events)
    delivered: list[tuple[float, int, int]] = field(default_factory=list)
    late_requests: int = 0  # paced requests that could not start on time


async def _phase(cfg: PhaseConfig) -> PhaseResult:
    import aiohttp

    result = PhaseResult()
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + cfg.warmup_s + cfg.duration_s
    wall0 = time.time()
    result.window_from = wall0 + cfg.warmup_s
    result.window_to = wall0 + cfg.warmup_s + cfg.duration_s
    decoder = msgspec.json.Decoder()
    baseline = partner_stats(cfg.partner_port)["messages"]
    delivered = 0
    inflight_batches = 0
    counters = [0] * 256
    stats_url = f"http://127.0.0.1:{cfg.partner_port}/stats"

    async def post(session: aiohttp.ClientSession, worker: int, n: int) -> None:
        nonlocal inflight_batches
        template = cfg.pool[n % len(cfg.pool)]
        counter = counters[worker]
        counters[worker] += len(template.id_offsets)
        body = fill(template, srid_prefix(cfg.run, cfg.phase * 256 + worker), counter)
        inflight_batches += len(template.id_offsets)
        try:
            async with session.post("/v2/bulkevents", data=body) as response:
                status = response.status
                payload = await response.read()
            acked = time.time()
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}")
            return
        finally:
            inflight_batches -= len(template.id_offsets)
        result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
        if status != 202:
            if len(result.errors) < 20:
                result.errors.append(f"HTTP {status}: {payload[:300]!r}")
            return
        answer = decoder.decode(payload)
        rejected = [r["index"] for r in answer["rejected"]]
        result.accepted_batches += answer["accepted"]
        result.accepted_events += template.total_events - sum(template.events[i] for i in rejected)
        result.requests.append(
            (cfg.phase * 256 + worker, counter, len(template.id_offsets), acked, rejected)
        )
        result.pool_indexes.append(n % len(cfg.pool))

    def backlog() -> int:
        return (result.accepted_batches + inflight_batches) * cfg.outputs - delivered

    async def watch(session: aiohttp.ClientSession) -> None:
        nonlocal delivered
        while loop.time() < end:
            async with session.get(stats_url) as response:
                stats = await response.json()
            delivered = stats["messages"] - baseline
            result.delivered.append((time.time(), stats["messages"], stats["events"]))
            await asyncio.sleep(0.02)

    async def closed_loop(session: aiohttp.ClientSession, worker: int) -> None:
        n = worker
        while loop.time() < end:
            if backlog() > cfg.max_backlog:
                began = loop.time()
                while backlog() > cfg.max_backlog and loop.time() < end:
                    await asyncio.sleep(0.005)
                result.gated_s += loop.time() - began
                continue
            await post(session, worker, n)
            n += cfg.concurrency

    async def paced(session: aiohttp.ClientSession) -> None:
        assert cfg.rate_batches
        batches = len(cfg.pool[0].id_offsets)
        interval = batches / cfg.rate_batches
        at, n = loop.time(), 0
        tasks: set[asyncio.Task[None]] = set()
        while at < end:
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -interval:
                result.late_requests += 1
            if len(tasks) < 256:
                task = asyncio.create_task(post(session, n % 256, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                result.late_requests += 1
            n += 1
            at += interval
        if tasks:
            await asyncio.gather(*tasks)

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"Authorization": cfg.auth, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        cfg.url, connector=connector, timeout=timeout, headers=headers
    ) as session:
        watcher = asyncio.create_task(watch(session))
        if cfg.rate_batches is None:
            await asyncio.gather(*(closed_loop(session, i) for i in range(cfg.concurrency)))
        else:
            await paced(session)
        watcher.cancel()
    return result


def run_phase(cfg: PhaseConfig, conn: Connection) -> None:
    """Entry point of the client process: run one phase, send back a PhaseResult."""
    run_child(lambda: _phase(cfg), conn, "client")


def in_process(target: Any, arg: Any, timeout: float) -> Any:
    """Run ``target(arg, conn)`` in a spawned process; what it sends back."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=False)
    process = ctx.Process(target=target, args=(arg, theirs), name="bench-client")
    process.start()
    theirs.close()
    if not ours.poll(timeout):
        process.kill()
        raise SystemExit("the client process did not finish")
    answer = ours.recv()
    process.join(30)
    if isinstance(answer, str):
        raise SystemExit(answer)
    return answer


# -- the floor client ---------------------------------------------------------------------


@dataclass
class FloorConfig:
    url: str
    bodies: list[bytes]
    events: list[int]
    concurrency: int
    warmup_s: float
    duration_s: float


async def _floor(cfg: FloorConfig) -> tuple[int, int, list[float], list[str]]:
    import aiohttp

    loop = asyncio.get_running_loop()
    start = loop.time()
    window_from, window_to = start + cfg.warmup_s, start + cfg.warmup_s + cfg.duration_s
    messages = events = 0
    latencies: list[float] = []
    errors: list[str] = []
    headers = {"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"}

    async def worker(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal messages, events
        n = index
        while loop.time() < window_to:
            body = cfg.bodies[n % len(cfg.bodies)]
            count = cfg.events[n % len(cfg.bodies)]
            n += cfg.concurrency
            began = loop.time()
            async with session.post(cfg.url, data=body) as response:
                await response.read()
                status = response.status
            ended = loop.time()
            if status != 200:
                errors.append(f"floor: HTTP {status}")
                continue
            if window_from <= ended < window_to:
                messages += 1
                events += count
                latencies.append((ended - began) * 1000)

    connector = aiohttp.TCPConnector(limit=cfg.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        await asyncio.gather(*(worker(i, session) for i in range(cfg.concurrency)))
    return messages, events, latencies, errors[:10]


def run_floor(cfg: FloorConfig, conn: Connection) -> None:
    try:
        import uvloop

        result = uvloop.run(_floor(cfg))
    except BaseException as exc:
        conn.send(f"floor client failed: {type(exc).__name__}: {exc}")
        raise
    conn.send(result)


# -- profiling (optional) -----------------------------------------------------------------


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("  (py-spy not found: no profile)", flush=True)
        return None
    command = [spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "200"]
    # --gil: what holds the server's GIL (its CPU); --subprocesses: the delivery process too
    command += ["-f", "raw", "--threads", "--gil", "--subprocesses", "-o", str(out)]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_profile(path: Path, top: int = 15) -> str:
    """Samples per thread, and the functions with the most samples (own and inclusive)."""
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; by thread:"]
    lines += [f"    {c / total:6.1%}  {t}" for t, c in threads.most_common(8)]
    lines.append("  own time:")
    lines += [f"    {c / total:6.1%}  {f}" for f, c in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {c / total:6.1%}  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


# -- one output count ---------------------------------------------------------------------


@dataclass
class Row:
    outputs: int
    delivered_events_per_s: float
    per_output_events_per_s: float
    per_output_min_events_per_s: float
    messages_per_s: float
    accepted_events_per_s: float
    p50_ms: float
    p99_ms: float
    half_rate_events_per_s: float
    half_p50_ms: float
    half_p99_ms: float
    cpu: dict[str, float | None] = field(default_factory=dict)
    gated_s: float = 0.0
    late_requests: int = 0
    accepted_batches: int = 0
    received_messages: int = 0
    missing: int = 0
    duplicates: int = 0


@dataclass
class Context:
    args: argparse.Namespace
    pool: list[Template]
    workdir: Path
    errors: list[str]
    samples: list[str] = field(default_factory=list)


#: Counters read with the processes' CPU (name -> a function reading it): their rate in
#: the window is reported beside the cores (e.g. batches a stage counted per second).
Counters = Mapping[str, Callable[[], float | None]]


def phase_cpu(pids: dict[str, int], counters: Counters | None = None) -> dict[str, float | None]:
    values: dict[str, float | None] = {k: process_cpu_s(p) for k, p in pids.items()}
    values["machine"] = machine_cpu_s()
    for name, read in (counters or {}).items():
        values[name] = read()
    return values


def cpu_cores(
    before: dict[str, float | None],
    after: dict[str, float | None],
    seconds: float,
    apart: Collection[str] = (),
) -> dict[str, float | None]:
    """Per second of the window: each process's cores, and the rate of each counter.
    ``apart``: keys that are not processes of their own (a child counted in its parent's
    figure, a counter), left out of what the machine's ``other`` is computed from."""
    cores: dict[str, float | None] = {}
    for key, value in before.items():
        other = after.get(key)
        cores[key] = None if value is None or other is None else (other - value) / seconds
    if cores.get("machine") is not None:
        known = sum(v or 0.0 for k, v in cores.items() if k != "machine" and k not in apart)
        cores["other"] = max(0.0, (cores["machine"] or 0.0) - known)
    return cores


def drive(
    ctx: Context,
    cfg: PhaseConfig,
    pids: dict[str, int],
    profile: Path | None,
    apart: Collection[str] = (),
    counters: Counters | None = None,
) -> tuple[PhaseResult, dict[str, float | None]]:
    """Run one phase in a client process; CPU use of each process in its window (``pids``
    named in ``apart`` are children whose CPU their parent's figure includes too), and the
    rate of each of ``counters``."""
    ctx_ = multiprocessing.get_context("spawn")
    ours, theirs = ctx_.Pipe(duplex=False)
    client = ctx_.Process(target=run_phase, args=(cfg, theirs), name="bench-client")
    client.start()
    theirs.close()
    time.sleep(cfg.warmup_s + 0.3)  # the process start-up, then the warm-up
    spy = start_profile(pids["server"], cfg.duration_s - 0.5, profile) if profile else None
    before = phase_cpu({**pids, "client": client.pid or 0}, counters)
    time.sleep(max(0.0, cfg.duration_s - 0.6))
    after = phase_cpu({**pids, "client": client.pid or 0}, counters)
    cores = cpu_cores(before, after, max(0.1, cfg.duration_s - 0.6), {*apart, *(counters or {})})
    if not ours.poll(cfg.duration_s + 180):
        client.kill()
        raise SystemExit("the client process did not finish")
    answer = ours.recv()
    client.join(30)
    if spy is not None:
        spy.wait(60)
    if isinstance(answer, str):
        raise SystemExit(answer)
    return answer, cores


def drain(port: int, expected: int, timeout: float, server: subprocess.Popen[bytes]) -> float:
    """Wait until the partner received ``expected`` messages; seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < timeout and server.poll() is None:
        if partner_stats(port)["messages"] >= expected:
            break
        time.sleep(0.05)
    return time.monotonic() - began


def run_outputs(ctx: Context, n: int, run: int) -> Row:
    args = ctx.args
    base = ctx.workdir / f"outputs-{n}"
    data_dir = base / "data"
    base.mkdir(parents=True)
    partner_out = base / "partner.json"
    partner_port, server_port = free_port(), free_port()
    partner = start_partner(partner_port, partner_out, base / "partner.log")
    server: subprocess.Popen[bytes] | None = None
    try:
        t = time.perf_counter()
        creds = setup(data_dir, partner_port, n)
        server = start_server(data_dir, server_port, args.durability, base / "serve.log")
        print(
            f"[{n} output(s)] set up in {time.perf_counter() - t:.1f}s; phase 1:"
            f" {args.warmup:g}s warm-up + {args.duration:g}s"
            + (f" at {args.rate:,.0f} events/s" if args.rate else " as fast as accepted")
            + f" (backlog <= {args.max_backlog:,} messages) ...",
            flush=True,
        )
        auth = "Basic " + b64encode(f"{creds['key']}:{creds['secret']}".encode()).decode()
        mean_events = statistics.mean(p.total_events for p in ctx.pool) / args.batches_per_request
        pids = {"server": server.pid, "partner": partner.pid}
        common = {
            "url": f"http://127.0.0.1:{server_port}",
            "auth": auth,
            "partner_port": partner_port,
            "pool": ctx.pool,
            "concurrency": args.concurrency,
            "run": run,
            "outputs": n,
            "max_backlog": args.max_backlog,
        }
        profile = base / "serve.pyspy.txt" if args.profile else None
        first, cores = drive(
            ctx,
            PhaseConfig(
                **common,
                warmup_s=args.warmup,
                duration_s=args.duration,
                phase=0,
                rate_batches=args.rate / mean_events if args.rate else None,
            ),
            pids,
            profile,
        )
        waited = drain(partner_port, first.accepted_batches * n, args.drain_timeout, server)
        print(
            f"[{n} output(s)] phase 1: {first.accepted_batches:,} batches accepted,"
            f" drained in {waited:.1f}s",
            flush=True,
        )
        # The maximum is what the partner received in phase 1's window, in messages (one
        # per batch and output); phase 2 offers half of it, in batches.
        messages_per_s = delivered_in(first, first.window_from, first.window_to)[0]
        rate_events = messages_per_s / n * mean_events / 2
        print(
            f"[{n} output(s)] phase 2: 1s warm-up + {args.half_duration:g}s at"
            f" {rate_events:,.0f} events/s (half of phase 1) ...",
            flush=True,
        )
        second, _ = drive(
            ctx,
            PhaseConfig(
                **common,
                warmup_s=1.0,
                duration_s=args.half_duration,
                phase=1,
                rate_batches=rate_events / mean_events,
            ),
            pids,
            None,
        )
        expected = (first.accepted_batches + second.accepted_batches) * n
        waited = drain(partner_port, expected, args.drain_timeout, server)
        print(
            f"[{n} output(s)] phase 2: {second.accepted_batches:,} batches accepted,"
            f" drained in {waited:.1f}s",
            flush=True,
        )
        code = stop_process(server)
        if code not in (0, -signal.SIGTERM):
            ctx.errors.append(f"[{n}] patchbay serve exited with {code}")
        server = None
    finally:
        if server is not None:
            stop_process(server)
        code = stop_process(partner)
    if code not in (0, -signal.SIGTERM):
        ctx.errors.append(f"[{n}] the partner exited with {code}")
    dump = msgspec.json.decode(partner_out.read_bytes())
    records: list[list[Any]] = dump["records"]
    if not ctx.samples:
        ctx.samples = dump["samples"]
    for phase in (first, second):
        for e in phase.errors[:10]:
            ctx.errors.append(f"[{n}] client: {e}")
    if profile is not None and profile.exists():
        print(f"[{n} output(s)] py-spy profile of patchbay serve in phase 1 ({profile}):")
        print(summarize_profile(profile))
        if args.profile:
            shutil.copy(profile, Path(args.profile) / f"serve-{n}-outputs.pyspy.txt")
    return analyse(ctx, n, first, second, records, cores)


def delivered_in(phase: PhaseResult, t0: float, t1: float) -> tuple[float, float]:
    """(messages/s, events/s) the partner received between ``t0`` and ``t1``, from the
    client's polls of its counters."""
    inside = [d for d in phase.delivered if t0 <= d[0] <= t1]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return 0.0, 0.0
    span = inside[-1][0] - inside[0][0]
    return (inside[-1][1] - inside[0][1]) / span, (inside[-1][2] - inside[0][2]) / span


def srid_key(srid: str) -> tuple[int, int]:
    """(worker, counter) of a request id made by ``fill``."""
    return int(srid[9:13], 16), int(srid[24:], 16)


def analyse(
    ctx: Context,
    n: int,
    first: PhaseResult,
    second: PhaseResult,
    records: list[list[Any]],
    cores: dict[str, float | None],
) -> Row:
    acked: dict[tuple[int, int], float] = {}
    for phase in (first, second):
        for worker, counter, batches, at, rejected in phase.requests:
            skip = set(rejected)
            for i in range(batches):
                if i not in skip:
                    acked[(worker, counter + i)] = at
    names = set(output_names(n))
    seen: set[tuple[str, tuple[int, int]]] = set()
    duplicates = unknown = matched = 0
    first_lat: list[float] = []
    half_lat: list[float] = []
    window_events = 0
    window_messages = 0
    per_output: collections.Counter[str] = collections.Counter()
    w0, w1 = first.window_from, first.window_to
    h0, h1 = second.window_from, second.window_to
    for output, srid, _message_id, events, received in records:
        if output not in names or srid is None:
            unknown += 1
            continue
        key = srid_key(srid)
        if (output, key) in seen:
            duplicates += 1
            continue
        seen.add((output, key))
        acked_at = acked.get(key)
        if acked_at is None:
            unknown += 1
            continue
        matched += 1
        if w0 <= received < w1:
            window_events += events
            window_messages += 1
            per_output[output] += events
        if w0 <= acked_at < w1:
            first_lat.append((received - acked_at) * 1000)
        elif h0 <= acked_at < h1:
            half_lat.append((received - acked_at) * 1000)
    missing = len(acked) * n - matched
    if missing > 0:
        ctx.errors.append(
            f"[{n}] {missing:,} of {len(acked) * n:,} (batch, output) deliveries never reached"
            f" the partner within --drain-timeout"
        )
    if unknown:
        ctx.errors.append(f"[{n}] the partner received {unknown:,} unexpected messages")
    window = w1 - w0
    half_window = h1 - h0
    half_batches = sum(r[2] - len(r[4]) for r in second.requests if h0 <= r[3] < h1)
    mean_events = statistics.mean(p.total_events for p in ctx.pool) / len(ctx.pool[0].id_offsets)
    in_window = [r for r in first.requests if w0 <= r[3] < w1]
    return Row(
        outputs=n,
        delivered_events_per_s=window_events / window,
        per_output_events_per_s=window_events / window / n,
        per_output_min_events_per_s=min((per_output[o] for o in names), default=0) / window,
        messages_per_s=window_messages / window,
        accepted_events_per_s=sum(r[2] - len(r[4]) for r in in_window) * mean_events / window,
        p50_ms=percentile(first_lat, 50),
        p99_ms=percentile(first_lat, 99),
        half_rate_events_per_s=half_batches * mean_events / half_window,
        half_p50_ms=percentile(half_lat, 50),
        half_p99_ms=percentile(half_lat, 99),
        cpu=cores,
        gated_s=first.gated_s,
        late_requests=second.late_requests,
        accepted_batches=len(acked),
        received_messages=len(records),
        missing=max(0, missing),
        duplicates=duplicates,
    )


def run_floor_phase(ctx: Context) -> dict[str, float]:
    """The partner alone: a bare aiohttp client posting the messages the platform sent."""
    args = ctx.args
    base = ctx.workdir / "floor"
    base.mkdir()
    port = free_port()
    partner = start_partner(port, base / "partner.json", base / "partner.log")
    bodies = [s.encode() for s in ctx.samples]
    events = [len(msgspec.json.decode(b)["events"]) for b in bodies]
    try:
        cfg = FloorConfig(
            url=f"http://127.0.0.1:{port}/firehose",
            bodies=bodies,
            events=events,
            concurrency=args.floor_concurrency,
            warmup_s=1.0,
            duration_s=args.floor_duration,
        )
        before = phase_cpu({"partner": partner.pid})
        messages, n_events, latencies, errors = in_process(run_floor, cfg, 120)
        after = phase_cpu({"partner": partner.pid})
    finally:
        code = stop_process(partner)
    if code not in (0, -signal.SIGTERM):
        ctx.errors.append(f"floor: the partner exited with {code}")
    ctx.errors.extend(errors)
    sizes = [len(b) for b in bodies]
    return {
        "events_per_s": n_events / args.floor_duration,
        "messages_per_s": messages / args.floor_duration,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_bytes": statistics.mean(sizes),
        "mean_events": statistics.mean(events),
        "partner_cores": ((after["partner"] or 0) - (before["partner"] or 0))
        / (args.floor_duration + 1.0),
    }


# -- main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--outputs", default="1,5,20", help="output counts to run, comma-separated (1,5,20)"
    )
    parser.add_argument("--duration", type=float, default=15.0, help="phase 1 seconds (15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    parser.add_argument(
        "--half-duration", type=float, default=10.0, help="phase 2 (half load) seconds (10)"
    )
    parser.add_argument("--events-per-batch", type=int, default=10, help="mean; varies +-20%%")
    parser.add_argument("--batches-per-request", type=int, default=10)
    parser.add_argument(
        "--rate", type=float, default=None, help="phase 1 offered events/s (default: max)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="phase 1 clients (4)")
    parser.add_argument(
        "--max-backlog",
        type=int,
        default=2000,
        help="phase 1: most messages acknowledged but not yet delivered (2000)",
    )
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    parser.add_argument("--floor-duration", type=float, default=5.0)
    parser.add_argument("--floor-concurrency", type=int, default=16)
    parser.add_argument("--pool", type=int, default=64, help="distinct bodies (64)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy the server in phase 1, keep profiles in DIR"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--serve-partner", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--partner-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--partner-audiences", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def fmt_table(rows: list[Row], floor: dict[str, float] | None) -> str:
    head = (
        f"{'':22} {'events/s':>10} {'per output':>10} {'msgs/s':>8} {'p50 ms':>8}"
        f" {'p99 ms':>8} {'half ev/s':>10} {'p99@half':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        label = f"{r.outputs} output{'s' if r.outputs > 1 else ''}"
        lines.append(
            f"{label:22} {r.delivered_events_per_s:>10,.0f} {r.per_output_events_per_s:>10,.0f}"
            f" {r.messages_per_s:>8,.0f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f}"
            f" {r.half_rate_events_per_s:>10,.0f} {r.half_p99_ms:>9.1f}"
        )
    if floor is not None:
        lines.append(
            f"{'floor: partner alone':22} {floor['events_per_s']:>10,.0f} {'':>10}"
            f" {floor['messages_per_s']:>8,.0f} {floor['p50_ms']:>8.1f} {floor['p99_ms']:>8.1f}"
        )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    if args.serve_partner is not None:
        _partner_main(args.serve_partner, args.partner_out, args.partner_audiences)
        return 0
    counts = [int(x) for x in args.outputs.split(",") if x.strip()]
    if not counts or min(counts) < 1:
        raise SystemExit("--outputs: positive counts, e.g. 1,5,20")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    from patchbay.settings import DEFAULT_MAX_REQUEST_BYTES

    t = time.perf_counter()
    pool, shrunk = make_pool(
        args.pool,
        args.seed,
        args.batches_per_request,
        args.events_per_batch,
        DEFAULT_MAX_REQUEST_BYTES,
    )
    sizes = [len(p.body) for p in pool]
    print(
        f"pool: {len(pool)} bodies of {args.batches_per_request} batches,"
        f" {statistics.mean(p.total_events for p in pool) / args.batches_per_request:.1f}"
        f" events/batch, {min(sizes) / 1024:.0f}-{max(sizes) / 1024:.0f} KiB"
        f" ({shrunk} shrunk), made in {time.perf_counter() - t:.1f}s",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="patchbay-forward-"))
    ctx = Context(args, pool, workdir, [])
    rows: list[Row] = []
    floor: dict[str, float] | None = None
    try:
        base_run = random.Random(args.seed).getrandbits(32) ^ (os.getpid() << 8) & 0xFFFFFFFF
        for i, n in enumerate(counts):
            rows.append(run_outputs(ctx, n, (base_run + i) & 0xFFFFFFFF))
        if ctx.samples:
            print(
                f"floor: the partner alone, {args.floor_concurrency} connections,"
                f" {args.floor_duration:g}s ...",
                flush=True,
            )
            floor = run_floor_phase(ctx)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(fmt_table(rows, floor))
    print()
    print(
        "events/s: events delivered to the partner per second in phase 1 (all outputs);"
        " per output: the same / N; p50/p99: from a batch's 202 to the partner's receipt"
        " (phase 1, backlog-bound); half ev/s: offered in phase 2; p99@half: its p99;"
        " CPU: server = patchbay serve with its delivery process."
    )
    for r in rows:
        cpu = ", ".join(
            f"{k} {v:.2f}" for k, v in r.cpu.items() if v is not None and k != "machine"
        )
        print(
            f"[{r.outputs}] CPU in phase 1 (cores of {os.cpu_count()}): {cpu};"
            f" accepted {r.accepted_events_per_s:,.0f} events/s; slowest output"
            f" {r.per_output_min_events_per_s:,.0f} events/s; client gated by the backlog"
            f" {r.gated_s / max(1, args.concurrency):.1f}s of {args.duration + args.warmup:g}s;"
            f" half-load p50 {r.half_p50_ms:.1f} ms; late requests {r.late_requests};"
            f" duplicates {r.duplicates}"
        )
        if (r.cpu.get("other") or 0.0) > 0.2:
            print(f"WARNING: [{r.outputs}] other processes used the CPU; figures are low")
    if floor is not None:
        print(
            f"floor: {floor['mean_bytes']:,.0f} bytes and {floor['mean_events']:.1f} events per"
            f" message; partner CPU {floor['partner_cores']:.2f} cores"
        )

    by_n = {r.outputs: r for r in rows}
    goals: dict[str, tuple[bool | None, str]] = {}
    one = by_n.get(1)
    goals[f"1 output >= {GOAL_ONE_OUTPUT_EVENTS_PER_S:,} events/s"] = (
        (
            one.delivered_events_per_s >= GOAL_ONE_OUTPUT_EVENTS_PER_S,
            f"{one.delivered_events_per_s:,.0f}",
        )
        if one
        else (None, "not run")
    )
    twenty = by_n.get(20)
    goals[f"20 outputs >= {GOAL_TWENTY_OUTPUTS_EVENTS_PER_S:,.0f} events/s"] = (
        (
            twenty.delivered_events_per_s >= GOAL_TWENTY_OUTPUTS_EVENTS_PER_S,
            f"{twenty.delivered_events_per_s:,.0f}",
        )
        if twenty
        else (None, "not run")
    )
    for r in rows:
        goals[f"{r.outputs} output(s): p99 at half load < {GOAL_HALF_LOAD_P99_MS:g} ms"] = (
            r.half_p99_ms < GOAL_HALF_LOAD_P99_MS,
            f"{r.half_p99_ms:.1f} ms",
        )
    for name, (ok, value) in goals.items():
        verdict = "n/a" if ok is None else "PASS" if ok else "FAIL"
        print(f"goal: {name:42} {value:>12}  {verdict}")
    for r in rows:
        ok = r.missing == 0
        print(
            f"check: [{r.outputs}] every accepted batch reached every output:"
            f" {r.accepted_batches:,} batches x {r.outputs} = {r.accepted_batches * r.outputs:,},"
            f" missing {r.missing:,}  {'OK' if ok else 'MISSING'}"
        )

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": run_config(
                        args, ("serve_partner", "partner_out", "partner_audiences")
                    ),
                    "rows": [asdict(r) for r in rows],
                    "floor": floor,
                    "goals": {k: v[0] for k, v in goals.items()},
                    "errors": ctx.errors,
                },
                indent=2,
            )
        )
    sys.stdout.flush()
    for e in ctx.errors:
        print(f"ERROR: {e}", file=sys.stderr)
    if ctx.errors:
        return 2
    if args.strict and not all(ok is not False for ok, _ in goals.values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
