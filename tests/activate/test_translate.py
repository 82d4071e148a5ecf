"""Translation of resolved batches into Firehose event processing requests.

The worked example of the mapping (mapping §5), one test per event type mapping, the
permission rules (mapping §4), stable ids, and the spec §2.6 rules as a property over
generated batches.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from patchbay.activate.ids import event_id, message_id, session_id_of
from patchbay.activate.translate import translate
from patchbay.collect.batch import USER_IDENTITY_TYPES
from patchbay.firehose import (
    DeviceIdentityPermission,
    EventProcessingRequest,
    ModuleRegistrationResponse,
    PartnerIdentityPermission,
    PlatformFields,
    UserIdentityPermission,
    dumps,
    parse,
    to_dict,
)
from patchbay.firehose.enums import (
    DeviceIdentityType,
    EventType,
    IdentityEncoding,
    RuntimeEnvironmentType,
    UserIdentityType,
)
from patchbay.resolve.profile import Consent
from tests.activate.helpers import RECEIVED_MS, load, registration, resolved

SAMPLE = "inbound_sample.json"
EXPECTED = "worked_example_from_official_sample.json"
PLATFORM = PlatformFields(
    mp_account_id=1,
    mp_account_name="Example Account",
    workspace_id=2,
    workspace_name="Example Workspace",
    input_name="iOS",
)

IOS_DEVICE = {"platform": "iOS", "ios_advertising_id": "1cc8138f-8aaf-410a-b0b9-6465cfb2af6a"}


def run(
    body: dict[str, Any],
    reg: ModuleRegistrationResponse | None = None,
    output_id: str = "out-1",
    **kwargs: Any,
) -> EventProcessingRequest | None:
    """Translate ``body`` for ``reg`` (default: the broad registration)."""
    stored_kwargs = {
        k: kwargs.pop(k) for k in ("batch_id", "channel", "historical", "ip") if k in kwargs
    }
    request = translate(
        resolved(body, **stored_kwargs),
        reg or registration(),
        {"apiKey": "key"},
        {},
        output_id,
        **kwargs,
    )
    if request is not None:  # every message must survive a strict parse
        raw = dumps(request)
        assert dumps(parse(raw)) == raw
    return request


def out(
    body: dict[str, Any], reg: ModuleRegistrationResponse | None = None, **kw: Any
) -> dict[str, Any]:
    request = run(body, reg, **kw)
    assert request is not None
    return to_dict(request)


def one(event_type: str, data: dict[str, Any], **batch: Any) -> dict[str, Any]:
    """A batch with one event."""
    return {"events": [{"event_type": event_type, "data": data}], **batch}


def events_of(
    body: dict[str, Any], reg: ModuleRegistrationResponse | None = None
) -> list[dict[str, Any]]:
    request = run(body, reg)
    return [] if request is None else to_dict(request)["events"]


def strip_ids(message: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(message))
    copy.pop("id")
    for event in copy["events"]:
        event.pop("id")
    return copy


# -- the worked example (mapping §5) ---------------------------------------------------------


def worked_example() -> EventProcessingRequest:
    request = translate(
        resolved(load(SAMPLE)),
        registration(),
        {"apiKey": "partner-api-key"},
        {},
        "out-1",
        account_id=1234,
        now_ms=1558388300000,
        platform_fields=PLATFORM,
    )
    assert request is not None
    return request


def test_worked_example_matches_field_by_field() -> None:
    got = to_dict(worked_example())
    expected = load(EXPECTED)
    # Decision: ids are uuid5 of (output id, batch id, event index, part), not the example's
    # illustrative (source_request_id, index, part); an empty list is not written (NON_EMPTY).
    assert expected.pop("system_notifications") == []
    assert "system_notifications" not in got
    assert strip_ids(got) == strip_ids(expected)
    for key in expected:
        if key not in ("id", "events"):
            assert got[key] == expected[key], key
    assert [e["type"] for e in got["events"]] == [e["type"] for e in expected["events"]]


def test_worked_example_ids_are_distinct_uuid5() -> None:
    got = to_dict(worked_example())
    ids = [got["id"], *(e["id"] for e in got["events"])]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 5 for i in ids)
    assert got["id"] == str(message_id("out-1", "5f0e2d1c-0000-4000-8000-000000000001"))


def test_worked_example_parses_strictly() -> None:
    request = worked_example()
    assert parse(dumps(request)) == request


def test_session_id_derivation_matches_the_sample() -> None:
    assert session_id_of("84E1B361-A282-4ADF-8A6D-1D31E6DD5A9E") == 6051321688317951794
    assert session_id_of("8B8DFAA2-17C7-43E8-88EE-5F2DCF016D56") == -2271448330363288817


# -- common event fields ---------------------------------------------------------------------


def test_common_fields() -> None:
    [event] = events_of(
        one(
            "session_start",
            {
                "timestamp_unixtime_ms": 1000,
                "source_message_id": "src-1",
                "session_uuid": "84E1B361-A282-4ADF-8A6D-1D31E6DD5A9E",
                "location": {"latitude": "40.5", "longitude": -73.25, "city_name": "NYC"},
            },
        )
    )
    assert event["timestamp_ms"] == 1000
    assert event["source_id"] == "src-1"
    assert event["session_id"] == 6051321688317951794
    assert event["location"] == {"latitude": 40.5, "longitude": -73.25, "accuracy": 0.0}


def test_missing_timestamp_is_the_receive_time_and_no_session() -> None:
    [event] = events_of(one("session_start", {}))
    assert event["timestamp_ms"] == RECEIVED_MS
    assert "session_id" not in event


def test_location_fallback_and_incomplete_location() -> None:
    context = {"context": {"location": {"latitude": 1.0, "longitude": 2.0, "accuracy": 5}}}
    [event] = events_of(one("session_start", {"location": {"latitude": 9.0}}, **context))
    assert event["location"] == {"latitude": 1.0, "longitude": 2.0, "accuracy": 5.0}
    [event] = events_of(one("session_start", {"location": {"latitude": 9.0}}))
    assert "location" not in event


# -- one test per event type mapping (mapping §1, §2) ----------------------------------------


def test_custom_event() -> None:
    [event] = events_of(
        one(
            "custom_event",
            {
                "event_name": "x" * 300,
                "custom_event_type": "navigation",
                "custom_attributes": {"s": "v", "n": 3, "f": 1.5, "b": True, "z": None},
                "custom_flags": {"A.f": ["a", 1], "B.g": 2, "C.h": {"k": None}},
            },
        )
    )
    assert event["type"] == "custom_event"
    assert event["name"] == "x" * 256
    assert event["custom_event_type"] == "navigation"
    assert event["attributes"] == {"s": "v", "n": "3", "f": "1.5", "b": "true"}
    assert event["custom_flags"] == {"A.f": '["a",1]', "B.g": "2", "C.h": '{"k":null}'}


def test_custom_event_media_and_missing_type() -> None:
    media, untyped = events_of(
        {
            "events": [
                {
                    "event_type": "custom_event",
                    "data": {"event_name": "play", "custom_event_type": "media"},
                },
                {"event_type": "custom_event", "data": {"event_name": "x"}},
            ]
        }
    )
    assert media["custom_event_type"] == "media"
    assert untyped["custom_event_type"] == "other"


def test_attribution_custom_event() -> None:
    [event] = events_of(
        one(
            "custom_event",
            {
                "event_name": "attribution",
                "custom_event_type": "attribution",
                "custom_attributes": {"Publisher": "pub", "campaign": "camp", "extra": 1},
            },
            source_info={"partner": "AppsFlyer"},
        )
    )
    assert event["type"] == "attribution"
    assert event["name"] == "attribution"
    assert event["partner_name"] == "AppsFlyer"
    assert event["publisher_name"] == "pub"
    assert event["campaign_name"] == "camp"
    assert event["attributes"] == {"Publisher": "pub", "campaign": "camp", "extra": "1"}
    assert "custom_event_type" not in event


def test_attribution_partner_falls_back_to_attribution_info() -> None:
    [event] = events_of(
        one(
            "custom_event",
            {"event_name": "re-engagement", "custom_event_type": "attribution"},
            attribution_info={"service_provider": "Adjust", "publisher": "p", "campaign": "c"},
        )
    )
    assert event["partner_name"] == "Adjust"
    assert event["name"] == "re-engagement"


PRODUCT = {
    "id": "sku",
    "name": "n",
    "position": 2,
    "price": "10.50",
    "quantity": 2,
    "total_product_amount": 21,
    "added_to_cart_time_ms": 5,
    "custom_attributes": {"color": "red"},
}


def test_product_action() -> None:
    [event] = events_of(
        one(
            "commerce_event",
            {
                "product_action": {
                    "action": "remove_from_wishlist",
                    "transaction_id": "t",
                    "affiliation": "a",
                    "total_amount": 21.5,
                    "tax_amount": "1.25",
                    "shipping_amount": 0,
                    "coupon_code": "c",
                    "checkout_step": 2,
                    "products": [PRODUCT],
                },
                "currency_code": "USD",
                "custom_attributes": {"k": "v"},
                "custom_flags": {"f": "1"},
            },
        )
    )
    assert event == {
        **{k: event[k] for k in ("type", "id", "timestamp_ms")},
        "action": "remove_from_wish_list",
        "transaction_id": "t",
        "affiliation": "a",
        "total_amount": 21.5,
        "tax_amount": 1.25,
        "shipping_amount": 0,
        "currency_code": "USD",
        "coupon_code": "c",
        "products": [
            {
                "id": "sku",
                "name": "n",
                "position": 2,
                "price": 10.50,
                "quantity": 2,
                "total_amount": 21,
                "attributes": {"color": "red"},
            }
        ],
        "attributes": {"k": "v"},
        "custom_flags": {"f": "1"},
    }
    assert event["type"] == "product_action"
    # decimals keep their text
    request = run(
        one("commerce_event", {"product_action": {"action": "purchase", "products": [PRODUCT]}})
    )
    assert request is not None
    assert b'"price":10.50' in dumps(request)


def test_product_action_unknown_is_dropped() -> None:
    body = one("commerce_event", {"product_action": {"action": "unknown"}})
    assert events_of(body) == []


def test_promotion_action() -> None:
    [event] = events_of(
        one(
            "commerce_event",
            {
                "promotion_action": {
                    "action": "click",
                    "promotions": [{"id": "p", "name": "n", "creative": "c", "position": "top"}],
                }
            },
        )
    )
    assert event["type"] == "promotion_action"
    assert event["action"] == "click"
    assert event["promotions"] == [{"id": "p", "name": "n", "creative": "c", "position": "top"}]


def test_impression() -> None:
    [event] = events_of(
        one(
            "commerce_event",
            {
                "product_impressions": [
                    {"product_impression_list": "l1", "products": [{"id": "a"}]},
                    {"product_impression_list": "l2", "products": [{"id": "b"}]},
                ]
            },
        )
    )
    assert event["type"] == "impression"
    assert event["impressions"] == [
        {"impression_list_name": "l1", "products": [{"id": "a", "position": 0}]},
        {"impression_list_name": "l2", "products": [{"id": "b", "position": 0}]},
    ]


def test_commerce_event_with_several_parts() -> None:
    data = {
        "timestamp_unixtime_ms": 77,
        "source_message_id": "m",
        "session_id": 5,
        "product_action": {"action": "purchase"},
        "promotion_action": {"action": "view"},
        "product_impressions": [{"product_impression_list": "l"}],
        "custom_attributes": {"a": "1"},
        "custom_flags": {"f": "2"},
    }
    parts = events_of(one("commerce_event", data))
    assert [e["type"] for e in parts] == ["product_action", "promotion_action", "impression"]
    assert len({e["id"] for e in parts}) == 3
    for part in parts:
        assert (part["timestamp_ms"], part["source_id"], part["session_id"]) == (77, "m", 5)
        assert part["attributes"] == {"a": "1"}
        assert part["custom_flags"] == {"f": "2"}
    # only the registered parts are sent
    parts = events_of(one("commerce_event", data), registration(events=["impression"]))
    assert [e["type"] for e in parts] == ["impression"]


def test_shopping_cart_only_commerce_event_is_not_forwarded() -> None:
    assert events_of(one("commerce_event", {"shopping_cart": {"products": [{"id": "a"}]}})) == []


def test_session_start_and_end() -> None:
    start, end, bare_end = events_of(
        {
            "events": [
                {
                    "event_type": "session_start",
                    "data": {"session_id": 1, "custom_attributes": {"a": "b"}},
                },
                {"event_type": "session_end", "data": {"session_id": 1, "session_duration_ms": 99}},
                {"event_type": "session_end", "data": {}},
            ]
        }
    )
    assert start["type"] == "session_start"
    assert "attributes" not in start
    assert end["type"] == "session_end"
    assert end["session_length_ms"] == 99
    assert bare_end["session_length_ms"] == 0


def test_screen_view() -> None:
    events = events_of(
        {
            "events": [
                {
                    "event_type": "screen_view",
                    "data": {"screen_name": "Home", "custom_attributes": {"a": 1}},
                },
                {
                    "event_type": "screen_view",
                    "data": {"screen_name": "Home", "activity_type": "activity_started"},
                },
                {
                    "event_type": "screen_view",
                    "data": {"screen_name": "Home", "activity_type": "activity_stopped"},
                },
                {"event_type": "screen_view", "data": {}},
            ]
        }
    )
    assert [e["type"] for e in events] == ["screen_view", "screen_view"]
    assert events[0]["screen_name"] == "Home"
    assert events[0]["attributes"] == {"a": "1"}


def test_crash_report_becomes_error() -> None:
    fatal, handled = events_of(
        {
            "events": [
                {
                    "event_type": "crash_report",
                    "data": {
                        "severity": "FATAL",
                        "class_name": "NPE",
                        "stack_trace": "at x",
                        "breadcrumbs": ["one", {"label": "two"}, None, {"label": None}],
                        "custom_attributes": {"k": "v"},
                    },
                },
                {"event_type": "crash_report", "data": {"message": "m", "severity": "error"}},
            ]
        }
    )
    assert fatal["type"] == "error"
    assert fatal["is_crash"] is True
    assert fatal["message"] == "NPE"
    assert fatal["stack_trace"] == "at x"
    assert fatal["breadcrumbs"] == ["one", "two"]
    assert fatal["attributes"] == {"k": "v"}
    assert handled["is_crash"] is False
    assert handled["message"] == "m"


def test_opt_out_becomes_privacy_setting_change() -> None:
    out_, in_, unset = events_of(
        {
            "events": [
                {"event_type": "opt_out", "data": {"is_opted_out": True}},
                {"event_type": "opt_out", "data": {"is_opted_out": "false"}},
                {"event_type": "opt_out", "data": {}},
            ]
        }
    )
    assert out_["type"] == "privacy_setting_change"
    assert out_["setting"] == "app_data_collection"
    assert out_["is_enabled"] is False
    assert in_["is_enabled"] is True
    assert unset["is_enabled"] is True


@pytest.mark.parametrize(
    ("data", "state"),
    [
        (
            {"application_transition_type": "application_initialized", "is_first_run": True},
            "install",
        ),
        ({"application_transition_type": "application_initialized", "is_upgrade": True}, "upgrade"),
        (
            {
                "application_transition_type": "application_initialized",
                "is_first_run": True,
                "is_upgrade": True,
            },
            "install",
        ),
        (
            {"application_transition_type": "application_initialized", "is_first_run": False},
            "initialize",
        ),
        ({"application_transition_type": "application_exit"}, "exit"),
        ({"application_transition_type": "application_background"}, "background"),
        (
            {"application_transition_type": "application_foreground", "launch_referral": "r"},
            "foreground",
        ),
        ({"application_transition_type": "unknown"}, None),
        ({}, None),
    ],
)
def test_application_state_transition(data: dict[str, Any], state: str | None) -> None:
    events = events_of(one("application_state_transition", data))
    if state is None:
        assert events == []
        return
    [event] = events
    assert event["type"] == "application_state_transition"
    assert event["application_state"] == state
    assert event.get("launch_referral") == data.get("launch_referral")


def test_push_registration_becomes_push_subscription() -> None:
    sub, unsub = events_of(
        {
            "events": [
                {
                    "event_type": "push_registration",
                    "data": {"register": True, "registration_token": "t"},
                },
                {
                    "event_type": "push_registration",
                    "data": {"register": False, "registration_token": "t"},
                },
            ]
        }
    )
    assert (sub["type"], sub["action"], sub["token"]) == ("push_subscription", "subscribe", "t")
    assert unsub["action"] == "unsubscribe"


def push(kind: str, payload: str | None) -> dict[str, Any]:
    return {
        "event_type": "push_message",
        "data": {"push_message_type": kind, "push_notification_payload": payload},
    }


def test_push_messages() -> None:
    payload = json.dumps({"itbl": {"campaignId": 1}, "aps": {}})
    events = events_of(
        {
            "events": [
                push("received", payload),
                push("action", payload),
                push("sent", payload),
                push("unknown", payload),
            ]
        }
    )
    assert [e["type"] for e in events] == ["push_message_receipt", "push_message_open"]
    assert events[0]["payload"] == payload


def test_push_messages_are_filtered_by_provider_id() -> None:
    mine = json.dumps({"itbl": "{}"})
    other = json.dumps({"other": "{}"})
    reg = registration(push_provider="itbl")
    events = events_of(
        {
            "events": [
                push("received", mine),
                push("received", other),
                push("action", mine),
                push("action", other),
                push("received", "not json"),
                push("received", None),
            ]
        },
        reg,
    )
    assert [(e["type"], e["payload"]) for e in events] == [
        ("push_message_receipt", mine),
        ("push_message_open", mine),
    ]


def test_user_attribute_change() -> None:
    added, removed, listed, tag, number = events_of(
        {
            "events": [
                {
                    "event_type": "user_attribute_change",
                    "data": {"user_attribute_name": "a", "new": "1", "old": "0"},
                },
                {
                    "event_type": "user_attribute_change",
                    "data": {"user_attribute_name": "b", "old": "x", "deleted": True},
                },
                {
                    "event_type": "user_attribute_change",
                    "data": {"user_attribute_name": "c", "new": ["x", None, "y"]},
                },
                {
                    "event_type": "user_attribute_change",
                    "data": {"user_attribute_name": "d", "new": None},
                },
                {
                    "event_type": "user_attribute_change",
                    "data": {"user_attribute_name": "e", "new": 4.0},
                },
                {"event_type": "user_attribute_change", "data": {"new": "no name"}},
            ]
        }
    )
    assert added["type"] == "user_attribute_change"
    assert added["added"] == {"a": "1"}
    assert "removed" not in added
    assert removed["removed"] == {"b": "x"}
    assert listed["added"] == {"c": '["x", "y"]'}
    assert tag["added"] == {"d": ""}
    assert number["added"] == {"e": "4"}


def test_user_attribute_change_needs_allow_user_attributes() -> None:
    body = one("user_attribute_change", {"user_attribute_name": "a", "new": "1"})
    assert (
        run(
            body,
            registration(allow={"allow_user_attributes": False, "allow_eventless_batches": True}),
        )
        is not None
    )
    assert events_of(body, registration(allow={"allow_eventless_batches": True})) == []


def test_user_identity_change() -> None:
    reg = registration(user=[UserIdentityPermission(type="email", encoding="sha256")])
    body = {
        "events": [
            {
                "event_type": "user_identity_change",
                "data": {
                    "new": {"identity_type": "email", "identity": " New@Example.com "},
                    "old": {"identity_type": "email", "identity": "old@example.com"},
                },
            },
            {
                "event_type": "user_identity_change",
                "data": {"new": {"identity_type": "customer_id", "identity": "c1"}},
            },
        ]
    }
    [event] = events_of(body, reg)
    assert event["type"] == "user_identity_change"
    assert event["added"] == [
        {
            "type": "email",
            "encoding": "sha256",
            "value": hashlib.sha256(b"new@example.com").hexdigest(),
        }
    ]
    assert event["removed"] == [
        {
            "type": "email",
            "encoding": "sha256",
            "value": hashlib.sha256(b"old@example.com").hexdigest(),
        }
    ]


def test_user_identity_change_keeps_the_permitted_side() -> None:
    reg = registration(user=[UserIdentityPermission(type="customer", encoding="raw")])
    body = one(
        "user_identity_change",
        {
            "new": {"identity_type": "customer_id", "identity": "c2"},
            "old": {"identity_type": "email", "identity": "e@x.com"},
        },
    )
    [event] = events_of(body, reg)
    assert event["added"] == [{"type": "customer", "encoding": "raw", "value": "c2"}]
    assert "removed" not in event


@pytest.mark.parametrize(
    "event_type",
    ["breadcrumb", "network_performance", "first_run", "uninstall", "profile"],
)
def test_event_types_without_a_firehose_form_are_not_forwarded(event_type: str) -> None:
    assert run(one(event_type, {}), registration(allow={"allow_eventless_batches": False})) is None
    request = run(one(event_type, {}), registration(allow={"allow_eventless_batches": True}))
    assert request is not None
    assert request.events == []


# -- batch level -----------------------------------------------------------------------------


def test_request_envelope() -> None:
    got = out(
        {
            "source_request_id": "req-1",
            "integration_attributes": {"92": {"k": "v", "n": None}, "7": {"x": "y"}},
            "context": {"data_plan": {"plan_id": "plan", "plan_version": 3}},
            "application_info": {"application_name": "App"},
            "mpid": "123",
            "mp_deviceid": "das",
            "events": [{"event_type": "session_start", "data": {}}],
        },
        registration(sdk_version="2.2.0"),
        channel="partner",
        integration_key="92",
        account_id=7,
        now_ms=5,
    )
    assert got["type"] == "event_processing_request"
    assert got["firehose_version"] == "2.2.0"
    assert got["timestamp_ms"] == 5
    assert got["source_id"] == "req-1"
    assert got["account"] == {"account_id": 7, "account_settings": {"apiKey": "key"}}
    assert got["source_channel"] == "partner"
    assert got["integration_attributes"] == {"k": "v"}
    assert got["mpid"] == "123"
    assert got["device_application_stamp"] == "das"
    assert got["platform_fields"] == {
        "mp_account_id": 0,
        "workspace_id": 0,
        "app_name": "App",
        "dataplan_id": "plan",
        "dataplan_version": 3,
    }


def test_request_timestamp_defaults_to_the_receive_time() -> None:
    got = out(one("session_start", {}))
    assert got["timestamp_ms"] == RECEIVED_MS
    assert "integration_attributes" not in got


def test_mpid_is_the_resolved_user() -> None:
    request = translate(
        resolved(one("session_start", {}, mpid=1), mpid=-99), registration(), {}, {}, "o"
    )
    assert request is not None
    assert request.mpid == "-99"


def test_account_and_connection_settings_are_merged() -> None:
    request = translate(
        resolved(one("session_start", {})),
        registration(),
        {"apiKey": "a", "region": "eu"},
        {"userIdField": "email", "region": "us"},
        "o",
    )
    assert request is not None and request.account is not None
    assert request.account.account_settings == {
        "apiKey": "a",
        "region": "us",
        "userIdField": "email",
    }


def test_user_attributes_and_lists() -> None:
    got = out(
        one(
            "session_start",
            {},
            user_attributes={
                "$FirstName": "Ann",
                "age": 42,
                "vip": False,
                "tags": ["a", None, "b"],
                "gone": None,
            },
        )
    )
    assert got["user_attributes"] == {"$FirstName": "Ann", "age": "42", "vip": "false"}
    assert got["user_attribute_lists"] == {"tags": ["a", "b"]}


def test_consent_state() -> None:
    consent = {
        "gdpr": {
            "location_collection": {
                "consented": True,
                "document": "doc",
                "timestamp_unixtime_ms": 10,
                "location": "loc",
                "hardware_id": "hw",
                "regulation": "gdpr",
            },
            "undecided": {"document": "d"},
            "none": None,
        },
        "ccpa": {"data_sale_opt_out": {"consented": "true", "timestamp_unixtime_ms": 11}},
    }
    got = out(one("session_start", {}, consent_state=consent))
    assert got["consent_state"] == {
        "gdpr_consent_state": {
            "location_collection": {
                "consented": True,
                "document": "doc",
                "timestamp_unixtime_ms": 10,
                "location": "loc",
                "hardware_id": "hw",
            }
        },
        "ccpa_consent_state": {
            "data_sale_opt_out": {"consented": True, "timestamp_unixtime_ms": 11}
        },
    }
    assert "system_notifications" not in got


def test_partner_identities() -> None:
    reg = registration(partner=[PartnerIdentityPermission(type="$cookie_sync_id", encoding="raw")])
    got = out(
        one("session_start", {}, partner_identities={"$cookie_sync_id": "c", "other": "o"}), reg
    )
    assert got["partner_identities"] == [
        {"type": "$cookie_sync_id", "encoding": "raw", "value": "c"}
    ]


# -- runtime environment (mapping §3.4) ------------------------------------------------------


@pytest.mark.parametrize(
    ("device_info", "application_info", "kind"),
    [
        ({"platform": "iOS"}, None, "ios"),
        ({"platform": "Android"}, None, "android"),
        ({"platform": "web"}, None, "mobileweb"),
        ({"platform": "tvOS"}, None, "tvos"),
        ({"platform": "roku"}, None, "roku"),
        ({"platform": "fire_tv"}, None, "firetv"),
        ({"platform": "xbox"}, None, "xbox"),
        ({"platform": "alexa"}, None, "alexa"),
        ({"platform": "smart_tv"}, None, "smarttv"),
        ({"platform": "out_of_band"}, None, "unknown"),
        (None, {"os": "UnityAndroid"}, "android"),
        (None, {"os": "IOS"}, "ios"),
        (None, {"os": "Desktop"}, "unknown"),
        (None, None, "unknown"),
    ],
)
def test_runtime_type(
    device_info: dict[str, Any] | None, application_info: dict[str, Any] | None, kind: str
) -> None:
    body = one("session_start", {}, device_info=device_info, application_info=application_info)
    assert out(body)["runtime_environment"]["type"] == kind


def test_android_runtime() -> None:
    got = out(
        one(
            "session_start",
            {},
            device_info={
                "platform": "Android",
                "android_advertising_id": "gaid",
                "android_uuid": "aid",
                "push_token": "gcm",
                "ios_advertising_id": "00000000-0000-0000-0000-000000000000",
                "screen_dpi": 320,
                "supports_telephony": True,
                "timezone_offset": 5.5,
                "cpu_architecture": "arm",
                "device_country": "DE",
            },
            application_info={"install_referrer": "ref", "package": "p"},
            sdk_version="5.0",
        )
    )["runtime_environment"]
    assert got["type"] == "android"
    assert {(i["type"], i["value"]) for i in got["identities"]} == {
        ("google_advertising_id", "gaid"),
        ("android_id", "aid"),
        ("google_cloud_messaging_token", "gcm"),
    }
    assert got["screen_dpi"] == 320
    assert got["supports_telephony"] is True
    assert got["timezone_offset"] == 5
    assert got["country"] == "DE"
    assert got["install_referrer"] == "ref"
    assert got["application_package"] == "p"
    assert got["sdk_version"] == "5.0"
    assert "cpu_architecture" not in got  # not an Android field


def test_web_runtime() -> None:
    got = out(
        one(
            "session_start",
            {},
            device_info={
                "platform": "web",
                "device_manufacturer": "m",
                "device_model": "x",
                "device_country": "FR",
                "push_token": "wpt",
                "limit_ad_tracking": False,
                "is_dst": "true",
            },
            application_info={"application_name": "ignored on web"},
        )
    )["runtime_environment"]
    assert got["type"] == "mobileweb"
    assert (got["device_manufacturer"], got["device_model"], got["device_country"]) == (
        "m",
        "x",
        "FR",
    )
    assert got["push_token"] == "wpt"
    assert (got["limit_ad_tracking"], got["is_dst"]) == ("false", "true")
    assert "identities" not in got
    assert "application_name" not in got


def test_ios_push_token_and_debug() -> None:
    got = out(
        one(
            "session_start",
            {},
            device_info={"platform": "iOS", "push_token": "apns"},
            environment="production",
        )
    )["runtime_environment"]
    assert got["identities"] == [
        {"type": "apple_push_notification_token", "encoding": "raw", "value": "apns"}
    ]
    assert "is_debug" not in got


def test_unregistered_runtime_drops_the_batch() -> None:
    body = one("session_start", {}, device_info={"platform": "Android"})
    assert run(body, registration(runtimes=["ios"])) is None
    assert run(body, registration(runtimes=["android"])) is not None
    assert run(one("session_start", {}), registration(runtimes=["ios", "android"])) is None


# -- permissions (mapping §4) ----------------------------------------------------------------

FULL_BODY: dict[str, Any] = {
    "ip": "1.2.3.4",
    "mp_deviceid": "das",
    "mpid": 77,
    "user_attributes": {"a": "b", "l": ["x"]},
    "consent_state": {"gdpr": {"p": {"consented": True, "timestamp_unixtime_ms": 1}}},
    "device_info": {
        **IOS_DEVICE,
        "http_header_user_agent": "UA",
        "brand": "Apple",
        "device_model": "iPad",
    },
    "application_info": {"application_name": "App"},
    "events": [
        {
            "event_type": "custom_event",
            "data": {"event_name": "e", "location": {"latitude": 1, "longitude": 2}},
        },
        {"event_type": "user_attribute_change", "data": {"user_attribute_name": "a", "new": "b"}},
    ],
}


def _gated(got: dict[str, Any]) -> dict[str, bool]:
    runtime = got["runtime_environment"]
    return {
        "allow_access_location": "location" in got["events"][0],
        "allow_access_ip_address": "client_ip_address" in runtime,
        "allow_access_http_user_agent": "http_header_user_agent" in runtime,
        "allow_access_device_application_stamp": "device_application_stamp" in got,
        "allow_device_info": "brand" in runtime
        and "model" in runtime
        and "application_name" in runtime,
        "allow_user_attributes": "user_attributes" in got
        and "user_attribute_lists" in got
        and any(e["type"] == "user_attribute_change" for e in got["events"]),
        "allow_consent_state": "consent_state" in got,
        "allow_access_mpid": "mpid" in got,
        "allow_platform_fields": "platform_fields" in got,
    }


GATED_FLAGS = list(_gated(out(FULL_BODY)))


@pytest.mark.parametrize("flag", GATED_FLAGS)
def test_each_allow_flag_unlocks_only_its_fields(flag: str) -> None:
    assert all(_gated(out(FULL_BODY)).values())
    only = _gated(out(FULL_BODY, registration(allow={flag: True})))
    assert only == {name: name == flag for name in GATED_FLAGS}
    without = _gated(out(FULL_BODY, registration(allow={f: f != flag for f in GATED_FLAGS})))
    assert without == {name: name != flag for name in GATED_FLAGS}


def test_identities_are_sent_without_allow_device_info() -> None:
    runtime = out(FULL_BODY, registration(allow=False))["runtime_environment"]
    assert runtime == {
        "type": "ios",
        "screen_height": 0,
        "screen_width": 0,
        "timezone_offset": 0,
        "att_timestamp_unixtime_ms": 0,
        "identities": [
            {
                "type": "ios_advertising_id",
                "encoding": "raw",
                "value": IOS_DEVICE["ios_advertising_id"],
            }
        ],
    }


def test_allow_eventless_batches() -> None:
    body = one("network_performance", {})
    assert run(body, registration(allow={"allow_eventless_batches": False})) is None
    request = run(body, registration(allow={"allow_eventless_batches": True}))
    assert request is not None
    assert b'"events":[]' in dumps(request)


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("raw", " Ann@Example.COM "),
        ("md5", hashlib.md5(b"ann@example.com").hexdigest()),
        ("sha1", hashlib.sha1(b"ann@example.com").hexdigest()),
        ("sha256", hashlib.sha256(b"ann@example.com").hexdigest()),
    ],
)
def test_identity_encodings(encoding: str, expected: str) -> None:
    reg = registration(
        user=[UserIdentityPermission(type="email", encoding=encoding)],
        device=[DeviceIdentityPermission(type="ios_advertising_id", encoding=encoding)],
    )
    idfa = "1CC8138F-8AAF-410A-B0B9-6465CFB2AF6A"
    got = out(
        one(
            "session_start",
            {},
            user_identities={"email": " Ann@Example.COM ", "customer_id": "c"},
            device_info={"platform": "iOS", "ios_advertising_id": idfa, "ios_idfv": "v"},
        ),
        reg,
    )
    assert got["user_identities"] == [{"type": "email", "encoding": encoding, "value": expected}]
    device_value = (
        idfa if encoding == "raw" else hashlib.new(encoding, idfa.lower().encode()).hexdigest()
    )
    assert got["runtime_environment"]["identities"] == [
        {"type": "ios_advertising_id", "encoding": encoding, "value": device_value}
    ]


def test_user_identity_types_are_mapped_and_filtered() -> None:
    got = out(
        one(
            "session_start",
            {},
            user_identities={
                "customerid": "c",
                "other_id_2": "o2",
                "mobile_number": "+1",
                "alias": "a",
                "facebook_custom_audience_id": "f",
                "email": "   ",
            },
        )
    )
    assert got["user_identities"] == [
        {"type": "customer", "encoding": "raw", "value": "c"},
        {"type": "other2", "encoding": "raw", "value": "o2"},
        {"type": "mobile_number", "encoding": "raw", "value": "+1"},
    ]


def test_unregistered_identity_types_are_removed() -> None:
    reg = registration(user=[], device=[])
    got = out(FULL_BODY | {"user_identities": {"email": "e@x.com"}}, reg)
    assert "user_identities" not in got
    assert "identities" not in got["runtime_environment"]


def test_required_identities() -> None:
    reg = registration(
        user=[UserIdentityPermission(type="email", encoding="raw", required=True)],
        device=[
            DeviceIdentityPermission(type="ios_advertising_id", encoding="raw", required=True),
            DeviceIdentityPermission(type="google_advertising_id", encoding="raw", required=True),
            DeviceIdentityPermission(type="ios_vendor_id", encoding="raw"),
        ],
    )
    ios = {"platform": "iOS", "ios_idfv": "v"}
    assert run(one("session_start", {}, device_info=ios), reg) is None
    zero = {**ios, "ios_advertising_id": "00000000-0000-0000-0000-000000000000"}
    assert run(one("session_start", {}, device_info=zero), reg) is None
    assert (
        run(one("session_start", {}, device_info={**ios, "ios_advertising_id": "a"}), reg)
        is not None
    )
    assert (
        run(one("session_start", {}, device_info=ios, user_identities={"email": "e"}), reg)
        is not None
    )


def test_required_partner_identity() -> None:
    reg = registration(
        partner=[PartnerIdentityPermission(type="pid", encoding="raw", required=True)]
    )
    assert run(one("session_start", {}), reg) is None
    assert run(one("session_start", {}, partner_identities={"pid": "x"}), reg) is not None


def test_only_registered_event_types_are_sent() -> None:
    body = load(SAMPLE)
    reg = registration(events=["custom_event", "screen_view"])
    assert [e["type"] for e in out(body, reg)["events"]] == ["custom_event", "screen_view"]
    assert out(body, registration(events=["impression"]))["events"] == []
    assert run(body, registration(events=["impression"], allow=False)) is None


def test_max_data_age() -> None:
    body = {
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "old",
                    "timestamp_unixtime_ms": RECEIVED_MS - 25 * 3_600_000,
                },
            },
            {
                "event_type": "custom_event",
                "data": {"event_name": "new", "timestamp_unixtime_ms": RECEIVED_MS - 3_600_000},
            },
            {"event_type": "custom_event", "data": {"event_name": "undated"}},
        ]
    }
    names = [e["name"] for e in out(body, registration(max_age_hours=24))["events"]]
    assert names == ["new", "undated"]
    assert len(out(body, registration(max_age_hours=-1))["events"]) == 3
    later = out(body, registration(max_age_hours=24), now_ms=RECEIVED_MS + 24 * 3_600_000)
    assert [e["name"] for e in later["events"]] == ["undated"]


def test_historical_batches_are_not_forwarded() -> None:
    body = load(SAMPLE)
    assert run(body, historical=True) is None
    assert run(body | {"source_info": {"is_historical": True}}) is None


def test_idsync_records_are_not_forwarded() -> None:
    assert run(one("session_start", {}), channel="idsync") is None


def test_module_without_event_processing_gets_nothing() -> None:
    reg = registration()
    reg.event_processing_registration = None
    assert translate(resolved(load(SAMPLE)), reg, {}, {}, "o") is None


# -- stable ids ------------------------------------------------------------------------------


def test_same_input_gives_the_same_message() -> None:
    body = load(SAMPLE)
    first, again = run(body), run(body)
    assert first is not None and again is not None
    assert dumps(first) == dumps(again)


def test_ids_depend_on_output_and_batch() -> None:
    body = load(SAMPLE)
    a, b, c = (
        run(body, output_id="a"),
        run(body, output_id="b"),
        run(body, batch_id="other", output_id="a"),
    )
    assert a is not None and b is not None and c is not None
    ids = [{m.id, *(e.id for e in m.events)} for m in (a, b, c)]
    assert not ids[0] & ids[1]
    assert not ids[0] & ids[2]
    assert strip_ids(to_dict(a)) == strip_ids(to_dict(b))


def test_event_ids_follow_the_inbound_index() -> None:
    request = run(load(SAMPLE), output_id="o")
    assert request is not None
    batch_id = "5f0e2d1c-0000-4000-8000-000000000001"
    assert request.events[0].id == event_id("o", batch_id, 0, "user_attribute_change")
    # breadcrumb (8) and network_performance (12) are skipped; the indexes are the inbound ones
    assert request.events[-1].id == event_id("o", batch_id, 13, "product_action")


# -- spec §2.6 rules over generated batches --------------------------------------------------

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
NAME = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
INT64 = st.integers(-(2**63), 2**63 - 1)
TS = st.integers(0, 2 * RECEIVED_MS)
SCALAR = st.one_of(
    TEXT,
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(TEXT, inner, max_size=2),
    max_leaves=4,
)
AMOUNT = st.one_of(
    st.floats(-1e9, 1e9),
    st.integers(-(10**9), 10**9),
    st.sampled_from(["10.50", "1e2", "x", " 3 ", "NaN"]),
)
UUIDISH = st.one_of(st.uuids().map(str), st.just("00000000-0000-0000-0000-000000000000"), TEXT)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def fields(**kw: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of the given keys."""
    return st.fixed_dictionaries({}, optional=kw)


