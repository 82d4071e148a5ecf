"""The operations on kits and their connections, shared by the CLI and the admin HTTP API,
and the kit part of the Web SDK's config.

Every answer is plain JSON data, confidential setting values masked; problems raise
:class:`KitError` (``not_found`` tells a missing thing from a bad request). A connection's
setting values are checked against the kit's declarations by the code that checks a Firehose
connection's (:func:`patchbay.activate.outputs.validate_settings`); the values of
confidential settings are kept apart (``KitConnection.secrets``, sealed at rest), never
logged nor shown, but served to the browser in the config: the kit's code needs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from patchbay.activate.outputs import confidential_ids, iso_ms, masked, validate_settings
from patchbay.backends.abstract import Backend
from patchbay.backends.records import Input, KitConnection, KitFilters, KitRecord
from patchbay.clock import Clock
from patchbay.collect.inputs import KEY_ONLY_TYPE, web_input
from patchbay.errors import PatchbayError
from patchbay.firehose.errors import SettingError
from patchbay.firehose.settings import BooleanSetting, KitSetting
from patchbay.kits.descriptor import parse_descriptor
from patchbay.kits.hashing import (
    CUSTOM_EVENT_TYPES,
    EVENT_TYPES,
    IDENTITY_TYPES,
    PAGE_VIEW_TYPE,
    event_name_hash,
    event_type_hash,
    user_attribute_hash,
)
from patchbay.logs import config_changed
from patchbay.partner.registration import Problem

_EVENT_TYPES = {k.lower(): k for k in EVENT_TYPES}


class KitError(PatchbayError):
    """A refused operation; ``not_found`` when the kit or input is missing."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


def declared(kit: KitRecord) -> list[KitSetting]:
    """The settings ``kit`` declares."""
    return msgspec.convert(kit.settings, list[KitSetting])


