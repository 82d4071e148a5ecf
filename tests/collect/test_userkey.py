"""The partition key of a batch: its user's, stable, and spreading users over partitions."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from patchbay.backends.records import NewBatch
from patchbay.collect.decode import decode_batch
from patchbay.collect.ingest import prepare_bulk
from patchbay.collect.userkey import mpid_key, user_key
from patchbay.resolve.strategy import IdentityStrategy
from tests.collect.test_ingest import stamps

values = st.text(min_size=1, max_size=12)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "mpid": st.integers(-(2**63), 2**63 - 1),
        "user_identities": st.fixed_dictionaries(
            {}, optional={"customer_id": values, "email": values, "other": values}
        ),
        "mp_deviceid": values,
        "device_info": st.fixed_dictionaries(
            {}, optional={"ios_idfv": values, "android_uuid": values}
        ),
        "source_request_id": values,
        "user_attributes": st.dictionaries(st.sampled_from("abc"), values, max_size=2),
    },
)


def _key(body: Mapping[str, object]) -> str | None:
    return user_key(decode_batch(msgspec.json.encode(body)))


@given(bodies)
def test_the_key_is_a_function_of_the_batch(body: dict[str, object]) -> None:
    """The same batch (a retry) always has the same key, whatever else comes with it."""
    again = decode_batch(msgspec.json.encode(body))
    assert _key(body) == user_key(again) == _key(dict(reversed(list(body.items()))))


@given(bodies)
def test_the_strongest_identity_decides(body: dict[str, object]) -> None:
    """The MPID first, then customer_id, email..., then the device; attributes and the
    request id never change it."""
    key = _key(body)
    mpid = body.get("mpid")
    users = body.get("user_identities") or {}
    assert isinstance(users, dict)
    if mpid:
        assert isinstance(mpid, int)
        assert key == mpid_key(mpid)
    elif not IdentityStrategy().is_blocked(users.get("customer_id", "")):
        assert key is not None and key.startswith("customer_id:")
    without = {k: v for k, v in body.items() if k not in ("user_attributes", "source_request_id")}
    assert _key(without) == key


def test_blocked_values_and_nobody_give_no_key() -> None:
    assert _key({"user_identities": {"email": "null"}, "mp_deviceid": " "}) is None
    assert _key({"mpid": 0, "events": []}) is None
    assert _key({"mpid": "42"}) == _key({"mpid": 42}) == "mpid:42"
    assert _key({"mp_deviceid": "das-1", "device_info": {"ios_idfv": "v"}}) == (
        "device_application_stamp:das-1"
    )


def test_users_spread_over_partitions_and_each_stays_in_one() -> None:
    """10,000 users over 12 partitions: each partition gets its share (within 15%), and
    every batch of a user goes to one partition."""
    partitions = 12
    counts = [0] * partitions
    for i in range(10_000):
        body = {"user_identities": {"email": f"user{i}@example.com"}}
        places = {
            NewBatch(f"b{i}-{n}", f"input-{n}", n, "s", b"{}", partition_key=_key(body)).partition(
                partitions
            )
            for n in range(3)
        }
        assert len(places) == 1
        counts[places.pop()] += 1
    assert max(counts) < 10_000 / partitions * 1.15
    assert min(counts) > 10_000 / partitions * 0.85


def test_batches_naming_nobody_spread_and_a_retry_lands_with_its_first_copy() -> None:
    anonymous = [NewBatch(f"b{i}", "input-1", i, "s", b"{}") for i in range(1200)]
    assert len({b.partition(12) for b in anonymous}) == 12
    first = NewBatch("b1", "input-1", 1, "s", b"{}", source_request_id="r-1")
    retry = NewBatch("b2", "input-1", 2, "s", b"{}", source_request_id="r-1")
    assert first.partition(12) == retry.partition(12)


def test_ingest_stamps_the_key() -> None:
    body = b'[{"mpid": 7}, {"user_identities": {"email": "a@example.com"}}, {}]'
    keys = [b.partition_key for b in prepare_bulk(body, stamps(), 10).batches]
    assert keys == ["mpid:7", "email:a@example.com", None]
