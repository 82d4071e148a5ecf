"""Scale-out benchmark: the same workload on the embedded mode, on one processor and on two
(Apache Kafka + PostgreSQL), each process's CPU per event, and what that means for a cluster.

Run from the repository root::

    .venv/bin/python bench/scale.py                  # embedded, 1 and 2 processors, ~5 minutes
    .venv/bin/python bench/scale.py --quick          # the same, shorter (~2 minutes)
    .venv/bin/python bench/scale.py --processors 2 --json results.json

It starts a throwaway PostgreSQL cluster and a one-broker Kafka cluster with
``scripts/infra.sh`` in a temporary directory, then for each configuration, on a database,
a topic and a data dir of its own:

* a fast local Firehose partner in a process of its own (bench/forward.py's), registered as
  a module, with one output, one input without rate limit and one connection; no audience;
* the real ``patchbay serve`` processes: *embedded*, one ``serve`` on SQLite running every
  role; *N processors*, one ``serve --role ingest``, N ``serve --role process`` and one
  ``serve --role deliver`` on Kafka and PostgreSQL (load on ingest only);
* phase 1, maximum: a client process (bench/forward.py's) posting bulk requests of many users
  (ingest.py's bodies, ``--pool`` of them: a random MPID and customer id per batch, 10,000
  users by default, so the partition key spreads batches over every partition) as fast as
  they are accepted, with at most
  ``--max-backlog`` batches acknowledged but not yet at the partner; it measures events/s
  accepted, through resolve (the stored resolve checkpoints, polled) and received by the
  partner, and each process's CPU over the window (from ``/proc``: the serves and their
  ``pb-delivery``/``pb-segment`` children, PostgreSQL's postmaster with its backends, the
  Kafka broker, the partner, the client);
* phase 2, paced: ``--rate`` events/s, open loop; p50/p99 from each batch's 202 to the
  partner's receipt;
* waits for every accepted batch to reach the partner (``--drain-timeout``) and reports any
  missing one or duplicate as an error.

The floor is the embedded mode in the same run: one process, no network hop between the
stages, nothing encoded for a server; a scale-out configuration on the same cores must beat it
to be worth its servers. It prints a table, the CPU per event of each role (and what it
implies in cores for 100,000 events/s) and exits 0, or 2 when something went wrong. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from patchbay.settings import DEFAULT_MAX_REQUEST_BYTES, Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # bench/common.py
    exit_status,
    free_port,
    machine_cpu_s,
    process_cpu_s,
    run_config,
    server_metric,
    start_server,
    stop_process,
)
from forward import (  # bench/forward.py
    Context,
    PhaseConfig,
    PhaseResult,
    Row,
    analyse,
    drain,
    run_phase,
    setup,
    start_partner,
)
from ingest import make_pool  # bench/ingest.py

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "scripts" / "infra.sh"
#: Events/s the per-role CPU figures are scaled to.
TARGET_EVENTS_PER_S = 100_000
#: The variables a configuration sets for its processes (and this one's commands).
SCALED_ENV = ("PATCHBAY_STATE", "PATCHBAY_LOG", "PATCHBAY_KAFKA_TOPIC")


# -- PostgreSQL and Kafka -----------------------------------------------------------------


@dataclass
class Infra:
    directory: Path
    postgres_url: str
    kafka_url: str

    def pids(self) -> dict[str, int]:
        """The postmaster (its backends are its children) and the broker."""
        postmaster = (self.directory / "postgres" / "postmaster.pid").read_text().split()[0]
        broker = (self.directory / "kafka" / "broker-1" / "pid").read_text().strip()
        return {"postgres": int(postmaster), "kafka": int(broker)}


def start_infra(directory: Path) -> Infra:
    """PostgreSQL and a one-broker Kafka with ``scripts/infra.sh``, in ``directory``."""
    directory.chmod(0o755)  # the cluster's owner (postgres, when run as root) must reach it
    urls = {}
    for server, port in (("postgres", free_port()), ("kafka", _free_port_pair())):
        done = subprocess.run(
            [str(INFRA), server, "start", str(directory / server), str(port)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            stop_infra(directory)
            raise SystemExit(f"scripts/infra.sh {server} start failed:\n{done.stderr}")
        urls[server] = done.stdout.strip().rpartition("=")[2]
    return Infra(directory, urls["postgres"], urls["kafka"])


def stop_infra(directory: Path) -> None:
    for server in ("kafka", "postgres"):
        if (directory / server).exists():
            subprocess.run([str(INFRA), server, "stop", str(directory / server)], check=False)


def _free_port_pair() -> int:
    """A free port whose next one is free too (the broker and its controller)."""
    while True:
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind(("127.0.0.1", port + 1))
            return port


def new_database(infra: Infra, name: str) -> str:
    """A fresh database ``name`` on the cluster; its URL."""
    with psycopg.connect(infra.postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    return infra.postgres_url.rpartition("/")[0] + "/" + name


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment (so in the commands it runs and the
    processes it starts), the former values back afterwards."""
    former = {k: os.environ.get(k) for k in SCALED_ENV}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in former.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- measuring ----------------------------------------------------------------------------


