"""The official ``mparticle`` Python SDK (PyPI 0.16.1), pointed at Patchbay, just works.

Every event class the SDK has is built with every enum value its setters accept, sent with
``upload_events`` and ``bulk_upload_events``, and must come back 202 and be stored exactly
as the SDK serialised it. The SDK's handling of a 429 (its class-level ``Retry-After``
deadline) must work with the ``Retry-After`` Patchbay sends.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import mparticle
import pytest
from mparticle.models.user_attribute_change_event import UserAttributeChangeEvent
from mparticle.rest import ApiException, RESTClientObject

from patchbay.clock import SystemClock
from patchbay.collect.inputs import create_input
from tests.conftest import Credentials, Server, start_server, stop_server
from tests.deployments import Deployment

pytestmark = pytest.mark.slow

TS = 1552596256103
SESSION = 4957918240501247982
SESSION_UUID = "91b86d0c-86cb-4124-a8b2-edee107de454"


def sdk_allowed(cls: type, attr: str) -> list[str]:
    """The enum values the SDK's setter of ``cls.attr`` accepts, read from its source."""
    source = inspect.getsource(getattr(cls, attr).fset)
    match = re.search(r"allowed_values = (\[.*?\])", source, re.DOTALL)
    assert match is not None, f"{cls.__name__}.{attr} has no allowed_values"
    values = ast.literal_eval(match[1])
    assert values and all(isinstance(v, str) for v in values)
    return list(values)


# -- building every event the SDK can build -------------------------------------------------


def common(**extra: Any) -> dict[str, Any]:
    """The fields every SDK event class has, all set."""
    return {
        "timestamp_unixtime_ms": TS,
        "event_id": 6004677780660780000,
        "source_message_id": str(uuid.uuid4()),
        "session_id": SESSION,
        "session_uuid": SESSION_UUID,
        "custom_attributes": {"str": "v", "int": 1, "float": 1.5, "bool": True, "none": None},
        "location": mparticle.GeoLocation(40.7, -73.9, 10.0),
        "device_current_state": device_state(),
        **extra,
    }


def device_state() -> mparticle.DeviceCurrentState:
    orientations = sdk_allowed(mparticle.DeviceCurrentState, "device_orientation")
    return mparticle.DeviceCurrentState(
        time_since_start_ms=1000,
        battery_level=0.5,
        data_connection_type="wifi",
        data_connection_type_detail="802.11",
        gps_state=True,
        total_system_memory_usage_bytes=1 << 30,
        disk_space_free_bytes=1 << 32,
        cpu="arm64",
        system_memory_available_bytes=1.0e9,
        system_memory_low=False,
        system_memory_threshold_bytes=1.0e8,
        application_memory_available_bytes=1.0e8,
        application_memory_max_bytes=2.0e8,
        application_memory_total_bytes=3.0e8,
        device_orientation=orientations[-1],
        status_bar_orientation=orientations[1],
    )


def product(sku: str) -> mparticle.Product:
    return mparticle.Product(
        id=sku,
        name="Example Product",
        brand="Brand",
        category="Cat",
        variant="blue",
        position=1,
        price=19.99,
        quantity=2,
        coupon_code="SAVE",
        added_to_cart_time_ms=TS,
        total_product_amount=39.98,
        custom_attributes={"size": "M"},
    )


def media_info(action: str, fmt: str, quality: str) -> mparticle.MediaInfo:
    return mparticle.MediaInfo(
        action=action,
        channel="ch",
        metadata="meta",
        timed_metadata="tm",
        playback_position=12.5,
        format=fmt,
        quality=quality,
        playback_rate=1.0,
    )


def crash_report() -> mparticle.CrashReportEvent:
    return mparticle.CrashReportEvent(
        **common(),
        breadcrumbs=[mparticle.BreadcrumbEvent(label="step 1", session_number=3)],
        class_name="NSInvalidArgumentException",
        severity="fatal",
        message="boom",
        stack_trace="at main()",
        exception_handled=False,
        topmost_context="MainActivity",
        pl_crash_report_file_base64="AAAA",
        ios_image_base_address=4096,
        ios_image_size=8192,
        session_number=3,
    )


