"""The Java SDK's example messages round-trip; the 2020 platform capture and the worked
example parse; the models match the SDK's generated JSON Schemas (fields and enum literals).
"""

from __future__ import annotations

import json
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec
import pytest

import patchbay.firehose as fh
from patchbay.firehose import enums, parse
from patchbay.firehose.serialize import dumps, to_dict
from tests.conftest import DATA

FIREHOSE = DATA / "firehose"
EXAMPLES = sorted(FIREHOSE.glob("*.json"))
CAPTURE = FIREHOSE / "extra" / "EventProcessingRequest_platform_capture_2020_iterable.json"
WORKED = FIREHOSE / "derived" / "worked_example_from_official_sample.json"
SCHEMA = FIREHOSE / "schema"


def value(data: bytes) -> Any:
    """The JSON value, with numbers kept exact (so ``10.50`` and ``0.0`` compare as text)."""
    return json.loads(data, parse_float=Decimal)


def tokens(data: bytes) -> Any:
    """The JSON with key order kept and numbers as their text: equal tokens means equal bytes
    once whitespace is ignored."""
    return json.loads(data, object_pairs_hook=list, parse_float=str, parse_int=str)


def test_all_examples_present() -> None:
    assert len(EXAMPLES) == 11
    assert {parse(p.read_bytes()).type for p in EXAMPLES} == set(enums.MessageType)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_round_trips_to_the_same_json_value(path: Path) -> None:
    raw = path.read_bytes()
    message = parse(raw)
    out = dumps(message)
    assert value(out) == value(raw)
    assert to_dict(message) == json.loads(raw)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_round_trips_with_java_key_order_and_number_text(path: Path) -> None:
    raw = path.read_bytes()
    assert tokens(dumps(parse(raw))) == tokens(raw)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_parses_the_same_from_bytes_text_and_dict(path: Path) -> None:
    raw = path.read_bytes()
    message = parse(raw)
    assert parse(raw.decode()) == message
    assert parse(json.loads(raw)) == message  # a Lambda handler's event
    assert parse(to_dict(message)) == message
    assert type(message).__name__ == path.stem.split("_")[0]


def test_example_event_processing_request_content() -> None:
    message = parse((FIREHOSE / "EventProcessingRequest_ios.json").read_bytes())
    assert isinstance(message, fh.EventProcessingRequest)
    env = message.runtime_environment
    assert isinstance(env, fh.IosRuntimeEnvironment)
    assert env.att_authorization_status == enums.AttAuthorizationStatus.AUTHORIZED
    assert env.apple_search_ads_attribution["Version3.1"]["iad-keyword"] == "keyword"
    assert [i.type for i in env.identities] == ["ios_advertising_id", "ios_vendor_id"]
    custom, product = message.events
    assert isinstance(custom, fh.CustomEvent)
    assert custom.custom_event_type == enums.CustomEventType.OTHER
    assert custom.location == fh.Location(latitude=47.6062, longitude=122.3231)
    assert isinstance(product, fh.ProductActionEvent)
    assert product.total_amount == Decimal("11")
    assert product.products[0].position == 1
    assert message.consent_state is not None
    assert message.consent_state.ccpa_consent_state["data_sale_opt_out"].consented
    gdpr, ccpa = message.system_notifications
    assert isinstance(gdpr, fh.GDPRConsentStateNotification)
    assert isinstance(ccpa, fh.CCPAConsentStateNotification)
    assert gdpr.old_gdpr_consent_state is not None
    assert not gdpr.old_gdpr_consent_state.consented


def test_example_registration_content() -> None:
    message = parse((FIREHOSE / "ModuleRegistrationResponse.json").read_bytes())
    assert isinstance(message, fh.ModuleRegistrationResponse)
    assert message.permissions is not None
    assert message.permissions.allow_access_mpid
    assert not message.permissions.allow_device_info
    events = message.event_processing_registration
    assert events is not None
    api_key = events.account_settings[0]
    assert isinstance(api_key, fh.TextSetting)
    assert api_key.required and api_key.confidential and api_key.visible
    assert isinstance(events.authentication, fh.OAuth2Authentication)
    assert events.authentication.scopes[0].name == "TEST_EVENT_SCOPE_NAME_1"
    audience = message.audience_processing_registration
    assert audience is not None
    assert audience.bulk_configuration == fh.BulkConfiguration(
        bulk_forward_wait_for_messages=4, bulk_forward_wait_in_minutes=30
    )
    assert isinstance(audience.audience_subscription_settings[0], fh.BooleanSetting)
    assert message.dsr_processing_registration is not None
    assert message.dsr_processing_registration.supported_dsr_types == ["erasure"]


