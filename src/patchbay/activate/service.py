"""The operations on outputs, connections and deliveries, shared by the CLI and the admin
HTTP API. Every answer is plain JSON data with confidential settings masked; problems raise
:class:`ActivateError` (``not_found`` tells a missing thing from a bad request)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from patchbay.activate.files import OutputPathError, OutputsDir
from patchbay.activate.filters import ENVIRONMENTS
from patchbay.activate.outputs import (
    WEBHOOK_SETTINGS,
    account_settings_of,
    check_name,
    check_webhook_url,
    confidential_ids,
    connection_settings_of,
    connection_summary,
    iso_ms,
    output_summary,
    status_row,
    validate_settings,
)
from patchbay.activate.targets import TargetPolicy
from patchbay.backends.abstract import Backend
from patchbay.backends.records import (
    Connection,
    Delivery,
    Destination,
    DuplicateName,
    FileDestination,
    Filters,
    ModuleDestination,
    Output,
    WebhookDestination,
)
from patchbay.clock import Clock
from patchbay.collect.events import EVENT_TYPES
from patchbay.errors import PatchbayError
from patchbay.firehose import ModuleRegistrationResponse
from patchbay.firehose.errors import SettingError
from patchbay.firehose.settings import Setting
from patchbay.logs import config_changed
from patchbay.settings import Settings

log = structlog.get_logger("patchbay.activate")


class ActivateError(PatchbayError):
    """A refused operation; ``not_found`` when the output, input or module is missing."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


