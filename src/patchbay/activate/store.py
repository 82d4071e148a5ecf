"""The outbox's interface: outputs, connections and deliveries, and the records they hold.

The embedded backend is :class:`patchbay.store.sqlite_deliveries.SqliteDeliveryStore`
(``deliveries.db`` in the data directory). A delivery is one message for one output; its
``id`` is the message id the output receives, stable across retries, replays of the resolve
stage and ``patchbay deliveries replay``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

#: What an output is: a registered Firehose module, a generic webhook, or a JSON-lines file.
OutputKind = Literal["module", "webhook", "file"]

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


class Output(msgspec.Struct, frozen=True):
    """A configured destination. ``module``: the registered module (kind ``module``);
    ``url``: the webhook URL; ``path``: the JSON-lines file. ``settings`` are the account
    settings (module) or the webhook's options, as strings; confidential values must never
    be printed. ``paused_reason`` says why a paused output is paused."""

    name: str
    kind: OutputKind
    created_at_ms: int
    updated_at_ms: int
    module: str | None = None
    url: str | None = None
    path: str | None = None
    settings: dict[str, str] = {}
    paused: bool = False
    paused_reason: str | None = None

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
    the retry window (reset by a replay); ``next_attempt_ms`` is when it is due."""

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


class QueueStats(msgspec.Struct, frozen=True):
    """An output's queue: pending and parked deliveries and the oldest pending one."""

    pending: int = 0
    parked: int = 0
    oldest_pending_ms: int | None = None


class DuplicateOutput(Exception):
    """An output or connection with this name already exists."""


class DeliveryStore(Protocol):
    """Outputs, connections and the durable outbox of deliveries."""

    # -- outputs
    def add_output(self, output: Output) -> None:
        """Create ``output``; raises :class:`DuplicateOutput` if the name is taken."""
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

    # -- connections
    def add_connection(self, connection: Connection) -> None:
        """Create ``connection``; raises :class:`DuplicateOutput` if the input is already
        connected to the output."""
        ...

    def list_connections(self) -> list[Connection]:
        """Every connection, by input then output."""
        ...

    def remove_connection(self, connection_id: str) -> bool:
        """Remove a connection; whether it existed."""
        ...

    # -- deliveries
    def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        """Add the deliveries whose id is new (in one transaction); return how many."""
        ...

    def due(
        self, output: str, now_ms: int, limit: int, exclude: Sequence[str] = ()
    ) -> list[Delivery]:
        """Pending deliveries of ``output`` due at ``now_ms``, oldest due first."""
        ...

    def next_due_ms(self, output: str) -> int | None:
        """When the next pending delivery of ``output`` is due."""
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
