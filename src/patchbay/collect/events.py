"""Event models of mParticle's JSON batch format: one envelope struct per ``event_type``.

An event is ``{"event_type": "<type>", "data": {...}}``. Each envelope is a msgspec struct
tagged on ``event_type``, so :data:`Event` decodes as a tagged union and an unknown or
missing type is reported at its exact path. All ``data`` fields are optional (the official
samples omit even the documented "required" ones); their types and enum values are checked.
Unknown keys inside ``data`` are ignored (and kept in the stored batch).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from patchbay.collect.fields import (
    Amount,
    AttributeValue,
    FlagValue,
    Int64,
    LooseBool,
    StrOrNumber,
    UserAttributeValue,
    check_freeform,
)


class Model(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """Base of every inbound model: keyword-only fields, defaults left out when encoding.

    ``gc=False``: decoded batches hold no reference cycles, so the garbage collector need
    not track (and scan, again and again) the many small objects a chunk of them makes.
    """


CustomEventType = Literal[
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

CommerceEventType = Literal[
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "checkout_option",
    "click",
    "view_detail",
    "purchase",
    "refund",
    "promotion_view",
    "promotion_click",
    "add_to_wishlist",
    "remove_from_wishlist",
    "impression",
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
    "consent_granted",
    "consent_denied",
    "unknown",
]

ProductActionType = Literal[
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

PromotionActionType = Literal["view", "click", "unknown"]

#: Other spellings of product actions (the SDKs send both), and the canonical one.
PRODUCT_ACTION_ALIASES: dict[str, str] = {"remove_from_wish_list": "remove_from_wishlist"}


class GeoLocation(Model):
    """A location: the event's ``location`` or the batch's ``context.location``."""

    latitude: float | str | None = None
    longitude: float | str | None = None
    accuracy: float | None = None
    country_code: str | None = None
    region_code: str | None = None
    city_name: str | None = None
    postal_code: str | None = None
    dma_code: Int64 | None = None
    location_source: Literal["unknown", "ip_lookup", "lat_long"] | None = None


class DeviceCurrentState(Model):
    """The device's state when the event happened."""

    time_since_start_ms: Int64 | None = None
    battery_level: float | None = None
    data_connection_type: str | None = None
    data_connection_type_detail: str | None = None
    gps_state: LooseBool | None = None
    total_system_memory_usage_bytes: Int64 | None = None
    disk_space_free_bytes: Int64 | None = None
    external_disk_space_free_bytes: Int64 | None = None
    cpu: str | None = None
    system_memory_available_bytes: float | None = None
    system_memory_low: bool | None = None
    system_memory_threshold_bytes: float | None = None
    application_memory_available_bytes: float | None = None
    application_memory_max_bytes: float | None = None
    application_memory_total_bytes: float | None = None
    device_orientation: StrOrNumber | None = None
    status_bar_orientation: StrOrNumber | None = None


class MediaInfo(Model):
    """Media details that the Python SDK's ``AppEvent`` can carry."""

    action: str | None = None
    channel: str | None = None
    metadata: str | None = None
    timed_metadata: str | None = None
    playback_position: float | None = None
    playback_rate: float | None = None
    format: str | None = None
    quality: str | None = None


class EventData(Model):
    """Fields common to every event's ``data``."""

    timestamp_unixtime_ms: Int64 | None = None
    event_id: Int64 | str | None = None  # read-only; the docs' examples send a string
    source_message_id: str | None = None
    session_id: Int64 | None = None
    session_uuid: str | None = None
    session_start_unixtime_ms: Int64 | None = None
    event_start_unixtime_ms: Int64 | None = None
    event_num: Int64 | None = None
    custom_attributes: dict[str, AttributeValue] | None = None
    location: GeoLocation | None = None
    device_current_state: DeviceCurrentState | None = None
    is_goal_defined: LooseBool | None = None
    lifetime_value_change: LooseBool | float | None = None
    lifetime_value_attribute_name: str | None = None
    data_connection_type: str | None = None
    view_controller: str | None = None
    canonical_name: str | None = None
    is_main_thread: LooseBool | None = None
    page_url: str | None = None
    custom_flags: dict[str, FlagValue] | None = None

    def __post_init__(self) -> None:
        if self.custom_flags:
            check_freeform(self.custom_flags)


class CustomEventData(EventData):
    """``custom_event``: a named event of an app-defined type."""

    event_name: str | None = None
    custom_event_type: CustomEventType | None = None
    media_info: MediaInfo | None = None


