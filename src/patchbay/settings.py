"""Settings of Patchbay, with their defaults: one frozen object for the server, every
command and the delivery process (filled by :func:`patchbay.config.load_settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

#: mParticle's request size limit for ``/v2/events`` and ``/v2/bulkevents``.
DEFAULT_MAX_REQUEST_BYTES = 256 * 1024
#: mParticle's limit of batches in one bulk request.
DEFAULT_MAX_BATCHES = 100
#: How long a ``source_request_id`` is remembered (mParticle keeps it 30 to 60 days).
DEFAULT_DEDUP_WINDOW_S = 30 * 24 * 3600.0
#: Largest request line and headers of one HTTP request (431 beyond it).
DEFAULT_MAX_HEADER_BYTES = 64 * 1024

#: How long the log keeps batches every stage has handled (a week).
DEFAULT_LOG_RETENTION_S = 7 * 24 * 3600.0

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Timeout = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
#: What one ``serve`` runs (docs/scale-out.md): the HTTP APIs, the pipeline, the delivery
#: engine, or all three.
Role = Literal["ingest", "process", "deliver", "all"]
#: The roles ``all`` stands for.
ROLES: tuple[Role, ...] = ("ingest", "process", "deliver")


class Secret:
    """A secret value: shown as ``***`` by ``repr`` and ``str``, read with :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Everything Patchbay can be told (docs/configuration.md lists each one)."""

    #: Where state is kept: ``sqlite`` (files in ``data_dir``) or ``memory`` (tests only).
    backend: Literal["sqlite", "memory"] = "sqlite"
    data_dir: Path = Path("patchbay-data")
    #: The batch log in Apache Kafka, ``kafka://HOST:PORT[,HOST:PORT...]`` (``None``: in the
    #: data directory); needs ``state`` (docs/scale-out.md).
    log: str | None = None
    #: The state in PostgreSQL, ``postgresql://USER[:PASSWORD]@HOST:PORT/DB`` (``None``: in
    #: the data directory); never shown.
    state: Secret | None = None
    #: The Kafka topic of the batch log, its partitions and replication factor (used when
    #: the topic is created).
    kafka_topic: str = "patchbay.batches"
    kafka_partitions: Positive = 12
    kafka_replication_factor: Positive = 1
    #: The Kafka consumer group processors share the log's partitions in, and how long the
    #: group waits for a member that stopped heartbeating (killed) before it moves the
    #: member's partitions to the others.
    kafka_group: str = "patchbay-process"
    kafka_session_timeout_s: Timeout = 10.0
    #: librdkafka properties of every Kafka client Patchbay makes, then those added for its
    #: producers and for its consumers (TLS, SASL, tuning); the values of secret ones are
    #: :class:`Secret`. Checked in config.py (patchbay/backends/kafka/options.py).
    kafka_options: dict[str, str | Secret] = {}
    kafka_producer_options: dict[str, str | Secret] = {}
    kafka_consumer_options: dict[str, str | Secret] = {}
    #: Connections each process keeps to PostgreSQL.
    state_pool_size: Positive = 8
    #: What ``serve`` runs: ``all``, or some of ``ingest``, ``process``, ``deliver`` (the
    #: scale-out mode only; see :func:`patchbay.server.create_app`).
    roles: Annotated[tuple[Role, ...], msgspec.Meta(min_length=1)] = ("all",)
    host: str = "127.0.0.1"
    port: Port = 8080
    #: HTTPS: the certificate chain (PEM, the server's first) and its unencrypted private
    #: key (PEM), both or neither (``None``: plain HTTP); see patchbay/http/tls.py.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_request_bytes: Positive = DEFAULT_MAX_REQUEST_BYTES
    max_batches_per_request: Positive = DEFAULT_MAX_BATCHES
    dedup_window_s: Seconds = DEFAULT_DEDUP_WINDOW_S
    # Slow and oversized requests (patchbay.http.protocol).
    max_header_bytes: Positive = DEFAULT_MAX_HEADER_BYTES
    #: Seconds a client has to send a request's line and headers.
    header_timeout_s: Timeout = 10.0
    #: Seconds a client has to send a whole body, from the end of its headers.
    body_timeout_s: Timeout = 30.0
    #: Open HTTP connections ``serve`` keeps; one more is answered 503 and closed.
    max_connections: Positive = 1000
    #: How long batches stay in the log once every stage has them (0: for ever); see
    #: patchbay/retention.py.
    log_retention_s: Seconds = DEFAULT_LOG_RETENTION_S
    #: The most bytes of batches the log keeps (0: no limit).
    log_retention_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    durability: Literal["full", "normal"] = "full"
    log_level: str = "info"
    #: Seconds between two throughput summaries in the log (0: none); see summary.py.
    log_summary_interval_s: Seconds = 60.0
    identity_strategy: Path | None = None
    #: Run the delivery engine in a process of its own.
    delivery_process: bool = True
    #: Run the segment stage (audiences) in a process of its own.
    segment_process: bool = True
    #: Enables the admin HTTP API; never shown.
    admin_token: Secret | None = None
    #: A file holding the admin token (read by :func:`patchbay.config.load_settings` into
    #: ``admin_token``; better than the command line, which other users can see).
    admin_token_file: Path | None = None
    #: When set, ``/metrics`` requires ``Authorization: Bearer <token>``; never shown.
    metrics_token: Secret | None = None
    #: A file holding the metrics token (read into ``metrics_token``).
    metrics_token_file: Path | None = None
    #: The key file of the stored partner credentials (default: ``secrets.key`` in
    #: ``data_dir``; see :mod:`patchbay.secretbox`).
    secrets_key_file: Path | None = None
    # The delivery engine (patchbay.activate.engine.EngineConfig.from_settings).
    delivery_concurrency: Positive = 32
    delivery_timeout_s: Seconds = 10.0
    delivery_connect_timeout_s: Seconds = 5.0
    delivery_base_delay_s: Seconds = 1.0
    delivery_max_delay_s: Seconds = 300.0
    delivery_max_age_s: Seconds = 24 * 3600.0
    delivery_poll_s: Seconds = 0.25
    delivery_page: Positive = 256
    delivery_ack_delay_s: Seconds = 0.005
    delivery_ack_max: Positive = 512
    delivery_breaker_failures: Positive = 3
    #: How long a delivery read from the outbox stays this process's alone (several
    #: deliverers share the outbox); longer than a send can take (checked in config.py).
    delivery_lease_s: Timeout = 60.0
    delivery_probe_max_delay_s: Seconds = 10.0
    #: Where file outputs may write (``None``: ``<data_dir>/outputs``); see activate/files.py.
    outputs_dir: Path | None = None
    #: CIDRs and host names outputs and modules may send to (``None``: any address but the
    #: always refused ones); see activate/targets.py.
    allowed_targets: tuple[str, ...] | None = None
    #: Addresses and CIDRs of the reverse proxies whose ``X-Forwarded-For`` and
    #: ``X-Forwarded-Proto`` are believed (none: those headers are ignored, whoever sends
    #: them, and a request's address is its peer's).
    trusted_proxies: tuple[str, ...] = ()

    def runs(self, role: Role) -> bool:
        """Whether ``serve`` runs ``role`` (one of :data:`ROLES`)."""
        return role in self.roles or "all" in self.roles

    @property
    def scaled_roles(self) -> bool:
        """Whether ``serve`` runs a part of the work only (not ``all``)."""
        return not all(self.runs(role) for role in ROLES)
