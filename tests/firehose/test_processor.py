"""``MessageProcessor``: dispatch per message and per event type, the default answers,
verification requests, error mapping and the typed account-settings accessors."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

import patchbay.firehose as fh
from patchbay.firehose import enums
from patchbay.firehose.processor import (
    EVENT_HOOKS,
    NOTIFICATION_HOOKS,
    REQUEST_HANDLERS,
    HandlerError,
    InvalidMessageError,
    InvalidSettingsError,
    MessageProcessor,
    ProcessorError,
    Settings,
    UnregisteredSettingError,
    UnsupportedMessageError,
)
from patchbay.firehose.serialize import dumps, parse

DATA = Path(__file__).parent.parent / "data" / "firehose"

API_KEY = fh.TextSetting(id="apiKey", name="API Key", required=True, confidential=True)
SETTINGS: list[fh.Setting] = [
    API_KEY,
    fh.TextSetting(id="region", name="Region", default_value="eu"),
    fh.TextSetting(id="label", name="Label"),
    fh.IntegerSetting(id="batch", name="Batch size", default_value=10, min_value=1, max_value=50),
    fh.IntegerSetting(id="limit", name="Limit"),
    fh.IntegerSetting(id="retries", name="Retries", required=True),
    fh.FloatSetting(id="ratio", name="Ratio", default_value=0.5, min_value=0.0, max_value=1.0),
    fh.BooleanSetting(id="debug", name="Debug"),
    fh.BooleanSetting(id="verbose", name="Verbose", default_value=True),
]


def registration(**fields: Any) -> fh.ModuleRegistrationResponse:
    return fh.ModuleRegistrationResponse(
        name="Test partner",
        version="1.2.3",
        event_processing_registration=fh.EventProcessingRegistration(
            account_settings=[API_KEY],
            event_connection_settings=[
                fh.IntegerSetting(id="batch", name="Batch", default_value=5)
            ],
        ),
        audience_processing_registration=fh.AudienceProcessingRegistration(
            account_settings=[fh.TextSetting(id="prefix", name="Prefix", default_value="mp_")],
            audience_subscription_settings=[
                fh.TextSetting(id="listId", name="List", visible=False)
            ],
        ),
        dsr_processing_registration=fh.DsrProcessingRegistration(
            account_settings=[fh.TextSetting(id="dsrKey", name="DSR key", required=True)],
            supported_dsr_types=["erasure"],
        ),
        **fields,
    )


class Recorder(MessageProcessor):
    """Records every hook call as (hook name, argument)."""

    def __init__(self, reg: fh.ModuleRegistrationResponse | None = None) -> None:
        self.reg = reg or registration()
        self.calls: list[tuple[str, Any]] = []
        self.registration_calls = 0

    def registration(self) -> fh.ModuleRegistrationResponse:
        self.registration_calls += 1
        return self.reg

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name.startswith("process_") and name not in (
            "process_event",
            "process_system_notification",
        ):
            calls = super().__getattribute__("calls")

            def record(arg: Any) -> Any:
                calls.append((name, arg))
                return attribute(arg)

            return record
        return attribute


def account(**settings: str | None) -> fh.Account:
    return fh.Account(account_id=7, account_settings=settings)


def one_of_each_event() -> list[fh.BaseEvent]:
    return [cls() for cls in EVENT_HOOKS]


# --------------------------------------------------------------------------- dispatch


def test_every_event_type_goes_to_its_own_hook_in_order_with_its_request() -> None:
    events = one_of_each_event()
    assert len(events) == 16 == len(set(EVENT_HOOKS.values()))
    request = fh.EventProcessingRequest(account=account(apiKey="k"), events=events)
    processor = Recorder()
    response = processor.process(request)
    assert isinstance(response, fh.EventProcessingResponse)
    assert response.suspend_subscription is False
    hooks = [name for name, _ in processor.calls]
    assert hooks == ["process_event_processing_request", *EVENT_HOOKS.values()]
    for (name, event), cls in zip(processor.calls[1:], EVENT_HOOKS, strict=True):
        assert type(event) is cls
        assert name == EVENT_HOOKS[cls]
        assert event.request is request


def test_hook_names_follow_the_event_types() -> None:
    for cls, name in EVENT_HOOKS.items():
        assert name == f"process_{cls().type}_event".replace("_event_event", "_event")
        assert callable(getattr(MessageProcessor, name))


def test_notifications_go_to_their_hooks_before_the_events() -> None:
    gdpr = fh.GDPRConsentStateNotification(purpose="p")
    ccpa = fh.CCPAConsentStateNotification()
    event = fh.CustomEvent(name="e")
    request = fh.EventProcessingRequest(events=[event], system_notifications=[gdpr, ccpa])
    processor = Recorder()
    processor.process(request)
    assert [name for name, _ in processor.calls] == [
        "process_event_processing_request",
        "process_gdpr_consent_state_notification",
        "process_ccpa_consent_state_notification",
        "process_custom_event",
    ]
    assert gdpr.request is request and ccpa.request is request
    assert set(NOTIFICATION_HOOKS.values()) == {
        "process_gdpr_consent_state_notification",
        "process_ccpa_consent_state_notification",
    }


def test_process_event_sees_every_event_when_overridden() -> None:
    seen: list[str] = []

    class AllEvents(MessageProcessor):
        def registration(self) -> fh.ModuleRegistrationResponse:
            return registration()

        def process_event(self, event: fh.BaseEvent) -> None:
            seen.append(event.type)

        def process_custom_event(self, event: fh.CustomEvent) -> None:
            raise AssertionError("not reached")

    AllEvents().process(fh.EventProcessingRequest(events=one_of_each_event()))
    assert seen == [cls().type for cls in EVENT_HOOKS]


@pytest.mark.parametrize(
    ("request_message", "handler", "response_type"),
    [
        (
            fh.ModuleRegistrationRequest(),
            "process_module_registration_request",
            fh.ModuleRegistrationResponse,
        ),
        (
            fh.EventProcessingRequest(events=[fh.SessionStartEvent()]),
            "process_event_processing_request",
            fh.EventProcessingResponse,
        ),
        (
            fh.AudienceSubscriptionRequest(audience_id=1, action="add"),
            "process_audience_subscription_request",
            fh.AudienceSubscriptionResponse,
        ),
        (
            fh.AudienceMembershipChangeRequest(user_profiles=[fh.UserProfile(mpid="1")]),
            "process_audience_membership_change_request",
            fh.AudienceMembershipChangeResponse,
        ),
        (fh.DsrProcessingRequest(), "process_dsr_processing_request", fh.DsrProcessingResponse),
    ],
)
def test_every_request_type_goes_to_its_handler(
    request_message: fh.BaseMessage, handler: str, response_type: type[fh.BaseMessage]
) -> None:
    processor = Recorder()
    response = processor.process(request_message)
    assert type(response) is response_type
    assert processor.calls[0] == (handler, request_message)
    assert REQUEST_HANDLERS[type(request_message)] == (handler, response_type)
    assert response.id != request_message.id  # a fresh id, as in the Java SDK (docs D10)
    assert response.firehose_version == enums.FIREHOSE_VERSION


def test_default_responses_are_empty() -> None:
    processor = Recorder()
    subscription = processor.process(fh.AudienceSubscriptionRequest(audience_id=1))
    assert fh.to_dict(subscription).keys() == {"type", "id", "timestamp_ms", "firehose_version"}
    membership = processor.process(
        fh.AudienceMembershipChangeRequest(user_profiles=[fh.UserProfile()])
    )
    assert fh.to_dict(membership)["suspend_subscription"] is False
    dsr = processor.process(fh.DsrProcessingRequest())
    assert fh.to_dict(dsr).keys() == {"type", "id", "timestamp_ms", "firehose_version"}


def test_registration_answers_from_registration_built_once() -> None:
    processor = Recorder()
    first = processor.process(fh.ModuleRegistrationRequest())
    second = processor.process(fh.ModuleRegistrationRequest())
    assert processor.registration_calls == 1
    assert isinstance(first, fh.ModuleRegistrationResponse)
    assert isinstance(second, fh.ModuleRegistrationResponse)
    assert first.id != second.id
    envelope = ("id", "timestamp_ms")
    expected = {k: v for k, v in fh.to_dict(processor.reg).items() if k not in envelope}
    for answer in (first, second):
        assert {k: v for k, v in fh.to_dict(answer).items() if k not in envelope} == expected
    assert processor.registered is processor.reg


def test_a_registration_must_be_implemented() -> None:
    class Nothing(MessageProcessor):
        pass

    with pytest.raises(
        HandlerError, match="NotImplementedError: Nothing must implement registration"
    ):
        Nothing().process(fh.ModuleRegistrationRequest())


def test_registration_must_return_a_registration() -> None:
    class Wrong(MessageProcessor):
        def registration(self) -> fh.ModuleRegistrationResponse:
            return fh.EventProcessingResponse()  # type: ignore[return-value]

    with pytest.raises(HandlerError, match="expected ModuleRegistrationResponse"):
        Wrong().process(fh.ModuleRegistrationRequest())


# --------------------------------------------------------------------------- verification


def test_an_event_request_without_events_is_answered_without_user_code() -> None:
    class Exploding(MessageProcessor):
        def registration(self) -> fh.ModuleRegistrationResponse:
            raise AssertionError("registration() is user code")

        def process_event_processing_request(
            self, request: fh.EventProcessingRequest
        ) -> fh.EventProcessingResponse:
            raise AssertionError("not reached")

    for body in (
        {"type": "event_processing_request", "events": []},
        {"type": "event_processing_request"},  # a missing events field reads as []
        {"type": "event_processing_request", "events": [], "account": {"account_id": 1}},
    ):
        response = Exploding().process(body)
        assert isinstance(response, fh.EventProcessingResponse)
        assert dumps(response).startswith(b'{"type":"event_processing_response"')


@pytest.mark.parametrize("profiles", [None, []])
def test_a_membership_change_without_profiles_is_answered_without_user_code(
    profiles: list[fh.UserProfile] | None,
) -> None:
    processor = Recorder()
    response = processor.process(
        fh.AudienceMembershipChangeRequest(account=account(), user_profiles=profiles)
    )
    assert isinstance(response, fh.AudienceMembershipChangeResponse)
    assert processor.calls == []
    assert processor.registration_calls == 0


def test_eventless_batches_reach_the_handler_only_when_registered() -> None:
    request = fh.EventProcessingRequest(
        user_identities=[fh.UserIdentity(type="email", encoding="raw", value="a@b.c")]
    )
    without = Recorder()
    without.process(request)
    assert without.calls == []
    allowed = Recorder(registration(permissions=fh.Permissions(allow_eventless_batches=True)))
    allowed.process(request)
    assert [name for name, _ in allowed.calls] == ["process_event_processing_request"]
    # Without user data it is a verification request even then.
    allowed.calls.clear()
    allowed.process(fh.EventProcessingRequest())
    assert allowed.calls == []


def test_the_example_requests_are_answered_with_their_response_types() -> None:
    expected = {
        "module_registration_request": fh.ModuleRegistrationResponse,
        "event_processing_request": fh.EventProcessingResponse,
        "audience_subscription_request": fh.AudienceSubscriptionResponse,
        "audience_membership_change_request": fh.AudienceMembershipChangeResponse,
        "dsr_processing_request": fh.DsrProcessingResponse,
    }
    files = sorted(DATA.glob("*Request*.json"))
    assert len(files) == 6
    for path in files:
        body = path.read_bytes()
        response = Recorder().process(body)
        assert type(response) is expected[json.loads(body)["type"]], path.name
        assert type(parse(dumps(response))) is type(response)


# --------------------------------------------------------------------------- input and errors


def test_raw_input_is_parsed_from_bytes_text_and_dicts() -> None:
    body = (DATA / "EventProcessingRequest_android.json").read_bytes()
    for data in (body, bytearray(body), memoryview(body), body.decode(), json.loads(body)):
        processor = Recorder()
        assert isinstance(processor.process(data), fh.EventProcessingResponse)
        assert [name for name, _ in processor.calls] == [
            "process_event_processing_request",
            "process_gdpr_consent_state_notification",
            "process_ccpa_consent_state_notification",
            "process_custom_event",
            "process_product_action_event",
        ]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "Not valid JSON"),
        (b"[1, 2]", "Expected a JSON object"),
        ([1, 2], "Expected a JSON object, got list"),
        (42, "Expected a JSON object, got int"),
        (b'{"type": "nope"}', r"Invalid MessageType value 'nope' at `\$.type`"),
        (b'{"id": "x"}', "Missing `type`"),
        (
            b'{"type": "event_processing_request", "events": [{"type": "custom_event", '
            b'"custom_event_type": "attribution"}]}',
            r"\$\.events\[0\]\.custom_event_type",
        ),
    ],
)
def test_bad_input_is_an_invalid_message_error(data: Any, match: str) -> None:
    with pytest.raises(InvalidMessageError, match=match) as caught:
        Recorder().process(data)
    assert caught.value.status == 400
    assert caught.value.to_dict()["error"] == "invalid_message"


def test_lenient_processors_accept_unknown_enum_literals() -> None:
    class Lenient(Recorder):
        lenient = True

    body = {
        "type": "event_processing_request",
        "events": [{"type": "custom_event", "custom_event_type": "attribution"}],
    }
    processor = Lenient()
    processor.process(body)
    assert processor.calls[-1][1].custom_event_type == "attribution"


@pytest.mark.parametrize(
    "message",
    [
        fh.ModuleRegistrationResponse(),
        fh.EventProcessingResponse(),
        fh.AudienceSubscriptionResponse(),
        fh.AudienceMembershipChangeResponse(),
        fh.DsrProcessingResponse(),
    ],
)
def test_responses_are_not_requests(message: fh.BaseMessage) -> None:
    with pytest.raises(
        UnsupportedMessageError, match=f"A {message.type} is not a request"
    ) as caught:
        Recorder().process(dumps(message))
    assert caught.value.status == 400
    assert caught.value.code == "unsupported_message"
    assert "event_processing_request" in caught.value.message


def test_an_exception_in_a_hook_is_a_handler_error() -> None:
    class Failing(Recorder):
        def process_custom_event(self, event: fh.CustomEvent) -> None:
            raise ValueError("boom")

    with pytest.raises(HandlerError) as caught:
        Failing().process(fh.EventProcessingRequest(events=[fh.CustomEvent()]))
    error = caught.value
    assert error.status == 500
    assert error.message == "Processing the event_processing_request failed: ValueError: boom"
    assert isinstance(error.__cause__, ValueError)
    assert error.to_dict() == {"error": "processing_failed", "message": error.message}


def test_a_processor_error_raised_by_the_partner_keeps_its_status() -> None:
    class Busy(Recorder):
        def process_dsr_processing_request(
            self, request: fh.DsrProcessingRequest
        ) -> fh.DsrProcessingResponse:
            raise ProcessorError("try later", status=503, code="busy")

    with pytest.raises(ProcessorError) as caught:
        Busy().process(fh.DsrProcessingRequest())
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        503,
        "busy",
        "try later",
    )
    assert type(caught.value) is ProcessorError


def test_a_handler_must_return_its_response_type() -> None:
    class Wrong(Recorder):
        def process_audience_subscription_request(self, request: Any) -> Any:
            return None

    with pytest.raises(
        HandlerError,
        match="process_audience_subscription_request returned NoneType; "
        "expected AudienceSubscriptionResponse",
    ):
        Wrong().process(fh.AudienceSubscriptionRequest())


def test_the_java_style_account_getters_map_to_invalid_settings() -> None:
    class JavaStyle(Recorder):
        def process_custom_event(self, event: fh.CustomEvent) -> None:
            assert event.request is not None and event.request.account is not None
            event.request.account.get_int_setting("batch", required=True)

    with pytest.raises(InvalidSettingsError, match="not an integer") as caught:
        JavaStyle().process(
            fh.EventProcessingRequest(account=account(batch="x"), events=[fh.CustomEvent()])
        )
    assert caught.value.status == 400
    assert isinstance(caught.value, fh.SettingError)


# --------------------------------------------------------------------------- settings


def settings(**values: str | None) -> Settings:
    return Settings(values, SETTINGS)


def test_typed_values_and_defaults() -> None:
    s = settings(apiKey="k", retries="3", batch=" 20 ", ratio="0.25", debug="True", verbose="FALSE")
    assert s.text("apiKey") == "k"
    assert s.text("region") == "eu"  # registered default
    assert s.text("label") == ""  # optional, no default
    assert s.integer("batch") == 20
    assert s.integer("limit") is None
    assert s.integer("limit", 99) == 99
    assert s.integer("retries") == 3
    assert s.number("ratio") == 0.25
    assert s.number("batch") == 20.0  # an integer setting read as a number
    assert s.boolean("debug") is True
    assert s.boolean("verbose") is False
    assert s["apiKey"] == "k"
    assert s.as_dict() == {
        "apiKey": "k",
        "region": "eu",
        "label": None,
        "batch": 20,
        "limit": None,
        "retries": 3,
        "ratio": 0.25,
        "debug": True,
        "verbose": False,
    }
    assert "apiKey" in s and "nope" not in s
    s.validate()


def test_missing_values_fall_back_to_the_registered_defaults() -> None:
    s = settings(apiKey="k", retries="1", batch="", ratio=None)
    assert s.integer("batch") == 10
    assert s.integer("batch", 99) == 10  # the registration wins over the call's default
    assert s.number("ratio") == 0.5
    assert s.boolean("debug") is False
    assert s.boolean("verbose") is True


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_required_setting_is_a_clear_error(value: str | None) -> None:
    s = settings(apiKey=value, retries="1")
    with pytest.raises(InvalidSettingsError) as caught:
        s.text("apiKey")
    assert caught.value.message == "The required account setting 'apiKey' (API Key) is missing."
    assert caught.value.status == 400
    with pytest.raises(InvalidSettingsError, match="'retries' \\(Retries\\) is missing"):
        settings(apiKey="k").integer("retries")


@pytest.mark.parametrize(
    ("values", "read", "match"),
    [
        ({"batch": "ten"}, "batch", "'batch' \\(Batch size\\) must be an integer, got 'ten'"),
        ({"batch": "1.5"}, "batch", "must be an integer"),
        ({"batch": "0"}, "batch", "must be at least 1, got '0'"),
        ({"batch": "51"}, "batch", "must be at most 50, got '51'"),
        ({"ratio": "half"}, "ratio", "'ratio' \\(Ratio\\) must be a number, got 'half'"),
        ({"ratio": "nan"}, "ratio", "must be finite"),
        ({"ratio": "1.5"}, "ratio", "must be at most 1.0"),
        ({"debug": "yes"}, "debug", "'debug' \\(Debug\\) must be true or false, got 'yes'"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_clear_error(
    values: dict[str, str], read: str, match: str
) -> None:
    with pytest.raises(InvalidSettingsError, match=match):
        settings(apiKey="k", retries="1", **values).value(read)


def test_validate_lists_every_problem() -> None:
    s = settings(batch="x", debug="maybe")
    assert len(s.problems()) == 4
    with pytest.raises(InvalidSettingsError) as caught:
        s.validate()
    for part in ("'apiKey'", "'retries'", "'batch'", "'debug'"):
        assert part in caught.value.message


def test_reading_an_unregistered_setting_or_with_the_wrong_type_is_a_bug() -> None:
    s = settings(apiKey="k", other="x")
    with pytest.raises(
        UnregisteredSettingError, match="'other' is not a registered account setting"
    ):
        s.text("other")
    with pytest.raises(
        UnregisteredSettingError, match="'apiKey' is registered as text, not integer"
    ):
        s.integer("apiKey")
    with pytest.raises(
        UnregisteredSettingError, match="registered as boolean, not float or integer"
    ):
        s.number("debug")
    with pytest.raises(UnregisteredSettingError, match="registered as integer, not boolean"):
        s.boolean("batch")


def test_hooks_read_the_settings_registered_for_their_kind_of_request() -> None:
    read: dict[str, Any] = {}

    class Reader(Recorder):
        def process_custom_event(self, event: fh.CustomEvent) -> None:
            read["event"] = (self.settings.text("apiKey"), self.settings.integer("batch"))

        def process_audience_subscription_request(
            self, request: fh.AudienceSubscriptionRequest
        ) -> fh.AudienceSubscriptionResponse:
            read["subscription"] = self.settings.text("prefix")
            read["list"] = self.audience_settings(request).text("listId")
            return fh.AudienceSubscriptionResponse(audience_subscription_settings={"listId": "L1"})

        def process_audience_membership_change_request(
            self, request: fh.AudienceMembershipChangeRequest
        ) -> fh.AudienceMembershipChangeResponse:
            assert request.user_profiles
            audience = request.user_profiles[0].audiences[0]
            read["member"] = self.audience_settings(audience).text("listId")
            self.settings.text("apiKey")  # registered for events only
            raise AssertionError("not reached")

    processor = Reader()
    processor.process(
        fh.EventProcessingRequest(account=account(apiKey="k"), events=[fh.CustomEvent()])
    )
    assert read["event"] == ("k", 5)  # connection settings count as account settings
    processor.process(fh.AudienceSubscriptionRequest(account=account(prefix="x_"), audience_id=3))
    assert read["subscription"] == "x_" and read["list"] == ""
    amcr = fh.AudienceMembershipChangeRequest(
        user_profiles=[
            fh.UserProfile(
                audiences=[
                    fh.Audience(audience_id=3, audience_subscription_settings={"listId": "L1"})
                ]
            )
        ]
    )
    with pytest.raises(
        HandlerError, match="UnregisteredSettingError: 'apiKey' is not a registered"
    ):
        processor.process(amcr)
    assert read["member"] == "L1"


def test_a_required_setting_missing_in_a_hook_is_a_400() -> None:
    class Reader(Recorder):
        def process_dsr_processing_request(
            self, request: fh.DsrProcessingRequest
        ) -> fh.DsrProcessingResponse:
            self.settings.text("dsrKey")
            return fh.DsrProcessingResponse()

    # The SDK's own DSR example has no account at all.
    body = (DATA / "DsrProcessingRequest.json").read_bytes()
    with pytest.raises(InvalidSettingsError, match="'dsrKey' \\(DSR key\\) is missing"):
        Reader().process(body)
    request = parse(body)
    assert isinstance(request, fh.DsrProcessingRequest)
    with_account = msgspec.structs.replace(request, account=account(dsrKey="d"))
    assert isinstance(Reader().process(with_account), fh.DsrProcessingResponse)


def test_settings_outside_a_hook_are_an_error() -> None:
    processor = Recorder()
    with pytest.raises(RuntimeError, match="No request is being processed"):
        _ = processor.settings
    request = fh.EventProcessingRequest(account=account(apiKey="k"))
    assert processor.settings_for(request).text("apiKey") == "k"
    processor.process(fh.EventProcessingRequest(events=[fh.CustomEvent()]))
    with pytest.raises(RuntimeError):
        _ = processor.current_request


def test_each_thread_sees_its_own_request() -> None:
    barrier = threading.Barrier(2, timeout=30)
    seen: dict[str, str] = {}

    class Slow(Recorder):
        def process_custom_event(self, event: fh.CustomEvent) -> None:
            barrier.wait()  # both requests are being processed at once
            assert event.name is not None
            seen[event.name] = self.settings.text("apiKey")

    processor = Slow()

    def run(name: str) -> None:
        processor.process(
            fh.EventProcessingRequest(
                account=account(apiKey=f"key-{name}"), events=[fh.CustomEvent(name=name)]
            )
        )

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == {"a": "key-a", "b": "key-b"}


# --------------------------------------------------------------------------- isolation


def test_the_sdk_imports_without_the_server_dependencies() -> None:
    code = (
        "import json, sys\n"
        "import patchbay.firehose.processor, patchbay.firehose.asgi\n"
        "import patchbay.firehose.lambda_handler\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    modules = json.loads(done.stdout)
    server = ("starlette", "uvicorn", "structlog", "prometheus_client", "click", "aiohttp", "boto3")
    assert [m for m in modules if m.split(".")[0] in server] == []
    assert [
        m
        for m in modules
        if m.startswith("patchbay.")
        and not m.startswith("patchbay.firehose")
        and m != "patchbay.errors"  # the exception root, which imports nothing
    ] == []


def test_request_ids_are_uuids() -> None:
    # A response never echoes the request id (spec §1.1), and ids stay UUIDs.
    response = Recorder().process(fh.ModuleRegistrationRequest(id=uuid.UUID(int=1)))
    assert isinstance(response.id, uuid.UUID) and response.id != uuid.UUID(int=1)
