"""Every storage interface Patchbay has, defined once.

A backend is one package beside this module (:mod:`patchbay.backends.sqlite`, the embedded
default; :mod:`patchbay.backends.memory`, in memory for tests and benchmark floors) that
implements each protocol below and returns them together as a :class:`Backend`.
:func:`patchbay.backends.open_backend` opens the one the settings name; nothing else
constructs a store. ``tests/backends/`` holds one contract suite per interface and runs it
on every backend.

The stages and what they use:

* collect: :class:`InputStore` (auth), :class:`DedupIndex` and :class:`BatchLog` (append);
* the Profile API: :class:`ApiClientStore` (auth of server-side clients);
* resolve: :class:`BatchLog` (read), :class:`StateStore` (profiles, links, its checkpoint);
* downstream stages (activate, segment): :class:`StateStore` (resolved users) and
  :class:`StagePositions` (their own checkpoints);
* segment: :class:`AudienceStore` (definitions, connections, per-user state, memberships
  and the membership changes waiting to be sent);
* activate: :class:`OutputStore`, :class:`ModuleStore` and :class:`Outbox`;
* the Web SDK's kits (:mod:`patchbay.kits`): :class:`KitStore`;
* retention (:mod:`patchbay.retention`): :class:`BatchLog` (remove), :class:`DedupIndex`
  (forget) and :class:`StoreFiles` (sizes, space given back).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from patchbay.backends.records import (
    ApiClient,
    AudienceBuild,
    AudienceConnection,
    AudienceRecord,
    Checkpoint,
    Circuit,
    ConditionRecord,
    Connection,
    Credential,
    DedupKey,
    Delivery,
    Input,
    KitConnection,
    KitForwarded,
    KitRecord,
    LogEntry,
    LogExtent,
    LogPosition,
    MergeRecord,
    ModuleRecord,
    ModuleRegistrationEntry,
    NewBatch,
    Output,
    PendingChange,
    QueueStats,
    SegmentChanges,
    SegmentUser,
    Since,
    StateChanges,
    StoredBatch,
)
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile


class Closeable(Protocol):
    """Anything a backend closes."""

    def close(self) -> None:
        """Release it."""
        ...


class BatchLog(Protocol):
    """An append-only, partitioned log of batches.

    Positions are opaque (:class:`~patchbay.backends.records.LogPosition`): within a
    partition they only grow, and a reader asks for what comes after the last position it
    finished. Offsets start wherever the log starts them (1 in the embedded log, 0 in
    Kafka). The embedded log has one partition; a partitioned log puts all the batches of
    one input in one partition (the CRC-32 of the input id modulo the partition count).
    """

    @property
    def partitions(self) -> int:
        """How many partitions the log has (numbered from 0)."""
        ...

    def append(self, batches: Sequence[NewBatch]) -> list[LogPosition]:
        """Append ``batches`` durably; return their positions, in order, once they are
        committed.

        A batch the log cannot store (a field of the wrong type) fails the append before
        anything is stored. The embedded and memory logs append atomically: an append that
        fails or is interrupted (the process killed) stores none of its batches. Kafka does
        not: an append that fails part way (a broker lost, the process killed) may have
        stored a prefix of each partition's share of the batches, in order and once each;
        it raises :class:`~patchbay.errors.LogUnavailable` and acknowledged none of them.
        It may also store some of them later (:meth:`unsettled`); an append of a batch with
        the id of one of those waits for that one instead of storing it again."""
        ...

    def unsettled(self) -> int:
        """How many batches of appends that raised may still be stored later (sent, and
        not reported stored or not: Kafka); 0 for a log whose failed append stored nothing
        nor will. Once it is 0, every batch those appends stored is in the log for every
        reader. The appender holds the de-duplication index's progress until then
        (``collect.appender``)."""
        ...

    def read(self, partition: int, after: LogPosition | None, limit: int) -> list[StoredBatch]:
        """Up to ``limit`` batches of ``partition`` after ``after`` (from the start when
        ``None``), oldest first."""
        ...

    def end(self, partition: int) -> LogPosition | None:
        """The position of the newest batch appended to ``partition``, even if retention
        removed it since (``None``: nothing was ever appended)."""
        ...

    def oldest(self, partition: int, limit: int) -> list[LogEntry]:
        """Up to ``limit`` of the oldest batches ``partition`` retains, oldest first, as
        retention sees them (position, time received, size)."""
        ...

    def remove(self, partition: int, upto: LogPosition) -> int:
        """Remove every batch of ``partition`` at or before ``upto`` (retention: callers
        bound how many by choosing ``upto`` from :meth:`oldest`); return how many."""
        ...

    def extent(self, partition: int) -> LogExtent:
        """How many batches ``partition`` retains, their size, and the newest removed."""
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

    def forget_before(self, before_ms: int, limit: int | None = None) -> int:
        """Drop keys received before ``before_ms`` (at most ``limit`` of them, the oldest
        first); return how many."""
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

    def set_idsync_key_only(self, input_id: str, on: bool) -> None:
        """Whether IDSync accepts the input's key alone (see ``Input.idsync_key_only``)."""
        ...

    def set_allowed_origins(self, input_id: str, origins: tuple[str, ...]) -> None:
        """The origins browsers may call with the input's key (``()``: any; see
        ``Input.allowed_origins``)."""
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


