"""The segment stage's sending (:class:`patchbay.segment.stage.SegmentStage`): membership
changes become ``audience_membership_change_request`` deliveries in the outbox once the
partner accepted the subscription, batched by the module's ``bulk_configuration``, one
message in flight per output (in order), dropped when the output is gone; and what it puts
in ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from patchbay.backends.records import AudienceConnection, ModuleDestination, Output
from patchbay.firehose import (
    AudienceMembershipChangeRequest,
    AudienceProcessingRegistration,
    BulkConfiguration,
    ModuleRegistrationResponse,
    Permissions,
    parse,
)
from patchbay.metrics import SegmentMetrics
from patchbay.segment.criteria import Definition, EventCondition, EventMatch
from patchbay.segment.stage import RECHECK_S, SegmentStage
from tests.segment.audience_setup import register
from tests.segment.harness import SegmentWorld

BUYERS = Definition("buyers", "", EventCondition(EventMatch("custom_event", name="buy")))


def registration(bulk: BulkConfiguration | None = None) -> ModuleRegistrationResponse:
    return ModuleRegistrationResponse(
        name="CRM",
        version="1.0",
        permissions=Permissions(allow_access_mpid=True),
        audience_processing_registration=AudienceProcessingRegistration(bulk_configuration=bulk),
    )


def world_with_output(
    world: SegmentWorld, bulk: BulkConfiguration | None = None, *, subscribed: bool = True
) -> tuple[SegmentStage, CollectorRegistry]:
    """``world`` with an output connected to the audience ``buyers``, and its stage."""
    backend = world.backend
    register(backend, "crm-module", registration(bulk))
    now = world.clock.now_ms()
    backend.outputs.add_output(Output("crm", ModuleDestination("crm-module"), now, now))
    world.define(BUYERS)
    audience = backend.audiences.get_audience("buyers")
    assert audience is not None
    backend.audiences.put_audience_connection(AudienceConnection(audience.id, "crm", now))
    if subscribed:
        backend.audiences.subscribed(audience.id, "crm", {"listId": "L-1"}, now)
    registry = CollectorRegistry()
    stage = SegmentStage(backend, world.clock, metrics=SegmentMetrics(registry))
    world.engine = stage.engine
    return stage, registry


def buy(world: SegmentWorld, customer: str) -> None:
    world.send(
        {
            "user_identities": {"customer_id": customer},
            "events": [{"event_type": "custom_event", "data": {"event_name": "buy"}}],
        }
    )


def sent(world: SegmentWorld) -> list[AudienceMembershipChangeRequest]:
    found = []
    for delivery in world.backend.outbox.due("crm", world.clock.now_ms() + 10**9, 1000):
        message = parse(delivery.payload)
        assert isinstance(message, AudienceMembershipChangeRequest)
        found.append(message)
    return found


def actions(messages: list[AudienceMembershipChangeRequest]) -> list[tuple[str, str | None]]:
    return [
        (str(a.action), p.mpid)
        for m in messages
        for p in m.user_profiles or []
        for a in p.audiences
    ]


def test_changes_are_sent_at_once_without_bulk_configuration(world: SegmentWorld) -> None:
    stage, _ = world_with_output(world)
    buy(world, "c1")
    world.settle()
    stage.tick()
    messages = sent(world)
    assert len(messages) == 1
    (profile,) = messages[0].user_profiles or []
    assert [a.action for a in profile.audiences] == ["add"]
    assert profile.audiences[0].audience_subscription_settings == {"listId": "L-1"}
    assert world.backend.audiences.pending_outputs() == {}


def test_bulk_configuration_waits_for_a_count_or_a_time(world: SegmentWorld) -> None:
    bulk = BulkConfiguration(bulk_forward_wait_for_messages=3, bulk_forward_wait_in_minutes=1)
    stage, _ = world_with_output(world, bulk)
    buy(world, "c1")
    buy(world, "c2")
    world.settle()
    stage.tick()
    assert sent(world) == []  # 2 < 3, and the oldest waited less than a minute
    world.clock.advance(61)
    stage.tick()
    assert len(actions(sent(world))) == 2


def test_bulk_configuration_sends_once_the_count_is_reached(world: SegmentWorld) -> None:
    bulk = BulkConfiguration(bulk_forward_wait_for_messages=3, bulk_forward_wait_in_minutes=60)
    stage, _ = world_with_output(world, bulk)
    for customer in ("c1", "c2", "c3"):
        buy(world, customer)
    world.settle()
    stage.tick()
    (message,) = sent(world)
    assert len(message.user_profiles or []) == 3


def test_changes_wait_for_the_subscription(world: SegmentWorld) -> None:
    stage, _ = world_with_output(world, subscribed=False)
    buy(world, "c1")
    world.settle()
    stage.tick()
    assert sent(world) == []
    assert world.backend.audiences.pending_outputs()["crm"][0] == 1
    audience = world.backend.audiences.get_audience("buyers")
    assert audience is not None
    world.backend.audiences.subscribed(audience.id, "crm", {}, world.clock.now_ms())
    world.clock.advance(RECHECK_S)  # what waits is looked at again a moment later
    stage.tick()
    assert actions(sent(world)) and world.backend.audiences.pending_outputs() == {}


def test_one_message_in_flight_per_output_keeps_the_order(world: SegmentWorld) -> None:
    stage, _ = world_with_output(world)
    buy(world, "c1")
    world.settle()
    stage.tick()
    (first,) = world.backend.outbox.due("crm", world.clock.now_ms() + 1, 10)
    buy(world, "c2")
    world.settle()
    stage.tick()
    # the first message is not delivered yet: the second change waits
    assert len(world.backend.outbox.due("crm", world.clock.now_ms() + 1, 10)) == 1
    world.backend.outbox.succeeded(first.id)
    world.clock.advance(RECHECK_S)
    stage.tick()
    (second,) = world.backend.outbox.due("crm", world.clock.now_ms() + 1, 10)
    assert second.id != first.id


def test_changes_for_an_output_whose_module_is_gone_are_dropped(world: SegmentWorld) -> None:
    stage, _ = world_with_output(world)
    buy(world, "c1")
    world.settle()
    # nothing could ever take the change: it is dropped (and logged), not kept forever
    world.backend.modules.delete_module("crm-module")
    stage.tick()
    assert world.backend.audiences.pending_outputs() == {}
    assert world.backend.outputs.get_output("crm") is not None  # the output is not touched


def test_metrics(world: SegmentWorld) -> None:
    stage, registry = world_with_output(world)
    buy(world, "c1")
    world.settle()
    stage.tick()
    text = generate_latest(registry).decode()
    assert 'patchbay_audience_joins_total{audience="buyers"} 1.0' in text
    assert 'patchbay_audience_members{audience="buyers"} 1.0' in text
    assert 'patchbay_audience_build_ratio{audience="buyers"} 1.0' in text
    assert "patchbay_segment_batches_total 1.0" in text
    assert actions(sent(world)) == [("add", str(world.history[0].mpid))]