class ActivateService:
    """Outputs, connections and deliveries over the stores. ``targets``: where webhooks may
    send; ``files``: the outputs directory file outputs must be in (``None``: file outputs
    are refused). :meth:`from_settings` takes both from the settings."""

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        *,
        targets: TargetPolicy | None = None,
        files: OutputsDir | None = None,
    ) -> None:
        self.outputs = backend.outputs
        self.outbox = backend.outbox
        self.modules = backend.modules
        self.inputs = backend.inputs
        self.clock = clock
        self.targets = targets or TargetPolicy()
        self.files = files

    @classmethod
    def from_settings(cls, backend: Backend, clock: Clock, settings: Settings) -> ActivateService:
        """The service with the target policy (``allowed_targets``) and the outputs directory
        (``outputs_dir``) of ``settings``."""
        return cls(
            backend,
            clock,
            targets=TargetPolicy.from_setting(settings.allowed_targets),
            files=OutputsDir.from_settings(settings),
        )

    # -- helpers -------------------------------------------------------------------------

    def _registration(self, module_name: str) -> ModuleRegistrationResponse:
        from patchbay.partner.registration import registration_of

        module = self.modules.get_module(module_name)
        if module is None:
            raise ActivateError(
                f"no module named {module_name!r} (see `patchbay modules list`)", not_found=True
            )
        registration = registration_of(module)
        if (
            registration.event_processing_registration is None
            and registration.audience_processing_registration is None
        ):
            raise ActivateError(f"module {module_name!r} processes neither events nor audiences")
        return registration

    def _output(self, name: str) -> Output:
        output = self.outputs.get_output(name)
        if output is None:
            raise ActivateError(
                f"no output named {name!r} (see `patchbay outputs list`)", not_found=True
            )
        return output

    def _definitions(self, output: Output) -> tuple[list[Setting], list[Setting]]:
        """(account or webhook settings, connection settings) of an output."""
        match output.destination:
            case ModuleDestination(module=name):
                module = self.modules.get_module(name)
                if module is None:
                    return [], []
                from patchbay.partner.registration import registration_of

                registration = registration_of(module)
                return account_settings_of(registration), connection_settings_of(registration)
            case WebhookDestination():
                return list(WEBHOOK_SETTINGS), []
            case FileDestination():
                return [], []

    def _secret(self, output: Output) -> tuple[set[str], set[str]]:
        account, connection = self._definitions(output)
        return confidential_ids(account), confidential_ids(connection)

    # -- outputs -------------------------------------------------------------------------

    def add_output(
        self,
        name: str,
        *,
        module: str | None = None,
        webhook: str | None = None,
        file: str | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create an output of exactly one kind; its settings are validated."""
        given = dict(settings or {})
        if sum(x is not None for x in (module, webhook, file)) != 1:
            raise ActivateError("give exactly one of --module, --webhook or --file")
        now = self.clock.now_ms()
        try:
            check_name(name)
            destination: Destination
            if module is not None:
                registration = self._registration(module)
                values = validate_settings(account_settings_of(registration), given, "account")
                destination = ModuleDestination(module)
            elif webhook is not None:
                values = validate_settings(WEBHOOK_SETTINGS, given, "webhook")
                values = {k: v for k, v in values.items() if v}
                url = check_webhook_url(webhook, self.targets, token=bool(values.get("token")))
                destination = WebhookDestination(url)
            else:
                assert file is not None
                values = validate_settings([], given, "file")
                if self.files is None:
                    raise ActivateError("file outputs need an outputs directory (outputs_dir)")
                destination = FileDestination(str(self.files.place(file)))
            output = Output(name, destination, now, now, settings=values)
        except (SettingError, OutputPathError) as exc:
            raise ActivateError(str(exc)) from None
        try:
            self.outputs.add_output(output)
        except DuplicateName as exc:
            raise ActivateError(str(exc)) from None
        config_changed("output", name, "create", output_kind=output.kind)
        return self.show_output(name)

    def list_outputs(self) -> list[dict[str, Any]]:
        """Every output."""
        return [output_summary(o, self._secret(o)[0]) for o in self.outputs.list_outputs()]

    def show_output(self, name: str) -> dict[str, Any]:
        """One output, with its connections and queue."""
        output = self._output(name)
        account_secret, connection_secret = self._secret(output)
        summary = output_summary(output, account_secret)
        summary["connections"] = [
            connection_summary(c, self._input_name(c.input_id), connection_secret)
            for c in self.outputs.list_connections()
            if c.output == name
        ]
        summary["queue"] = status_row(
            output,
            self.outbox.stats().get(name),
            self.outputs.circuits().get(name),
            self.clock.now_ms(),
        )
        return summary

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        """Pause or resume an output."""
        self._output(name)
        reason = "paused by an operator" if paused else None
        self.outputs.set_paused(name, paused, reason, self.clock.now_ms())
        config_changed("output", name, "pause" if paused else "resume")
        return self.show_output(name)

    def status(self) -> list[dict[str, Any]]:
        """One row per output: state, circuit breaker, queue depth, parked, oldest pending
        age."""
        stats = self.outbox.stats()
        circuits = self.outputs.circuits()
        now = self.clock.now_ms()
        return [
            status_row(o, stats.get(o.name), circuits.get(o.name), now)
            for o in self.outputs.list_outputs()
        ]

    # -- connections ---------------------------------------------------------------------

    def _input_name(self, input_id: str) -> str | None:
        item = self.inputs.get_input(input_id)
        return item.name if item else None

    def add_connection(
        self,
        *,
        input_: str,
        output: str,
        settings: Mapping[str, str] | None = None,
        filters: Filters | None = None,
    ) -> dict[str, Any]:
        """Connect an input (name or id) to an output."""
        item = self.inputs.get_input(input_)
        if item is None:
            raise ActivateError(
                f"no input named {input_!r} (see `patchbay inputs list`)", not_found=True
            )
        target = self._output(output)
        if isinstance(target.destination, ModuleDestination):
            module = self._registration(target.destination.module)
            if module.event_processing_registration is None:
                raise ActivateError(
                    f"output {output!r} takes audiences only (its module does not process"
                    " events): connect audiences to it with `patchbay audiences connect`"
                )
        filters = filters or Filters()
        problems = check_filters(filters)
        if problems:
            raise ActivateError("; ".join(problems))
        _, definitions = self._definitions(target)
        try:
            values = validate_settings(definitions, dict(settings or {}), "connection")
        except SettingError as exc:
            raise ActivateError(str(exc)) from None
        connection = Connection(
            id=uuid.uuid4().hex[:12],
            input_id=item.id,
            output=output,
            created_at_ms=self.clock.now_ms(),
            settings=values,
            filters=filters,
        )
        try:
            self.outputs.add_connection(connection)
        except DuplicateName:
            raise ActivateError(f"input {item.name!r} is already connected to {output!r}") from None
        config_changed("connection", connection.id, "create", input=item.name, output=output)
        return connection_summary(connection, item.name, confidential_ids(definitions))

    def list_connections(self) -> list[dict[str, Any]]:
        """Every connection."""
        found = []
        for c in self.outputs.list_connections():
            output = self.outputs.get_output(c.output)
            secret = self._secret(output)[1] if output else set()
            found.append(connection_summary(c, self._input_name(c.input_id), secret))
        return found

    def remove_connection(
        self,
        connection_id: str | None = None,
        *,
        input_: str | None = None,
        output: str | None = None,
    ) -> int:
        """Remove a connection by id, or the one joining ``input_`` to ``output``."""
        if connection_id is None:
            if input_ is None or output is None:
                raise ActivateError("give a connection id, or both --input and --output")
            item = self.inputs.get_input(input_)
            matches = [
                c.id
                for c in self.outputs.list_connections()
                if item is not None and c.input_id == item.id and c.output == output
            ]
        else:
            matches = [connection_id]
        removed = [i for i in matches if self.outputs.remove_connection(i)]
        if not removed:
            raise ActivateError(
                "no such connection (see `patchbay connections list`)", not_found=True
            )
        for gone in removed:
            config_changed("connection", gone, "delete")
        return len(removed)

    # -- deliveries ----------------------------------------------------------------------

    def parked(self, output: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Parked deliveries, oldest first."""
        if output is not None:
            self._output(output)
        return [delivery_summary(d) for d in self.outbox.parked(output, limit)]

    def replay(self, output: str | None = None, ids: Sequence[str] = ()) -> int:
        """Send parked deliveries again (same message ids); return how many."""
        if output is not None:
            self._output(output)
        if output is None and not ids:
            raise ActivateError("give --output OUTPUT, --id ID or --all")
        count = self.outbox.replay(self.clock.now_ms(), output, ids)
        log.info("deliveries_replayed", output=output, ids=len(ids), replayed=count)
        return count

    def replay_all(self) -> int:
        """Send every parked delivery again."""
        count = self.outbox.replay(self.clock.now_ms())
        log.info("deliveries_replayed", output=None, ids=0, replayed=count)
        return count


def delivery_summary(d: Delivery) -> dict[str, Any]:
    """A delivery for people (without its payload)."""
    return {
        "id": d.id,
        "output": d.output,
        "connection_id": d.connection_id,
        "batch_offset": d.batch_offset,
        "state": d.state,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "created_at": iso_ms(d.created_at_ms),
        "parked_at": iso_ms(d.parked_at_ms),
    }


def check_filters(filters: Filters) -> list[str]:
    """What is wrong with ``filters``."""
    problems = []
    if filters.environment is not None and filters.environment not in ENVIRONMENTS:
        problems.append(f"environment must be one of {', '.join(ENVIRONMENTS)}")
    unknown = [t for t in filters.event_types if t not in EVENT_TYPES]
    if unknown:
        problems.append(
            f"unknown event types: {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})"
        )
    if not 0 <= filters.sample_percent <= 100:
        problems.append("sample percent must be between 0 and 100")
    elif not math.isclose(round(steps := filters.sample_percent * 100), steps, abs_tol=1e-6):
        problems.append(
            f"sample percent goes in steps of 0.01 ({filters.sample_percent} is finer:"
            " a sample would be larger than asked)"
        )
    if filters.event_names_keep and filters.event_names_drop:
        problems.append("give event names to keep or to drop, not both")
    if filters.attributes_keep and filters.attributes_drop:
        problems.append("give attributes to keep or to drop, not both")
    return problems