EventCase = tuple[str, Callable[[], Any], str]


def event_cases() -> list[EventCase]:
    """(id, a builder of one SDK event, the ``event_type`` the SDK sends it as)."""
    cases: list[EventCase] = []

    def add(name: str, build: Callable[[], Any], event_type: str) -> None:
        cases.append((name, build, event_type))

    media_actions = sdk_allowed(mparticle.MediaInfo, "action")
    formats = sdk_allowed(mparticle.MediaInfo, "format")
    qualities = sdk_allowed(mparticle.MediaInfo, "quality")
    for i, kind in enumerate(sdk_allowed(mparticle.AppEvent, "custom_event_type")):
        add(
            f"custom_event-{kind}",
            lambda kind=kind, i=i: mparticle.AppEvent(
                event_name=f"Event {kind}",
                custom_event_type=kind,
                media_info=media_info(
                    media_actions[i % len(media_actions)],
                    formats[i % len(formats)],
                    qualities[i % len(qualities)],
                ),
                custom_flags={"flag": "x"},
                **common(),
            ),
            "custom_event",
        )
    add("custom_event-minimal", lambda: mparticle.AppEvent("Minimal"), "custom_event")
    add(
        "attribution",
        lambda: mparticle.AppEvent.create_attribution_event(publisher="pub", campaign="camp"),
        "custom_event",
    )
    add(
        "attribution-delete",
        lambda: mparticle.AppEvent.create_attribution_delete_event(),
        "custom_event",
    )
    for action in sdk_allowed(mparticle.ProductAction, "action"):
        add(
            f"commerce_event-product-{action}",
            lambda action=action: mparticle.CommerceEvent(
                product_action=mparticle.ProductAction(
                    action=action,
                    checkout_step=2,
                    checkout_options="express",
                    product_action_list="search results",
                    product_list_source="search",
                    transaction_id="t-1",
                    affiliation="store",
                    total_amount=43.47,
                    tax_amount=2.5,
                    shipping_amount=1.0,
                    coupon_code="SAVE",
                    products=[product("sku-1"), product("sku-2")],
                ),
                shopping_cart=mparticle.ShoppingCart(products=[product("sku-3")]),
                currency_code="USD",
                screen_name="Cart",
                is_non_interactive=False,
                custom_flags={"flag": "x"},
                **common(),
            ),
            "commerce_event",
        )
    for action in sdk_allowed(mparticle.PromotionAction, "action"):
        add(
            f"commerce_event-promotion-{action}",
            lambda action=action: mparticle.CommerceEvent(
                promotion_action=mparticle.PromotionAction(
                    action=action,
                    promotions=[mparticle.Promotion("promo-1", "Summer", "banner", "top")],
                ),
                **common(),
            ),
            "commerce_event",
        )
    add(
        "commerce_event-impressions",
        lambda: mparticle.CommerceEvent(
            product_impressions=[
                mparticle.ProductImpression("Search results", [product("a"), product("b")]),
                mparticle.ProductImpression("Related", [product("c")]),
            ],
            **common(),
        ),
        "commerce_event",
    )
    add("session_start", lambda: mparticle.SessionStartEvent(**common()), "session_start")
    add(
        "session_end",
        lambda: mparticle.SessionEndEvent(**common(), session_duration_ms=10_000),
        "session_end",
    )
    add(
        "screen_view",
        lambda: mparticle.ScreenViewEvent(
            **common(), screen_name="Home", activity_type="MainActivity", custom_flags={"f": "x"}
        ),
        "screen_view",
    )
    # The SDK's class map sends crash reports as commerce events (a bug of the SDK).
    add("crash_report-as-sent-by-the-sdk", crash_report, "commerce_event")
    add("opt_out", lambda: mparticle.OptOutEvent(**common(), is_opted_out=True), "opt_out")
    if hasattr(mparticle, "FirstRunEvent"):
        add("first_run", lambda: mparticle.FirstRunEvent(**common()), "first_run")
    for kind in sdk_allowed(
        mparticle.ApplicationStateTransitionEvent, "application_transition_type"
    ):
        add(
            f"application_state_transition-{kind}",
            lambda kind=kind: mparticle.ApplicationStateTransitionEvent(
                **common(),
                successfully_closed=True,
                is_first_run=False,
                is_upgrade=True,
                push_notification_payload='{"aps": {}}',
                application_transition_type=kind,
            ),
            "application_state_transition",
        )
    add(
        "push_registration",
        lambda: mparticle.PushRegistrationEvent(
            **common(), register=True, registration_token="token-1"
        ),
        "push_registration",
    )
    states = sdk_allowed(mparticle.PushMessageEvent, "application_state")
    for i, kind in enumerate(sdk_allowed(mparticle.PushMessageEvent, "push_message_type")):
        add(
            f"push_message-{kind}",
            lambda kind=kind, i=i: mparticle.PushMessageEvent(
                **common(),
                push_message_token="token-1",
                push_message_type=kind,
                message="hello",
                network="apn",
                push_notification_payload='{"aps": {}}',
                application_state=states[i % len(states)],
                action_identifier="open",
            ),
            "push_message",
        )
    add(
        "network_performance",
        lambda: mparticle.NetworkPerformanceEvent(
            **common(),
            http_verb="GET",
            url="https://example.com/",
            time_elapsed=120,
            bytes_in=1000,
            bytes_out=200,
            response_code=200,
            data="payload",
        ),
        "network_performance",
    )
    add(
        "breadcrumb",
        lambda: mparticle.BreadcrumbEvent(**common(), session_number=3, label="step 1"),
        "breadcrumb",
    )
    for kind in sdk_allowed(mparticle.ProfileEvent, "profile_event_type"):
        add(
            f"profile-{kind}",
            lambda kind=kind: mparticle.ProfileEvent(
                **common(),
                profile_name="new",
                previous_profile_name="old",
                profile_event_type=kind,
            ),
            "profile",
        )
    add(
        "user_attribute_change-scalar",
        lambda: UserAttributeChangeEvent(
            **common(),
            user_attribute_name="tier",
            new="gold",
            old="silver",
            deleted=False,
            is_new_attribute=False,
        ),
        "user_attribute_change",
    )
    add(
        "user_attribute_change-list",
        lambda: UserAttributeChangeEvent(
            **common(),
            user_attribute_name="foods",
            new=["a", "b"],
            old=None,
            deleted=False,
            is_new_attribute=True,
        ),
        "user_attribute_change",
    )
    add(
        "user_attribute_change-deleted",
        lambda: UserAttributeChangeEvent(user_attribute_name="tier", deleted=True),
        "user_attribute_change",
    )
    # The SDK has no class for these types, but its EventBase envelope, used as is, lets a
    # caller send them: a correctly typed crash report, and a user identity change.
    add(
        "crash_report-via-EventBase",
        lambda: mparticle.EventBase(data=crash_report(), event_type="crash_report"),
        "crash_report",
    )
    add(
        "user_identity_change-via-EventBase",
        lambda: mparticle.EventBase(
            data={
                "timestamp_unixtime_ms": TS,
                "new": {
                    "identity_type": "email",
                    "identity": "new@example.com",
                    "timestamp_unixtime_ms": TS,
                    "created_this_batch": True,
                },
                "old": {"identity_type": "email", "identity": "old@example.com"},
            },
            event_type="user_identity_change",
        ),
        "user_identity_change",
    )
    return cases


