"""Which partitions of the batch log this process processes (resolve and every stage after
it), which may change at any time.

* The embedded and in-memory logs: every partition, for good (:class:`AllPartitions`).
* Kafka: the partitions the topic's consumer group gives this process
  (:class:`~patchbay.backends.kafka.group.KafkaGroupAssignment`): processors that join or
  leave (stopped, or killed and past the session timeout) move partitions between them.

Whoever reads :meth:`Assignment.owned` goes on from the committed checkpoint of each
partition it gains, and stops at once on those it loses. Ownership is a hint, not a
guarantee: a processor may still commit a chunk of a partition it just lost, so every
checkpointed commit is fenced on the positions it started from
(:class:`~patchbay.backends.records.CheckpointMoved`).
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry

from patchbay.backends.abstract import Backend
from patchbay.metrics import owned_partitions_gauge


class Assignment(Protocol):
    """The partitions this process owns now."""

    def owned(self) -> frozenset[int]:
        """The partitions owned now (callable from any thread)."""
        ...

    def close(self) -> None:
        """Give the partitions up (others take them over) and release the connection."""
        ...


class AllPartitions:
    """Every partition of a log of ``partitions``, for good."""

    def __init__(self, partitions: int) -> None:
        self._owned = frozenset(range(partitions))

    def owned(self) -> frozenset[int]:
        """Every partition."""
        return self._owned

    def close(self) -> None:
        """Nothing to give up."""


def open_assignment(
    backend: Backend,
    *,
    group: str,
    session_timeout_s: float,
    registry: CollectorRegistry | None = None,
) -> Assignment:
    """The assignment of a processor over ``backend``'s log: the Kafka consumer group
    ``group`` for a Kafka log (how many partitions it owns in ``registry``: see
    :func:`~patchbay.metrics.owned_partitions_gauge`), else every partition. (The segment
    stage has none: one process leads it over every partition, :mod:`patchbay.leadership`.)"""
    from patchbay.backends.kafka import KafkaBatchLog

    log = backend.log
    if isinstance(log, KafkaBatchLog):
        from patchbay.backends.kafka.group import KafkaGroupAssignment

        return KafkaGroupAssignment(
            log.url,
            log.topic,
            group,
            session_timeout_s=session_timeout_s,
            gauge=owned_partitions_gauge(registry) if registry is not None else None,
            options=log.options,
        )
    return AllPartitions(log.partitions)