class Product(Model):
    """A product in a product action, impression or cart."""

    id: str | None = None
    name: str | None = None
    brand: str | None = None
    category: str | None = None
    variant: str | None = None
    position: Int64 | None = None
    price: Amount | None = None
    quantity: Amount | None = None
    coupon_code: str | None = None
    added_to_cart_time_ms: Int64 | None = None
    total_product_amount: Amount | None = None
    custom_attributes: dict[str, AttributeValue] | None = None


class ProductAction(Model):
    """What was done to a list of products (purchase, add to cart, ...)."""

    action: ProductActionType | None = None
    checkout_step: Int64 | None = None
    checkout_options: str | None = None
    product_action_list: str | None = None
    product_list_source: str | None = None
    transaction_id: str | None = None
    affiliation: str | None = None
    total_amount: Amount | None = None
    tax_amount: Amount | None = None
    shipping_amount: Amount | None = None
    coupon_code: str | None = None
    products: list[Product] | None = None


class Promotion(Model):
    """An internal promotion."""

    id: str | None = None
    name: str | None = None
    creative: str | None = None
    position: str | None = None


class PromotionAction(Model):
    """A promotion viewed or clicked."""

    action: PromotionActionType | None = None
    promotions: list[Promotion] | None = None


class ProductImpression(Model):
    """Products seen in a named list."""

    product_impression_list: str | None = None
    products: list[Product] | None = None


class ShoppingCart(Model):
    """The products in the cart."""

    products: list[Product] | None = None


class CommerceEventData(EventData):
    """``commerce_event``: a product action, a promotion action or product impressions."""

    product_action: ProductAction | None = None
    promotion_action: PromotionAction | None = None
    product_impressions: list[ProductImpression] | None = None
    shopping_cart: ShoppingCart | None = None
    currency_code: str | None = None
    screen_name: str | None = None
    is_non_interactive: LooseBool | None = None
    event_name: str | None = None
    custom_event_type: CommerceEventType | None = None
    # The Python SDK sends crash reports as commerce events (its class map has a bug), so
    # the crash report fields are accepted here too.
    class_name: str | None = None
    severity: str | None = None
    message: str | None = None
    stack_trace: str | None = None


class SessionStartData(EventData):
    """``session_start``: common fields only."""


class SessionEndData(EventData):
    """``session_end``: the end of a session and its length."""

    session_duration_ms: Int64 | None = None


class ScreenViewData(EventData):
    """``screen_view``: a screen or page was shown."""

    screen_name: str | None = None
    activity_type: str | None = None


class BreadcrumbData(EventData):
    """``breadcrumb``: a step recorded for crash reports."""

    label: str | None = None
    session_number: Int64 | None = None


class CrashReportData(EventData):
    """``crash_report``: an error or crash."""

    class_name: str | None = None
    severity: str | None = None
    message: str | None = None
    stack_trace: str | None = None
    exception_handled: LooseBool | None = None
    topmost_context: str | None = None
    pl_crash_report_file_base64: str | None = None
    ios_image_base_address: Int64 | None = None
    ios_image_size: Int64 | None = None
    session_number: Int64 | None = None
    breadcrumbs: list[str | BreadcrumbData | None] | None = None


class OptOutData(EventData):
    """``opt_out``: the user opted out of (or back into) tracking."""

    is_opted_out: LooseBool | None = None


class FirstRunData(EventData):
    """``first_run``: common fields only."""


class UninstallData(EventData):
    """``uninstall``: common fields only."""


class ApplicationStateTransitionData(EventData):
    """``application_state_transition``: launch, exit, background or foreground."""

    application_transition_type: (
        Literal[
            "application_initialized",
            "application_exit",
            "application_background",
            "application_foreground",
            "unknown",
        ]
        | None
    ) = None
    is_first_run: LooseBool | None = None
    is_upgrade: LooseBool | None = None
    successfully_closed: LooseBool | None = None
    push_notification_payload: str | None = None
    launch_referral: str | None = None


class PushRegistrationData(EventData):
    """``push_registration``: a push token registered or removed."""

    register: LooseBool | None = None
    registration_token: str | None = None


class PushMessageData(EventData):
    """``push_message``: a push notification sent, received or acted upon."""

    push_message_type: Literal["sent", "received", "action", "unknown"] | None = None
    push_message_token: str | None = None
    push_notification_payload: str | None = None
    message: str | None = None
    network: Literal["apn", "gcm", "unknown"] | None = None
    application_state: Literal["not_running", "background", "foreground", "unknown"] | None = None
    action_identifier: str | None = None
    push_message_behavior: StrOrNumber | None = None


class NetworkPerformanceData(EventData):
    """``network_performance``: one HTTP call made by the app."""

    http_verb: str | None = None
    url: str | None = None
    time_elapsed: Int64 | None = None
    bytes_in: Int64 | None = None
    bytes_out: Int64 | None = None
    response_code: StrOrNumber | None = None
    data: str | None = None


