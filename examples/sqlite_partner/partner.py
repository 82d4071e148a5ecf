"""``SqlitePartner``: a small but real Firehose partner built on ``MessageProcessor``.

It records what the platform sends in a SQLite file:

* ``batches``, ``events`` and ``identities`` for event processing requests (six event
  types, with the request's user, device and partner identities);
* ``consent_changes`` for GDPR/CCPA consent notifications;
* ``audience_subscriptions`` for audience connections, ``audience_changes`` (every change)
  and ``audience_members`` (current membership) for audience membership changes;
* ``dsr_requests`` for data subject requests, after erasing every row of the matching
  users (identities compared raw and as MD5/SHA-1/SHA-256 hashes).

Users are keyed by mpid, else by their first identity. The database file is
``db_path``, or ``$SQLITE_PARTNER_DB`` read at each request (default ``sqlite_partner.db``;
use ``/tmp/...`` on AWS Lambda). Each request is one transaction on its own connection, so
the processor is safe to share between threads.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from patchbay.firehose import (
    AudienceMembershipChangeRequest,
    AudienceMembershipChangeResponse,
    AudienceProcessingRegistration,
    AudienceSubscriptionRequest,
    AudienceSubscriptionResponse,
    BaseEvent,
    BooleanSetting,
    CCPAConsentStateNotification,
    CustomEvent,
    DeviceIdentity,
    DeviceIdentityPermission,
    DsrProcessingRegistration,
    DsrProcessingRequest,
    DsrProcessingResponse,
    EventProcessingRegistration,
    EventProcessingRequest,
    EventProcessingResponse,
    GDPRConsentStateNotification,
    IntegerSetting,
    MessageProcessor,
    ModuleRegistrationResponse,
    PartnerIdentity,
    PartnerIdentityPermission,
    Permissions,
    ProductActionEvent,
    ScreenViewEvent,
    SessionEndEvent,
    SessionStartEvent,
    TextSetting,
    UserAttributeChangeEvent,
    UserIdentity,
    UserIdentityPermission,
    UserProfile,
)
from patchbay.firehose.enums import (
    AudienceAction,
    AudienceSubscriptionAction,
    DeviceIdentityType,
    DsrType,
    EventType,
    IdentityEncoding,
    RuntimeEnvironmentType,
    SystemNotificationType,
    UserAttributeAction,
    UserIdentityType,
)

DB_ENV: Final = "SQLITE_PARTNER_DB"
DEFAULT_DB: Final = "sqlite_partner.db"

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS batches (
    request_id TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL,
    key_fingerprint TEXT NOT NULL,
    user_key TEXT NOT NULL,
    mpid TEXT,
    runtime TEXT,
    client_ip TEXT,
    source_channel TEXT,
    user_attributes TEXT,
    received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    account_id INTEGER NOT NULL,
    user_key TEXT NOT NULL,
    event_type TEXT NOT NULL,
    name TEXT,
    timestamp_ms INTEGER NOT NULL,
    latitude REAL,
    longitude REAL,
    details TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    account_id INTEGER NOT NULL,
    user_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    type TEXT NOT NULL,
    encoding TEXT NOT NULL,
    value TEXT NOT NULL,
    UNIQUE (account_id, user_key, kind, type, encoding, value)
);
CREATE TABLE IF NOT EXISTS consent_changes (
    request_id TEXT NOT NULL,
    account_id INTEGER NOT NULL,
    user_key TEXT NOT NULL,
    regulation TEXT NOT NULL,
    purpose TEXT,
    consented_before INTEGER,
    consented_after INTEGER
);
CREATE TABLE IF NOT EXISTS audience_subscriptions (
    account_id INTEGER NOT NULL,
    audience_id INTEGER NOT NULL,
    audience_name TEXT,
    list_name TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_request TEXT NOT NULL,
    PRIMARY KEY (account_id, audience_id)
);
CREATE TABLE IF NOT EXISTS audience_changes (
    request_id TEXT NOT NULL,
    account_id INTEGER NOT NULL,
    audience_id INTEGER NOT NULL,
    audience_name TEXT,
    list_name TEXT NOT NULL,
    user_key TEXT NOT NULL,
    action TEXT,
    user_attributes TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audience_members (
    account_id INTEGER NOT NULL,
    audience_id INTEGER NOT NULL,
    user_key TEXT NOT NULL,
    user_attributes TEXT NOT NULL,
    PRIMARY KEY (account_id, audience_id, user_key)
);
CREATE TABLE IF NOT EXISTS dsr_requests (
    subject_request_id TEXT PRIMARY KEY,
    request_type TEXT,
    regulation TEXT,
    submitted_time TEXT,
    identity_types TEXT NOT NULL,
    users_found INTEGER NOT NULL,
    rows_erased INTEGER NOT NULL
);
"""