def test_example_audience_membership_change_tolerates_an_empty_attribute_entry() -> None:
    message = parse((FIREHOSE / "AudienceMembershipChangeRequest.json").read_bytes())
    assert isinstance(message, fh.AudienceMembershipChangeRequest)
    assert message.user_profiles is not None
    audiences = message.user_profiles[0].audiences
    assert [a.action for a in audiences] == ["add", "attribute_update", "delete"]
    assert audiences[1].user_attributes[2] == fh.UserAttributeAudienceEvent()


def test_example_dsr_request_reads_the_java_instant() -> None:
    message = parse((FIREHOSE / "DsrProcessingRequest.json").read_bytes())
    assert isinstance(message, fh.DsrProcessingRequest)
    assert message.account is None  # the shipped example has none
    assert message.submitted_time is not None
    assert message.submitted_time.isoformat() == "2024-05-01T19:45:44.067235+00:00"
    assert b'"submitted_time":1714592744.067235000' in dumps(message)
    assert message.subject_identities["email"].value == "jane.doe@example.com"


def test_platform_capture_2020_parses() -> None:
    raw = CAPTURE.read_bytes()
    message = parse(raw)
    assert isinstance(message, fh.EventProcessingRequest)
    assert message.firehose_version == "2.2.0"
    assert message.mpid == "-5227515829034156637"
    assert message.source_channel == enums.ChannelSourceType.PARTNER
    assert message.account is not None
    settings = message.account.account_settings
    assert settings["apnsProdIntegrationName"] is None
    assert message.account.get_bool_setting("coerceStringsToScalars") is True  # "True"
    assert message.account.get_string_setting("userIdField") == "customerId"
    env = message.runtime_environment
    assert isinstance(env, fh.GenericRuntimeEnvironment)
    assert env.type == enums.RuntimeEnvironmentType.UNKNOWN
    assert env.is_debug
    assert len(message.events) == 5
    assert all(isinstance(e, fh.CustomEvent) and e.session_id == 0 for e in message.events)
    assert message.user_attributes["$Mobile"] == "16503926752"


def test_platform_capture_2020_rewritten_by_the_java_rules() -> None:
    """The platform wrote empty containers; the SDK's rule drops them, keeps ``null`` map
    values and ``session_id: 0``, and writes the generic runtime's int ``timezone_offset``."""
    raw = value(CAPTURE.read_bytes())
    out = value(dumps(parse(CAPTURE.read_bytes())))
    expected = dict(raw)
    del expected["user_attribute_lists"], expected["system_notifications"]
    env = dict(raw["runtime_environment"])
    del env["identities"]
    env["timezone_offset"] = 0
    expected["runtime_environment"] = env
    assert out == expected
    assert out["account"]["account_settings"]["gcmIntegrationName"] is None


def test_worked_example_parses_and_round_trips_but_its_empty_list() -> None:
    raw = value(WORKED.read_bytes())
    message = parse(WORKED.read_bytes())
    assert isinstance(message, fh.EventProcessingRequest)
    assert [e.type for e in message.events][:3] == [
        "user_attribute_change",
        "session_start",
        "user_identity_change",
    ]
    assert message.platform_fields is not None
    assert message.platform_fields.workspace_name == "Example Workspace"
    expected = dict(raw)
    del expected["system_notifications"]  # [] is empty: the SDK leaves it out
    assert value(dumps(message)) == expected


# --------------------------------------------------------------------------- JSON Schemas

#: Schema class names whose model has another name (None: not modelled; the SDK does not
#: register ``UnknownRuntimeEnvironment``).
MODEL_NAMES = {
    "Event": "BaseEvent",
    "RuntimeEnvironment": "BaseRuntimeEnvironment",
    "Setting": "BaseSetting",
    "SystemNotification": "BaseSystemNotification",
    "FireTVRuntimeEnvironment": "FireTvRuntimeEnvironment",
    "TVOSRuntimeEnvironment": "TvosRuntimeEnvironment",
    "UnknownRuntimeEnvironment": None,
}
#: Schema properties generated from getters that Jackson never serializes (visibility NONE).
GETTER_ONLY = {"request", "debug", "crash", "enabled", "httpHeaderUserAgent", "ccpa", "gdpr"}

