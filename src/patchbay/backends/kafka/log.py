"""The batch log in one Kafka topic (:class:`KafkaBatchLog`).

* **Layout.** One topic (``patchbay.batches`` unless told otherwise) with the log's
  partitions, created when missing through the admin client with the partition count,
  replication factor and retention given; an existing topic keeps its own (its partition
  count is the log's). A log partition is a Kafka partition and a log offset is the Kafka
  offset: from 0, one per batch (the producer writes no transaction markers, and nothing
  compacts the topic). Patchbay stores nothing anywhere else: every answer below comes from
  the topic's messages and its watermarks.
* **Messages.** The key is the batch's partition key (its user's:
  :attr:`~patchbay.backends.records.NewBatch.log_key`); the value is :class:`_Record`, the
  batch's fields (MessagePack, by msgspec); the message timestamp is the time received.
  The partition is chosen by Patchbay, not by the client's partitioner
  (:meth:`~patchbay.backends.records.NewBatch.partition`, as the in-memory log does), so
  one user's batches stay in one partition, in order.
* **Appends.** An idempotent producer (``enable.idempotence``, ``acks=all``) sends every
  batch of an append, and :meth:`KafkaBatchLog.append` returns once every delivery report
  is in: an acknowledged batch is on every in-sync replica (durability comes from
  replication: Kafka acknowledges before it syncs to disk, so a single broker's batches
  survive its process dying, not its machine). A batch is one message: the topic's
  ``max.message.bytes`` (1 MB by default) bounds it. Every message is encoded before
  the first is sent, so a bad batch stores nothing. A broker that cannot be reached, or a
  delivery that fails, raises :class:`~patchbay.errors.LogUnavailable` (503 with
  ``Retry-After`` from the Events API) after at most ``timeout_s``; the batches of that
  append may then be stored in part (a prefix of each partition's share, never out of order
  nor twice).
* **Unsettled batches.** An append that gives up waiting does not end the sends: a message
  the leader has written may wait there for an in-sync replica that is gone (acks=all)
  until the cluster drops that replica from the set, seconds later, and is then stored
  whatever the producer decided meanwhile. So the producer goes on with every message for
  ``delivery_timeout_s`` (librdkafka's ``message.timeout.ms``, longer than Kafka takes to
  drop a replica that is gone), and the log keeps, by batch id, the sends an append gave up
  on: until reported, and for ten minutes at least once reported stored
  (:meth:`KafkaBatchLog.unsettled` counts those not yet reported). An append of a batch
  whose id is among them sends nothing: it waits for the earlier send (its position once
  stored), and sends the batch again only if that one was reported not stored. A retry of a
  batch thus joins its first copy instead of writing a second (the Events API derives a
  batch's id from its ``source_request_id``).
* **Reads.** A consumer assigned to the partition (no consumer group, nothing committed), one
  per partition and thread, kept between reads: a reader that continues where it stopped
  reuses what the consumer fetched ahead. A read asks the watermarks first (on a client of
  their own), so it knows what exists and waits for exactly that.
* **Options.** ``options`` (:class:`~.options.KafkaOptions`: the settings
  ``kafka_options``, ``kafka_producer_options``, ``kafka_consumer_options``) add librdkafka
  properties to every client (TLS, SASL, tuning), never those the above rests on. A request
  that fails says what a client reported meanwhile (a wrong password fails requests as a
  broker out of reach does), without the options' secrets.
* **Retention.** With ``retention_ms`` or ``retention_bytes`` (per partition) Kafka deletes
  old segments itself, without knowing the stages' checkpoints; the scale-out backend gives
  neither (:func:`patchbay.backends.open_backend`: the topic keeps every batch), and
  :meth:`KafkaBatchLog.remove` (Patchbay's own retention, which never passes a stage's
  checkpoint) moves the partition's start with ``DeleteRecords``. The oldest
  retained batch is at the low watermark, the newest removed just before it, the newest
  appended just before the high watermark; the count retained is their difference (offsets
  are dense). The bytes a partition retains (the bodies' lengths) are counted by reading
  it: once, then only what was appended since (kept in memory, read again whole when the
  start moved by something other than :meth:`remove`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from patchbay.backends.kafka.options import KafkaOptions
from patchbay.backends.records import LogEntry, LogExtent, LogPosition, NewBatch, StoredBatch
from patchbay.errors import LogUnavailable

#: The topic of the log unless told otherwise.
DEFAULT_TOPIC = "patchbay.batches"
#: How long the producer goes on sending a batch (librdkafka's ``message.timeout.ms``) when
#: its append gave up earlier (module docs: unsettled batches): longer than a cluster takes
#: to drop an in-sync replica that is gone (``replica.lag.time.max.ms``, 30 s by default;
#: a KRaft broker's session, 9 s), for which a message written by the leader waits.
DELIVERY_TIMEOUT_S = 120.0
#: How long the log remembers, at least, where a send an append gave up on was stored, once
#: reported: an append of that batch meanwhile returns that position and sends nothing
#: (forgotten by the next :meth:`KafkaBatchLog.unsettled` after that).
_REMEMBER_STORED_S = 600.0
#: How many batches a consumer asks for at once.
_FETCH = 1000
#: How often every client asks the cluster for the topic's partition leaders. A client
#: learns that a leader moved when a request to it fails, except for a watermark query,
#: which goes on asking the former leader (gone with its broker) until this refresh:
#: librdkafka's default of 5 minutes stalled every read, and appends after a failed one,
#: for that long when a broker crashed.
_METADATA_REFRESH_MS = 5_000
#: The errors of a client whose metadata of the topic's partitions is missing or stale.
_STALE = (
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
)


class _Record(msgspec.Struct, array_like=True, frozen=True):
    """A batch's fields in a message's value (its offset and partition are the message's)."""

    batch_id: str
    input_id: str
    received_at_ms: int
    channel: str
    body: bytes
    ip: str | None
    historical: bool
    source_request_id: str | None


#: A client's configuration.
_Config = dict[str, Any]
#: The errors a client reports (through its ``error_cb``) that say more than the request
#: that failed: credentials, TLS, permissions.
_TELLING = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    }
)

