"""Resolve benchmark: the resolve stage from batch log to profiles, and its floor.

Run from the repository root::

    .venv/bin/python bench/resolve.py [--users 1000000] [--batches 100000] [--chunk 1000]

It builds (or reuses, from a cache in the temp directory) a state store with ``--users``
known users, appends ``--batches`` batches to a fresh SQLite log (half for known users,
half for new ones) and measures, in one run:

* stage: the real ``ResolveStage`` over the whole log (its ``step()``, a chunk at a time,
  which is what ``run_until_caught_up()`` loops over), the real resolver, real SQLite
  stores with the given durability;
* floor: the same identity look-ups (``users_with_each`` of every identity of the chunk's
  batches) and profile reads and writes (``profiles()`` of the chunk's users, ``commit()``
  of the changed profiles, new users' links and the offset, a chunk at a time) done
  directly on a copy of the same state store, with no resolver logic. Reading the log and
  decoding the batches is timed apart and shown on a row of its own;
* ceiling (``--no-ceiling`` skips it): the real stage again over the same log, its state held
  in dicts (no I/O, no encoding): what the resolver's own work allows on this machine,
  whatever the store costs.

It prints a table, checks the goals (>= 20,000 batches/s, stage >= 50% of the floor) and
verifies that the state's offset is the log's last offset and that the profiles grew by
exactly the number of batches of new users. The stage and the floor take turns
(``--segment`` chunks each), so that a busy machine slows both alike; ``--segment 0`` runs
``run_until_caught_up()`` to the end, then the floor. See bench/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from patchbay.backends import Backend
from patchbay.backends.records import LogPosition, NewBatch, StateChanges
from patchbay.backends.sqlite import STATE_FILE
from patchbay.backends.sqlite import state as sqlite_state
from patchbay.backends.sqlite.db import Durability
from patchbay.collect.decode import decode_batch
from patchbay.resolve.identities import Identity, batch_identities
from patchbay.resolve.profile import IdentityRecord, Profile, new_profile
from patchbay.resolve.resolver import Resolver, derived_mpid
from patchbay.resolve.stage import ResolveStage
from patchbay.resolve.strategy import IdentityStrategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_cpu_s, open_store, run_config  # bench/common.py

#: The issue's goals.
GOAL_BATCHES_PER_S = 20_000
GOAL_FLOOR_RATIO = 0.5

#: Bump when the generated users change, to rebuild cached stores.
USERS_VERSION = 2
BUILD_CHUNK = 50_000
APPEND_CHUNK = 5_000
START_MS = 1_760_000_000_000
INPUT_ID = "bench"

SCREENS = ["Home", "Search", "Product", "Cart", "Checkout", "Settings", "Profile"]
EVENT_NAMES = ["add_to_wishlist", "share", "play_video", "rate_app", "search", "filter"]
PLANS = ["free", "basic", "pro", "enterprise"]

# -- the known users ----------------------------------------------------------------------


def customer_id(i: int) -> str:
    """The customer id of known user ``i``."""
    return f"cust-{i:09d}"


def email(i: int) -> str:
    """The email of known user ``i``."""
    return f"user{i:09d}@example.com"


def device_id(i: int) -> str:
    """The iOS advertising id of known user ``i`` (a UUID-shaped string)."""
    return f"{i:08x}-b3c4-4d5e-8f60-{i * 2654435761 % 2**48:012x}"


#: The identities of known user ``i``, by type (values sort in the order of ``i``).
KNOWN_IDENTITIES = {
    "customer_id": customer_id,
    "email": email,
    "ios_advertising_id": device_id,
}


def known_mpid(i: int) -> int:
    """The MPID of known user ``i``."""
    return derived_mpid(f"bench-user-{i}")


def known_profile(i: int, mpid: int | None = None) -> Profile:
    """Known user ``i``'s profile: three identities, two attributes, one input."""
    mpid = known_mpid(i) if mpid is None else mpid
    first = START_MS - 86_400_000 - i % 1_000_000
    profile = new_profile(mpid, first)
    profile.identities = [
        IdentityRecord(kind, value(i), first, first) for kind, value in KNOWN_IDENTITIES.items()
    ]
    profile.user_attributes = {"plan": PLANS[i % len(PLANS)], "visits": float(i % 50)}
    profile.inputs = [INPUT_ID]
    return profile


