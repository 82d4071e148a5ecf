"""Every closed vocabulary of the Firehose wire format, as ``StrEnum``s of the exact literals.

The Java SDK writes each enum with ``toString()`` (lower case) and matches it case-sensitively
when reading. Model fields that take one of these values are typed ``str`` (so a lenient parse
can keep an unknown literal) and carry the enum in their metadata; :mod:`.serialize` checks
them. A ``StrEnum`` member compares equal to its literal, so ``event.custom_event_type ==
CustomEventType.OTHER`` works whichever of the two the field holds.
"""

from __future__ import annotations

from enum import StrEnum

#: The Java SDK version this wire format matches (``Consts.SDK_VERSION``). It is the default
#: ``firehose_version`` of new messages and the ``sdk_version`` of registrations.
FIREHOSE_VERSION = "3.2.0"

#: The only CCPA purpose in practice (``ConsentState.DEFAULT_CCPA_CONSENT_PURPOSE``).
DEFAULT_CCPA_CONSENT_PURPOSE = "data_sale_opt_out"


class MessageType(StrEnum):
    """``type`` of a message (the discriminator of :data:`~.messages.Message`)."""

    MODULE_REGISTRATION_REQUEST = "module_registration_request"
    MODULE_REGISTRATION_RESPONSE = "module_registration_response"
    EVENT_PROCESSING_REQUEST = "event_processing_request"
    EVENT_PROCESSING_RESPONSE = "event_processing_response"
    AUDIENCE_SUBSCRIPTION_REQUEST = "audience_subscription_request"
    AUDIENCE_SUBSCRIPTION_RESPONSE = "audience_subscription_response"
    AUDIENCE_MEMBERSHIP_CHANGE_REQUEST = "audience_membership_change_request"
    AUDIENCE_MEMBERSHIP_CHANGE_RESPONSE = "audience_membership_change_response"
    DSR_PROCESSING_REQUEST = "dsr_processing_request"
    DSR_PROCESSING_RESPONSE = "dsr_processing_response"


class EventType(StrEnum):
    """``type`` of an event (the discriminator of :data:`~.events.Event`)."""

    SESSION_START = "session_start"
    SESSION_END = "session_end"
    CUSTOM_EVENT = "custom_event"
    SCREEN_VIEW = "screen_view"
    ERROR = "error"
    PRIVACY_SETTING_CHANGE = "privacy_setting_change"
    USER_ATTRIBUTE_CHANGE = "user_attribute_change"
    USER_IDENTITY_CHANGE = "user_identity_change"
    PUSH_SUBSCRIPTION = "push_subscription"
    APPLICATION_STATE_TRANSITION = "application_state_transition"
    PUSH_MESSAGE_RECEIPT = "push_message_receipt"
    PRODUCT_ACTION = "product_action"
    PROMOTION_ACTION = "promotion_action"
    IMPRESSION = "impression"
    ATTRIBUTION = "attribution"
    PUSH_MESSAGE_OPEN = "push_message_open"


class RuntimeEnvironmentType(StrEnum):
    """``type`` of a runtime environment; also the registration's supported runtimes."""

    UNKNOWN = "unknown"
    ANDROID = "android"
    IOS = "ios"
    TVOS = "tvos"
    MOBILEWEB = "mobileweb"
    ROKU = "roku"
    XBOX = "xbox"
    FIRETV = "firetv"
    ALEXA = "alexa"
    SMARTTV = "smarttv"


class SystemNotificationType(StrEnum):
    """``type`` of a system notification; also the registration's supported notifications."""

    GDPR_CONSENT_STATE = "gdpr_consent_state"
    CCPA_CONSENT_STATE = "ccpa_consent_state"


class SettingType(StrEnum):
    """``type`` of a registration setting."""

    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"


class AuthenticationType(StrEnum):
    """``type`` of an authentication configuration."""

    OAUTH2 = "oauth2"


class IdentityEncoding(StrEnum):
    """How an identity value is encoded. Hashes are of the trimmed, lower-cased value."""

    RAW = "raw"
    MD5 = "md5"
    SHA1 = "sha1"
    SHA256 = "sha256"


class UserIdentityType(StrEnum):
    """``type`` of a user identity."""

    OTHER = "other"
    CUSTOMER = "customer"
    FACEBOOK = "facebook"
    TWITTER = "twitter"
    GOOGLE = "google"
    MICROSOFT = "microsoft"
    YAHOO = "yahoo"
    EMAIL = "email"
    OTHER2 = "other2"
    OTHER3 = "other3"
    OTHER4 = "other4"
    OTHER5 = "other5"
    OTHER6 = "other6"
    OTHER7 = "other7"
    OTHER8 = "other8"
    OTHER9 = "other9"
    OTHER10 = "other10"
    MOBILE_NUMBER = "mobile_number"
    PHONE_NUMBER_2 = "phone_number_2"
    PHONE_NUMBER_3 = "phone_number_3"


