"""The Kafka options (``kafka_options``, ``kafka_producer_options``,
``kafka_consumer_options``) in every client, on the session broker's SASL_PLAINTEXT
listener (mechanism PLAIN: ``scripts/infra.sh``)."""

from __future__ import annotations

import logging
import re
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from patchbay.backends.kafka import KafkaBatchLog
from patchbay.backends.kafka.group import KafkaGroupAssignment
from patchbay.backends.kafka.options import KafkaOptions, reveal
from patchbay.config import ConfigError, load_settings
from patchbay.errors import LogUnavailable
from patchbay.settings import Secret, Settings
from tests import infra
from tests.backends.helpers import ALL, batch
from tests.backends.test_kafka_group import wait_for


def _topic() -> str:
    return f"patchbay.test.sasl.{uuid.uuid4().hex[:12]}"


def _sasl(**env: str) -> Settings:
    """The settings of the SASL listener, as a user gives them (variables), and ``env``."""
    return load_settings({}, {**infra.kafka_sasl(), **env})


def _password(settings: Settings) -> str:
    secret = settings.kafka_options["sasl.password"]
    assert isinstance(secret, Secret)
    return secret.reveal()


def _wrong(settings: Settings) -> dict[str, str | Secret]:
    return {**settings.kafka_options, "sasl.password": Secret("not-" + _password(settings))}


def test_the_log_and_the_group_work_through_sasl_with_the_options_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Appends and reads go through the SASL listener (the options reach the admin client,
    the producer and the consumers); the group consumer takes them too, and the consumer
    options on top (its client.id, as the broker sees it). The password shows nowhere."""
    caplog.set_level(logging.DEBUG)
    client_id = f"patchbay-test-{uuid.uuid4().hex[:6]}"
    settings = _sasl(PATCHBAY_KAFKA_CONSUMER_OPTIONS=f"client.id={client_id}")
    assert settings.log is not None and settings.log != infra.kafka_url()
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:8]}"
    log = KafkaBatchLog(
        settings.log, topic=topic, partitions=2, options=KafkaOptions.from_settings(settings)
    )
    assignment = KafkaGroupAssignment(settings.log, topic, group, options=log.options)
    try:
        sent = [batch(str(i), user=f"user-{i}") for i in range(6)]
        positions = log.append(sent)
        read = [b for p in range(2) for b in log.read(p, None, ALL)]
        assert sorted(b.batch_id for b in read) == sorted(b.batch_id for b in sent)
        assert {(b.partition, b.offset) for b in read} == {
            (p.partition, p.offset) for p in positions
        }
        wait_for(lambda: assignment.owned() == frozenset(range(2)))
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": settings.log.removeprefix("kafka://"),
            **reveal(settings.kafka_options),
        }
        admin = AdminClient(config)
        (described,) = admin.describe_consumer_groups([group]).values()
        assert [m.client_id for m in described.result().members] == [client_id]
    finally:
        assignment.close()
        log.close()
    assert _password(settings) not in repr(settings) + repr(log.options) + caplog.text


def test_a_wrong_password_is_log_unavailable_in_time(caplog: pytest.LogCaptureFixture) -> None:
    """The broker refuses the credentials: the log says so (what the client reported), within
    its timeout, and the password shows neither in the error nor in the log."""
    caplog.set_level(logging.DEBUG)
    settings = _sasl()
    assert settings.log is not None
    started = time.monotonic()
    with pytest.raises(LogUnavailable, match="Authentication failed") as raised:
        KafkaBatchLog(
            settings.log, topic=_topic(), timeout_s=1.5, options=KafkaOptions(_wrong(settings))
        )
    assert time.monotonic() - started < 30
    wrong = "not-" + _password(settings)
    assert wrong not in str(raised.value) and wrong not in caplog.text


def test_the_producer_options_go_on_top_of_the_common_ones() -> None:
    """A wrong password among the producer's options alone: the admin client and the
    consumers connect, appends are refused (and say why)."""
    settings = _sasl()
    assert settings.log is not None
    options = KafkaOptions(settings.kafka_options, producer=_wrong(settings))
    log = KafkaBatchLog(settings.log, topic=_topic(), timeout_s=1.5, options=options)
    try:
        assert log.read(0, None, ALL) == []
        with pytest.raises(LogUnavailable, match="Authentication failed"):
            log.append([batch("refused")])
    finally:
        log.close()


def test_a_property_librdkafka_refuses_is_a_config_error_without_the_secrets() -> None:
    options = KafkaOptions({"sasl.password": Secret("hunter2"), "no.such.property": "1"})
    with pytest.raises(
        ConfigError, match=re.escape('No such configuration property: "no.such.property"')
    ) as raised:
        KafkaBatchLog(infra.kafka_url(), topic=_topic(), timeout_s=1.0, options=options)
    assert "hunter2" not in str(raised.value)


def test_the_options_cannot_override_what_the_log_relies_on() -> None:
    with pytest.raises(ValueError, match=re.escape("enable.idempotence is set by Patchbay")):
        KafkaOptions(producer={"enable.idempotence": "false"})