COMMON = {
    "timestamp_unixtime_ms": TS,
    "source_message_id": TEXT,
    "session_id": INT64,
    "session_uuid": TEXT,
    "custom_attributes": st.dictionaries(TEXT, SCALAR, max_size=3),
    "custom_flags": st.dictionaries(TEXT, JSON, max_size=3),
    "location": fields(
        latitude=st.one_of(st.floats(-90, 90), st.sampled_from(["1.5", "x"])),
        longitude=st.floats(-180, 180),
        accuracy=st.floats(0, 100),
    ),
}
PRODUCT_S = fields(
    id=TEXT,
    name=TEXT,
    position=INT64,
    price=AMOUNT,
    quantity=AMOUNT,
    total_product_amount=AMOUNT,
    custom_attributes=st.dictionaries(TEXT, SCALAR, max_size=2),
)
IDENTITY_SIDE = fields(
    identity_type=st.sampled_from([*USER_IDENTITY_TYPES, "customerid", "bogus", "Email"]),
    identity=UUIDISH,
)
PAYLOAD = st.one_of(st.just('{"itbl": {}}'), st.just('{"other": 1}'), TEXT)

EVENT_DATA: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "custom_event": {
        "event_name": TEXT,
        "custom_event_type": st.sampled_from(
            [
                "navigation",
                "location",
                "search",
                "transaction",
                "user_content",
                "user_preference",
                "social",
                "other",
                "media",
                "attribution",
                "unknown",
            ]
        ),
    },
    "commerce_event": {
        "product_action": fields(
            action=st.sampled_from(
                [
                    "add_to_cart",
                    "remove_from_cart",
                    "checkout",
                    "checkout_option",
                    "click",
                    "view_detail",
                    "purchase",
                    "refund",
                    "add_to_wishlist",
                    "remove_from_wish_list",
                    "remove_from_wishlist",
                    "unknown",
                ]
            ),
            total_amount=AMOUNT,
            tax_amount=AMOUNT,
            products=st.lists(PRODUCT_S, max_size=2),
        ),
        "promotion_action": fields(
            action=st.sampled_from(["view", "click", "unknown"]),
            promotions=st.lists(fields(id=TEXT, position=TEXT), max_size=2),
        ),
        "product_impressions": st.lists(
            fields(product_impression_list=TEXT, products=st.lists(PRODUCT_S, max_size=2)),
            max_size=2,
        ),
        "currency_code": TEXT,
    },
    "session_start": {},
    "session_end": {"session_duration_ms": INT64},
    "screen_view": {
        "screen_name": TEXT,
        "activity_type": st.sampled_from(["activity_started", "activity_stopped"]),
    },
    "crash_report": {
        "severity": st.sampled_from(["fatal", "error", "Fatal"]),
        "message": TEXT,
        "class_name": TEXT,
        "breadcrumbs": st.lists(st.one_of(TEXT, fields(label=TEXT), st.none()), max_size=2),
    },
    "opt_out": {"is_opted_out": st.one_of(st.booleans(), st.sampled_from(["true", "", "x"]))},
    "first_run": {},
    "application_state_transition": {
        "application_transition_type": st.sampled_from(
            [
                "application_initialized",
                "application_exit",
                "application_background",
                "application_foreground",
                "unknown",
            ]
        ),
        "is_first_run": st.booleans(),
        "is_upgrade": st.booleans(),
        "launch_referral": TEXT,
    },
    "push_registration": {"register": st.booleans(), "registration_token": TEXT},
    "push_message": {
        "push_message_type": st.sampled_from(["sent", "received", "action", "unknown"]),
        "push_notification_payload": PAYLOAD,
    },
    "network_performance": {"url": TEXT},
    "breadcrumb": {"label": TEXT},
    "profile": {"profile_event_type": st.sampled_from(["login", "logout"])},
    "user_attribute_change": {
        "user_attribute_name": TEXT,
        "new": st.one_of(SCALAR, st.lists(maybe(TEXT), max_size=2)),
        "old": st.one_of(SCALAR, st.lists(maybe(TEXT), max_size=2)),
        "deleted": st.booleans(),
    },
    "user_identity_change": {"new": IDENTITY_SIDE, "old": IDENTITY_SIDE},
    "uninstall": {},
}