class ProfileData(EventData):
    """``profile``: a sign-up, login, logout, update or delete of the user profile."""

    previous_mpid: Int64 | str | None = None
    current_mpid: Int64 | str | None = None
    profile_event_type: (
        Literal["signup", "login", "logout", "update", "delete", "unknown"] | None
    ) = None
    # The Python SDK's ProfileEvent sends these instead of the mpids.
    profile_name: str | None = None
    previous_profile_name: str | None = None


class UserAttributeChangeData(EventData):
    """``user_attribute_change``: a user attribute was set, changed or removed."""

    user_attribute_name: str | None = None
    new: UserAttributeValue = None
    old: UserAttributeValue = None
    deleted: LooseBool | None = None
    is_new_attribute: LooseBool | None = None


class UserIdentity(Model):
    """One identity in a ``user_identity_change`` event."""

    identity_type: str | None = None
    identity: str | None = None
    timestamp_unixtime_ms: Int64 | None = None
    created_this_batch: LooseBool | None = None


class UserIdentityChangeData(EventData):
    """``user_identity_change``: an identity was added, changed or removed."""

    new: UserIdentity | None = None
    old: UserIdentity | None = None


class Envelope(Model, tag_field="event_type"):
    """Base of the event envelopes: the subclass's ``tag`` is its ``event_type``."""


class CustomEvent(Envelope, tag="custom_event"):
    """A ``custom_event`` envelope."""

    data: CustomEventData


class CommerceEvent(Envelope, tag="commerce_event"):
    """A ``commerce_event`` envelope."""

    data: CommerceEventData


class SessionStart(Envelope, tag="session_start"):
    """A ``session_start`` envelope."""

    data: SessionStartData


class SessionEnd(Envelope, tag="session_end"):
    """A ``session_end`` envelope."""

    data: SessionEndData


class ScreenView(Envelope, tag="screen_view"):
    """A ``screen_view`` envelope."""

    data: ScreenViewData


class CrashReport(Envelope, tag="crash_report"):
    """A ``crash_report`` envelope."""

    data: CrashReportData


class OptOut(Envelope, tag="opt_out"):
    """An ``opt_out`` envelope."""

    data: OptOutData


class FirstRun(Envelope, tag="first_run"):
    """A ``first_run`` envelope."""

    data: FirstRunData


class ApplicationStateTransition(Envelope, tag="application_state_transition"):
    """An ``application_state_transition`` envelope."""

    data: ApplicationStateTransitionData


class PushRegistration(Envelope, tag="push_registration"):
    """A ``push_registration`` envelope."""

    data: PushRegistrationData


class PushMessage(Envelope, tag="push_message"):
    """A ``push_message`` envelope."""

    data: PushMessageData


class NetworkPerformance(Envelope, tag="network_performance"):
    """A ``network_performance`` envelope."""

    data: NetworkPerformanceData


class Breadcrumb(Envelope, tag="breadcrumb"):
    """A ``breadcrumb`` envelope."""

    data: BreadcrumbData


class Profile(Envelope, tag="profile"):
    """A ``profile`` envelope."""

    data: ProfileData


class UserAttributeChange(Envelope, tag="user_attribute_change"):
    """A ``user_attribute_change`` envelope."""

    data: UserAttributeChangeData


class UserIdentityChange(Envelope, tag="user_identity_change"):
    """A ``user_identity_change`` envelope."""

    data: UserIdentityChangeData


class Uninstall(Envelope, tag="uninstall"):
    """An ``uninstall`` envelope."""

    data: UninstallData


#: Any inbound event, decoded by its ``event_type`` tag.
Event = (
    CustomEvent
    | CommerceEvent
    | SessionStart
    | SessionEnd
    | ScreenView
    | CrashReport
    | OptOut
    | FirstRun
    | ApplicationStateTransition
    | PushRegistration
    | PushMessage
    | NetworkPerformance
    | Breadcrumb
    | Profile
    | UserAttributeChange
    | UserIdentityChange
    | Uninstall
)

#: Every ``event_type`` value Patchbay accepts.
EVENT_TYPES: tuple[str, ...] = tuple(str(cls.__struct_config__.tag) for cls in Event.__args__)


def event_type_of(event: Event) -> str:
    """The ``event_type`` of an inbound event."""
    return str(type(event).__struct_config__.tag)


def event_name_of(event: Event) -> str | None:
    """The name a name rule matches: a custom event's name or a screen view's screen name."""
    if isinstance(event, CustomEvent):
        return event.data.event_name
    if isinstance(event, ScreenView):
        return event.data.screen_name
    return None
