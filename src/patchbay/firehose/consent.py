"""Consent: the current ``consent_state`` of a batch and the ``system_notifications`` that
report consent changes (tagged on ``type``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from patchbay.firehose._base import FirehoseStruct, Int64, struct_tag
from patchbay.firehose.enums import DEFAULT_CCPA_CONSENT_PURPOSE, SystemNotificationType

if TYPE_CHECKING:
    from patchbay.firehose.messages import EventProcessingRequest


class GDPRConsent(FirehoseStruct):
    """The GDPR consent for one purpose. ``consented`` is always written."""

    consented: bool = False
    document: str | None = None
    timestamp_unixtime_ms: Int64 | None = None
    location: str | None = None
    hardware_id: str | None = None


class CCPAConsent(FirehoseStruct):
    """The CCPA consent for one purpose (in practice ``data_sale_opt_out``)."""

    consented: bool = False
    document: str | None = None
    timestamp_unixtime_ms: Int64 | None = None
    location: str | None = None
    hardware_id: str | None = None


class ConsentState(FirehoseStruct):
    """Consent at the time of the batch (needs ``allow_consent_state``), by purpose."""

    gdpr_consent_state: dict[str, GDPRConsent] = {}
    ccpa_consent_state: dict[str, CCPAConsent] = {}


class BaseSystemNotification(FirehoseStruct, tag_field="type", dict=True):
    """Base of the notifications; ``request`` works as on :class:`~.events.BaseEvent`."""

    @property
    def type(self) -> SystemNotificationType:
        """The ``type`` discriminator."""
        return SystemNotificationType(struct_tag(self))

    @property
    def request(self) -> EventProcessingRequest | None:
        """The request this notification belongs to, if attached."""
        request: EventProcessingRequest | None = self.__dict__.get("request")
        return request

    def attach_request(self, request: EventProcessingRequest | None) -> None:
        """Attach (or with ``None`` detach) the request this notification belongs to."""
        self.__dict__["request"] = request


class GDPRConsentStateNotification(BaseSystemNotification, tag="gdpr_consent_state"):
    """``gdpr_consent_state``: the GDPR consent for ``purpose`` changed."""

    purpose: str | None = None
    old_gdpr_consent_state: GDPRConsent | None = None
    new_gdpr_consent_state: GDPRConsent | None = None


class CCPAConsentStateNotification(BaseSystemNotification, tag="ccpa_consent_state"):
    """``ccpa_consent_state``: the CCPA consent changed."""

    purpose: str = DEFAULT_CCPA_CONSENT_PURPOSE
    old_ccpa_consent_state: CCPAConsent | None = None
    new_ccpa_consent_state: CCPAConsent | None = None


#: Any system notification, chosen by its ``type``.
SystemNotification = GDPRConsentStateNotification | CCPAConsentStateNotification
