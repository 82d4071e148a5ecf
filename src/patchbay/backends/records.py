"""The records the storage interfaces (:mod:`patchbay.backends.abstract`) take and return.

Plain msgspec structs with no behaviour beyond small conveniences: every backend stores and
returns exactly these, so a stage never sees which backend it runs on.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import msgspec

from patchbay.errors import PatchbayError
from patchbay.partner.targets import Target
from patchbay.resolve.identities import Identity
from patchbay.resolve.profile import Profile

# -- the batch log -------------------------------------------------------------------------


class LogPosition(msgspec.Struct, frozen=True, order=True, array_like=True):
    """Where a batch is in the log: a partition and an offset within it.

    Offsets compare only within one partition and callers never compute with them (a log
    may skip offsets, and a partitioned log numbers each partition on its own). Written
    ``P:O``; the embedded log has the one partition 0.
    """

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> LogPosition:
        """``P:O``, or ``O`` alone for partition 0; ``ValueError`` for anything else."""
        partition, _, offset = text.rpartition(":")
        try:
            parsed = cls(int(partition or 0), int(offset))
        except ValueError:
            raise ValueError(
                f"not a log position: {text!r} (expected OFFSET or P:OFFSET)"
            ) from None
        if parsed.partition < 0 or parsed.offset < 0:
            raise ValueError(f"not a log position: {text!r} (negative)")
        return parsed


#: How far a consumer got: the last position it finished, by partition.
Checkpoint = dict[int, LogPosition]


class LogEntry(msgspec.Struct, frozen=True):
    """A batch as retention sees it: where it is, when it was received and its size (the
    length of its body, as received)."""

    position: LogPosition
    received_at_ms: int
    size: int


class LogExtent(msgspec.Struct, frozen=True):
    """What one partition of the log retains: how many batches, their size (bodies, as
    :class:`LogEntry`), and the newest batch retention removed (``None``: none ever)."""

    batches: int
    size: int
    removed: LogPosition | None = None


#: Where a checkpointed commit started from, by partition (``None``: the partition had no
#: position yet): the commit applies only if every one is still the stored position.
Since = Mapping[int, LogPosition | None]


class CheckpointMoved(PatchbayError):
    """A checkpointed commit was refused: the stored position of ``partitions`` is no longer
    where the commit started from (another processor owns them now and moved them on).
    Nothing of the commit was applied; the caller drops what it made and starts again
    from the stored checkpoint."""

    def __init__(self, where: str, partitions: Collection[int]) -> None:
        self.partitions = sorted(partitions)
        super().__init__(f"{where}: the checkpoint of partitions {self.partitions} moved")


def moved(stored: Checkpoint, since: Since | None) -> list[int]:
    """The partitions of ``since`` whose stored position is not the one given (none when
    ``since`` is ``None``: an unconditional commit)."""
    return sorted(p for p, pos in (since or {}).items() if stored.get(p) != pos)


def check_since(where: str, stored: Checkpoint, since: Since | None) -> None:
    """Raise :class:`CheckpointMoved` if a partition of ``since`` moved (see :func:`moved`)."""
    if gone := moved(stored, since):
        raise CheckpointMoved(where, gone)


def advance(checkpoint: Checkpoint, positions: list[LogPosition]) -> Checkpoint:
    """``checkpoint`` moved past ``positions`` (each partition to its highest)."""
    moved = dict(checkpoint)
    for position in positions:
        current = moved.get(position.partition)
        if current is None or position > current:
            moved[position.partition] = position
    return moved


def lowest(*checkpoints: Checkpoint) -> Checkpoint:
    """How far all of ``checkpoints`` got: each partition at its lowest, and only the
    partitions every one of them has."""
    if not checkpoints:
        return {}
    low = dict(checkpoints[0])
    for checkpoint in checkpoints[1:]:
        low = {
            p: min(pos, mine) for p, pos in low.items() if (mine := checkpoint.get(p)) is not None
        }
    return low


class NewBatch(msgspec.Struct, frozen=True):
    """A validated batch about to be appended, with the stamps of its request.

    ``partition_key`` is its user's key (:func:`patchbay.collect.userkey.user_key`), or
    ``None`` when it names nobody; a partitioned log places the batch by :meth:`partition`.
    """

    batch_id: str
    input_id: str
    received_at_ms: int
    channel: str
    body: bytes
    ip: str | None = None
    source_request_id: str | None = None
    historical: bool = False
    partition_key: str | None = None

    @property
    def log_key(self) -> str:
        """What places the batch: its user's key; without one, its input and
        ``source_request_id`` (a retry's too), or its random id (a random spread)."""
        if self.partition_key is not None:
            return self.partition_key
        return self.input_id + "/" + (self.source_request_id or self.batch_id)

    def partition(self, partitions: int) -> int:
        """The partition of a log of ``partitions`` this batch goes to: the CRC-32 of
        :attr:`log_key`, so one user's batches share a partition on every log."""
        return zlib.crc32(self.log_key.encode()) % partitions


class StoredBatch(msgspec.Struct, frozen=True):
    """A batch in the log: its offset (in ``partition``), stamps and the JSON as received."""

    offset: int
    batch_id: str
    input_id: str
    received_at_ms: int
    channel: str
    body: bytes
    ip: str | None = None
    historical: bool = False
    partition: int = 0
    source_request_id: str | None = None

    @property
    def position(self) -> LogPosition:
        """Where the batch is in the log."""
        return LogPosition(self.partition, self.offset)


#: A batch's de-duplication key: its input and its ``source_request_id``.
DedupKey = tuple[str, str]


# -- inputs --------------------------------------------------------------------------------


class Input(msgspec.Struct, frozen=True):
    """A source of data: a platform input (``ios``, ``web``, ``server``...) or a partner feed."""

    id: str
    name: str
    type: str
    rate_limit: float
    enabled: bool
    created_at_ms: int
    #: Whether IDSync accepts this input's key alone (``x-mp-key``, no secret). Web inputs
    #: always do and server and feed inputs never do, whatever this says
    #: (:func:`patchbay.collect.inputs.key_only_allowed`).
    idsync_key_only: bool = False
    #: The origins (``scheme://host[:port]``) whose pages may call the Web SDK's endpoints
    #: with this input's key; empty: any origin (:mod:`patchbay.http.cors`).
    allowed_origins: tuple[str, ...] = ()


class Credential(msgspec.Struct, frozen=True):
    """An input's API key, the hash of its secret and, for client inputs, the secret sealed
    with the secrets key (what IDSync needs to check an HMAC signature; see
    :meth:`patchbay.secretbox.SecretBox.seal_bound`). ``None`` for server and feed inputs
    and for keys made before Patchbay sealed secrets."""

    key: str
    input_id: str
    secret_hash: str
    created_at_ms: int
    enabled: bool
    secret_sealed: str | None = None


class DuplicateName(PatchbayError):
    """An input, API client, output or connection with this name already exists."""


# -- API clients ---------------------------------------------------------------------------


class ApiClient(msgspec.Struct, frozen=True):
    """A server-side client of Patchbay's APIs (the Profile API): its id (the OAuth
    ``client_id``), a unique name, the scopes it holds, and the hash of its secret.

    ``secret_set_at_ms`` is when the secret was made (created or last rotated)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    secret_hash: str
    enabled: bool
    created_at_ms: int
    secret_set_at_ms: int


class StoreMissing(PatchbayError):
    """There is no store where the settings point (and it was not to be created):
    ``data_dir`` is the directory, or the database's URL (its password masked)."""

    def __init__(self, data_dir: Path | str) -> None:
        super().__init__(f"no Patchbay data at {data_dir}")
        self.data_dir = data_dir


class StoreUnavailable(PatchbayError):
    """The store cannot be opened or created: a path that is not a directory, no
    permission, a file that is not a database..."""

    def __init__(self, data_dir: Path | str, reason: str) -> None:
        super().__init__(f"cannot open the Patchbay data at {data_dir}: {reason}")
        self.data_dir = data_dir
        self.reason = reason

    @classmethod
    def of(cls, data_dir: Path, exc: Exception) -> StoreUnavailable:
        """The error for ``exc`` (an ``OSError`` or a database error) met at ``data_dir``."""
        if isinstance(exc, OSError):
            named = exc.filename is not None and Path(exc.filename) != data_dir
            return cls(data_dir, f"{exc.strerror or exc}" + (f" ({exc.filename})" if named else ""))
        return cls(data_dir, str(exc) or type(exc).__name__)


# -- partner modules -----------------------------------------------------------------------


class ModuleRecord(msgspec.Struct, frozen=True):
    """A registered partner module (a Firehose integration): how to reach it, what it
    declared in its ``module_registration_response``, and when it registered.

    ``name`` is Patchbay's key for the module (the CLI's NAME); ``display_name`` is the
    ``name`` the partner registered. ``target`` is where the partner is reached: an
    :class:`~patchbay.partner.targets.HttpTarget` (``url`` and ``token``) or a
    :class:`~patchbay.partner.targets.LambdaTarget` (``function``, ``region``,
    ``endpoint_url``). The HTTP ``token`` is the secret sent as ``Authorization: Token
    <token>``: it is kept so the platform can call the partner, hidden from ``repr``, and
    must never be printed. Settings and permissions are the registration's JSON objects (see
    ``patchbay.firehose.registration``); ``registration`` is the raw response as received.
    """

    name: str
    display_name: str
    version: str
    target: Target
    registration: bytes
    created_at_ms: int
    updated_at_ms: int
    description: str | None = None
    sdk_version: str | None = None
    permissions: dict[str, object] = {}
    account_settings: list[dict[str, object]] = []
    connection_settings: list[dict[str, object]] = []
    audience_subscription_settings: list[dict[str, object]] = []
    supported_event_types: list[str] = []
    supported_runtime_environments: list[str] = []
    supported_system_notification_types: list[str] = []
    audience: bool = False
    dsr: bool = False
    supported_dsr_types: list[str] = []

    def __repr__(self) -> str:
        return f"ModuleRecord(name={self.name!r}, version={self.version!r}, target={self.target!r})"


class ModuleRegistrationEntry(msgspec.Struct, frozen=True):
    """One registration a module sent, kept as history."""

    name: str
    version: str
    registered_at_ms: int
    registration: bytes


# -- embedded (client-side) kits ------------------------------------------------------------


class KitRecord(msgspec.Struct, frozen=True):
    """A registered Web SDK kit (``patchbay.kits``): its key (``name`` or ``name-suffix``, as
    the SDK keys kit constructors), the SDK's kit name and suffix, its module id, and the
    settings it declares (JSON objects, see :mod:`patchbay.kits.descriptor`)."""

    key: str
    name: str
    module_id: int
    created_at_ms: int
    updated_at_ms: int
    suffix: str | None = None
    description: str = ""
    settings: list[dict[str, object]] = []


class KitFilters(msgspec.Struct, frozen=True):
    """What a kit connection keeps from the kit: event types (SDK names, ``Navigation``),
    event names (``TYPE:NAME``, or a name of any custom event type), screen names, user
    attribute names and user identity types (SDK names, ``email``) excluded."""

    event_types: list[str] = []
    event_names: list[str] = []
    screen_names: list[str] = []
    user_attributes: list[str] = []
    user_identities: list[str] = []


class KitConnection(msgspec.Struct, frozen=True):
    """A kit connected to a web input, in production or development: the values of its
    settings (``secrets``: those of confidential settings, sealed at rest), its filters and
    its stable ``event_subscription_id``."""

    kit: str
    input_id: str
    development: bool
    event_subscription_id: int
    created_at_ms: int
    updated_at_ms: int
    settings: dict[str, str] = {}
    secrets: dict[str, str] = {}
    filters: KitFilters = KitFilters()

    def __repr__(self) -> str:  # never the values: some are secrets
        env = "development" if self.development else "production"
        return f"KitConnection(kit={self.kit!r}, input_id={self.input_id!r}, {env})"


class KitForwarded(msgspec.Struct, frozen=True):
    """What the Web SDK reported a kit forwarded: events in total and when last."""

    kit: str
    events: int
    last_seen_ms: int


# -- outputs, connections and the outbox ---------------------------------------------------

#: A delivery waits (``pending``) until it succeeds (and is removed) or is ``parked``.
DeliveryState = Literal["pending", "parked"]


class Filters(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a connection forwards (see :mod:`patchbay.activate.filters`).

    Empty lists mean "no rule". ``environment``: forward only batches of that environment (a
    batch without one counts as ``production``). ``event_types``: keep only these event
    types. ``event_names_keep``/``event_names_drop``: by event name (custom events) or screen
    name (screen views). ``attributes_keep``/``attributes_drop``: event custom attribute
    names. ``sample_percent``: forward this percentage of users, chosen by a hash of the
    mpid. ``consent_purposes``: forward only when every named GDPR purpose is consented.
    """

    environment: str | None = None
    event_types: list[str] = []
    event_names_keep: list[str] = []
    event_names_drop: list[str] = []
    attributes_keep: list[str] = []
    attributes_drop: list[str] = []
    sample_percent: float = 100.0
    consent_purposes: list[str] = []


#: What an output is: a registered Firehose module, a generic webhook, or a JSON-lines file.
OutputKind = Literal["module", "webhook", "file"]


class _Destination(msgspec.Struct, frozen=True, tag_field="kind"):
    @property
    def kind(self) -> OutputKind:
        """``"module"``, ``"webhook"`` or ``"file"``: the destination's tag."""
        return cast(OutputKind, self.__struct_config__.tag)


class ModuleDestination(_Destination, frozen=True, tag="module"):
    """Firehose requests to the registered module named ``module``."""

    module: str


class WebhookDestination(_Destination, frozen=True, tag="webhook"):
    """The resolved batches POSTed as JSON to ``url``."""

    url: str


class FileDestination(_Destination, frozen=True, tag="file"):
    """The resolved batches appended as JSON lines to the file at ``path``."""

    path: str


#: Where an output sends (tagged by ``kind`` when encoded).
Destination = ModuleDestination | WebhookDestination | FileDestination


class Output(msgspec.Struct, frozen=True):
    """A configured destination: ``destination`` says where it sends. ``settings`` are the
    account settings (module) or the webhook's options, as strings; confidential values must
    never be printed. ``paused_reason`` says why a paused output is paused."""

    name: str
    destination: Destination
    created_at_ms: int
    updated_at_ms: int
    settings: dict[str, str] = {}
    paused: bool = False
    paused_reason: str | None = None

    @property
    def kind(self) -> OutputKind:
        """What the output is (its destination's tag)."""
        return self.destination.kind

    def __repr__(self) -> str:
        return f"Output(name={self.name!r}, kind={self.kind!r}, paused={self.paused})"


class Connection(msgspec.Struct, frozen=True):
    """An input joined to an output, with connection settings and filters."""

    id: str
    input_id: str
    output: str
    created_at_ms: int
    settings: dict[str, str] = {}
    filters: Filters = Filters()

    def __repr__(self) -> str:
        return f"Connection(id={self.id!r}, input_id={self.input_id!r}, output={self.output!r})"


class Delivery(msgspec.Struct, frozen=True):
    """One message for one output. ``payload`` is the body sent (JSON). ``since_ms`` starts
    the retry window (reset by a replay); ``next_attempt_ms`` is when it is due.
    ``batch_offset`` is the offset of the batch it came from (informational)."""

    id: str
    output: str
    connection_id: str
    batch_offset: int
    payload: bytes
    created_at_ms: int
    since_ms: int
    next_attempt_ms: int
    state: DeliveryState = "pending"
    attempts: int = 0
    last_error: str | None = None
    parked_at_ms: int | None = None


class Circuit(msgspec.Struct, frozen=True):
    """An output's circuit breaker as last recorded by the delivery engine: ``state``
    (``closed``, ``open`` or ``probing``) since ``since_ms``, with the error that opened
    it."""

    state: str
    since_ms: int
    error: str | None = None


class QueueStats(msgspec.Struct, frozen=True):
    """An output's queue: pending and parked deliveries and the oldest pending one."""

    pending: int = 0
    parked: int = 0
    oldest_pending_ms: int | None = None


# -- the resolve state ---------------------------------------------------------------------


class MergeRecord(msgspec.Struct, frozen=True):
    """Two users became one: ``from_mpid`` was folded into ``to_mpid``, and why.
    ``offset`` is the log offset of the batch that caused it."""

    from_mpid: int
    to_mpid: int
    reason: str
    at_ms: int
    offset: int


@dataclass
class StateChanges:
    """Profiles written, identity links added and removed, merges recorded, and the user
    each resolved batch went to (``resolved``: log position and MPID, in log order)."""

    profiles: dict[int, Profile] = field(default_factory=dict)
    linked: dict[Identity, list[int]] = field(default_factory=dict)
    unlinked: dict[Identity, set[int]] = field(default_factory=dict)
    merges: list[MergeRecord] = field(default_factory=list)
    resolved: list[tuple[LogPosition, int]] = field(default_factory=list)
    #: What the changes were decided on: the links of each identity read (oldest first)
    #: and each profile read (its MessagePack document; ``None``: there was none). A store
    #: that several resolvers write refuses the commit with
    #: :class:`~patchbay.errors.ResolveConflict` when
    #: another commit changed one of them since (optimistic concurrency).
    read_links: dict[Identity, list[int]] = field(default_factory=dict)
    read_profiles: dict[int, bytes | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.profiles or self.linked or self.unlinked or self.merges or self.resolved)


# -- audiences (the segment stage) ---------------------------------------------------------

#: The largest audience id: ids are positive int32, as Firehose carries them.
MAX_AUDIENCE_ID = 2**31 - 1


class AudienceRecord(msgspec.Struct, frozen=True):
    """An audience as defined by its owner (the CLI and the admin API write it; the segment
    stage only reads it). ``definition`` is the definition document as JSON (normalised);
    ``version`` grows with every change of its criteria, so that the stage knows to build
    it again. Ids are positive int32 given by the store in increasing order, never reused."""

    id: int
    name: str
    description: str
    definition: bytes
    created_at_ms: int
    updated_at_ms: int
    version: int = 1


BuildPhase = Literal["scanning", "evaluating", "live"]


class AudienceBuild(msgspec.Struct, frozen=True):
    """How far the segment stage got with computing ``version`` of an audience over the
    stored history (written only by the stage).

    ``scanning``: its new conditions are being counted over the log (the progress is on the
    conditions); ``evaluating``: every known user is being evaluated, in MPID order, up to
    ``cursor``; ``live``: kept up to date as batches arrive."""

    audience_id: int
    version: int
    phase: BuildPhase
    started_at_ms: int
    cursor: int | None = None
    users_done: int = 0
    users_total: int = 0
    finished_at_ms: int | None = None


ConditionStatus = Literal["building", "built", "retired"]


class ConditionRecord(msgspec.Struct, frozen=True):
    """An event condition the segment stage counts for every user (written only by the
    stage). ``key`` is the condition's canonical JSON (what to match, the window and what
    to add up), shared by every audience that uses the same one. A new condition is counted
    over the log up to ``target`` (the stage's checkpoint when it was registered; batches
    after it are counted live): ``reached`` is how far, ``scanned`` how many batches. A
    condition no audience uses any more is ``retired`` (no longer counted; needed again, it
    is registered anew under a new id)."""

    id: int
    key: str
    status: ConditionStatus
    target: Checkpoint = {}
    reached: Checkpoint = {}
    scanned: int = 0


class Tally(msgspec.Struct, array_like=True, gc=False):
    """A user's matching events for one condition: ``count`` and ``total`` (the sum of the
    measured value) over all time, or, for a windowed condition, ``events`` as
    ``[time_ms, value]`` pairs still inside the window, oldest first."""

    count: int = 0
    # (whole values are kept as integers: one byte each instead of nine when stored)
    total: int | float = 0
    events: list[tuple[int, int | float]] = []


class SegmentUser(msgspec.Struct, kw_only=True):
    """The segment stage's state of one user: the tallies of its event conditions (by
    condition id), the environments it was seen in, the audiences it belongs to (ids,
    sorted), when its windows next change (``None``: never), and what it last saw of the
    profile facts audiences read (``facts``: ``"attr:KEY"``, ``"identity:TYPE"``,
    ``"consent:REGULATION:PURPOSE"``, ``"input:NAME"``; absent when the user has none),
    so that a batch re-evaluates only what changed, and which reads those were
    (``facts_for``: the checksum of the audiences' profile reads then; 0: unknown), so that
    a window expiry evaluates from them without reading the profile."""

    mpid: int
    tallies: dict[int, Tally] = {}
    environments: list[str] = []
    audiences: list[int] = []
    next_check_ms: int | None = None
    facts: dict[str, Any] = {}
    facts_for: int = 0


AudienceAction = Literal["add", "delete", "attribute_update"]


class PendingChange(msgspec.Struct, frozen=True):
    """A membership change waiting to be sent to an output: ``seq`` is given by the store,
    increasing, never reused; ``at_ms`` is when it happened."""

    seq: int
    output: str
    audience_id: int
    mpid: int
    action: AudienceAction
    at_ms: int


class NewPendingChange(msgspec.Struct, frozen=True):
    """A membership change to record (the store gives it its ``seq``)."""

    output: str
    audience_id: int
    mpid: int
    action: AudienceAction
    at_ms: int


class AudienceConnection(msgspec.Struct, frozen=True):
    """An audience sent to an output, with the subscription settings the customer gave
    (``settings``), the user attributes to send with its members (``attributes``) and what
    the partner answered to the subscription (``partner_settings``, sent back in every
    membership change). Membership changes wait until the partner accepted the subscription
    (``subscribed_at_ms``)."""

    audience_id: int
    output: str
    created_at_ms: int
    settings: dict[str, str] = {}
    attributes: list[str] = []
    partner_settings: dict[str, str] = {}
    subscribed_at_ms: int | None = None

    def __repr__(self) -> str:
        return f"AudienceConnection(audience_id={self.audience_id}, output={self.output!r})"


@dataclass
class SegmentChanges:
    """What one step of the segment stage changes, committed together with its checkpoint:
    user states written (``users``) or dropped (merged away), memberships joined and left
    (``(audience_id, mpid)``), membership changes to send (``pending``) and those sent
    (``flushed``: their seqs), and the stage's own records of conditions and builds."""

    users: list[SegmentUser] = field(default_factory=list)
    dropped_users: list[int] = field(default_factory=list)
    joined: list[tuple[int, int]] = field(default_factory=list)
    left: list[tuple[int, int]] = field(default_factory=list)
    pending: list[NewPendingChange] = field(default_factory=list)
    flushed: list[int] = field(default_factory=list)
    conditions: list[ConditionRecord] = field(default_factory=list)
    builds: list[AudienceBuild] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.users
            or self.dropped_users
            or self.joined
            or self.left
            or self.pending
            or self.flushed
            or self.conditions
            or self.builds
        )