ENUM_SCHEMAS: dict[str, type[StrEnum]] = {
    "ApplicationStateTransitionEvent.ApplicationState": enums.ApplicationState,
    "AttAuthorizationStatus": enums.AttAuthorizationStatus,
    "Audience.AudienceAction": enums.AudienceAction,
    "AudienceSubscriptionRequest.SubscriptionAction": enums.AudienceSubscriptionAction,
    "AuthenticationConfiguration.Type": enums.AuthenticationType,
    "CustomEvent.CustomType": enums.CustomEventType,
    "DeviceIdentity.Type": enums.DeviceIdentityType,
    "DsrProcessingRequest.Type": enums.DsrType,
    "Event.Type": enums.EventType,
    "Identity.Encoding": enums.IdentityEncoding,
    "OAuth2Authentication.AccessTokenType": enums.OAuth2AccessTokenType,
    "OAuth2Authentication.GrantType": enums.OAuth2GrantType,
    "OpenDsrIdentity.Encoding": enums.OpenDsrIdentityEncoding,
    "OpenDsrIdentity.Type": enums.OpenDsrIdentityType,
    "PrivacySettingChangeEvent.PrivacySetting": enums.PrivacySetting,
    "ProductActionEvent.Action": enums.ProductAction,
    "PromotionActionEvent.Action": enums.PromotionAction,
    "PushSubscriptionEvent.Action": enums.PushSubscriptionAction,
    "RegulationType": enums.RegulationType,
    "RuntimeEnvironment.Type": enums.RuntimeEnvironmentType,
    "Setting.Type": enums.SettingType,
    "SystemNotification.Type": enums.SystemNotificationType,
    "UserAttributeAudienceEvent.AttributeAction": enums.UserAttributeAction,
    "UserIdentity.Type": enums.UserIdentityType,
}


def _schemas() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(SCHEMA.glob("*_schema.json")):
        found[path.name.removesuffix("_schema.json")] = json.loads(path.read_text())
    return found


def _class_schemas() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, schema)
        for name, schema in _schemas().items()
        if "properties" in schema and MODEL_NAMES.get(name, name) is not None
    ]


def _enum_of(t: msgspec.inspect.Type) -> type[StrEnum] | None:
    if isinstance(t, msgspec.inspect.Metadata):
        if t.extra and "firehose_enum" in t.extra:
            found: type[StrEnum] = t.extra["firehose_enum"]
            return found
        return _enum_of(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        for member in t.types:
            if (inner := _enum_of(member)) is not None:
                return inner
    return None


@pytest.mark.parametrize("name", sorted(ENUM_SCHEMAS))
def test_enum_literals_match_the_sdk_schema(name: str) -> None:
    assert [m.value for m in ENUM_SCHEMAS[name]] == _schemas()[name]["enum"]


def test_message_type_literals_match_the_sdk_schema() -> None:
    schema = _schemas()["EventProcessingRequest"]
    assert [m.value for m in enums.MessageType] == schema["properties"]["type"]["enum"]


@pytest.mark.parametrize(("name", "schema"), _class_schemas(), ids=[n for n, _ in _class_schemas()])
def test_model_fields_and_enums_match_the_sdk_schema(name: str, schema: dict[str, Any]) -> None:
    model = getattr(fh, MODEL_NAMES.get(name) or name)
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    ours = {f.encode_name: f for f in info.fields}
    theirs = {k: v for k, v in schema["properties"].items() if k not in GETTER_ONLY}
    if info.tag_field is not None:
        assert theirs.pop(info.tag_field)["enum"]  # the discriminator
    if name == "Identity":  # the abstract base: its fields live on the subclasses
        assert set(theirs) == {"encoding", "value"}
        return
    assert set(ours) == set(theirs)
    for key, prop in theirs.items():
        enum = _enum_of(ours[key].type)
        if "enum" in prop:
            assert enum is not None, key
            assert [m.value for m in enum] == prop["enum"], key
        elif prop.get("type") == "string":
            assert enum is None, key