EVENT_CASES = event_cases()


def full_batch(events: list[Any], source_request_id: str) -> mparticle.Batch:
    """A batch with every batch-level field the SDK has, set through its setters."""
    batch = mparticle.Batch()
    batch.environment = "development"
    batch.source_request_id = source_request_id
    batch.ip = "172.217.12.142"
    batch.schema_version = 2
    batch.device_info = mparticle.DeviceInformation(
        brand="Apple",
        product="iPhone",
        device="iPhone14,2",
        android_uuid="a26f9736-c262-47ea-988b-0b0504cee874",
        device_manufacturer="Apple",
        platform="iOS",
        os_version="17.0",
        device_model="iPhone 13 Pro",
        screen_height=2532,
        screen_width=1170,
        screen_dpi=460,
        device_country="US",
        locale_language="en",
        locale_country="US",
        network_country="us",
        network_carrier="Carrier",
        network_code="410",
        network_mobile_country_code="310",
        timezone_offset=-5,
        build_identifier="21A329",
        http_header_user_agent="Mozilla/5.0",
        ios_advertising_id="07d2ebaa-e956-407e-a1e6-f05f871bf4e2",
        push_token="push-token",
        cpu_architecture="arm64",
        is_tablet=False,
        push_notification_sound_enabled=True,
        push_notification_vibrate_enabled=False,
        radio_access_technology="LTE",
        supports_telephony=True,
        has_nfc=True,
        bluetooth_enabled=True,
        bluetooth_version="5.0",
        att_timestamp_unixtime_ms=TS,
        att_authorization_status="authorized",
        ios_idfv="0b3a5b0c-4b8e-4e4e-9c1e-3f3f1e2f2a1b",
        android_advertising_id="a26f9736-c262-47ea-988b-0b0504cee874",
        amp_id="amp-1",
        roku_advertising_id="9c1e3f3f-1e2f-4a1b-8b3a-5b0c4b8e4e4e",
        roku_publisher_id="roku-pub",
        microsoft_advertising_id="1e2f2a1b-0b3a-4b0c-9b8e-4e4e9c1e3f3f",
        microsoft_publisher_id="ms-pub",
        fire_advertising_id="3f3f1e2f-2a1b-4b3a-8b0c-4b8e4e4e9c1e",
    )
    batch.application_info = mparticle.ApplicationInformation(
        application_name="App",
        application_version="1.0",
        install_referrer="store",
        package="com.example",
    )
    batch.user_attributes = {"Account type": "trial", "favorite_foods": ["a", "b"], "age": 42}
    batch.deleted_user_attributes = ["old"]
    identities = mparticle.UserIdentities()
    identities.customerid = "123456"
    identities.email = "user@example.com"
    identities.other = "other"
    identities.other_id_2 = "o2"
    identities.mobile_number = "800-555-1111"
    batch.user_identities = identities
    consent = mparticle.ConsentState()
    consent.gdpr = {
        "document_agreement": mparticle.GDPRConsentState(
            document="document_agreement.v2",
            consented=True,
            timestamp_unixtime_ms=TS,
            location="dtmgbank.com/signup",
            hardware_id="IDFA:y",
        )
    }
    consent.ccpa = {
        "data_sale_opt_out": mparticle.CCPAConsentState(
            document="document_agreement.v3",
            consented=True,
            timestamp_unixtime_ms=TS,
            location="mparticle.test/signup",
            hardware_id="IDFA:x",
        )
    }
    batch.consent_state = consent
    batch.integration_attributes = {"123": {"someIntegrationAttribute": "value"}}
    batch.mpid = "600868121729048600"  # a string, as in the SDK's own example_usage.py
    batch.mp_deviceid = "59780f39-d7a0-4ebe-9950-280f937c29e2"
    batch.context = mparticle.BatchContext(
        data_plan=mparticle.DataPlanContext(plan_id="docsite_v3_test", plan_version=1)
    )
    batch.events = events
    return batch


