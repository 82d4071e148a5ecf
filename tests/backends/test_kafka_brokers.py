"""The Kafka log on a cluster of three brokers, one of which crashes: once the crashed
broker's partitions are led by the others, the log's long-lived clients follow them (reads,
watermarks, appends), without waiting for a periodic refresh of what they know."""

from __future__ import annotations

import pytest
from confluent_kafka import admin

from patchbay.backends.kafka import KafkaBatchLog
from patchbay.backends.kafka.log import bootstrap_servers
from patchbay.backends.records import NewBatch
from patchbay.errors import LogUnavailable
from tests import infra
from tests.activate.test_engine_support import wait_for
from tests.test_scale_out_failures import kafka3

__all__ = ["kafka3"]  # the fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PARTITIONS = 6
TOPIC = "patchbay.test.brokers"


def batches(prefix: str) -> list[NewBatch]:
    return [
        NewBatch(f"{prefix}-{i}", "input", 1_000, "server_to_server", b"{}", partition_key=f"u{i}")
        for i in range(4 * PARTITIONS)
    ]


def leaders(url: str) -> dict[int, int]:
    """By partition: the node id (the broker's number) of its leader, -1 for none."""
    client = admin.AdminClient({"bootstrap.servers": bootstrap_servers(url), "log_level": 3})
    topic = client.list_topics(TOPIC, timeout=10).topics[TOPIC]
    return {p.id: p.leader for p in topic.partitions.values()}


def every_end(log: KafkaBatchLog) -> bool:
    """Whether the log can tell every partition's end (its watermarks) now."""
    try:
        return all(log.end(p) is not None for p in range(PARTITIONS))
    except LogUnavailable:
        return False


def test_a_crashed_brokers_partitions_are_read_and_written_at_their_new_leaders(
    kafka3: infra.KafkaCluster,
) -> None:
    log = KafkaBatchLog(
        kafka3.url, topic=TOPIC, partitions=PARTITIONS, replication=3, timeout_s=3.0
    )
    try:
        log.append(batches("before"))
        assert every_end(log)  # every partition's leader known to the log's clients
        crashed = leaders(kafka3.url)[0]
        kafka3.stop_broker(crashed, kill=True)
        # the log is read all along, as the stages do: while the crashed broker still leads
        # partitions, then once the others lead them (librdkafka's own refresh of what a
        # client knows, every 5 minutes, came well after this deadline)
        wait_for(
            lambda: every_end(log) and crashed not in leaders(kafka3.url).values(),
            timeout_s=60,
            what="the log reading every partition at its new leader",
        )
        log.append(batches("after"))
        read = [b.batch_id for p in range(PARTITIONS) for b in log.read(p, None, 100)]
        assert sorted(read) == sorted(b.batch_id for b in batches("before") + batches("after"))
    finally:
        log.close()
