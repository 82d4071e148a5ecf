"""The activate stage: filters each resolved batch for each connection of its input and
enqueues the message for the output in the durable outbox.

It is a stage of the pipeline (:mod:`patchbay.pipeline`) with a checkpoint of its own; the
outbox commit comes before the checkpoint's, so a crash between the two hands the chunk
over again and that adds nothing (deliveries are keyed by their message id). Connections
and outputs are read again for every chunk, so changes made with the CLI or the admin API
apply at once. The delivery engine (:mod:`patchbay.activate.engine`) sends from the outbox.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import msgspec
import structlog

from patchbay.activate.filters import apply_filters
from patchbay.activate.ids import message_id
from patchbay.backends.abstract import ModuleStore, Outbox, OutputStore
from patchbay.backends.records import (
    Connection,
    Delivery,
    ModuleDestination,
    ModuleRecord,
    Output,
)
from patchbay.clock import Clock
from patchbay.collect.batch import Batch
from patchbay.collect.stamp import StampedBatch, stamp_fields
from patchbay.firehose import ModuleRegistrationResponse, dumps
from patchbay.resolve.stage import IDSYNC_CHANNEL, ResolvedBatch

log = structlog.get_logger("patchbay.activate")


class WebhookPayload(StampedBatch, kw_only=True):
    """The JSON a webhook receives and a JSON-lines file stores: the stamped batch, its user
    and the delivery's id (the same on every retry)."""

    id: str
    output: str
    mpid: int


_encode = msgspec.json.Encoder().encode


def webhook_payload(output: str, resolved: ResolvedBatch, batch: Batch) -> tuple[str, bytes]:
    """The delivery id and JSON body of ``resolved`` (filtered to ``batch``) for ``output``."""
    stored = resolved.stored
    delivery_id = str(message_id(output, stored.batch_id))
    body = stored.body if batch is resolved.batch else _encode(batch)
    payload = WebhookPayload(
        id=delivery_id,
        output=output,
        mpid=resolved.mpid,
        **stamp_fields(stored, body),  # type: ignore[arg-type]
    )
    return delivery_id, _encode(payload)


Translate = Callable[
    [ResolvedBatch, ModuleRegistrationResponse, dict[str, str], dict[str, str], str], Any
]


def _load_translate() -> Translate:
    module = importlib.import_module("patchbay.activate.translate")
    function: Translate = module.translate
    return function


class ActivateStage:
    """The pipeline stage that fills the outbox."""

    name = "activate"

    def __init__(
        self,
        outputs: OutputStore,
        outbox: Outbox,
        modules: ModuleStore,
        clock: Clock,
        notify: Callable[[set[str]], None] | None = None,
        translate: Translate | None = None,
    ) -> None:
        self._outputs = outputs
        self._outbox = outbox
        self._modules = modules
        self._clock = clock
        self._notify = notify
        self._translate = translate
        self._registrations: dict[tuple[str, int], ModuleRegistrationResponse] = {}
        self.enqueued = 0
        self.skipped = 0
        #: Resolved batches handed to the stage (the throughput summary counts them).
        self.handled = 0

    def handle(self, batches: Sequence[ResolvedBatch]) -> None:
        """Enqueue the deliveries of ``batches`` (durably, before returning)."""
        self.handled += len(batches)
        connections = self._outputs.list_connections()
        if not connections:
            return
        outputs = {o.name: o for o in self._outputs.list_outputs()}
        by_input: dict[str, list[tuple[Connection, Output]]] = {}
        for connection in connections:
            output = outputs.get(connection.output)
            if output is not None:
                by_input.setdefault(connection.input_id, []).append((connection, output))
        modules: dict[str, ModuleRecord | None] = {}
        now = self._clock.now_ms()
        found: list[Delivery] = []
        for resolved in batches:
            if resolved.stored.channel == IDSYNC_CHANNEL:
                continue
            for connection, output in by_input.get(resolved.stored.input_id, ()):
                made = self._make(resolved, connection, output, modules)
                if made is None:
                    continue
                delivery_id, payload = made
                found.append(
                    Delivery(
                        id=delivery_id,
                        output=output.name,
                        connection_id=connection.id,
                        batch_offset=resolved.stored.offset,
                        payload=payload,
                        created_at_ms=now,
                        since_ms=now,
                        next_attempt_ms=now,
                    )
                )
        if not found:
            return
        added = self._outbox.enqueue(found)
        self.enqueued += added
        if self._notify is not None:
            self._notify({d.output for d in found})

    def _make(
        self,
        resolved: ResolvedBatch,
        connection: Connection,
        output: Output,
        modules: dict[str, ModuleRecord | None],
    ) -> tuple[str, bytes] | None:
        batch = apply_filters(resolved.batch, resolved.mpid, connection.filters)
        if batch is None:
            return None
        if not isinstance(output.destination, ModuleDestination):
            return webhook_payload(output.name, resolved, batch)
        name = output.destination.module
        if name not in modules:
            modules[name] = self._modules.get_module(name)
        module = modules[name]
        if module is None:
            log.warning("module_missing", output=output.name, module=name)
            self.skipped += 1
            return None
        registration = self._registration(module)
        if self._translate is None:
            self._translate = _load_translate()
        filtered = resolved if batch is resolved.batch else replace(resolved, batch=batch)
        try:
            request = self._translate(
                filtered, registration, output.settings, connection.settings, output.name
            )
        except Exception:  # a bug must not stop the resolve stage for every output
            log.exception("translate_failed", output=output.name, offset=resolved.stored.offset)
            self.skipped += 1
            return None
        if request is None:
            return None
        return str(request.id), dumps(request)

    def _registration(self, module: ModuleRecord) -> ModuleRegistrationResponse:
        from patchbay.partner.registration import registration_of

        key = (module.name, module.updated_at_ms)
        cached = self._registrations.get(key)
        if cached is None:
            cached = self._registrations[key] = registration_of(module)
        return cached
