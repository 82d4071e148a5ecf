"""The hashes the Web SDK's kit filters hold, computed as the SDK computes them.

The SDK (``generateHash`` in its ``utils.ts``, used by ``KitFilterHelper``) lower-cases the
text and folds its UTF-16 code units into a signed 32-bit integer: ``h = (h << 5) - h + c``.
An event type filter holds the hash of the type's number (``"1"`` for Navigation); an event
name filter the hash of the type's number followed by the name; a screen name filter the
same for page views (type Unknown, 0); a user attribute filter the hash of the attribute's
name. User identity filters hold identity type numbers, not hashes.
"""

from __future__ import annotations

from typing import Final

#: Event types by the SDK's names (``mParticle.EventType``) and its commerce event types.
EVENT_TYPES: Final = {
    "Unknown": 0,
    "Navigation": 1,
    "Location": 2,
    "Search": 3,
    "Transaction": 4,
    "UserContent": 5,
    "UserPreference": 6,
    "Social": 7,
    "Other": 8,
    "Media": 9,
    "ProductAddToCart": 10,
    "ProductRemoveFromCart": 11,
    "ProductCheckout": 12,
    "ProductCheckoutOption": 13,
    "ProductClick": 14,
    "ProductViewDetail": 15,
    "ProductPurchase": 16,
    "ProductRefund": 17,
    "PromotionView": 18,
    "PromotionClick": 19,
    "ProductAddToWishlist": 20,
    "ProductRemoveFromWishlist": 21,
    "ProductImpression": 22,
}
#: The types of custom events (``logEvent``): a name excluded without a type is excluded
#: under each of them.
CUSTOM_EVENT_TYPES: Final = tuple(range(10))
#: Page views are logged with the type Unknown.
PAGE_VIEW_TYPE: Final = 0

#: User identity types by the SDK's names (``IdentityType.getIdentityType``).
IDENTITY_TYPES: Final = {
    "other": 0,
    "customerid": 1,
    "facebook": 2,
    "twitter": 3,
    "google": 4,
    "microsoft": 5,
    "yahoo": 6,
    "email": 7,
    "facebookcustomaudienceid": 9,
    **{f"other{n}": 8 + n for n in range(2, 11)},
    "mobile_number": 19,
    "phone_number_2": 20,
    "phone_number_3": 21,
}


def generate_hash(text: str) -> int:
    """The SDK's ``generateHash(text)``."""
    data = text.lower().encode("utf-16-le")
    value = 0
    for i in range(0, len(data), 2):
        unit = data[i] | data[i + 1] << 8
        value = ((value << 5) - value + unit) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def event_type_hash(event_type: int) -> int:
    """``KitFilterHelper.hashEventType``."""
    return generate_hash(str(event_type))


def event_name_hash(event_type: int, name: str) -> int:
    """``KitFilterHelper.hashEventName`` (screen names too, with :data:`PAGE_VIEW_TYPE`)."""
    return generate_hash(f"{event_type}{name}")


def user_attribute_hash(name: str) -> int:
    """``KitFilterHelper.hashUserAttribute``."""
    return generate_hash(name)
