"""What the Kafka log adds to the contract of ``test_log.py`` (which runs on it): the topic it
creates, where it puts batches, the error of a cluster out of reach, and the sends an append
gave up on (an append of the same batch waits for them instead of sending it again)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from confluent_kafka import KafkaError, admin

from patchbay.backends.kafka import KafkaBatchLog, bootstrap_servers
from patchbay.backends.memory.log import MemoryBatchLog
from patchbay.backends.records import LogPosition
from patchbay.errors import LogUnavailable
from tests import infra
from tests.backends.helpers import batch
from tests.conftest import free_port


def _topic() -> str:
    return f"patchbay.test.{uuid.uuid4().hex[:12]}"


def test_the_topic_is_created_with_the_partitions_replicas_and_retention_given() -> None:
    url, topic = infra.kafka_url(), _topic()
    log = KafkaBatchLog(
        url, topic=topic, partitions=4, retention_ms=3_600_000, retention_bytes=10**9
    )
    try:
        assert log.partitions == 4
        client = admin.AdminClient({"bootstrap.servers": bootstrap_servers(url)})
        resource = admin.ConfigResource("topic", topic)  # type: ignore[attr-defined]
        (future,) = client.describe_configs([resource]).values()
        config = {k: v.value for k, v in future.result().items()}
        assert config["retention.ms"] == "3600000"
        assert config["retention.bytes"] == "1000000000"
        metadata = client.list_topics(topic, timeout=10).topics[topic]
        assert all(len(p.replicas) == 1 for p in metadata.partitions.values())
    finally:
        log.close()
    again = KafkaBatchLog(url, topic=topic, partitions=2)  # an existing topic keeps its own
    try:
        assert again.partitions == 4
    finally:
        again.close()


def test_batches_go_to_the_partition_of_their_user_as_in_memory() -> None:
    """A batch's partition is its user's key's (the same on both logs), not its input's:
    one input's users spread, one user's batches from several inputs share a partition."""
    log = KafkaBatchLog(infra.kafka_url(), topic=_topic(), partitions=3)
    memory = MemoryBatchLog(partitions=3)
    try:
        news = [
            msgspec.structs.replace(batch(str(i), input_id=f"input-{i % 2}"), partition_key=key)
            for i in range(24)
            for key in (f"email:user{i // 2}@example.com", None)
        ]
        placed = [p.partition for p in log.append(news)]
        assert placed == [p.partition for p in memory.append(news)]
        assert len({p for p, b in zip(placed, news, strict=True) if b.input_id == "input-0"}) == 3
        for i in range(0, 48, 4):  # the same user's batch from the other input
            assert placed[i] == placed[i + 2]
    finally:
        log.close()


def test_a_cluster_out_of_reach_raises_log_unavailable_in_time() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(LogUnavailable) as raised:
        KafkaBatchLog(f"kafka://127.0.0.1:{port}", topic=_topic(), timeout_s=1.0)
    assert time.monotonic() - started < 30
    assert f"127.0.0.1:{port}" in str(raised.value)


def test_the_client_library_writes_no_text_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """librdkafka's lines (``%3|...|FAIL|...``) go through Python's logging, so that every
    line Patchbay writes is JSON."""
    with pytest.raises(LogUnavailable):
        KafkaBatchLog(f"kafka://127.0.0.1:{free_port()}", topic=_topic(), timeout_s=1.0)
    assert [line for line in capfd.readouterr().err.splitlines() if line.startswith("%")] == []


@pytest.mark.parametrize("url", ["127.0.0.1:9092", "http://127.0.0.1:9092", "kafka://"])
def test_only_kafka_urls_are_taken(url: str) -> None:
    with pytest.raises(ValueError, match="not a Kafka URL"):
        bootstrap_servers(url)


def test_a_url_gives_its_servers() -> None:
    assert bootstrap_servers("kafka://a:1,b:2/") == "a:1,b:2"


class _Sent:
    """A message as :class:`_HeldProducer` reports it."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class _HeldProducer:
    """A producer whose sends are reported only when the test says so (a leader waiting for
    a replica that is gone): what a report says, and when, is the test's."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Callable[[Any, Any], None]]] = []
        self.reports: list[tuple[int, Any, Any]] = []  # (index of the send, error, message)

    def produce(self, topic: str, value: bytes, key: bytes, **kw: Any) -> None:
        self.sent.append((value, kw["on_delivery"]))

    def poll(self, timeout: float = 0) -> int:
        reports, self.reports = self.reports, []
        for index, error, message in reports:
            self.sent[index][1](error, message)
        if not reports:
            time.sleep(min(timeout, 0.01))
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        return 0

    def stored(self, index: int, offset: int) -> None:
        self.reports.append((index, None, _Sent(0, offset)))

    def lost(self, index: int) -> None:
        error = KafkaError(KafkaError._MSG_TIMED_OUT)
        self.reports.append((index, error, None))


def test_an_append_of_a_batch_whose_send_is_unsettled_waits_for_that_send() -> None:
    """An append that gave up waiting leaves its sends going: an append of the same batch
    (its id) sends nothing and returns where the first send stored it; only a send reported
    lost is sent again. ``unsettled()`` counts the sends not yet reported."""
    log = KafkaBatchLog(infra.kafka_url(), topic=_topic(), timeout_s=0.2)
    real, held = log._producer, _HeldProducer()
    log._producer = held  # type: ignore[assignment]
    first, second = batch("first", srid="r1"), batch("second", srid="r2")
    try:
        assert log.unsettled() == 0
        with pytest.raises(LogUnavailable, match="no delivery report in time"):
            log.append([first, second])
        assert (len(held.sent), log.unsettled()) == (2, 2)
        with pytest.raises(LogUnavailable):  # still on its way: joined, not sent again
            log.append([first])
        assert len(held.sent) == 2
        held.stored(0, 7)  # the first is stored, as it had been written
        assert log.unsettled() == 1
        assert log.append([first]) == [LogPosition(0, 7)]  # where it went, not sent again
        assert log.append([first]) == [LogPosition(0, 7)]
        assert len(held.sent) == 2
        held.lost(1)  # the second was not stored: sent again
        assert log.unsettled() == 0
        with pytest.raises(LogUnavailable):
            log.append([second])
        assert len(held.sent) == 3 and log.unsettled() == 1
        held.stored(2, 8)
        assert log.unsettled() == 0
        assert log.append([second]) == [LogPosition(0, 8)]
        assert len(held.sent) == 3
    finally:
        log._producer = real
        log.close()
