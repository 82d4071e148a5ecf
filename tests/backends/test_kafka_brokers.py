"""The Kafka log on a cluster of three brokers, one of which crashes: once the crashed
broker's partitions are led by the others, the log's long-lived clients follow them (reads,
watermarks, appends), without waiting for a periodic refresh of what they know. One of which
hangs: a batch its leader waits for it to replicate, which the cluster stores after the
append gave up, is stored once however many times the client sends it again."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from confluent_kafka import admin

from patchbay.backends.kafka import KafkaBatchLog
from patchbay.backends.kafka.log import bootstrap_servers
from patchbay.backends.memory.log import MemoryDedupIndex
from patchbay.backends.records import Input, NewBatch
from patchbay.collect.appender import AppendResult, GroupCommitAppender
from patchbay.collect.ingest import RequestStamps, prepare_single
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


def leaders(url: str, name: str = TOPIC) -> dict[int, int]:
    """By partition: the node id (the broker's number) of its leader, -1 for none."""
    client = admin.AdminClient({"bootstrap.servers": bootstrap_servers(url), "log_level": 3})
    topic = client.list_topics(name, timeout=10).topics[name]
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


def test_a_batch_sent_again_while_a_replica_hangs_is_stored_once(
    kafka3: infra.KafkaCluster,
) -> None:
    """A follower hangs (SIGSTOP): the leader writes the batch and waits for the follower
    (acks=all) until the cluster drops it from the in-sync replicas, seconds after the
    append gave up (a 503). The client sends the batch again (same ``source_request_id``)
    until a 202: the retries join the first send, which is stored once, under one id."""
    topic = "patchbay.test.hanging"
    log = KafkaBatchLog(kafka3.url, topic=topic, partitions=1, replication=3, timeout_s=2.0)
    appender = GroupCommitAppender(log, MemoryDedupIndex())
    item = Input("input-1", "app", "server", 0, True, 0)

    def send(source_request_id: str) -> AppendResult:
        body = {"environment": "production", "source_request_id": source_request_id}
        stamps = RequestStamps(item, None, int(time.time() * 1000))
        return asyncio.run(
            appender.append(prepare_single(json.dumps(body).encode(), stamps).batches, 0)
        )

    def until_accepted(source_request_id: str) -> tuple[AppendResult, int]:
        """Send until a 202, as a client would; the answer and how many 503s came first."""
        deadline, refused = time.monotonic() + 120, 0
        while True:
            try:
                return send(source_request_id), refused
            except LogUnavailable:
                refused += 1
                assert time.monotonic() < deadline, "no 202 in time"
                time.sleep(1.0)

    hung = None
    try:
        # the partition's leader and the producer's id known (a new topic on a busy machine
        # may take longer than an append's timeout)
        until_accepted("before")
        hung = next(b for b in (1, 2, 3) if b != leaders(kafka3.url, topic)[0])
        kafka3.pause_broker(hung)
        answered, refused = until_accepted("retried")
        stored = log.read(0, None, 100)
    finally:
        if hung is not None:
            kafka3.resume_broker(hung)
        appender.close()
        log.close()
    assert refused >= 1  # the first append gave up while the follower hung
    assert answered.stored + answered.duplicates == 1
    assert [b.source_request_id for b in stored] == ["before", "retried"]