def cache_dir(users: int) -> Path:
    """Where the state store with ``users`` known users is kept between runs."""
    key = hashlib.sha256(
        f"{USERS_VERSION}|{sqlite_state._SCHEMA}|{Profile.__struct_fields__}".encode()
    ).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"patchbay-bench-resolve-{users}-{key}"


def build_state(users: int) -> tuple[Path, float | None]:
    """The cached state file with ``users`` known users (built if missing); build seconds.

    Written with the store's own ``commit``, in large chunks and in key order (profiles by
    MPID, then each identity type's links by value), so that SQLite appends to its B-trees
    rather than splitting pages all over them.
    """
    final = cache_dir(users)
    if (final / STATE_FILE).exists():
        return final / STATE_FILE, None
    began = time.perf_counter()
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    mpids = [known_mpid(i) for i in range(users)]
    by_mpid = sorted(range(users), key=mpids.__getitem__)
    backend = open_store(partial, "normal")
    store = backend.state
    try:
        for start in range(0, users, BUILD_CHUNK):
            changes = StateChanges()
            for i in by_mpid[start : start + BUILD_CHUNK]:
                changes.profiles[mpids[i]] = known_profile(i, mpids[i])
            store.commit(changes, {})
            print(f"\r  profiles {start + len(changes.profiles):,} / {users:,}", end="", flush=True)
        print()
        for kind, value in KNOWN_IDENTITIES.items():
            for start in range(0, users, BUILD_CHUNK):
                changes = StateChanges()
                for i in range(start, min(users, start + BUILD_CHUNK)):
                    changes.linked[Identity(kind, value(i))] = [mpids[i]]
                store.commit(changes, {})
                print(f"\r  {kind} links {start + len(changes.linked):,}", end="", flush=True)
            print()
        assert store.count_profiles() == users
    finally:
        backend.close()  # the last connection checkpoints the WAL into state.db
    partial.rename(final)
    return final / STATE_FILE, time.perf_counter() - began