def subscription_id(kit: str, input_id: str, development: bool) -> int:
    """A new connection's ``eventSubscriptionId``: a positive 31-bit number of its own
    (kept when the connection is replaced)."""
    digest = hashlib.sha256(f"{kit}\0{input_id}\0{development}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF or 1


def workspace_token(input_id: str) -> str:
    """The input's stable ``workspaceToken`` (the SDK names its browser storage after it)."""
    return hashlib.sha256(f"workspace\0{input_id}".encode()).hexdigest()[:12].upper()


def check_filters(filters: KitFilters) -> KitFilters:
    """``filters`` with event types and identity types in the SDK's spelling; raises
    :class:`KitError` naming every unknown one."""
    problems: list[str] = []
    types: list[str] = []
    for name in filters.event_types:
        if name.lower() in _EVENT_TYPES:
            types.append(_EVENT_TYPES[name.lower()])
        else:
            problems.append(f"unknown event type {name!r} (known: {', '.join(EVENT_TYPES)})")
    identities: list[str] = []
    for name in filters.user_identities:
        if name.lower() in IDENTITY_TYPES:
            identities.append(name.lower())
        else:
            known = ", ".join(IDENTITY_TYPES)
            problems.append(f"unknown user identity type {name!r} (known: {known})")
    for what, names in (
        ("event name", filters.event_names),
        ("screen name", filters.screen_names),
        ("user attribute", filters.user_attributes),
    ):
        problems.extend(f"empty {what} filter" for n in names if not n.strip())
    if problems:
        raise KitError("; ".join(problems))
    return msgspec.structs.replace(filters, event_types=types, user_identities=identities)


def _event_name_hashes(names: Sequence[str]) -> list[int]:
    hashes: list[int] = []
    for entry in names:
        prefix, sep, name = entry.partition(":")
        if sep and prefix.lower() in _EVENT_TYPES:
            hashes.append(event_name_hash(EVENT_TYPES[_EVENT_TYPES[prefix.lower()]], name))
        else:
            hashes.extend(event_name_hash(t, entry) for t in CUSTOM_EVENT_TYPES)
    return list(dict.fromkeys(hashes))


def kit_config(kit: KitRecord, connection: KitConnection) -> dict[str, Any]:
    """One entry of the config's ``kitConfigs``: settings as the strings kits read
    (booleans ``"True"``/``"False"``), confidential ones included, and the filters hashed
    as the SDK hashes what it checks against them."""
    booleans = {s.id for s in declared(kit) if isinstance(s, BooleanSetting)}
    values = {**connection.settings, **connection.secrets}
    settings = {
        k: (("True" if v == "true" else "False") if k in booleans else v) for k, v in values.items()
    }
    filters = connection.filters
    debug = connection.development
    entry: dict[str, Any] = {"name": kit.name}
    if kit.suffix:
        entry["suffix"] = kit.suffix
    entry.update(
        {
            "moduleId": kit.module_id,
            "isDebug": debug,
            "isVisible": True,
            "isDebugString": "true" if debug else "false",
            "hasDebugString": "false",
            "settings": settings,
            "eventSubscriptionId": connection.event_subscription_id,
            "excludeAnonymousUser": False,
            "eventTypeFilters": [event_type_hash(EVENT_TYPES[t]) for t in filters.event_types],
            "eventNameFilters": _event_name_hashes(filters.event_names),
            "screenNameFilters": [event_name_hash(PAGE_VIEW_TYPE, n) for n in filters.screen_names],
            "screenAttributeFilters": [],
            "attributeFilters": [],
            "userAttributeFilters": [user_attribute_hash(a) for a in filters.user_attributes],
            "userIdentityFilters": [IDENTITY_TYPES[i] for i in filters.user_identities],
            "consentRegulationFilters": [],
            "consentRegulationPurposeFilters": [],
            "messageTypeFilters": [],
            "messageTypeStateFilters": [],
        }
    )
    return entry


def kit_summary(kit: KitRecord) -> dict[str, Any]:
    """A kit for people: its declaration."""
    return {
        "key": kit.key,
        "name": kit.name,
        "suffix": kit.suffix,
        "module_id": kit.module_id,
        "description": kit.description,
        "settings": kit.settings,
        "created_at": iso_ms(kit.created_at_ms),
        "updated_at": iso_ms(kit.updated_at_ms),
    }


class KitService:
    """Kits and their connections over the stores."""

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self.kits = backend.kits
        self.inputs = backend.inputs
        self.clock = clock

    # -- kits ----------------------------------------------------------------------------

    def register(self, raw: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
        """Register (or update) the kit a descriptor describes; its summary with
        ``action`` (``register`` or ``update``) and ``warnings``. Raises
        :class:`~patchbay.kits.descriptor.DescriptorError` listing every problem."""
        descriptor, warnings = parse_descriptor(raw)
        now = self.clock.now_ms()
        record = KitRecord(
            key=descriptor.key,
            name=descriptor.name,
            suffix=descriptor.suffix,
            module_id=descriptor.module_id,
            description=descriptor.description,
            settings=msgspec.to_builtins(descriptor.settings),
            created_at_ms=now,
            updated_at_ms=now,
        )
        replaced = self.kits.put_kit(record)
        action = "update" if replaced else "register"
        config_changed("kit", record.key, action, module_id=record.module_id)
        stored = self.kits.get_kit(record.key) or record
        return {**kit_summary(stored), "action": action, "warnings": _lines(warnings)}

    def kit(self, name: str) -> KitRecord:
        """The kit with this key, or the one kit with this SDK name."""
        found = self.kits.get_kit(name)
        if found is not None:
            return found
        named = [k for k in self.kits.list_kits() if k.name == name]
        if len(named) == 1:
            return named[0]
        if named:
            keys = ", ".join(k.key for k in named)
            raise KitError(f"several kits are named {name!r}: say which ({keys})")
        raise KitError(f"no kit named {name!r} (see `patchbay kits list`)", not_found=True)

    def list_kits(self) -> list[dict[str, Any]]:
        """Every kit, with how many connections it has."""
        counts: dict[str, int] = {}
        for c in self.kits.list_kit_connections():
            counts[c.kit] = counts.get(c.kit, 0) + 1
        return [
            {**kit_summary(k), "connections": counts.get(k.key, 0)} for k in self.kits.list_kits()
        ]

    def show(self, name: str) -> dict[str, Any]:
        """A kit with its connections and the forwarding the SDK reported for it."""
        kit = self.kit(name)
        totals = {f.kit: f for f in self.kits.forwarded()}.get(kit.name)
        connections = [
            self._connection_summary(kit, c)
            for c in self.kits.list_kit_connections()
            if c.kit == kit.key
        ]
        forwarded = {
            "events": totals.events if totals else 0,
            "last_seen": iso_ms(totals.last_seen_ms) if totals else None,
        }
        return {**kit_summary(kit), "connections": connections, "forwarded": forwarded}

    def unregister(self, name: str) -> dict[str, Any]:
        """Remove a kit that has no connections."""
        kit = self.kit(name)
        if not self.kits.delete_kit(kit.key):
            connected = [c for c in self.kits.list_kit_connections() if c.kit == kit.key]
            if connected:
                raise KitError(
                    f"kit {kit.key!r} is connected to {len(connected)} input(s): disconnect"
                    " it first (`patchbay kits disconnect`)"
                )
            raise KitError(f"no kit named {name!r}", not_found=True)
        config_changed("kit", kit.key, "delete")
        return {"key": kit.key, "action": "unregister"}

    # -- connections ---------------------------------------------------------------------

    def _web_input(self, name_or_id: str) -> Input:
        found = self.inputs.get_input(name_or_id)
        if found is None:
            raise KitError(
                f"no input named {name_or_id!r} (see `patchbay inputs list`)", not_found=True
            )
        if found.type != KEY_ONLY_TYPE:
            raise KitError(
                f"input {found.name!r} is a {found.type} input: kits run in the browser and"
                f" connect to web inputs only"
            )
        return found

    def connect(
        self,
        name: str,
        input_: str,
        settings: Mapping[str, str],
        *,
        development: bool = False,
        filters: KitFilters | None = None,
    ) -> dict[str, Any]:
        """Connect a kit to a web input (or replace that connection) with setting values
        checked against its declarations; the connection with ``action`` (``add`` or
        ``update``)."""
        kit = self.kit(name)
        found = self._web_input(input_)
        definitions = declared(kit)
        try:
            values = validate_settings(definitions, dict(settings), "kit")
        except SettingError as exc:
            raise KitError(str(exc)) from None
        secret = confidential_ids(definitions)
        now = self.clock.now_ms()
        connection = KitConnection(
            kit=kit.key,
            input_id=found.id,
            development=development,
            event_subscription_id=subscription_id(kit.key, found.id, development),
            created_at_ms=now,
            updated_at_ms=now,
            settings={k: v for k, v in values.items() if k not in secret},
            secrets={k: v for k, v in values.items() if k in secret},
            filters=check_filters(filters or KitFilters()),
        )
        replaced = self.kits.put_kit_connection(connection)
        action = "update" if replaced else "add"
        environment = _environment(development)
        config_changed("kit_connection", kit.key, action, input=found.name, environment=environment)
        stored = next(
            (
                c
                for c in self.kits.list_kit_connections()
                if (c.kit, c.input_id, c.development) == (kit.key, found.id, development)
            ),
            connection,
        )
        return {**self._connection_summary(kit, stored, found), "action": action}

    def disconnect(self, name: str, input_: str, *, development: bool = False) -> dict[str, Any]:
        """Remove a kit's connection to an input in one environment."""
        kit = self.kit(name)
        found = self.inputs.get_input(input_)
        if found is None:
            raise KitError(f"no input named {input_!r}", not_found=True)
        environment = _environment(development)
        if not self.kits.remove_kit_connection(kit.key, found.id, development):
            raise KitError(
                f"kit {kit.key!r} is not connected to {found.name!r} in {environment}",
                not_found=True,
            )
        config_changed(
            "kit_connection", kit.key, "delete", input=found.name, environment=environment
        )
        return {"kit": kit.key, "input": found.name, "environment": environment}

    def _connection_summary(
        self, kit: KitRecord, connection: KitConnection, input_: Input | None = None
    ) -> dict[str, Any]:
        input_ = input_ or self.inputs.get_input(connection.input_id)
        values = {**connection.settings, **connection.secrets}
        return {
            "kit": kit.key,
            "input": input_.name if input_ else connection.input_id,
            "input_id": connection.input_id,
            "environment": _environment(connection.development),
            "event_subscription_id": connection.event_subscription_id,
            "settings": masked(values, set(connection.secrets)),
            "filters": msgspec.to_builtins(connection.filters),
            "created_at": iso_ms(connection.created_at_ms),
            "updated_at": iso_ms(connection.updated_at_ms),
        }

    # -- the Web SDK -----------------------------------------------------------------------

    def web_input(self, key: str) -> Input | None:
        """The enabled web input whose enabled key this is."""
        return web_input(self.inputs, key)

    def kit_configs(self, input_id: str, development: bool) -> list[dict[str, Any]]:
        """The ``kitConfigs`` of an input's config in one environment."""
        kits = {k.key: k for k in self.kits.list_kits()}
        return [
            kit_config(kits[c.kit], c)
            for c in self.kits.list_kit_connections()
            if c.input_id == input_id and c.development == development and c.kit in kits
        ]

    def module_names(self) -> dict[int, str]:
        """Kit names by module id (for the forwarding statistics)."""
        return {k.module_id: k.name for k in self.kits.list_kits()}


def _environment(development: bool) -> str:
    return "development" if development else "production"


def _lines(problems: Sequence[Problem]) -> list[str]:
    return [str(p) for p in problems]
