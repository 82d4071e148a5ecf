"""Every storage interface Patchbay has, defined once.

A backend is one package beside this module (:mod:`patchbay.backends.sqlite`, the embedded
default; :mod:`patchbay.backends.memory`, in memory for tests and benchmark floors) that
implements each protocol below and returns them together as a :class:`Backend`.
:func:`patchbay.backends.open_backend` opens the one the settings name; nothing else
constructs a store. ``tests/backends/`` holds one contract suite per interface and runs it
on every backend.

The stages and what they use:

* collect: :class:`InputStore` (auth), :class:`DedupIndex` and :class:`BatchLog` (append);
* resolve: :class:`BatchLog` (read), :class:`StateStore` (profiles, links, its checkpoint);
* downstream stages (activate, segment): :class:`StateStore` (resolved users) and
  :class:`StagePositions` (their own checkpoints);
* activate: :class:`OutputStore`, :class:`ModuleStore` and :class:`Outbox`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from patchbay.backends.records import (
    Checkpoint,
    Connection,
    Credential,
    DedupKey,
    Delivery,
    Input,
    LogPosition,
    MergeRecord,
    ModuleRecord,
    ModuleRegistrationEntry,
    NewBatch,
    Output,
    QueueStats,
    StateChanges,
    StoredBatch,
)
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile


class BatchLog(Protocol):
    """An append-only, partitioned log of batches.

    Positions are opaque (:class:`~patchbay.backends.records.LogPosition`): within a
    partition they only grow, and a reader asks for what comes after the last position it
    finished. The embedded log has one partition.
    """

    @property
    def partitions(self) -> int:
        """How many partitions the log has (numbered from 0)."""
        ...

    def append(self, batches: Sequence[NewBatch]) -> list[LogPosition]:
        """Append ``batches`` atomically and durably; return their positions, in order, once
        they are committed."""
        ...

    def read(self, partition: int, after: LogPosition | None, limit: int) -> list[StoredBatch]:
        """Up to ``limit`` batches of ``partition`` after ``after`` (from the start when
        ``None``), oldest first."""
        ...

    def end(self, partition: int) -> LogPosition | None:
        """The position of the newest batch in ``partition`` (``None``: it is empty)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class DedupIndex(Protocol):
    """Which (input, ``source_request_id``) keys were stored recently: batches sent again
    within the window are skipped. It is an index of the log: collect asks before it appends
    and records after, and the keys of batches appended but not recorded (a crash in
    between) are recorded again from the log at start (``collect.appender.recover_dedup``)."""

    def seen(self, keys: Collection[DedupKey], since_ms: int) -> set[DedupKey]:
        """Those of ``keys`` recorded at or after ``since_ms``."""
        ...

    def record(
        self, entries: Sequence[tuple[DedupKey, int, LogPosition]], upto: Checkpoint
    ) -> None:
        """Remember each key with the time it was received and where the batch went, and
        that the log's keys are recorded up to ``upto`` (batches without a key included)."""
        ...

    def recorded(self) -> Checkpoint:
        """How far the log's keys are recorded, by partition."""
        ...

    def forget_before(self, before_ms: int) -> int:
        """Drop keys received before ``before_ms``; return how many."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class InputStore(Protocol):
    """Inputs and their credentials."""

    def add_input(self, item: Input, credential: Credential) -> None:
        """Store a new input with its first credential; raises
        :class:`~patchbay.backends.records.DuplicateName` if the name is taken."""
        ...

    def get_input(self, name_or_id: str) -> Input | None:
        """The input with this name or id."""
        ...

    def list_inputs(self) -> list[Input]:
        """Every input, oldest first."""
        ...

    def set_input_enabled(self, input_id: str, enabled: bool) -> None:
        """Enable or disable an input (a disabled input's requests get 403)."""
        ...

    def set_rate_limit(self, input_id: str, rate_limit: float) -> None:
        """Change an input's rate limit in batches per second (0: unlimited)."""
        ...

    def add_credential(self, credential: Credential) -> None:
        """Add a key to an input (rotation)."""
        ...

    def set_credential_enabled(self, key: str, enabled: bool) -> None:
        """Enable or disable one key."""
        ...

    def credentials(self, input_id: str) -> list[Credential]:
        """The keys of an input, oldest first."""
        ...

    def find_credential(self, key: str) -> tuple[Credential, Input] | None:
        """The credential with this key and its input."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class StateView(Protocol):
    """Read access to identities and profiles."""

    def users_with(self, identity: Identity) -> list[int]:
        """The MPIDs linked to ``identity``, oldest link first."""
        ...

    def profile(self, mpid: int) -> Profile | None:
        """The profile stored under ``mpid`` (possibly a merged one), or ``None``."""
        ...

    def users_with_each(self, identities: Collection[Identity]) -> dict[Identity, list[int]]:
        """:meth:`users_with` of many identities at once; those linked to nobody left out."""
        ...

    def profiles(self, mpids: Collection[int]) -> dict[int, Profile]:
        """:meth:`profile` of many MPIDs at once; those with no profile left out."""
        ...


class StateStore(StateView, Protocol):
    """The resolve stage's durable state: profiles, identity links, merges, the user each
    batch resolved to, and the checkpoint of the log they include, committed together."""

    def checkpoint(self) -> Checkpoint:
        """The last log position the state includes, by partition (empty: nothing)."""
        ...

    def commit(self, changes: StateChanges, checkpoint: Checkpoint) -> None:
        """Apply ``changes`` and record ``checkpoint``, atomically and durably."""
        ...

    def resolved(
        self, partition: int, after: LogPosition | None, limit: int
    ) -> list[tuple[LogPosition, int]]:
        """The (position, MPID) of up to ``limit`` resolved batches of ``partition`` after
        ``after``, in log order (what a stage that fell behind reads to catch up)."""
        ...

    def forget_resolved(self, upto: Checkpoint) -> int:
        """Drop the resolved users at or before ``upto`` (every stage has them); how many."""
        ...

    def merges(self, mpid: int) -> list[MergeRecord]:
        """The merges into or out of ``mpid``, oldest first."""
        ...

    def count_profiles(self) -> int:
        """How many profiles are stored (merged ones included)."""
        ...

    def reset(self) -> None:
        """Forget every profile, link, merge, resolved user and the checkpoint (before a
        full replay)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class StagePositions(Protocol):
    """The committed checkpoints of the stages after resolve, by stage name."""

    def get(self, stage: str) -> Checkpoint:
        """``stage``'s checkpoint (empty when it never committed)."""
        ...

    def commit(self, stage: str, checkpoint: Checkpoint) -> None:
        """Record durably that ``stage`` finished everything up to ``checkpoint``."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class ModuleStore(Protocol):
    """Registered partner modules, keyed by name."""

    def put_module(self, module: ModuleRecord) -> ModuleRecord:
        """Store ``module``, replacing a module of the same name, and add its registration
        to the history. Returns what was stored: ``created_at_ms`` is kept from the module it
        replaces."""
        ...

    def get_module(self, name: str) -> ModuleRecord | None:
        """The module with this name."""
        ...

    def list_modules(self) -> list[ModuleRecord]:
        """Every module, by name."""
        ...

    def delete_module(self, name: str) -> bool:
        """Remove a module and its history; whether it existed."""
        ...

    def module_history(self, name: str) -> list[ModuleRegistrationEntry]:
        """The registrations a module sent, oldest first."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class OutputStore(Protocol):
    """Outputs (where data goes) and connections (which input feeds which output)."""

    def add_output(self, output: Output) -> None:
        """Create ``output``; raises :class:`~patchbay.backends.records.DuplicateName` if
        the name is taken."""
        ...

    def get_output(self, name: str) -> Output | None:
        """The output with this name."""
        ...

    def list_outputs(self) -> list[Output]:
        """Every output, by name."""
        ...

    def set_paused(self, name: str, paused: bool, reason: str | None, now_ms: int) -> bool:
        """Pause or resume an output; whether it exists."""
        ...

    def add_connection(self, connection: Connection) -> None:
        """Create ``connection``; raises :class:`~patchbay.backends.records.DuplicateName`
        if the input is already connected to the output."""
        ...

    def list_connections(self) -> list[Connection]:
        """Every connection, by input then output."""
        ...

    def remove_connection(self, connection_id: str) -> bool:
        """Remove a connection; whether it existed."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class Outbox(Protocol):
    """The durable outbox: one delivery per message and output, until it succeeds."""

    def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        """Add the deliveries whose id is new (in one transaction); return how many."""
        ...

    def due(
        self, output: str, now_ms: int, limit: int, exclude: Sequence[str] = ()
    ) -> list[Delivery]:
        """Pending deliveries of ``output`` due at ``now_ms``, oldest due first."""
        ...

    def succeeded(self, delivery_id: str) -> None:
        """Remove a delivery that was accepted."""
        ...

    def succeeded_many(self, delivery_ids: Sequence[str]) -> None:
        """Remove deliveries that were accepted, in one transaction."""
        ...

    def retry_at(self, delivery_id: str, attempts: int, next_attempt_ms: int, error: str) -> None:
        """Record a failed attempt and when to try again."""
        ...

    def park(self, delivery_id: str, attempts: int, error: str, now_ms: int) -> None:
        """Give up on a delivery for now, keeping it with its last error."""
        ...

    def parked(self, output: str | None = None, limit: int = 1000) -> list[Delivery]:
        """Parked deliveries, oldest first."""
        ...

    def replay(self, now_ms: int, output: str | None = None, ids: Sequence[str] = ()) -> int:
        """Make parked deliveries (of ``output``, or these ``ids``) pending again, due now,
        with a new retry window; return how many."""
        ...

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery."""
        ...

    def stats(self) -> dict[str, QueueStats]:
        """Queue statistics by output (outputs with no deliveries are absent)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class Backend:
    """All the stores of one backend, opened together and closed together."""

    #: The backend's name (``sqlite``, ``memory``).
    name: str
    log: BatchLog
    dedup: DedupIndex
    inputs: InputStore
    state: StateStore
    positions: StagePositions
    modules: ModuleStore
    outputs: OutputStore
    outbox: Outbox

    def close(self) -> None:
        """Close every store (each once, even where one object serves several roles)."""
        closed: set[int] = set()
        stores = (
            self.log,
            self.dedup,
            self.inputs,
            self.state,
            self.positions,
            self.modules,
            self.outputs,
            self.outbox,
        )
        for store in stores:
            if id(store) not in closed:
                closed.add(id(store))
                store.close()