def sent_bytes(batch: mparticle.Batch) -> bytes:
    """The bytes the SDK sends for ``batch`` (alone, or as an item of a bulk array)."""
    return json.dumps(mparticle.ApiClient.sanitize_for_serialization(batch)).encode()


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def reset_sdk_rate_limit_state() -> Iterator[None]:
    """The SDK keeps the last 429's deadline on its class: isolate each test from it."""
    saved = (RESTClientObject.retry_after_timestamp, RESTClientObject.latest_response)
    RESTClientObject.retry_after_timestamp = 0
    RESTClientObject.latest_response = None
    yield
    RESTClientObject.retry_after_timestamp, RESTClientObject.latest_response = saved


@pytest.fixture(scope="module")
def sdk_server(
    tmp_path_factory: pytest.TempPathFactory, module_deployment: Deployment
) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("sdk") / "data")
    running.deployment = module_deployment
    yield running
    stop_server(running)


def new_input(server: Server, name: str, rate_limit: float = 0) -> Credentials:
    backend = server.open_store()
    try:
        created = create_input(backend.inputs, name, "server", rate_limit, SystemClock())
    finally:
        backend.close()
    return Credentials(created.id, created.key, created.secret)


def sdk_client(server: Server, credentials: Credentials) -> mparticle.EventsApi:
    config = mparticle.Configuration()
    config.api_key = credentials.key
    config.api_secret = credentials.secret
    config.host = f"{server.url}/v2"  # before EventsApi(config): the client copies it once
    return mparticle.EventsApi(config)


