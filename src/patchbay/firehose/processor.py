"""The partner SDK: :class:`MessageProcessor`, the Python counterpart of the Java SDK's
``com.mparticle.sdk.MessageProcessor``.

A partner subclasses it, supplies :meth:`~MessageProcessor.registration` and overrides the
hooks it needs; an adapter (:mod:`.lambda_handler`, :mod:`.asgi`) carries the messages::

    class MyPartner(MessageProcessor):
        def registration(self) -> ModuleRegistrationResponse:
            return ModuleRegistrationResponse(name="My Partner", version="1.0", ...)

        def process_custom_event(self, event: CustomEvent) -> None:
            api_key = self.settings.text("apiKey")  # checked against the registration
            ...

:meth:`MessageProcessor.process` takes one request (a parsed message, JSON text or a decoded
JSON object) and returns its response. What it does, per request type:

* ``module_registration_request``: :meth:`~MessageProcessor.registration`'s answer (built
  once, sent with a fresh ``id``/``timestamp_ms``).
* ``event_processing_request``: by default each system notification, then each event, gets
  its request attached (``event.request``) and goes to its hook (``process_custom_event``,
  ... ; ``process_gdpr_consent_state_notification``, ...); the answer is an empty
  :class:`~.messages.EventProcessingResponse`.
* ``audience_subscription_request``, ``audience_membership_change_request``,
  ``dsr_processing_request``: empty responses by default.
* Verification requests (an event processing request without events, an audience membership
  change without user profiles) are answered with an empty response
  without calling any hook.

Errors leave :meth:`~MessageProcessor.process` as a :class:`ProcessorError` that carries the
HTTP status the adapters answer with: :class:`InvalidMessageError` (400) for input that is not
a request, :class:`InvalidSettingsError` (400) for account settings that are missing or
malformed, :class:`HandlerError` (500) for any other exception of the partner's code. A
partner may raise :class:`ProcessorError` itself with another status (e.g. 503 to be retried).

Like the rest of :mod:`patchbay.firehose`, this module needs msgspec and the standard library
only.
"""

from __future__ import annotations

import contextvars
import logging
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar, Final, cast, overload

import msgspec

