"""The models and the serializer's rules: strict and lenient enums, discriminators,
``submitted_time`` forms, the empty/null/default rule, and Jackson's reading quirks."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest

import patchbay.firehose as fh
from patchbay.firehose import enums
from patchbay.firehose.errors import (
    FirehoseDecodeError,
    FirehoseValidationError,
    UnknownEnumValueError,
    UnknownTypeError,
)
from patchbay.firehose.serialize import dumps, parse, to_dict

ID = "b3d9def7-f80a-4650-87b1-04c9fcce6082"
EVENT_ID = "f93adf6a-be2c-4dd9-be7a-3bac9a0987ee"


def envelope(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "id": ID, "timestamp_ms": 1, "firehose_version": "3.2.0", **fields}


def epr(*events: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return envelope("event_processing_request", events=list(events), **fields)


def custom_event(**fields: Any) -> dict[str, Any]:
    return {"type": "custom_event", "id": EVENT_ID, "timestamp_ms": 1, "name": "n", **fields}


def dsr(**fields: Any) -> dict[str, Any]:
    return envelope("dsr_processing_request", **fields)


# --------------------------------------------------------------------------- enums


def test_unknown_enum_value_names_the_path_and_the_allowed_values() -> None:
    data = epr(custom_event(), custom_event(custom_event_type="attribution"))
    with pytest.raises(UnknownEnumValueError) as caught:
        parse(data)
    err = caught.value
    assert err.path == "$.events[1].custom_event_type"
    assert err.value == "attribution"
    assert err.vocabulary == "CustomEventType"
    assert err.allowed == tuple(m.value for m in enums.CustomEventType)
    text = str(err)
    assert "`$.events[1].custom_event_type`" in text
    assert "'attribution'" in text
    assert "'navigation'" in text and "'media'" in text
    assert isinstance(err, FirehoseValidationError) and isinstance(err, ValueError)


def test_lenient_keeps_an_unknown_enum_value_as_a_plain_string() -> None:
    data = epr(custom_event(custom_event_type="attribution"))
    message = parse(data, lenient=True)
    assert isinstance(message, fh.EventProcessingRequest)
    event = message.events[0]
    assert isinstance(event, fh.CustomEvent)
    assert event.custom_event_type == "attribution"
    assert type(event.custom_event_type) is str
    assert to_dict(message)["events"][0]["custom_event_type"] == "attribution"


def test_enum_literals_are_case_sensitive() -> None:
    data = epr(user_identities=[{"type": "Email", "encoding": "raw", "value": "a@b.c"}])
    with pytest.raises(UnknownEnumValueError) as caught:
        parse(data)
    assert caught.value.path == "$.user_identities[0].type"
    assert "'email'" in str(caught.value)


def test_known_enum_values_compare_equal_to_the_enum_members() -> None:
    message = parse(epr(custom_event(custom_event_type="navigation")))
    assert isinstance(message, fh.EventProcessingRequest)
    event = message.events[0]
    assert isinstance(event, fh.CustomEvent)
    assert event.custom_event_type == enums.CustomEventType.NAVIGATION


def test_enum_errors_in_nested_lists_and_maps() -> None:
    runtime = {
        "type": "android",
        "identities": [
            {"type": "android_id", "encoding": "raw", "value": "x"},
            {"type": "android_id", "encoding": "sha512", "value": "x"},
        ],
    }
    with pytest.raises(UnknownEnumValueError) as caught:
        parse(epr(runtime_environment=runtime))
    assert caught.value.path == "$.runtime_environment.identities[1].encoding"
    assert caught.value.vocabulary == "IdentityEncoding"

    identities = {"other6": {"encoding": "raw", "value": "x"}}
    with pytest.raises(UnknownEnumValueError) as caught:
        parse(dsr(subject_identities=identities))
    assert caught.value.path == "$.subject_identities['other6']"
    assert "'controller_customer_id'" in str(caught.value)
    lenient = parse(dsr(subject_identities=identities), lenient=True)
    assert isinstance(lenient, fh.DsrProcessingRequest)
    assert lenient.subject_identities["other6"].value == "x"

    registration = envelope(
        "module_registration_response",
        event_processing_registration={"supported_event_types": ["custom_event", "network"]},
    )
    with pytest.raises(UnknownEnumValueError) as caught:
        parse(registration)
    assert caught.value.path == "$.event_processing_registration.supported_event_types[1]"
    assert caught.value.vocabulary == "EventType"


def test_an_enum_value_must_be_a_string_even_when_lenient() -> None:
    data = epr(custom_event(custom_event_type=3))
    for lenient in (False, True):
        with pytest.raises(UnknownEnumValueError):
            parse(data, lenient=lenient)


# --------------------------------------------------------------------------- discriminators


@pytest.mark.parametrize(
    ("data", "path", "vocabulary", "example"),
    [
        (envelope("event_processing_requests"), "$.type", "MessageType", "dsr_processing_request"),
        (epr({"type": "network_performance"}), "$.events[0].type", "EventType", "impression"),
        (
            epr(runtime_environment={"type": "desktop"}),
            "$.runtime_environment.type",
            "RuntimeEnvironmentType",
            "smarttv",
        ),
        (
            epr(system_notifications=[{"type": "consent"}]),
            "$.system_notifications[0].type",
            "SystemNotificationType",
            "ccpa_consent_state",
        ),
        (
            envelope(
                "module_registration_response",
                dsr_processing_registration={
                    "account_settings": [{"type": "password", "id": "a", "name": "b"}]
                },
            ),
            "$.dsr_processing_registration.account_settings[0].type",
            "SettingType",
            "boolean",
        ),
        (
            envelope(
                "module_registration_response",
                audience_processing_registration={"authentication": {"type": "basic"}},
            ),
            "$.audience_processing_registration.authentication.type",
            "AuthenticationType",
            "oauth2",
        ),
    ],
)
def test_unknown_discriminator_is_rejected_even_when_lenient(
    data: dict[str, Any], path: str, vocabulary: str, example: str
) -> None:
    for lenient in (False, True):
        with pytest.raises(UnknownTypeError) as caught:
            parse(data, lenient=lenient)
        assert caught.value.path == path
        assert caught.value.vocabulary == vocabulary
        assert example in caught.value.allowed
        assert f"`{path}`" in str(caught.value)


def test_missing_discriminator() -> None:
    with pytest.raises(FirehoseValidationError) as caught:
        parse({"id": ID})
    assert caught.value.path == "$"
    assert "module_registration_request" in str(caught.value)
    with pytest.raises(FirehoseValidationError) as caught:
        parse(epr({"id": EVENT_ID}))
    assert caught.value.path == "$.events[0]"


def _tags(union: Any) -> set[str]:
    info = msgspec.inspect.type_info(union)
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    return {m.tag for m in members if isinstance(m, msgspec.inspect.StructType)}


@pytest.mark.parametrize(
    ("union", "enum"),
    [
        (fh.Message, enums.MessageType),
        (fh.Event, enums.EventType),
        (fh.RuntimeEnvironment, enums.RuntimeEnvironmentType),
        (fh.SystemNotification, enums.SystemNotificationType),
        (fh.Setting, enums.SettingType),
        (fh.Authentication, enums.AuthenticationType),
    ],
)
def test_each_union_covers_its_discriminator_vocabulary(union: Any, enum: Any) -> None:
    assert _tags(union) == {m.value for m in enum}


def test_each_model_reports_its_type_and_writes_it_first() -> None:
    info = msgspec.inspect.type_info(fh.Event)
    assert isinstance(info, msgspec.inspect.UnionType)
    for cls in info.types:
        assert isinstance(cls, msgspec.inspect.StructType)
        event = cls.cls()
        assert event.type == cls.tag
        assert next(iter(to_dict(event))) == "type"
    assert fh.DsrProcessingResponse().type == enums.MessageType.DSR_PROCESSING_RESPONSE
    assert fh.SmartTvRuntimeEnvironment().type == "smarttv"
    assert fh.TextSetting(id="a", name="b").type == "text"
    assert fh.CCPAConsentStateNotification().type == "ccpa_consent_state"
    assert fh.OAuth2Authentication().type == "oauth2"


def test_smarttv_and_alexa_keep_their_type() -> None:
    """Java reads both as its generic runtime and rewrites them as ``unknown``; the models
    keep the literal (still readable by Java) and share the generic fields."""
    for kind in ("smarttv", "alexa"):
        message = parse(epr(runtime_environment={"type": kind, "screen_dpi": 3}))
        assert isinstance(message, fh.EventProcessingRequest)
        env = message.runtime_environment
        assert isinstance(env, fh.GenericRuntimeEnvironment)
        assert env.screen_dpi == 3
        assert to_dict(message)["runtime_environment"]["type"] == kind


def test_the_discriminator_may_come_last() -> None:
    data = {
        "id": ID,
        "events": [{"name": "x", "type": "custom_event"}],
        "type": "event_processing_request",
    }
    message = parse(json.dumps(data))
    assert isinstance(message, fh.EventProcessingRequest)
    assert isinstance(message.events[0], fh.CustomEvent)


# --------------------------------------------------------------------------- timestamps

SUBMITTED = datetime(2021, 11, 1, 15, 0, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        '"2021-11-01T15:00:00.25Z"',  # the platform's form (ISO-8601)
        '"2021-11-01T17:00:00.250+02:00"',
        '"2021-11-01T15:00:00.250000999Z"',  # nanoseconds beyond microseconds are dropped
        "1635778800.250000000",  # the Java SDK's form (epoch seconds, nine decimals)
        "1635778800.25",
        '"1635778800.250"',
    ],
)
def test_submitted_time_is_read_in_both_forms(raw: str) -> None:
    text = json.dumps(dsr()).removesuffix("}") + f', "submitted_time": {raw}}}'
    message = parse(text)
    assert isinstance(message, fh.DsrProcessingRequest)
    assert message.submitted_time == SUBMITTED
    assert message.submitted_time is not None and message.submitted_time.tzinfo is UTC
    assert b'"submitted_time":1635778800.250000000' in dumps(message)


def test_submitted_time_edge_forms() -> None:
    whole = parse(dsr(submitted_time=1635778800))
    assert isinstance(whole, fh.DsrProcessingRequest)
    assert whole.submitted_time == datetime(2021, 11, 1, 15, tzinfo=UTC)
    naive = parse(dsr(submitted_time="2021-11-01T15:00:00"))
    assert isinstance(naive, fh.DsrProcessingRequest)
    assert naive.submitted_time == datetime(2021, 11, 1, 15, tzinfo=UTC)
    from_float = parse(dsr(submitted_time=1635778800.25))  # a dict from a Lambda event
    assert isinstance(from_float, fh.DsrProcessingRequest)
    assert from_float.submitted_time == SUBMITTED
    before_1970 = fh.DsrProcessingRequest(
        submitted_time=datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    )
    assert to_dict(before_1970)["submitted_time"] == -0.5
    assert b'"submitted_time":-0.500000000' in dumps(before_1970)
    local = fh.DsrProcessingRequest(
        submitted_time=datetime(2021, 11, 1, 16, tzinfo=timezone(timedelta(hours=1)))
    )
    assert b'"submitted_time":1635778800.000000000' in dumps(local)


@pytest.mark.parametrize("bad", ["yesterday", True, [], {"s": 1}, "2021-13-01T00:00:00Z"])
def test_invalid_submitted_time(bad: object) -> None:
    with pytest.raises(FirehoseValidationError) as caught:
        parse(dsr(submitted_time=bad))
    assert caught.value.path == "$.submitted_time"
    assert "ISO-8601" in str(caught.value)


def test_java_sdk_dsr_test_input_parses() -> None:
    """The SDK's ``DsrProcessingRequestSerializationTest`` input: ISO time, no id or
    timestamp, and an unmodelled ``extensions`` object."""
    text = (
        '{"type":"dsr_processing_request","regulation":"gdpr",'
        '"subject_request_id":"a7551968-d5d6-44b2-9831-815ac9017798","subject_request_type":"erasure",'
        '"submitted_time":"2021-11-01T15:00:00Z","subject_identities":{"email":{"value":"johndoe@example.com","encoding":"raw"},'
        '"ios_advertising_id":{"value":"EA7583CD-A667-48BC-B806-42ECB2B48606","encoding":"raw"}},"api_version":"3.0",'
        '"extensions":{"opendsr.mparticle.com":{"skip_waiting_period":false,"subject_identities":{"other6":{'
        '"value":"EA7583CD-A667-48BC-B806-42ECB2B48606","encoding":"raw"}}}}}'
    )
    message = parse(text)
    assert isinstance(message, fh.DsrProcessingRequest)
    assert message.regulation == enums.RegulationType.GDPR
    assert (
        message.subject_identities[enums.OpenDsrIdentityType.EMAIL].value == "johndoe@example.com"
    )
    assert message.submitted_time == datetime(2021, 11, 1, 15, tzinfo=UTC)
    assert message.id.version == 4  # absent: a fresh id, as the Java constructor makes
    assert message.firehose_version == "3.2.0"
    assert "extensions" not in to_dict(message)


# --------------------------------------------------------------------------- writing rules


def test_empty_and_null_fields_are_left_out_but_events_is_always_written() -> None:
    message = fh.EventProcessingRequest(
        source_id="",
        account=fh.Account(account_id=7),
        user_attributes={},
        user_identities=[],
        mpid=None,
    )
    assert to_dict(message) == {
        "type": "event_processing_request",
        "id": str(message.id),
        "timestamp_ms": message.timestamp_ms,
        "firehose_version": "3.2.0",
        "account": {"account_id": 7},
        "events": [],
    }


def test_java_primitives_are_always_written() -> None:
    env = to_dict(fh.GenericRuntimeEnvironment())
    assert env == {
        "type": "unknown",
        "screen_height": 0,
        "screen_width": 0,
        "screen_dpi": 0,
        "timezone_offset": 0,
    }
    assert to_dict(fh.ErrorEvent(id=uuid.UUID(EVENT_ID), timestamp_ms=5)) == {
        "type": "error",
        "id": EVENT_ID,
        "timestamp_ms": 5,
        "is_crash": False,
    }
    assert to_dict(fh.Location()) == {"latitude": 0.0, "longitude": 0.0, "accuracy": 0.0}
    assert to_dict(fh.Product()) == {"position": 0}
    assert to_dict(fh.GDPRConsent()) == {"consented": False}
    assert to_dict(fh.UserIdentityPermission(type="email", encoding="sha256")) == {
        "type": "email",
        "encoding": "sha256",
        "required": False,
    }
    assert to_dict(fh.TextSetting(id="apiKey", name="API Key")) == {
        "type": "text",
        "id": "apiKey",
        "name": "API Key",
        "visible": True,
        "required": False,
        "confidential": False,
    }
    assert to_dict(fh.BooleanSetting(id="a", name="b", visible=False)) == {
        "type": "boolean",
        "id": "a",
        "name": "b",
        "visible": False,
        "default_value": False,
        "checked": False,
    }
    assert to_dict(fh.EventProcessingRegistration()) == {"max_data_age_hours": 24}
    assert to_dict(fh.PlatformFields()) == {"mp_account_id": 0, "workspace_id": 0}
    assert to_dict(fh.CCPAConsentStateNotification()) == {
        "type": "ccpa_consent_state",
        "purpose": "data_sale_opt_out",
    }
    assert "suspend_subscription" in to_dict(fh.AudienceMembershipChangeResponse())


def test_non_default_fields_are_written_only_when_set() -> None:
    assert "suspend_subscription" not in to_dict(fh.EventProcessingResponse())
    assert to_dict(fh.EventProcessingResponse(suspend_subscription=True))["suspend_subscription"]
    assert "is_debug" not in to_dict(fh.IosRuntimeEnvironment())
    assert to_dict(fh.IosRuntimeEnvironment(is_debug=True))["is_debug"] is True
    assert to_dict(fh.Permissions()) == {}
    assert to_dict(fh.Permissions(allow_access_mpid=True)) == {"allow_access_mpid": True}


def test_nullable_booleans_are_written_when_false() -> None:
    env = to_dict(fh.AndroidRuntimeEnvironment(is_tablet=False))
    assert env["is_tablet"] is False
    assert "has_nfc" not in env


def test_user_profiles_none_versus_empty() -> None:
    verification = parse(envelope("audience_membership_change_request", account={"account_id": 1}))
    assert isinstance(verification, fh.AudienceMembershipChangeRequest)
    assert verification.user_profiles is None
    assert "user_profiles" not in to_dict(verification)
    empty = fh.AudienceMembershipChangeRequest(user_profiles=[])
    assert to_dict(empty)["user_profiles"] == []
    assert parse(dumps(empty)) == empty


def test_map_and_list_contents_are_written_as_they_are() -> None:
    account = fh.Account(account_settings={"a": None, "b": "", "c": "x"})
    assert to_dict(account) == {"account_id": 0, "account_settings": {"a": None, "b": "", "c": "x"}}
    event = fh.ErrorEvent(breadcrumbs=["", "b"], attributes={"k": ""})
    written = to_dict(event)
    assert written["breadcrumbs"] == ["", "b"]
    assert written["attributes"] == {"k": ""}


def test_new_messages_and_events_get_fresh_ids_and_the_sdk_version() -> None:
    first, second = fh.EventProcessingResponse(), fh.EventProcessingResponse()
    assert first.id != second.id and first.id.version == 4
    assert first.firehose_version == enums.FIREHOSE_VERSION == "3.2.0"
    assert isinstance(first.timestamp_ms, int) and first.timestamp_ms > 1_700_000_000_000
    assert fh.SessionStartEvent().id != fh.SessionStartEvent().id
    assert fh.ModuleRegistrationResponse().sdk_version == "3.2.0"


def test_firehose_version_absent_means_the_default_and_present_wins() -> None:
    assert parse({"type": "dsr_processing_response"}).firehose_version == "3.2.0"
    assert (
        parse(envelope("dsr_processing_response", firehose_version="2.1.1")).firehose_version
        == "2.1.1"
    )


def test_decimals_keep_their_text() -> None:
    event = (
        '{"type":"product_action","id":"EVENT_ID","timestamp_ms":1,"action":"purchase",'
        '"total_amount":10.50,"tax_amount":1e2,"products":[{"price":0.1,"quantity":3}]}'
    ).replace("EVENT_ID", EVENT_ID)
    raw = json.dumps(epr()).replace('"events": []', f'"events": [{event}]')
    message = parse(raw)
    assert isinstance(message, fh.EventProcessingRequest)
    product_action = message.events[0]
    assert isinstance(product_action, fh.ProductActionEvent)
    assert product_action.total_amount == Decimal("10.50")
    assert str(product_action.total_amount) == "10.50"
    out = dumps(message)
    assert b'"total_amount":10.50' in out
    assert b'"tax_amount":1E+2' in out  # as Java's BigDecimal writes 1e2
    assert b'"price":0.1,"quantity":3' in out
    assert to_dict(message)["events"][0]["total_amount"] == 10.5


# --------------------------------------------------------------------------- reading rules


def test_unknown_fields_are_ignored() -> None:
    data = epr(custom_event(colour="red"), brand_new_field={"x": [1, 2]})
    message = parse(data)
    assert isinstance(message, fh.EventProcessingRequest)
    assert "brand_new_field" not in to_dict(message)
    assert "colour" not in to_dict(message)["events"][0]


def test_scalars_are_read_as_text_into_string_fields() -> None:
    data = epr(
        custom_event(attributes={"n": 42, "b": True, "f": 1.50, "s": "x"}, name=7),
        mpid=-5227515829034156637,
        account={"account_id": 1, "account_settings": {"flag": False}},
    )
    message = parse(json.dumps(data).replace("1.5,", "1.50,"))
    assert isinstance(message, fh.EventProcessingRequest)
    event = message.events[0]
    assert isinstance(event, fh.CustomEvent)
    assert event.attributes == {"n": "42", "b": "true", "f": "1.50", "s": "x"}
    assert event.name == "7"
    assert message.mpid == "-5227515829034156637"
    assert message.account is not None
    assert message.account.account_settings == {"flag": "false"}


def test_arrays_are_not_strings() -> None:
    with pytest.raises(FirehoseValidationError) as caught:
        parse(epr(custom_event(attributes={"list": ["a"]})))
    assert caught.value.path == "$.events[0].attributes[...]"


def test_nulls_are_tolerated() -> None:
    data = epr(
        custom_event(session_id=None, attributes={"a": None, "b": "x"}, custom_event_type=None),
        {
            "type": "error",
            "id": EVENT_ID,
            "timestamp_ms": 1,
            "is_crash": None,
            "breadcrumbs": ["a", None],
        },
        None,
        user_identities=None,
        account={"account_id": None, "account_settings": {"k": None}},
    )
    message = parse(data)
    assert isinstance(message, fh.EventProcessingRequest)
    custom, error = message.events
    assert isinstance(custom, fh.CustomEvent) and isinstance(error, fh.ErrorEvent)
    assert custom.session_id is None and custom.custom_event_type is None
    assert custom.attributes == {"b": "x"}
    assert error.is_crash is False and error.breadcrumbs == ["a"]
    assert message.user_identities == []
    assert message.account == fh.Account(account_id=0, account_settings={"k": None})
    no_events = parse(epr() | {"events": None})
    assert isinstance(no_events, fh.EventProcessingRequest)
    assert no_events.events == []


def test_ids_are_uuids() -> None:
    with pytest.raises(FirehoseValidationError) as caught:
        parse(epr(custom_event(id="12345")))
    assert caught.value.path == "$.events[0].id"
    upper = parse(epr(custom_event(id=EVENT_ID.upper())))
    assert to_dict(upper)["events"][0]["id"] == EVENT_ID


def test_java_int_range_is_checked() -> None:
    with pytest.raises(FirehoseValidationError) as caught:
        parse(epr(account={"account_id": 2**31}))
    assert caught.value.path == "$.account.account_id"
    parse(epr(custom_event(session_id=-(2**63))))


def test_required_identity_fields() -> None:
    with pytest.raises(FirehoseValidationError) as caught:
        parse(epr(user_identities=[{"type": "email", "encoding": "raw", "value": ""}]))
    assert caught.value.path == "$.user_identities[0].value"
    with pytest.raises(FirehoseValidationError) as caught:
        parse(epr(user_identities=[{"type": "email", "value": "x"}]))
    assert "encoding" in str(caught.value)


@pytest.mark.parametrize("bad", [b"", b"{", b"[1]", b'"text"', b"null", "{'a': 1}"])
def test_not_a_json_object(bad: bytes | str) -> None:
    with pytest.raises(FirehoseDecodeError):
        parse(bad)


def test_wrong_types_name_the_path() -> None:
    with pytest.raises(FirehoseValidationError) as caught:
        parse(epr(custom_event(session_id="abc")))
    assert caught.value.path == "$.events[0].session_id"
    with pytest.raises(FirehoseValidationError) as caught:
        parse(epr(runtime_environment=[]))
    assert caught.value.path == "$.runtime_environment"


# --------------------------------------------------------------------------- helpers


def test_account_setting_getters() -> None:
    account = fh.Account(
        account_id=1,
        account_settings={"s": "x", "i": "42", "f": "1.5", "b": "TRUE", "no": "yes", "n": None},
    )
    assert account.get_string_setting("s") == "x"
    assert account.get_string_setting("n", default="d") == "d"
    assert account.get_int_setting("i") == 42
    assert account.get_float_setting("f") == 1.5
    assert account.get_bool_setting("b") is True
    assert account.get_bool_setting("no") is False
    assert account.get_bool_setting("missing", default=True) is True
    with pytest.raises(fh.SettingError, match="'missing'"):
        account.get_string_setting("missing", required=True)
    with pytest.raises(fh.SettingError):
        account.get_int_setting("s")
    with pytest.raises(fh.SettingError):
        account.get_float_setting("s")


def test_events_and_notifications_carry_their_request_without_serializing_it() -> None:
    message = parse(
        epr(custom_event(), system_notifications=[{"type": "gdpr_consent_state", "purpose": "p"}])
    )
    assert isinstance(message, fh.EventProcessingRequest)
    event, notification = message.events[0], message.system_notifications[0]
    assert event.request is None
    event.attach_request(message)
    notification.attach_request(message)
    assert event.request is message and notification.request is message
    assert "request" not in to_dict(event)
    assert parse(dumps(message)) == message
