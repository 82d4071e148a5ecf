"""The Firehose wire format: typed models of every message and a serializer that reads and
writes the same JSON as mParticle's Java Firehose SDK 3.2.0.

Shared by the platform's delivery engine and the partner SDK, so it depends on msgspec and
the standard library only. Usage::

    from patchbay.firehose import parse, dumps, EventProcessingRequest

    message = parse(body)  # any of the ten message types
    if isinstance(message, EventProcessingRequest):
        ...
    body = dumps(response)

Modules: ``messages`` (envelope and the ten messages), ``events``, ``environment``
(runtime environments), ``identities``, ``consent`` (consent state and system
notifications), ``account``, ``audience``, ``dsr``, ``registration``, ``settings``,
``auth``, ``enums``, ``errors``, ``serialize``. See docs/firehose.md.

The partner SDK: ``processor`` (``MessageProcessor``, re-exported here) and its adapters
``lambda_handler`` (``lambda_handler(processor)``) and ``asgi`` (``asgi_app(processor,
token=...)``), imported from their modules. See docs/partners.md.
"""

from __future__ import annotations

from patchbay.firehose.account import Account, PlatformFields
from patchbay.firehose.audience import Audience, UserAttributeAudienceEvent, UserProfile
from patchbay.firehose.auth import (
    Authentication,
    AuthenticationConfiguration,
    OAuth2Authentication,
    ScopeDetail,
)
from patchbay.firehose.consent import (
    BaseSystemNotification,
    CCPAConsent,
    CCPAConsentStateNotification,
    ConsentState,
    GDPRConsent,
    GDPRConsentStateNotification,
    SystemNotification,
)
from patchbay.firehose.dsr import OpenDsrIdentity
from patchbay.firehose.enums import FIREHOSE_VERSION
from patchbay.firehose.environment import (
    AlexaRuntimeEnvironment,
    AndroidRuntimeEnvironment,
    BaseRuntimeEnvironment,
    FireTvRuntimeEnvironment,
    GenericRuntimeEnvironment,
    IosRuntimeEnvironment,
    RokuRuntimeEnvironment,
    RuntimeEnvironment,
    SmartTvRuntimeEnvironment,
    TvosRuntimeEnvironment,
    WebRuntimeEnvironment,
    XboxRuntimeEnvironment,
)
from patchbay.firehose.errors import (
    FirehoseDecodeError,
    FirehoseError,
    FirehoseValidationError,
    SettingError,
    UnknownEnumValueError,
    UnknownTypeError,
    UnknownValueError,
)
from patchbay.firehose.events import (
    ApplicationStateTransitionEvent,
    AttributionEvent,
    BaseEvent,
    CustomEvent,
    ErrorEvent,
    Event,
    Impression,
    ImpressionEvent,
    Location,
    PrivacySettingChangeEvent,
    Product,
    ProductActionEvent,
    Promotion,
    PromotionActionEvent,
    PushMessageOpenEvent,
    PushMessageReceiptEvent,
    PushSubscriptionEvent,
    ScreenViewEvent,
    SessionEndEvent,
    SessionStartEvent,
    UserAttributeChangeEvent,
    UserIdentityChangeEvent,
)
from patchbay.firehose.identities import DeviceIdentity, Identity, PartnerIdentity, UserIdentity
from patchbay.firehose.messages import (
    AudienceMembershipChangeRequest,
    AudienceMembershipChangeResponse,
    AudienceSubscriptionRequest,
    AudienceSubscriptionResponse,
    BaseMessage,
    DsrProcessingRequest,
    DsrProcessingResponse,
    EventProcessingRequest,
    EventProcessingResponse,
    Message,
    ModuleRegistrationRequest,
    ModuleRegistrationResponse,
)
from patchbay.firehose.processor import (
    HandlerError,
    InvalidMessageError,
    InvalidSettingsError,
    MessageProcessor,
    ProcessorError,
    Settings,
    UnregisteredSettingError,
    UnsupportedMessageError,
)
from patchbay.firehose.registration import (
    AudienceProcessingRegistration,
    BulkConfiguration,
    DeviceIdentityPermission,
    DsrProcessingRegistration,
    EventProcessingRegistration,
    PartnerIdentityPermission,
    Permissions,
    UserIdentityPermission,
)
from patchbay.firehose.serialize import dumps, parse, to_dict
from patchbay.firehose.settings import (
    BaseSetting,
    BooleanSetting,
    FloatSetting,
    IntegerSetting,
    Setting,
    TextSetting,
)

__all__ = [
    "FIREHOSE_VERSION",
    "Account",
    "AlexaRuntimeEnvironment",
    "AndroidRuntimeEnvironment",
    "ApplicationStateTransitionEvent",
    "AttributionEvent",
    "Audience",
    "AudienceMembershipChangeRequest",
    "AudienceMembershipChangeResponse",
    "AudienceProcessingRegistration",
    "AudienceSubscriptionRequest",
    "AudienceSubscriptionResponse",
    "Authentication",
    "AuthenticationConfiguration",
    "BaseEvent",
    "BaseMessage",
    "BaseRuntimeEnvironment",
    "BaseSetting",
    "BaseSystemNotification",
    "BooleanSetting",
    "BulkConfiguration",
    "CCPAConsent",
    "CCPAConsentStateNotification",
    "ConsentState",
    "CustomEvent",
    "DeviceIdentity",
    "DeviceIdentityPermission",
    "DsrProcessingRegistration",
    "DsrProcessingRequest",
    "DsrProcessingResponse",
    "ErrorEvent",
    "Event",
    "EventProcessingRegistration",
    "EventProcessingRequest",
    "EventProcessingResponse",
    "FireTvRuntimeEnvironment",
    "FirehoseDecodeError",
    "FirehoseError",
    "FirehoseValidationError",
    "FloatSetting",
    "GDPRConsent",
    "GDPRConsentStateNotification",
    "GenericRuntimeEnvironment",
    "HandlerError",
    "Identity",
    "Impression",
    "ImpressionEvent",
    "IntegerSetting",
    "InvalidMessageError",
    "InvalidSettingsError",
    "IosRuntimeEnvironment",
    "Location",
    "Message",
    "MessageProcessor",
    "ModuleRegistrationRequest",
    "ModuleRegistrationResponse",
    "OAuth2Authentication",
    "OpenDsrIdentity",
    "PartnerIdentity",
    "PartnerIdentityPermission",
    "Permissions",
    "PlatformFields",
    "PrivacySettingChangeEvent",
    "ProcessorError",
    "Product",
    "ProductActionEvent",
    "Promotion",
    "PromotionActionEvent",
    "PushMessageOpenEvent",
    "PushMessageReceiptEvent",
    "PushSubscriptionEvent",
    "RokuRuntimeEnvironment",
    "RuntimeEnvironment",
    "ScopeDetail",
    "ScreenViewEvent",
    "SessionEndEvent",
    "SessionStartEvent",
    "Setting",
    "SettingError",
    "Settings",
    "SmartTvRuntimeEnvironment",
    "SystemNotification",
    "TextSetting",
    "TvosRuntimeEnvironment",
    "UnknownEnumValueError",
    "UnknownTypeError",
    "UnknownValueError",
    "UnregisteredSettingError",
    "UnsupportedMessageError",
    "UserAttributeAudienceEvent",
    "UserAttributeChangeEvent",
    "UserIdentity",
    "UserIdentityChangeEvent",
    "UserIdentityPermission",
    "UserProfile",
    "WebRuntimeEnvironment",
    "XboxRuntimeEnvironment",
    "dumps",
    "parse",
    "to_dict",
]
