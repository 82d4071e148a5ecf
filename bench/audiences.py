"""Audiences benchmark: the pipeline with 100 audiences against the same stream with none,
and the time from an event's 202 to the partner's receipt of the membership change.

Run from the repository root::

    .venv/bin/python bench/audiences.py                 # 1,000,000 profiles, about 20 minutes
    .venv/bin/python bench/audiences.py --quick         # 50,000 profiles, about a minute

In one run it:

1. **Preloads** two fresh SQLite data dirs with ``--profiles`` users, without HTTP: one
   batch per user (``customer_id``, often an email and an iOS device id, user attributes
   drawn from small pools: ``country``, ``plan``, ``age``, ``signed_up``, sometimes
   ``nickname``, ``tags``, ``vip``, ``churned``; GDPR and CCPA consent for 30%; 1-2 events
   of the last month, none of the last hour) appended straight to the log, then resolved
   by the real ``Pipeline`` (resolve, activate and segment stages, built as
   ``patchbay.server.create_app`` builds them, on threads), timed until every stage's
   checkpoint is at the end of the log. Data dir A has no audience; data dir B has the 100
   audiences, created with ``AudienceService`` and built (live) before the preload, so no
   build over the users is needed and every user has a profile and a segment state. The
   two preload times are a figure of their own: what the segment stage costs over a
   first-seen user.
2. **Audiences**: 100 definitions from templates with varying parameters: windowed
   (45s..30d) and all-time event counts (``min``, ``max``), revenue and attribute sums,
   commerce actions, custom events with attribute conditions, user attributes with every
   operator (numbers, dates, lists), identities, consent, input, environment, ``not``,
   ``any`` and ``all`` nested, and audience references.
3. **Throughput**: the same stream of ``--events`` events (batches of 2-6 mixed events of
   existing users, half of them with user attributes, timestamped at the append) is
   appended to A and to B, a part at a time (``--turns``: A, B, then B, A, ...: a busy
   machine slows both alike), and the real ``Pipeline`` is run on each until every stage
   is at the end of the log. The floor is A's events/s (the whole pipeline, its segment
   stage with no audience), the goal B's events/s >= 0.7 of it. CPU seconds per 1,000
   events are the process's CPU time (all threads), also shown by thread. Joins and leaves
   are the segment stage's counters.
4. **Latency** on B (after the throughput runs): a local Firehose partner (bench/forward.py,
   audience processing registered, a process of its own) with one output, 10 of the
   audiences connected to it (``AudienceService.connect``), ``patchbay serve`` on B, and a
   client process (bench/forward.py's) posting bulk requests of ``--batches-per-request``
   batches at ``--rate`` events/s, paced, for ``--warmup`` + ``--duration`` seconds. One
   batch in 20 is a *probe*: the first purchase of a user no other batch names, who joins
   ``commerce-purchase-15m`` (a purchase in the last 15 minutes) with it. The latency of a
   probe is the partner's receipt of its (MPID, audience, ``add``) minus the time the
   client read the 202 of its request; p50/p99 over the probes acknowledged in the measured
   window. A probe the partner never receives within ``--drain-timeout`` is an error.
   ``--rate 10000,1000`` runs a phase per rate, in turn, on the same server (each with
   probes of its own, after the previous one's probes all arrived): a rate the segment
   stage keeps up with shows the sending path's own latency. It also reads, from
   ``/metrics``, how many accepted batches the segment stage had not counted yet when the
   load stopped.

It prints a table, the CPU by thread and by process, and the goals (>= 0.7 of the floor;
p99 < 1 s at 10,000 events/s), and exits 0 unless ``--strict`` and a goal is missed (1) or
something went wrong (2). ``--profile`` adds a run of the stream on B with the segment
stage under cProfile (after the measured runs: the figures are not affected) and samples
``patchbay serve`` with py-spy in the latency run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from patchbay.activate.stage import ActivateStage
from patchbay.backends import Backend
from patchbay.backends.records import LogPosition, NewBatch
from patchbay.clock import SystemClock
from patchbay.collect.appender import recover_dedup
from patchbay.logs import configure_logging
from patchbay.metrics import Metrics, SegmentMetrics
from patchbay.pipeline import Pipeline, Stage
from patchbay.resolve.identities import Identity
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolvedBatch
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.segment import runs_compiled
from patchbay.segment.engine import SegmentEngine
from patchbay.segment.process import POLL_S, SegmentProcess
from patchbay.segment.service import AudienceService
from patchbay.segment.stage import SegmentStage
from patchbay.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # bench/common.py
    child_pid,
    exit_status,
    free_port,
    open_store,
    percentile,
    run_config,
    server_metric,
    start_server,
    stop_process,
    store_settings,
)
from forward import (  # bench/forward.py: the partner and the paced client
    MODULE,
    OUTPUT_SETTING,
    TOKEN,
    Context,
    PhaseConfig,
    PhaseResult,
    drive,
    partner_added,
    partner_stats,
    patchbay_cli,
    start_partner,
    summarize_profile,
)
from ingest import SRID_PLACEHOLDER, Template, template_of  # bench/ingest.py

#: The issue's goals.
GOAL_FLOOR_RATIO = 0.7
GOAL_P99_MS = 1000.0
GOAL_RATE = 10_000

INPUT = "bench"
OUTPUT = "aud-out"
#: The audience the latency probes join: a purchase in the last 15 minutes.
PROBE = "commerce-purchase-15m"
#: One batch in this many of the latency run is a probe.
PROBE_EVERY = 20
#: The last tenth of the users are kept for the probes (no other batch names them).
PROBE_SHARE = 0.1
APPEND_CHUNK = 5_000
SEGMENT_BATCHES = "patchbay_segment_batches_total"
#: Batches in the log resolve has not handled yet (a gauge, set at each scrape).
RESOLVE_LAG = 'patchbay_stage_lag_batches{stage="resolve"}'
#: Keys of the segment stage thread's time on a CPU and runnable but waiting for one.
STAGE_ON_CPU = "stage thread on a CPU"
STAGE_WAITING = "stage thread waiting for a CPU"
#: The key of the segment stage's counting rate among the latency phases' CPU figures.
SEGMENT_RATE = "segment batches/s"
DAY_MS = 86_400_000

COUNTRIES = ["US", "DE", "FR", "GB", "BR", "JP", "IN", "ES"]
PLANS = ["free", "plus", "pro", "enterprise"]
GENRES = ["drama", "comedy", "action", "docs", "kids"]
CUSTOM = [
    ("video_play", "media"),
    ("search", "search"),
    ("share", "social"),
    ("add_to_wishlist", "transaction"),
    ("rate_app", "user_preference"),
    ("level_up", "other"),
]
SCREENS = ["Home", "Search", "Product", "Cart", "Checkout", "Settings"]
ACTIONS = ["view_detail", "add_to_cart", "remove_from_cart", "checkout", "purchase", "refund"]
ACTION_WEIGHTS = [35, 25, 5, 10, 20, 5]
WINDOWS = ["45s", "15m", "1h", "6h", "1d", "7d", "30d"]
NICKNAMES = ["Dr Who", "Annie", "Joanna", "Dr No", "Hannah", "Max"]

# -- the audiences ------------------------------------------------------------------------


def _event(
    type_: str,
    within: str | None = None,
    count: dict[str, int] | None = None,
    total: dict[str, Any] | None = None,
    **match: Any,
) -> dict[str, Any]:
    condition: dict[str, Any] = {"event": {"type": type_, **match}}
    if count is not None:
        condition["count"] = count
    if total is not None:
        condition["sum"] = total
    if within is not None:
        condition["within"] = within
    return condition


def _attr(key: str, op: str, *value: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"user_attribute": key, "op": op}
    if value:
        found["value"] = value[0]
    return found


def audience_documents() -> list[dict[str, Any]]:
    """The 100 definitions, each after those it refers to."""
    docs: list[dict[str, Any]] = []

    def add(name: str, criteria: dict[str, Any]) -> None:
        docs.append({"name": name, "description": "bench/audiences.py", "criteria": criteria})

    # windowed custom event counts (12)
    for k, (name, kind) in enumerate(CUSTOM):
        for v in range(2):
            window, least = WINDOWS[(2 * k + v) % len(WINDOWS)], 1 + (k + v) % 3
            add(
                f"ce-{name}-{window}-min{least}",
                _event("custom_event", window, {"min": least}, name=name, custom_event_type=kind),
            )
    # all-time counts (4)
    add("screen-cart-min2", _event("screen_view", None, {"min": 2}, name="Cart"))
    add("sessions-min3", _event("session_start", None, {"min": 3}))
    add("media-min5", _event("custom_event", None, {"min": 5}, custom_event_type="media"))
    add("attribute-changers", _event("user_attribute_change", None, {"min": 1}))
    # commerce actions in windows (12), the probes' audience among them
    for k, action in enumerate(ACTIONS):
        pair = ["15m", "7d"] if action == "purchase" else [WINDOWS[k % 7], WINDOWS[(k + 3) % 7]]
        for window in pair:
            add(f"commerce-{action}-{window}", _event("commerce_event", window, action=action))
    # revenue sums (6)
    for value, within in ((100, "1d"), (500, "30d"), (1000, None)):
        add(
            f"revenue-{value}-{within or 'all'}",
            _event(
                "commerce_event",
                within,
                total={"of": "revenue", "op": "gte", "value": value},
                action="purchase",
            ),
        )
    add(
        "refunds-50-30d",
        _event(
            "commerce_event",
            "30d",
            total={"of": "revenue", "op": "gt", "value": 50},
            action="refund",
        ),
    )
    add(
        "checkout-200-7d",
        _event(
            "commerce_event",
            "7d",
            total={"of": "revenue", "op": "gte", "value": 200},
            action="checkout",
        ),
    )
    add(
        "wishlist-revenue-1d",
        _event(
            "commerce_event",
            "1d",
            total={"of": "revenue", "op": "gt", "value": 10},
            action="view_detail",
        ),
    )
    # custom events with attribute conditions (8)
    for k, genre in enumerate(GENRES):
        add(
            f"video-{genre}",
            _event(
                "custom_event",
                "7d" if k % 2 else None,
                name="video_play",
                attributes=[{"attribute": "genre", "op": "eq", "value": genre}],
            ),
        )
    add(
        "level-10-plus",
        _event(
            "custom_event",
            None,
            name="level_up",
            attributes=[{"attribute": "level", "op": "gte", "value": 10}],
        ),
    )
    add(
        "long-videos-7d",
        _event(
            "custom_event",
            "7d",
            {"min": 2},
            name="video_play",
            attributes=[{"attribute": "minutes", "op": "gt", "value": 60}],
        ),
    )
    add(
        "search-docs-kids",
        _event(
            "custom_event",
            "30d",
            name="search",
            attributes=[{"attribute": "genre", "op": "in", "value": ["docs", "kids"]}],
        ),
    )
    # attribute sums (3)
    add(
        "minutes-100-7d",
        _event(
            "custom_event",
            "7d",
            total={"of": "attribute:minutes", "op": "gt", "value": 100},
            name="video_play",
        ),
    )
    add(
        "levels-50-30d",
        _event("custom_event", "30d", total={"of": "attribute:level", "op": "gte", "value": 50}),
    )
    add(
        "minutes-500-all",
        _event(
            "custom_event",
            None,
            total={"of": "attribute:minutes", "op": "gte", "value": 500},
            name="video_play",
        ),
    )
    # user attributes, every operator (16)
    add("country-de", _attr("country", "eq", "DE"))
    add("country-not-us", _attr("country", "ne", "US"))
    add("country-fr-es-br", _attr("country", "in", ["FR", "ES", "BR"]))
    add("plan-pro", _attr("plan", "eq", "pro"))
    add("plan-plus-enterprise", _attr("plan", "in", ["plus", "enterprise"]))
    add("age-over-40", _attr("age", "gt", 40))
    add("age-65-plus", _attr("age", "gte", 65))
    add("age-under-25", _attr("age", "lt", 25))
    add("age-30-or-less", _attr("age", "lte", 30))
    add("signed-up-2024", _attr("signed_up", "gt", "2024-01-01"))
    add("signed-up-early", _attr("signed_up", "lt", "2021-06-30T00:00:00Z"))
    add("nickname-dr", _attr("nickname", "starts_with", "Dr"))
    add("nickname-ann", _attr("nickname", "contains", "ann"))
    add("tag-beta", _attr("tags", "eq", "beta"))
    add("vip", _attr("vip", "exists"))
    add("never-churned", _attr("churned", "not_exists"))
    # identities (5)
    add("email-example-com", {"identity": "email", "op": "contains", "value": "@example.com"})
    add("customers-0000", {"identity": "customer_id", "op": "starts_with", "value": "c0000"})
    add("ios-devices", {"identity": "ios_advertising_id", "op": "exists"})
    add("no-email", {"identity": "email", "op": "not_exists"})
    add("customer-42", {"identity": "customerid", "op": "eq", "value": "c000000042"})
    # consent (4)
    add("gdpr-marketing-yes", {"consent": {"gdpr": "marketing", "consented": True}})
    add("gdpr-marketing-no", {"consent": {"gdpr": "Marketing", "consented": False}})
    add("ccpa-opted-out", {"consent": {"ccpa": True}})
    add("ccpa-not-opted-out", {"consent": {"ccpa": False}})
    # input and environment (4)
    add("seen-on-bench", {"input": INPUT})
    add("production", {"environment": "production"})
    add("development", {"environment": "development"})
    add(
        "bench-production-pro",
        {"all": [{"input": INPUT}, {"environment": "production"}, _attr("plan", "eq", "pro")]},
    )
    # nested (12)
    for window, countries in (
        ("1h", ["DE", "FR"]),
        ("6h", ["US", "GB"]),
        ("1d", ["BR", "ES", "IN"]),
        ("7d", ["JP", "US"]),
    ):
        add(
            f"cart-abandoners-{window}",
            {
                "all": [
                    _event("commerce_event", window, action="add_to_cart"),
                    {"not": _event("commerce_event", window, action="purchase")},
                    _attr("country", "in", countries),
                ]
            },
        )
    add(
        "engaged-pro",
        {
            "all": [
                {
                    "any": [
                        _event("custom_event", "7d", {"min": 3}, name="video_play"),
                        _event("custom_event", "30d", {"min": 2}, name="level_up"),
                    ]
                },
                _attr("plan", "in", ["pro", "enterprise"]),
            ]
        },
    )
    add(
        "lapsed",
        {"not": {"any": [_event("session_start", "30d"), _event("screen_view", "30d")]}},
    )
    add(
        "young-buyers",
        {"all": [_attr("age", "lt", 30), _event("commerce_event", "30d", action="purchase")]},
    )
    add(
        "eu-marketing",
        {
            "all": [
                _attr("country", "in", ["DE", "FR", "ES", "GB"]),
                {"consent": {"gdpr": "marketing"}},
                {"environment": "production"},
            ]
        },
    )
    add(
        "browsers-not-carting",
        {
            "all": [
                _event("commerce_event", "7d", {"min": 3}, action="view_detail"),
                _event("commerce_event", "7d", {"max": 0}, action="add_to_cart"),
            ]
        },
    )
    add(
        "free-sharers-or-plus-raters",
        {
            "any": [
                {"all": [_attr("plan", "eq", "free"), _event("custom_event", "30d", name="share")]},
                {
                    "all": [
                        _attr("plan", "eq", "plus"),
                        _event("custom_event", "30d", name="rate_app"),
                    ]
                },
            ]
        },
    )
    add(
        "deep-nesting",
        {
            "all": [
                {"any": [{"not": _attr("country", "eq", "US")}, _attr("age", "gte", 50)]},
                {
                    "any": [
                        {
                            "all": [
                                {"identity": "email", "op": "exists"},
                                {"not": _attr("vip", "exists")},
                            ]
                        },
                        _attr("tags", "eq", "beta"),
                    ]
                },
            ]
        },
    )
    add(
        "recent-buyers-no-refund",
        {
            "all": [
                {"input": INPUT},
                {
                    "any": [
                        _event("commerce_event", "1d", action="purchase"),
                        _event("commerce_event", "1d", action="checkout"),
                    ]
                },
                {"not": _event("commerce_event", "30d", action="refund")},
            ]
        },
    )
    # screen views and more windows (8)
    add("screen-checkout-1h", _event("screen_view", "1h", name="Checkout"))
    add("screen-product-1d-min3", _event("screen_view", "1d", {"min": 3}, name="Product"))
    add("screen-settings-min2", _event("screen_view", None, {"min": 2}, name="Settings"))
    add("screen-home-45s", _event("screen_view", "45s", name="Home"))
    add("share-45s", _event("custom_event", "45s", name="share"))
    add("session-15m", _event("session_start", "15m"))
    add("attribute-change-1d", _event("user_attribute_change", "1d"))
    add("carts-3-1d", _event("commerce_event", "1d", {"min": 3}, action="add_to_cart"))
    # references to other audiences (6)
    add(
        "ref-abandoners-pro",
        {"all": [{"audience": "cart-abandoners-1h"}, _attr("plan", "eq", "pro")]},
    )
    add(
        "ref-buyers-or-engaged",
        {"any": [{"audience": "commerce-purchase-7d"}, {"audience": "engaged-pro"}]},
    )
    add("ref-active", {"not": {"audience": "lapsed"}})
    add("ref-eu-marketing-40", {"all": [{"audience": "eu-marketing"}, _attr("age", "gte", 40)]})
    add(
        "ref-chain-de",
        {"all": [{"audience": "ref-buyers-or-engaged"}, _attr("country", "eq", "DE")]},
    )
    add("ref-drama-or-comedy", {"any": [{"audience": "video-drama"}, {"audience": "video-comedy"}]})
    names = [d["name"] for d in docs]
    assert len(docs) == 100 and len(set(names)) == 100 and PROBE in names, len(docs)
    return docs


def connected_audiences(docs: Sequence[dict[str, Any]]) -> list[str]:
    """The audiences connected to the partner in the latency run: the probes' and 9 more."""
    names = [str(d["name"]) for d in docs]
    return [PROBE, *[n for i, n in enumerate(names) if i % 11 == 5 and n != PROBE][:9]]


