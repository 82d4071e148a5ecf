"""Ingest benchmark: bulk requests over HTTP against a real ``patchbay serve``, and its floor.

Run from the repository root::

    .venv/bin/python bench/ingest.py [--duration 15] [--concurrency 16] [--durability full]

It measures, in one run:

* HTTP end-to-end: concurrent aiohttp clients (in a separate process) post bulk requests to
  ``/v2/bulkevents`` of a ``patchbay serve`` process; only events of batches acknowledged by
  a 202 count.
* floor, decode+append: the same bodies through the repeated-key check, ``prepare_bulk`` and
  ``SqliteStore.append``
  (same durability), in this process, one request after the other: what the server would do
  with no HTTP, no event loop and no concurrency.
* floor, split+decode only: the repeated-key check, ``split_bulk`` and ``decode_batch``, no
  store.

It prints a table, checks the goals (>= 100,000 events/s over HTTP, HTTP >= 50% of the
floor) and verifies that the store holds exactly the batches the clients were told were
accepted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from base64 import b64encode
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from patchbay.backends import Backend
from patchbay.backends.sqlite import STATE_FILE
from patchbay.clock import SystemClock
from patchbay.collect.appender import append_new
from patchbay.collect.decode import decode_batch, split_bulk
from patchbay.collect.ingest import RequestStamps, prepare_bulk
from patchbay.collect.inputs import create_input
from patchbay.http.body import check_unique_keys
from patchbay.settings import (
    DEFAULT_DEDUP_WINDOW_S,
    DEFAULT_MAX_BATCHES,
    DEFAULT_MAX_REQUEST_BYTES,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # bench/common.py
    free_port,
    machine_cpu_s,
    open_store,
    percentile,
    process_cpu_s,
    run_config,
    start_server,
    stop_process,
)

#: The issue's goals.
GOAL_EVENTS_PER_S = 100_000
GOAL_FLOOR_RATIO = 0.5

#: Every batch's ``source_request_id`` in a template; replaced by a unique id before sending.
SRID_PLACEHOLDER = b"@@@@@@@@-@@@@-@@@@-@@@@-@@@@@@@@@@@@"
SRID_LEN = len(SRID_PLACEHOLDER)  # 36, a UUID's length

# -- realistic bodies ---------------------------------------------------------------------

FIRST_NAMES = [
    "Ana",
    "Ben",
    "Chloe",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jon",
    "Kenji",
    "Lena",
    "Marco",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
]
LAST_NAMES = [
    "Smith",
    "Garcia",
    "Chen",
    "Müller",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Silva",
    "Nguyen",
    "Okafor",
    "Johansson",
    "Haddad",
    "Tanaka",
    "Brown",
    "Novak",
]
CITIES = [
    ("New York", "NY", "US", "10016"),
    ("Austin", "TX", "US", "73301"),
    ("Seattle", "WA", "US", "98101"),
    ("London", "ENG", "GB", "EC1A"),
    ("Berlin", "BE", "DE", "10115"),
    ("Paris", "IDF", "FR", "75001"),
    ("Toronto", "ON", "CA", "M5H"),
    ("São Paulo", "SP", "BR", "01000"),
]
SCREENS = [
    "Home",
    "Search",
    "Category",
    "Product Detail",
    "Cart",
    "Checkout",
    "Order Status",
    "Account",
    "Settings",
    "Wishlist",
    "Onboarding",
    "Notifications",
]
CUSTOM_EVENTS = [
    ("Tapped Banner", "navigation"),
    ("Searched", "search"),
    ("Shared Product", "social"),
    ("Changed Setting", "user_preference"),
    ("Played Video", "media"),
    ("Opened Push", "other"),
    ("Wrote Review", "user_content"),
    ("Selected Store", "location"),
]
PRODUCTS = [
    ("SKU-1001", "Trail Running Shoe", "Stride", "Footwear", 129.99),
    ("SKU-2040", "Merino Base Layer", "Northwool", "Apparel", 79.5),
    ("SKU-3302", "Insulated Bottle 750ml", "Hydra", "Accessories", 34.0),
    ("SKU-4110", "Ultralight Tent 2P", "Summit", "Camping", 389.0),
    ("SKU-5208", "Headlamp 400lm", "Lumen", "Accessories", 44.95),
    ("SKU-6007", "Rain Shell Jacket", "Northwool", "Apparel", 219.0),
    ("SKU-7315", "Trekking Poles", "Stride", "Hiking", 99.0),
]
PRODUCT_ACTIONS = [
    "view_detail",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
    "add_to_wishlist",
]
CARRIERS = ["Verizon", "AT&T", "T-Mobile", "Vodafone", "Orange", "O2"]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _device(rng: random.Random, platform: str) -> dict[str, Any]:
    city = rng.choice(CITIES)
    common: dict[str, Any] = {
        "locale_language": rng.choice(["en", "de", "fr", "pt", "es"]),
        "locale_country": city[2],
        "timezone_offset": rng.choice([-8, -6, -5, 0, 1, 2]),
    }
    if rng.random() < 0.5:
        common["network_carrier"] = rng.choice(CARRIERS)
    if platform == "iOS":
        return {
            "platform": "iOS",
            "device_manufacturer": "Apple",
            "device_model": rng.choice(["iPhone15,2", "iPhone14,5", "iPhone16,1", "iPad13,4"]),
            "os_version": rng.choice(["17.4.1", "17.5", "16.7.8", "18.0"]),
            "ios_advertising_id": _uuid(rng),
            "att_authorization_status": rng.choice(["authorized", "denied", "not_determined"]),
            **common,
        }
    if platform == "Android":
        return {
            "platform": "Android",
            "device_manufacturer": rng.choice(["samsung", "Google", "OnePlus", "Xiaomi"]),
            "device_model": rng.choice(["SM-S918B", "Pixel 8", "CPH2449", "23049PCD8G"]),
            "os_version": rng.choice(["14", "13", "12"]),
            "android_advertising_id": _uuid(rng),
            **common,
        }
    return {
        "platform": "web",
        "http_header_user_agent": (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"
            " (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
        ),
        **common,
    }


def _product(rng: random.Random) -> dict[str, Any]:
    sku, name, brand, category, price = rng.choice(PRODUCTS)
    return {
        "id": sku,
        "name": name,
        "brand": brand,
        "category": category,
        "price": price,
        "quantity": rng.randint(1, 3),
    }


def _event(
    rng: random.Random, kind: str, ts: int, session: str | None, user: dict[str, Any]
) -> Any:
    data: dict[str, Any] = {"timestamp_unixtime_ms": ts}
    if session:
        data["session_uuid"] = session
    if rng.random() < 0.1:
        data["source_message_id"] = _uuid(rng)
    if kind == "screen_view":
        data["screen_name"] = rng.choice(SCREENS)
        if rng.random() < 0.2:
            data["custom_attributes"] = {"ab_test": rng.choice("AB")}
    elif kind == "custom_event":
        name, type_ = rng.choice(CUSTOM_EVENTS)
        data["event_name"] = name
        data["custom_event_type"] = type_
        data["custom_attributes"] = {"screen": rng.choice(SCREENS), "pos": rng.randint(1, 20)}
    elif kind == "commerce_event":
        products = [_product(rng) for _ in range(1 if rng.random() < 0.7 else 2)]
        action = rng.choice(PRODUCT_ACTIONS)
        total = round(sum(p["price"] * p["quantity"] for p in products), 2)
        product_action: dict[str, Any] = {
            "action": action,
            "total_amount": total,
            "products": products,
        }
        if action == "purchase":
            product_action["transaction_id"] = f"T{rng.getrandbits(40):010x}"
            product_action["tax_amount"] = round(total * 0.08, 2)
        data["product_action"] = product_action
        data["currency_code"] = rng.choice(["USD", "EUR", "GBP"])
    elif kind == "session_end":
        data["session_duration_ms"] = rng.randint(5_000, 1_800_000)
    elif kind == "user_attribute_change":
        name = rng.choice(["plan", "favorite_category", "push_opt_in", "loyalty_points"])
        value: Any = {
            "plan": rng.choice(["free", "plus", "pro"]),
            "favorite_category": rng.choice(PRODUCTS)[3],
            "push_opt_in": rng.choice(["true", "false"]),
            "loyalty_points": str(rng.randint(0, 5000)),
        }[name]
        data["user_attribute_name"] = name
        data["new"] = value
        data["old"] = user.get(name)
        data["is_new_attribute"] = name not in user
    elif kind == "user_identity_change":
        data["new"] = {
            "identity_type": "email",
            "identity": user["email"],
            "created_this_batch": False,
        }
    elif kind == "application_state_transition":
        data["application_transition_type"] = rng.choice(
            ["application_foreground", "application_background"]
        )
    return {"event_type": kind, "data": data}


MIDDLE_EVENTS = (
    ["screen_view"] * 36
    + ["custom_event"] * 33
    + ["commerce_event"] * 11
    + ["user_attribute_change"] * 8
    + ["application_state_transition"] * 10
    + ["user_identity_change"] * 2
)


def make_batch(rng: random.Random, n_events: int, now_ms: int) -> dict[str, Any]:
    """One user's batch of ``n_events`` mixed events, as an mParticle SDK would send it."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city = rng.choice(CITIES)
    platform = rng.choice(["iOS", "Android", "web"])
    customer = rng.randrange(10**8)
    user: dict[str, Any] = {
        "$firstname": first,
        "$lastname": last,
        "$city": city[0],
        "$country": city[2],
        "plan": rng.choice(["free", "plus", "pro"]),
        "favorite_categories": rng.sample(["Footwear", "Apparel", "Camping", "Hiking"], 2),
    }
    identities = {
        "customer_id": f"cust-{customer:08d}",
        "email": f"{first.lower()}.{last.lower()}{customer % 1000}@example.com",
    }
    # Server-side senders often leave out the session and send profile data only on change.
    session = _uuid(rng) if rng.random() < 0.3 else None
    kinds = [rng.choice(MIDDLE_EVENTS) for _ in range(n_events)]
    if n_events >= 3 and rng.random() < 0.3:
        kinds[0] = "session_start"
    if n_events >= 3 and rng.random() < 0.25:
        kinds[-1] = "session_end"
    ts = now_ms - rng.randint(1_000, 600_000)
    events = []
    for kind in kinds:
        events.append(_event(rng, kind, ts, session, {**user, "email": identities["email"]}))
        ts += rng.randint(200, 30_000)
    ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
    batch: dict[str, Any] = {
        "source_request_id": SRID_PLACEHOLDER.decode(),
        "environment": "production",
        "schema_version": 2,
        "mpid": rng.randrange(-(2**63), 2**63),
        "ip": ip,
        "user_identities": identities,
        "device_info": _device(rng, platform),
        "events": events,
    }
    if rng.random() < 0.5:
        batch["user_attributes"] = user
    if rng.random() < 0.5:
        batch["application_info"] = {
            "application_name": "Acme Outdoor",
            "application_version": rng.choice(["5.12.0", "5.11.2", "5.13.0-beta"]),
        }
    if rng.random() < 0.3:
        batch["context"] = {"data_plan": {"plan_id": "acme_outdoor", "plan_version": 3}}
    return batch