def copy_state(source: Path, data_dir: Path) -> None:
    """A private copy of a cached state file in ``data_dir``."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # others may not read it
    shutil.copyfile(source, data_dir / STATE_FILE)


# -- the stream of batches ------------------------------------------------------------------


def _events(rng: random.Random, now_ms: int, session: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for k in range(rng.randint(4, 6)):
        common = {"timestamp_unixtime_ms": now_ms - 1000 * (6 - k), "session_id": session}
        roll = rng.random()
        if roll < 0.45:
            events.append(
                {
                    "event_type": "screen_view",
                    "data": {**common, "screen_name": rng.choice(SCREENS)},
                }
            )
        elif roll < 0.85:
            events.append(
                {
                    "event_type": "custom_event",
                    "data": {
                        **common,
                        "event_name": rng.choice(EVENT_NAMES),
                        "custom_event_type": "other",
                        "custom_attributes": {"item": f"sku-{rng.randrange(5000)}", "n": "1"},
                    },
                }
            )
        elif roll < 0.95:
            events.append({"event_type": "session_start", "data": common})
        else:
            events.append(
                {
                    "event_type": "user_attribute_change",
                    "data": {**common, "user_attribute_name": "plan", "new": rng.choice(PLANS)},
                }
            )
    return events


def make_batch(
    rng: random.Random, users: int, new_index: int | None, now_ms: int
) -> dict[str, Any]:
    """A batch of a random known user (``new_index is None``) or of the new user number
    ``new_index``: new identities, or an anonymous new device."""
    batch: dict[str, Any] = {
        "environment": "production",
        "schema_version": 2,
        "timestamp_unixtime_ms": now_ms,
        "events": _events(rng, now_ms, rng.randrange(1 << 40)),
        "user_attributes": {
            "plan": rng.choice(PLANS),
            "last_screen": rng.choice(SCREENS),
            "visits": rng.randrange(100),
        },
        "application_info": {"application_name": "Bench", "application_version": "4.2.0"},
    }
    roll = rng.random()
    if new_index is None:
        i = rng.randrange(users)
        if roll < 0.4:
            batch["user_identities"] = {"customer_id": customer_id(i)}
            batch["device_info"] = {"platform": "iOS", "ios_advertising_id": device_id(i)}
        elif roll < 0.7:
            batch["user_identities"] = {"email": email(i)}
        else:
            batch["device_info"] = {"platform": "iOS", "ios_advertising_id": device_id(i)}
    else:
        device = f"new-{new_index:09d}-4d5e-8f60-{rng.getrandbits(48):012x}"
        batch["device_info"] = {"platform": "iOS", "ios_advertising_id": device}
        if roll < 0.6:
            batch["user_identities"] = {
                "customer_id": f"new-cust-{new_index:09d}",
                "email": f"new{new_index:09d}@example.org",
            }
    return batch


def build_log(log_dir: Path, users: int, batches: int, seed: int) -> int:
    """Append ``batches`` batches to a new log; return how many were of new users."""
    rng = random.Random(seed)
    encode = msgspec.json.Encoder().encode
    backend = open_store(log_dir, "normal")
    log = backend.log
    new_users = 0
    try:
        pending: list[NewBatch] = []
        for n in range(batches):
            now_ms = START_MS + n * 10
            new_index: int | None = None
            if rng.random() < 0.5:
                new_index = new_users
                new_users += 1
            pending.append(
                NewBatch(
                    batch_id=f"{rng.getrandbits(128):032x}",
                    input_id=INPUT_ID,
                    received_at_ms=now_ms,
                    channel="server_to_server",
                    body=encode(make_batch(rng, users, new_index, now_ms)),
                )
            )
            if len(pending) == APPEND_CHUNK or n == batches - 1:
                log.append(pending)
                pending = []
        assert log.end(0) == LogPosition(0, batches)
    finally:
        backend.close()
    return new_users


# -- the measurements -----------------------------------------------------------------------


class OtherCpu:
    """Measures the cores other processes kept busy while the block ran."""

    def __enter__(self) -> OtherCpu:
        self.machine0, self.ours0 = machine_cpu_s(), time.process_time()
        self.wall0 = time.perf_counter()
        self.cores: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        machine1, ours1 = machine_cpu_s(), time.process_time()
        if self.machine0 is not None and machine1 is not None:
            busy = (machine1 - self.machine0) - (ours1 - self.ours0)
            self.cores = max(0.0, busy / (time.perf_counter() - self.wall0))


@dataclass
class Row:
    """One line of the table."""

    name: str
    batches: int
    seconds: float

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.seconds


class StageRun:
    """The real stage on its own copy of the state, a chunk per :meth:`step`."""

    def __init__(self, log_dir: Path, state_dir: Path, chunk: int, durability: Durability):
        self.logs, self.states = (
            open_store(log_dir, durability),
            open_store(state_dir, durability),
        )
        self.state = self.states.state
        self.stage = ResolveStage(
            self.logs.log, self.state, Resolver(IdentityStrategy()), (), chunk
        )
        self.done = 0
        self.seconds = 0.0

    def step(self) -> int:
        began = time.perf_counter()
        n = self.stage.step()
        self.seconds += time.perf_counter() - began
        self.done += n
        return n

    def settle(self) -> None:
        """Wait for the commit in flight (timed), before the floor takes its turn."""
        began = time.perf_counter()
        self.stage.settle()
        self.seconds += time.perf_counter() - began

    def close(self) -> None:
        self.stage.close()
        self.logs.close()
        self.states.close()


class FloorRun:
    """The stage's look-ups and writes, done directly on another copy of the state."""

    def __init__(self, log_dir: Path, state_dir: Path, chunk: int, durability: Durability):
        self.logs, self.states = (
            open_store(log_dir, durability),
            open_store(state_dir, durability),
        )
        self.log, self.state = self.logs.log, self.states.state
        self.chunk = chunk
        self.position: LogPosition | None = None
        self.done = 0
        self.store_s = 0.0  # look-ups and writes
        self.read_s = 0.0  # reading the log and decoding the batches

    def step(self) -> int:
        t0 = time.perf_counter()
        stored = self.log.read(0, self.position, self.chunk)
        decoded = [(s, list(batch_identities(decode_batch(s.body)))) for s in stored]
        t1 = time.perf_counter()
        self.read_s += t1 - t0
        if not stored:
            return 0
        state = self.state
        changes = StateChanges()
        # the stage's look-ups: every identity of the chunk in bulk, then the profiles
        # of the users found and of the new users' MPIDs (whose absence is checked)
        links = state.users_with_each({i for _, identities in decoded for i in identities})
        owners: list[int | None] = []
        for s, identities in decoded:
            found_mpid = next((links[i][0] for i in identities if i in links), None)
            owners.append(derived_mpid(s.batch_id) if found_mpid is None else found_mpid)
        profiles = state.profiles({m for m in owners if m is not None})
        for (s, identities), mpid in zip(decoded, owners, strict=True):
            assert mpid is not None
            if any(i in links for i in identities):
                found = changes.profiles.get(mpid) or profiles[mpid]
                found.last_seen_ms = s.received_at_ms
            else:
                assert mpid not in profiles
                found = new_profile(mpid, s.received_at_ms)
                found.identities = [
                    IdentityRecord(i.type, i.value, s.received_at_ms, s.received_at_ms)
                    for i in identities
                ]
                for identity in identities:
                    changes.linked[identity] = [found.mpid]
            changes.profiles[found.mpid] = found
            changes.resolved.append((s.position, found.mpid))
        state.commit(changes, {0: stored[-1].position})
        self.position = stored[-1].position
        self.done += len(stored)
        self.store_s += time.perf_counter() - t1
        return len(stored)

    def close(self) -> None:
        self.logs.close()
        self.states.close()


