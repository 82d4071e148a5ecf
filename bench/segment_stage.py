"""The segment stage alone: its CPU per batch over a stream, on a copy of a preloaded data dir.

A diagnostic for work on the stage (``bench/audiences.py`` is the benchmark of the whole
pipeline, with its floor and goals). ``setup`` builds a data dir once: ``bench/audiences.py``'s
100 audiences, ``--profiles`` first batches resolved and counted, then a stream of 50,000
events appended and resolved but not yet counted. ``measure`` copies it and runs
:class:`~patchbay.segment.stage.SegmentStage` in this process over the stream, a page of
500 batches at a time with a tick after each, on a clock that advances as if 5,000 batches
went by per second; it prints the CPU per batch (``time.process_time``: every thread, the
stage's commits run on one of their own; handle and tick, the read-back not included), the
part of it the audience store's calls took (each on its thread), and the wall time per
batch (less than the CPU when the commits overlap the evaluation on a second core, more
when other work takes the cores). Then the clock runs on for a minute, a tick a second, so
the windows the stream's events opened close: the CPU of those expiries is shown apart
(live, a stream batch costs its handling plus its share of them). ``profile`` does
the same under cProfile. ``shards N`` asks what running the stage as N processes would give
(each the users whose MPID is ``k`` modulo N, over its own copy of the data dir, all reading
the whole stream back; no merges in this stream): the wall time per stream batch of the N
together, against one process with every user, and against one of the N alone. Two code
versions compare by running ``measure`` with each on ``PYTHONPATH`` over the same data dir,
in turns (the figures vary by ±10% on a shared VM). The stage runs with the segment
process's collector schedule (:mod:`patchbay.heap`); ``--gc python`` keeps Python's own::

    .venv/bin/python bench/segment_stage.py setup --profiles 1000000   # ~10 min, 2.2 GB
    .venv/bin/python bench/segment_stage.py measure --profiles 1000000 --rounds 3
    .venv/bin/python bench/segment_stage.py profile --profiles 1000000
    .venv/bin/python bench/segment_stage.py shards 2 --profiles 1000000
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiences import append, audience_documents, first_batch, prepare, profile_shares, stream
from common import open_store
from patchbay.backends import Backend
from patchbay.clock import ManualClock
from patchbay.heap import collect_rarely
from patchbay.logs import configure_logging
from patchbay.pipeline import Pipeline, read_resolved
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.segment import runs_compiled
from patchbay.segment.process import SegmentProcess
from patchbay.segment.stage import SegmentStage

#: The stream's clock: its events' time, and where the preload's events lie before it.
NOW_MS = 1_790_000_000_000
#: Stream events appended after the preload.
STREAM_EVENTS = 50_000
#: Batches the stage handles at a time (as the segment process reads them back).
PAGE = 500
#: How fast the clock runs while the stage works: batches per simulated second.
BATCHES_PER_S = 5_000
#: The audience store's calls whose CPU is shown apart.
STORE_CALLS = ("commit", "users", "due_users")
#: After the stream, how long the clock runs on (a tick a second) so that the windows the
#: stream's events opened close: their expiries are measured apart.
DRAIN_S = 61


def resolve_all(backend: Backend) -> None:
    """Resolve what the log holds (no stage after resolve; their checkpoints wait)."""
    service = ResolveService(backend.state, Resolver(IdentityStrategy()), ManualClock(NOW_MS))
    pipeline = Pipeline(backend, service, [], elsewhere=[SegmentProcess.stage])
    end = backend.log.end(0)
    pipeline.start()
    try:
        while True:
            done = backend.state.checkpoint().get(0)
            if done is not None and end is not None and not done < end:
                return
            time.sleep(0.05)
    finally:
        pipeline.stop()


@dataclass
class StageRun:
    """What :func:`run_stage` measured."""

    batches: int = 0
    cpu_s: float = 0.0  # handle and tick over the stream, all threads
    wall_s: float = 0.0
    spent: dict[str, float] = field(default_factory=dict)  # CPU of each of STORE_CALLS
    drain_cpu_s: float = 0.0  # the ticks after the stream (window expiries)
    drain_expired: int = 0  # users re-evaluated by them
    stream_expired: int = 0  # users re-evaluated by the ticks during the stream


def run_stage(
    backend: Backend,
    clock: ManualClock,
    profiler: cProfile.Profile | None = None,
    drain_s: int = 0,
) -> StageRun:
    """Run the segment stage over what resolve committed beyond its checkpoint, then
    ``drain_s`` ticks a simulated second apart (the windows the stream opened close)."""
    spent = dict.fromkeys(STORE_CALLS, 0.0)
    store: Any = backend.audiences
    for name in STORE_CALLS:
        store_call: Callable[..., Any] = getattr(store, name)

        def timed(
            *args: Any, _call: Callable[..., Any] = store_call, _name: str = name, **kw: Any
        ) -> Any:
            started = time.thread_time()  # (a commit runs on a thread of its own)
            try:
                return _call(*args, **kw)
            finally:
                spent[_name] += time.thread_time() - started

        try:
            setattr(store, name, timed)
        except AttributeError:  # a compiled store's methods cannot be wrapped: not shown
            del spent[name]
    stage = SegmentStage(backend, clock)
    after = stage.engine.checkpoint.get(0)
    run = StageRun(spent=spent)

    def call(fn: Callable[..., Any], *args: Any) -> None:
        if profiler is not None:
            profiler.runcall(fn, *args)
        else:
            fn(*args)

    while True:
        page, last = read_resolved(backend, 0, after, PAGE)
        if last is None:
            break
        started, began = time.process_time(), time.perf_counter()
        call(stage.handle, page)
        call(stage.tick)
        run.cpu_s += time.process_time() - started
        run.wall_s += time.perf_counter() - began
        clock.advance(len(page) / BATCHES_PER_S)
        run.batches += len(page)
        after = last
    run.stream_expired, stage.engine.expired = stage.engine.expired, 0
    started = time.process_time()
    for _ in range(drain_s):
        clock.advance(1.0)
        call(stage.tick)
    run.drain_cpu_s = time.process_time() - started
    run.drain_expired = stage.engine.expired
    return run


def setup(base: Path, profiles: int) -> None:
    shutil.rmtree(base, ignore_errors=True)
    creds = prepare(base, "full", audience_documents())
    backend = open_store(base, "full")
    try:
        rng = random.Random(1)
        users = (first_batch(rng, i, NOW_MS - 60_000) for i in range(profiles))
        append([(backend, creds["id"])], users)
        resolve_all(backend)
        run = run_stage(backend, ManualClock(NOW_MS - 30_000))
        print(
            f"preload: {run.batches:,} users counted,"
            f" {run.cpu_s / run.batches * 1e6:,.0f} µs of CPU each"
        )
        count, events = append(
            [(backend, creds["id"])], stream(7, STREAM_EVENTS, int(profiles * 0.9), NOW_MS)
        )
        resolve_all(backend)
        print(f"stream: {count:,} batches, {events:,} events appended and resolved")
    finally:
        backend.close()


def measure(base: Path, rounds: int, profile: bool) -> None:
    if not base.exists():
        raise SystemExit(f"no data dir at {base}: run `setup` first")
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="patchbay-segment-stage-") as work:
            copy = Path(work) / "data"
            shutil.copytree(base, copy)
            os.sync()  # (the copy written out first: its writes would slow the stage's)
            backend = open_store(copy, "full")
            profiler = cProfile.Profile() if profile else None
            try:
                run = run_stage(backend, ManualClock(NOW_MS), profiler, DRAIN_S)
            finally:
                backend.close()
        batches = run.batches
        parts = ", ".join(f"{n} {s / batches * 1e6:,.0f}" for n, s in run.spent.items())
        print(
            f"{batches:,} batches: {run.cpu_s / batches * 1e6:,.0f} µs of CPU per batch, all"
            f" threads (of which the store's {parts}), {run.wall_s / batches * 1e6:,.0f} µs of"
            f" wall time; {run.stream_expired:,} users expired meanwhile. Then {DRAIN_S} s of"
            f" ticks: {run.drain_expired:,} users expired, {run.drain_cpu_s * 1e3:,.0f} ms of"
            f" CPU ({run.drain_cpu_s / max(1, run.drain_expired) * 1e6:,.0f} µs each,"
            f" {run.drain_cpu_s / batches * 1e6:,.0f} µs per stream batch)",
            flush=True,
        )
        if profiler is not None:
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(25)
            print(profile_shares(stats, batches, STREAM_EVENTS))


def _shard(base: Path, k: int, n: int, rare_gc: bool, start: Any, results: Any) -> None:
    """One shard: the stage over the users whose MPID is ``k`` modulo ``n``, reading the
    whole stream back; puts (wall s, CPU s, batches handled, batches read) once done."""
    configure_logging("warning")
    if rare_gc:  # (a spawned process: the schedule of its parent is not inherited)
        collect_rarely()
    backend = open_store(base, "full")
    try:
        clock = ManualClock(NOW_MS)
        stage = SegmentStage(backend, clock)
        stage.engine.refresh()
        after = stage.engine.checkpoint.get(0)
        start.wait()
        began, cpu, handled, read = time.perf_counter(), time.process_time(), 0, 0
        while True:
            page, last = read_resolved(backend, 0, after, PAGE)
            if last is None:
                break
            mine = [b for b in page if b.mpid % n == k]
            if mine:
                stage.handle(mine)
            stage.tick()
            clock.advance(len(page) / BATCHES_PER_S)
            handled += len(mine)
            read += len(page)
            after = last
        results.put((k, time.perf_counter() - began, time.process_time() - cpu, handled, read))
    finally:
        backend.close()


def shards(base: Path, n: int, rare_gc: bool) -> None:
    """The stage as ``n`` processes at once, one process with every user, and one of the
    ``n`` alone: the wall time per stream batch of each (the read-back included)."""
    import multiprocessing

    if not base.exists():
        raise SystemExit(f"no data dir at {base}: run `setup` first")
    context = multiprocessing.get_context("spawn")
    for label, count, running in (
        ("1 process, every user", 1, 1),
        (f"{n} processes at once", n, n),
        (f"1 of {n} alone", n, 1),
    ):
        with tempfile.TemporaryDirectory(prefix="patchbay-segment-shards-") as work:
            copies = []
            for k in range(running):
                copy = Path(work) / f"data-{k}"
                shutil.copytree(base, copy)
                copies.append(copy)
            os.sync()  # (the copies written out before the clock starts)
            start, results = context.Event(), context.Queue()
            processes = [
                context.Process(target=_shard, args=(copy, k, count, rare_gc, start, results))
                for k, copy in enumerate(copies)
            ]
            for process in processes:
                process.start()
            time.sleep(5)  # (started: interpreters up, stores open)
            began = time.perf_counter()
            start.set()
            done = [results.get() for _ in processes]
            wall = time.perf_counter() - began
            batches = done[0][4]  # (every process reads the whole stream)
            for process in processes:
                process.join()
        parts = "; ".join(
            f"process {k}: {handled:,} batches, {cpu / batches * 1e6:,.0f} µs of CPU per"
            f" stream batch"
            for k, _, cpu, handled, _ in sorted(done)
        )
        print(
            f"{label}: {wall / batches * 1e6:,.0f} µs of wall time per stream batch ({parts})",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["setup", "measure", "profile", "shards"])
    parser.add_argument("count", nargs="?", type=int, default=2, help="shards: processes (2)")
    parser.add_argument("--profiles", type=int, default=50_000, help="users preloaded (50,000)")
    parser.add_argument("--dir", type=Path, help="the data dir (default: one per --profiles)")
    parser.add_argument("--rounds", type=int, default=1, help="measure: how many times (1)")
    parser.add_argument(
        "--gc",
        choices=["rare", "python"],
        default="rare",
        help="the collector's schedule: the segment process's (patchbay.heap, the default)"
        " or Python's own",
    )
    args = parser.parse_args()
    configure_logging("warning")
    if args.gc == "rare":
        collect_rarely()
    print(
        f"the segment stage {'compiled' if runs_compiled() else 'pure Python'},"
        f" collector thresholds {gc.get_threshold()}",
        flush=True,
    )
    base = args.dir or Path(tempfile.gettempdir()) / f"patchbay-segment-stage-{args.profiles}"
    if args.command == "setup":
        setup(base, args.profiles)
        print(f"data dir: {base}")
    elif args.command == "shards":
        shards(base, args.count, args.gc == "rare")
    else:
        measure(base, args.rounds, args.command == "profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