#: Where the client library's lines go.
LIBRDKAFKA_LOG = logging.getLogger("patchbay.kafka.client")

_Client = TypeVar("_Client", AdminClient, Producer, Consumer)

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Record).decode


def bootstrap_servers(url: str) -> str:
    """The ``HOST:PORT,...`` list of a ``kafka://HOST:PORT[,HOST:PORT...]`` URL."""
    scheme, sep, servers = url.partition("://")
    if not sep or scheme != "kafka" or not servers.strip("/"):
        raise ValueError("not a Kafka URL: expected kafka://HOST:PORT[,HOST:PORT...]")
    return servers.strip("/")


def min_insync_replicas(replication: int) -> int:
    """The ``min.insync.replicas`` of a topic Patchbay creates with ``replication``
    replicas: 2 from 3 replicas on (one broker may be down), else 1."""
    return 2 if replication >= 3 else 1


class _Delivery:
    """The delivery report of one message: where it was stored, or why not."""

    __slots__ = ("done", "error", "position", "reported_at")

    def __init__(self) -> None:
        self.position: LogPosition | None = None
        self.error: KafkaError | None = None
        self.reported_at = 0.0
        self.done = False

    def report(self, error: KafkaError | None, message: Message) -> None:
        """The producer's ``on_delivery`` (called in whichever thread polls it)."""
        if error is None:
            self.position = LogPosition(_int(message.partition()), _offset(message))
        else:
            self.error = error
        self.reported_at = time.monotonic()
        self.done = True  # last: a reader that sees it done sees the rest

    @property
    def failed(self) -> bool:
        """Whether the message was reported not stored."""
        return self.done and self.position is None