def _shrink_batch(batch: dict[str, Any]) -> bool:
    """Make ``batch`` smaller by one step, lightest cut first; ``False`` when nothing is left.

    Used only when a body is over the size limit (not with the default settings).
    """
    for event in batch["events"]:
        if event["data"].pop("source_message_id", None) is not None:
            return True
    for event in batch["events"]:
        if event["data"].pop("custom_attributes", None) is not None:
            return True
    device = batch.get("device_info")
    if device and len(device) > 3:
        batch["device_info"] = {
            k: device[k] for k in ("platform", "os_version", "device_model") if k in device
        }
        return True
    for key in ("context", "application_info", "user_attributes"):
        if batch.pop(key, None) is not None:
            return True
    for event in batch["events"]:
        products = event["data"].get("product_action", {}).get("products", [])
        if len(products) > 1:
            del products[1:]
            return True
    if len(batch["events"]) > 1:  # last resort: fewer events
        batch["events"].pop()
        return True
    return False


@dataclass
class Template:
    """A bulk body with placeholder request ids, where they are, and each batch's events."""

    body: bytes
    id_offsets: list[int]
    events: list[int]

    @property
    def total_events(self) -> int:
        return sum(self.events)


def make_template(
    rng: random.Random, batches: int, events_per_batch: int, limit: int, now_ms: int
) -> tuple[Template, int]:
    """A bulk body under ``limit`` bytes, and how many shrink steps it took."""
    spread = max(0, events_per_batch // 5)
    items = [
        make_batch(rng, max(1, events_per_batch + rng.randint(-spread, spread)), now_ms)
        for _ in range(batches)
    ]
    shrinks = 0
    body = msgspec.json.encode(items)
    while len(body) > limit:
        # Shrink the largest batches first, a tenth of them at a time.
        sizes = sorted(range(len(items)), key=lambda i: -len(msgspec.json.encode(items[i])))
        changed = False
        for i in sizes[: max(1, len(items) // 10)]:
            changed |= _shrink_batch(items[i])
        if not changed:
            raise SystemExit(f"cannot fit {batches} batches in {limit} bytes")
        shrinks += 1
        body = msgspec.json.encode(items)
    return template_of(items, body), shrinks


def template_of(items: list[dict[str, Any]], body: bytes | None = None) -> Template:
    """The template of a bulk body of ``items`` (``body``: their JSON, when already
    encoded), each with ``source_request_id`` set to :data:`SRID_PLACEHOLDER`."""
    if body is None:
        body = msgspec.json.encode(items)
    offsets: list[int] = []
    at = body.find(SRID_PLACEHOLDER)
    while at != -1:
        offsets.append(at)
        at = body.find(SRID_PLACEHOLDER, at + SRID_LEN)
    assert len(offsets) == len(items), "placeholder found outside source_request_id"
    return Template(body, offsets, [len(b["events"]) for b in items])


def make_pool(
    size: int, seed: int, batches: int, events_per_batch: int, limit: int
) -> tuple[list[Template], int]:
    """``size`` bodies made with a seeded RNG; and how many of them had to be shrunk."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    pool, shrunk = [], 0
    for _ in range(size):
        template, shrinks = make_template(rng, batches, events_per_batch, limit, now_ms)
        pool.append(template)
        shrunk += shrinks > 0
    return pool, shrunk


def srid_prefix(run: int, worker: int) -> bytes:
    """The first 24 characters of the request ids a worker sends (a counter fills the rest)."""
    return f"{run:08x}-{worker:04x}-4000-8000-".encode()


def fill(template: Template, prefix: bytes, counter: int) -> bytes:
    """The template's body with unique request ids ``prefix + counter, counter + 1, ...``."""
    buf = bytearray(template.body)
    for i, at in enumerate(template.id_offsets):
        buf[at : at + SRID_LEN] = prefix + b"%012x" % (counter + i)
    return bytes(buf)


# -- results ------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    name: str
    events_per_s: float
    batches_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float


# -- the HTTP client (its own process) ----------------------------------------------------


@dataclass
class ClientConfig:
    url: str
    auth: str
    pool: list[Template]
    concurrency: int
    warmup_s: float
    duration_s: float
    run: int
    server_pid: int


@dataclass
class ClientResult:
    window_requests: int = 0
    window_batches: int = 0
    window_events: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    total_accepted_batches: int = 0
    total_requests: int = 0
    failed_requests: int = 0
    duplicates: int = 0
    rejected_batches: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    server_cpu_s: float | None = None
    client_cpu_s: float = 0.0
    machine_cpu_s: float | None = None


async def _client(cfg: ClientConfig) -> ClientResult:
    import aiohttp

    result = ClientResult()
    clock = time.perf_counter  # not loop.time(): uvloop's has a 1 ms resolution
    start = clock()
    window_from = start + cfg.warmup_s
    window_to = window_from + cfg.duration_s
    decoder = msgspec.json.Decoder()

    async def worker(index: int, session: aiohttp.ClientSession) -> None:
        prefix = srid_prefix(cfg.run, index)
        counter = 0
        n = index
        while clock() < window_to:
            template = cfg.pool[n % len(cfg.pool)]
            n += 1
            body = fill(template, prefix, counter)
            counter += len(template.id_offsets)
            began = clock()
            try:
                async with session.post("/v2/bulkevents", data=body) as response:
                    status = response.status
                    payload = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.failed_requests += 1
                if len(result.errors) < 20:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            ended = clock()
            result.total_requests += 1
            result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
            if status != 202:
                if len(result.errors) < 20:
                    result.errors.append(f"HTTP {status}: {payload[:300]!r}")
                continue
            answer = decoder.decode(payload)
            accepted, duplicates = answer["accepted"], answer["duplicates"]
            rejected = [r["index"] for r in answer["rejected"]]
            result.total_accepted_batches += accepted
            result.duplicates += duplicates
            result.rejected_batches += len(rejected)
            if not accepted:
                continue
            events = template.total_events - sum(template.events[i] for i in rejected)
            if duplicates:  # which ones is not said; count the accepted share
                events = round(events * accepted / (accepted + duplicates))
            if window_from <= ended < window_to:
                result.window_requests += 1
                result.window_batches += accepted
                result.window_events += events
                result.latencies_ms.append((ended - began) * 1000)

    async def sample_cpu() -> None:
        await asyncio.sleep(max(0.0, window_from - clock()))
        server0, client0 = process_cpu_s(cfg.server_pid), time.process_time()
        machine0 = machine_cpu_s()
        await asyncio.sleep(max(0.0, window_to - clock()))
        server1, client1 = process_cpu_s(cfg.server_pid), time.process_time()
        machine1 = machine_cpu_s()
        if server0 is not None and server1 is not None:
            result.server_cpu_s = server1 - server0
        if machine0 is not None and machine1 is not None:
            result.machine_cpu_s = machine1 - machine0
        result.client_cpu_s = client1 - client0

    connector = aiohttp.TCPConnector(limit=cfg.concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"Authorization": cfg.auth, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        cfg.url, connector=connector, timeout=timeout, headers=headers
    ) as session:
        await asyncio.gather(sample_cpu(), *(worker(i, session) for i in range(cfg.concurrency)))
    return result


def run_client(cfg: ClientConfig, conn: Connection) -> None:
    """Entry point of the client process: run the clients, send back a ClientResult."""
    try:
        import uvloop

        result = uvloop.run(_client(cfg))
    except BaseException as exc:  # report anything to the parent, then fail
        conn.send(f"client failed: {type(exc).__name__}: {exc}")
        raise
    conn.send(result)


# -- the floor (this process) -------------------------------------------------------------


def floor_append(
    pool: list[Template], durability: str, seconds: float, workdir: Path, run: int
) -> Row:
    """The repeated-key check, prepare_bulk + append (de-duplication check, log append, keys
    recorded) of the bodies, sequentially, on a fresh store."""
    backend = open_store(workdir / "floor", durability)
    try:
        create_input(backend.inputs, "bench", "server", 0, SystemClock())
        item = backend.inputs.get_input("bench")
        assert item is not None
        prefix = srid_prefix(run, 0xFFFF)
        counter = n = batches = events = 0
        busy = 0.0
        latencies: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            template = pool[n % len(pool)]
            n += 1
            body = fill(template, prefix, counter)
            counter += len(template.id_offsets)
            began = time.perf_counter()
            now_ms = int(time.time() * 1000)
            stamps = RequestStamps(input=item, ip="127.0.0.1", received_at_ms=now_ms)
            check_unique_keys(body)
            prepared = prepare_bulk(body, stamps, DEFAULT_MAX_BATCHES)
            since = now_ms - int(DEFAULT_DEDUP_WINDOW_S * 1000)
            result = append_new(backend.log, backend.dedup, prepared.batches, since)
            took = time.perf_counter() - began
            busy += took
            latencies.append(took * 1000)
            stored = [e for e, p in zip(prepared.events, result.positions, strict=True) if p]
            batches += len(stored)
            events += sum(stored)
        assert last_offset(backend) == batches, "the floor lost batches"
    finally:
        backend.close()
        shutil.rmtree(workdir / "floor", ignore_errors=True)
    return Row(
        "floor: decode+append",
        events / busy,
        batches / busy,
        n / busy,
        percentile(latencies, 50),
        percentile(latencies, 99),
    )


def floor_decode(pool: list[Template], seconds: float) -> Row:
    """The repeated-key check, split_bulk + decode_batch of the bodies, no stamps, no
    store."""
    n = batches = events = 0
    busy = 0.0
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        body = pool[n % len(pool)].body
        n += 1
        began = time.perf_counter()
        check_unique_keys(body)
        for raw in split_bulk(body, DEFAULT_MAX_BATCHES):
            events += decode_batch(raw).event_count
            batches += 1
        took = time.perf_counter() - began
        busy += took
        latencies.append(took * 1000)
    return Row(
        "floor: split+decode only",
        events / busy,
        batches / busy,
        n / busy,
        percentile(latencies, 50),
        percentile(latencies, 99),
    )


# -- the server ---------------------------------------------------------------------------


def patchbay(*args: str) -> list[str]:
    return [sys.executable, "-m", "patchbay", *args]


def add_input(data_dir: Path) -> dict[str, str]:
    done = subprocess.run(
        patchbay(
            "inputs",
            "add",
            "bench",
            "--type",
            "server",
            "--rate-limit",
            "0",
            "--json",
            "--data-dir",
            str(data_dir),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"patchbay inputs add failed:\n{done.stderr}")
    fields: dict[str, str] = json.loads(done.stdout)
    return fields


def last_offset(backend: Backend) -> int:
    """The newest offset of the embedded log's one partition (its number of batches)."""
    end = backend.log.end(0)
    return 0 if end is None else end.offset


def resolved_offset(data_dir: Path) -> int | None:
    """How far the server's resolve stage got in the log."""
    if not (data_dir / STATE_FILE).exists():
        return None
    backend = open_store(data_dir)
    try:
        done = backend.state.checkpoint().get(0)
        return 0 if done is None else done.offset
    finally:
        backend.close()


# -- main ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds (15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--batches-per-request", type=int, default=100)
    parser.add_argument("--events-per-batch", type=int, default=10, help="mean; varies +-20%%")
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    parser.add_argument(
        "--floor-duration", type=float, default=4.0, help="seconds for each floor row (4)"
    )
    parser.add_argument("--pool", type=int, default=32, help="distinct bodies (32)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    return parser.parse_args()


def fmt_table(rows: list[Row], floor: Row) -> str:
    head = (
        f"{'':28} {'events/s':>10} {'batches/s':>10} {'req/s':>8} {'p50 ms':>8}"
        f" {'p99 ms':>8} {'/floor':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:28} {r.events_per_s:>10,.0f} {r.batches_per_s:>10,.0f}"
            f" {r.requests_per_s:>8,.1f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f}"
            f" {r.events_per_s / floor.events_per_s:>7.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    limit = DEFAULT_MAX_REQUEST_BYTES
    run = secrets.randbits(32)  # in every source_request_id: unique per run

    t = time.perf_counter()
    pool, shrunk = make_pool(
        args.pool, args.seed, args.batches_per_request, args.events_per_batch, limit
    )
    sizes = [len(p.body) for p in pool]
    events = [p.total_events for p in pool]
    print(
        f"pool: {len(pool)} bodies of {args.batches_per_request} batches,"
        f" {statistics.mean(events) / args.batches_per_request:.1f} events/batch,"
        f" {min(sizes) / 1024:.0f}-{max(sizes) / 1024:.0f} KiB (limit {limit / 1024:.0f} KiB;"
        f" {shrunk} shrunk to fit), made in {time.perf_counter() - t:.1f}s",
        flush=True,
    )

    workdir = Path(tempfile.mkdtemp(prefix="patchbay-bench-"))
    errors: list[str] = []
    server: subprocess.Popen[bytes] | None = None
    log_path = workdir / "serve.log"
    try:
        print(
            f"floor: {args.floor_duration:g}s decode only, {args.floor_duration:g}s"
            f" decode+append ({args.durability}) ...",
            flush=True,
        )
        machine0, ours0, wall0 = machine_cpu_s(), time.process_time(), time.perf_counter()
        decode = floor_decode(pool, args.floor_duration)
        floor = floor_append(pool, args.durability, args.floor_duration, workdir, run)
        machine1, ours1, wall1 = machine_cpu_s(), time.process_time(), time.perf_counter()
        floor_other = None
        if machine0 is not None and machine1 is not None:
            busy = (machine1 - machine0) - (ours1 - ours0)
            floor_other = max(0.0, busy / (wall1 - wall0))
        os.sync()  # let the floor's writes reach the disk before the HTTP run

        data_dir = workdir / "data"
        creds = add_input(data_dir)
        port = free_port()
        server = start_server(data_dir, port, args.durability, log_path)
        auth = "Basic " + b64encode(f"{creds['key']}:{creds['secret']}".encode()).decode()
        print(
            f"http: {args.concurrency} clients, {args.warmup:g}s warm-up +"
            f" {args.duration:g}s against 127.0.0.1:{port} ...",
            flush=True,
        )
        cfg = ClientConfig(
            url=f"http://127.0.0.1:{port}",
            auth=auth,
            pool=pool,
            concurrency=args.concurrency,
            warmup_s=args.warmup,
            duration_s=args.duration,
            run=run,
            server_pid=server.pid,
        )
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe(duplex=False)
        client = ctx.Process(target=run_client, args=(cfg, theirs), name="bench-client")
        client.start()
        theirs.close()
        if not ours.poll(args.warmup + args.duration + 180):
            client.kill()
            raise SystemExit("the client process did not finish")
        answer = ours.recv()
        client.join(30)
        if isinstance(answer, str):
            raise SystemExit(answer)
        res: ClientResult = answer

        code = stop_process(server)
        if code not in (0, -signal.SIGTERM):
            errors.append(f"patchbay serve exited with {code}")
        check = open_store(data_dir)
        try:
            stored = last_offset(check)
        finally:
            check.close()
        resolved = resolved_offset(data_dir)

        lat = res.latencies_ms
        http = Row(
            f"HTTP end-to-end ({args.concurrency} clients)",
            res.window_events / args.duration,
            res.window_batches / args.duration,
            res.window_requests / args.duration,
            percentile(lat, 50),
            percentile(lat, 99),
        )
        rows = [http, floor, decode]
        print()
        print(fmt_table(rows, floor))
        print()
        server_cores = (res.server_cpu_s or 0.0) / args.duration
        client_cores = res.client_cpu_s / args.duration
        other_cores = None
        if res.machine_cpu_s is not None and res.server_cpu_s is not None:
            other_cores = max(0.0, res.machine_cpu_s / args.duration - server_cores - client_cores)
        print(
            f"CPU in the window (cores of {os.cpu_count()}): server {server_cores:.2f},"
            f" client {client_cores:.2f}, other processes "
            + ("?" if other_cores is None else f"{other_cores:.2f}")
        )
        if floor_other is not None:
            print(f"CPU used by other processes during the floor: {floor_other:.2f} cores")
        if max(other_cores or 0.0, floor_other or 0.0) > 0.2:
            print("WARNING: other processes used the CPU during the run; the figures are off")
        print(
            f"statuses: {res.statuses}; failed requests: {res.failed_requests};"
            f" duplicates: {res.duplicates}; rejected batches: {res.rejected_batches}"
        )
        for e in res.errors[:10]:
            errors.append(f"client: {e}")
        if res.duplicates or res.rejected_batches:
            errors.append("unexpected duplicates or rejected batches")

        ratio = http.events_per_s / floor.events_per_s
        goals = {
            f"HTTP >= {GOAL_EVENTS_PER_S:,} events/s": (
                http.events_per_s >= GOAL_EVENTS_PER_S,
                f"{http.events_per_s:,.0f}",
            ),
            f"HTTP >= {GOAL_FLOOR_RATIO:.0%} of the floor": (
                ratio >= GOAL_FLOOR_RATIO,
                f"{ratio:.2f}",
            ),
        }
        for name, (ok, value) in goals.items():
            print(f"goal: {name:34} {value:>10}  {'PASS' if ok else 'FAIL'}")
        if resolved is not None:
            print(
                f"resolve stage (runs inside patchbay serve): {resolved:,} of {stored:,} batches"
                f" resolved when the server stopped ({resolved / max(1, stored):.0%})"
            )
        verified = stored == res.total_accepted_batches
        print(
            f"check: batches in store == batches acknowledged: {stored:,} =="
            f" {res.total_accepted_batches:,}  {'OK' if verified else 'MISMATCH'}"
        )
        if not verified:
            errors.append("the store does not hold exactly the acknowledged batches")

        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "config": run_config(args),
                        "pool": {
                            "bodies": len(pool),
                            "min_bytes": min(sizes),
                            "max_bytes": max(sizes),
                            "shrunk": shrunk,
                        },
                        "rows": [asdict(r) for r in rows],
                        "http_floor_ratio": ratio,
                        "goals": {k: v[0] for k, v in goals.items()},
                        "server_cpu_cores": server_cores,
                        "client_cpu_cores": client_cores,
                        "other_cpu_cores": other_cores,
                        "statuses": res.statuses,
                        "stored_batches": stored,
                        "resolved_batches": resolved,
                        "acknowledged_batches": res.total_accepted_batches,
                        "errors": errors,
                    },
                    indent=2,
                )
            )
        sys.stdout.flush()
        for e in errors:
            print(f"ERROR: {e}", file=sys.stderr)
        if errors:
            print(f"server log: {log_path.read_text()[-3000:]}", file=sys.stderr)
            return 2
        if args.strict and not all(ok for ok, _ in goals.values()):
            return 1
        return 0
    finally:
        if server is not None:
            stop_process(server)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
