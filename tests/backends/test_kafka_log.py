"""What the Kafka log adds to the contract of ``test_log.py`` (which runs on it): the topic it
creates, where it puts batches, and the error of a cluster out of reach."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest
from confluent_kafka import admin

from patchbay.backends.kafka import KafkaBatchLog, bootstrap_servers
from patchbay.backends.memory.log import MemoryBatchLog
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