class KafkaBatchLog:
    """The batch log in the topic ``topic`` of the Kafka cluster at ``url``; see the module
    docs. ``retention_ms`` and ``retention_bytes`` (per partition; ``None``: no limit) apply
    to a topic this creates; an append waits ``timeout_s`` at most, and the producer goes
    on sending for ``delivery_timeout_s`` (at least ``timeout_s``); ``options`` are added to
    every client's configuration."""

    def __init__(
        self,
        url: str,
        *,
        topic: str = DEFAULT_TOPIC,
        partitions: int = 1,
        replication: int = 1,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        timeout_s: float = 10.0,
        delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
        options: KafkaOptions | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError("a log needs at least one partition")
        self.url = url
        self.topic = topic
        self.options = options = options or KafkaOptions()
        self._servers = bootstrap_servers(url)
        self._timeout_s = timeout_s
        #: The last error a client reported that tells why requests fail (:data:`_TELLING`),
        #: and when.
        self._reported: tuple[float, KafkaError] | None = None
        common: _Config = {
            "bootstrap.servers": self._servers,
            "socket.timeout.ms": int(timeout_s * 1000),
            "topic.metadata.refresh.interval.ms": _METADATA_REFRESH_MS,
            # librdkafka's own lines through Python's logging (JSON, as every line of
            # Patchbay's), not printed on stderr as text.
            "logger": LIBRDKAFKA_LOG,
            "error_cb": self._report,
        }
        # confluent-kafka takes a `logger` in every client's configuration (its typing of
        # AdminClient's leaves it out).
        self._admin = self._client(AdminClient, options.admin_config(common))
        self._partitions = self._ensure_topic(
            partitions,
            replication,
            {
                "retention.ms": str(-1 if retention_ms is None else retention_ms),
                "retention.bytes": str(-1 if retention_bytes is None else retention_bytes),
                "cleanup.policy": "delete",
                "message.timestamp.type": "CreateTime",
                # with acks=all, a batch is acknowledged once this many replicas have it:
                # two of three, so one broker may be down and no acknowledged batch is on
                # one broker alone
                "min.insync.replicas": str(min_insync_replicas(replication)),
            },
        )
        # The options may change linger.ms, compression.type and fetch.wait.max.ms (and the
        # two timings of `common`), not the properties the log's promises rest on
        # (options.REFUSED).
        self._producer_config = options.producer_config(
            {
                **common,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                "compression.type": "lz4",
                "message.timeout.ms": int(max(delivery_timeout_s, timeout_s) * 1000),
            }
        )
        self._producer = self._client(Producer, self._producer_config)
        self._producer_lock = threading.Lock()
        #: By batch id: the sends appends gave up waiting for (see the module docs), until
        #: reported not stored, or for :data:`_REMEMBER_STORED_S` once reported stored.
        self._unsettled: dict[str, _Delivery] = {}
        self._unsettled_lock = threading.Lock()
        self._consumer_config = options.consumer_config(
            {
                **common,
                # required, never joined: partitions are assigned
                "group.id": "patchbay-log-reader",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # A fetch waiting at the broker delays a consumer sent elsewhere (a read that
                # does not continue the last one) by up to this.
                "fetch.wait.max.ms": 100,
            }
        )
        # The watermarks are asked on a connection of their own: a reader's consumer keeps a
        # fetch waiting at the broker (up to fetch.wait.max.ms), and a request sent behind it
        # waits as long.
        self._watermark_client = self._client(Consumer, self._consumer_config)
        self._local = threading.local()
        self._consumers: list[Consumer] = [self._watermark_client]
        self._consumers_lock = threading.Lock()
        #: By partition: (start, end, bytes of the bodies in between), as last counted.
        self._sizes: dict[int, tuple[int, int, int]] = {}
        self._sizes_lock = threading.Lock()

    @property
    def partitions(self) -> int:
        """How many partitions the topic has."""
        return self._partitions

    def _client(self, kind: Callable[[_Config], _Client], config: _Config) -> _Client:
        """A client of ``kind`` (a :class:`ConfigError` when librdkafka refuses a
        property of the options)."""
        try:
            return kind(config)
        except KafkaException as exc:
            from patchbay.config import ConfigError

            error = self.options.redact(str(exc.args[0].str()))
            raise ConfigError(f"the Kafka options: {error}") from None

    def _report(self, error: KafkaError) -> None:
        """A client's ``error_cb`` (called in the thread that polls it)."""
        if error.code() in _TELLING:
            self._reported = (time.monotonic(), error)

    def _unavailable(self, what: str, error: object) -> LogUnavailable:
        """The error of a request that failed, with what a client reported meanwhile
        (a wrong password fails requests as a broker out of reach would)."""
        self._admin.poll(0)  # its reports come in when it is polled
        detail = f"{what}: {error}"
        reported = self._reported
        if reported is not None and time.monotonic() - reported[0] < 2 * self._timeout_s:
            detail += f" (the client reported: {reported[1].str()})"
        return LogUnavailable(
            f"Kafka at {self._servers}, topic {self.topic}", self.options.redact(detail)
        )

    def _ensure_topic(self, partitions: int, replication: int, config: dict[str, str]) -> int:
        """Create the topic unless it exists; how many partitions it has."""
        try:
            found = self._admin.list_topics(self.topic, timeout=self._timeout_s).topics
            existing = found.get(self.topic)
            if existing is not None and existing.error is None:
                return self._await_topic()
            new = NewTopic(self.topic, partitions, replication, config=config)
            future = self._admin.create_topics([new], request_timeout=self._timeout_s)[self.topic]
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another process
                    raise
        except KafkaException as exc:
            raise self._unavailable("cannot create the topic", exc.args[0]) from None
        return self._await_topic()

    def _await_topic(self) -> int:
        """The partition count of the topic once every partition has a leader (a new topic
        takes a moment to reach every broker)."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                found = self._admin.list_topics(self.topic, timeout=self._timeout_s).topics
            except KafkaException as exc:
                raise self._unavailable("cannot read the topic", exc.args[0]) from None
            topic = found.get(self.topic)
            parts = [] if topic is None or topic.error else list(topic.partitions.values())
            if parts and all(p.leader >= 0 and p.error is None for p in parts):
                return len(parts)
            if time.monotonic() > deadline:
                raise self._unavailable("the topic has no leader", "none in time")
            time.sleep(0.1)

    # -- appends -------------------------------------------------------------------------

    def append(self, batches: Sequence[NewBatch]) -> list[LogPosition]:
        """Send ``batches`` (a batch whose earlier send is unsettled: wait for that one) and
        wait for every delivery report; see the module docs."""
        messages = [
            (
                b.partition(self._partitions),
                b.log_key.encode(),
                _encode(
                    _Record(
                        b.batch_id,
                        b.input_id,
                        b.received_at_ms,
                        b.channel,
                        b.body,
                        b.ip,
                        b.historical,
                        b.source_request_id,
                    )
                ),
                b.received_at_ms,
            )
            for b in batches
        ]
        if not messages:
            return []
        producer = self._producer
        deadline = time.monotonic() + self._timeout_s
        with self._unsettled_lock:
            earlier = [self._unsettled.get(b.batch_id) for b in batches]
        deliveries: list[_Delivery] = []
        try:
            for (partition, key, value, at_ms), sent in zip(messages, earlier, strict=True):
                if sent is not None and not sent.failed:  # on its way, or stored since
                    deliveries.append(sent)
                    continue
                delivery = _Delivery()
                self._produce(producer, (partition, key, value, at_ms), delivery, deadline)
                deliveries.append(delivery)
            waiting = [d for d in deliveries if not d.done]
            while waiting and time.monotonic() < deadline:
                producer.poll(0.05)
                waiting = [d for d in waiting if not d.done]
        finally:
            self._keep_unsettled(batches, deliveries)
        error = next((d.error for d in deliveries if d.error is not None), None)
        if error is not None or waiting:
            if error is not None and error.fatal():
                self._renew_producer(producer)
            raise self._unavailable("append failed", error or "no delivery report in time")
        return [d.position for d in deliveries if d.position is not None]

    def _produce(
        self,
        producer: Producer,
        message: tuple[int, bytes, bytes, int],
        delivery: _Delivery,
        deadline: float,
    ) -> None:
        """Hand ``message`` (partition, key, value, timestamp) to ``producer``; a queue that
        stays full until ``deadline`` raises :class:`LogUnavailable`."""
        partition, key, value, at_ms = message
        while True:
            try:
                producer.produce(
                    self.topic,
                    value,
                    key,
                    partition=partition,
                    timestamp=at_ms,
                    on_delivery=delivery.report,
                )
                return
            except BufferError:  # the producer's queue is full: let it drain
                if time.monotonic() >= deadline:
                    raise self._unavailable(
                        "append failed", "the producer's queue is full"
                    ) from None
                producer.poll(0.05)

    def _keep_unsettled(self, batches: Sequence[NewBatch], deliveries: list[_Delivery]) -> None:
        """Keep, by batch id, the sends of an append still waiting for their report (they
        may yet be stored); forget those reported not stored."""
        with self._unsettled_lock:
            for b, delivery in zip(batches, deliveries, strict=False):
                if not delivery.done:
                    self._unsettled[b.batch_id] = delivery
                elif delivery.failed and self._unsettled.get(b.batch_id) is delivery:
                    del self._unsettled[b.batch_id]

    def unsettled(self) -> int:
        """How many batches of appends that gave up waiting may still be stored: their
        sends not yet reported. (Those reported stored since are in the log for every
        reader.)"""
        self._producer.poll(0)  # take the reports that came in
        forgotten = time.monotonic() - _REMEMBER_STORED_S
        with self._unsettled_lock:
            for batch_id, d in list(self._unsettled.items()):
                if d.failed or (d.done and d.reported_at < forgotten):
                    del self._unsettled[batch_id]
            return sum(1 for d in self._unsettled.values() if not d.done)

    def _renew_producer(self, broken: Producer) -> None:
        """Replace a producer that hit a fatal error (its idempotence state is lost, and it
        sends nothing more: its unsettled batches are forgotten)."""
        with self._producer_lock:
            if self._producer is broken:
                self._producer = self._client(Producer, self._producer_config)
                with self._unsettled_lock:
                    self._unsettled.clear()

    # -- reads ---------------------------------------------------------------------------

    def _consumer(self, partition: int) -> tuple[Consumer, list[int]]:
        """This thread's consumer of ``partition``, with the offset it will read next."""
        mine: dict[int, tuple[Consumer, list[int]]] | None = getattr(self._local, "consumers", None)
        if mine is None:
            mine = self._local.consumers = {}
        if partition not in mine:
            consumer = self._client(Consumer, self._consumer_config)
            with self._consumers_lock:
                self._consumers.append(consumer)
            mine[partition] = (consumer, [-1])
        return mine[partition]

    def _watermarks(self, partition: int) -> tuple[int, int]:
        """The partition's low and high watermarks (oldest retained, next to be written)."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                low, high = self._watermark_client.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self._timeout_s, cached=False
                )
                return int(low), int(high)
            except KafkaException as exc:
                # A new topic's partitions take a moment to have a leader everywhere, and a
                # new consumer to know them; a leader moves when a broker goes.
                error: KafkaError = exc.args[0]
                transient = error.retriable() or error.code() in _STALE
                if not transient or time.monotonic() > deadline:
                    raise self._unavailable("cannot read the watermarks", error) from None
            time.sleep(0.05)

    def _exists(self, partition: int) -> bool:
        return 0 <= partition < self._partitions

    def read(self, partition: int, after: LogPosition | None, limit: int) -> list[StoredBatch]:
        """Up to ``limit`` batches of ``partition`` after ``after``, oldest first."""
        if not self._exists(partition) or limit <= 0:
            return []
        low, high = self._watermarks(partition)
        start = max(low, 0 if after is None else after.offset + 1)
        return self._read(partition, start, min(high, start + limit))

    def _read(self, partition: int, start: int, stop: int) -> list[StoredBatch]:
        """The batches from offset ``start`` to before ``stop`` (both retained)."""
        if start >= stop:
            return []
        consumer, next_offset = self._consumer(partition)
        if next_offset[0] != start:
            consumer.assign([TopicPartition(self.topic, partition, start)])
        found: list[StoredBatch] = []
        deadline = time.monotonic() + self._timeout_s
        try:
            while start < stop:
                messages = consumer.consume(min(stop - start, _FETCH), timeout=0.5)
                if not messages:
                    # Kafka's retention may have removed the rest since the watermarks.
                    start = max(start, self._watermarks(partition)[0])
                    if time.monotonic() > deadline:
                        raise self._unavailable("read", "no messages in time")
                    continue
                deadline = time.monotonic() + self._timeout_s
                for message in messages:
                    if (error := message.error()) is not None:
                        raise self._unavailable("read", error)
                    offset = _offset(message)
                    if offset >= start:  # (a retry may give one again)
                        found.append(_stored(partition, offset, message.value() or b""))
                        start = offset + 1
        finally:
            next_offset[0] = start
        # What was fetched past ``stop`` comes first in the next read from ``stop``.
        return [s for s in found if s.offset < stop]

    def end(self, partition: int) -> LogPosition | None:
        """The offset before the high watermark (``None`` when nothing was ever appended)."""
        if not self._exists(partition):
            return None
        _, high = self._watermarks(partition)
        return LogPosition(partition, high - 1) if high > 0 else None

    # -- retention -----------------------------------------------------------------------

    def oldest(self, partition: int, limit: int) -> list[LogEntry]:
        """The batches from the low watermark on, as retention sees them."""
        return [
            LogEntry(s.position, s.received_at_ms, len(s.body))
            for s in self.read(partition, None, limit)
        ]

    def remove(self, partition: int, upto: LogPosition) -> int:
        """Move the partition's start past ``upto`` (``DeleteRecords``); how many batches
        that removed."""
        if not self._exists(partition):
            return 0
        low, high = self._watermarks(partition)
        cut = min(upto.offset + 1, high)
        if cut <= low:
            return 0
        removed_bytes = self._counted_bytes(partition, low, cut)
        request = TopicPartition(self.topic, partition, cut)
        try:
            future = self._admin.delete_records([request], request_timeout=self._timeout_s)
            next(iter(future.values())).result()
        except KafkaException as exc:
            raise self._unavailable("cannot remove batches", exc.args[0]) from None
        with self._sizes_lock:
            counted = self._sizes.get(partition)
            if counted is not None and removed_bytes is not None and counted[0] == low:
                self._sizes[partition] = (cut, counted[1], counted[2] - removed_bytes)
        return cut - low

    def _counted_bytes(self, partition: int, start: int, stop: int) -> int | None:
        """The bodies' bytes from ``start`` to ``stop`` when that range was counted (read
        now to keep the count), else ``None``."""
        with self._sizes_lock:
            counted = self._sizes.get(partition)
        if counted is None or counted[0] != start or stop > counted[1]:
            return None
        return sum(len(s.body) for s in self._read(partition, start, stop))

    def extent(self, partition: int) -> LogExtent:
        """Counts from the watermarks; the bytes counted by reading (see the module docs)."""
        if not self._exists(partition):
            return LogExtent(0, 0)
        low, high = self._watermarks(partition)
        removed = LogPosition(partition, low - 1) if low > 0 else None
        return LogExtent(high - low, self._size(partition, low, high), removed)

    def _size(self, partition: int, low: int, high: int) -> int:
        with self._sizes_lock:
            counted = self._sizes.get(partition)
        if counted is None or counted[0] != low or counted[1] > high:
            counted = (low, low, 0)
        start, size = counted[1], counted[2]
        while start < high:
            page = self._read(partition, start, min(high, start + _FETCH))
            if not page:
                break
            size += sum(len(s.body) for s in page)
            start = page[-1].offset + 1
        with self._sizes_lock:
            self._sizes[partition] = (low, start, size)
        return size

    def close(self) -> None:
        """Send what is queued (within the timeout; what is not sent by then is dropped)
        and close every consumer."""
        if self._producer.flush(self._timeout_s):
            self._producer.purge()
            self._producer.poll(0)
        with self._consumers_lock:
            consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            consumer.close()


def _int(value: int | None) -> int:
    if value is None:  # only for messages never sent or read: not those of reports and reads
        raise ValueError("a Kafka message without a partition or offset")
    return value


def _offset(message: Message) -> int:
    return _int(message.offset())


def _stored(partition: int, offset: int, value: bytes) -> StoredBatch:
    record = _decode(value)
    return StoredBatch(
        offset=offset,
        batch_id=record.batch_id,
        input_id=record.input_id,
        received_at_ms=record.received_at_ms,
        channel=record.channel,
        body=record.body,
        ip=record.ip,
        historical=record.historical,
        partition=partition,
        source_request_id=record.source_request_id,
    )
