"""The storage interfaces: the batch log, its readers' offsets, and the inputs.

A backend (SQLite now, PostgreSQL and Kafka later) implements :class:`Store`. The rest of
Patchbay sees only these types, and ``tests/store/test_contract.py`` runs the same suite
against every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec


class NewBatch(msgspec.Struct, frozen=True):
    """A validated batch about to be appended, with the stamps of its request."""

    batch_id: str
    input_id: str
    received_at_ms: int
    channel: str
    body: bytes
    ip: str | None = None
    source_request_id: str | None = None
    historical: bool = False


class StoredBatch(msgspec.Struct, frozen=True):
    """A batch in the log: its offset, its stamps and the batch JSON as received."""

    offset: int
    batch_id: str
    input_id: str
    received_at_ms: int
    channel: str
    body: bytes
    ip: str | None = None
    historical: bool = False


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: the offsets written, in order, and the duplicates skipped.

    ``offsets[i]`` is the offset of the i-th batch, or ``None`` where it was a duplicate of
    a batch already stored (same input and ``source_request_id`` within the window).
    """

    offsets: list[int | None] = field(default_factory=list)

    @property
    def stored(self) -> int:
        """How many batches were written."""
        return sum(1 for o in self.offsets if o is not None)

    @property
    def duplicates(self) -> int:
        """How many batches were skipped as duplicates."""
        return len(self.offsets) - self.stored


class Input(msgspec.Struct, frozen=True):
    """A source of data: a platform input (``ios``, ``web``, ``server``...) or a partner feed."""

    id: str
    name: str
    type: str
    rate_limit: float
    enabled: bool
    created_at_ms: int


class Credential(msgspec.Struct, frozen=True):
    """An input's API key and the hash of its secret."""

    key: str
    input_id: str
    secret_hash: str
    created_at_ms: int
    enabled: bool


class BatchLog(Protocol):
    """An append-only log of batches with per-consumer committed offsets."""

    def append(self, batches: Sequence[NewBatch], dedup_since_ms: int) -> AppendResult:
        """Append ``batches`` atomically and durably; return once they are committed.

        A batch whose (input, ``source_request_id``) was stored at or after
        ``dedup_since_ms`` is skipped, as is a repeat within ``batches``.
        """
        ...

    def read(self, after: int, limit: int) -> list[StoredBatch]:
        """Up to ``limit`` batches with an offset greater than ``after``, oldest first."""
        ...

    def last_offset(self) -> int:
        """The offset of the newest batch (0 when the log is empty)."""
        ...

    def committed(self, consumer: str) -> int:
        """The last offset ``consumer`` committed (0 when it never did)."""
        ...

    def commit(self, consumer: str, offset: int) -> None:
        """Record durably that ``consumer`` has processed everything up to ``offset``."""
        ...

    def forget_dedup_before(self, before_ms: int) -> int:
        """Drop de-duplication entries older than ``before_ms``; return how many."""
        ...


class InputStore(Protocol):
    """Inputs and their credentials."""

    def add_input(self, item: Input, credential: Credential) -> None:
        """Store a new input with its first credential (names are unique)."""
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


class Store(BatchLog, InputStore, Protocol):
    """Everything the collect stage needs from a backend."""

    def close(self) -> None:
        """Release connections and files."""
        ...


class DuplicateName(Exception):
    """An input with this name already exists."""


class ModuleRecord(msgspec.Struct, frozen=True):
    """A registered partner module (a Firehose integration): how to reach it, what it
    declared in its ``module_registration_response``, and when it registered.

    ``name`` is Patchbay's key for the module (the CLI's NAME); ``display_name`` is the
    ``name`` the partner registered. ``transport`` is ``"http"`` (``url`` and ``token``) or
    ``"lambda"`` (``lambda_function``, ``lambda_region``, ``lambda_endpoint_url``).
    ``token`` is the secret sent as ``Authorization: Token <token>``: it is kept so the
    platform can call the partner, hidden from ``repr``, and must never be printed.
    Settings and permissions are the registration's JSON objects (see
    ``patchbay.firehose.registration``); ``registration`` is the raw response as received.
    """

    name: str
    display_name: str
    version: str
    transport: str
    registration: bytes
    created_at_ms: int
    updated_at_ms: int
    description: str | None = None
    sdk_version: str | None = None
    url: str | None = None
    token: str | None = None
    lambda_function: str | None = None
    lambda_region: str | None = None
    lambda_endpoint_url: str | None = None
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
        token = "<set>" if self.token else None
        return (
            f"ModuleRecord(name={self.name!r}, version={self.version!r},"
            f" transport={self.transport!r}, token={token})"
        )


class ModuleRegistrationEntry(msgspec.Struct, frozen=True):
    """One registration a module sent, kept as history."""

    name: str
    version: str
    registered_at_ms: int
    registration: bytes


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