def memory_state(state_file: Path) -> Backend:
    """The memory backend holding the profiles and links of ``state_file``."""
    backend = open_store(None)
    db = sqlite3.connect(state_file)
    try:
        changes = StateChanges()
        decode = msgspec.msgpack.Decoder(Profile).decode
        for mpid, doc in db.execute("SELECT mpid, doc FROM profiles"):
            changes.profiles[mpid] = decode(doc)
        for kind, value, mpid in db.execute(
            "SELECT type, value, mpid FROM identity_links ORDER BY id"
        ):
            changes.linked.setdefault(Identity(kind, value), []).append(mpid)
        backend.state.commit(changes, {})
    finally:
        db.close()
    return backend


def measure_ceiling(workdir: Path, state_file: Path, chunk: int, durability: Durability) -> Row:
    """The real stage over the whole log, its state in the memory backend (no I/O)."""
    memory = memory_state(state_file)
    logs = open_store(workdir / "log", durability)
    stage = ResolveStage(logs.log, memory.state, Resolver(IdentityStrategy()), (), chunk)
    try:
        began = time.perf_counter()
        done = stage.run_until_caught_up()
        return Row("ceiling: stage, state in memory", done, time.perf_counter() - began)
    finally:
        stage.close()
        logs.close()
        memory.close()


@dataclass
class Measured:
    """The rows, the stage's profile report, and the stage's state at the end."""

    stage: Row
    floor: Row
    floor_read: Row
    report: str | None
    offset: int
    profiles: int


def measure(
    workdir: Path, chunk: int, durability: Durability, profile: bool, segment: int
) -> Measured:
    """Run the stage and the floor over the whole log, ``segment`` chunks of each in turn.

    Taking turns exposes both to the same machine: a slow disk or a busy CPU for a few
    seconds slows both, not one of them.
    """
    stage = StageRun(workdir / "log", workdir / "stage", chunk, durability)
    floor = FloorRun(workdir / "log", workdir / "floor", chunk, durability)
    profiler = cProfile.Profile() if profile else None
    try:
        if segment == 0:  # one after the other
            if profiler is not None:
                profiler.enable()
            began = time.perf_counter()
            stage.done = stage.stage.run_until_caught_up()
            stage.seconds = time.perf_counter() - began
            if profiler is not None:
                profiler.disable()
            while floor.step():
                pass
        stage_more = floor_more = segment > 0
        while stage_more or floor_more:
            if profiler is not None:
                profiler.enable()
            for _ in range(segment):
                if stage_more and not stage.step():
                    stage_more = False
            stage.settle()
            if profiler is not None:
                profiler.disable()
            for _ in range(segment):
                if floor_more and not floor.step():
                    floor_more = False
        report = None
        if profiler is not None:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).strip_dirs()
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(30)
            report = out.getvalue()
        return Measured(
            Row(
                f"stage: log -> profile{' (cProfile)' if profile else ''}",
                stage.done,
                stage.seconds,
            ),
            Row("floor: direct look-ups + writes", floor.done, floor.store_s),
            Row("floor: + log read + decode", floor.done, floor.store_s + floor.read_s),
            report,
            sum(p.offset for p in stage.state.checkpoint().values()),
            stage.state.count_profiles(),
        )
    finally:
        stage.close()
        floor.close()


# -- the report -----------------------------------------------------------------------------