@st.composite
def inbound_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(EVENT_DATA)))
    return {"event_type": kind, "data": draw(fields(**COMMON, **EVENT_DATA[kind]))}


DEVICE_KEYS = [
    "ios_advertising_id",
    "ios_idfv",
    "android_advertising_id",
    "android_uuid",
    "push_token",
    "roku_advertising_id",
    "roku_publisher_id",
    "fire_advertising_id",
    "microsoft_advertising_id",
    "microsoft_publisher_id",
]

BATCHES = fields(
    events=st.lists(inbound_event(), min_size=1, max_size=8),
    source_request_id=TEXT,
    environment=st.sampled_from(["production", "development", "unknown"]),
    ip=TEXT,
    sdk_version=TEXT,
    mpid=INT64,
    mp_deviceid=TEXT,
    device_info=fields(
        platform=st.sampled_from(
            [
                "iOS",
                "Android",
                "web",
                "tvOS",
                "roku",
                "fire_tv",
                "xbox",
                "alexa",
                "smart_tv",
                "out_of_band",
                "x",
            ]
        ),
        brand=TEXT,
        http_header_user_agent=TEXT,
        screen_height=INT64,
        timezone_offset=st.floats(-1e12, 1e12),
        is_tablet=st.one_of(st.booleans(), st.just("")),
        limit_ad_tracking=st.booleans(),
        att_authorization_status=st.sampled_from(["authorized", "denied"]),
        att_timestamp_unixtime_ms=INT64,
        **{key: UUIDISH for key in DEVICE_KEYS},
    ),
    application_info=fields(
        os=st.sampled_from(["IOS", "Android", "MobileWeb", "Desktop"]),
        application_name=TEXT,
        apple_search_ads_attributes=st.dictionaries(
            TEXT, st.dictionaries(TEXT, maybe(TEXT), max_size=2), max_size=1
        ),
    ),
    user_identities=st.dictionaries(
        st.sampled_from([*USER_IDENTITY_TYPES, "customerid"]), UUIDISH, max_size=4
    ),
    user_attributes=st.dictionaries(
        TEXT, st.one_of(SCALAR, st.lists(maybe(TEXT), max_size=2)), max_size=3
    ),
    partner_identities=st.dictionaries(st.sampled_from(["pid", "other"]), maybe(TEXT), max_size=2),
    integration_attributes=st.dictionaries(
        st.sampled_from(["92", "7"]), st.dictionaries(TEXT, maybe(TEXT), max_size=2), max_size=2
    ),
    consent_state=fields(
        gdpr=st.dictionaries(
            TEXT,
            maybe(fields(consented=st.booleans(), document=TEXT, timestamp_unixtime_ms=INT64)),
            max_size=2,
        ),
        ccpa=st.dictionaries(
            st.just("data_sale_opt_out"), fields(consented=st.booleans()), max_size=1
        ),
    ),
    context=fields(
        data_plan=fields(plan_id=TEXT, plan_version=INT64),
        location=fields(latitude=st.floats(-90, 90), longitude=st.floats(-180, 180)),
    ),
    source_info=fields(partner=TEXT),
    attribution_info=fields(service_provider=TEXT),
)

