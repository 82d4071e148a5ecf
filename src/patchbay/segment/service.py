"""The operations on audiences, shared by the CLI (``patchbay audiences``) and the admin HTTP
API: define, change, list, show and delete audiences, read their members, and connect them
to outputs. Every answer is plain JSON data with confidential settings masked; problems
raise :class:`AudienceError` (``not_found`` tells a missing thing from a bad request).

Definitions are checked whole before anything is written: a definition that does not parse,
refers to an audience that does not exist or makes a cycle of references changes nothing.
Connecting an audience to an output, changing a connection, renaming a connected audience or
changing its description, disconnecting it and deleting it each put an
``audience_subscription_request`` for the output in the outbox
(:mod:`patchbay.segment.subscriptions`); the delivery engine sends it and records the
partner's answer. Memberships are computed by the segment stage, in ``patchbay serve``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from patchbay.activate.outputs import confidential_ids, iso_ms, masked, validate_settings
from patchbay.backends.abstract import Backend
from patchbay.backends.records import (
    AudienceBuild,
    AudienceConnection,
    AudienceRecord,
    Delivery,
    DuplicateName,
    ModuleDestination,
    Output,
)
from patchbay.clock import Clock
from patchbay.errors import PatchbayError
from patchbay.firehose import ModuleRegistrationResponse, SettingError
from patchbay.logs import config_changed
from patchbay.retention import retained
from patchbay.segment.criteria import Definition, references
from patchbay.segment.parse import (
    DefinitionError,
    check_references,
    definition_document,
    load_definition,
    parse_definition,
)
from patchbay.segment.subscriptions import (
    SubscriptionAction,
    subscription_request,
    subscription_settings_of,
)

#: The most members one page answers.
MAX_PAGE: Final = 10_000
#: A page of members when none is asked for.
DEFAULT_PAGE: Final = 1_000

#: The status of an audience whose current version has no build yet (the stage has not
#: started it: ``patchbay serve`` is not running, or is busy with another build).
BUILDING: Final = "building"


class AudienceError(PatchbayError):
    """A refused operation; ``not_found`` when the audience, output or module is missing."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


def _definition_error(exc: DefinitionError, where: str | None = None) -> AudienceError:
    """An :class:`AudienceError` for a :class:`DefinitionError` (its JSON path and reason)."""
    place = f" in {where}" if where else ""
    at = f" at {exc.path}" if exc.path else ""
    return AudienceError(f"invalid audience definition{place}{at}: {exc.reason}")


