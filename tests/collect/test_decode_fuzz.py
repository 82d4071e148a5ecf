"""Property tests of the decoder and the rate limiter.

- Whatever the bytes, ``decode_batch`` and ``split_bulk`` return or raise ``BadInput``: no
  other exception reaches the HTTP layer (where it would be a 500).
- Batches built from the documented format always decode, with all their events.
- The rate limiter never lets through more than its rate over a window plus one bucket.
"""

from __future__ import annotations

import copy
import json
import math
import typing
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.clock import ManualClock
from patchbay.collect.batch import Batch, Environment
from patchbay.collect.decode import ROOT, BadInput, decode_batch, split_bulk
from patchbay.collect.events import (
    EVENT_TYPES,
    CommerceEventType,
    CustomEventType,
    ProductActionType,
    PromotionActionType,
)
from patchbay.collect.fields import MAX_FREEFORM_DEPTH
from patchbay.collect.ratelimit import RateLimiter

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64 = st.integers(-(2**63), 2**63 - 1)
MAX_BATCHES = 100


def _field_names() -> list[str]:
    """Every field name of every struct reachable from ``Batch`` (the models' vocabulary)."""
    names: set[str] = set()
    seen: set[int] = set()
    todo: list[Any] = [msgspec.inspect.type_info(Batch)]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if isinstance(t, msgspec.inspect.StructType):
            names.update(f.encode_name for f in t.fields)
            todo.extend(f.type for f in t.fields)
        elif isinstance(t, msgspec.inspect.UnionType):
            todo.extend(t.types)
        elif isinstance(t, msgspec.inspect.ListType):
            todo.append(t.item_type)
        elif isinstance(t, msgspec.inspect.DictType):
            todo.append(t.value_type)
        elif isinstance(t, msgspec.inspect.Metadata):
            todo.append(t.type)
    return sorted(names)


FIELD_NAMES = _field_names()
BATCH_FIELDS = set(Batch.__struct_fields__)

# --- (a) anything in, BadInput or a result out ---------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**66)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from([*EVENT_TYPES, "", "navigation", "purchase", "production", "1", "-1"])
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
events = st.fixed_dictionaries(
    {"event_type": st.sampled_from(EVENT_TYPES) | json_scalars},
    optional={"data": st.dictionaries(keys, json_values, max_size=5) | json_values},
)
batches = st.dictionaries(keys, json_values, max_size=6) | st.fixed_dictionaries(
    {"events": st.lists(events, max_size=4)},
    optional={k: json_values for k in ("mpid", "user_identities", "environment", "device_info")},
)


def encode(value: Any, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    # Lone surrogates from st.text() become invalid UTF-8 here: the decoder must refuse them.
    return text.encode("utf-8", "surrogatepass")


def check_single(body: bytes) -> None:
    try:
        batch = decode_batch(body)
    except BadInput as exc:
        assert exc.path, body
        assert exc.reason, body
        assert str(exc) == f"{exc.path}: {exc.reason}"
        # The path starts at the body ("$") or at one of the batch's own fields.
        head = exc.path.split(".", 1)[0].split("[", 1)[0]
        assert exc.path == ROOT or head in BATCH_FIELDS, (exc.path, body)
    else:
        assert isinstance(batch, Batch)
        assert batch.event_count >= 0
        if batch.mpid is not None:
            assert -(2**63) <= typing.cast(int, batch.user_id) < 2**63


def check_bulk(body: bytes) -> None:
    try:
        items = split_bulk(body, MAX_BATCHES)
    except BadInput as exc:
        assert exc.path == ROOT
        assert exc.reason
        return
    assert len(items) <= MAX_BATCHES
    for item in items:
        check_single(item)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes(body: bytes) -> None:
    check_single(body)
    check_bulk(body)


@FAST
@given(json_values, st.booleans())
def test_arbitrary_json(value: Any, ascii_only: bool) -> None:
    body = encode(value, ascii_only)
    check_single(body)
    check_bulk(body)


@FAST
@given(batches, st.booleans())
def test_batch_shaped_json(value: dict[str, Any], ascii_only: bool) -> None:
    check_single(encode(value, ascii_only))


@FAST
@given(st.lists(batches | json_values, max_size=5), st.booleans())
def test_bulk_shaped_json(value: list[Any], ascii_only: bool) -> None:
    check_bulk(encode(value, ascii_only))


@FAST
@given(batches, st.integers(min_value=0, max_value=200), st.binary(min_size=1, max_size=3))
def test_damaged_json(value: dict[str, Any], cut: int, junk: bytes) -> None:
    """Valid-looking JSON with a byte cut out or garbage spliced in."""
    body = encode(value, ascii_only=False)
    at = cut % (len(body) + 1)
    for damaged in (body[:at], body[:at] + junk + body[at:], body[:at] + body[at + 1 :]):
        check_single(damaged)
        check_bulk(b"[" + damaged + b"]")


# --- (b) valid batches always decode -------------------------------------------------------

safe_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
timestamps = st.integers(0, 2**62)
attributes = st.dictionaries(
    safe_text, st.none() | st.booleans() | finite | safe_text | INT64, max_size=4
)
flag_values = st.recursive(
    st.none() | st.booleans() | INT64 | st.integers(0, 2**64 - 1) | finite | safe_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(safe_text, children, max_size=3)
    ),
    max_leaves=10,
)
common = {
    "timestamp_unixtime_ms": timestamps,
    "source_message_id": safe_text,
    "session_id": INT64,
    "session_uuid": safe_text,
    "custom_attributes": attributes,
    "custom_flags": st.dictionaries(safe_text, flag_values, max_size=3),
    "location": st.fixed_dictionaries(
        {},
        optional={
            "latitude": finite | safe_text,
            "longitude": finite,
            "location_source": st.sampled_from(["unknown", "ip_lookup", "lat_long"]),
        },
    ),
}