ENCODINGS = st.sampled_from([e.value for e in IdentityEncoding])


@st.composite
def registrations(draw: st.DrawFn) -> ModuleRegistrationResponse:
    """Registrations: often broad (so that most batches are sent), sometimes narrow."""

    def subset(values: list[str]) -> list[str]:
        return draw(
            st.one_of(st.just(values), st.lists(st.sampled_from(values), unique=True, min_size=1))
        )

    def perms(types: list[str], cls: Any) -> list[Any]:
        chosen = draw(st.lists(st.sampled_from(types), unique=True, max_size=6))
        required = st.sampled_from([False] * 9 + [True])
        return [cls(type=t, encoding=draw(ENCODINGS), required=draw(required)) for t in chosen]

    reg = registration(
        events=subset([t.value for t in EventType]),
        runtimes=subset([t.value for t in RuntimeEnvironmentType]),
        user=perms([t.value for t in UserIdentityType], UserIdentityPermission),
        device=perms([t.value for t in DeviceIdentityType], DeviceIdentityPermission),
        partner=perms(["pid"], PartnerIdentityPermission),
        allow={flag: draw(st.booleans()) for flag in ALL_FLAGS},
        max_age_hours=draw(st.sampled_from([-1, -1, -1, 1, 24 * 365 * 100])),
        push_provider=draw(st.sampled_from([None, "itbl"])),
    )
    return reg


