"""The consumer group that shares the log's partitions between processors
(:class:`~patchbay.backends.kafka.group.KafkaGroupAssignment`), on a real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from patchbay.backends.kafka import KafkaBatchLog
from patchbay.backends.kafka.group import KafkaGroupAssignment
from patchbay.metrics import owned_partitions_gauge
from tests import infra

#: Rebalances take a few seconds: generous deadlines, never timing assertions.
DEADLINE_S = 60.0


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_members_share_the_partitions_and_take_over_those_of_one_that_leaves() -> None:
    """Two members own disjoint shares that cover every partition; when one leaves, the
    other owns them all; the gauge shows each member's share. Nothing is read through the
    group (the partitions are paused)."""
    topic = f"patchbay.test.group.{uuid.uuid4().hex[:8]}"
    log = KafkaBatchLog(infra.kafka_url(), topic=topic, partitions=6)
    group = f"g-{uuid.uuid4().hex[:8]}"
    registry = CollectorRegistry()
    first = KafkaGroupAssignment(
        infra.kafka_url(),
        topic,
        group,
        session_timeout_s=6.0,
        gauge=owned_partitions_gauge(registry),
    )
    second = KafkaGroupAssignment(infra.kafka_url(), topic, group, session_timeout_s=6.0)
    try:
        wait_for(
            lambda: (
                bool(first.owned())
                and bool(second.owned())
                and first.owned() | second.owned() == frozenset(range(6))
            )
        )
        assert not first.owned() & second.owned()
        owned = registry.get_sample_value("patchbay_partitions_owned")
        assert owned == len(first.owned())
        second.close()
        wait_for(lambda: first.owned() == frozenset(range(6)))
        assert second.owned() == frozenset()
        assert registry.get_sample_value("patchbay_partitions_owned") == 6
    finally:
        second.close()
        first.close()
        log.close()