from patchbay.errors import PatchbayError
from patchbay.firehose._base import now_ms
from patchbay.firehose.audience import Audience
from patchbay.firehose.consent import (
    BaseSystemNotification,
    CCPAConsentStateNotification,
    GDPRConsentStateNotification,
)
from patchbay.firehose.enums import MessageType
from patchbay.firehose.errors import FirehoseError, SettingError
from patchbay.firehose.events import (
    ApplicationStateTransitionEvent,
    AttributionEvent,
    BaseEvent,
    CustomEvent,
    ErrorEvent,
    ImpressionEvent,
    PrivacySettingChangeEvent,
    ProductActionEvent,
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
from patchbay.firehose.serialize import parse
from patchbay.firehose.settings import (
    BooleanSetting,
    FloatSetting,
    IntegerSetting,
    Setting,
    TextSetting,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- errors


class ProcessorError(PatchbayError):
    """A request could not be processed. ``status`` is the HTTP status an adapter answers
    with and ``code`` a short machine-readable name; :meth:`to_dict` is the JSON error body.

    Raise it from a hook to choose the status yourself (e.g. ``status=503`` for a temporary
    failure the platform should retry).
    """

    status: int = 500
    code: str = "processing_error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON object: ``{"error": code, "message": message}``."""
        return {"error": self.code, "message": self.message}


class InvalidMessageError(ProcessorError):
    """The input is not JSON, not a known message, or not a valid one (400)."""

    status = 400
    code = "invalid_message"


class UnsupportedMessageError(InvalidMessageError):
    """A valid message that is not a request a partner answers, e.g. a response (400)."""

    code = "unsupported_message"


class InvalidSettingsError(ProcessorError, SettingError):
    """An account or audience setting is missing while required, or does not hold a value
    of its registered type (400: resending the same request cannot succeed). Also a
    :class:`~.errors.SettingError`, as raised by the ``Account.get_*_setting`` helpers."""

    status = 400
    code = "invalid_settings"


class HandlerError(ProcessorError):
    """The partner's code raised; the original exception is ``__cause__`` (500)."""

    status = 500
    code = "processing_failed"


class UnregisteredSettingError(PatchbayError, LookupError):
    """A setting was read that the registration does not declare for this kind of message,
    or read with the accessor of another type: a bug in the partner's code (so a 500)."""


# --------------------------------------------------------------------------- settings

#: A setting's value as its registered type makes it.
SettingValue = str | int | float | bool | None

_SETTING_KIND: Final[dict[type[Any], str]] = {
    TextSetting: "text",
    IntegerSetting: "integer",
    FloatSetting: "float",
    BooleanSetting: "boolean",
}


class Settings:
    """Typed, validated access to the setting values of one request, checked against the
    settings the partner registered for that kind of message.

    ``values`` are the strings the platform sent (``account.account_settings`` or an
    audience's ``audience_subscription_settings``); ``registered`` the declared settings.
    A missing value (absent, ``null`` or ``""``) gives the registered default, or raises
    :class:`InvalidSettingsError` when the setting is ``required``. A value that does not
    parse as its type, or is outside ``min_value``/``max_value``, raises it too. Reading a
    setting that is not registered raises :class:`UnregisteredSettingError`.
    Confidential values never appear in error messages.
    """

    def __init__(
        self,
        values: Mapping[str, str | None],
        registered: Sequence[Setting],
        scope: str = "account",
    ) -> None:
        self.values = values
        self.registered: dict[str, Setting] = {setting.id: setting for setting in registered}
        self.scope = scope

    def __repr__(self) -> str:
        return f"Settings(scope={self.scope!r}, registered={sorted(self.registered)!r})"

    def __contains__(self, setting_id: object) -> bool:
        return setting_id in self.registered

    # -- typed accessors

    def text(self, setting_id: str) -> str:
        """A text setting; its default, or ``""``, when it is optional and unset."""
        self._setting(setting_id, TextSetting)
        value = self.value(setting_id)
        if value is None:
            return ""
        assert isinstance(value, str)
        return value

    @overload
    def integer(self, setting_id: str) -> int | None: ...
    @overload
    def integer(self, setting_id: str, default: int) -> int: ...
    def integer(self, setting_id: str, default: int | None = None) -> int | None:
        """An integer setting; its registered default, else ``default``, when unset."""
        self._setting(setting_id, IntegerSetting)
        value = self.value(setting_id)
        if value is None:
            return default
        assert isinstance(value, int)
        return value

    @overload
    def number(self, setting_id: str) -> float | None: ...
    @overload
    def number(self, setting_id: str, default: float) -> float: ...
    def number(self, setting_id: str, default: float | None = None) -> float | None:
        """A float (or integer) setting as a float; its default, else ``default``, when
        unset."""
        self._setting(setting_id, FloatSetting, IntegerSetting)
        value = self.value(setting_id)
        if value is None:
            return default
        assert isinstance(value, int | float)
        return float(value)

    def boolean(self, setting_id: str) -> bool:
        """A boolean setting: ``true``/``false`` in any case (the platform has sent
        ``"True"``); its registered ``default_value`` when unset."""
        self._setting(setting_id, BooleanSetting)
        value = self.value(setting_id)
        assert isinstance(value, bool)
        return value

    def value(self, setting_id: str) -> SettingValue:
        """The setting's value as its registered type: ``str``, ``int``, ``float`` or
        ``bool``; ``None`` for an optional text or number setting without a default."""
        setting = self._setting(setting_id)
        raw = self.values.get(setting_id)
        if raw is None or raw == "":
            return self._default(setting)
        if isinstance(setting, TextSetting):
            return raw
        if isinstance(setting, BooleanSetting):
            lowered = raw.strip().lower()
            if lowered not in ("true", "false"):
                raise InvalidSettingsError(
                    f"The {self._name(setting)} must be true or false, got {raw!r}."
                )
            return lowered == "true"
        number: int | float
        try:
            number = int(raw.strip()) if isinstance(setting, IntegerSetting) else float(raw)
        except ValueError:
            kind = "an integer" if isinstance(setting, IntegerSetting) else "a number"
            raise InvalidSettingsError(
                f"The {self._name(setting)} must be {kind}, got {raw!r}."
            ) from None
        if not math.isfinite(number):
            raise InvalidSettingsError(f"The {self._name(setting)} must be finite, got {raw!r}.")
        if setting.min_value is not None and number < setting.min_value:
            raise InvalidSettingsError(
                f"The {self._name(setting)} must be at least {setting.min_value}, got {raw!r}."
            )
        if setting.max_value is not None and number > setting.max_value:
            raise InvalidSettingsError(
                f"The {self._name(setting)} must be at most {setting.max_value}, got {raw!r}."
            )
        return number

    def __getitem__(self, setting_id: str) -> SettingValue:
        return self.value(setting_id)

    def as_dict(self) -> dict[str, SettingValue]:
        """Every registered setting's value (raises on the first invalid one)."""
        return {setting_id: self.value(setting_id) for setting_id in self.registered}

    def problems(self) -> list[str]:
        """What is wrong with the values: one message per missing or invalid setting."""
        found = []
        for setting_id in self.registered:
            try:
                self.value(setting_id)
            except InvalidSettingsError as exc:
                found.append(exc.message)
        return found

    def validate(self) -> None:
        """Check every registered setting at once; :class:`InvalidSettingsError` lists all
        the problems."""
        found = self.problems()
        if found:
            raise InvalidSettingsError(" ".join(found))

    # -- helpers

    def _setting(self, setting_id: str, *kinds: type[Any]) -> Setting:
        setting = self.registered.get(setting_id)
        if setting is None:
            known = ", ".join(repr(s) for s in self.registered) or "none"
            raise UnregisteredSettingError(
                f"{setting_id!r} is not a registered {self.scope} setting (registered: {known})."
            )
        if kinds and not isinstance(setting, kinds):
            wanted = " or ".join(_SETTING_KIND[k] for k in kinds)
            raise UnregisteredSettingError(
                f"The {self.scope} setting {setting_id!r} is registered as "
                f"{_SETTING_KIND[type(setting)]}, not {wanted}."
            )
        return setting

    def _name(self, setting: Setting) -> str:
        return f"{self.scope} setting {setting.id!r} ({setting.name})"

    def _default(self, setting: Setting) -> SettingValue:
        if isinstance(setting, BooleanSetting):
            return setting.default_value
        if setting.required:
            raise InvalidSettingsError(f"The required {self._name(setting)} is missing.")
        return setting.default_value


# --------------------------------------------------------------------------- processor

#: The request being processed (per thread / task), for :attr:`MessageProcessor.settings`.
_CURRENT: Final[contextvars.ContextVar[BaseMessage | None]] = contextvars.ContextVar(
    "patchbay_firehose_current_request", default=None
)

#: Each event class and the name of its hook.
EVENT_HOOKS: Final[dict[type[BaseEvent], str]] = {
    SessionStartEvent: "process_session_start_event",
    SessionEndEvent: "process_session_end_event",
    CustomEvent: "process_custom_event",
    ScreenViewEvent: "process_screen_view_event",
    ErrorEvent: "process_error_event",
    PrivacySettingChangeEvent: "process_privacy_setting_change_event",
    UserAttributeChangeEvent: "process_user_attribute_change_event",
    UserIdentityChangeEvent: "process_user_identity_change_event",
    PushSubscriptionEvent: "process_push_subscription_event",
    ApplicationStateTransitionEvent: "process_application_state_transition_event",
    PushMessageReceiptEvent: "process_push_message_receipt_event",
    PushMessageOpenEvent: "process_push_message_open_event",
    ProductActionEvent: "process_product_action_event",
    PromotionActionEvent: "process_promotion_action_event",
    ImpressionEvent: "process_impression_event",
    AttributionEvent: "process_attribution_event",
}

#: Each system notification class and the name of its hook.
NOTIFICATION_HOOKS: Final[dict[type[BaseSystemNotification], str]] = {
    GDPRConsentStateNotification: "process_gdpr_consent_state_notification",
    CCPAConsentStateNotification: "process_ccpa_consent_state_notification",
}

#: Each request type, the name of its handler and the response type it must return.
REQUEST_HANDLERS: Final[dict[type[BaseMessage], tuple[str, type[BaseMessage]]]] = {
    ModuleRegistrationRequest: ("process_module_registration_request", ModuleRegistrationResponse),
    EventProcessingRequest: ("process_event_processing_request", EventProcessingResponse),
    AudienceSubscriptionRequest: (
        "process_audience_subscription_request",
        AudienceSubscriptionResponse,
    ),
    AudienceMembershipChangeRequest: (
        "process_audience_membership_change_request",
        AudienceMembershipChangeResponse,
    ),
    DsrProcessingRequest: ("process_dsr_processing_request", DsrProcessingResponse),
}

_REQUEST_TYPES: Final = tuple(str(cls.__struct_config__.tag) for cls in REQUEST_HANDLERS)

#: Raw input :meth:`MessageProcessor.process` parses itself.
RawMessage = bytes | bytearray | memoryview | str | Mapping[str, Any]


class MessageProcessor:
    """Base class of a Firehose partner: one hook per request type and per event type.

    Subclasses must implement :meth:`registration`; every other hook has a default. The
    processor is shared by all requests (and, behind the ASGI adapter, by several threads):
    keep per-request state in locals, not on ``self``.
    """

    #: Parse unknown enum literals (e.g. from a newer platform) as plain strings instead of
    #: rejecting the request with a 400.
    lenient: ClassVar[bool] = False

    # -- what a subclass supplies

    def registration(self) -> ModuleRegistrationResponse:
        """The partner's registration: name, version, permissions and the per-kind
        registrations with their settings. Called once; its settings are what
        :attr:`settings` checks values against. Every partner must implement it (the Java
        SDK's one abstract method)."""
        raise NotImplementedError(f"{type(self).__name__} must implement registration()")

    @cached_property
    def registered(self) -> ModuleRegistrationResponse:
        """:meth:`registration`, built once."""
        registration = self.registration()
        if not isinstance(registration, ModuleRegistrationResponse):
            raise TypeError(
                f"registration() returned {type(registration).__name__}; "
                "expected ModuleRegistrationResponse"
            )
        return registration

    # -- the entry point

    def parse(self, data: RawMessage) -> Message:
        """Parse a message (:class:`InvalidMessageError` if it is not one)."""
        if not isinstance(data, bytes | bytearray | memoryview | str | Mapping):
            raise InvalidMessageError(f"Expected a JSON object, got {type(data).__name__}")
        try:
            return parse(data, lenient=self.lenient)
        except FirehoseError as exc:
            raise InvalidMessageError(str(exc)) from None

    def process(self, message: Message | RawMessage) -> Message:
        """Answer one request: the response message, or a :class:`ProcessorError`."""
        request = message if isinstance(message, BaseMessage) else self.parse(message)
        found = REQUEST_HANDLERS.get(type(request))
        if found is None:
            raise UnsupportedMessageError(
                f"A {request.type} is not a request a partner answers; expected one of "
                + ", ".join(_REQUEST_TYPES)
            )
        handler_name, response_type = found
        try:
            if self.is_verification_request(request):
                return cast("Message", response_type())
            token = _CURRENT.set(request)
            try:
                handler: Callable[[Any], object] = getattr(self, handler_name)
                response = handler(request)
            finally:
                _CURRENT.reset(token)
        except ProcessorError:
            raise
        except SettingError as exc:
            raise InvalidSettingsError(str(exc)) from exc
        except Exception as exc:
            raise HandlerError(
                f"Processing the {request.type} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(response, response_type):
            raise HandlerError(
                f"{handler_name} returned {type(response).__name__}; "
                f"expected {response_type.__name__}"
            )
        return cast("Message", response)

    def is_verification_request(self, message: BaseMessage) -> bool:
        """Whether ``message`` is one of the platform's periodic verification requests,
        answered with an empty response without calling any hook:

        * an event processing request without events, unless the registration allows
          eventless batches (``allow_eventless_batches``) and the request carries user data
          (identities, attributes, an mpid or notifications);
        * an audience membership change without user profiles (absent or empty).
        """
        if isinstance(message, EventProcessingRequest):
            if message.events:
                return False
            if not _has_user_data(message):
                return True
            permissions = self.registered.permissions
            return not (permissions is not None and permissions.allow_eventless_batches)
        if isinstance(message, AudienceMembershipChangeRequest):
            return not message.user_profiles
        return False

    # -- settings

    @property
    def current_request(self) -> BaseMessage:
        """The request being processed (only inside a hook)."""
        request = _CURRENT.get()
        if request is None:
            raise RuntimeError("No request is being processed: use this inside a hook")
        return request

    @property
    def settings(self) -> Settings:
        """The account settings of the request being processed, checked against the
        settings registered for its kind (see :meth:`registered_settings`)."""
        return self.settings_for(self.current_request)

    def settings_for(self, request: BaseMessage) -> Settings:
        """The account settings of ``request`` (see :attr:`settings`)."""
        account = getattr(request, "account", None)
        values = account.account_settings if account is not None else {}
        return Settings(values, self.registered_settings(request.type), "account")

    def registered_settings(self, message_type: str) -> list[Setting]:
        """The account settings registered for a request type: event processing's
        ``account_settings`` plus ``event_connection_settings`` (whose values arrive merged
        into ``account_settings``), audience processing's or DSR processing's
        ``account_settings``."""
        registration = self.registered
        if message_type == MessageType.EVENT_PROCESSING_REQUEST:
            events = registration.event_processing_registration
            if events is None:
                return []
            return [*events.account_settings, *events.event_connection_settings]
        if message_type in (
            MessageType.AUDIENCE_SUBSCRIPTION_REQUEST,
            MessageType.AUDIENCE_MEMBERSHIP_CHANGE_REQUEST,
        ):
            audiences = registration.audience_processing_registration
            return list(audiences.account_settings) if audiences is not None else []
        if message_type == MessageType.DSR_PROCESSING_REQUEST:
            dsr = registration.dsr_processing_registration
            return list(dsr.account_settings) if dsr is not None else []
        return []

    def audience_settings(self, source: AudienceSubscriptionRequest | Audience) -> Settings:
        """The audience subscription settings of a subscription request or of an audience
        in a membership change, checked against the registered
        ``audience_subscription_settings``."""
        audiences = self.registered.audience_processing_registration
        registered = audiences.audience_subscription_settings if audiences is not None else []
        values: Mapping[str, str | None] = source.audience_subscription_settings
        return Settings(values, registered, "audience subscription")

    # -- request handlers

    def process_module_registration_request(
        self, request: ModuleRegistrationRequest
    ) -> ModuleRegistrationResponse:
        """The registration (:meth:`registration`) with a fresh id and timestamp."""
        return msgspec.structs.replace(self.registered, id=uuid.uuid4(), timestamp_ms=now_ms())

    def process_event_processing_request(
        self, request: EventProcessingRequest
    ) -> EventProcessingResponse:
        """Each system notification, then each event, with its request attached, goes to
        :meth:`process_system_notification` / :meth:`process_event`; the answer is an empty
        response. Override to add set-up or batching, and call ``super()`` to keep the
        per-event hooks."""
        for notification in request.system_notifications:
            notification.attach_request(request)
            self.process_system_notification(notification)
        for event in request.events:
            event.attach_request(request)
            self.process_event(event)
        return EventProcessingResponse()

    def process_audience_subscription_request(
        self, request: AudienceSubscriptionRequest
    ) -> AudienceSubscriptionResponse:
        """An audience connection was added, updated or removed. Default: empty response."""
        return AudienceSubscriptionResponse()

    def process_audience_membership_change_request(
        self, request: AudienceMembershipChangeRequest
    ) -> AudienceMembershipChangeResponse:
        """Users joined or left audiences (``request.user_profiles`` is never empty here:
        verification requests are answered before). Default: empty response."""
        return AudienceMembershipChangeResponse()

    def process_dsr_processing_request(
        self, request: DsrProcessingRequest
    ) -> DsrProcessingResponse:
        """A data subject request (erasure). Default: empty response."""
        return DsrProcessingResponse()

    # -- per-event and per-notification dispatch

    def process_event(self, event: BaseEvent) -> None:
        """Send ``event`` to its hook (``process_custom_event``, ...). Override to see
        every event in one place."""
        for cls in type(event).__mro__:
            name = EVENT_HOOKS.get(cls)
            if name is not None:
                getattr(self, name)(event)
                return

    def process_system_notification(self, notification: BaseSystemNotification) -> None:
        """Send ``notification`` to its hook."""
        for cls in type(notification).__mro__:
            name = NOTIFICATION_HOOKS.get(cls)
            if name is not None:
                getattr(self, name)(notification)
                return

    # -- event hooks (all empty by default; ``event.request`` is the request)

    def process_session_start_event(self, event: SessionStartEvent) -> None:
        """``session_start``."""

    def process_session_end_event(self, event: SessionEndEvent) -> None:
        """``session_end``."""

    def process_custom_event(self, event: CustomEvent) -> None:
        """``custom_event``."""

    def process_screen_view_event(self, event: ScreenViewEvent) -> None:
        """``screen_view``."""

    def process_error_event(self, event: ErrorEvent) -> None:
        """``error``."""

    def process_privacy_setting_change_event(self, event: PrivacySettingChangeEvent) -> None:
        """``privacy_setting_change``."""

    def process_user_attribute_change_event(self, event: UserAttributeChangeEvent) -> None:
        """``user_attribute_change``."""

    def process_user_identity_change_event(self, event: UserIdentityChangeEvent) -> None:
        """``user_identity_change``."""

    def process_push_subscription_event(self, event: PushSubscriptionEvent) -> None:
        """``push_subscription``."""

    def process_application_state_transition_event(
        self, event: ApplicationStateTransitionEvent
    ) -> None:
        """``application_state_transition``."""

    def process_push_message_receipt_event(self, event: PushMessageReceiptEvent) -> None:
        """``push_message_receipt``."""

    def process_push_message_open_event(self, event: PushMessageOpenEvent) -> None:
        """``push_message_open``."""

    def process_product_action_event(self, event: ProductActionEvent) -> None:
        """``product_action``."""

    def process_promotion_action_event(self, event: PromotionActionEvent) -> None:
        """``promotion_action``."""

    def process_impression_event(self, event: ImpressionEvent) -> None:
        """``impression``."""

    def process_attribution_event(self, event: AttributionEvent) -> None:
        """``attribution``."""

    # -- system notification hooks

    def process_gdpr_consent_state_notification(
        self, notification: GDPRConsentStateNotification
    ) -> None:
        """``gdpr_consent_state``: a GDPR consent changed."""

    def process_ccpa_consent_state_notification(
        self, notification: CCPAConsentStateNotification
    ) -> None:
        """``ccpa_consent_state``: the CCPA consent changed."""


def _has_user_data(request: EventProcessingRequest) -> bool:
    return bool(
        request.user_identities
        or request.partner_identities
        or request.user_attributes
        or request.user_attribute_lists
        or request.mpid
        or request.system_notifications
    )