class ApiClientStore(Protocol):
    """API clients: server-side credentials with scopes (the Profile API's), apart from the
    inputs, whose keys and secrets ship inside apps."""

    def add_client(self, client: ApiClient) -> None:
        """Store a new client; raises :class:`~patchbay.backends.records.DuplicateName` if
        its name (or id) is taken."""
        ...

    def get_client(self, name_or_id: str) -> ApiClient | None:
        """The client with this name or id."""
        ...

    def list_clients(self) -> list[ApiClient]:
        """Every client, oldest first (by name on a tie)."""
        ...

    def set_client_enabled(self, client_id: str, enabled: bool) -> None:
        """Enable or disable a client (a disabled client's requests and tokens get 401)."""
        ...

    def set_client_secret(self, client_id: str, secret_hash: str, at_ms: int) -> None:
        """Replace a client's secret (rotation) and record when."""
        ...

    def remove_client(self, client_id: str) -> bool:
        """Forget a client; whether it existed."""
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

    def commit(
        self,
        changes: StateChanges,
        checkpoint: Checkpoint,
        since: Since | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Apply ``changes`` and record ``checkpoint``, atomically and durably.

        With ``since`` (the positions the commit started from), only if each of its
        partitions is still at that position, checked in the same transaction; otherwise
        nothing is applied and :class:`~patchbay.backends.records.CheckpointMoved` is
        raised (another processor owns the partition now).

        A store that several resolvers share also checks that the links and profiles the
        changes were decided on (``changes.read_links``, ``read_profiles``) are still as
        read, and raises :class:`~patchbay.errors.ResolveConflict` (writing nothing) when
        another commit changed them; a store with one writer may skip this check.
        ``before`` is called once the checks passed, before anything is written, with no
        other commit able to change what was checked until this one ends (an exception
        from it writes nothing)."""
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

    def merged_into(self, mpids: Collection[int]) -> dict[int, list[int]]:
        """For each of ``mpids`` that absorbed users, the MPIDs it absorbed (directly),
        oldest merge first; the others left out."""
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

    def commit(
        self,
        stage: str,
        checkpoint: Checkpoint,
        since: Since | None = None,
        synced: bool = True,
    ) -> None:
        """Record durably that ``stage`` finished everything up to ``checkpoint``; with
        ``since``, only if it is still at those positions (see :meth:`StateStore.commit`).
        ``synced=False``: durable once this process returns, not yet through a power
        failure (the positions of a stage that commits its own checkpoint with its state:
        they only bound what it reads back, and a batch read again is skipped)."""
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


class KitStore(Protocol):
    """Web SDK kits (client-side integrations), their connections to web inputs, and the
    forwarding totals the SDK reports. :meth:`version` changes with every change of kits or
    connections: the config endpoint's cache is refreshed when it does."""

    def put_kit(self, kit: KitRecord) -> bool:
        """Store ``kit``, replacing the kit of the same key (``created_at_ms`` is kept from
        it); whether it replaced one."""
        ...

    def get_kit(self, key: str) -> KitRecord | None:
        """The kit with this key."""
        ...

    def list_kits(self) -> list[KitRecord]:
        """Every kit, by key."""
        ...

    def delete_kit(self, key: str) -> bool:
        """Remove a kit, unless it has connections (then nothing changes); whether it was
        removed. Its forwarding totals are kept."""
        ...

    def put_kit_connection(self, connection: KitConnection) -> bool:
        """Create or replace the connection of ``connection.kit`` to its input in its
        environment (``created_at_ms`` and ``event_subscription_id`` kept from the one it
        replaces); whether it replaced one. ``secrets`` are stored encrypted where the
        backend writes to disk."""
        ...

    def list_kit_connections(self) -> list[KitConnection]:
        """Every connection, by kit, input, then production before development."""
        ...

    def remove_kit_connection(self, kit: str, input_id: str, development: bool) -> bool:
        """Remove one connection; whether it existed."""
        ...

    def add_forwarded(self, counts: dict[str, int], at_ms: int) -> None:
        """Add ``counts`` (events by kit name) to the totals, last seen at ``at_ms``."""
        ...

    def forwarded(self) -> list[KitForwarded]:
        """The forwarding totals, by kit name."""
        ...

    def version(self) -> int:
        """A number that changes whenever kits or connections change."""
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

    def set_circuit(self, name: str, circuit: Circuit) -> None:
        """Record the state of an output's circuit breaker (shown by ``outputs status``)."""
        ...

    def circuits(self) -> dict[str, Circuit]:
        """The recorded circuit breaker of every output that has one."""
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
    """The durable outbox: one delivery per message and output, until it succeeds.

    Several deliverers may share it: :meth:`due` *leases* what it hands out to its caller
    (``owner``, unique per process) for ``lease_ms``, and hands no delivery another owner
    holds until that lease expires. :meth:`succeeded`, :meth:`succeeded_many`,
    :meth:`retry_at` and :meth:`park` end the lease; given an ``owner``, they act only on a
    delivery that owner holds (or nobody does): a deliverer whose lease expired and was
    taken by another changes nothing of what the other does (docs/scale-out.md).
    """

    def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        """Add the deliveries whose id is new (in one transaction); return how many."""
        ...

    def due(
        self,
        output: str,
        now_ms: int,
        limit: int,
        exclude: Sequence[str] = (),
        owner: str | None = None,
        lease_ms: int = 0,
    ) -> list[Delivery]:
        """Pending deliveries of ``output`` due at ``now_ms``, oldest due first, but those
        in ``exclude`` and those another owner's lease holds at ``now_ms``; leased to
        ``owner`` until ``now_ms + lease_ms`` (in one transaction: two owners never get the
        same delivery while a lease holds). The owner's own leases are handed to it again
        (and renewed). Without an ``owner``: a look at what is due, leased or not, that
        leases nothing."""
        ...

    def succeeded(self, delivery_id: str, owner: str | None = None) -> None:
        """Remove a delivery that was accepted (unless another ``owner`` holds it)."""
        ...

    def succeeded_many(self, delivery_ids: Sequence[str], owner: str | None = None) -> None:
        """Remove deliveries that were accepted, in one transaction (but those another
        ``owner`` holds)."""
        ...

    def retry_at(
        self,
        delivery_id: str,
        attempts: int,
        next_attempt_ms: int,
        error: str,
        owner: str | None = None,
    ) -> None:
        """Record a failed attempt and when to try again, ending the lease (unless another
        ``owner`` holds it)."""
        ...

    def park(
        self, delivery_id: str, attempts: int, error: str, now_ms: int, owner: str | None = None
    ) -> None:
        """Give up on a delivery for now, keeping it with its last error, ending the lease
        (unless another ``owner`` holds it)."""
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


class AudienceStore(Protocol):
    """Audiences and everything the segment stage keeps about them.

    The owner's records (audiences, their connections to outputs) are written by the CLI and
    the admin API; the stage's records (conditions, builds, user states, memberships,
    pending membership changes, its checkpoint) only by the segment stage, in
    :meth:`commit`, so that what it derived and how far it got always agree. ``version``
    changes with every change of the owner's records: the stage reloads them when it does.
    """

    # -- audiences (the owner's) --------------------------------------------------------

    def add_audience(self, audience: AudienceRecord) -> AudienceRecord:
        """Store a new audience, giving it the next id (``audience.id`` is ignored);
        raises :class:`~patchbay.backends.records.DuplicateName` if the name is taken.
        Returns what was stored."""
        ...

    def update_audience(self, audience: AudienceRecord) -> bool:
        """Replace the audience with ``audience.id`` (name, description, definition,
        version, ``updated_at_ms``); whether it existed. Raises
        :class:`~patchbay.backends.records.DuplicateName` if it takes another's name."""
        ...

    def get_audience(self, name_or_id: str | int) -> AudienceRecord | None:
        """The audience with this name (``str``) or id (``int``)."""
        ...

    def list_audiences(self) -> list[AudienceRecord]:
        """Every audience, by id."""
        ...

    def delete_audience(self, audience_id: int) -> bool:
        """Remove an audience with its connections, build, memberships and pending
        membership changes; whether it existed. Its id is never given again."""
        ...

    def version(self) -> int:
        """A number that changes whenever audiences or audience connections change."""
        ...

    # -- connections to outputs (the owner's; the partner's answer from delivery) --------

    def put_audience_connection(self, connection: AudienceConnection) -> None:
        """Create or replace the connection of ``connection.audience_id`` to
        ``connection.output`` (``partner_settings`` and ``subscribed_at_ms`` are kept from
        the connection it replaces)."""
        ...

    def list_audience_connections(self) -> list[AudienceConnection]:
        """Every audience connection, by audience then output."""
        ...

    def remove_audience_connection(self, audience_id: int, output: str) -> bool:
        """Remove a connection and its pending membership changes; whether it existed."""
        ...

    def subscribed(
        self, audience_id: int, output: str, partner_settings: dict[str, str], at_ms: int
    ) -> bool:
        """Record that the output accepted the subscription, with the settings the partner
        answered; whether the connection exists."""
        ...

    # -- the segment stage's state ------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The last log position the stage's state includes, by partition."""
        ...

    def conditions(self) -> list[ConditionRecord]:
        """Every registered condition, by id."""
        ...

    def builds(self) -> list[AudienceBuild]:
        """The build of every audience that has one, by audience id."""
        ...

    def users(self, mpids: Collection[int]) -> dict[int, SegmentUser]:
        """The states of those of ``mpids`` that have one."""
        ...

    def scan_users(self, after: int | None, limit: int) -> list[SegmentUser]:
        """Up to ``limit`` user states with an MPID above ``after``, by MPID."""
        ...

    def count_users(self) -> int:
        """How many users have a state."""
        ...

    def due_users(self, now_ms: int, limit: int) -> list[int]:
        """Up to ``limit`` MPIDs whose ``next_check_ms`` is at or before ``now_ms``,
        earliest first."""
        ...

    def commit(
        self,
        changes: SegmentChanges,
        checkpoint: Checkpoint | None = None,
        since: Since | None = None,
    ) -> None:
        """Apply ``changes`` and, if given, record ``checkpoint``, atomically (with
        ``since``, only if the stage's checkpoint is still there: see
        :meth:`StateStore.commit`): visible to
        every reader and surviving a crash of the process once it returns, surviving a
        power failure after the next :meth:`sync` (everything committed here is derived
        from the log and the checkpoint goes with it, so a commit lost that way is made
        again). Joins and leaves of audiences that no longer exist are ignored."""
        ...

    def sync(self) -> None:
        """Make every :meth:`commit` so far survive a power failure (before what they
        recorded has effects elsewhere: membership changes put in the outbox)."""
        ...

    def members(self, audience_id: int, after: int | None, limit: int) -> list[int]:
        """Up to ``limit`` MPIDs above ``after`` in the audience, ascending."""
        ...

    def sizes(self) -> dict[int, int]:
        """How many members each audience has (audiences without members left out)."""
        ...

    def memberships(self, mpid: int) -> list[int]:
        """The ids of the audiences ``mpid`` belongs to, ascending."""
        ...

    def pending(self, output: str, limit: int) -> list[PendingChange]:
        """Up to ``limit`` membership changes waiting for ``output``, by seq."""
        ...

    def pending_outputs(self) -> dict[str, tuple[int, int]]:
        """For each output with membership changes waiting: how many, and when the oldest
        happened (``at_ms``)."""
        ...

    def reset(self) -> None:
        """Forget every condition, build, user state, membership, pending change and the
        checkpoint (the audiences and their connections stay): before a full replay."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class StoreFiles(Protocol):
    """The files a backend keeps its stores in: their size, and space freed inside them
    (rows deleted) given back."""

    def sizes(self) -> dict[str, int]:
        """The bytes each store takes on disk, by file name (none for a backend in memory)."""
        ...

    def reclaim(self, keep_min_bytes: int, keep_fraction: float, pause_s: float = 0.0) -> int:
        """Give the space freed inside each file back to the file system, in short steps
        ``pause_s`` apart, but for ``max(keep_min_bytes, keep_fraction x the bytes in use)``
        kept for reuse (writes reuse free space: a store under steady load neither grows
        nor churns); return how many bytes were given back."""
        ...


@dataclass
class Backend:
    """All the stores of one backend, opened together and closed together."""

    #: The backend's name (``sqlite``, ``memory``).
    name: str
    log: BatchLog
    dedup: DedupIndex
    inputs: InputStore
    api_clients: ApiClientStore
    state: StateStore
    positions: StagePositions
    modules: ModuleStore
    outputs: OutputStore
    outbox: Outbox
    audiences: AudienceStore
    files: StoreFiles
    kits: KitStore
    #: The schema scripts opening applied, by component (``patchbay db upgrade`` shows
    #: them); a backend without versioned schemas has none.
    migrations: dict[str, int] = field(default_factory=dict)
    #: What else closing releases once the stores are closed (a connection pool).
    resources: tuple[Closeable, ...] = ()

    def close(self) -> None:
        """Close every store (each once, even where one object serves several roles), then
        :attr:`resources`."""
        closed: set[int] = set()
        stores: tuple[Closeable, ...] = (
            self.log,
            self.dedup,
            self.inputs,
            self.api_clients,
            self.state,
            self.positions,
            self.modules,
            self.outputs,
            self.outbox,
            self.audiences,
            self.kits,
        )
        for store in (*stores, *self.resources):
            if id(store) not in closed:
                closed.add(id(store))
                store.close()