def fmt_table(rows: list[Row], floor: Row) -> str:
    head = f"{'':38} {'batches/s':>10} {'seconds':>8} {'/floor':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:38} {r.batches_per_s:>10,.0f} {r.seconds:>8.2f}"
            f" {r.batches_per_s / floor.batches_per_s:>7.2f}"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="known users (1,000,000)")
    parser.add_argument("--batches", type=int, default=100_000, help="batches (100,000)")
    parser.add_argument("--chunk", type=int, default=1000, help="batches per commit (1000)")
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    parser.add_argument(
        "--segment",
        type=int,
        default=5,
        help="chunks of the stage, then of the floor, in turn (5; 0: all of one, then the other)",
    )
    parser.add_argument(
        "--no-ceiling",
        dest="ceiling",
        action="store_false",
        help="skip the ceiling row (the stage over a state held in dicts: loads every user)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the stage under cProfile and print its top functions (slows it down)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if min(args.users, args.batches, args.chunk) < 1 or args.segment < 0:
        raise SystemExit("--users, --batches and --chunk must be positive, --segment >= 0")

    print(f"state: {args.users:,} known users ...", flush=True)
    cached, build_s = build_state(args.users)
    size_mb = cached.stat().st_size / 2**20
    if build_s is None:
        print(f"state: reused {cached} ({size_mb:,.0f} MiB)")
    else:
        print(
            f"state: built in {build_s:.1f}s ({args.users / build_s:,.0f} users/s,"
            f" {size_mb:,.0f} MiB), cached in {cached.parent}"
        )

    workdir = Path(tempfile.mkdtemp(prefix="patchbay-bench-resolve-"))
    errors: list[str] = []
    try:
        t = time.perf_counter()
        new_users = build_log(workdir / "log", args.users, args.batches, args.seed)
        print(
            f"log: {args.batches:,} batches ({args.batches - new_users:,} of known users,"
            f" {new_users:,} of new ones) appended in {time.perf_counter() - t:.1f}s",
            flush=True,
        )
        copy_state(cached, workdir / "stage")
        copy_state(cached, workdir / "floor")
        os.sync()  # the copies reach the disk before anything is timed

        turns = f"taking turns every {args.segment} chunks" if args.segment else "one by one"
        print(
            f"stage and floor: chunk {args.chunk}, durability {args.durability}, {turns} ...",
            flush=True,
        )
        with OtherCpu() as other:
            m = measure(workdir, args.chunk, args.durability, args.profile, args.segment)
        stage, floor, floor_read = m.stage, m.floor, m.floor_read
        offset, profiles, report = m.offset, m.profiles, m.report
        rows = [stage, floor, floor_read]
        if args.ceiling:
            print("ceiling: the stage again, its state in dicts ...", flush=True)
            rows.append(measure_ceiling(workdir, cached, args.chunk, args.durability))

        print()
        print(fmt_table(rows, floor))
        print()
        if other.cores is not None:
            print(f"CPU used by other processes: {other.cores:.2f} cores (of {os.cpu_count()})")
            if other.cores > 0.2:
                print("WARNING: other processes used the CPU during the run; figures are low")
        ratio = stage.batches_per_s / floor.batches_per_s
        goals = {
            f"stage >= {GOAL_BATCHES_PER_S:,} batches/s": (
                stage.batches_per_s >= GOAL_BATCHES_PER_S,
                f"{stage.batches_per_s:,.0f}",
            ),
            f"stage >= {GOAL_FLOOR_RATIO:.0%} of the floor": (
                ratio >= GOAL_FLOOR_RATIO,
                f"{ratio:.2f}",
            ),
        }
        for name, (ok, value) in goals.items():
            print(f"goal: {name:34} {value:>10}  {'PASS' if ok else 'FAIL'}")
        checks = {
            "state offset == last log offset": (offset, args.batches),
            "profiles == known users + new users": (profiles, args.users + new_users),
        }
        for name, (got, want) in checks.items():
            ok = got == want
            print(f"check: {name:36} {got:>10,} == {want:,}  {'OK' if ok else 'MISMATCH'}")
            if not ok:
                errors.append(f"{name}: {got} != {want}")
        if report is not None:
            print()
            print(report)

        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "config": run_config(args),
                        "state_build_s": build_s,
                        "new_users": new_users,
                        "rows": [{**asdict(r), "batches_per_s": r.batches_per_s} for r in rows],
                        "stage_floor_ratio": ratio,
                        "goals": {k: v[0] for k, v in goals.items()},
                        "other_cpu_cores": other.cores,
                        "committed_offset": offset,
                        "profiles": profiles,
                        "errors": errors,
                    },
                    indent=2,
                )
            )
        sys.stdout.flush()
        for e in errors:
            print(f"ERROR: {e}", file=sys.stderr)
        if errors:
            return 2
        if args.strict and not all(ok for ok, _ in goals.values()):
            return 1
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