class DeviceIdentityType(StrEnum):
    """``type`` of a device identity."""

    ANDROID_ID = "android_id"
    GOOGLE_ADVERTISING_ID = "google_advertising_id"
    IOS_ADVERTISING_ID = "ios_advertising_id"
    IOS_VENDOR_ID = "ios_vendor_id"
    GOOGLE_CLOUD_MESSAGING_TOKEN = "google_cloud_messaging_token"
    APPLE_PUSH_NOTIFICATION_TOKEN = "apple_push_notification_token"
    ROKU_ADVERTISING_ID = "roku_advertising_id"
    MICROSOFT_ADVERTISING_ID = "microsoft_advertising_id"
    MICROSOFT_PUBLISHER_ID = "microsoft_publisher_id"
    FIRE_ADVERTISING_ID = "fire_advertising_id"
    ROKU_PUBLISHER_ID = "roku_publisher_id"


class ChannelSourceType(StrEnum):
    """Known ``source_channel`` values (``Consts.ChannelSourceType``).

    Informative only: ``source_channel`` is a plain string in the Java SDK, so other values
    are accepted and never checked.
    """

    UNKNOWN = "unknown"
    NATIVE = "native"
    JAVASCRIPT = "javascript"
    PIXEL = "pixel"
    PARTNER = "partner"
    SERVER_TO_SERVER = "server_to_server"


class CustomEventType(StrEnum):
    """``custom_event_type`` of a custom event (there is no ``attribution``)."""

    UNKNOWN = "unknown"
    NAVIGATION = "navigation"
    LOCATION = "location"
    SEARCH = "search"
    TRANSACTION = "transaction"
    USER_CONTENT = "user_content"
    USER_PREFERENCE = "user_preference"
    SOCIAL = "social"
    OTHER = "other"
    MEDIA = "media"


class PrivacySetting(StrEnum):
    """``setting`` of a privacy setting change."""

    APP_DATA_COLLECTION = "app_data_collection"


class PushSubscriptionAction(StrEnum):
    """``action`` of a push subscription event."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


class ApplicationState(StrEnum):
    """``application_state`` of an application state transition."""

    INSTALL = "install"
    UPGRADE = "upgrade"
    INITIALIZE = "initialize"
    EXIT = "exit"
    BACKGROUND = "background"
    FOREGROUND = "foreground"


class ProductAction(StrEnum):
    """``action`` of a product action event.

    Note the spelling: ``add_to_wishlist`` but ``remove_from_wish_list``.
    """

    ADD_TO_WISHLIST = "add_to_wishlist"
    REMOVE_FROM_WISH_LIST = "remove_from_wish_list"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    CHECKOUT = "checkout"
    PURCHASE = "purchase"
    REFUND = "refund"
    CHECKOUT_OPTION = "checkout_option"
    CLICK = "click"
    VIEW_DETAIL = "view_detail"


class PromotionAction(StrEnum):
    """``action`` of a promotion action event."""

    UNKNOWN = "unknown"
    VIEW = "view"
    CLICK = "click"


class AttAuthorizationStatus(StrEnum):
    """``att_authorization_status`` (App Tracking Transparency) of an iOS/tvOS runtime."""

    AUTHORIZED = "authorized"
    DENIED = "denied"
    NOT_DETERMINED = "not_determined"
    RESTRICTED = "restricted"


class AudienceSubscriptionAction(StrEnum):
    """``action`` of an audience subscription request."""

    ADD = "add"
    UPDATE = "update"
    REMOVE = "remove"


class AudienceAction(StrEnum):
    """``action`` of one audience change in a membership change request."""

    ADD = "add"
    DELETE = "delete"
    ATTRIBUTE_UPDATE = "attribute_update"


class UserAttributeAction(StrEnum):
    """``action`` of a user attribute change inside an audience change."""

    UPSERT = "upsert"
    DELETE = "delete"


class DsrType(StrEnum):
    """``subject_request_type`` of a DSR, and the registration's ``supported_dsr_types``."""

    ERASURE = "erasure"


class RegulationType(StrEnum):
    """``regulation`` of a DSR."""

    UNKNOWN = "unknown"
    CCPA = "ccpa"
    GDPR = "gdpr"


class OpenDsrIdentityType(StrEnum):
    """Keys of a DSR's ``subject_identities``."""

    CONTROLLER_CUSTOMER_ID = "controller_customer_id"
    ANDROID_ADVERTISING_ID = "android_advertising_id"
    ANDROID_ID = "android_id"
    EMAIL = "email"
    FIRE_ADVERTISING_ID = "fire_advertising_id"
    IOS_ADVERTISING_ID = "ios_advertising_id"
    IOS_VENDOR_ID = "ios_vendor_id"
    MICROSOFT_ADVERTISING_ID = "microsoft_advertising_id"
    MICROSOFT_PUBLISHER_ID = "microsoft_publisher_id"
    ROKU_PUBLISHER_ID = "roku_publisher_id"
    ROKU_ADVERTISING_ID = "roku_advertising_id"


class OpenDsrIdentityEncoding(StrEnum):
    """``encoding`` of a DSR subject identity (md5/sha1/sha256 were removed upstream)."""

    RAW = "raw"


class OAuth2GrantType(StrEnum):
    """``grant_type`` of an OAuth2 authentication configuration."""

    AUTHORIZATION_CODE = "authorization_code"


class OAuth2AccessTokenType(StrEnum):
    """``access_token_type`` of an OAuth2 authentication configuration."""

    BEARER = "bearer"
    CUSTOM_HEADER = "custom_header"