@pytest.fixture
def api_for(sdk_server: Server) -> Iterator[Callable[..., tuple[mparticle.EventsApi, Credentials]]]:
    """Makes an SDK client for a fresh input; closes its connections afterwards."""
    made: list[mparticle.EventsApi] = []

    def make(name: str, rate_limit: float = 0) -> tuple[mparticle.EventsApi, Credentials]:
        credentials = new_input(sdk_server, name, rate_limit)
        api = sdk_client(sdk_server, credentials)
        made.append(api)
        return api, credentials

    yield make
    for api in made:
        api.api_client.rest_client.pool_manager.clear()


def stored_for(server: Server, credentials: Credentials) -> list[bytes]:
    return [s.body for s in server.stored() if s.input_id == credentials.id]


def event_types(body: bytes) -> list[str]:
    return [e["event_type"] for e in json.loads(body)["events"]]


def in_bulks(batches: list[mparticle.Batch], max_bytes: int = 200_000) -> list[list[Any]]:
    """``batches`` in bulks of at most 100 batches and ``max_bytes`` (the server's limits)."""
    bulks: list[list[Any]] = [[]]
    size = 0
    for batch in batches:
        length = len(sent_bytes(batch)) + 2
        if bulks[-1] and (len(bulks[-1]) == 100 or size + length > max_bytes):
            bulks.append([])
            size = 0
        bulks[-1].append(batch)
        size += length
    return bulks


# -- tests ----------------------------------------------------------------------------------


def test_the_sdk_builds_what_we_expect() -> None:
    """A guard: the cases above cover every event class the SDK's Batch knows."""
    sent_types = {t for _, _, t in EVENT_CASES}
    batch = mparticle.Batch()
    mapped = set(batch._allowed_types.values())  # the SDK's class -> event_type map
    assert mapped <= sent_types
    assert len(EVENT_CASES) > 50


@pytest.mark.parametrize(
    ("name", "build", "event_type"), EVENT_CASES, ids=[c[0] for c in EVENT_CASES]
)
def test_upload_events_one_event(
    sdk_server: Server,
    api_for: Callable[..., tuple[mparticle.EventsApi, Credentials]],
    name: str,
    build: Callable[[], Any],
    event_type: str,
) -> None:
    api, credentials = api_for(f"sdk-{name}")
    batch = full_batch([build()], str(uuid.uuid4()))
    data, status, headers = api.upload_events(batch)
    assert (data, status) == (None, 202)
    assert headers["X-mp-rate-limit-percentage-used"] == "0"
    (stored,) = stored_for(sdk_server, credentials)
    assert stored == sent_bytes(batch)
    assert event_types(stored) == [event_type]


