"""The partitions a processor owns, from the topic's Kafka consumer group
(:class:`KafkaGroupAssignment`).

Processors (``serve`` processes that resolve and run the stages after resolve) join one
consumer group (``kafka_group``) subscribed to the log's topic; Kafka's group coordinator
shares the partitions between the members (the ``cooperative-sticky`` assignor: a
rebalance moves only the partitions it must, the others keep being processed), and moves
those of a member that leaves (closed: at once) or stops heartbeating (killed: after the
session timeout) to the others.

The group is used for membership only:

* no records are read through it: each partition it assigns is paused at once, so
  ``poll()`` fetches nothing, and the stages read the data as before
  (:class:`~.log.KafkaBatchLog`'s own readers);
* nothing is committed to Kafka: the positions live in PostgreSQL with the state they
  describe, and a new owner goes on from there;
* a thread polls the consumer every :data:`POLL_S`, so that the group's callbacks run
  and ``max.poll.interval.ms`` never expires however long a stage takes over a chunk
  (librdkafka heartbeats on a thread of its own).

Ownership is a hint: between a rebalance and its callback a former owner may still commit
a chunk, which the fenced checkpoints refuse
(:class:`~patchbay.backends.records.CheckpointMoved`).
"""

from __future__ import annotations

import threading

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import Gauge

from patchbay.backends.kafka.log import LIBRDKAFKA_LOG, bootstrap_servers
from patchbay.backends.kafka.options import KafkaOptions

log = structlog.get_logger("patchbay.kafka.group")

#: How often the membership thread polls the group consumer.
POLL_S = 0.2


class KafkaGroupAssignment:
    """This process's share of ``topic``'s partitions in the consumer group ``group`` of
    the cluster at ``url`` (see the module docs); how many it owns shows in ``gauge``.
    ``options`` are added to the consumer's configuration (those of the log's consumers)."""

    def __init__(
        self,
        url: str,
        topic: str,
        group: str,
        *,
        session_timeout_s: float = 10.0,
        gauge: Gauge | None = None,
        options: KafkaOptions | None = None,
    ) -> None:
        self.topic = topic
        self.group = group
        session_ms = int(session_timeout_s * 1000)
        self._consumer = Consumer(
            (options or KafkaOptions()).consumer_config(
                {
                    "bootstrap.servers": bootstrap_servers(url),
                    "group.id": group,
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": session_ms,
                    "heartbeat.interval.ms": max(100, session_ms // 5),
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "latest",
                    "logger": LIBRDKAFKA_LOG,
                }
            )
        )
        self._owned: frozenset[int] = frozenset()
        self._lock = threading.Lock()
        self._gauge = gauge
        self._stopping = threading.Event()
        self._consumer.subscribe(
            [topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )
        self._thread = threading.Thread(target=self._run, name="patchbay-group", daemon=True)
        self._thread.start()

    def owned(self) -> frozenset[int]:
        """The partitions the group gives this process now."""
        with self._lock:
            return self._owned

    def _set(self, owned: frozenset[int]) -> None:
        with self._lock:
            self._owned = owned
        if self._gauge is not None:
            self._gauge.set(len(owned))

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group gave this process ``partitions`` (those it did not have): take them,
        paused (nothing is fetched)."""
        consumer.incremental_assign(partitions)
        if partitions:
            consumer.pause(partitions)
        gained = {p.partition for p in partitions}
        self._set(self.owned() | gained)
        log.info("partitions_assigned", partitions=sorted(gained), owned=sorted(self.owned()))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group took ``partitions`` away (or they were lost with the session)."""
        lost = {p.partition for p in partitions}
        self._set(self.owned() - lost)
        log.info("partitions_revoked", partitions=sorted(lost), owned=sorted(self.owned()))
        consumer.incremental_unassign(partitions)

    def _run(self) -> None:
        """Poll until closed (the callbacks run in here), then leave the group."""
        try:
            while not self._stopping.is_set():
                try:
                    self._consumer.poll(POLL_S)  # paused: no records, only callbacks
                except KafkaException as exc:  # the membership goes on: the client retries
                    log.warning("group_poll_failed", error=str(exc.args[0]))
                    self._stopping.wait(POLL_S)
        finally:
            self._consumer.close()  # leaves the group: the others take the partitions
            self._set(frozenset())

    def close(self) -> None:
        """Leave the group (closing twice is harmless)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
