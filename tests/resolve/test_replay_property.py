"""Property tests of the resolve stage: crash + restart and full replay give the same state.

Random logs of batches (a few customers, emails and devices shared between them, blocked
values, explicit MPIDs, attributes, identity and attribute change events, opt-outs,
consent, and IDSync records that merge users) are appended to a real log and resolved by
the real stage into a real state store (each deployment's: SQLite, or Kafka and
PostgreSQL), in chunks of a drawn size. The state after one pass must equal:

* the state after one or more crashes (the sink raising at a drawn batch, the store's
  commit raising before, inside or after its transaction) each followed by a restart: a new
  stage over reopened stores, possibly with another chunk size, run until caught up;
* the state after a full replay: ``reset()`` then the whole log again, with another chunk
  size.

"The state" is every profile, every identity link (in link order, which decides matches)
and every merge (in order, without the table's ids), so equal states mean identical MPIDs.
Chunk sizes differ between the runs because chunk boundaries are not stable in production:
a live stage reads whatever the log holds, a replay reads full chunks.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, ItemsView, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.backends.abstract import Backend, BatchLog, StateStore
from patchbay.backends.records import Checkpoint, LogPosition, NewBatch, Since, StateChanges
from patchbay.collect.decode import decode_batch
from patchbay.resolve.profile import Profile
from patchbay.resolve.resolver import Resolver, derived_mpid
from patchbay.resolve.stage import IDSYNC_CHANNEL, ResolvedBatch, ResolvedChunk, ResolveStage
from patchbay.resolve.strategy import IdentityStrategy
from tests.deployments import DEPLOYED, BackendSpec
from tests.resolve.harness import WrappedState

#: More examples for a deeper search: ``PATCHBAY_PROPERTY_EXAMPLES=2000 pytest tests/resolve``.
EXAMPLES = int(os.environ.get("PATCHBAY_PROPERTY_EXAMPLES", "60"))
PROPERTY = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def property_on(spec: BackendSpec) -> settings:
    """:data:`PROPERTY` for ``spec``: a tenth of the examples in the scale-out mode (every
    example makes schemas and topics of its own there), the search being the embedded
    store's."""
    return settings(
        PROPERTY, max_examples=EXAMPLES if spec is DEPLOYED[0] else max(1, EXAMPLES // 10)
    )


#: Opens the backend kept at a location (:attr:`BackendSpec.open`).
Opener = Callable[[Path], Backend]


def open_at(open_: Opener, location: Path) -> Backend:
    """The backend at ``location`` (made first if missing)."""
    location.mkdir(parents=True, exist_ok=True)
    return open_(location)


# -- the pools identities are drawn from ---------------------------------------------------

CUSTOMERS = ["c1", "c2", "c3"]
EMAILS = ["a@x.io", "b@x.io", "c@x.io"]
BLOCKED = ["", "null", " NULL ", "0", "unknown", "00000000-0000-0000-0000-000000000000"]
IDFAS = [
    "613ff528-afd1-4c1b-9628-e6ed25ece9c0",
    "8c61383f-2216-4713-8c1c-1cb0a5d7a4cc",
    "1a2b3c4d-0000-4000-8000-000000000001",
]
AAIDS = ["aaid-1", "aaid-2"]
STAMPS = ["das-1", "das-2"]
BASE_MS = 1_700_000_000_000
#: (customer id, email, device): c1 and c3 share a device; the last one is anonymous.
PERSONAS: list[tuple[str | None, str | None, str]] = [
    ("c1", "a@x.io", IDFAS[0]),
    ("c2", "b@x.io", IDFAS[1]),
    ("c3", "c@x.io", IDFAS[0]),
    ("c1", "a@x.io", IDFAS[2]),
    (None, None, IDFAS[2]),
]

STRATEGIES = {
    "default": IdentityStrategy(),
    "separate": IdentityStrategy(login="separate"),
    "email_first": IdentityStrategy(
        priority=("email", "customer_id", "ios_advertising_id", "device_application_stamp")
    ),
    "shared_devices": IdentityStrategy(unique=("customer_id",), max_users_per_identity=2),
    "strict": IdentityStrategy(
        unique=("customer_id", "email", "ios_advertising_id"),
        max_users_per_identity=1,
        blocked_values=("c3", "null", ""),
    ),
}

_customer = st.sampled_from(CUSTOMERS + BLOCKED[:2])
_email = st.sampled_from(EMAILS + BLOCKED[2:4])
_idfa = st.sampled_from(IDFAS + BLOCKED[5:])
_attr_name = st.sampled_from(["plan", "tier", "tags", "Plan"])
_attr_value = st.sampled_from(
    ["free", "pro", "", 3, 1.5, True, False, None, ["x", "y"], ["x", None], []]
)


@st.composite
def _user_identities(draw: st.DrawFn) -> dict[str, str]:
    found: dict[str, str] = {}
    if draw(st.booleans()):
        found[draw(st.sampled_from(["customer_id", "customerid"]))] = draw(_customer)
    if draw(st.booleans()):
        found["email"] = draw(_email)
    if draw(st.integers(0, 5)) == 0:
        found["other"] = draw(st.sampled_from(["o1", "o2", "unknown"]))
    return found


@st.composite
def _device_info(draw: st.DrawFn) -> dict[str, str]:
    found: dict[str, str] = {"platform": "iOS"}
    if draw(st.booleans()):
        found["ios_advertising_id"] = draw(_idfa)
    if draw(st.integers(0, 3)) == 0:
        found["android_advertising_id"] = draw(st.sampled_from([*AAIDS, "n/a"]))
    return found


#: The identity types a ``user_identity_change`` names (any spelling) and their values.
_CHANGE_VALUES: dict[str, list[str]] = {
    "email": EMAILS,
    "customer_id": CUSTOMERS,
    "customerid": CUSTOMERS,
    "ios_idfa": IDFAS[:2],
    "ios_advertising_id": IDFAS[:2],
    "mp_deviceid": STAMPS,
    "other2": ["o1"],
    "not_a_type": ["x"],
}


@st.composite
def _identity_side(draw: st.DrawFn) -> dict[str, str] | None:
    if draw(st.integers(0, 3)) == 0:
        return None
    kind = draw(st.sampled_from(sorted(_CHANGE_VALUES)))
    value = draw(st.sampled_from([*_CHANGE_VALUES[kind], "null"]))
    return {"identity_type": kind, "identity": value}


@st.composite
def _event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["attribute", "identity", "opt_out", "custom"]))
    if kind == "attribute":
        data: dict[str, Any] = {"user_attribute_name": draw(_attr_name)}
        deleted = draw(st.sampled_from([None, None, True, False, "true"]))
        if deleted is not None:
            data["deleted"] = deleted
        if deleted is None or draw(st.booleans()):
            data["new"] = draw(_attr_value)
        return {"event_type": "user_attribute_change", "data": data}
    if kind == "identity":
        change = {"old": draw(_identity_side()), "new": draw(_identity_side())}
        return {
            "event_type": "user_identity_change",
            "data": {k: v for k, v in change.items() if v is not None},
        }
    if kind == "opt_out":
        opted = draw(st.sampled_from([True, False, "true", "false"]))
        return {"event_type": "opt_out", "data": {"is_opted_out": opted}}
    return {"event_type": "custom_event", "data": {"event_name": "x", "custom_event_type": "other"}}