#: Tables with per-user rows, erased by a DSR.
USER_TABLES: Final = (
    "batches",
    "events",
    "identities",
    "consent_changes",
    "audience_changes",
    "audience_members",
)

#: An OpenDSR identity type and the identity it designates: (kind, type).
DSR_IDENTITIES: Final[dict[str, tuple[str, str]]] = {
    "email": ("user", UserIdentityType.EMAIL),
    "controller_customer_id": ("user", UserIdentityType.CUSTOMER),
    "android_advertising_id": ("device", DeviceIdentityType.GOOGLE_ADVERTISING_ID),
    "android_id": ("device", DeviceIdentityType.ANDROID_ID),
    "ios_advertising_id": ("device", DeviceIdentityType.IOS_ADVERTISING_ID),
    "ios_vendor_id": ("device", DeviceIdentityType.IOS_VENDOR_ID),
    "fire_advertising_id": ("device", DeviceIdentityType.FIRE_ADVERTISING_ID),
    "microsoft_advertising_id": ("device", DeviceIdentityType.MICROSOFT_ADVERTISING_ID),
    "microsoft_publisher_id": ("device", DeviceIdentityType.MICROSOFT_PUBLISHER_ID),
    "roku_advertising_id": ("device", DeviceIdentityType.ROKU_ADVERTISING_ID),
    "roku_publisher_id": ("device", DeviceIdentityType.ROKU_PUBLISHER_ID),
}

AnyIdentity = UserIdentity | DeviceIdentity | PartnerIdentity


@dataclass
class _Batch:
    """What the event hooks of one event processing request share."""

    db: sqlite3.Connection
    request: EventProcessingRequest
    account_id: int
    user_key: str
    attribute_limit: int


_BATCH: Final[contextvars.ContextVar[_Batch]] = contextvars.ContextVar("sqlite_partner_batch")


