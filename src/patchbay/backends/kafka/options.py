"""The librdkafka properties a user adds to the Kafka clients Patchbay makes
(:class:`KafkaOptions`): ``kafka_options`` for every client (the admin client, the
producer, the log's consumers and the processors' group consumer), ``kafka_producer_options``
and ``kafka_consumer_options`` on top of them for the producer and the consumers.

They are how Patchbay reaches a secured cluster (``security.protocol``, ``sasl.*``,
``ssl.*``) and how its clients are tuned. The properties Patchbay sets for correctness are
refused (:data:`REFUSED`, each with the reason); the tuning ones it sets (:data:`TUNABLE`)
give way to the options. The values of properties that hold secrets (:func:`is_secret`) are
kept as :class:`~patchbay.settings.Secret` and revealed only in a client's configuration.

This module does not import the client library: the settings are checked without it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from patchbay.settings import Secret, Settings

#: One options setting: property name to value.
Options = Mapping[str, str | Secret]

_SAME_APPENDS = "appends wait for every in-sync replica (acks=all)"
_SAME_TIMEOUT = (
    "an append gives up after the log's timeout, and the producer goes on with its sends for"
    " two minutes (a send given up on may still be stored: an append of the same batch waits"
    " for it rather than send it again)"
)
_NO_COMMITS = "nothing is committed to Kafka: the positions are kept with the state"
_BROKERS = "the brokers are the log setting's (--log kafka://HOST:PORT[,HOST:PORT...])"
_GROUP = (
    "the processors' group is kafka_group, and the log's readers join none (partitions"
    " are assigned)"
)

#: The properties Patchbay sets (or relies on) for correctness, and why: refused in every
#: options setting (their librdkafka aliases too).
REFUSED: dict[str, str] = {
    "bootstrap.servers": _BROKERS,
    "metadata.broker.list": _BROKERS,
    "enable.idempotence": "appends are idempotent: a batch sent again is never stored twice",
    "acks": _SAME_APPENDS,
    "request.required.acks": _SAME_APPENDS,
    "message.timeout.ms": _SAME_TIMEOUT,
    "delivery.timeout.ms": _SAME_TIMEOUT,
    "transactional.id": "the log writes no transactions: its offsets are one per batch",
    "isolation.level": "the log has no transactions: a read takes every message",
    "group.id": _GROUP,
    "group.instance.id": "every processor would claim the same static membership",
    "group.protocol": "the processors' group uses the classic protocol with the"
    " cooperative-sticky assignor",
    "partition.assignment.strategy": "the processors' group uses cooperative-sticky: a"
    " rebalance moves only the partitions it must",
    "session.timeout.ms": "set by kafka_session_timeout_s",
    "heartbeat.interval.ms": "derived from kafka_session_timeout_s",
    "enable.auto.commit": _NO_COMMITS,
    "enable.auto.offset.store": _NO_COMMITS,
    "auto.offset.reset": "a read starts at the offset Patchbay asks for",
    "enable.partition.eof": "a read takes a message carrying an error for a failure",
    "logger": "librdkafka's lines go to Patchbay's log",
}
#: The properties Patchbay sets to tune its clients, which the options may override.
TUNABLE: tuple[str, ...] = (
    "socket.timeout.ms",
    "topic.metadata.refresh.interval.ms",
    "linger.ms",
    "compression.type",
    "fetch.wait.max.ms",
)
#: Properties that hold secrets without saying so in their name.
_SECRET_KEYS = frozenset({"ssl.key.pem", "sasl.oauthbearer.config"})
_KEY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
#: The scalar values a property takes (a TOML file may give numbers and booleans).
_Scalar = str | bool | int | float


def is_secret(key: str) -> bool:
    """Whether the property ``key`` holds a secret (a password, a client secret, a key)."""
    return "password" in key or "secret" in key or key in _SECRET_KEYS


def check_options(raw: Mapping[str, Any]) -> dict[str, str | Secret]:
    """The options ``raw`` (property name to a string, number or boolean, or a table of
    the next part of the name, as in TOML's ``sasl.mechanism = "PLAIN"``) as strings, the
    secrets as :class:`~patchbay.settings.Secret`; ``ValueError`` naming the first property
    that cannot be given, never its value."""
    checked: dict[str, str | Secret] = {}
    for key, value in _flat(raw):
        if not _KEY.fullmatch(key):
            raise ValueError(
                f"{key!r} is not a librdkafka property name (lower-case words joined by '.')"
            )
        if key.endswith("_cb") or key in ("on_delivery", "on_commit"):
            raise ValueError(f"{key} is a Python callback, which a setting cannot give")
        if key in REFUSED:
            raise ValueError(f"{key} is set by Patchbay and cannot be changed: {REFUSED[key]}")
        if isinstance(value, Secret):
            text = value.reveal()
        elif isinstance(value, _Scalar):
            text = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            raise ValueError(f"{key}: expected a string, a number or a boolean")
        if not text:
            raise ValueError(f"{key} has no value (leave it out for librdkafka's default)")
        checked[key] = Secret(text) if is_secret(key) else text
    return checked


def _flat(raw: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``raw``'s properties, a nested table's keys joined to its own with ``.``."""
    found: list[tuple[str, Any]] = []
    for key, value in raw.items():
        if isinstance(value, Mapping):
            found.extend(_flat(value, f"{prefix}{key}."))
        else:
            found.append((prefix + key, value))
    return found


def reveal(options: Options) -> dict[str, str]:
    """``options`` as a client takes them: the secrets revealed."""
    return {k: v.reveal() if isinstance(v, Secret) else v for k, v in options.items()}


def redact(text: str, *layers: Options) -> str:
    """``text`` with every secret value of ``layers`` replaced by ``***``."""
    for layer in layers:
        for value in layer.values():
            if isinstance(value, Secret) and value.reveal():
                text = text.replace(value.reveal(), "***")
    return text


@dataclass(frozen=True)
class KafkaOptions:
    """The options of every client (``common``), and those added for the producer and for
    the consumers; checked by :func:`check_options` (``ValueError``)."""

    common: Options = field(default_factory=dict)
    producer: Options = field(default_factory=dict)
    consumer: Options = field(default_factory=dict)

    def __post_init__(self) -> None:
        for layer in (self.common, self.producer, self.consumer):
            check_options(layer)

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaOptions:
        """The options ``settings`` give."""
        return cls(
            settings.kafka_options,
            settings.kafka_producer_options,
            settings.kafka_consumer_options,
        )

    def admin_config(self, own: Mapping[str, Any]) -> dict[str, Any]:
        """An admin client's configuration: Patchbay's ``own``, then the common options."""
        return {**own, **reveal(self.common)}

    def producer_config(self, own: Mapping[str, Any]) -> dict[str, Any]:
        """A producer's configuration: ``own``, the common options, the producer's."""
        return {**own, **reveal(self.common), **reveal(self.producer)}

    def consumer_config(self, own: Mapping[str, Any]) -> dict[str, Any]:
        """A consumer's configuration: ``own``, the common options, the consumers'."""
        return {**own, **reveal(self.common), **reveal(self.consumer)}

    def redact(self, text: str) -> str:
        """``text`` (a client's error) without any of the secrets."""
        return redact(text, self.common, self.producer, self.consumer)
