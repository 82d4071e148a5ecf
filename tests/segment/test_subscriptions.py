"""The ``audience_subscription_request`` of an audience connection, as an outbox delivery."""

from __future__ import annotations

import pytest

from patchbay.backends.records import (
    AudienceConnection,
    AudienceRecord,
    ModuleDestination,
    Output,
)
from patchbay.firehose import FIREHOSE_VERSION, AudienceSubscriptionRequest, parse, to_dict
from patchbay.segment.subscriptions import subscription_request
from tests.segment.audience_setup import NOW, audience_registration

OUTPUT = Output("crm", ModuleDestination("aud"), NOW, NOW, settings={"apiKey": "k-1"})
AUDIENCE = AudienceRecord(7, "gold", "Gold tier", b"{}", NOW, NOW, version=3)
CONNECTION = AudienceConnection(
    audience_id=7,
    output="crm",
    created_at_ms=NOW,
    settings={"listName": "vip", "ttlDays": "30", "hashed": "false", "retired": "x"},
)


def request_of(payload: bytes) -> AudienceSubscriptionRequest:
    message = parse(payload)  # strict: unknown enum literals are refused
    assert isinstance(message, AudienceSubscriptionRequest)
    return message


def test_add() -> None:
    delivery = subscription_request(
        OUTPUT, audience_registration(), AUDIENCE, CONNECTION, "add", now_ms=NOW + 5
    )
    request = request_of(delivery.payload)
    assert str(request.id) == delivery.id
    assert delivery.output == "crm" and delivery.connection_id == "audience:7"
    assert delivery.batch_offset == 0 and delivery.state == "pending"
    assert delivery.created_at_ms == delivery.next_attempt_ms == NOW + 5
    assert request.timestamp_ms == NOW + 5
    assert request.firehose_version == "3.2.0"
    assert request.action == "add"
    assert request.audience_id == 7
    assert request.audience_name == "gold"
    assert request.audience_description == "Gold tier"
    assert request.account is not None
    assert request.account.account_id == 0
    assert request.account.account_settings == {"apiKey": "k-1"}
    # the registered settings only, with the defaults of those not given
    assert request.audience_subscription_settings == {
        "listName": "vip",
        "ttlDays": "30",
        "hashed": "false",
    }
    assert "previous_audience_subscription_settings" not in to_dict(request)


def test_update_carries_the_previous_settings() -> None:
    delivery = subscription_request(
        OUTPUT,
        audience_registration(),
        AUDIENCE,
        CONNECTION,
        "update",
        {"ttlDays": "10"},
        now_ms=NOW,
    )
    request = request_of(delivery.payload)
    assert request.action == "update"
    assert request.previous_audience_subscription_settings == {
        "listName": "patchbay",
        "ttlDays": "10",
        "hashed": "true",
    }


@pytest.mark.parametrize("action", ["add", "remove"])
def test_previous_settings_come_only_with_update(action: str) -> None:
    delivery = subscription_request(
        OUTPUT,
        audience_registration(),
        AUDIENCE,
        CONNECTION,
        action,  # type: ignore[arg-type]
        {"ttlDays": "10"},
        now_ms=NOW,
    )
    request = request_of(delivery.payload)
    assert request.action == action
    assert request.previous_audience_subscription_settings == {}


def test_the_partners_answer_is_laid_over_the_settings() -> None:
    answered = AudienceConnection(
        7, "crm", NOW, settings={"listName": "vip"}, partner_settings={"listId": "L-1"}
    )
    delivery = subscription_request(
        OUTPUT, audience_registration(), AUDIENCE, answered, "remove", now_ms=NOW
    )
    settings = request_of(delivery.payload).audience_subscription_settings
    assert settings == {"listName": "vip", "hashed": "true", "listId": "L-1"}


def test_each_request_has_a_new_id_and_the_modules_sdk_version() -> None:
    registration = audience_registration(sdk="3.1.0")
    first = subscription_request(OUTPUT, registration, AUDIENCE, CONNECTION, "add", now_ms=NOW)
    second = subscription_request(OUTPUT, registration, AUDIENCE, CONNECTION, "add", now_ms=NOW)
    assert first.id != second.id
    assert request_of(first.payload).firehose_version == "3.1.0"
    blank = registration.__class__(sdk_version="", name="x", version="1")
    assert (
        request_of(
            subscription_request(OUTPUT, blank, AUDIENCE, CONNECTION, "add", now_ms=NOW).payload
        ).firehose_version
        == FIREHOSE_VERSION
    )


def test_an_empty_description_is_left_out() -> None:
    nameless = AudienceRecord(8, "x", "", b"{}", NOW, NOW)
    delivery = subscription_request(
        OUTPUT, audience_registration(), nameless, CONNECTION, "add", now_ms=NOW
    )
    assert "audience_description" not in to_dict(request_of(delivery.payload))