class AudienceService:
    """Audiences and their connections to outputs, over a backend's stores."""

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self.audiences = backend.audiences
        self.log = backend.log
        self.outputs = backend.outputs
        self.modules = backend.modules
        self.outbox = backend.outbox
        self.clock = clock

    # -- definitions ---------------------------------------------------------------------

    @staticmethod
    def _parse(
        text_or_document: str | bytes | Mapping[str, Any], filename: str | None
    ) -> Definition:
        try:
            if isinstance(text_or_document, Mapping):
                return parse_definition(text_or_document)
            return load_definition(text_or_document, filename)
        except DefinitionError as exc:
            raise _definition_error(exc, filename) from None

    @staticmethod
    def _stored_definition(record: AudienceRecord) -> Definition:
        try:
            return parse_definition(msgspec.json.decode(record.definition))
        except (DefinitionError, msgspec.DecodeError) as exc:
            raise AudienceError(
                f"the stored definition of audience {record.name!r} no longer reads: {exc}"
            ) from None

    def _definitions(self) -> dict[str, Definition]:
        """Every stored audience's definition, by name."""
        return {a.name: self._stored_definition(a) for a in self.audiences.list_audiences()}

    @staticmethod
    def _check(definitions: Mapping[str, Definition]) -> None:
        try:
            check_references(definitions)
        except DefinitionError as exc:
            raise _definition_error(exc) from None

    @staticmethod
    def _encoded(definition: Definition) -> bytes:
        return msgspec.json.encode(definition_document(definition))

    @staticmethod
    def _users_of(name: str, definitions: Mapping[str, Definition]) -> list[str]:
        """The audiences whose criteria refer to audience ``name`` (itself left out)."""
        return sorted(
            other
            for other, definition in definitions.items()
            if other != name and name in references(definition.criteria)
        )

    # -- lookups -------------------------------------------------------------------------

    def _audience(self, name: str | int) -> AudienceRecord:
        """The audience with this name (or, failing that, this numeric id)."""
        found = self.audiences.get_audience(name)
        if found is None and isinstance(name, str) and (number := _audience_id(name)) is not None:
            found = self.audiences.get_audience(number)
        if found is None:
            raise AudienceError(
                f"no audience named {name!r} (see `patchbay audiences list`)", not_found=True
            )
        return found

    def _output(self, name: str) -> Output:
        output = self.outputs.get_output(name)
        if output is None:
            raise AudienceError(
                f"no output named {name!r} (see `patchbay outputs list`)", not_found=True
            )
        return output

    def _audience_registration(self, output: Output) -> ModuleRegistrationResponse:
        """The registration of ``output``'s module, which must process audiences."""
        from patchbay.partner.registration import registration_of

        destination = output.destination
        if not isinstance(destination, ModuleDestination):
            raise AudienceError(
                f"output {output.name!r} is a {output.kind} output: audiences go only to"
                " module outputs whose module registered audience processing"
            )
        module = self.modules.get_module(destination.module)
        if module is None:
            raise AudienceError(
                f"output {output.name!r} sends to module {destination.module!r}, which is not"
                " registered (see `patchbay modules list`)",
                not_found=True,
            )
        registration = registration_of(module)
        if registration.audience_processing_registration is None:
            raise AudienceError(
                f"module {destination.module!r} (output {output.name!r}) does not process"
                " audiences: its registration has no audience_processing_registration"
            )
        return registration

    def _connections(self, audience_id: int) -> list[AudienceConnection]:
        return [
            c for c in self.audiences.list_audience_connections() if c.audience_id == audience_id
        ]

    def _secret(self, output_name: str) -> set[str]:
        """The confidential subscription settings of an output's module (none when it is
        gone or takes no audiences)."""
        output = self.outputs.get_output(output_name)
        if output is None:
            return set()
        try:
            registration = self._audience_registration(output)
        except AudienceError:
            return set()
        return confidential_ids(subscription_settings_of(registration))

    # -- subscriptions -------------------------------------------------------------------

    def _subscription(
        self,
        audience: AudienceRecord,
        connection: AudienceConnection,
        action: SubscriptionAction,
        previous: dict[str, str] | None = None,
    ) -> Delivery | None:
        """The subscription request for a connection (``None`` when its output or module
        is gone or no longer takes audiences: there is nobody to tell)."""
        output = self.outputs.get_output(connection.output)
        if output is None:
            return None
        try:
            registration = self._audience_registration(output)
        except AudienceError:
            return None
        return subscription_request(
            output,
            registration,
            audience,
            connection,
            action,
            previous,
            now_ms=self.clock.now_ms(),
        )

    def _enqueue(self, deliveries: Sequence[Delivery | None]) -> int:
        found = [d for d in deliveries if d is not None]
        return self.outbox.enqueue(found) if found else 0

    # -- audiences -----------------------------------------------------------------------

    def create(
        self, text_or_document: str | bytes | Mapping[str, Any], filename: str | None = None
    ) -> dict[str, Any]:
        """Define a new audience from a JSON or YAML definition (text, or the parsed
        document); nothing is stored when anything is wrong."""
        definition = self._parse(text_or_document, filename)
        if self.audiences.get_audience(definition.name) is not None:
            raise AudienceError(f"an audience named {definition.name!r} already exists")
        self._check({**self._definitions(), definition.name: definition})
        now = self.clock.now_ms()
        try:
            stored = self.audiences.add_audience(
                AudienceRecord(
                    id=0,
                    name=definition.name,
                    description=definition.description,
                    definition=self._encoded(definition),
                    created_at_ms=now,
                    updated_at_ms=now,
                    version=1,
                )
            )
        except DuplicateName as exc:
            raise AudienceError(str(exc)) from None
        config_changed("audience", stored.name, "create", id=stored.id)
        return self._summary(stored, self.audiences.sizes(), self._builds())

    def update(
        self,
        name: str,
        text_or_document: str | bytes | Mapping[str, Any],
        filename: str | None = None,
    ) -> dict[str, Any]:
        """Replace audience ``name``'s definition. Its version grows only when the criteria
        change (the stage then computes it again). A rename needs a free name and is refused
        while other audiences refer to the old one. A new name or description is sent to
        every connected output (``update``)."""
        current = self._audience(name)
        definition = self._parse(text_or_document, filename)
        definitions = self._definitions()
        renamed = definition.name != current.name
        if renamed:
            taken = self.audiences.get_audience(definition.name)
            if taken is not None and taken.id != current.id:
                raise AudienceError(f"an audience named {definition.name!r} already exists")
            users = self._users_of(current.name, definitions)
            if users:
                raise AudienceError(
                    f"audience {current.name!r} cannot be renamed: {', '.join(map(repr, users))}"
                    " refer to it by name (change them first)"
                )
        before = definitions.pop(current.name, None) or self._stored_definition(current)
        self._check({**definitions, definition.name: definition})
        criteria_changed = before.criteria != definition.criteria
        encoded = self._encoded(definition)
        described = definition.description != current.description
        if not renamed and not described and encoded == current.definition:
            return {**self.show(current.name), "criteria_changed": False}
        updated = msgspec.structs.replace(
            current,
            name=definition.name,
            description=definition.description,
            definition=encoded,
            version=current.version + 1 if criteria_changed else current.version,
            updated_at_ms=self.clock.now_ms(),
        )
        try:
            if not self.audiences.update_audience(updated):
                raise AudienceError(f"audience {name!r} was deleted meanwhile", not_found=True)
        except DuplicateName as exc:
            raise AudienceError(str(exc)) from None
        config_changed(
            "audience",
            updated.name,
            "update",
            id=updated.id,
            version=updated.version,
            criteria_changed=criteria_changed,
            renamed_from=current.name if renamed else None,
        )
        if renamed or described:
            self._enqueue(
                [
                    self._subscription(updated, c, "update", dict(c.settings))
                    for c in self._connections(updated.id)
                ]
            )
        return {**self.show(updated.name), "criteria_changed": criteria_changed}

    def _builds(self) -> dict[int, AudienceBuild]:
        return {b.audience_id: b for b in self.audiences.builds()}

    def _progress(self, audience: AudienceRecord, build: AudienceBuild | None) -> dict[str, Any]:
        """How far the stage got with the audience's current version."""
        if build is None or build.version != audience.version:
            return {
                "phase": BUILDING,
                "version": audience.version,
                "users_done": 0,
                "users_total": 0,
                "started_at": None,
                "finished_at": None,
            }
        return {
            "phase": build.phase,
            "version": build.version,
            "users_done": build.users_done,
            "users_total": build.users_total,
            "started_at": iso_ms(build.started_at_ms),
            "finished_at": iso_ms(build.finished_at_ms),
        }

    def _summary(
        self,
        audience: AudienceRecord,
        sizes: Mapping[int, int],
        builds: Mapping[int, AudienceBuild],
    ) -> dict[str, Any]:
        progress = self._progress(audience, builds.get(audience.id))
        return {
            "id": audience.id,
            "name": audience.name,
            "description": audience.description,
            "version": audience.version,
            "size": sizes.get(audience.id, 0),
            "status": progress["phase"],
            "build": progress,
            "created_at": iso_ms(audience.created_at_ms),
            "updated_at": iso_ms(audience.updated_at_ms),
        }

    def conditions_progress(self) -> dict[str, int]:
        """The event conditions the stage is still counting over the stored log
        (``building``) and how many batches it scanned for them so far."""
        building = [c for c in self.audiences.conditions() if c.status == "building"]
        return {"building": len(building), "scanned": sum(c.scanned for c in building)}

    def show(self, name: str) -> dict[str, Any]:
        """One audience: its definition document, size, build progress and connections."""
        audience = self._audience(name)
        summary = self._summary(audience, self.audiences.sizes(), self._builds())
        if summary["status"] != "live":
            summary["build"]["conditions"] = self.conditions_progress()
            summary["build"]["history"] = [r.document() for r in retained(self.log)]
        summary["definition"] = msgspec.json.decode(audience.definition)
        summary["connections"] = [
            self._connection_summary(audience, c, self._secret(c.output))
            for c in self._connections(audience.id)
        ]
        return summary

    def progress(self, name: str) -> dict[str, Any]:
        """What following a build needs, cheaply: the audience's id, name, version, size,
        status and build progress (with the conditions still being counted)."""
        audience = self._audience(name)
        summary = self._summary(audience, self.audiences.sizes(), self._builds())
        summary["build"]["conditions"] = self.conditions_progress()
        summary["build"]["history"] = [r.document() for r in retained(self.log)]
        return summary

    def members(
        self, name: str, after: int | None = None, limit: int = DEFAULT_PAGE
    ) -> dict[str, Any]:
        """A page of the audience's members (MPIDs above ``after``, ascending); ``next`` is
        the ``after`` of the next page (``None``: this is the last)."""
        if not 1 <= limit <= MAX_PAGE:
            raise AudienceError(f"limit must be between 1 and {MAX_PAGE}")
        if after is not None and not -(2**63) <= after < 2**63:
            raise AudienceError("after must be an MPID (a signed 64-bit integer)")
        audience = self._audience(name)
        page = self.audiences.members(audience.id, after, limit)
        return {
            "id": audience.id,
            "name": audience.name,
            "members": page,
            "next": page[-1] if len(page) == limit else None,
        }

    def delete(self, name: str) -> dict[str, Any]:
        """Delete an audience (refused while others refer to it); every output it is
        connected to gets a ``remove`` first."""
        audience = self._audience(name)
        users = self._users_of(audience.name, self._definitions())
        if users:
            raise AudienceError(
                f"audience {audience.name!r} cannot be deleted: {', '.join(map(repr, users))}"
                " refer to it (change or delete them first)"
            )
        connections = self._connections(audience.id)
        self._enqueue([self._subscription(audience, c, "remove") for c in connections])
        self.audiences.delete_audience(audience.id)
        config_changed("audience", audience.name, "delete", id=audience.id)
        return {
            "id": audience.id,
            "name": audience.name,
            "deleted": True,
            "disconnected": [c.output for c in connections],
        }

    def memberships(self, mpid: int) -> list[dict[str, Any]]:
        """The audiences ``mpid`` belongs to (``audience_id``, ``audience_name``), by id."""
        found = []
        for audience_id in self.audiences.memberships(mpid):
            audience = self.audiences.get_audience(audience_id)
            if audience is not None:
                found.append({"audience_id": audience.id, "audience_name": audience.name})
        return found

    # -- connections ---------------------------------------------------------------------

    def _connection_summary(
        self, audience: AudienceRecord, connection: AudienceConnection, secret: set[str]
    ) -> dict[str, Any]:
        return {
            "audience": audience.name,
            "audience_id": audience.id,
            "output": connection.output,
            "settings": masked(connection.settings, secret),
            "attributes": list(connection.attributes),
            "partner_settings": masked(connection.partner_settings, secret),
            "subscribed": connection.subscribed_at_ms is not None,
            "subscribed_at": iso_ms(connection.subscribed_at_ms),
            "created_at": iso_ms(connection.created_at_ms),
        }

    def connect(
        self,
        name: str,
        output: str,
        settings: Mapping[str, str] | None = None,
        attributes: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Send audience ``name`` to ``output`` (a module output whose module processes
        audiences), with subscription ``settings`` and the user ``attributes`` to send with
        its members. Connecting again with other settings or attributes changes the
        connection (``update``); with the same ones it changes nothing."""
        audience = self._audience(name)
        target = self._output(output)
        registration = self._audience_registration(target)
        declared = subscription_settings_of(registration)
        try:
            values = validate_settings(declared, dict(settings or {}), "audience subscription")
        except SettingError as exc:
            raise AudienceError(str(exc)) from None
        wanted = _attributes(attributes)
        permissions = registration.permissions
        if wanted and not (permissions and permissions.allow_audience_user_attributes):
            raise AudienceError(
                f"the module of output {output!r} does not accept user attributes with"
                " audiences (its permissions lack allow_audience_user_attributes):"
                " connect without attributes"
            )
        existing = next((c for c in self._connections(audience.id) if c.output == output), None)
        action: SubscriptionAction | None
        if existing is None:
            connection = AudienceConnection(
                audience_id=audience.id,
                output=output,
                created_at_ms=self.clock.now_ms(),
                settings=values,
                attributes=wanted,
            )
            action = "add"
        elif existing.settings == values and list(existing.attributes) == wanted:
            connection, action = existing, None
        else:
            connection = msgspec.structs.replace(existing, settings=values, attributes=wanted)
            action = "update"
        if action is not None:
            self.audiences.put_audience_connection(connection)
            config_changed(
                "audience_connection",
                audience.name,
                "create" if action == "add" else action,
                output=output,
            )
            previous = dict(existing.settings) if existing is not None else None
            self._enqueue(
                [
                    subscription_request(
                        target,
                        registration,
                        audience,
                        connection,
                        action,
                        previous,
                        now_ms=self.clock.now_ms(),
                    )
                ]
            )
        summary = self._connection_summary(audience, connection, confidential_ids(declared))
        summary["action"] = action
        return summary

    def disconnect(self, name: str, output: str) -> dict[str, Any]:
        """Stop sending audience ``name`` to ``output``: the output gets a ``remove``."""
        audience = self._audience(name)
        connection = next((c for c in self._connections(audience.id) if c.output == output), None)
        if connection is None:
            raise AudienceError(
                f"audience {audience.name!r} is not connected to {output!r}", not_found=True
            )
        self._enqueue([self._subscription(audience, connection, "remove")])
        self.audiences.remove_audience_connection(audience.id, output)
        config_changed("audience_connection", audience.name, "delete", output=output)
        return {
            "audience": audience.name,
            "audience_id": audience.id,
            "output": output,
            "removed": True,
        }

    # -- listing (last: the name shadows the builtin in the class body) ----------------

    def list(self) -> list[dict[str, Any]]:
        """Every audience, with its size, build status and the outputs it is connected to."""
        sizes, builds = self.audiences.sizes(), self._builds()
        outputs: dict[int, list[str]] = {}
        for connection in self.audiences.list_audience_connections():
            outputs.setdefault(connection.audience_id, []).append(connection.output)
        found = []
        for audience in self.audiences.list_audiences():
            summary = self._summary(audience, sizes, builds)
            summary["outputs"] = outputs.get(audience.id, [])
            found.append(summary)
        return found


def _audience_id(name: str) -> int | None:
    """``name`` as an audience id, if it is one: ASCII digits (``isdigit()`` also takes
    ``"³"``, which ``int()`` refuses) within the store's 64-bit integers."""
    if not (name.isascii() and name.isdigit()):
        return None
    number = int(name)
    return number if number < 2**63 else None


def _attributes(attributes: Sequence[str]) -> list[str]:
    """The user attribute keys to send, trimmed, without repeats, in the order given."""
    found: dict[str, None] = {}
    for key in attributes:
        if not isinstance(key, str) or not key.strip():
            raise AudienceError("a user attribute to send is a non-empty key")
        found[key.strip()] = None
    return list(found)