# -- users and batches --------------------------------------------------------------------


def customer_id(i: int) -> str:
    return f"c{i:09d}"


def _mix(i: int, salt: int) -> int:
    return (i * 2654435761 + salt * 40503) % 2**32


def user_attributes(i: int) -> dict[str, Any]:
    """User ``i``'s attributes (always the same: a batch's attributes are the user's own)."""
    attributes: dict[str, Any] = {
        "country": COUNTRIES[_mix(i, 1) % len(COUNTRIES)],
        "plan": PLANS[_mix(i, 8) % len(PLANS)],
        "age": 18 + _mix(i, 2) % 62,
        "signed_up": f"{2019 + _mix(i, 3) % 7}-{1 + _mix(i, 4) % 12:02d}-{1 + _mix(i, 5) % 28:02d}",
    }
    if i % 5 == 0:
        attributes["nickname"] = NICKNAMES[_mix(i, 6) % len(NICKNAMES)]
    if i % 11 == 0:
        attributes["tags"] = ["beta", "gold"] if i % 2 else ["gold"]
    if i % 50 == 0:
        attributes["vip"] = True
    if i % 7 == 0:
        attributes["churned"] = i % 2 == 0
    return attributes


def _events(rng: random.Random, n: int, first_ms: int, spacing_ms: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    ts = first_ms
    for _ in range(n):
        data: dict[str, Any] = {"timestamp_unixtime_ms": ts}
        roll = rng.random()
        if roll < 0.28:
            kind = "screen_view"
            data["screen_name"] = rng.choice(SCREENS)
        elif roll < 0.63:
            kind = "custom_event"
            name, event_type = rng.choice(CUSTOM)
            data["event_name"] = name
            data["custom_event_type"] = event_type
            data["custom_attributes"] = {
                "genre": rng.choice(GENRES),
                "minutes": str(rng.randint(1, 120)),
                "level": rng.randint(1, 50),
            }
        elif roll < 0.85:
            kind = "commerce_event"
            data["product_action"] = _product_action(rng, rng.choices(ACTIONS, ACTION_WEIGHTS)[0])
            data["currency_code"] = "USD"
        elif roll < 0.95:
            kind = "session_start"
        else:
            kind = "user_attribute_change"
            data["user_attribute_name"] = "points"
            data["new"] = str(rng.randrange(5000))
        events.append({"event_type": kind, "data": data})
        ts += rng.randint(1, spacing_ms)
    return events


def _product_action(rng: random.Random, action: str) -> dict[str, Any]:
    price = round(rng.uniform(5, 400), 2)
    return {
        "action": action,
        "total_amount": price,
        "products": [
            {"id": f"sku-{rng.randrange(500)}", "name": "Item", "price": price, "quantity": 1}
        ],
    }


def _consent(rng: random.Random, ts: int) -> dict[str, Any]:
    return {
        "gdpr": {"marketing": {"consented": rng.random() < 0.6, "timestamp_unixtime_ms": ts}},
        "ccpa": {
            "data_sale_opt_out": {"consented": rng.random() < 0.2, "timestamp_unixtime_ms": ts}
        },
    }


def first_batch(rng: random.Random, i: int, now_ms: int) -> dict[str, Any]:
    """User ``i``'s first batch (the preload): identities, attributes, maybe consent, and
    1-2 events of the last month (none of the last hour)."""
    identities = {"customer_id": customer_id(i)}
    if _mix(i, 7) % 10 < 7:
        identities["email"] = f"u{i}@example.{'org' if i % 3 == 0 else 'com'}"
    first = now_ms - rng.randint(3_600_000, 35 * DAY_MS)
    batch: dict[str, Any] = {
        "environment": "development" if i % 10 == 9 else "production",
        "schema_version": 2,
        "timestamp_unixtime_ms": first,
        "user_identities": identities,
        "user_attributes": user_attributes(i),
        "events": _events(rng, rng.randint(1, 2), first, 600_000),
    }
    if i % 2 == 0:
        batch["device_info"] = {
            "platform": "iOS",
            "ios_advertising_id": f"{i:08x}-b3c4-4d5e-8f60-000000000000",
        }
    if rng.random() < 0.3:
        batch["consent_state"] = _consent(rng, first)
    return batch


def stream_batch(rng: random.Random, i: int, now_ms: int, probe: bool = False) -> dict[str, Any]:
    """A later batch of user ``i``: 2-6 events of the last minute, half the time with its
    user attributes; a ``probe`` batch starts with a purchase."""
    n = rng.randint(2, 6)
    first = now_ms - rng.randint(5_000, 60_000)
    events = _events(rng, n - 1 if probe else n, first, 5_000)
    if probe:
        purchase = {
            "event_type": "commerce_event",
            "data": {
                "timestamp_unixtime_ms": first,
                "product_action": _product_action(rng, "purchase"),
                "currency_code": "USD",
            },
        }
        events.insert(0, purchase)
    batch: dict[str, Any] = {
        "environment": "development" if i % 10 == 9 else "production",
        "schema_version": 2,
        "timestamp_unixtime_ms": now_ms,
        "user_identities": {"customer_id": customer_id(i)},
        "events": events,
    }
    if rng.random() < 0.5:
        batch["user_attributes"] = user_attributes(i)
    if rng.random() < 0.05:
        batch["consent_state"] = _consent(rng, now_ms)
    return batch


def stream(seed: int, events: int, users: int, now_ms: int) -> Iterator[dict[str, Any]]:
    """Batches of random users among the first ``users`` until ``events`` events; the same
    batches for the same seed, their times relative to ``now_ms``."""
    rng = random.Random(seed)
    total = 0
    while total < events:
        batch = stream_batch(rng, rng.randrange(users), now_ms)
        total += len(batch["events"])
        yield batch


# -- data dirs and the pipeline -------------------------------------------------------------


def prepare(data_dir: Path, durability: str, docs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """A fresh data dir with the input (and ``docs``, created and built); its credentials."""
    where = ("--data-dir", str(data_dir))
    creds: dict[str, str] = json.loads(
        patchbay_cli(
            "inputs", "add", INPUT, "--type", "server", "--rate-limit", "0", "--json", *where
        )
    )
    if docs:
        backend = open_store(data_dir, durability)
        try:
            service = AudienceService(backend, SystemClock())
            for doc in docs:
                service.create(doc)
            # nothing to build over: every audience is live before the first user arrives
            engine = SegmentEngine(
                backend.audiences, backend.state, backend.log, backend.inputs, SystemClock()
            )
            engine.refresh()
            steps = 0
            while engine.building() and steps < 10_000:
                engine.build_step()
                steps += 1
            if engine.building():
                raise SystemExit("the audiences did not become live on an empty data dir")
        finally:
            backend.close()
    return creds


def append(
    targets: Sequence[tuple[Backend, str]], batches: Iterator[dict[str, Any]]
) -> tuple[int, int]:
    """Append ``batches`` to the log of each (backend, input id); (batches, events)."""
    encode = msgspec.json.Encoder().encode
    count = events = 0
    pending: list[bytes] = []
    rng = random.Random()

    def flush() -> None:
        received = int(time.time() * 1000)
        for backend, input_id in targets:
            backend.log.append(
                [
                    NewBatch(
                        batch_id=f"{rng.getrandbits(128):032x}",
                        input_id=input_id,
                        received_at_ms=received,
                        channel="server_to_server",
                        body=body,
                    )
                    for body in pending
                ]
            )
        pending.clear()

    for batch in batches:
        count += 1
        events += len(batch["events"])
        pending.append(encode(batch))
        if len(pending) == APPEND_CHUNK:
            flush()
    if pending:
        flush()
    return count, events


@dataclass
class Run:
    """One pipeline run over what the log holds beyond every stage's checkpoint."""

    name: str
    batches: int
    events: int
    seconds: float
    cpu_s: float
    joins: int = 0
    leaves: int = 0
    threads: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.seconds

    @property
    def cpu_per_k_events(self) -> float:
        return self.cpu_s / self.events * 1000


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each of this process's threads, by native id, with its name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[str, float]] = {}
    for stat_path in Path("/proc/self/task").glob("*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tid = int(stat_path.parent.name)
        name = names.get(tid, "other")
        name = name.rsplit("_", 1)[0] if name.startswith("patchbay-resolve-commit") else name
        found[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return found


def counter_total(metrics: Metrics, name: str) -> int:
    return int(
        sum(s.value for m in metrics.registry.collect() for s in m.samples if s.name == name)
    )


class ProfiledSegmentStage(SegmentStage):
    """The segment stage with its work (``handle`` and ``tick``) under cProfile."""

    profiler: cProfile.Profile

    def handle(self, batches: Sequence[ResolvedBatch]) -> None:
        self.profiler.runcall(super().handle, batches)

    def tick(self) -> None:
        self.profiler.runcall(super().tick)


#: What the profile summary shows: (label, file, function), inclusive time of each (a
#: function given as ``a|b`` is whichever of the names the code has).
PROFILE_PARTS = [
    ("handle: a chunk of resolved batches", "segment/stage.py", "handle"),
    ("  apply", "segment/engine.py", "apply"),
    ("    read the users' states (SQLite + msgpack)", "sqlite/audiences.py", "users"),
    ("    _count: match events, add to tallies", "segment/engine.py", "_count"),
    ("      matching an event's details", "segment/evaluate.py", "event_matches|rest_matches"),
    ("    _evaluate_all", "segment/engine.py", "_evaluate_all"),
    ("      read profiles not in the batch", "sqlite/state.py", "profiles"),
    ("      what changed: profile facts", "segment/engine.py", "_profile_changes"),
    ("      what changed: condition answers", "segment/engine.py", "_condition_changes"),
    ("      catalog.affected", "segment/catalog.py", "affected"),
    ("      holds (the criteria)", "segment/evaluate.py", "holds"),
    ("      _expire_tallies", "segment/engine.py", "_expire_tallies"),
    ("      _next_check", "segment/engine.py", "_next_check"),
    ("    commit (SQLite + msgpack)", "sqlite/audiences.py", "commit"),
    ("tick: what time drives", "segment/stage.py", "tick"),
    ("  expire: users whose windows changed", "segment/engine.py", "expire"),
    ("  flush: pending changes to the outbox", "segment/stage.py", "flush"),
    ("  _publish: metrics (sizes every 5 s)", "segment/stage.py", "_publish"),
]


def profile_shares(stats: pstats.Stats, batches: int, events: int) -> str:
    """Inclusive time of :data:`PROFILE_PARTS`, as shares of handle + tick, and how many
    audiences each user evaluation evaluated, and conditions each event was matched with."""
    found: dict[tuple[str, str], float] = {}
    calls: dict[tuple[str, str], int] = {}
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), values in raw.items():
        for _label, suffix, name in [*PROFILE_PARTS, ("", "segment/engine.py", "_evaluate")]:
            if function in name.split("|") and filename.endswith(suffix):
                found[(suffix, name)] = found.get((suffix, name), 0.0) + float(values[3])
                calls[(suffix, name)] = calls.get((suffix, name), 0) + int(values[0])
    total = found.get(("segment/stage.py", "handle"), 0.0) + found.get(
        ("segment/stage.py", "tick"), 0.0
    )
    lines = [f"  inclusive time, share of handle + tick ({total:.1f}s):"]
    for label, suffix, name in PROFILE_PARTS:
        seconds = found.get((suffix, name), 0.0)
        lines.append(f"    {seconds / total if total else 0:6.1%} {seconds:7.2f}s  {label}")
    evaluations = calls.get(("segment/engine.py", "_evaluate"), 0)
    audiences = calls.get(("segment/evaluate.py", "holds"), 0)
    matches = calls.get(("segment/evaluate.py", "event_matches|rest_matches"), 0)
    lines.append(
        f"  {evaluations:,} user evaluations for {batches:,} batches (expiries included),"
        f" {audiences / max(1, evaluations):.1f} audiences evaluated each;"
        f" {matches / max(1, events):.1f} event details matched per event"
    )
    return "\n".join(lines)


def wait_leading(child: SegmentProcess, metrics: Metrics, timeout_s: float = 60.0) -> float:
    """Wait until the segment process leads (its stage started: it then waits for what
    resolve commits, and the pipeline has not started) and has ticked once; the CPU it used
    until then (its start: the interpreter, imports, the backend, the audiences compiled),
    which a server pays once, not per batch."""
    deadline = time.monotonic() + timeout_s
    while counter_total(metrics, "patchbay_segment_leader") != 1:
        if time.monotonic() > deadline or child.restarts:
            raise SystemExit("the segment process did not start (see its log)")
        time.sleep(0.05)
    time.sleep(2 * POLL_S + 0.2)  # (its first tick: the audiences compiled)
    assert child.pid is not None
    return process_cpu(child.pid)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_pipeline(
    backend: Backend,
    name: str,
    batches: int,
    events: int,
    settings: Settings | None = None,
    profiler: cProfile.Profile | None = None,
    progress: Callable[[str], None] | None = None,
) -> Run:
    """The real pipeline as ``create_app`` assembles it until every stage is at the end of
    the log; timed from its start. With ``settings`` (the backend's), the segment stage
    runs in a child process over them, as in ``patchbay serve``; without, on a thread (with
    ``profiler``: under cProfile)."""
    clock = SystemClock()
    metrics = Metrics()
    service = ResolveService(backend.state, Resolver(IdentityStrategy()), clock)

    def notify(outputs: set[str]) -> None:
        pass

    stages: list[Stage] = [
        ActivateStage(backend.outputs, backend.outbox, backend.modules, clock, notify)
    ]
    child: SegmentProcess | None = None
    segment: SegmentStage | None = None
    if settings is not None and profiler is None:
        child = SegmentProcess(settings, metrics.registry)
    else:
        segment_metrics = SegmentMetrics(metrics.registry)
        if profiler is None:
            segment = SegmentStage(backend, clock, notify, metrics=segment_metrics)
        else:
            segment = ProfiledSegmentStage(backend, clock, notify, metrics=segment_metrics)
            segment.profiler = profiler
        stages.append(segment)
    end = backend.log.end(0)
    pipeline = Pipeline(backend, service, stages, elsewhere=[SegmentProcess.stage] if child else [])

    def positions() -> list[tuple[str, LogPosition | None]]:
        mine = [(feed.name, feed.checkpoint.get(0)) for feed in pipeline.feeds]
        if child is not None:
            mine.append(("segment", backend.positions.get("segment").get(0)))
        return mine

    child_cpu = 0.0
    if child is not None:  # started before the clock, as in a running server
        child.start()
        try:
            child_cpu = -wait_leading(child, metrics)
        except BaseException:
            child.stop()
            raise
    before = thread_cpu()
    cpu0, t0 = time.process_time(), time.perf_counter()
    shown = t0
    pipeline.start()
    try:
        while True:
            at = positions()
            if all(p is not None and end is not None and not p < end for _, p in at):
                break
            errors = [pipeline.error, *(f.error for f in pipeline.feeds)]
            if any(e is not None for e in errors):
                raise SystemExit(f"{name}: the pipeline failed: {errors}")
            if child is not None and child.restarts:
                raise SystemExit(f"{name}: the segment process exited (see its log)")
            if progress and time.perf_counter() - shown > 20:
                shown = time.perf_counter()
                resolved = backend.state.checkpoint().get(0)
                progress(
                    f"  {shown - t0:5.0f}s: resolve {resolved.offset if resolved else 0:,},"
                    + ", ".join(f" {n} {p.offset if p else 0:,}" for n, p in at)
                    + f" of {end.offset if end else 0:,}"
                )
            time.sleep(0.005)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        after = thread_cpu()
        if child is not None and child.pid is not None:
            child_cpu += process_cpu(child.pid)  # (what it used since it was ready)
    finally:
        pipeline.stop()
        if child is not None:
            child.stop()
    threads: dict[str, float] = {}
    for tid, (thread, cpu) in after.items():
        if thread != "patchbay-segment-process":  # (the thread reading the child's pipe)
            thread = thread if thread.startswith("patchbay") else "other"
            threads[thread] = threads.get(thread, 0.0) + cpu - before.get(tid, ("", 0.0))[1]
    if child is not None:
        threads["patchbay-segment (child process)"] = child_cpu
    joins = counter_total(metrics, "patchbay_audience_joins_total")
    leaves = counter_total(metrics, "patchbay_audience_leaves_total")
    if segment is not None:
        joins += sum(segment.engine.joins.values())
        leaves += sum(segment.engine.leaves.values())
    return Run(name, batches, events, seconds, cpu_s + child_cpu, joins, leaves, threads)


# -- latency ------------------------------------------------------------------------------


@dataclass
class Latency:
    rate: float  # offered events/s
    accepted_events_per_s: float
    probes: int  # acknowledged in the measured window
    probes_total: int  # acknowledged over the whole run (warm-up included)
    missing: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    changes: int  # (user, audience) changes the partner received over the whole run
    messages: int  # membership change requests it received over the whole run
    cores: dict[str, float | None]
    segment_behind: int  # batches accepted but not yet counted when the load stopped
    resolve_behind: int  # of those, batches resolve had not resolved yet
    drain_s: float  # from then until the partner had every probe
    late_requests: int
    statuses: dict[str, int]


def latency_pool(
    seed: int, events: int, per_request: int, users: int, probe_from: int, probe_to: int
) -> tuple[list[Template], list[list[int | None]]]:
    """Bulk bodies of ``per_request`` batches for about ``events`` events: one batch in
    :data:`PROBE_EVERY` a probe (the next unused user from ``probe_from``), the others
    batches of random users below ``users``. Also the probe user of each batch."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    pool: list[Template] = []
    probes: list[list[int | None]] = []
    total = 0
    next_probe = probe_from
    n = 0
    while total < events:
        items: list[dict[str, Any]] = []
        who: list[int | None] = []
        for _ in range(per_request):
            probe = n % PROBE_EVERY == PROBE_EVERY // 2 and next_probe < probe_to
            n += 1
            user = next_probe if probe else rng.randrange(users)
            batch = stream_batch(rng, user, now_ms, probe=probe)
            batch["source_request_id"] = SRID_PLACEHOLDER.decode()
            items.append(batch)
            who.append(user if probe else None)
            next_probe += probe
        template = template_of(items)
        total += template.total_events
        pool.append(template)
        probes.append(who)
    return pool, probes


def stage_thread_counters(pid: int) -> dict[str, Callable[[], float | None]]:
    """Counters of the busiest thread of process ``pid`` (the segment process's stage
    thread): seconds on a CPU, and seconds runnable but waiting for one (from
    ``/proc/PID/task/TID/schedstat``; the rest of the window it was blocked). The thread
    is picked by its CPU so far, at the first read."""
    chosen: list[int] = []

    def schedstat(tid: int) -> tuple[float, float] | None:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            return None
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9

    def thread() -> int | None:
        if not chosen:
            try:
                tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
            except OSError:
                return None
            ran = {t: found[0] for t in tids if (found := schedstat(t)) is not None}
            if not ran:
                return None
            chosen.append(max(ran, key=ran.__getitem__))
        return chosen[0]

    def read(index: int) -> float | None:
        tid = thread()
        found = schedstat(tid) if tid is not None else None
        return None if found is None else found[index]

    return {STAGE_ON_CPU: lambda: read(0), STAGE_WAITING: lambda: read(1)}


def probe_mpids(backend: Backend, users: Sequence[int]) -> dict[str, int]:
    """The MPID (as the partner gets it, a string) of each probe user."""
    wanted = {Identity("customer_id", customer_id(i)): i for i in users}
    found = backend.state.users_with_each(set(wanted))
    return {str(mpids[0]): wanted[identity] for identity, mpids in found.items() if mpids}


@dataclass
class Phase:
    """One rate of the latency run: its client's result, the probes and the CPU use."""

    rate: float
    pool: list[Template]
    probe_of: list[list[int | None]]
    mpid_of: dict[str, int]
    result: PhaseResult
    cores: dict[str, float | None]
    acked: dict[int, float]
    behind: int
    resolve_behind: int
    drain_s: float


def run_latency(
    args: argparse.Namespace,
    workdir: Path,
    data_dir: Path,
    creds: dict[str, str],
    docs: Sequence[dict[str, Any]],
    errors: list[str],
) -> list[Latency]:
    """Serve B with the partner, then one phase per rate of ``--rate``; see the module
    documentation."""
    base = workdir / "latency"
    base.mkdir()
    users = int(args.profiles * (1 - PROBE_SHARE))
    partner_port, server_port = free_port(), free_port()
    partner_out = base / "partner.json"
    partner = start_partner(partner_port, partner_out, base / "partner.log", audiences=True)
    server = None
    connected = connected_audiences(docs)
    phases: list[Phase] = []
    spy = base / "serve.pyspy.txt" if args.profile else None
    try:
        where = ("--data-dir", str(data_dir))
        url = f"http://127.0.0.1:{partner_port}/firehose"
        patchbay_cli("modules", "register", MODULE, "--url", url, "--token", TOKEN, *where)
        patchbay_cli(
            "outputs",
            "add",
            OUTPUT,
            "--module",
            MODULE,
            "--setting",
            f"{OUTPUT_SETTING}={OUTPUT}",
            *where,
        )
        backend = open_store(data_dir, args.durability)
        try:
            service = AudienceService(backend, SystemClock())
            for name in connected:
                service.connect(name, OUTPUT)
            probe_audience = backend.audiences.get_audience(PROBE)
            assert probe_audience is not None
            probe_id = probe_audience.id
        finally:
            backend.close()
        server = start_server(data_dir, server_port, args.durability, base / "serve.log")
        deadline = time.monotonic() + 30
        while partner_stats(partner_port).get("subscriptions", 0) < len(connected):
            if time.monotonic() > deadline:
                raise SystemExit("latency: the partner did not get every subscription in 30 s")
            time.sleep(0.05)
        print(f"latency: {len(connected)} audiences connected and subscribed", flush=True)
        auth = "Basic " + b64encode(f"{creds['key']}:{creds['secret']}".encode()).decode()
        next_probe = users
        accepted = 0
        for number, rate in enumerate(args.rates):
            # each phase's bodies are made just before it (their events are of the last minute)
            events = int(rate * (args.warmup + args.duration) * 1.05)
            pool, probe_of = latency_pool(
                args.seed + 1 + number,
                events,
                args.batches_per_request,
                users,
                next_probe,
                args.profiles,
            )
            probe_users = [u for who in probe_of for u in who if u is not None]
            next_probe = max(probe_users, default=next_probe - 1) + 1
            backend = open_store(data_dir, args.durability)  # as `patchbay audiences` does
            try:
                mpid_of = probe_mpids(backend, probe_users)
            finally:
                backend.close()
            if len(mpid_of) != len(probe_users):
                errors.append(
                    f"latency: {len(probe_users) - len(mpid_of)} probe users have no profile"
                )
            mean_events = statistics.mean(t.total_events for t in pool) / args.batches_per_request
            print(
                f"latency: {args.warmup:g}s warm-up + {args.duration:g}s at {rate:,.0f} events/s"
                f" ({args.batches_per_request} batches of {mean_events:.1f} events per request,"
                f" {len(pool):,} bodies, {len(probe_users):,} probes) ...",
                flush=True,
            )
            cfg = PhaseConfig(
                url=f"http://127.0.0.1:{server_port}",
                auth=auth,
                partner_port=partner_port,
                pool=pool,
                concurrency=1,
                warmup_s=args.warmup,
                duration_s=args.duration,
                run=random.Random(args.seed).getrandbits(32) ^ os.getpid(),
                phase=number,
                outputs=1,
                max_backlog=0,
                rate_batches=rate / mean_events,
            )
            ctx = Context(args, pool, workdir, errors)
            pids = {"server": server.pid, "partner": partner.pid}
            segment = child_pid(server.pid, "pb-segment")
            if segment is not None:  # its CPU is also in the server's (its parent's)
                pids["segment"] = segment
            counters: dict[str, Callable[[], float | None]] = {
                SEGMENT_RATE: lambda: server_metric(server_port, SEGMENT_BATCHES),
            }
            if segment is not None:
                counters.update(stage_thread_counters(segment))
            result, cores = drive(
                ctx, cfg, pids, spy if number == 0 else None, ("segment",), counters
            )
            accepted += result.accepted_batches
            behind = accepted - int(server_metric(server_port, SEGMENT_BATCHES))
            resolve_behind = int(server_metric(server_port, RESOLVE_LAG))
            acked = acked_probes(result, probe_of)
            wanted = {m for m, user in mpid_of.items() if user in acked}
            began = time.monotonic()
            while time.monotonic() - began < args.drain_timeout and server.poll() is None:
                if wanted <= partner_added(partner_port, probe_id):
                    break
                time.sleep(0.25)
            drained_s = time.monotonic() - began
            print(
                f"latency: {result.accepted_batches:,} batches accepted, {len(acked):,} probes;"
                f" the segment stage was {behind:,} batches behind when the load stopped"
                f" (resolve {resolve_behind:,});"
                f" drained in {drained_s:.1f}s",
                flush=True,
            )
            phases.append(
                Phase(
                    rate,
                    pool,
                    probe_of,
                    mpid_of,
                    result,
                    cores,
                    acked,
                    behind,
                    resolve_behind,
                    drained_s,
                )
            )
        final = partner_stats(partner_port)
        code = stop_process(server)
        server = None
        if code not in (0, -signal.SIGTERM):
            errors.append(f"latency: patchbay serve exited with {code}")
    finally:
        if server is not None:
            stop_process(server)
        code = stop_process(partner)
    if code not in (0, -signal.SIGTERM):
        errors.append(f"latency: the partner exited with {code}")
    if spy is not None and spy.exists():
        print(f"py-spy profile of patchbay serve at {args.rates[0]:,.0f} events/s:")
        print(summarize_profile(spy))
        shutil.copy(spy, Path(args.profile) / "serve-audiences.pyspy.txt")
    changes: list[list[Any]] = msgspec.json.decode(partner_out.read_bytes()).get("changes", [])
    received: dict[str, float] = {}
    for mpid, audience_id, action, at in changes:
        if audience_id == probe_id and action == "add" and mpid is not None:
            received.setdefault(mpid, at)
    found = []
    for phase in phases:
        found.append(analyse_phase(phase, received, errors))
    for latency in found:
        latency.changes = len(changes)
        latency.messages = int(final.get("audience_messages", 0))
    return found


def analyse_phase(phase: Phase, received: dict[str, float], errors: list[str]) -> Latency:
    """The latencies of a phase's probes (``received``: the first add of each MPID to the
    probes' audience, by MPID)."""
    result = phase.result
    mpid_by_user = {user: mpid for mpid, user in phase.mpid_of.items()}
    arrived = {
        user: received[mpid_by_user[user]]
        for user in phase.acked
        if user in mpid_by_user and mpid_by_user[user] in received
    }
    latencies = [
        (arrived[user] - at) * 1000
        for user, at in phase.acked.items()
        if user in arrived and result.window_from <= at < result.window_to
    ]
    missing = [u for u in phase.acked if u not in arrived]
    if missing:
        errors.append(
            f"latency at {phase.rate:,.0f} events/s: {len(missing):,} of {len(phase.acked):,}"
            f" probes never reached the partner within --drain-timeout"
            f" (first users: {missing[:5]})"
        )
    for e in result.errors[:10]:
        errors.append(f"latency client: {e}")
    window = result.window_to - result.window_from
    accepted_events = sum(
        sum(e for k, e in enumerate(phase.pool[p].events) if k not in set(r[4]))
        for r, p in zip(result.requests, result.pool_indexes, strict=True)
        if result.window_from <= r[3] < result.window_to
    )
    return Latency(
        rate=phase.rate,
        accepted_events_per_s=accepted_events / window,
        probes=len(latencies),
        probes_total=len(phase.acked),
        missing=len(missing),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=float("nan")),
        changes=0,
        messages=0,
        cores=phase.cores,
        segment_behind=phase.behind,
        resolve_behind=phase.resolve_behind,
        drain_s=phase.drain_s,
        late_requests=result.late_requests,
        statuses=result.statuses,
    )


def acked_probes(result: PhaseResult, probe_of: list[list[int | None]]) -> dict[int, float]:
    """The 202 time of each probe user's batch (the first, should the pool wrap)."""
    acked: dict[int, float] = {}
    for (_worker, _counter, batches, at, rejected), index in zip(
        result.requests, result.pool_indexes, strict=True
    ):
        skip = set(rejected)
        for k in range(batches):
            user = probe_of[index][k]
            if user is not None and k not in skip:
                acked[user] = min(at, acked.get(user, at))
    return acked


# -- output -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profiles", type=int, default=1_000_000, help="users preloaded (1,000,000)"
    )
    parser.add_argument(
        "--events", type=int, default=200_000, help="events of the stream (200,000)"
    )
    parser.add_argument(
        "--turns", type=int, default=2, help="parts of the stream, A and B taking turns (2)"
    )
    parser.add_argument(
        "--rate",
        default=str(GOAL_RATE),
        help="latency run: events/s offered, or several, comma-separated, run in turn (10000)",
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="latency run: measured seconds (20)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="latency run: seconds before (2)")
    parser.add_argument("--batches-per-request", type=int, default=10, help="latency run (10)")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="latency run (120)")
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    parser.add_argument(
        "--no-segment-process",
        dest="segment_process",
        action="store_false",
        help="run the segment stage on a thread of the pipeline's process (serve's"
        " --no-segment-process) instead of a child process",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="50,000 profiles, 50,000 events, 5 s")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency run")
    parser.add_argument(
        "--profile", metavar="DIR", help="cProfile the segment stage (an extra run), py-spy serve"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dirs (path printed)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    if args.quick:
        args.profiles, args.events, args.duration = 50_000, 50_000, 5.0
    try:
        args.rates = [float(r) for r in str(args.rate).split(",") if r.strip()]
    except ValueError:
        raise SystemExit("--rate: events/s, or several separated by commas") from None
    if not args.rates or min(args.rates) <= 0:
        raise SystemExit("--rate: positive events/s")
    if min(args.profiles, args.events, args.turns, args.batches_per_request) < 1:
        raise SystemExit("--profiles, --events, --turns and --batches-per-request must be positive")
    return args


def fmt_table(rows: Sequence[Run], floor: Run | None) -> str:
    head = (
        f"{'':38} {'batches':>9} {'events/s':>9} {'batches/s':>9} {'seconds':>8}"
        f" {'CPU s/1k ev':>11} {'/floor':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r.events_per_s / floor.events_per_s:6.2f}" if floor else ""
        lines.append(
            f"{r.name:38} {r.batches:>9,} {r.events_per_s:>9,.0f} {r.batches_per_s:>9,.0f}"
            f" {r.seconds:>8.1f} {r.cpu_per_k_events:>11.3f} {ratio:>6}"
        )
    return "\n".join(lines)


def fmt_latencies(latencies: Sequence[Latency]) -> str:
    head = (
        f"{'latency: 202 -> partner':38} {'accepted ev/s':>13} {'probes':>7} {'p50 ms':>9}"
        f" {'p99 ms':>9} {'max ms':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in latencies:
        lines.append(
            f"{f'offered {r.rate:,.0f} events/s':38} {r.accepted_events_per_s:>13,.0f}"
            f" {r.probes:>7,} {r.p50_ms:>9,.0f} {r.p99_ms:>9,.0f} {r.max_ms:>9,.0f}"
        )
    return "\n".join(lines)


def combine(name: str, runs: Sequence[Run]) -> Run:
    threads: dict[str, float] = {}
    for r in runs:
        for t, cpu in r.threads.items():
            threads[t] = threads.get(t, 0.0) + cpu
    return Run(
        name,
        sum(r.batches for r in runs),
        sum(r.events for r in runs),
        sum(r.seconds for r in runs),
        sum(r.cpu_s for r in runs),
        sum(r.joins for r in runs),
        sum(r.leaves for r in runs),
        threads,
    )


def fmt_threads(run: Run) -> str:
    total = run.cpu_s
    named = {k: v for k, v in run.threads.items() if k.startswith("patchbay")}
    parts = [
        f"{k.removeprefix('patchbay-')} {v:.1f}s"
        for k, v in sorted(named.items(), key=lambda kv: -kv[1])
    ]
    parts.append(f"other {max(0.0, total - sum(named.values())):.1f}s")
    return (
        f"  {run.name}: CPU {total:.1f}s in {run.seconds:.1f}s ({total / run.seconds:.2f} cores): "
        + ", ".join(parts)
    )


def main() -> int:
    args = parse_args()
    configure_logging("warning")  # as the other benchmarks' servers run
    docs = audience_documents()
    workdir = Path(tempfile.mkdtemp(prefix="patchbay-bench-audiences-"))
    dir_a, dir_b = workdir / "none", workdir / "audiences"
    errors: list[str] = []
    started = time.perf_counter()
    print(
        f"audiences: {len(docs)}; profiles {args.profiles:,}; stream {args.events:,} events in"
        f" {args.turns} turns; durability {args.durability}; work dir {workdir}; the segment"
        f" stage {'compiled' if runs_compiled() else 'pure Python (not build/compiled)'}",
        flush=True,
    )
    try:
        creds_a = prepare(dir_a, args.durability, [])
        creds_b = prepare(dir_b, args.durability, docs)
        a, b = open_store(dir_a, args.durability), open_store(dir_b, args.durability)
        try:
            # -- preload
            t = time.perf_counter()
            rng = random.Random(args.seed)
            now_ms = int(time.time() * 1000)
            users = (first_batch(rng, i, now_ms) for i in range(args.profiles))
            a_log_id, b_log_id = creds_a["id"], creds_b["id"]
            _, preload_events = append([(a, a_log_id), (b, b_log_id)], users)
            os.sync()
            print(
                f"preload: {args.profiles:,} first batches appended to both logs in"
                f" {time.perf_counter() - t:.1f}s; resolving ...",
                flush=True,
            )
            preloads: list[Run] = []
            settings = {
                label: store_settings(data_dir, args.durability) if args.segment_process else None
                for label, data_dir in (("A", dir_a), ("B", dir_b))
            }
            for backend, label in ((a, "A"), (b, "B")):
                run = run_pipeline(
                    backend,
                    f"preload {args.profiles:,} users, "
                    + ("no audiences" if label == "A" else f"{len(docs)} audiences"),
                    args.profiles,
                    preload_events,
                    settings[label],
                    progress=lambda line: print(line, flush=True),
                )
                preloads.append(run)
                print(
                    f"  {run.name}: {run.seconds:.1f}s ({run.batches_per_s:,.0f} users/s)",
                    flush=True,
                )
            for backend in (a, b):
                recover_dedup(backend.log, backend.dedup)  # what serve does at start, done now

            # -- throughput, taking turns
            stream_users = int(args.profiles * (1 - PROBE_SHARE))
            part = -(-args.events // args.turns)
            runs_a: list[Run] = []
            runs_b: list[Run] = []
            print(
                f"stream: {args.events:,} events over {stream_users:,} users,"
                f" {args.turns} turns ...",
                flush=True,
            )
            for turn in range(args.turns):
                order = [(a, a_log_id, "A", runs_a), (b, b_log_id, "B", runs_b)]
                for backend, input_id, label, runs in order if turn % 2 == 0 else order[::-1]:
                    now_ms = int(time.time() * 1000)
                    count, n_events = append(
                        [(backend, input_id)],
                        stream(args.seed * 1000 + turn, part, stream_users, now_ms),
                    )
                    run = run_pipeline(
                        backend, f"{label} turn {turn + 1}", count, n_events, settings[label]
                    )
                    runs.append(run)
                    print(
                        f"  turn {turn + 1} {label}: {count:,} batches, {n_events:,} events in"
                        f" {run.seconds:.2f}s ({run.events_per_s:,.0f} events/s), joins"
                        f" {run.joins:,}, leaves {run.leaves:,}",
                        flush=True,
                    )
            floor = combine("stream, no audiences (floor)", runs_a)
            with_audiences = combine(f"stream, {len(docs)} audiences", runs_b)

            profile_report = None
            if args.profile:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                print(
                    "profile: the stream once more on B, the segment stage under cProfile ...",
                    flush=True,
                )
                now_ms = int(time.time() * 1000)
                count, n_events = append(
                    [(b, b_log_id)], stream(args.seed * 1000 + 99, part, stream_users, now_ms)
                )
                profiler = cProfile.Profile()
                profiled = run_pipeline(b, "B profiled", count, n_events, profiler=profiler)
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out)
                stats.dump_stats(str(Path(args.profile) / "segment.pstats"))
                stats.sort_stats("tottime").print_stats(25)
                profile_report = (
                    f"cProfile of the segment stage (handle + tick), {count:,} batches in"
                    f" {profiled.seconds:.1f}s under the profiler"
                    f" ({Path(args.profile) / 'segment.pstats'}):\n"
                    f"{profile_shares(stats, count, n_events)}\n{out.getvalue()}"
                )
        finally:
            a.close()
            b.close()

        latencies: list[Latency] = []
        if not args.no_latency:
            latencies = run_latency(args, workdir, dir_b, creds_b, docs, errors)
    finally:
        if args.keep:
            print(f"data dirs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(fmt_table([*preloads], preloads[0]))
    print()
    print(fmt_table([floor, with_audiences], floor))
    print()
    seg_extra = (preloads[1].seconds - preloads[0].seconds) / args.profiles * 1e6
    seg_cpu = (preloads[1].cpu_s - preloads[0].cpu_s) / args.profiles * 1e6
    print(
        f"preload: the segment stage with {len(docs)} audiences adds {seg_extra:,.0f} µs"
        f" ({seg_cpu:,.0f} µs of CPU) per first-seen user; {preloads[1].joins:,} joins"
    )
    print(
        f"stream: {with_audiences.joins:,} joins and {with_audiences.leaves:,} leaves"
        f" ({with_audiences.joins / with_audiences.batches:.2f} joins per batch)"
    )
    print("CPU by thread (seconds; 'other': the benchmark's own thread and SQLite's):")
    for run in (*preloads, floor, with_audiences):
        print(fmt_threads(run))
    if latencies:
        print()
        print(fmt_latencies(latencies))
        print()
        print(
            f"latency: the partner got {latencies[0].changes:,} membership changes in"
            f" {latencies[0].messages:,} requests over the whole run"
        )
    for latency in latencies:
        cores = ", ".join(
            f"{k} {v:.2f}"
            for k, v in latency.cores.items()
            if v is not None and k not in ("machine", SEGMENT_RATE)
        )
        stage, counted = latency.cores.get("segment"), latency.cores.get(SEGMENT_RATE)
        if stage is not None and counted:
            cores += (
                f"; the segment process (in the server's figure) counted {counted:,.0f}"
                f" batches/s, {stage / counted * 1e6:,.0f} µs of CPU per batch"
            )
        print(
            f"latency @ {latency.rate:,.0f}: {latency.probes_total:,} probes in all, missing"
            f" {latency.missing}; the segment stage was {latency.segment_behind:,} batches"
            f" behind when the load stopped (resolve {latency.resolve_behind:,}), the probes"
            f" drained in {latency.drain_s:.1f}s; late requests {latency.late_requests};"
            f" HTTP {latency.statuses}; CPU in the measured window"
            f" (cores of {os.cpu_count()}): {cores}"
        )
        if (latency.cores.get("other") or 0.0) > 0.2:
            print("WARNING: other processes used the CPU during the latency run")
    ratio = with_audiences.events_per_s / floor.events_per_s
    goals: dict[str, tuple[bool | None, str]] = {
        f"100 audiences >= {GOAL_FLOOR_RATIO} of the floor": (
            ratio >= GOAL_FLOOR_RATIO,
            f"{ratio:.2f}",
        ),
    }
    at_goal = [latency for latency in latencies if latency.rate >= GOAL_RATE]
    name = f"p99 202 -> partner < {GOAL_P99_MS:,.0f} ms at {GOAL_RATE:,} events/s"
    if at_goal:
        goals[name] = (at_goal[0].p99_ms < GOAL_P99_MS, f"{at_goal[0].p99_ms:,.0f} ms")
    else:
        goals[name] = (None, "not run")
    for name, (ok, value) in goals.items():
        verdict = "n/a" if ok is None else "PASS" if ok else "FAIL"
        print(f"goal: {name:50} {value:>10}  {verdict}")
    print(f"total time {time.perf_counter() - started:.0f}s")
    if profile_report is not None:
        print()
        print(profile_report)

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": run_config(args),
                    "preloads": [asdict(r) for r in preloads],
                    "floor": asdict(floor),
                    "audiences": asdict(with_audiences),
                    "ratio": ratio,
                    "latency": [asdict(latency) for latency in latencies],
                    "goals": {k: v[0] for k, v in goals.items()},
                    "errors": errors,
                },
                indent=2,
            )
        )
    return exit_status(errors, goals, args.strict)


if __name__ == "__main__":
    sys.exit(main())