def test_upload_events_every_event_in_one_batch(
    sdk_server: Server, api_for: Callable[..., tuple[mparticle.EventsApi, Credentials]]
) -> None:
    api, credentials = api_for("sdk-all-in-one")
    batch = full_batch([build() for _, build, _ in EVENT_CASES], str(uuid.uuid4()))
    _, status, _ = api.upload_events(batch)
    assert status == 202
    (stored,) = stored_for(sdk_server, credentials)
    assert stored == sent_bytes(batch)
    assert event_types(stored) == [t for _, _, t in EVENT_CASES]
    decoded = json.loads(stored)
    assert decoded["mpid"] == "600868121729048600"
    assert decoded["user_identities"]["customerid"] == "123456"
    assert set(decoded["consent_state"]) == {"gdpr", "ccpa"}


def test_upload_events_minimal_batch(
    sdk_server: Server, api_for: Callable[..., tuple[mparticle.EventsApi, Credentials]]
) -> None:
    """A batch with nothing but an environment (the SDK drops every unset field)."""
    api, credentials = api_for("sdk-minimal")
    batch = mparticle.Batch()
    batch.environment = "production"
    _, status, _ = api.upload_events(batch)
    assert status == 202
    assert stored_for(sdk_server, credentials) == [b'{"environment": "production"}']


def test_bulk_upload_events_every_event(
    sdk_server: Server, api_for: Callable[..., tuple[mparticle.EventsApi, Credentials]]
) -> None:
    """One batch per event case, in bulks of at most 100 batches."""
    api, credentials = api_for("sdk-bulk")
    batches = [full_batch([build()], str(uuid.uuid4())) for _, build, _ in EVENT_CASES]
    # A second copy of every event in batches of their own, so a bulk holds > 1 event each.
    batches += [
        full_batch([build() for _, build, _ in EVENT_CASES[i : i + 7]], str(uuid.uuid4()))
        for i in range(0, len(EVENT_CASES), 7)
    ]
    bulks = in_bulks(batches)
    assert len(bulks) > 1
    for bulk in bulks:
        data, status, _ = api.bulk_upload_events(bulk)
        assert (data, status) == (None, 202)
    stored = stored_for(sdk_server, credentials)
    assert stored == [sent_bytes(b) for b in batches]
    events = [t for body in stored for t in event_types(body)]
    assert len(events) == 2 * len(EVENT_CASES)
    assert sorted(events) == sorted(2 * [t for _, _, t in EVENT_CASES])


def test_bulk_upload_every_device_enum_value(
    sdk_server: Server, api_for: Callable[..., tuple[mparticle.EventsApi, Credentials]]
) -> None:
    """Every platform, ATT status and orientation the SDK accepts, one batch each."""
    api, credentials = api_for("sdk-device-enums")
    platforms = sdk_allowed(mparticle.DeviceInformation, "platform")
    statuses = sdk_allowed(mparticle.DeviceInformation, "att_authorization_status")
    orientations = sdk_allowed(mparticle.DeviceCurrentState, "device_orientation")
    count = max(len(platforms), len(statuses), len(orientations))
    batches = []
    for i in range(count):
        event = mparticle.ScreenViewEvent(**common(), screen_name=f"Screen {i}")
        event.device_current_state.device_orientation = orientations[i % len(orientations)]
        event.device_current_state.status_bar_orientation = orientations[-1 - i % len(orientations)]
        batch = full_batch([event], str(uuid.uuid4()))
        batch.device_info.platform = platforms[i % len(platforms)]
        batch.device_info.att_authorization_status = statuses[i % len(statuses)]
        batches.append(batch)
    _, status, _ = api.bulk_upload_events(batches)
    assert status == 202
    assert stored_for(sdk_server, credentials) == [sent_bytes(b) for b in batches]