ALL_FLAGS = [*GATED_FLAGS, "allow_eventless_batches", "allow_audience_user_attributes"]

STRING_MAPS = ("attributes", "custom_flags", "user_attributes", "integration_attributes")


def _check_string_maps(node: Any) -> None:
    """Every map Firehose types ``Map<String,String>`` holds strings (spec §2.6.4)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in STRING_MAPS or (key in ("added", "removed") and isinstance(value, dict)):
                assert isinstance(value, dict) and all(
                    isinstance(v, str) for v in value.values()
                ), key
            _check_string_maps(value)
    elif isinstance(node, list):
        for item in node:
            _check_string_maps(item)


@PROPERTY
@given(body=BATCHES, reg=registrations(), output=st.sampled_from(["o1", "o2"]))
def test_generated_batches_follow_the_sender_rules(
    body: dict[str, Any], reg: ModuleRegistrationResponse, output: str
) -> None:
    batch = resolved(body)
    request = translate(batch, reg, {"apiKey": "k"}, {"conn": "c"}, output, integration_key="92")
    assert request == translate(
        batch, reg, {"apiKey": "k"}, {"conn": "c"}, output, integration_key="92"
    )
    note("sent" if request is not None else "not sent")
    if request is None:
        return
    note(f"events: {min(len(request.events), 3)}")
    raw = dumps(request)
    assert dumps(parse(raw)) == raw  # strict: every enum literal and discriminator is known
    got = json.loads(raw)
    permissions = reg.permissions
    registered = reg.event_processing_registration
    assert permissions is not None and registered is not None

    # 1. events always present; 2. only registered types, runtimes and identities
    assert isinstance(got["events"], list)
    assert got["events"] or permissions.allow_eventless_batches
    assert {e["type"] for e in got["events"]} <= set(registered.supported_event_types)
    runtime = got["runtime_environment"]
    assert runtime["type"] in registered.supported_runtime_environments
    user_perms = {(p.type, p.encoding) for p in permissions.user_identities}
    device_perms = {(p.type, p.encoding) for p in permissions.device_identities}
    partner_perms = {(p.type, p.encoding) for p in permissions.partner_identities}
    identity_changes = [
        i
        for e in got["events"]
        if e["type"] == "user_identity_change"
        for i in e.get("added", []) + e.get("removed", [])
    ]
    for identity in got.get("user_identities", []) + identity_changes:
        assert (identity["type"], identity["encoding"]) in user_perms
    for identity in runtime.get("identities", []):
        assert (identity["type"], identity["encoding"]) in device_perms
        assert identity["value"] != "00000000-0000-0000-0000-000000000000"
    for identity in got.get("partner_identities", []):
        assert (identity["type"], identity["encoding"]) in partner_perms
    for identity in (
        got.get("user_identities", []) + identity_changes + runtime.get("identities", [])
    ):
        if identity["encoding"] != "raw":
            assert identity["value"] == identity["value"].lower()
            assert all(c in "0123456789abcdef" for c in identity["value"])

    # 4. string map values
    _check_string_maps(got)
    assert all(isinstance(v, str) for v in got["account"]["account_settings"].values())
    for values in got.get("user_attribute_lists", {}).values():
        assert all(isinstance(v, str) for v in values)

    # ids: UUIDs, unique, stable
    ids = [got["id"], *(e["id"] for e in got["events"])]
    assert len(set(ids)) == len(ids)
    assert got["id"] == str(message_id(output, batch.stored.batch_id))

    # permissions: nothing a flag did not unlock
    gates = {
        "allow_access_location": any("location" in e for e in got["events"]),
        "allow_access_ip_address": "client_ip_address" in runtime,
        "allow_access_http_user_agent": "http_header_user_agent" in runtime,
        "allow_access_device_application_stamp": "device_application_stamp" in got,
        "allow_device_info": bool(
            {"brand", "application_name", "push_token", "att_authorization_status"} & set(runtime)
        ),
        "allow_user_attributes": "user_attributes" in got
        or "user_attribute_lists" in got
        or any(e["type"] == "user_attribute_change" for e in got["events"]),
        "allow_consent_state": "consent_state" in got,
        "allow_access_mpid": "mpid" in got,
        "allow_platform_fields": "platform_fields" in got,
    }
    for flag, present in gates.items():
        if present:
            assert getattr(permissions, flag), flag


# -- more decisions (docs/activate.md, "Translation decisions") ------------------------------


def test_push_registration_without_register_flag_subscribes() -> None:
    [event] = events_of(one("push_registration", {"registration_token": "t"}))
    assert event["action"] == "subscribe"
    runtime = out(one("push_registration", {"registration_token": "t"}))["runtime_environment"]
    assert "identities" not in runtime  # the registered token is not a device identity here


def test_foreign_device_ids_are_sent_when_registered() -> None:
    device = {"platform": "iOS", "android_advertising_id": "gaid"}
    runtime = out(one("session_start", {}, device_info=device))["runtime_environment"]
    assert runtime["identities"] == [
        {"type": "google_advertising_id", "encoding": "raw", "value": "gaid"}
    ]


def test_sdk_version_and_debug_need_no_permission() -> None:
    body = one("session_start", {}, sdk_version="7.9.2", environment="development")
    runtime = out(body, registration(allow=False, events=["session_start"]))["runtime_environment"]
    assert runtime["sdk_version"] == "7.9.2"
    assert runtime["is_debug"] is True


def test_no_enrichment_from_the_profile() -> None:
    batch = resolved(one("session_start", {}))
    batch.profile.user_attributes["from_profile"] = "x"
    batch.profile.gdpr["p"] = Consent(consented=True, timestamp_unixtime_ms=1)
    request = translate(batch, registration(), {}, {}, "o")
    assert request is not None
    assert request.user_attributes == {}
    assert request.consent_state is None
    assert request.system_notifications == []