_consent = st.fixed_dictionaries(
    {
        "consented": st.sampled_from([True, False, "true", "false"]),
        "timestamp_unixtime_ms": st.sampled_from([0, 10, 20, 30]),
    },
    optional={"document": st.sampled_from(["doc-1", "doc-2"])},
)


@st.composite
def _consent_state(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "gdpr": draw(
            st.dictionaries(
                st.sampled_from(["location", "Location", "marketing"]),
                st.one_of(st.none(), _consent),
                max_size=2,
            )
        ),
        "ccpa": draw(
            st.dictionaries(
                st.just("data_sale_opt_out"), st.one_of(st.none(), _consent), max_size=1
            )
        ),
    }


#: The key of a generated body that names its channel (removed before it is appended).
CHANNEL_KEY = "__channel"


@dataclass(frozen=True)
class MpidRef:
    """An explicit ``mpid``: the one batch ``index`` (mod the batches before) would create."""

    index: int
    as_string: bool


@st.composite
def batch_spec(draw: st.DrawFn) -> dict[str, Any]:
    """One batch as a JSON object; an explicit ``mpid`` may be an :class:`MpidRef`."""
    if draw(st.integers(0, 11)) == 0:
        # An IDSync record (resolve/service.py): a user, users merged into it (alias, login).
        record: dict[str, Any] = {
            CHANNEL_KEY: IDSYNC_CHANNEL,
            "mpid": MpidRef(draw(st.integers(0, 30)), False),
            "patchbay_merged_from": [
                MpidRef(i, False) for i in draw(st.lists(st.integers(0, 30), max_size=2))
            ],
            "patchbay_merge_reason": draw(st.sampled_from(["alias", "login"])),
        }
        if draw(st.booleans()):
            record["user_identities"] = draw(_user_identities())
        return record
    body: dict[str, Any] = {}
    if draw(st.integers(0, 2)) > 0:
        # A person of the pool, on one of their devices, with some of their identities.
        customer, email, idfa = draw(st.sampled_from(PERSONAS))
        users: dict[str, str] = {}
        if customer is not None and draw(st.booleans()):
            users[draw(st.sampled_from(["customer_id", "customerid"]))] = customer
        if email is not None and draw(st.booleans()):
            users["email"] = email
        if users or draw(st.booleans()):
            body["user_identities"] = users
        if draw(st.integers(0, 3)) > 0:
            body["device_info"] = {"ios_advertising_id": idfa}
    else:
        if draw(st.integers(0, 9)) > 1:
            body["user_identities"] = draw(_user_identities())
        if draw(st.booleans()):
            body["device_info"] = draw(_device_info())
    if draw(st.integers(0, 4)) == 0:
        body["mp_deviceid"] = draw(st.sampled_from([*STAMPS, "-1"]))
    mpid_kind = draw(st.integers(0, 9))
    if mpid_kind == 0:
        body["mpid"] = MpidRef(draw(st.integers(0, 30)), draw(st.booleans()))
    elif mpid_kind == 1:
        body["mpid"] = draw(st.sampled_from([42, "42", 0]))
    if draw(st.booleans()):
        body["user_attributes"] = draw(st.dictionaries(_attr_name, _attr_value, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        body["deleted_user_attributes"] = draw(st.lists(_attr_name, max_size=2))
    body["events"] = draw(st.lists(_event(), max_size=4))
    own = [
        *((k, v) for k, v in body.get("user_identities", {}).items() if k != "other"),
        *((k, v) for k, v in body.get("device_info", {}).items() if k != "platform"),
    ]
    if own and draw(st.integers(0, 2)) == 0:
        # Most identity changes name one of the batch's own identities: drop or replace it.
        kind, value = draw(st.sampled_from(own))
        change: dict[str, Any] = {"old": {"identity_type": kind, "identity": value}}
        if draw(st.booleans()):
            pool = _CHANGE_VALUES.get(kind, IDFAS if kind == "ios_advertising_id" else AAIDS)
            change["new"] = {"identity_type": kind, "identity": draw(st.sampled_from(pool))}
        index = draw(st.integers(0, len(body["events"])))
        body["events"].insert(index, {"event_type": "user_identity_change", "data": change})
    if draw(st.integers(0, 3)) == 0:
        body["consent_state"] = draw(_consent_state())
    return body


@dataclass(frozen=True)
class Spec:
    """What a test appends: batch bodies and their stamps."""

    bodies: list[dict[str, Any]]
    delays_ms: list[int]
    inputs: list[str]


@st.composite
def log_spec(draw: st.DrawFn, max_batches: int = 24) -> Spec:
    """A random log: batch bodies, received-at steps (some backwards) and input ids."""
    bodies = draw(st.lists(batch_spec(), min_size=1, max_size=max_batches))
    delays = draw(st.lists(st.integers(-3000, 5000), min_size=len(bodies), max_size=len(bodies)))
    inputs = draw(
        st.lists(st.sampled_from(["in-1", "in-2"]), min_size=len(bodies), max_size=len(bodies))
    )
    return Spec(bodies, delays, inputs)


def batch_id(index: int) -> str:
    """The batch id of the ``index``-th batch of a spec."""
    return f"batch-{index:04d}"


def new_batches(spec: Spec) -> list[NewBatch]:
    """The spec's batches, ready to append; explicit MPID references resolved."""
    batches: list[NewBatch] = []
    clock = BASE_MS
    for index, (body, delay, input_id) in enumerate(
        zip(spec.bodies, spec.delays_ms, spec.inputs, strict=True)
    ):
        clock += delay
        concrete = dict(body)
        channel = concrete.pop(CHANNEL_KEY, "server_to_server")
        ref = concrete.get("mpid")
        if isinstance(ref, MpidRef):
            mpid = derived_mpid(batch_id(ref.index % index)) if index else 7
            concrete["mpid"] = str(mpid) if ref.as_string else mpid
        if "patchbay_merged_from" in concrete:
            concrete["patchbay_merged_from"] = [
                derived_mpid(batch_id(r.index % index)) if index else 7
                for r in concrete["patchbay_merged_from"]
            ]
        raw = json.dumps(concrete).encode()
        decode_batch(raw)  # every generated batch is valid
        batches.append(
            NewBatch(
                batch_id=batch_id(index),
                input_id=input_id,
                received_at_ms=clock,
                channel=channel,
                body=raw,
            )
        )
    return batches


def write_log(open_: Opener, log_dir: Path, spec: Spec) -> list[int]:
    """Append the spec's batches to a new log at ``log_dir``; return their offsets."""
    backend = open_at(open_, log_dir)
    try:
        positions = backend.log.append(new_batches(spec))
    finally:
        backend.close()
    offsets = [p.offset for p in positions]
    assert len(offsets) == len(spec.bodies)
    return offsets


# -- running the stage ---------------------------------------------------------------------


class Crash(Exception):
    """The simulated crash."""


class Recorder:
    """A sink that remembers each offset's MPID and may crash at its n-th batch."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.seen = 0
        self.mpids: dict[int, int] = {}

    def offer(self, chunk: ResolvedChunk) -> None:
        """Take a chunk as the stage's listener."""
        self.handle(chunk.batches)

    def handle(self, batches: Sequence[ResolvedBatch]) -> None:
        if self.crash_at is not None and self.seen + len(batches) > self.crash_at:
            raise Crash(f"sink at batch {self.crash_at}")
        self.seen += len(batches)
        for resolved in batches:
            self.mpids[resolved.stored.offset] = resolved.mpid


class _ExplodingCheckpoint(dict[int, LogPosition]):
    """A checkpoint that raises when its positions are read: a store writes the checkpoint
    last in the commit's transaction, after the profiles, links and merges."""

    def items(self) -> ItemsView[int, LogPosition]:
        raise Crash("inside the commit's transaction")


class CrashingState(WrappedState):
    """A :class:`StateStore` whose ``commit`` crashes at its n-th call.

    ``before``: nothing written; ``inside``: profiles and links written in the transaction,
    then an error (the store must roll back); ``after``: committed, then the crash.
    """

    def __init__(self, inner: StateStore, crash_at: int, mode: str) -> None:
        super().__init__(inner)
        self.crash_at = crash_at
        self.mode = mode
        self.calls = 0

    def commit(
        self,
        changes: StateChanges,
        offset: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.calls += 1
        if self.calls != self.crash_at:
            self.inner.commit(changes, offset, since, before)
            return
        if self.mode == "before":
            raise Crash("before the commit")
        if self.mode == "inside":
            assert offset, "a stage's commit moves its checkpoint"
            self.inner.commit(changes, _ExplodingCheckpoint(offset))
            raise AssertionError("the sabotaged commit went through")
        self.inner.commit(changes, offset)
        raise Crash("after the commit")


@contextmanager
def opened(open_: Opener, log_dir: Path, state_dir: Path) -> Iterator[tuple[BatchLog, StateStore]]:
    """The log and a state store, opened (as a restarted process would) and closed after
    (both, whatever fails: a failing example leaks no connections to the next ones)."""
    with ExitStack() as opened_:
        logs = opened_.enter_context(closing(open_at(open_, log_dir)))
        states = opened_.enter_context(closing(open_at(open_, state_dir)))
        yield logs.log, states.state


def one_pass(
    open_: Opener,
    log_dir: Path,
    state_dir: Path,
    strategy: IdentityStrategy,
    chunk: int,
    reset: bool = False,
) -> dict[int, int]:
    """Resolve the whole log (after ``reset``, for a replay); return each offset's MPID."""
    sink = Recorder()
    with opened(open_, log_dir, state_dir) as (log, state):
        if reset:
            state.reset()
        ResolveStage(log, state, Resolver(strategy), [sink], chunk).run_until_caught_up()
    return sink.mpids


@dataclass(frozen=True)
class CrashPlan:
    """Where one run crashes: ``mode`` and the sink batch or commit call it crashes at."""

    mode: str  # "sink", "before", "inside" or "after"
    at: int
    chunk_after: int  # the chunk size of the restarted stage


crash_plans = st.lists(
    st.builds(
        CrashPlan,
        st.sampled_from(["sink", "before", "inside", "after"]),
        st.integers(1, 12),
        st.integers(1, 7),
    ),
    min_size=1,
    max_size=3,
)


@dataclass
class CrashRun:
    """What the crashing runs did: how many crashes happened, each offset's last MPID."""

    crashes: int = 0
    mpids: dict[int, int] = field(default_factory=dict)


def run_with_crashes(
    open_: Opener,
    log_dir: Path,
    state_dir: Path,
    strategy: IdentityStrategy,
    chunk: int,
    plans: list[CrashPlan],
) -> CrashRun:
    """Run the stage, crash as planned, restart on reopened stores; finish the log."""
    outcome = CrashRun()
    for plan in plans:
        sink = Recorder(plan.at if plan.mode == "sink" else None)
        with opened(open_, log_dir, state_dir) as (log, inner):
            state = CrashingState(inner, plan.at if plan.mode != "sink" else 0, plan.mode)
            stage = ResolveStage(log, state, Resolver(strategy), [sink], chunk)
            try:
                stage.run_until_caught_up()
            except Crash:
                outcome.crashes += 1
            # A chunk is offered once committed: one whose commit crashed after writing was
            # not, and the stages after read it back from the committed resolved users.
            for position, mpid in inner.resolved(0, None, 1_000_000):
                outcome.mpids.setdefault(position.offset, mpid)
        outcome.mpids.update(sink.mpids)
        chunk = plan.chunk_after
    outcome.mpids.update(one_pass(open_, log_dir, state_dir, strategy, chunk))
    return outcome


# -- the canonical state ---------------------------------------------------------------------

_decode_profile = msgspec.msgpack.Decoder(Profile).decode


@dataclass(frozen=True)
class Dump:
    """A state store's contents, independent of row ids."""

    profiles: dict[int, Any]
    links: dict[tuple[str, str], list[int]]  # each identity's users, oldest link first
    merges: list[tuple[int, int, str, int, int]]
    offset: int

    def live(self) -> dict[int, Profile]:
        """The profiles that were not merged into another, decoded."""
        decoded = {m: msgspec.convert(p, Profile) for m, p in self.profiles.items()}
        return {m: p for m, p in decoded.items() if p.merged_into is None}


def dump(state: StateStore) -> Dump:
    """Read the whole of ``state`` through its own database (the embedded store's and
    PostgreSQL's have the same tables)."""
    db = state._db  # type: ignore[attr-defined]
    with db.transaction() as conn:
        profiles = {
            int(mpid): msgspec.to_builtins(_decode_profile(bytes(doc)))
            for mpid, doc in conn.execute("SELECT mpid, doc FROM profiles ORDER BY mpid")
        }
        links: dict[tuple[str, str], list[int]] = {}
        for kind, value, mpid in conn.execute(
            "SELECT type, value, mpid FROM identity_links ORDER BY type, value, id"
        ):
            links.setdefault((kind, value), []).append(int(mpid))
        merges = [
            tuple(row)
            for row in conn.execute(
                "SELECT from_mpid, to_mpid, reason, at_ms, log_offset FROM merges ORDER BY id"
            )
        ]
    position = state.checkpoint().get(0)
    return Dump(profiles, links, merges, position.offset if position else 0)


def dump_at(open_: Opener, state_dir: Path) -> Dump:
    """:func:`dump` of the state store at ``state_dir``."""
    backend = open_at(open_, state_dir)
    try:
        return dump(backend.state)
    finally:
        backend.close()


# -- the properties --------------------------------------------------------------------------


def test_crash_restart_and_replay_give_the_same_state(spec: BackendSpec) -> None:
    open_ = spec.open

    @property_on(spec)
    @given(
        written=log_spec(),
        strategy_name=st.sampled_from(sorted(STRATEGIES)),
        chunks=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)),
        plans=crash_plans,
    )
    def check(
        written: Spec, strategy_name: str, chunks: tuple[int, int, int], plans: list[CrashPlan]
    ) -> None:
        strategy = STRATEGIES[strategy_name]
        with tempfile.TemporaryDirectory() as tmp:
            log, once_at, crashed_at = Path(tmp) / "log", Path(tmp) / "once", Path(tmp) / "crashed"
            offsets = write_log(open_, log, written)

            mpids = one_pass(open_, log, once_at, strategy, chunks[0])
            once = dump_at(open_, once_at)
            assert once.offset == offsets[-1]
            assert sorted(mpids) == offsets  # every batch reached the sink

            crashed = run_with_crashes(open_, log, crashed_at, strategy, chunks[1], plans)
            assert dump_at(open_, crashed_at) == once
            # At least once: every batch reached a sink that did not fail, with the same user.
            assert crashed.mpids == mpids

            replayed = one_pass(open_, log, once_at, strategy, chunks[2], reset=True)
            assert dump_at(open_, once_at) == once
            assert replayed == mpids

    check()


def test_relinking_a_device_in_one_chunk_keeps_link_order(
    tmp_path: Path, spec: BackendSpec
) -> None:
    """A device unlinked and linked again to a user becomes its most recent link.

    Found by the property above: the staged state moved the link to the end, the committed
    one kept the old row, so the device's user depended on where chunks ended.
    """
    idfa = {"ios_advertising_id": IDFAS[0]}
    unlink = {
        "event_type": "user_identity_change",
        "data": {"old": {"identity_type": "ios_idfa", "identity": IDFAS[0]}},
    }
    bodies: list[dict[str, Any]] = [
        {"user_identities": {"customer_id": "c1"}, "device_info": idfa},  # A gets the device
        {"user_identities": {"customer_id": "c2"}, "device_info": idfa},  # B shares it
        {"user_identities": {"customer_id": "c1"}, "events": [unlink]},  # A loses it
        {"user_identities": {"customer_id": "c1"}, "device_info": idfa},  # A gets it back
        {"device_info": idfa},  # the device alone: its most recent user, A
    ]
    written = Spec(bodies, [1000] * len(bodies), ["in-1"] * len(bodies))
    offsets = write_log(spec.open, tmp_path / "log", written)
    by_chunk = {}
    for chunk in (1, 2, 5):
        state_dir = tmp_path / f"s{chunk}"
        mpids = one_pass(spec.open, tmp_path / "log", state_dir, IdentityStrategy(), chunk)
        by_chunk[chunk] = (mpids, dump_at(spec.open, state_dir))
    assert by_chunk[1] == by_chunk[2] == by_chunk[5]
    mpids = by_chunk[1][0]
    assert mpids[offsets[4]] == mpids[offsets[0]]
