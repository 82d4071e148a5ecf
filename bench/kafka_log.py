"""The Kafka batch log's two hot calls, against a real broker: an append of one group of
batches (the group commit's unit) and a read of a page of one partition (resolve's unit).

    .venv/bin/python bench/kafka_log.py                        # starts a throwaway broker
    .venv/bin/python bench/kafka_log.py --url kafka://127.0.0.1:9092 --rounds 50

Each round appends ``--batches`` batches of about ``--size`` bytes (one input: one
partition) to a fresh topic and times the call to its return (every delivery report in);
then ``--read`` batches are read from that partition, as one call from a new log (its
consumer starts cold), and each round the next ``--read`` as pages of 100 continuing from
the last position (one warm consumer, as resolve reads). Figures: median and 90th
percentile in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from patchbay.backends.kafka import KafkaBatchLog
from patchbay.backends.records import LogPosition, NewBatch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import free_port, percentile  # noqa: E402


def _batches(count: int, size: int) -> list[NewBatch]:
    pad = "x" * max(size - 60, 0)
    return [
        NewBatch(str(uuid.uuid4()), "bench", int(time.time() * 1000), "server_to_server",
                 f'{{"n":{i},"pad":"{pad}"}}'.encode(), "127.0.0.1", str(uuid.uuid4()))
        for i in range(count)
    ]  # fmt: skip


def _timed(call: Callable[[], object], rounds: int) -> str:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return f"median {statistics.median(times):.1f} ms, p90 {percentile(times, 90):.1f} ms"


def run(url: str, args: argparse.Namespace) -> None:
    topic = f"patchbay.bench.{uuid.uuid4().hex[:8]}"
    log = KafkaBatchLog(url, topic=topic)
    try:
        log.append(_batches(args.batches, args.size))  # connections and metadata warm
        appends = _timed(lambda: log.append(_batches(args.batches, args.size)), args.rounds)
        print(f"append {args.batches} x {args.size} B: {appends} ({args.rounds} rounds)")
        while (end := log.end(0)) is None or end.offset + 1 < args.read * (args.rounds + 1):
            log.append(_batches(args.batches, args.size))
    finally:
        log.close()

    def cold() -> None:
        fresh = KafkaBatchLog(url, topic=topic)
        try:
            started = time.perf_counter()
            assert len(fresh.read(0, None, args.read)) == args.read
            cold_times.append((time.perf_counter() - started) * 1000)
        finally:
            fresh.close()

    cold_times: list[float] = []
    for _ in range(min(args.rounds, 10)):
        cold()
    print(
        f"read {args.read} in one call, new consumer: median "
        f"{statistics.median(cold_times):.1f} ms, p90 {percentile(cold_times, 90):.1f} ms"
    )

    reader = KafkaBatchLog(url, topic=topic)
    after: list[LogPosition | None] = [None]

    def pages() -> None:
        read = 0
        while read < args.read and (page := reader.read(0, after[0], 100)):
            read += len(page)
            after[0] = page[-1].position

    try:
        pages()  # the consumer's first fetch
        print(f"read {args.read} in pages of 100, warm consumer: {_timed(pages, args.rounds)}")
    finally:
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="kafka://HOST:PORT (default: a throwaway local broker)")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--read", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.url:
        run(args.url, args)
        return
    directory = Path(tempfile.mkdtemp(prefix="patchbay-bench-")) / "kafka"
    script = str(ROOT / "scripts" / "infra.sh")
    started = subprocess.run(
        [script, "kafka", "start", str(directory), str(free_port())],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    try:
        run(started.stdout.strip().rpartition("=")[2], args)
    finally:
        subprocess.run([script, "kafka", "stop", str(directory)], check=False)
        subprocess.run(["rm", "-rf", str(directory.parent)], check=False)


if __name__ == "__main__":
    main()