class ResolvedPoller(threading.Thread):
    """Samples ``(time.time(), sum of the stored resolve positions)`` every 0.2 s: their
    increase is the batches resolve committed (one per offset on either log)."""

    def __init__(self, state_db: Path | None, postgres: str | None) -> None:
        super().__init__(daemon=True, name="resolved-poller")
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._state_db, self._postgres = state_db, postgres
        self._close: Callable[[], None] = lambda: None

    def _query(self) -> Callable[[], int]:
        """A function reading the sum on one connection kept open (the state's tables are
        there: the setup made them)."""
        conn: Any
        if self._postgres is not None:
            conn = psycopg.connect(self._postgres, autocommit=True)
            sql = "SELECT coalesce(sum(seq), 0) FROM resolve_offset"
        else:
            conn = sqlite3.connect(f"file:{self._state_db}?mode=ro", uri=True, timeout=5)
            sql = (
                "SELECT coalesce(sum(seq), 0) FROM resolve_offset"
                " WHERE name = 'resolve' OR name LIKE 'resolve/%'"
            )
        self._close = conn.close
        return lambda: int(conn.execute(sql).fetchone()[0])

    def run(self) -> None:
        count = self._query()
        try:
            while not self._done.wait(0.2):
                self.samples.append((time.time(), count()))
        finally:
            self._close()

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(5)

    def rate(self, t0: float, t1: float) -> float:
        """Batches/s committed between ``t0`` and ``t1``."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def own_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` alone (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def all_cpu_s() -> dict[int, tuple[str, float]]:
    """Every process's own CPU seconds, with its name."""
    found: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            stat = stat_path.read_text()
            fields = stat.rsplit(")", 1)[1].split()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            found[int(stat_path.parent.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return found


def children(pid: int) -> list[tuple[str, int]]:
    """The running children of ``pid``: name (``pb-delivery``, ``pb-segment``...) and pid."""
    found: list[tuple[str, int]] = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            stat = stat_path.read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            if stat.rsplit(")", 1)[1].split()[1] == str(pid):
                found.append((name, int(stat_path.parent.name)))
    return found


@dataclass
class Processes:
    """What CPU is read of: each serve alone (by role) with its children apart, and the
    other processes with their children."""

    serves: dict[str, int] = field(default_factory=dict)  # "process-1" -> pid
    others: dict[str, int] = field(default_factory=dict)  # "postgres" -> pid

    def labelled(self) -> dict[str, int]:
        """Every pid to read alone, by label (``process-1``, ``process-1/pb-segment``)."""
        pids = dict(self.serves)
        for label, pid in self.serves.items():
            for name, child in children(pid):
                key = f"{label}/{name}"
                pids[key if key not in pids else f"{key}-{child}"] = child
        return pids

    def sample(self, labelled: dict[str, int]) -> dict[str, float | None]:
        values: dict[str, float | None] = {k: own_cpu_s(p) for k, p in labelled.items()}
        values |= {k: process_cpu_s(p) for k, p in self.others.items()}
        values["machine"] = machine_cpu_s()
        return values

    def measure(self, seconds: float) -> tuple[dict[str, float], list[tuple[str, float]]]:
        """Cores each process uses over the next ``seconds``; and the busiest processes
        that are not this run's (other work on the machine), by name."""
        labelled = self.labelled()
        before, everyone = self.sample(labelled), all_cpu_s()
        time.sleep(seconds)
        after, everyone_after = self.sample(labelled), all_cpu_s()
        ours = set(labelled.values()) | {os.getpid()}
        for pid in self.others.values():
            ours |= {pid, *(child for _, child in children(pid))}
        strangers: dict[str, float] = {}
        for pid, (name, cpu) in everyone_after.items():
            if pid not in ours and pid in everyone:
                strangers[name] = strangers.get(name, 0.0) + (cpu - everyone[pid][1]) / seconds
        busiest = sorted(strangers.items(), key=lambda kv: -kv[1])[:3]
        return cores_used(before, after, seconds), [b for b in busiest if b[1] >= 0.05]


def cores_used(
    before: dict[str, float | None], after: dict[str, float | None], seconds: float
) -> dict[str, float]:
    cores: dict[str, float] = {}
    for key, value in before.items():
        other = after.get(key)
        if value is not None and other is not None:
            cores[key] = (other - value) / seconds
    if "machine" in cores:
        known = sum(v for k, v in cores.items() if k != "machine")
        cores["unaccounted"] = max(0.0, cores.pop("machine") - known)
    return cores


def drive(
    cfg: PhaseConfig, processes: Processes
) -> tuple[PhaseResult, dict[str, float], list[tuple[str, float]]]:
    """One phase in a client process; the cores each process used in its window, and the
    busiest other processes."""
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe(duplex=False)
    client = spawn.Process(target=run_phase, args=(cfg, theirs), name="bench-client")
    client.start()
    theirs.close()
    processes.others["client"] = client.pid or 0
    time.sleep(cfg.warmup_s + 0.3)  # the process start-up, then the warm-up
    cores, strangers = processes.measure(max(0.1, cfg.duration_s - 0.6))
    if not ours.poll(cfg.duration_s + 180):
        client.kill()
        raise SystemExit("the client process did not finish")
    answer = ours.recv()
    client.join(30)
    del processes.others["client"]
    if isinstance(answer, str):
        raise SystemExit(answer)
    return answer, cores, strangers


def wait_assigned(ports: list[int], partitions: int, timeout: float = 60) -> float:
    """Wait until the processors on ``ports`` own every partition between them, each some
    (the group settled); seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        owned = [server_metric(p, "patchbay_partitions_owned") for p in ports]
        if sum(owned) == partitions and all(owned):
            break
        time.sleep(0.2)
    return time.monotonic() - began


# -- one configuration --------------------------------------------------------------------


@dataclass
class Result:
    name: str
    processors: int  # 0: embedded
    row: Row  # forward.py's figures (phase 1: maximum; phase 2: paced)
    resolved_events_per_s: float
    cores: dict[str, float]  # by process, phase 1
    paced_cores: dict[str, float]  # by process, phase 2
    idle_cores: dict[str, float]  # by process, before the load
    strangers: list[tuple[str, float]]  # the busiest other processes in phase 1
    settle_s: float = 0.0
    fenced: float = 0.0
    conflicts: float = 0.0

    def role_cores(self, cores: dict[str, float]) -> dict[str, float]:
        """``cores`` by role (serves of a role and their children summed), and the others."""
        grouped: dict[str, float] = {}
        for label, value in cores.items():
            role = label.split("/")[0].split("-")[0]
            if role == "process" and "pb-segment" in label:
                role = "process (segment child)"
            elif role == "deliver" and "pb-delivery" in label:
                role = "deliver (delivery child)"
            elif role == "serve" and "/" in label:
                role = "serve (" + label.split("/", 1)[1] + ")"
            grouped[role] = grouped.get(role, 0.0) + value
        return grouped


def run_one(
    ctx: Context,
    infra: Infra | None,
    processors: int,
    run: int,
    mean_events: float,
    warmup_s: float,
) -> Result:
    """One configuration, on a database, a topic and a data dir of its own: ``processors``
    processors on ``infra`` (0: the embedded mode); ``warmup_s`` before phase 1."""
    args = ctx.args
    name = "embedded" if processors == 0 else f"{processors} processor" + "s" * (processors > 1)
    slug = "embedded" if processors == 0 else f"p{processors}_{run:08x}"
    base = ctx.workdir / slug
    data_dir = base / "data"
    base.mkdir(parents=True)
    env: dict[str, str] = {}
    if infra is not None:
        env = {
            "PATCHBAY_STATE": new_database(infra, f"bench_{slug}"),
            "PATCHBAY_LOG": infra.kafka_url,
            "PATCHBAY_KAFKA_TOPIC": f"patchbay.bench.{slug}",
        }
    partner_port = free_port()
    partner_out = base / "partner.json"
    partner = start_partner(partner_port, partner_out, base / "partner.log")
    processes = Processes(others={"partner": partner.pid})
    if infra is not None:
        processes.others |= infra.pids()
    serves: list[tuple[str, int, subprocess.Popen[bytes]]] = []
    poller = ResolvedPoller(
        data_dir / "state.db" if infra is None else None, env.get("PATCHBAY_STATE")
    )
    try:
        with environment(env):
            t = time.perf_counter()
            creds = setup(data_dir, partner_port, 1)
            roles = [None] if infra is None else ["ingest"] + ["process"] * processors + ["deliver"]
            counts: dict[str, int] = {}
            for role in roles:
                port = free_port()
                label = role or "serve"
                counts[label] = counts.get(label, 0) + 1
                if label == "process":
                    label = f"process-{counts[label]}"
                extra = [] if role is None else ["--role", role]
                log = base / f"{label}.log"
                serves.append((label, port, start_server(data_dir, port, args.durability, log,
                                                         extra=extra)))  # fmt: skip
                processes.serves[label] = serves[-1][2].pid
        settle = 0.0
        if infra is not None:
            ports = [port for label, port, _ in serves if label.startswith("process")]
            settle = wait_assigned(ports, Settings().kafka_partitions)
        idle, _ = processes.measure(args.idle)
        poller.start()
        ingest_port = serves[0][1]
        print(
            f"[{name}] set up in {time.perf_counter() - t:.1f}s"
            + (f" (group settled in {settle:.1f}s)" if infra is not None else "")
            + f"; phase 1: {warmup_s:g}s warm-up + {args.duration:g}s as fast as accepted"
            f" (backlog <= {args.max_backlog:,} batches) ...",
            flush=True,
        )
        auth = "Basic " + b64encode(f"{creds['key']}:{creds['secret']}".encode()).decode()
        common: dict[str, Any] = {
            "url": f"http://127.0.0.1:{ingest_port}",
            "auth": auth,
            "partner_port": partner_port,
            "pool": ctx.pool,
            "concurrency": args.concurrency,
            "run": run,
            "outputs": 1,
            "max_backlog": args.max_backlog,
        }
        deliverer = serves[-1][2]
        first, cores, strangers = drive(
            PhaseConfig(**common, warmup_s=warmup_s, duration_s=args.duration, phase=0,
                        rate_batches=None),
            processes,
        )  # fmt: skip
        waited = drain(partner_port, first.accepted_batches, args.drain_timeout, deliverer)
        print(
            f"[{name}] phase 1: {first.accepted_batches:,} batches accepted, drained in"
            f" {waited:.1f}s; phase 2: 1s warm-up + {args.paced_duration:g}s at"
            f" {args.rate:,.0f} events/s ...",
            flush=True,
        )
        second, paced_cores, _ = drive(
            PhaseConfig(**common, warmup_s=1.0, duration_s=args.paced_duration, phase=1,
                        rate_batches=args.rate / mean_events),
            processes,
        )  # fmt: skip
        expected = first.accepted_batches + second.accepted_batches
        waited = drain(partner_port, expected, args.drain_timeout, deliverer)
        print(
            f"[{name}] phase 2: {second.accepted_batches:,} batches accepted, drained in"
            f" {waited:.1f}s",
            flush=True,
        )
        poller.stop()
        fenced = conflicts = 0.0
        for label, port, _ in serves:
            if label.startswith(("process", "serve")):
                fenced += server_metric(port, "patchbay_resolve_chunks_fenced_total")
                conflicts += server_metric(port, "patchbay_resolve_conflicts_total")
        resolved = poller.rate(first.window_from, first.window_to) * mean_events
        for label, _, process in serves:  # ingest first: nothing new while the rest stop
            code = stop_process(process)
            if code not in (0, -signal.SIGTERM):
                ctx.errors.append(f"[{name}] {label} exited with {code}")
        serves.clear()
    finally:
        poller.stop()
        for _, _, process in serves:
            stop_process(process)
        code = stop_process(partner)
    if code not in (0, -signal.SIGTERM):
        ctx.errors.append(f"[{name}] the partner exited with {code}")
    records: list[list[Any]] = msgspec.json.decode(partner_out.read_bytes())["records"]
    for phase in (first, second):
        ctx.errors.extend(f"[{name}] client: {e}" for e in phase.errors[:10])
    errors_before = len(ctx.errors)
    row = analyse(ctx, 1, first, second, records, {})
    # analyse names the output count ("[1] ..."): name the configuration instead
    ctx.errors[errors_before:] = [f"[{name}] {e[4:]}" for e in ctx.errors[errors_before:]]
    if row.duplicates:
        ctx.errors.append(f"[{name}] {row.duplicates:,} batches reached the partner twice")
    return Result(
        name, processors, row, resolved, cores, paced_cores, idle, strangers, settle, fenced,
        conflicts,
    )  # fmt: skip


# -- output -------------------------------------------------------------------------------


def per_event_us(cores: float, events_per_s: float) -> float:
    """CPU microseconds per event."""
    return cores / events_per_s * 1e6 if events_per_s > 0 else float("nan")


def role_rates(result: Result) -> dict[str, float]:
    """The events/s each role's CPU is divided by: what that role handled."""
    row = result.row
    return {
        "ingest": row.accepted_events_per_s,
        "process": result.resolved_events_per_s,
        "process (segment child)": result.resolved_events_per_s,
    }


def fmt_table(results: list[Result]) -> str:
    floor = next((r for r in results if r.processors == 0), None)
    head = (
        f"{'':<14}{'accepted ev/s':>14}{'resolved ev/s':>14}{'delivered ev/s':>15}{'/floor':>7}"
        f"{'paced ev/s':>11}{'p50 ms':>8}{'p99 ms':>8}{'cores':>7}{'CPU us/ev':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        w = r.row
        ratio = w.delivered_events_per_s / floor.row.delivered_events_per_s if floor else 0
        total = sum(v for k, v in r.cores.items() if k not in ("client", "partner", "unaccounted"))
        lines.append(
            f"{r.name + (' (floor)' if r.processors == 0 else ''):<14}"
            f"{w.accepted_events_per_s:>14,.0f}{r.resolved_events_per_s:>14,.0f}"
            f"{w.delivered_events_per_s:>15,.0f}{ratio:>7.2f}{w.half_rate_events_per_s:>11,.0f}"
            f"{w.half_p50_ms:>8.0f}{w.half_p99_ms:>8.0f}{total:>7.2f}"
            f"{per_event_us(total, w.delivered_events_per_s):>10.0f}"
        )
    return "\n".join(lines)


def role_summary(r: Result) -> dict[str, dict[str, float]]:
    """By role: cores at rest and in phase 1, CPU us per event (all of it, and above
    idle), and the cores 100,000 events/s would take (idle + that rate above idle)."""
    rates = role_rates(r)
    idle = r.role_cores(r.idle_cores)
    summary = {}
    for role, cores in sorted(r.role_cores(r.cores).items()):
        if role in ("client", "unaccounted") or cores < 0.005:
            continue
        rate = rates.get(role, r.row.delivered_events_per_s)
        at_rest = idle.get(role, 0.0)
        above = per_event_us(max(0.0, cores - at_rest), rate)
        summary[role] = {
            "idle_cores": at_rest,
            "cores": cores,
            "us_per_event": per_event_us(cores, rate),
            "us_per_event_above_idle": above,
            "cores_at_target": at_rest + above * TARGET_EVENTS_PER_S / 1e6,
        }
    return summary


def fmt_roles(results: list[Result]) -> str:
    head = (
        f"{'':<14}{'role / process':<26}{'idle':>6}{'cores':>7}{'us/ev':>7}"
        f"{'above idle':>11}{f'cores @{TARGET_EVENTS_PER_S // 1000}k ev/s':>18}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        for role, f in role_summary(r).items():
            lines.append(
                f"{r.name:<14}{role:<26}{f['idle_cores']:>6.2f}{f['cores']:>7.2f}"
                f"{f['us_per_event']:>7.1f}{f['us_per_event_above_idle']:>11.1f}"
                f"{f['cores_at_target']:>18.1f}"
            )
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--processors", default="1,2", help="processor counts to run on Kafka + PG (1,2)"
    )
    parser.add_argument("--no-embedded", action="store_true", help="skip the floor")
    parser.add_argument(
        "--infra-warmup",
        type=float,
        default=10.0,
        help="extra warm-up of the first configuration on a new Kafka + PostgreSQL (10)",
    )
    parser.add_argument(
        "--idle", type=float, default=3.0, help="seconds of CPU measured before the load (3)"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="phase 1 seconds (20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (3)")
    parser.add_argument("--paced-duration", type=float, default=15.0, help="phase 2 seconds (15)")
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="phase 2 events/s, paced (2,000)"
    )
    parser.add_argument("--events-per-batch", type=int, default=10, help="mean; varies +-20%%")
    parser.add_argument("--batches-per-request", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8, help="phase 1 clients (8)")
    parser.add_argument(
        "--max-backlog",
        type=int,
        default=3000,
        help="phase 1: most batches acknowledged but not yet delivered (3,000)",
    )
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument(
        "--durability",
        choices=["full", "normal"],
        default="normal",
        help="of the embedded store (normal: no fsync per commit, as the throwaway servers)",
    )
    parser.add_argument(
        "--pool", type=int, default=1000, help="distinct bodies (1000): one user per batch"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="--duration 6 --paced-duration 5 --warmup 2 --idle 2 --infra-warmup 5",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.paced_duration, args.warmup, args.idle = 6.0, 5.0, 2.0, 2.0
        args.infra_warmup = 5.0
    return args


def main() -> int:
    args = parse_args()
    counts = [int(x) for x in args.processors.split(",") if x.strip()]
    if any(n < 1 for n in counts):
        raise SystemExit("--processors: positive counts, e.g. 1,2")
    pool, _ = make_pool(
        args.pool, args.seed, args.batches_per_request, args.events_per_batch,
        DEFAULT_MAX_REQUEST_BYTES,
    )  # fmt: skip
    mean_events = statistics.mean(p.total_events for p in pool) / args.batches_per_request
    workdir = Path(tempfile.mkdtemp(prefix="patchbay-scale-"))
    ctx = Context(args, pool, workdir, [])
    results: list[Result] = []
    base_run = random.Random(args.seed).getrandbits(32) ^ (os.getpid() << 8) & 0xFFFFFFFF
    infra: Infra | None = None
    try:
        if not args.no_embedded:
            results.append(run_one(ctx, None, 0, base_run, mean_events, args.warmup))
        if counts:
            t = time.perf_counter()
            infra = start_infra(workdir)
            print(f"PostgreSQL and Kafka started in {time.perf_counter() - t:.1f}s", flush=True)
            for i, n in enumerate(counts, 1):
                # the broker's JIT compiles its hot paths under the first load
                warmup = args.warmup + (args.infra_warmup if i == 1 else 0.0)
                run = (base_run + i) & 0xFFFFFFFF
                results.append(run_one(ctx, infra, n, run, mean_events, warmup))
    finally:
        stop_infra(workdir)
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(fmt_table(results))
    print()
    print(
        "accepted/resolved/delivered: events/s in phase 1 (as fast as accepted, backlog-bound);"
        " /floor: delivered over the embedded mode's; paced: phase 2's accepted events/s,"
        " p50/p99 from a batch's 202 to the partner's receipt; cores: every process but the"
        " client and the partner in phase 1 (PostgreSQL and Kafka included), CPU us/ev: the"
        " same per delivered event."
    )
    print()
    print(fmt_roles(results))
    print()
    print(
        f"By role, cores of the machine's {os.cpu_count()}: idle, before the load; cores, in"
        " phase 1; us/ev: CPU per event (ingest per accepted event, process per resolved"
        " event, the others per delivered event), and above idle: the same less the idle"
        " cores; cores @100k: idle + 100,000 events/s at the CPU per event above idle (linear:"
        " no contention, no batching gains)."
    )
    scaled = [r for r in results if r.processors]
    if len(scaled) >= 2:
        one, most = scaled[0], scaled[-1]
        ratio = most.row.delivered_events_per_s / max(1.0, one.row.delivered_events_per_s)
        print(
            f"scaling {most.name} / {one.name}: delivered x{ratio:.2f}, resolved"
            f" x{most.resolved_events_per_s / max(1.0, one.resolved_events_per_s):.2f}"
        )
    for r in results:
        busy = sum(r.cores.values())
        others = r.cores.get("unaccounted", 0.0)
        named = ", ".join(f"{n} {c:.2f}" for n, c in r.strangers)
        print(
            f"[{r.name}] machine busy {busy:.2f} of {os.cpu_count()} cores in phase 1, of"
            f" which other processes {others:.2f}"
            + (f" ({named})" if named else "")
            + f"; paced phase {sum(r.paced_cores.values()):.2f} cores; late requests"
            f" {r.row.late_requests}; chunks fenced {r.fenced:.0f}, resolve conflicts"
            f" {r.conflicts:.0f}"
        )
        if others > 0.2:
            print(f"WARNING: [{r.name}] other processes used {others:.2f} cores: figures too low")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": run_config(args),
                    "mean_events_per_batch": mean_events,
                    "results": [asdict(r) | {"roles": role_summary(r)} for r in results],
                    "errors": ctx.errors,
                },
                indent=2,
                default=str,
            )
        )
    return exit_status(ctx.errors, {}, False)


if __name__ == "__main__":
    sys.exit(main())
