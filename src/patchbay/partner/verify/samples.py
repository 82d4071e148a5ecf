"""The requests a platform sends a module, built from its registration: plain functions, so
that tests and the delivery engine can use them too."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, cast

import msgspec

from patchbay.firehose import (
    Account,
    ApplicationStateTransitionEvent,
    AttributionEvent,
    Audience,
    AudienceMembershipChangeRequest,
    AudienceSubscriptionRequest,
    BaseEvent,
    BooleanSetting,
    CCPAConsent,
    CCPAConsentStateNotification,
    ConsentState,
    CustomEvent,
    DeviceIdentity,
    DsrProcessingRequest,
    ErrorEvent,
    Event,
    EventProcessingRegistration,
    EventProcessingRequest,
    FloatSetting,
    GDPRConsent,
    GDPRConsentStateNotification,
    Impression,
    ImpressionEvent,
    IntegerSetting,
    Location,
    ModuleRegistrationResponse,
    OpenDsrIdentity,
    PartnerIdentity,
    Permissions,
    PlatformFields,
    PrivacySettingChangeEvent,
    Product,
    ProductActionEvent,
    Promotion,
    PromotionActionEvent,
    PushMessageOpenEvent,
    PushMessageReceiptEvent,
    PushSubscriptionEvent,
    RuntimeEnvironment,
    ScreenViewEvent,
    SessionEndEvent,
    SessionStartEvent,
    Setting,
    SystemNotification,
    TextSetting,
    UserAttributeAudienceEvent,
    UserAttributeChangeEvent,
    UserIdentity,
    UserIdentityChangeEvent,
    UserProfile,
)
from patchbay.firehose._base import now_ms as _now_ms
from patchbay.firehose.enums import EventType, RuntimeEnvironmentType
from patchbay.firehose.environment import (
    BaseRuntimeEnvironment,
    GenericRuntimeEnvironment,
)
from patchbay.partner.verify.sample_data import (
    COMMON_DEVICE,
    DEVICE_IDENTITIES,
    DEVICES,
    RUNTIME_CLASSES,
    USER_IDENTITIES,
)

#: The customer account the verification requests come from.
VERIFY_ACCOUNT_ID: Final = 90210
AUDIENCE_ID: Final = 4242
AUDIENCE_NAME: Final = "Verify: frequent buyers"


def account_settings_for(settings: Sequence[Setting]) -> dict[str, str | None]:
    """Values for ``settings`` as a customer would enter them: the registered default, or a
    placeholder of the right type within ``min_value``/``max_value``. Booleans are written
    ``True``/``False``, as the platform sends them."""
    values: dict[str, str | None] = {}
    for setting in settings:
        if isinstance(setting, TextSetting):
            placeholder = (
                f"verify-secret-{setting.id}" if setting.confidential else f"verify-{setting.id}"
            )
            values[setting.id] = setting.default_value or placeholder
        elif isinstance(setting, IntegerSetting):
            number = setting.default_value
            if number is None:
                number = _within(1, setting.min_value, setting.max_value)
            values[setting.id] = str(number)
        elif isinstance(setting, FloatSetting):
            value = setting.default_value
            if value is None:
                value = float(_within(1.0, setting.min_value, setting.max_value))
            values[setting.id] = repr(value)
        elif isinstance(setting, BooleanSetting):
            values[setting.id] = "True" if setting.default_value else "False"
    return values


def _within(value: float, low: float | None, high: float | None) -> Any:
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return value


def _account(settings: Sequence[Setting]) -> Account:
    return Account(account_id=VERIFY_ACCOUNT_ID, account_settings=account_settings_for(settings))


def _encode(value: str, encoding: str) -> str:
    if encoding == "raw":
        return value
    return hashlib.new(encoding, value.strip().lower().encode()).hexdigest()


def _user_identities(permissions: Permissions) -> list[UserIdentity]:
    return [
        UserIdentity(
            type=p.type,
            encoding=p.encoding,
            value=_encode(USER_IDENTITIES.get(p.type, f"verify-{p.type}-000123"), p.encoding),
        )
        for p in permissions.user_identities
    ]


def _device_identities(permissions: Permissions) -> list[DeviceIdentity]:
    return [
        DeviceIdentity(
            type=p.type,
            encoding=p.encoding,
            value=_encode(DEVICE_IDENTITIES.get(p.type, str(uuid.uuid4())), p.encoding),
        )
        for p in permissions.device_identities
    ]


def _partner_identities(permissions: Permissions) -> list[PartnerIdentity]:
    return [
        PartnerIdentity(
            type=p.type, encoding=p.encoding, value=_encode("verify-partner-7f3a", p.encoding)
        )
        for p in permissions.partner_identities
    ]


def _runtime_environment(runtime: str, permissions: Permissions) -> BaseRuntimeEnvironment:
    cls = RUNTIME_CLASSES.get(runtime, GenericRuntimeEnvironment)
    names = {f.name for f in msgspec.structs.fields(cls)}
    fields: dict[str, Any] = {
        "sdk_version": "8.19.0" if runtime != "mobileweb" else "2.28.0",
        "identities": _device_identities(permissions),
    }
    if permissions.allow_device_info:
        device = {**COMMON_DEVICE, **DEVICES.get(runtime, {})}
        fields.update({k: v for k, v in device.items() if k in names})
    if permissions.allow_access_ip_address:
        fields["client_ip_address"] = "203.0.113.7"
    if permissions.allow_access_http_user_agent:
        fields["http_header_user_agent"] = (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
        )
    return cls(**fields)


def sample_events(
    registration: ModuleRegistrationResponse, now_ms: int | None = None
) -> list[BaseEvent]:
    """One realistic event of every type the module registered, in registration order."""
    events_reg = registration.event_processing_registration
    if events_reg is None:
        return []
    permissions = registration.permissions or Permissions()
    start = (now_ms if now_ms is not None else _now_ms()) - 60_000
    location = (
        Location(latitude=40.7128, longitude=-74.006, accuracy=12.5)
        if permissions.allow_access_location
        else None
    )
    provider = events_reg.push_messaging_provider_id or "verify"
    out: list[BaseEvent] = []
    for i, kind in enumerate(dict.fromkeys(events_reg.supported_event_types)):
        make = _EVENT_FACTORIES.get(kind)
        if make is None:
            continue
        event = make(permissions, provider)
        event = msgspec.structs.replace(
            event, timestamp_ms=start + i * 1_000, session_id=1_714_000_123_456, location=location
        )
        out.append(event)
    return out


def _product(sku: str, name: str, price: str, quantity: str) -> Product:
    return Product(
        id=sku,
        name=name,
        brand="Acme",
        category="Outdoor",
        variant="blue",
        position=1,
        price=Decimal(price),
        quantity=Decimal(quantity),
        total_amount=Decimal(price) * Decimal(quantity),
        attributes={"color": "blue"},
    )


def _push_payload(provider: str) -> str:
    return json.dumps(
        {
            "aps": {"alert": {"title": "Back in stock", "body": "Your item is available."}},
            provider: {"campaignId": 1234, "templateId": 5678, "messageId": "verify-msg-1"},
        },
        separators=(",", ":"),
    )


_EVENT_FACTORIES: Final[dict[str, Callable[[Permissions, str], BaseEvent]]] = {
    EventType.SESSION_START: lambda p, _: SessionStartEvent(),
    EventType.SESSION_END: lambda p, _: SessionEndEvent(session_length_ms=63_000),
    EventType.CUSTOM_EVENT: lambda p, _: CustomEvent(
        name="Viewed Article",
        custom_event_type="navigation",
        attributes={"article_id": "A-1029", "section": "outdoors"},
        custom_flags={"verify.flag": "true"},
    ),
    EventType.SCREEN_VIEW: lambda p, _: ScreenViewEvent(
        screen_name="Product Detail", attributes={"product_id": "SKU-42"}
    ),
    EventType.ERROR: lambda p, _: ErrorEvent(
        message="NullPointerException in CartView",
        is_crash=False,
        stack_trace=(
            "java.lang.NullPointerException\n\tat com.example.CartView.render(CartView.java:42)"
        ),
        breadcrumbs=["Opened cart", "Tapped checkout"],
        attributes={"screen": "cart"},
    ),
    EventType.PRIVACY_SETTING_CHANGE: lambda p, _: PrivacySettingChangeEvent(
        setting="app_data_collection", is_enabled=True
    ),
    EventType.USER_ATTRIBUTE_CHANGE: lambda p, _: UserAttributeChangeEvent(
        added={"plan": "premium", "$City": "Boston"}, removed={"trial": "true"}
    ),
    EventType.USER_IDENTITY_CHANGE: lambda p, _: UserIdentityChangeEvent(
        added=_user_identities(p)[:1], removed=[]
    ),
    EventType.PUSH_SUBSCRIPTION: lambda p, _: PushSubscriptionEvent(
        action="subscribe", token=DEVICE_IDENTITIES["apple_push_notification_token"]
    ),
    EventType.APPLICATION_STATE_TRANSITION: lambda p, _: ApplicationStateTransitionEvent(
        application_state="foreground", launch_referral="https://example.com/promo"
    ),
    EventType.PUSH_MESSAGE_RECEIPT: lambda p, provider: PushMessageReceiptEvent(
        payload=_push_payload(provider)
    ),
    EventType.PUSH_MESSAGE_OPEN: lambda p, provider: PushMessageOpenEvent(
        payload=_push_payload(provider)
    ),
    EventType.PRODUCT_ACTION: lambda p, _: ProductActionEvent(
        action="purchase",
        transaction_id="T-100045",
        affiliation="Acme Online",
        total_amount=Decimal("64.47"),
        tax_amount=Decimal("4.48"),
        shipping_amount=Decimal("5.00"),
        currency_code="USD",
        coupon_code="SPRING10",
        products=[
            _product("SKU-42", "Trail Bottle", "18.33", "3"),
            _product("SKU-7", "Cap", "0.00", "1"),
        ],
        attributes={"checkout_step": "3"},
    ),
    EventType.PROMOTION_ACTION: lambda p, _: PromotionActionEvent(
        action="view",
        promotions=[
            Promotion(id="PROMO-1", name="Spring sale", creative="banner-a", position="top")
        ],
    ),
    EventType.IMPRESSION: lambda p, _: ImpressionEvent(
        impressions=[
            Impression(
                impression_list_name="Search results",
                products=[_product("SKU-42", "Trail Bottle", "18.33", "1")],
            )
        ]
    ),
    EventType.ATTRIBUTION: lambda p, _: AttributionEvent(
        name="install",
        partner_name="Acme Ads",
        publisher_name="Example Network",
        campaign_name="spring-2024",
        attributes={"ad_group": "outdoors"},
    ),
}


def _notifications(kinds: Sequence[str], now_ms: int) -> list[SystemNotification]:
    found: list[SystemNotification] = []
    for kind in kinds:
        if kind == "gdpr_consent_state":
            found.append(
                GDPRConsentStateNotification(
                    purpose="marketing",
                    old_gdpr_consent_state=GDPRConsent(
                        consented=False, timestamp_unixtime_ms=now_ms - 86_400_000
                    ),
                    new_gdpr_consent_state=GDPRConsent(
                        consented=True,
                        document="privacy_policy_v2",
                        timestamp_unixtime_ms=now_ms - 30_000,
                        location="example.com/privacy",
                        hardware_id="verify-hw-1",
                    ),
                )
            )
        elif kind == "ccpa_consent_state":
            found.append(
                CCPAConsentStateNotification(
                    old_ccpa_consent_state=CCPAConsent(
                        consented=False, timestamp_unixtime_ms=now_ms - 86_400_000
                    ),
                    new_ccpa_consent_state=CCPAConsent(
                        consented=True,
                        document="ccpa_notice_v1",
                        timestamp_unixtime_ms=now_ms - 30_000,
                    ),
                )
            )
    return found


def event_processing_request(
    registration: ModuleRegistrationResponse,
    *,
    runtime: str | None = None,
    events: Sequence[BaseEvent] | None = None,
) -> EventProcessingRequest:
    """An event processing request as the platform would send it to this module.

    ``events``: by default one of every registered type (:func:`sample_events`); ``[]`` for
    the verification request. ``runtime``: the runtime environment (default: the first
    registered one). Only
    the fields the permissions unlock are set, with the registered identity types and
    encodings, and account settings for every account and connection setting.
    """
    events_reg = registration.event_processing_registration or EventProcessingRegistration()
    permissions = registration.permissions or Permissions()
    now = _now_ms()
    chosen = sample_events(registration, now) if events is None else list(events)
    runtimes = events_reg.supported_runtime_environments
    runtime = runtime or (runtimes[0] if runtimes else RuntimeEnvironmentType.UNKNOWN.value)
    settings = [*events_reg.account_settings, *events_reg.event_connection_settings]
    request = EventProcessingRequest(
        account=_account(settings),
        partner_identities=_partner_identities(permissions),
        user_identities=_user_identities(permissions),
        runtime_environment=cast("RuntimeEnvironment", _runtime_environment(runtime, permissions)),
        events=cast("list[Event]", chosen),
        source_channel="javascript" if runtime == "mobileweb" else "native",
        system_notifications=_notifications(events_reg.supported_system_notification_types, now),
    )
    extra: dict[str, Any] = {}
    if permissions.allow_user_attributes:
        extra["user_attributes"] = {"$FirstName": "Ada", "$City": "Boston", "plan": "premium"}
        extra["user_attribute_lists"] = {"interests": ["hiking", "cycling"]}
    if permissions.allow_access_device_application_stamp:
        extra["device_application_stamp"] = "6b3e1c42-5f0d-4a7e-9a8b-2c1d0e9f8a7b"
    if permissions.allow_consent_state:
        extra["consent_state"] = ConsentState(
            gdpr_consent_state={
                "marketing": GDPRConsent(
                    consented=True, document="privacy_policy_v2", timestamp_unixtime_ms=now - 30_000
                )
            },
            ccpa_consent_state={
                "data_sale_opt_out": CCPAConsent(
                    consented=False, timestamp_unixtime_ms=now - 30_000
                )
            },
        )
    if permissions.allow_access_mpid:
        extra["mpid"] = "-5227515829034156637"
    if permissions.allow_platform_fields:
        extra["platform_fields"] = PlatformFields(
            mp_account_id=VERIFY_ACCOUNT_ID,
            mp_account_name="Verify Inc.",
            workspace_id=7,
            workspace_name="Production",
            input_name="iOS",
            app_name="Patchbay Verify",
            app_version="4.2.0",
        )
    return msgspec.structs.replace(request, **extra) if extra else request


def _subscription_values(registration: ModuleRegistrationResponse) -> dict[str, str]:
    audience = registration.audience_processing_registration
    if audience is None:
        return {}
    visible = [s for s in audience.audience_subscription_settings if s.visible]
    return {k: v for k, v in account_settings_for(visible).items() if v is not None}


def audience_subscription_request(
    registration: ModuleRegistrationResponse,
    action: str = "add",
    previous: Mapping[str, str] | None = None,
) -> AudienceSubscriptionRequest:
    """A customer connects (``add``), changes (``update``) or removes (``remove``) an
    audience. The customer-entered values are those of the visible subscription settings;
    ``previous`` adds the partner's returned settings (sent back on later requests)."""
    audience = registration.audience_processing_registration
    values = {**_subscription_values(registration), **(previous or {})}
    return AudienceSubscriptionRequest(
        account=_account(audience.account_settings if audience else []),
        audience_id=AUDIENCE_ID,
        audience_name=AUDIENCE_NAME,
        audience_description="Users with three or more purchases in 30 days",
        audience_subscription_settings=values,
        previous_audience_subscription_settings=dict(values) if action == "update" else {},
        action=action,
    )


