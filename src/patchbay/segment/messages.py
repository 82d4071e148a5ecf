"""An output's audience membership changes as Firehose ``audience_membership_change_request``
messages, and when to send them.

:func:`membership_requests` is pure: the same changes, profiles, audiences and connections
always give the same requests, ids included, so that building them again after a crash
gives deliveries the outbox already has (it ignores ids it knows). :func:`flush_policy`
reads the module's ``bulk_configuration``.

**What one request carries.** The account is the output's (``account_id`` 0 and the output's
settings as ``account_settings``, as on the event path), then one ``UserProfile`` per MPID:

* ``mpid`` (as a string) only when the module has ``allow_access_mpid``;
* the user and device identities of the user's profile the module registered, in the
  registered encodings (:mod:`patchbay.activate.permissions`): a user identity type has one
  value (the newest), a device identity type one entry per device, most recently seen
  first. Push tokens are not sent (their Firehose type depends on a runtime a profile does
  not record); profiles keep no partner identities, so ``partner_identities`` stays empty;
* one ``audiences`` entry per audience that changed for the user: ``audience_id``,
  ``audience_name``, ``action`` and ``audience_subscription_settings``, the connection's
  ``settings`` with the partner's ``partner_settings`` (what it answered to the
  subscription) laid over them;
* for ``add`` and ``attribute_update``, when the module has
  ``allow_audience_user_attributes`` and the connection names ``attributes``: one
  ``user_attributes`` entry per named attribute with its current value in the profile:
  ``upsert`` with ``value`` (text, as the event path writes user attributes) or
  ``list_value`` (list attributes; ``null`` items dropped), ``upsert`` without a value for an
  attribute set to ``null``, ``delete`` for an attribute the user no longer has.

**Collapsing.** The changes of one (MPID, audience) in one call are reduced, in ``seq``
order, to at most one action: the last ``add`` or ``delete`` wins; an ``attribute_update``
after an ``add`` is folded into the add (which carries the current attributes anyway); an
``attribute_update`` after a ``delete`` is dropped; ``attribute_update`` alone stays one
``attribute_update``. An ``attribute_update`` that would carry no attribute (the module does
not allow audience user attributes, or the connection names none) is dropped.

**Dropped.** Changes of another output, of audiences that no longer exist (not in
``audiences``) or are no longer connected to the output (not in ``connections``); users
whose profile misses every ``required`` identity of the module (the event path's rule,
:func:`~patchbay.activate.permissions.meets_required`); users the partner could not tell
apart (no MPID allowed and no identity to send). Connections are not checked for
``subscribed_at_ms``: holding the changes of a connection the partner has not accepted yet
is the caller's decision (dropping them here would lose them).

**Splitting and ids.** All the changes of one MPID go into the same request (so a user's
changes of one call are never reordered by concurrent sends). Users are taken in the order
of their first change, at most ``max_profiles`` per request. A request's ``id`` (also its
delivery id) is a uuid5 of the output name and the sorted ``seq`` of every change it
consumed; its ``timestamp_ms`` is the latest ``at_ms`` among them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from patchbay.activate.ids import NAMESPACE
from patchbay.activate.outputs import output_account
from patchbay.activate.permissions import (
    DEVICE_IDENTITY_TYPES,
    USER_IDENTITY_TYPES,
    device_identities,
    meets_required,
    usable,
    user_identities,
)
from patchbay.activate.translate import user_attribute_texts
from patchbay.backends.records import (
    AudienceAction,
    AudienceConnection,
    AudienceRecord,
    Output,
    PendingChange,
)
from patchbay.firehose import (
    FIREHOSE_VERSION,
    Audience,
    AudienceMembershipChangeRequest,
    DeviceIdentity,
    ModuleRegistrationResponse,
    Permissions,
    UserAttributeAudienceEvent,
    UserIdentity,
    UserProfile,
    dumps,
)
from patchbay.resolve.profile import Profile

__all__ = ["DEFAULT_MAX_WAIT_S", "NO_COUNT", "flush_policy", "membership_requests"]

#: The count of :func:`flush_policy` when only a wait is configured: no count triggers a send.
NO_COUNT: Final = 2**31 - 1

#: The longest the oldest change waits when the module configured only a count (30 minutes,
#: the SDK's example ``bulk_forward_wait_in_minutes``): a quiet output still sends.
DEFAULT_MAX_WAIT_S: Final = 1800.0


def flush_policy(registration: ModuleRegistrationResponse) -> tuple[int, float]:
    """When an output's pending membership changes are due: ``(count, wait_s)``, send once
    ``count`` changes wait or the oldest has waited ``wait_s`` seconds.

    From ``audience_processing_registration.bulk_configuration``:
    ``bulk_forward_wait_for_messages`` is the count, ``bulk_forward_wait_in_minutes`` the
    wait. Without a bulk configuration (or with neither value) it is ``(1, 0.0)``: send at
    once. With only the wait, no count triggers (:data:`NO_COUNT`); with only the count, the
    oldest change waits at most :data:`DEFAULT_MAX_WAIT_S`. Values below 1 (0 minutes for
    the wait) count as absent (the registration check refuses them anyway).
    """
    audience = registration.audience_processing_registration
    bulk = audience.bulk_configuration if audience is not None else None
    if bulk is None:
        return 1, 0.0
    count = bulk.bulk_forward_wait_for_messages
    minutes = bulk.bulk_forward_wait_in_minutes
    if count is not None and count < 1:
        count = None
    if minutes is not None and minutes < 0:
        minutes = None
    if count is None and minutes is None:
        return 1, 0.0
    if count is None:
        return NO_COUNT, float(minutes or 0) * 60.0
    if minutes is None:
        return count, DEFAULT_MAX_WAIT_S
    return count, minutes * 60.0


@dataclass(slots=True)
class _Net:
    """The collapsed changes of one (MPID, audience): the last ``add`` or ``delete``, and
    whether attributes changed since (or with neither)."""

    membership: AudienceAction | None = None
    updated: bool = False

    def apply(self, action: AudienceAction) -> None:
        if action == "attribute_update":
            if self.membership is None:
                self.updated = True
            # after an add: folded into it; after a delete: dropped
            return
        self.membership = action
        self.updated = False

    @property
    def action(self) -> AudienceAction | None:
        if self.membership is not None:
            return self.membership
        return "attribute_update" if self.updated else None


@dataclass(slots=True)
class _User:
    """One MPID's changes in this call: per audience (in order of first change), the seqs
    consumed and the latest ``at_ms``."""

    mpid: int
    audiences: dict[int, _Net] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)
    at_ms: int = 0


def membership_requests(
    output: Output,
    registration: ModuleRegistrationResponse,
    connections: Mapping[int, AudienceConnection],
    audiences: Mapping[int, AudienceRecord],
    changes: Sequence[PendingChange],
    profiles: Mapping[int, Profile],
    max_profiles: int,
) -> list[tuple[str, bytes]]:
    """The ``audience_membership_change_request`` messages that carry ``changes`` to
    ``output``: ``(delivery id, JSON payload)`` per request, in order (see the module doc).

    ``connections`` are the output's audience connections by audience id, ``audiences``
    the audiences by id, ``profiles`` the users' profiles by MPID (a user without one is
    sent with its MPID alone, if the module may receive it). At most ``max_profiles`` user
    profiles go into one request.
    """
    if max_profiles < 1:
        raise ValueError(f"max_profiles must be at least 1, got {max_profiles}")
    permissions = registration.permissions or Permissions()
    users: dict[int, _User] = {}
    for change in sorted(changes, key=lambda c: c.seq):
        connection = connections.get(change.audience_id)
        if (
            change.output != output.name
            or change.audience_id not in audiences
            or connection is None
            or connection.output != output.name
        ):
            continue
        user = users.get(change.mpid)
        if user is None:
            user = users[change.mpid] = _User(change.mpid)
        net = user.audiences.get(change.audience_id)
        if net is None:
            net = user.audiences[change.audience_id] = _Net()
        net.apply(change.action)
        user.seqs.append(change.seq)
        user.at_ms = max(user.at_ms, change.at_ms)

    built: list[tuple[_User, UserProfile]] = []
    for user in users.values():
        profile = _user_profile(user, permissions, connections, audiences, profiles.get(user.mpid))
        if profile is not None:
            built.append((user, profile))

    account = output_account(output)
    version = registration.sdk_version or FIREHOSE_VERSION
    out: list[tuple[str, bytes]] = []
    for start in range(0, len(built), max_profiles):
        chunk = built[start : start + max_profiles]
        seqs = sorted(seq for user, _ in chunk for seq in user.seqs)
        request = AudienceMembershipChangeRequest(
            id=_request_id(output.name, seqs),
            timestamp_ms=max(user.at_ms for user, _ in chunk),
            firehose_version=version,
            account=account,
            user_profiles=[profile for _, profile in chunk],
        )
        out.append((str(request.id), dumps(request)))
    return out


def _request_id(output: str, seqs: Sequence[int]) -> uuid.UUID:
    """The id of the request that consumed the changes ``seqs`` (sorted) of ``output``."""
    return uuid.uuid5(NAMESPACE, f"audience_membership\x1f{output}\x1f" + ",".join(map(str, seqs)))


def _user_profile(
    user: _User,
    permissions: Permissions,
    connections: Mapping[int, AudienceConnection],
    audiences: Mapping[int, AudienceRecord],
    profile: Profile | None,
) -> UserProfile | None:
    """The user's ``UserProfile``, or ``None`` when there is nothing to send or no way to
    tell the partner who the user is."""
    entries: list[Audience] = []
    for audience_id, net in user.audiences.items():
        action = net.action
        if action is None:
            continue
        connection = connections[audience_id]
        attributes: list[UserAttributeAudienceEvent] = []
        if action != "delete" and permissions.allow_audience_user_attributes:
            attributes = _attribute_events(connection.attributes, profile)
        if action == "attribute_update" and not attributes:
            continue
        entries.append(
            Audience(
                audience_id=audience_id,
                audience_name=audiences[audience_id].name,
                audience_subscription_settings={
                    **connection.settings,
                    **connection.partner_settings,
                },
                action=action,
                user_attributes=attributes,
            )
        )
    if not entries:
        return None
    users_ids: list[UserIdentity] = []
    devices: list[DeviceIdentity] = []
    if profile is not None:
        user_values = _user_identity_values(profile)
        device_values = _device_identity_values(profile)
        newest = {
            kind: next((v for v in values if usable(v)), values[0])
            for kind, values in device_values.items()
        }
        if not meets_required(permissions, user_values, newest, {}):
            return None
        users_ids = user_identities(user_values, permissions)
        devices = _device_identities(device_values, permissions)
    elif not meets_required(permissions, {}, {}, {}):
        return None
    mpid = str(user.mpid) if permissions.allow_access_mpid else None
    if mpid is None and not users_ids and not devices:
        return None
    return UserProfile(
        user_identities=users_ids,
        device_identities=devices,
        audiences=entries,
        mpid=mpid,
    )


def _user_identity_values(profile: Profile) -> dict[str, str]:
    """``{Firehose user identity type: newest value}`` (types without a literal left out)."""
    values: dict[str, str] = {}
    for record in sorted(profile.user_identities(), key=lambda r: r.last_seen_ms):
        kind = USER_IDENTITY_TYPES.get(record.type)
        if kind is not None:
            values[kind] = record.value
    return values


def _device_identity_values(profile: Profile) -> dict[str, list[str]]:
    """``{Firehose device identity type: values, most recently seen first}``."""
    values: dict[str, list[str]] = {}
    records = sorted(profile.device_identities(), key=lambda r: (-r.last_seen_ms, r.value))
    for record in records:
        kind = DEVICE_IDENTITY_TYPES.get(record.type)
        if kind is not None and record.value not in values.setdefault(kind, []):
            values[kind].append(record.value)
    return values


def _device_identities(
    values: Mapping[str, list[str]], permissions: Permissions
) -> list[DeviceIdentity]:
    """One entry per registered device identity permission and device, in permission order
    (most recently seen device first)."""
    longest = max((len(v) for v in values.values()), default=0)
    out: list[DeviceIdentity] = []
    for i in range(longest):
        nth = {kind: found[i] for kind, found in values.items() if i < len(found)}
        out.extend(device_identities(nth, permissions))
    out.sort(key=lambda identity: _order(permissions, identity))
    return out


def _order(permissions: Permissions, identity: DeviceIdentity) -> int:
    for index, permission in enumerate(permissions.device_identities):
        if permission.type == identity.type and permission.encoding == identity.encoding:
            return index
    return len(permissions.device_identities)


def _attribute_events(
    names: Sequence[str], profile: Profile | None
) -> list[UserAttributeAudienceEvent]:
    """The named attributes' current values (``upsert``), or ``delete`` when the user does
    not have one."""
    if not names:
        return []
    current = profile.user_attributes if profile is not None else {}
    wanted = list(dict.fromkeys(names))
    scalars, lists = user_attribute_texts({k: current[k] for k in wanted if k in current})
    events: list[UserAttributeAudienceEvent] = []
    for name in wanted:
        if name in lists:
            events.append(
                UserAttributeAudienceEvent(key=name, action="upsert", list_value=lists[name])
            )
        elif name in scalars:
            events.append(
                UserAttributeAudienceEvent(key=name, action="upsert", value=scalars[name])
            )
        elif name in current:  # set to null: the user has it, without a value
            events.append(UserAttributeAudienceEvent(key=name, action="upsert"))
        else:
            events.append(UserAttributeAudienceEvent(key=name, action="delete"))
    return events