def test_bulk_upload_with_repeated_source_request_id_stores_it_once(
    sdk_server: Server, api_for: Callable[..., tuple[mparticle.EventsApi, Credentials]]
) -> None:
    api, credentials = api_for("sdk-bulk-dup")
    srid = str(uuid.uuid4())
    batch = full_batch([mparticle.AppEvent("Example", "navigation")], srid)
    _, status, _ = api.bulk_upload_events([batch, batch])
    assert status == 202
    assert api.api_client.last_response.data == '{"accepted":1,"duplicates":1,"rejected":[]}'
    _, status, _ = api.upload_events(batch)
    assert status == 202
    assert stored_for(sdk_server, credentials) == [sent_bytes(batch)]


def test_upload_events_with_callback(
    sdk_server: Server, api_for: Callable[..., tuple[mparticle.EventsApi, Credentials]]
) -> None:
    """The SDK's asynchronous form (a thread and a callback) works the same."""
    api, credentials = api_for("sdk-callback")
    batch = full_batch([mparticle.SessionStartEvent(**common())], str(uuid.uuid4()))
    results: list[Any] = []
    thread = api.upload_events(batch, callback=results.append)
    thread.join(timeout=30)
    assert not thread.is_alive()
    ((data, status, _),) = results
    assert (data, status) == (None, 202)
    assert stored_for(sdk_server, credentials) == [sent_bytes(batch)]


def test_wrong_secret_raises_api_exception_403(
    sdk_server: Server, api_for: Callable[..., tuple[mparticle.EventsApi, Credentials]]
) -> None:
    _, credentials = api_for("sdk-wrong-secret")
    config = mparticle.Configuration()
    config.api_key = credentials.key
    config.api_secret = "not-the-secret"
    config.host = f"{sdk_server.url}/v2"
    wrong = mparticle.EventsApi(config)
    try:
        batch = full_batch([mparticle.AppEvent("Example")], str(uuid.uuid4()))
        with pytest.raises(ApiException) as raised:
            wrong.upload_events(batch)
        assert raised.value.status == 403
        assert json.loads(raised.value.body)["errors"][0]["code"] == "FORBIDDEN"
    finally:
        wrong.api_client.rest_client.pool_manager.clear()
    assert stored_for(sdk_server, credentials) == []


def test_rate_limited_sdk_gets_429_and_honours_retry_after(
    sdk_server: Server, api_for: Callable[..., tuple[mparticle.EventsApi, Credentials]]
) -> None:
    # 0.01 batches/s: the first batch passes, the next must wait about 100 s.
    api, credentials = api_for("sdk-rate-limited", rate_limit=0.01)
    first = full_batch([mparticle.AppEvent("First")], str(uuid.uuid4()))
    _, status, _ = api.upload_events(first)
    assert status == 202

    second = full_batch([mparticle.AppEvent("Second")], str(uuid.uuid4()))
    with pytest.raises(ApiException) as raised:
        api.bulk_upload_events([second])
    error = raised.value
    assert error.status == 429
    assert error.headers["X-mp-rate-limit-exceeded"] == "app"
    retry_after = int(error.headers["Retry-After"])
    assert retry_after > 1
    assert json.loads(error.body)["errors"][0]["code"] == "TOO_MANY_REQUESTS"

    # The SDK remembered the deadline: the next call fails at once, without a request.
    assert RESTClientObject.retry_after_timestamp > time.time() + 1
    requests_before = count_429s(sdk_server)
    assert requests_before >= 1
    with pytest.raises(ApiException) as again:
        api.upload_events(second)
    assert again.value.status == 429
    assert 0 < int(again.value.headers["Retry-After"]) <= retry_after
    assert count_429s(sdk_server) == requests_before

    assert stored_for(sdk_server, credentials) == [sent_bytes(first)]


def count_429s(server: Server) -> float:
    """The 429 responses the server has sent, from its metrics."""
    status, body = server.get("/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("patchbay_http_requests_total{") and 'status="429"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