def audience_membership_change_request(
    registration: ModuleRegistrationResponse,
    action: str | None,
    returned: Mapping[str, str] | None = None,
) -> AudienceMembershipChangeRequest:
    """Users added to (``add``), removed from (``delete``) or with changed attributes in
    (``attribute_update``) the verification audience; ``action=None`` is the periodic
    verification request (no ``user_profiles``)."""
    audience = registration.audience_processing_registration
    account = _account(audience.account_settings if audience else [])
    if action is None:
        return AudienceMembershipChangeRequest(account=account)
    permissions = registration.permissions or Permissions()
    attributes: list[UserAttributeAudienceEvent] = []
    if permissions.allow_audience_user_attributes:
        attributes = [
            UserAttributeAudienceEvent(key="plan", value="premium", action="upsert"),
            UserAttributeAudienceEvent(
                key="interests", list_value=["hiking", "cycling"], action="upsert"
            ),
        ]
        if action == "attribute_update":
            attributes.append(UserAttributeAudienceEvent(key="trial", action="delete"))
    profile = UserProfile(
        user_identities=_user_identities(permissions),
        device_identities=_device_identities(permissions),
        partner_identities=_partner_identities(permissions),
        audiences=[
            Audience(
                audience_id=AUDIENCE_ID,
                audience_name=AUDIENCE_NAME,
                audience_subscription_settings={
                    **_subscription_values(registration),
                    **(returned or {}),
                },
                action=action,
                user_attributes=attributes if action != "delete" else [],
            )
        ],
        mpid="-5227515829034156637" if permissions.allow_access_mpid else None,
    )
    return AudienceMembershipChangeRequest(account=account, user_profiles=[profile])


def dsr_processing_request(registration: ModuleRegistrationResponse) -> DsrProcessingRequest:
    """A GDPR erasure request for the verification user."""
    dsr = registration.dsr_processing_registration
    return DsrProcessingRequest(
        account=_account(dsr.account_settings if dsr else []),
        subject_request_id=str(uuid.uuid4()),
        subject_request_type="erasure",
        submitted_time=datetime.now(UTC).replace(microsecond=0),
        subject_identities={
            "email": OpenDsrIdentity(encoding="raw", value=USER_IDENTITIES["email"]),
            "controller_customer_id": OpenDsrIdentity(
                encoding="raw", value=USER_IDENTITIES["customer"]
            ),
        },
        api_version="3.0",
        regulation="gdpr",
    )