def data(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={**common, **fields})


def enum(literal: Any) -> st.SearchStrategy[str]:
    return st.sampled_from(typing.get_args(literal))


products = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "id": safe_text,
            "name": safe_text,
            "price": finite | st.just("9.99"),
            "quantity": finite,
            "position": INT64,
        },
    ),
    max_size=3,
)
valid_events = st.one_of(
    st.fixed_dictionaries(
        {
            "event_type": st.just("custom_event"),
            "data": data(event_name=safe_text, custom_event_type=enum(CustomEventType)),
        }
    ),
    st.fixed_dictionaries(
        {
            "event_type": st.just("commerce_event"),
            "data": data(
                custom_event_type=enum(CommerceEventType),
                currency_code=st.just("USD"),
                product_action=st.fixed_dictionaries(
                    {"action": enum(ProductActionType)},
                    optional={"products": products, "total_amount": finite},
                ),
                promotion_action=st.fixed_dictionaries(
                    {"action": enum(PromotionActionType)},
                    optional={"promotions": st.lists(st.fixed_dictionaries({"id": safe_text}))},
                ),
            ),
        }
    ),
    st.fixed_dictionaries(
        {"event_type": st.just("screen_view"), "data": data(screen_name=safe_text)}
    ),
    st.fixed_dictionaries({"event_type": st.just("session_start"), "data": data()}),
    st.fixed_dictionaries(
        {"event_type": st.just("session_end"), "data": data(session_duration_ms=INT64)}
    ),
    st.fixed_dictionaries(
        {
            "event_type": st.just("push_message"),
            "data": data(
                push_message_type=st.sampled_from(["sent", "received", "action", "unknown"]),
                network=st.sampled_from(["apn", "gcm", "unknown"]),
                push_message_behavior=safe_text | finite,
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "event_type": st.just("profile"),
            "data": data(
                profile_event_type=st.sampled_from(
                    ["signup", "login", "logout", "update", "delete", "unknown"]
                ),
                previous_mpid=INT64,
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "event_type": st.just("application_state_transition"),
            "data": data(
                application_transition_type=st.sampled_from(
                    ["application_initialized", "application_exit", "unknown"]
                ),
                is_first_run=st.booleans() | st.just(""),
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "event_type": st.just("user_attribute_change"),
            "data": data(
                user_attribute_name=safe_text,
                new=safe_text | st.lists(safe_text, max_size=3) | st.none(),
                deleted=st.booleans(),
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "event_type": st.sampled_from(
                ["first_run", "uninstall", "opt_out", "breadcrumb", "crash_report"]
            ),
            "data": data(),
        }
    ),
)
valid_batches = st.fixed_dictionaries(
    {"events": st.lists(valid_events, max_size=6)},
    optional={
        "environment": enum(Environment),
        "source_request_id": safe_text,
        "schema_version": st.just(2),
        "mpid": INT64 | INT64.map(str),
        "mp_deviceid": safe_text,
        "ip": st.just("203.0.113.7"),
        "user_identities": st.fixed_dictionaries(
            {}, optional={"customerid": safe_text, "email": safe_text, "other_id_2": safe_text}
        ),
        "user_attributes": st.dictionaries(
            safe_text, safe_text | finite | st.lists(safe_text, max_size=3), max_size=4
        ),
        "device_info": st.fixed_dictionaries(
            {}, optional={"platform": safe_text, "screen_height": INT64, "is_tablet": st.booleans()}
        ),
        "application_info": st.fixed_dictionaries({}, optional={"application_name": safe_text}),
        "consent_state": st.fixed_dictionaries(
            {},
            optional={
                "gdpr": st.dictionaries(
                    safe_text,
                    st.fixed_dictionaries(
                        {},
                        optional={"consented": st.booleans(), "timestamp_unixtime_ms": timestamps},
                    ),
                    max_size=2,
                )
            },
        ),
        "not_in_the_schema": flag_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_batches, st.booleans())
def test_valid_batches_decode(batch: dict[str, Any], ascii_only: bool) -> None:
    decoded = decode_batch(json.dumps(batch, ensure_ascii=ascii_only).encode())
    assert decoded.event_count == len(batch["events"])
    assert decoded.events is not None
    assert [e.__struct_config__.tag for e in decoded.events] == [
        e["event_type"] for e in batch["events"]
    ]
    if "mpid" in batch:
        assert decoded.user_id == int(batch["mpid"])
    identities = batch.get("user_identities", {})
    if "customerid" in identities:
        assert decoded.user_identities is not None
        assert decoded.user_identities.identities()["customer_id"] == identities["customerid"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_batches, max_size=MAX_BATCHES))
def test_valid_bulks_split_and_decode(bulk: list[dict[str, Any]]) -> None:
    items = split_bulk(json.dumps(bulk).encode(), MAX_BATCHES)
    assert len(items) == len(bulk)
    for item, batch in zip(items, bulk, strict=True):
        assert json.loads(item) == batch
        assert decode_batch(item).event_count == len(batch["events"])


@FAST
@given(valid_batches, st.integers(min_value=1, max_value=5))
def test_over_deep_custom_flags_refused(batch: dict[str, Any], extra: int) -> None:
    deep: Any = 1
    for _ in range(MAX_FREEFORM_DEPTH + extra):
        deep = [deep]
    batch["events"].append({"event_type": "custom_event", "data": {"custom_flags": {"x": deep}}})
    try:
        decode_batch(json.dumps(batch).encode())
    except BadInput as exc:
        assert exc.path == f"events[{len(batch['events']) - 1}].data.custom_flags"
    else:
        raise AssertionError("custom_flags nested too deeply were accepted")


# --- (c) the rate limiter ------------------------------------------------------------------

rates = st.sampled_from([0.5, 1.0, 3.0, 5.0, 270.0]) | st.floats(min_value=0.1, max_value=1000)


def steps_for(rate: float) -> st.SearchStrategy[list[tuple[float, int]]]:
    """(seconds to wait, batches in the request): sizes up to three buckets' worth."""
    size = st.integers(min_value=0, max_value=max(1, math.ceil(rate * 3)))
    wait = st.sampled_from([0.0, 0.0, 0.001, 0.25, 1.0]) | st.floats(0, 3)
    return st.lists(st.tuples(wait, size), min_size=1, max_size=60)


@st.composite
def limiter_runs(draw: st.DrawFn) -> tuple[float, list[tuple[float, int]]]:
    rate = draw(rates)
    return rate, draw(steps_for(rate))


@FAST
@given(limiter_runs())
def test_rate_limit_window_bound(run: tuple[float, list[tuple[float, int]]]) -> None:
    """Over the allowed requests i..j (times t_i <= t_j), with a bucket of ``rate`` tokens:

        n_i + ... + n_(j-1) + min(n_j, rate) <= rate * (t_j - t_i) + rate

    The bucket starts full (``rate``) and refills at ``rate`` per second, so at most
    ``rate * window + rate`` tokens are ever available in a window. A request needs
    ``min(n, rate)`` tokens to be let through and then takes all ``n``: one request bigger
    than the bucket passes when the bucket is full and leaves a debt the next ones repay.
    So only the last request of a window may overshoot, by ``n_j - rate`` at most.
    """
    rate, steps = run
    clock = ManualClock()
    limiter = RateLimiter(clock)
    allowed: list[tuple[float, int]] = []
    for wait, batches in steps:
        clock.advance(wait)
        decision = limiter.take("input", rate, batches)
        assert 0 <= decision.percent_used <= 100
        if decision.allowed:
            allowed.append((clock.monotonic(), batches))
        else:
            assert isinstance(decision.retry_after_s, int)
            assert decision.retry_after_s >= 1
            assert decision.percent_used == 100
    for i in range(len(allowed)):
        taken = 0.0
        for j in range(i, len(allowed)):
            t_j, n_j = allowed[j]
            window = t_j - allowed[i][0]
            budget = rate * window + rate
            assert taken + min(n_j, rate) <= budget + 1e-6 * max(1.0, budget), (i, j, allowed)
            # Equivalently: everything in the window, the last request's overshoot aside.
            assert taken + n_j <= budget + max(0.0, n_j - rate) + 1e-6 * max(1.0, budget)
            taken += n_j


@FAST
@given(limiter_runs())
def test_retry_after_is_enough(run: tuple[float, list[tuple[float, int]]]) -> None:
    """A refused request is let through once its Retry-After has passed (nothing else sent)."""
    rate, steps = run
    clock = ManualClock()
    limiter = RateLimiter(clock)
    for wait, batches in steps:
        clock.advance(wait)
        decision = limiter.take("input", rate, batches)
        if not decision.allowed:
            later_limiter, later_clock = copy.deepcopy((limiter, clock))
            later_clock.advance(decision.retry_after_s)
            assert later_limiter.take("input", rate, batches).allowed


@FAST
@given(limiter_runs(), st.integers(min_value=1, max_value=10_000))
def test_a_full_bucket_lets_any_request_through(
    run: tuple[float, list[tuple[float, int]]], big: int
) -> None:
    """After a pause long enough to repay every debt and refill, any request is let through,
    even one bigger than the bucket (a 100-batch bulk at a limit of 5 per second)."""
    rate, steps = run
    clock = ManualClock()
    limiter = RateLimiter(clock)
    largest = 0
    for wait, batches in steps:
        clock.advance(wait)
        limiter.take("input", rate, batches)
        largest = max(largest, batches)
    clock.advance(math.ceil(largest / rate) + 1.0)
    assert limiter.take("input", rate, big).allowed


@FAST
@given(st.lists(st.tuples(st.floats(0, 2), st.integers(0, 10**6)), max_size=30))
def test_rate_zero_is_unlimited(steps: list[tuple[float, int]]) -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    for wait, batches in steps:
        clock.advance(wait)
        assert limiter.take("input", 0, batches).allowed


@FAST
@given(rates, st.lists(st.integers(0, 50), min_size=1, max_size=20))
def test_inputs_have_separate_buckets(rate: float, sizes: list[int]) -> None:
    """What one input takes never changes another input's decisions."""
    clock = ManualClock()
    shared = RateLimiter(clock)
    alone = RateLimiter(clock)
    for size in sizes:
        shared.take("noisy", rate, size * 10)
        assert shared.take("quiet", rate, size) == alone.take("quiet", rate, size)
        clock.advance(0.1)


def test_bucket_of_one_second_then_refused() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    assert all(limiter.take("a", 5, 1).allowed for _ in range(5))
    refused = limiter.take("a", 5, 1)
    assert not refused.allowed
    assert refused.retry_after_s == 1
    clock.advance(0.2)
    assert limiter.take("a", 5, 1).allowed


def test_oversized_request_leaves_a_debt() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    assert limiter.take("a", 5, 100).allowed  # a full bucket lets a 100-batch bulk through
    refused = limiter.take("a", 5, 1)
    assert not refused.allowed
    assert refused.retry_after_s == 20  # 95 tokens owed plus 1 needed, at 5 per second
    clock.advance(19)
    assert not limiter.take("a", 5, 1).allowed
    clock.advance(1)
    assert limiter.take("a", 5, 1).allowed
