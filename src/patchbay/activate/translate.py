"""Translate a resolved batch into the Firehose ``event_processing_request`` of one output.

:func:`translate` is pure: the same batch, registration, settings and output always give the
same message, ids included, so a retry or a replay sends exactly what was sent before. The
message follows the wire format in docs/firehose.md; the choices made where the mapping is
not obvious are listed in docs/activate.md, "Translation decisions".

What the module receives is limited by its registration: only registered
event types and runtime environments, only registered identity types in their registered
encodings, only the fields its ``allow_*`` permissions unlock, and only values its SDK
version can read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec

from patchbay.activate.ids import event_id, message_id, session_id_of
from patchbay.activate.permissions import (
    USER_IDENTITY_TYPES,
    encode,
    meets_required,
    partner_identities,
    usable,
    user_identities,
)
from patchbay.activate.runtime import device_identity_values, runtime_environment, runtime_type
from patchbay.collect import events as inbound
from patchbay.collect.batch import Batch, ConsentPurpose
from patchbay.collect.events import EventData, GeoLocation
from patchbay.collect.fields import LooseBool, UserAttributeValue
from patchbay.firehose import (
    FIREHOSE_VERSION,
    Account,
    ApplicationStateTransitionEvent,
    AttributionEvent,
    CCPAConsent,
    ConsentState,
    CustomEvent,
    ErrorEvent,
    Event,
    EventProcessingRegistration,
    EventProcessingRequest,
    GDPRConsent,
    Impression,
    ImpressionEvent,
    Location,
    ModuleRegistrationResponse,
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
    ScreenViewEvent,
    SessionEndEvent,
    SessionStartEvent,
    UserAttributeChangeEvent,
    UserIdentity,
    UserIdentityChangeEvent,
)
from patchbay.firehose.enums import (
    ApplicationState,
    CustomEventType,
    EventType,
    PrivacySetting,
    ProductAction,
    PushSubscriptionAction,
)
from patchbay.resolve.stage import IDSYNC_CHANNEL, ResolvedBatch

__all__ = ["MAX_NAME_CHARS", "translate"]

#: Custom event names are cut to this length (the inbound limit).
MAX_NAME_CHARS: Final = 256

_HOUR_MS: Final = 3_600_000
_INT32: Final = (-(2**31), 2**31 - 1)

_CUSTOM_TYPES: Final = frozenset(m.value for m in CustomEventType)

#: Inbound ``product_action.action`` → Firehose literal (``unknown`` has none).
_PRODUCT_ACTIONS: Final[Mapping[str, str]] = {
    **{m.value: m.value for m in ProductAction},
    "remove_from_wishlist": ProductAction.REMOVE_FROM_WISH_LIST,
}

#: Inbound ``application_transition_type`` → Firehose ``application_state``
#: (``application_initialized`` is refined by ``is_first_run`` / ``is_upgrade``).
_APP_STATES: Final[Mapping[str, str]] = {
    "application_initialized": ApplicationState.INITIALIZE,
    "application_exit": ApplicationState.EXIT,
    "application_background": ApplicationState.BACKGROUND,
    "application_foreground": ApplicationState.FOREGROUND,
}

_encode_json = msgspec.json.Encoder().encode


def translate(
    resolved: ResolvedBatch,
    registration: ModuleRegistrationResponse,
    account_settings: dict[str, str],
    connection_settings: dict[str, str],
    output_id: str,
    *,
    account_id: int = 0,
    now_ms: int | None = None,
    integration_key: str | None = None,
    platform_fields: PlatformFields | None = None,
) -> EventProcessingRequest | None:
    """The request that carries ``resolved`` to output ``output_id``, or ``None`` when the
    output must not receive anything for this batch.

    ``None`` when: the batch is historical or an IDSync record; the module has no event
    processing registration; the batch's runtime is not registered; a ``required`` identity
    rule fails; or no event is left after filtering and the module did not ask for eventless
    batches.

    ``account_settings`` and ``connection_settings`` are the output's and the connection's
    setting values; they are merged (the connection's win) into ``account.account_settings``.
    Keyword options: ``account_id`` (``account.account_id``); ``now_ms``, the reference time
    for the request's ``timestamp_ms`` and for ``max_data_age_hours`` (default: when the
    batch was received, so that the translation never depends on when it runs);
    ``integration_key``, the key of this module in the batch's ``integration_attributes``
    (none are sent without it); ``platform_fields``, the platform's account, workspace and
    input names (the app and data plan fields come from the batch).
    """
    stored, batch = resolved.stored, resolved.batch
    if stored.historical or stored.channel == IDSYNC_CHANNEL or _historical(batch):
        return None
    registered = registration.event_processing_registration
    if registered is None:
        return None
    permissions = registration.permissions or Permissions()
    kind = runtime_type(batch)
    if kind not in registered.supported_runtime_environments:
        return None
    user_values = _user_identity_values(batch)
    device_values = device_identity_values(batch, kind)
    partner_values = {k: v for k, v in (batch.partner_identities or {}).items() if v is not None}
    if not meets_required(permissions, user_values, device_values, partner_values):
        return None

    reference_ms = stored.received_at_ms if now_ms is None else now_ms
    events = _Events(
        output_id=output_id,
        batch_id=stored.batch_id,
        received_at_ms=stored.received_at_ms,
        permissions=permissions,
        registered=registered,
        oldest_ms=_oldest_ms(registered, reference_ms),
        batch=batch,
    ).translate(batch.events or [])
    if not events and not permissions.allow_eventless_batches:
        return None

    settings: dict[str, str | None] = {**account_settings, **connection_settings}
    request = EventProcessingRequest(
        id=message_id(output_id, stored.batch_id),
        timestamp_ms=reference_ms,
        firehose_version=registration.sdk_version or FIREHOSE_VERSION,
        source_id=batch.source_request_id,
        account=Account(account_id=account_id, account_settings=settings),
        partner_identities=partner_identities(partner_values, permissions),
        user_identities=user_identities(user_values, permissions),
        runtime_environment=runtime_environment(batch, kind, stored.ip, permissions),
        events=events,
        source_channel=stored.channel,
        system_notifications=[],
    )
    if integration_key is not None:
        attributes = (batch.integration_attributes or {}).get(integration_key) or {}
        request.integration_attributes = {k: v for k, v in attributes.items() if v is not None}
    if permissions.allow_user_attributes:
        request.user_attributes, request.user_attribute_lists = user_attribute_texts(
            batch.user_attributes or {}
        )
    if permissions.allow_access_device_application_stamp:
        request.device_application_stamp = batch.mp_deviceid
    if permissions.allow_consent_state:
        request.consent_state = _consent_state(batch)
    if permissions.allow_access_mpid:
        request.mpid = str(resolved.mpid)
    if permissions.allow_platform_fields:
        request.platform_fields = _platform_fields(batch, platform_fields)
    return request


def _historical(batch: Batch) -> bool:
    return batch.source_info is not None and _bool(batch.source_info.is_historical) is True


def _oldest_ms(registered: EventProcessingRegistration, reference_ms: int) -> int | None:
    hours = registered.max_data_age_hours
    return None if hours < 0 else reference_ms - hours * _HOUR_MS


def _user_identity_values(batch: Batch) -> dict[str, str]:
    if batch.user_identities is None:
        return {}
    return {
        USER_IDENTITY_TYPES[key]: value
        for key, value in batch.user_identities.identities().items()
        if key in USER_IDENTITY_TYPES
    }


# -- values ---------------------------------------------------------------------------------


def _bool(value: LooseBool | None) -> bool | None:
    """An inbound boolean (``true``/``false`` or their text); ``None`` when unset or unclear."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _text(value: Any) -> str | None:
    """A map value as the string Firehose needs; ``None`` for null.

    Booleans become ``true``/``false`` (what Jackson makes of a JSON boolean), integral
    numbers lose the ``.0`` their float decoding added, arrays and objects become JSON text.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value) if math.isfinite(value) else None
    return _encode_json(value).decode()


def _texts(values: Mapping[str, Any] | None) -> dict[str, str]:
    return {k: t for k, v in (values or {}).items() if (t := _text(v)) is not None}


def _decimal(value: float | str | None) -> Decimal | None:
    """An amount as a ``Decimal``: integral floats without ``.0``, numeric strings parsed,
    anything else (text, NaN, infinity) dropped."""
    if value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return (
            Decimal(int(value))
            if value.is_integer() and abs(value) < 2**53
            else Decimal(repr(value))
        )
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _int32(value: int | None) -> int | None:
    return value if value is not None and _INT32[0] <= value <= _INT32[1] else None


def _coordinate(value: float | str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _location(location: GeoLocation | None) -> Location | None:
    if location is None:
        return None
    latitude, longitude = _coordinate(location.latitude), _coordinate(location.longitude)
    if latitude is None or longitude is None:
        return None
    accuracy = location.accuracy
    if accuracy is None or not math.isfinite(accuracy):
        accuracy = 0.0
    return Location(latitude=latitude, longitude=longitude, accuracy=accuracy)


def user_attribute_texts(
    attributes: Mapping[str, UserAttributeValue],
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """User attributes as Firehose carries them: scalars as text, lists of text apart."""
    scalars: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for key, value in attributes.items():
        if isinstance(value, list):
            lists[key] = [item for item in value if item is not None]
        elif (text := _text(value)) is not None:
            scalars[key] = text
    return scalars, lists


def _consent(purpose: ConsentPurpose | None) -> dict[str, Any] | None:
    if purpose is None:
        return None
    consented = _bool(purpose.consented)
    if consented is None:
        return None
    return {
        "consented": consented,
        "document": purpose.document,
        "timestamp_unixtime_ms": purpose.timestamp_unixtime_ms,
        "location": purpose.location,
        "hardware_id": purpose.hardware_id,
    }


def _consent_state(batch: Batch) -> ConsentState | None:
    state = batch.consent_state
    if state is None:
        return None
    gdpr = {
        name: GDPRConsent(**fields)
        for name, purpose in (state.gdpr or {}).items()
        if (fields := _consent(purpose)) is not None
    }
    ccpa = {
        name: CCPAConsent(**fields)
        for name, purpose in (state.ccpa or {}).items()
        if (fields := _consent(purpose)) is not None
    }
    if not gdpr and not ccpa:
        return None
    return ConsentState(gdpr_consent_state=gdpr, ccpa_consent_state=ccpa)


def _platform_fields(batch: Batch, given: PlatformFields | None) -> PlatformFields:
    fields = msgspec.structs.replace(given) if given is not None else PlatformFields()
    app = batch.application_info
    if app is not None:
        fields.app_name = app.application_name or fields.app_name
        fields.app_version = app.application_version or fields.app_version
    plan = batch.context.data_plan if batch.context is not None else None
    if plan is not None:
        fields.dataplan_id = plan.plan_id or fields.dataplan_id
        version = _int32(plan.plan_version)
        fields.dataplan_version = version if version is not None else fields.dataplan_version
    return fields


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Events:
    """Translates the events of one batch for one output."""

    output_id: str
    batch_id: str
    received_at_ms: int
    permissions: Permissions
    registered: EventProcessingRegistration
    oldest_ms: int | None
    batch: Batch

    def translate(self, events: Iterable[inbound.Event]) -> list[Event]:
        supported = set(self.registered.supported_event_types)
        out: list[Event] = []
        for index, event in enumerate(events):
            if self.oldest_ms is not None and self._timestamp(event.data) < self.oldest_ms:
                continue
            # the tag, not ``e.type``: that builds an EventType for every event
            out.extend(
                e for e in self._convert(index, event) if type(e).__struct_config__.tag in supported
            )
        return out

    # common fields -------------------------------------------------------------------------

    def _timestamp(self, data: EventData) -> int:
        ts = data.timestamp_unixtime_ms
        return self.received_at_ms if ts is None else ts

    def _common(self, index: int, part: EventType, data: EventData) -> dict[str, Any]:
        session_id = data.session_id
        if session_id is None and data.session_uuid:
            session_id = session_id_of(data.session_uuid)
        common: dict[str, Any] = {
            "id": event_id(self.output_id, self.batch_id, index, part),
            "timestamp_ms": self._timestamp(data),
            "source_id": data.source_message_id,
            "session_id": session_id,
        }
        if self.permissions.allow_access_location:
            context = self.batch.context
            common["location"] = _location(data.location) or _location(
                context.location if context is not None else None
            )
        return common

    # dispatch ------------------------------------------------------------------------------

    def _convert(self, i: int, event: inbound.Event) -> list[Event]:
        match event:
            case inbound.CustomEvent(data=data):
                return [self._custom(i, data)]
            case inbound.CommerceEvent(data=data):
                return self._commerce(i, data)
            case inbound.SessionStart(data=data):
                return [SessionStartEvent(**self._common(i, EventType.SESSION_START, data))]
            case inbound.SessionEnd(data=data):
                return [
                    SessionEndEvent(
                        **self._common(i, EventType.SESSION_END, data),
                        session_length_ms=data.session_duration_ms or 0,
                    )
                ]
            case inbound.ScreenView(data=data):
                return self._screen_view(i, data)
            case inbound.CrashReport(data=data):
                return [self._error(i, data)]
            case inbound.OptOut(data=data):
                return [
                    PrivacySettingChangeEvent(
                        **self._common(i, EventType.PRIVACY_SETTING_CHANGE, data),
                        setting=PrivacySetting.APP_DATA_COLLECTION,
                        is_enabled=_bool(data.is_opted_out) is not True,
                    )
                ]
            case inbound.ApplicationStateTransition(data=data):
                return self._state_transition(i, data)
            case inbound.PushRegistration(data=data):
                action = (
                    PushSubscriptionAction.UNSUBSCRIBE
                    if _bool(data.register) is False
                    else PushSubscriptionAction.SUBSCRIBE
                )
                return [
                    PushSubscriptionEvent(
                        **self._common(i, EventType.PUSH_SUBSCRIPTION, data),
                        action=action,
                        token=data.registration_token,
                    )
                ]
            case inbound.PushMessage(data=data):
                return self._push_message(i, data)
            case inbound.UserAttributeChange(data=data):
                return self._attribute_change(i, data)
            case inbound.UserIdentityChange(data=data):
                return self._identity_change(i, data)
            case _:  # breadcrumb, network_performance, first_run, uninstall, profile
                return []

    # converters ----------------------------------------------------------------------------

    def _custom(self, i: int, data: inbound.CustomEventData) -> Event:
        name = data.event_name[:MAX_NAME_CHARS] if data.event_name is not None else None
        if data.custom_event_type == "attribution":
            attributes = _texts(data.custom_attributes)
            folded = {k.lower(): v for k, v in attributes.items()}
            source = self.batch.source_info
            info = self.batch.attribution_info
            partner = (source.partner if source is not None else None) or (
                info.service_provider if info is not None else None
            )
            return AttributionEvent(
                **self._common(i, EventType.ATTRIBUTION, data),
                name=name,
                partner_name=partner,
                publisher_name=folded.get("publisher"),
                campaign_name=folded.get("campaign"),
                attributes=attributes,
            )
        kind = data.custom_event_type
        return CustomEvent(
            **self._common(i, EventType.CUSTOM_EVENT, data),
            name=name,
            custom_event_type=kind if kind in _CUSTOM_TYPES else CustomEventType.OTHER,
            attributes=_texts(data.custom_attributes),
            custom_flags=_texts(data.custom_flags),
        )

    def _commerce(self, i: int, data: inbound.CommerceEventData) -> list[Event]:
        attributes = _texts(data.custom_attributes)
        flags = _texts(data.custom_flags)
        out: list[Event] = []
        product_action = data.product_action
        action = _PRODUCT_ACTIONS.get(product_action.action or "") if product_action else None
        if product_action is not None and action is not None:
            out.append(
                ProductActionEvent(
                    **self._common(i, EventType.PRODUCT_ACTION, data),
                    action=action,
                    transaction_id=product_action.transaction_id,
                    affiliation=product_action.affiliation,
                    total_amount=_decimal(product_action.total_amount),
                    tax_amount=_decimal(product_action.tax_amount),
                    shipping_amount=_decimal(product_action.shipping_amount),
                    currency_code=data.currency_code,
                    coupon_code=product_action.coupon_code,
                    products=_products(product_action.products),
                    attributes=attributes,
                    custom_flags=flags,
                )
            )
        promotion = data.promotion_action
        if promotion is not None and promotion.action is not None:
            out.append(
                PromotionActionEvent(
                    **self._common(i, EventType.PROMOTION_ACTION, data),
                    action=promotion.action,
                    promotions=[
                        Promotion(id=p.id, name=p.name, creative=p.creative, position=p.position)
                        for p in promotion.promotions or []
                    ],
                    attributes=attributes,
                    custom_flags=flags,
                )
            )
        if data.product_impressions:
            out.append(
                ImpressionEvent(
                    **self._common(i, EventType.IMPRESSION, data),
                    impressions=[
                        Impression(
                            impression_list_name=imp.product_impression_list,
                            products=_products(imp.products),
                        )
                        for imp in data.product_impressions
                    ],
                    attributes=attributes,
                    custom_flags=flags,
                )
            )
        return out

    def _screen_view(self, i: int, data: inbound.ScreenViewData) -> list[Event]:
        if not data.screen_name or data.activity_type == "activity_stopped":
            return []
        return [
            ScreenViewEvent(
                **self._common(i, EventType.SCREEN_VIEW, data),
                screen_name=data.screen_name,
                attributes=_texts(data.custom_attributes),
                custom_flags=_texts(data.custom_flags),
            )
        ]

    def _error(self, i: int, data: inbound.CrashReportData) -> Event:
        breadcrumbs: list[str] = []
        for crumb in data.breadcrumbs or []:
            label = crumb if isinstance(crumb, str) else crumb.label if crumb else None
            if label:
                breadcrumbs.append(label)
        return ErrorEvent(
            **self._common(i, EventType.ERROR, data),
            message=data.message if data.message is not None else data.class_name,
            is_crash=(data.severity or "").strip().lower() == "fatal",
            stack_trace=data.stack_trace,
            breadcrumbs=breadcrumbs,
            attributes=_texts(data.custom_attributes),
        )

    def _state_transition(
        self, i: int, data: inbound.ApplicationStateTransitionData
    ) -> list[Event]:
        state = _APP_STATES.get(data.application_transition_type or "")
        if state is None:
            return []
        if state == ApplicationState.INITIALIZE:
            if _bool(data.is_first_run):
                state = ApplicationState.INSTALL
            elif _bool(data.is_upgrade):
                state = ApplicationState.UPGRADE
        return [
            ApplicationStateTransitionEvent(
                **self._common(i, EventType.APPLICATION_STATE_TRANSITION, data),
                application_state=state,
                launch_referral=data.launch_referral,
            )
        ]

    def _push_message(self, i: int, data: inbound.PushMessageData) -> list[Event]:
        if data.push_message_type not in ("received", "action"):
            return []
        provider = self.registered.push_messaging_provider_id
        if provider and not _payload_has(data.push_notification_payload, provider):
            return []
        if data.push_message_type == "received":
            return [
                PushMessageReceiptEvent(
                    **self._common(i, EventType.PUSH_MESSAGE_RECEIPT, data),
                    payload=data.push_notification_payload,
                )
            ]
        return [
            PushMessageOpenEvent(
                **self._common(i, EventType.PUSH_MESSAGE_OPEN, data),
                payload=data.push_notification_payload,
            )
        ]

    def _attribute_change(self, i: int, data: inbound.UserAttributeChangeData) -> list[Event]:
        name = data.user_attribute_name
        if not self.permissions.allow_user_attributes or not name:
            return []
        common = self._common(i, EventType.USER_ATTRIBUTE_CHANGE, data)
        if _bool(data.deleted):
            return [UserAttributeChangeEvent(**common, removed={name: _attribute(data.old)})]
        return [UserAttributeChangeEvent(**common, added={name: _attribute(data.new)})]

    def _identity_change(self, i: int, data: inbound.UserIdentityChangeData) -> list[Event]:
        added = self._change_side(data.new)
        removed = self._change_side(data.old)
        if not added and not removed:
            return []
        return [
            UserIdentityChangeEvent(
                **self._common(i, EventType.USER_IDENTITY_CHANGE, data),
                added=added,
                removed=removed,
            )
        ]

    def _change_side(self, side: inbound.UserIdentity | None) -> list[UserIdentity]:
        if side is None or side.identity is None or not usable(side.identity):
            return []
        kind = USER_IDENTITY_TYPES.get((side.identity_type or "").strip().lower())
        out: list[UserIdentity] = []
        for permission in self.permissions.user_identities:
            if permission.type != kind:
                continue
            value = encode(side.identity, permission.encoding)
            if value is not None:
                out.append(UserIdentity(type=kind, encoding=permission.encoding, value=value))
        return out


def _attribute(value: UserAttributeValue) -> str:
    """A user attribute value inside a change event: lists as JSON text, null as ``""``."""
    if isinstance(value, list):
        return json.dumps([v for v in value if v is not None], ensure_ascii=False)
    return _text(value) or ""


def _products(products: list[inbound.Product] | None) -> list[Product]:
    return [
        Product(
            id=p.id,
            name=p.name,
            brand=p.brand,
            category=p.category,
            variant=p.variant,
            position=_int32(p.position) or 0,
            price=_decimal(p.price),
            quantity=_decimal(p.quantity),
            coupon_code=p.coupon_code,
            total_amount=_decimal(p.total_product_amount),
            attributes=_texts(p.custom_attributes),
        )
        for p in products or []
    ]


def _payload_has(payload: str | None, provider: str) -> bool:
    """Whether a push payload (JSON text) has ``provider`` as a top-level key."""
    if not payload:
        return False
    try:
        decoded = json.loads(payload)
    except ValueError:
        return False
    return isinstance(decoded, dict) and provider in decoded
