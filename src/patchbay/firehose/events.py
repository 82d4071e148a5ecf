"""Events of an event processing request, tagged on ``type`` (16 kinds), and their parts.

Every event has the :class:`BaseEvent` fields. A new event gets a random ``id`` and the
current ``timestamp_ms``, like the Java SDK. Amounts are ``Decimal`` (Java ``BigDecimal``) so
their text survives a round trip (``10.50`` stays ``10.50``).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import msgspec

from patchbay.firehose._base import FirehoseStruct, Int32, Int64, now_ms, one_of, struct_tag
from patchbay.firehose.enums import (
    ApplicationState,
    CustomEventType,
    EventType,
    PrivacySetting,
    ProductAction,
    PromotionAction,
    PushSubscriptionAction,
)
from patchbay.firehose.identities import UserIdentity

if TYPE_CHECKING:
    from patchbay.firehose.messages import EventProcessingRequest


class Location(FirehoseStruct):
    """Where the event happened (needs ``allow_access_location``). All three are Java
    ``double``: always written, ``0.0`` when unset."""

    latitude: float = 0.0
    longitude: float = 0.0
    accuracy: float = 0.0


class Product(FirehoseStruct):
    """A product of a product action or an impression."""

    id: str | None = None
    name: str | None = None
    brand: str | None = None
    category: str | None = None
    variant: str | None = None
    position: Int32 = 0
    price: Decimal | None = None
    quantity: Decimal | None = None
    coupon_code: str | None = None
    total_amount: Decimal | None = None
    attributes: dict[str, str] = {}


class Promotion(FirehoseStruct):
    """A promotion of a promotion action (``position`` is a string here)."""

    id: str | None = None
    name: str | None = None
    creative: str | None = None
    position: str | None = None


class Impression(FirehoseStruct):
    """One impression list of an impression event."""

    impression_list_name: str | None = None
    products: list[Product] = []


class BaseEvent(FirehoseStruct, tag_field="type", dict=True):
    """Fields common to every event.

    ``request`` is the event processing request the event arrived in, once a processor has
    attached it with :meth:`attach_request` (not serialized, not compared).
    """

    id: uuid.UUID = msgspec.field(default_factory=uuid.uuid4)
    timestamp_ms: Int64 = msgspec.field(default_factory=now_ms)
    source_id: str | None = None
    session_id: Int64 | None = None
    location: Location | None = None

    @property
    def type(self) -> EventType:
        """The ``type`` discriminator."""
        return EventType(struct_tag(self))

    @property
    def request(self) -> EventProcessingRequest | None:
        """The request this event belongs to, if attached (Java ``Event.getRequest()``)."""
        request: EventProcessingRequest | None = self.__dict__.get("request")
        return request

    def attach_request(self, request: EventProcessingRequest | None) -> None:
        """Attach (or with ``None`` detach) the request this event belongs to."""
        self.__dict__["request"] = request


class SessionStartEvent(BaseEvent, tag="session_start"):
    """``session_start``."""


class SessionEndEvent(BaseEvent, tag="session_end"):
    """``session_end``."""

    session_length_ms: Int64 = 0


class CustomEvent(BaseEvent, tag="custom_event"):
    """``custom_event``: a named app event. ``name`` is required by the docs."""

    name: str | None = None
    custom_event_type: Annotated[str, one_of(CustomEventType)] | None = None
    attributes: dict[str, str] = {}
    custom_flags: dict[str, str] = {}


class ScreenViewEvent(BaseEvent, tag="screen_view"):
    """``screen_view``. ``screen_name`` is required by the docs."""

    screen_name: str | None = None
    attributes: dict[str, str] = {}
    custom_flags: dict[str, str] = {}


class ErrorEvent(BaseEvent, tag="error"):
    """``error``: a handled or unhandled (``is_crash``) error."""

    message: str | None = None
    is_crash: bool = False
    stack_trace: str | None = None
    breadcrumbs: list[str] = []
    attributes: dict[str, str] = {}


class PrivacySettingChangeEvent(BaseEvent, tag="privacy_setting_change"):
    """``privacy_setting_change``: an opt-out or opt-in."""

    setting: Annotated[str, one_of(PrivacySetting)] | None = None
    is_enabled: bool = False


class UserAttributeChangeEvent(BaseEvent, tag="user_attribute_change"):
    """``user_attribute_change`` (needs ``allow_user_attributes``)."""

    added: dict[str, str] = {}
    removed: dict[str, str] = {}


class UserIdentityChangeEvent(BaseEvent, tag="user_identity_change"):
    """``user_identity_change`` (only identity types the partner registered)."""

    added: list[UserIdentity] = []
    removed: list[UserIdentity] = []


class PushSubscriptionEvent(BaseEvent, tag="push_subscription"):
    """``push_subscription``: a push token registered or unregistered."""

    action: Annotated[str, one_of(PushSubscriptionAction)] | None = None
    token: str | None = None


class ApplicationStateTransitionEvent(BaseEvent, tag="application_state_transition"):
    """``application_state_transition``: install, upgrade, launch, exit, background, foreground."""

    application_state: Annotated[str, one_of(ApplicationState)] | None = None
    launch_referral: str | None = None
    referral_application: str | None = None
    launch_parameters: str | None = None
    source_package: str | None = None


class PushMessageReceiptEvent(BaseEvent, tag="push_message_receipt"):
    """``push_message_receipt``. ``payload`` is the raw push payload as JSON text."""

    payload: str | None = None


class PushMessageOpenEvent(BaseEvent, tag="push_message_open"):
    """``push_message_open``. ``payload`` is the raw push payload as JSON text."""

    payload: str | None = None


class ProductActionEvent(BaseEvent, tag="product_action"):
    """``product_action``: a commerce event about products."""

    action: Annotated[str, one_of(ProductAction)] | None = None
    transaction_id: str | None = None
    affiliation: str | None = None
    total_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    shipping_amount: Decimal | None = None
    currency_code: str | None = None
    coupon_code: str | None = None
    products: list[Product] = []
    attributes: dict[str, str] = {}
    custom_flags: dict[str, str] = {}


class PromotionActionEvent(BaseEvent, tag="promotion_action"):
    """``promotion_action``: a promotion viewed or clicked."""

    action: Annotated[str, one_of(PromotionAction)] | None = None
    attributes: dict[str, str] = {}
    promotions: list[Promotion] = []
    custom_flags: dict[str, str] = {}


class ImpressionEvent(BaseEvent, tag="impression"):
    """``impression``: product impressions, one entry per impression list."""

    attributes: dict[str, str] = {}
    impressions: list[Impression] = []
    custom_flags: dict[str, str] = {}


class AttributionEvent(BaseEvent, tag="attribution"):
    """``attribution``: an install or re-engagement attributed to a campaign."""

    name: str | None = None
    partner_name: str | None = None
    publisher_name: str | None = None
    campaign_name: str | None = None
    attributes: dict[str, str] = {}


#: Any event, chosen by its ``type``.
Event = (
    SessionStartEvent
    | SessionEndEvent
    | CustomEvent
    | ScreenViewEvent
    | ErrorEvent
    | PrivacySettingChangeEvent
    | UserAttributeChangeEvent
    | UserIdentityChangeEvent
    | PushSubscriptionEvent
    | ApplicationStateTransitionEvent
    | PushMessageReceiptEvent
    | PushMessageOpenEvent
    | ProductActionEvent
    | PromotionActionEvent
    | ImpressionEvent
    | AttributionEvent
)
