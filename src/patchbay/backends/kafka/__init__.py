"""The scale-out batch log: Apache Kafka (``--log kafka://HOST:PORT[,HOST:PORT...]``).

One topic holds the log (:class:`~.log.KafkaBatchLog`), a Kafka partition per log partition
and a Kafka offset per log offset; the other stores stay where the state is kept.
"""

from __future__ import annotations

from patchbay.backends.kafka.log import DEFAULT_TOPIC, KafkaBatchLog, bootstrap_servers

__all__ = ["DEFAULT_TOPIC", "KafkaBatchLog", "bootstrap_servers"]