class SqlitePartner(MessageProcessor):
    """The example partner (see the module doc)."""

    def __init__(self, db_path: str | os.PathLike[str] | None = None) -> None:
        self._db_path = db_path

    @property
    def db_path(self) -> Path:
        """The SQLite file: ``db_path``, else ``$SQLITE_PARTNER_DB``, else the default."""
        if self._db_path is not None:
            return Path(self._db_path)
        return Path(os.environ.get(DB_ENV) or DEFAULT_DB)

    # -- registration

    def registration(self) -> ModuleRegistrationResponse:
        return ModuleRegistrationResponse(
            name="SQLite Example",
            version="1.0.0",
            description=(
                "Records the events, identities, audience changes and data subject requests "
                "it receives in a SQLite file. Built on the Patchbay partner SDK."
            ),
            permissions=Permissions(
                user_identities=[
                    UserIdentityPermission(
                        type=UserIdentityType.EMAIL, encoding=IdentityEncoding.SHA256
                    ),
                    UserIdentityPermission(
                        type=UserIdentityType.CUSTOMER, encoding=IdentityEncoding.RAW
                    ),
                ],
                device_identities=[
                    DeviceIdentityPermission(
                        type=DeviceIdentityType.GOOGLE_ADVERTISING_ID,
                        encoding=IdentityEncoding.RAW,
                    ),
                    DeviceIdentityPermission(
                        type=DeviceIdentityType.IOS_ADVERTISING_ID, encoding=IdentityEncoding.RAW
                    ),
                    DeviceIdentityPermission(
                        type=DeviceIdentityType.ANDROID_ID, encoding=IdentityEncoding.SHA1
                    ),
                ],
                partner_identities=[
                    PartnerIdentityPermission(
                        type="SqliteExample_user_id", encoding=IdentityEncoding.RAW
                    )
                ],
                allow_access_location=True,
                allow_access_ip_address=True,
                allow_user_attributes=True,
                allow_consent_state=True,
                allow_audience_user_attributes=True,
                allow_access_mpid=True,
            ),
            event_processing_registration=EventProcessingRegistration(
                account_settings=[
                    TextSetting(
                        id="apiKey",
                        name="API Key",
                        description="Your SQLite Example API key.",
                        required=True,
                        confidential=True,
                    ),
                    BooleanSetting(
                        id="includeUserAttributes",
                        name="Store user attributes",
                        description="Keep the user attributes sent with each batch.",
                        default_value=True,
                    ),
                ],
                event_connection_settings=[
                    IntegerSetting(
                        id="attributeLimit",
                        name="Attributes per event",
                        description="How many event attributes to keep (0 to 100).",
                        default_value=20,
                        min_value=0,
                        max_value=100,
                    ),
                ],
                supported_event_types=[
                    EventType.SESSION_START,
                    EventType.SESSION_END,
                    EventType.CUSTOM_EVENT,
                    EventType.SCREEN_VIEW,
                    EventType.PRODUCT_ACTION,
                    EventType.USER_ATTRIBUTE_CHANGE,
                ],
                supported_runtime_environments=[
                    RuntimeEnvironmentType.ANDROID,
                    RuntimeEnvironmentType.IOS,
                    RuntimeEnvironmentType.MOBILEWEB,
                    RuntimeEnvironmentType.UNKNOWN,
                ],
                supported_system_notification_types=[
                    SystemNotificationType.GDPR_CONSENT_STATE,
                    SystemNotificationType.CCPA_CONSENT_STATE,
                ],
                max_data_age_hours=24,
            ),
            audience_processing_registration=AudienceProcessingRegistration(
                account_settings=[
                    TextSetting(
                        id="listPrefix",
                        name="List name prefix",
                        description="Prefix of the list each audience is stored as.",
                        default_value="mp_",
                    ),
                ],
                audience_subscription_settings=[
                    TextSetting(
                        id="listName",
                        name="List name",
                        description="Set by SQLite Example when the audience is connected.",
                        visible=False,
                    ),
                ],
            ),
            dsr_processing_registration=DsrProcessingRegistration(
                supported_dsr_types=[DsrType.ERASURE],
            ),
        )

    # -- event processing

    def process_event_processing_request(
        self, request: EventProcessingRequest
    ) -> EventProcessingResponse:
        settings = self.settings
        api_key = settings.text("apiKey")  # required: a request without it is a 400
        account_id = request.account.account_id if request.account else 0
        user_key = _user_key(
            request.mpid,
            request.user_identities,
            request.runtime_environment.identities if request.runtime_environment else [],
            request.partner_identities,
            fallback=str(request.id),
        )
        runtime = request.runtime_environment
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(request.id),
                    account_id,
                    hashlib.sha256(api_key.encode()).hexdigest()[:12],
                    user_key,
                    request.mpid,
                    str(runtime.type) if runtime else None,
                    runtime.client_ip_address if runtime else None,
                    request.source_channel,
                    _json(request.user_attributes)
                    if settings.boolean("includeUserAttributes")
                    else None,
                    request.timestamp_ms,
                ),
            )
            self._store_identities(db, account_id, user_key, "user", request.user_identities)
            self._store_identities(db, account_id, user_key, "partner", request.partner_identities)
            if runtime is not None:
                self._store_identities(db, account_id, user_key, "device", runtime.identities)
            batch = _Batch(
                db, request, account_id, user_key, settings.integer("attributeLimit", 20)
            )
            token = _BATCH.set(batch)
            try:
                # The SDK walks the notifications and events and calls the hooks below.
                return super().process_event_processing_request(request)
            finally:
                _BATCH.reset(token)

    def process_session_start_event(self, event: SessionStartEvent) -> None:
        self._store_event(event, None, {})

    def process_session_end_event(self, event: SessionEndEvent) -> None:
        self._store_event(event, None, {"session_length_ms": event.session_length_ms})

    def process_custom_event(self, event: CustomEvent) -> None:
        details = {
            "custom_event_type": event.custom_event_type,
            "attributes": self._limited(event.attributes),
        }
        self._store_event(event, event.name, details)

    def process_screen_view_event(self, event: ScreenViewEvent) -> None:
        self._store_event(event, event.screen_name, {"attributes": self._limited(event.attributes)})

    def process_product_action_event(self, event: ProductActionEvent) -> None:
        details = {
            "transaction_id": event.transaction_id,
            "currency_code": event.currency_code,
            "total_amount": str(event.total_amount) if event.total_amount is not None else None,
            "products": [
                {
                    "id": product.id,
                    "name": product.name,
                    "price": str(product.price) if product.price is not None else None,
                    "quantity": str(product.quantity) if product.quantity is not None else None,
                }
                for product in event.products
            ],
            "attributes": self._limited(event.attributes),
        }
        self._store_event(event, event.action, details)

    def process_user_attribute_change_event(self, event: UserAttributeChangeEvent) -> None:
        self._store_event(event, None, {"added": event.added, "removed": event.removed})

    def process_gdpr_consent_state_notification(
        self, notification: GDPRConsentStateNotification
    ) -> None:
        before, after = notification.old_gdpr_consent_state, notification.new_gdpr_consent_state
        self._store_consent(
            "gdpr",
            notification.purpose,
            before.consented if before else None,
            after.consented if after else None,
        )

    def process_ccpa_consent_state_notification(
        self, notification: CCPAConsentStateNotification
    ) -> None:
        before, after = notification.old_ccpa_consent_state, notification.new_ccpa_consent_state
        self._store_consent(
            "ccpa",
            notification.purpose,
            before.consented if before else None,
            after.consented if after else None,
        )

    # -- audiences

    def process_audience_subscription_request(
        self, request: AudienceSubscriptionRequest
    ) -> AudienceSubscriptionResponse:
        account_id = request.account.account_id if request.account else 0
        list_name = (
            self.audience_settings(request).text("listName")
            or f"{self.settings.text('listPrefix')}{request.audience_id}"
        )
        removed = request.action == AudienceSubscriptionAction.REMOVE
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO audience_subscriptions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    account_id,
                    request.audience_id,
                    request.audience_name,
                    list_name,
                    "removed" if removed else "active",
                    str(request.id),
                ),
            )
        if removed:
            return AudienceSubscriptionResponse()
        # Stored with the subscription and sent back with each membership change.
        return AudienceSubscriptionResponse(audience_subscription_settings={"listName": list_name})

    def process_audience_membership_change_request(
        self, request: AudienceMembershipChangeRequest
    ) -> AudienceMembershipChangeResponse:
        account_id = request.account.account_id if request.account else 0
        prefix = self.settings.text("listPrefix")
        with self._connect() as db:
            for profile in request.user_profiles or []:
                self._store_profile(db, request, account_id, prefix, profile)
        return AudienceMembershipChangeResponse()

    def _store_profile(
        self,
        db: sqlite3.Connection,
        request: AudienceMembershipChangeRequest,
        account_id: int,
        prefix: str,
        profile: UserProfile,
    ) -> None:
        user_key = _user_key(
            profile.mpid,
            profile.user_identities,
            profile.device_identities,
            profile.partner_identities,
            fallback=f"{request.id}:{id(profile)}",
        )
        self._store_identities(db, account_id, user_key, "user", profile.user_identities)
        self._store_identities(db, account_id, user_key, "device", profile.device_identities)
        self._store_identities(db, account_id, user_key, "partner", profile.partner_identities)
        for audience in profile.audiences:
            list_name = (
                self.audience_settings(audience).text("listName")
                or f"{prefix}{audience.audience_id}"
            )
            attributes = {
                change.key: None if change.action == UserAttributeAction.DELETE else change.value
                for change in audience.user_attributes
                if change.key
            }
            db.execute(
                "INSERT INTO audience_changes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(request.id),
                    account_id,
                    audience.audience_id,
                    audience.audience_name,
                    list_name,
                    user_key,
                    audience.action,
                    _json(attributes),
                ),
            )
            key = (account_id, audience.audience_id, user_key)
            if audience.action == AudienceAction.DELETE:
                db.execute(
                    "DELETE FROM audience_members WHERE account_id = ? AND audience_id = ? "
                    "AND user_key = ?",
                    key,
                )
            else:
                row = db.execute(
                    "SELECT user_attributes FROM audience_members WHERE account_id = ? "
                    "AND audience_id = ? AND user_key = ?",
                    key,
                ).fetchone()
                merged: dict[str, Any] = json.loads(row[0]) if row else {}
                merged.update(attributes)
                current = {k: v for k, v in merged.items() if v is not None}
                db.execute(
                    "INSERT OR REPLACE INTO audience_members VALUES (?, ?, ?, ?)",
                    (*key, _json(current)),
                )

    # -- data subject requests

    def process_dsr_processing_request(
        self, request: DsrProcessingRequest
    ) -> DsrProcessingResponse:
        with self._connect() as db:
            user_keys: set[str] = set()
            for dsr_type, identity in request.subject_identities.items():
                target = DSR_IDENTITIES.get(dsr_type)
                if target is None or not identity.value:
                    continue
                kind, identity_type = target
                candidates = _candidates(identity.value)
                marks = ", ".join("?" * len(candidates))
                rows = db.execute(
                    "SELECT DISTINCT user_key FROM identities WHERE kind = ? AND type = ? "
                    f"AND lower(value) IN ({marks})",
                    (kind, identity_type, *candidates),
                )
                user_keys.update(row[0] for row in rows)
            erased = 0
            for table in USER_TABLES:
                for user_key in sorted(user_keys):
                    erased += db.execute(
                        f"DELETE FROM {table} WHERE user_key = ?", (user_key,)
                    ).rowcount
            db.execute(
                "INSERT OR REPLACE INTO dsr_requests VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    request.subject_request_id or str(request.id),
                    request.subject_request_type,
                    request.regulation,
                    request.submitted_time.isoformat() if request.submitted_time else None,
                    _json(sorted(request.subject_identities)),  # the types, not the values
                    len(user_keys),
                    erased,
                ),
            )
        return DsrProcessingResponse()

    # -- storage helpers

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection and one transaction per request."""
        with closing(sqlite3.connect(self.db_path, timeout=30)) as db:
            db.executescript(SCHEMA)
            with db:
                yield db

    def _store_identities(
        self,
        db: sqlite3.Connection,
        account_id: int,
        user_key: str,
        kind: str,
        identities: Iterable[AnyIdentity],
    ) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO identities VALUES (?, ?, ?, ?, ?, ?)",
            [(account_id, user_key, kind, i.type, i.encoding, i.value) for i in identities],
        )

    def _store_event(self, event: BaseEvent, name: str | None, details: Mapping[str, Any]) -> None:
        batch = _BATCH.get()
        location = event.location
        batch.db.execute(
            "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(event.id),
                str(batch.request.id),
                batch.account_id,
                batch.user_key,
                str(event.type),
                name,
                event.timestamp_ms,
                location.latitude if location else None,
                location.longitude if location else None,
                _json(details),
            ),
        )

    def _store_consent(
        self, regulation: str, purpose: str | None, before: bool | None, after: bool | None
    ) -> None:
        batch = _BATCH.get()
        batch.db.execute(
            "INSERT INTO consent_changes VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                str(batch.request.id),
                batch.account_id,
                batch.user_key,
                regulation,
                purpose,
                before,
                after,
            ),
        )

    def _limited(self, attributes: Mapping[str, str]) -> dict[str, str]:
        """The first ``attributeLimit`` attributes (an event connection setting)."""
        limit = _BATCH.get().attribute_limit
        return dict(list(attributes.items())[:limit])


def _user_key(
    mpid: str | None,
    user_identities: Iterable[UserIdentity],
    device_identities: Iterable[DeviceIdentity],
    partner_identities: Iterable[PartnerIdentity],
    fallback: str,
) -> str:
    """The user's key: ``mpid:...``, else the first identity, else ``fallback``."""
    if mpid:
        return f"mpid:{mpid}"
    for identities in (user_identities, device_identities, partner_identities):
        for identity in identities:
            return f"{identity.type}:{identity.value}"
    return f"request:{fallback}"


def _candidates(value: str) -> list[str]:
    """The forms an identity value may be stored in: raw and hashed (lower-case hex of the
    trimmed, lower-cased value), all lower-cased for comparison."""
    normalized = value.strip().lower()
    data = normalized.encode()
    return sorted(
        {
            value.lower(),
            normalized,
            hashlib.md5(data, usedforsecurity=False).hexdigest(),
            hashlib.sha1(data, usedforsecurity=False).hexdigest(),
            hashlib.sha256(data).hexdigest(),
        }
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
