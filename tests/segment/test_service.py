"""The audience service: definitions checked whole, references, renames and deletes, sizes
and builds, members and memberships, and connections to outputs with the subscription
requests they put in the outbox."""

from __future__ import annotations

import json

import msgspec
import pytest

from patchbay.backends.abstract import Backend
from patchbay.backends.records import AudienceBuild, ConditionRecord, Delivery, SegmentChanges
from patchbay.clock import ManualClock
from patchbay.firehose import AudienceSubscriptionRequest, parse
from patchbay.segment.parse import definition_document, parse_definition
from patchbay.segment.service import AudienceError, AudienceService
from tests.backends.helpers import batch
from tests.deployments import Stores
from tests.segment.audience_setup import NOW, SECRET, definition, setup_outputs


@pytest.fixture
def backend(stores: Stores) -> Backend:
    """The test's backend, with the outputs of :func:`setup_outputs`."""
    opened = stores.open()
    setup_outputs(opened)
    return opened


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def service(backend: Backend, clock: ManualClock) -> AudienceService:
    return AudienceService(backend, clock)


def sent(backend: Backend, output: str = "crm") -> list[AudienceSubscriptionRequest]:
    """The subscription requests waiting for ``output``, parsed strictly, oldest first."""
    found = []
    for delivery in backend.outbox.due(output, NOW + 10**9, 1000):
        message = parse(delivery.payload)
        assert isinstance(message, AudienceSubscriptionRequest)
        assert str(message.id) == delivery.id
        found.append(message)
    return found


def deliveries(backend: Backend, output: str = "crm") -> list[Delivery]:
    return backend.outbox.due(output, NOW + 10**9, 1000)


def clear(backend: Backend, output: str = "crm") -> None:
    backend.outbox.succeeded_many([d.id for d in deliveries(backend, output)])


# -- definitions -----------------------------------------------------------------------------


def test_create_stores_the_normalised_definition(service: AudienceService) -> None:
    created = service.create(json.dumps(definition("gold", description="Gold tier")))
    assert created["id"] >= 1 and created["name"] == "gold"
    assert created["version"] == 1 and created["size"] == 0
    assert created["status"] == "building"  # no build yet: serve has not started it
    stored = service.audiences.get_audience("gold")
    assert stored is not None and stored.description == "Gold tier"
    expected = definition_document(parse_definition(definition("gold", description="Gold tier")))
    assert msgspec.json.decode(stored.definition) == expected


def test_create_from_yaml_text_and_from_a_document(service: AudienceService) -> None:
    text = """
name: silver
description: Silver tier
criteria:
  user_attribute: tier
  op: eq
  value: silver
"""
    assert service.create(text, "silver.yaml")["name"] == "silver"
    assert service.create(definition("gold"))["name"] == "gold"
    assert [a["name"] for a in service.list()] == ["silver", "gold"]


def test_an_invalid_definition_names_the_path_and_changes_nothing(
    service: AudienceService,
) -> None:
    bad = definition("gold")
    bad["criteria"]["all"][0]["op"] = "resembles"
    with pytest.raises(AudienceError) as caught:
        service.create(json.dumps(bad), "gold.json")
    message = str(caught.value)
    assert "gold.json" in message and "criteria.all[0].op" in message
    assert not caught.value.not_found
    with pytest.raises(AudienceError, match=r"invalid JSON|line"):
        service.create("{not json", "x.json")
    assert service.list() == []


def test_a_duplicate_name_is_refused(service: AudienceService) -> None:
    service.create(definition("gold"))
    with pytest.raises(AudienceError, match="already exists"):
        service.create(definition("gold", tier="other"))
    assert len(service.list()) == 1


def test_an_unknown_reference_is_refused(service: AudienceService) -> None:
    with pytest.raises(AudienceError, match="unknown audience 'nobody'") as caught:
        service.create(definition("vip", "nobody"))
    assert "vip.criteria.all[1].audience" in str(caught.value)
    assert service.list() == []


def test_a_cycle_is_refused_and_nothing_changes(service: AudienceService) -> None:
    service.create(definition("a"))
    service.create(definition("b", "a"))
    with pytest.raises(AudienceError, match="cycle"):
        service.update("a", definition("a", "b"))
    with pytest.raises(AudienceError, match="cycle"):
        service.create(definition("c", "c"))
    stored = service.audiences.get_audience("a")
    assert stored is not None and stored.version == 1
    assert parse_definition(msgspec.json.decode(stored.definition)) == parse_definition(
        definition("a")
    )


def test_update_grows_the_version_only_when_the_criteria_change(
    service: AudienceService, clock: ManualClock
) -> None:
    service.create(definition("gold"))
    same = service.update("gold", definition("gold"))
    assert same["version"] == 1 and same["criteria_changed"] is False
    described = service.update("gold", definition("gold", description="new words"))
    assert described["version"] == 1 and described["description"] == "new words"
    clock.advance(5)
    changed = service.update("gold", definition("gold", tier="platinum"))
    assert changed["version"] == 2 and changed["criteria_changed"] is True
    assert changed["status"] == "building"
    assert changed["updated_at"] != changed["created_at"]


def test_update_by_id_and_unknown_audiences(service: AudienceService) -> None:
    created = service.create(definition("gold"))
    assert service.show(str(created["id"]))["name"] == "gold"
    with pytest.raises(AudienceError) as caught:
        service.update("nope", definition("nope"))
    assert caught.value.not_found
    for call in (
        lambda: service.show("nope"),
        lambda: service.delete("nope"),
        lambda: service.members("nope"),
        lambda: service.connect("nope", "crm"),
        lambda: service.disconnect("nope", "crm"),
    ):
        with pytest.raises(AudienceError) as caught:
            call()
        assert caught.value.not_found


@pytest.mark.parametrize("name", ["\u00b3", "\u0663", "9" * 30])
def test_a_name_that_is_almost_an_id_is_not_found(name: str, service: AudienceService) -> None:
    """A name that ``isdigit()`` but that is no audience id (a superscript or non-ASCII digit,
    a number beyond 64 bits) is a 404 (it was a 500: ``int()`` or SQLite raised)."""
    with pytest.raises(AudienceError) as caught:
        service.show(name)
    assert caught.value.not_found


def test_members_after_beyond_64_bits_is_a_bad_request(service: AudienceService) -> None:
    """``after`` is an MPID: beyond 64 bits it is refused (it was a 500: SQLite raised)."""
    service.create(definition("gold"))
    for after in (2**63, -(2**63) - 1):
        with pytest.raises(AudienceError, match="after must be an MPID") as caught:
            service.members("gold", after=after)
        assert not caught.value.not_found
    assert service.members("gold", after=2**63 - 1)["members"] == []


def test_rename(service: AudienceService, backend: Backend) -> None:
    service.create(definition("gold"))
    service.create(definition("silver", tier="silver"))
    with pytest.raises(AudienceError, match="already exists"):
        service.update("gold", definition("silver"))
    renamed = service.update("gold", definition("golden"))
    assert renamed["name"] == "golden" and renamed["version"] == 1
    assert service.audiences.get_audience("gold") is None


def test_a_referenced_audience_cannot_be_renamed_or_deleted(service: AudienceService) -> None:
    service.create(definition("gold"))
    service.create(definition("vip", "gold"))
    service.create(definition("vvip", "gold", "vip"))
    with pytest.raises(AudienceError, match=r"cannot be renamed: 'vip', 'vvip' refer to it"):
        service.update("gold", definition("golden"))
    with pytest.raises(AudienceError, match=r"cannot be deleted: 'vip', 'vvip' refer to it"):
        service.delete("gold")
    # Its criteria may change; references to it keep working.
    assert service.update("gold", definition("gold", tier="x"))["version"] == 2
    service.delete("vvip")
    service.delete("vip")
    assert service.delete("gold")["deleted"] is True
    assert service.list() == []


# -- sizes, builds, members ----------------------------------------------------------------------


def test_a_build_shows_the_history_the_log_retains(
    service: AudienceService, backend: Backend
) -> None:
    """While an audience builds, ``show`` and ``progress`` say which batches the log holds
    and the newest that retention removed (the build counts only those it holds)."""
    service.create(definition("gold"))
    positions = backend.log.append([batch(at=NOW + i) for i in range(4)])
    backend.log.remove(0, positions[1])
    history = {
        "partition": 0,
        "from": str(positions[2]),
        "from_received_at": "2023-11-14T22:13:20+00:00",
        "to": str(positions[3]),
        "removed_upto": str(positions[1]),
    }
    assert service.show("gold")["build"]["history"] == [history]
    assert service.progress("gold")["build"]["history"] == [history]


def test_sizes_builds_members_and_memberships(service: AudienceService, backend: Backend) -> None:
    gold = service.create(definition("gold"))["id"]
    silver = service.create(definition("silver", tier="silver"))["id"]
    backend.audiences.commit(
        SegmentChanges(
            joined=[(gold, m) for m in (-5, 3, 7, 11, 2**62)] + [(silver, 3)],
            builds=[
                AudienceBuild(gold, 1, "live", NOW, users_done=9, users_total=9,
                              finished_at_ms=NOW + 1000),
                AudienceBuild(silver, 1, "evaluating", NOW, cursor=3, users_done=4,
                              users_total=10),
            ],
            conditions=[ConditionRecord(1, "k", "building", scanned=12)],
        )
    )  # fmt: skip
    listed = {a["name"]: a for a in service.list()}
    assert listed["gold"]["size"] == 5 and listed["gold"]["status"] == "live"
    assert listed["silver"]["status"] == "evaluating"
    assert listed["silver"]["build"]["users_done"] == 4
    assert listed["silver"]["build"]["users_total"] == 10
    shown = service.show("silver")
    assert shown["build"]["conditions"] == {"building": 1, "scanned": 12}
    assert shown["build"]["history"] == [
        {"partition": 0, "from": None, "from_received_at": None, "to": None, "removed_upto": None}
    ]
    assert "conditions" not in service.show("gold")["build"]
    assert "history" not in service.show("gold")["build"]
    assert service.progress("gold")["status"] == "live"

    first = service.members("gold", limit=2)
    assert first["members"] == [-5, 3] and first["next"] == 3
    rest = service.members("gold", after=first["next"], limit=3)
    assert rest["members"] == [7, 11, 2**62] and rest["next"] == 2**62
    assert service.members("gold", after=2**62, limit=3) == {
        "id": gold,
        "name": "gold",
        "members": [],
        "next": None,
    }
    for bad in (0, 10_001):
        with pytest.raises(AudienceError, match="limit"):
            service.members("gold", limit=bad)

    assert service.memberships(3) == [
        {"audience_id": gold, "audience_name": "gold"},
        {"audience_id": silver, "audience_name": "silver"},
    ]
    assert service.memberships(999) == []
    # A new version has no build yet: building again.
    assert service.update("gold", definition("gold", tier="x"))["status"] == "building"


# -- connections -------------------------------------------------------------------------------


def test_connect_sends_add_with_the_settings_and_defaults(
    service: AudienceService, backend: Backend
) -> None:
    created = service.create(definition("gold", description="Gold tier"))
    connected = service.connect(
        "gold", "crm", {"ttlDays": "30", "token": SECRET}, ["tier", "plan", "tier"]
    )
    assert connected["action"] == "add"
    assert connected["settings"]["token"] == "***"
    assert connected["attributes"] == ["tier", "plan"]
    assert SECRET not in json.dumps(service.show("gold"))
    [delivery] = deliveries(backend)
    assert delivery.connection_id == f"audience:{created['id']}"
    assert delivery.batch_offset == 0 and delivery.output == "crm"
    [request] = sent(backend)
    assert request.action == "add"
    assert request.audience_id == created["id"]
    assert request.audience_name == "gold"
    assert request.audience_description == "Gold tier"
    assert request.audience_subscription_settings == {
        "listName": "patchbay",
        "ttlDays": "30",
        "hashed": "true",
        "token": SECRET,
    }
    assert request.previous_audience_subscription_settings == {}
    assert request.account is not None
    assert request.account.account_settings == {"apiKey": "k-1"}
    assert request.timestamp_ms == NOW
    [stored] = service.audiences.list_audience_connections()
    assert stored.settings["ttlDays"] == "30" and stored.attributes == ["tier", "plan"]
    assert service.list()[0]["outputs"] == ["crm"]


def test_connect_again_updates_only_when_something_changed(
    service: AudienceService, backend: Backend
) -> None:
    service.create(definition("gold"))
    service.connect("gold", "crm", {"ttlDays": "30"})
    clear(backend)
    again = service.connect("gold", "crm", {"ttlDays": "30"})
    assert again["action"] is None and deliveries(backend) == []
    changed = service.connect("gold", "crm", {"ttlDays": "60"})
    assert changed["action"] == "update"
    [request] = sent(backend)
    assert request.action == "update"
    assert request.audience_subscription_settings["ttlDays"] == "60"
    assert request.previous_audience_subscription_settings["ttlDays"] == "30"
    clear(backend)
    assert service.connect("gold", "crm", {"ttlDays": "60"}, ["tier"])["action"] == "update"
    [request] = sent(backend)
    assert request.previous_audience_subscription_settings == request.audience_subscription_settings
    assert len(service.audiences.list_audience_connections()) == 1


def test_the_partners_answer_is_laid_over_later_requests(
    service: AudienceService, backend: Backend
) -> None:
    service.create(definition("gold"))
    service.connect("gold", "crm", {"ttlDays": "30"})
    audience_id = service.show("gold")["id"]
    assert service.audiences.subscribed(audience_id, "crm", {"listId": "L-77"}, NOW)
    assert service.show("gold")["connections"][0]["subscribed"] is True
    clear(backend)
    service.connect("gold", "crm", {"ttlDays": "31"})
    [request] = sent(backend)
    assert request.audience_subscription_settings["listId"] == "L-77"
    assert request.previous_audience_subscription_settings["listId"] == "L-77"
    clear(backend)
    service.disconnect("gold", "crm")
    [request] = sent(backend)
    assert request.action == "remove"
    assert request.audience_subscription_settings["listId"] == "L-77"


@pytest.mark.parametrize(
    ("output", "message", "not_found"),
    [
        ("nope", "no output named 'nope'", True),
        ("hook", "'hook' is a webhook output: audiences go only to module outputs", False),
        ("lines", "'lines' is a file output", False),
        ("events-out", "does not process audiences", False),
        ("ghost", "module 'missing', which is not registered", True),
    ],
)
def test_connect_refuses_outputs_that_cannot_take_audiences(
    service: AudienceService, backend: Backend, output: str, message: str, not_found: bool
) -> None:
    service.create(definition("gold"))
    with pytest.raises(AudienceError, match=message) as caught:
        service.connect("gold", output)
    assert caught.value.not_found is not_found
    assert service.audiences.list_audience_connections() == []
    assert deliveries(backend, output) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"bogus": "1"}, "unknown audience subscription setting 'bogus'"),
        ({"ttlDays": "many"}, "'ttlDays' must be an integer"),
        ({"ttlDays": "365"}, "'ttlDays' must be at most 90"),
        ({"hashed": "perhaps"}, "'hashed' must be true or false"),
    ],
)
def test_connect_checks_the_settings(
    service: AudienceService, backend: Backend, settings: dict[str, str], message: str
) -> None:
    service.create(definition("gold"))
    with pytest.raises(AudienceError, match=message):
        service.connect("gold", "crm", settings)
    assert service.audiences.list_audience_connections() == []
    assert deliveries(backend) == []


def test_attributes_need_the_modules_permission(service: AudienceService, backend: Backend) -> None:
    service.create(definition("gold"))
    with pytest.raises(AudienceError, match="allow_audience_user_attributes"):
        service.connect("gold", "crm2", {}, ["tier"])
    with pytest.raises(AudienceError, match="non-empty"):
        service.connect("gold", "crm", {}, [" "])
    assert service.audiences.list_audience_connections() == []
    assert service.connect("gold", "crm2")["action"] == "add"  # without attributes: fine


def test_disconnect_sends_remove(service: AudienceService, backend: Backend) -> None:
    service.create(definition("gold"))
    service.connect("gold", "crm", {"ttlDays": "30"})
    clear(backend)
    assert service.disconnect("gold", "crm")["removed"] is True
    [request] = sent(backend)
    assert request.action == "remove" and request.audience_name == "gold"
    assert request.audience_subscription_settings["ttlDays"] == "30"
    assert service.audiences.list_audience_connections() == []
    with pytest.raises(AudienceError, match="not connected") as caught:
        service.disconnect("gold", "crm")
    assert caught.value.not_found


def test_rename_and_description_changes_are_sent_to_every_output(
    service: AudienceService, backend: Backend
) -> None:
    service.create(definition("gold", description="Gold"))
    service.connect("gold", "crm", {"ttlDays": "30"})
    service.connect("gold", "crm2")
    clear(backend, "crm")
    clear(backend, "crm2")
    service.update("gold", definition("gold", tier="x", description="Gold"))  # criteria only
    assert deliveries(backend, "crm") == [] and deliveries(backend, "crm2") == []
    service.update("gold", definition("golden", tier="x", description="Gold tier"))
    for output in ("crm", "crm2"):
        [request] = sent(backend, output)
        assert request.action == "update"
        assert request.audience_name == "golden"
        assert request.audience_description == "Gold tier"
        assert request.previous_audience_subscription_settings == (
            request.audience_subscription_settings
        )
    assert sent(backend, "crm")[0].audience_subscription_settings["ttlDays"] == "30"


def test_delete_sends_remove_to_every_output_first(
    service: AudienceService, backend: Backend
) -> None:
    created = service.create(definition("gold"))
    service.connect("gold", "crm")
    service.connect("gold", "crm2")
    clear(backend, "crm")
    clear(backend, "crm2")
    deleted = service.delete("gold")
    assert deleted == {
        "id": created["id"],
        "name": "gold",
        "deleted": True,
        "disconnected": ["crm", "crm2"],
    }
    for output in ("crm", "crm2"):
        [request] = sent(backend, output)
        assert request.action == "remove" and request.audience_id == created["id"]
    assert service.audiences.list_audience_connections() == []
    assert service.audiences.get_audience("gold") is None


def test_an_output_gone_since_gets_no_request(service: AudienceService, backend: Backend) -> None:
    service.create(definition("gold"))
    service.connect("gold", "crm")
    clear(backend)
    backend.modules.delete_module("aud")
    shown = service.show("gold")["connections"][0]
    assert shown["output"] == "crm"
    assert service.delete("gold")["disconnected"] == ["crm"]
    assert deliveries(backend) == []


# -- logs --------------------------------------------------------------------------------------


def test_each_change_is_one_log_line_without_secrets(
    service: AudienceService, capsys: pytest.CaptureFixture[str]
) -> None:
    from patchbay.logs import configure_logging

    configure_logging("info")
    capsys.readouterr()
    created = service.create(definition("gold"))
    service.update("gold", definition("gold"))  # no change: no line
    service.update("gold", definition("gold", tier="silver"))
    service.connect("gold", "crm", {"ttlDays": "30", "token": SECRET})
    service.connect("gold", "crm", {"ttlDays": "30", "token": SECRET})  # the same: no line
    service.connect("gold", "crm", {"ttlDays": "31", "token": SECRET})
    service.disconnect("gold", "crm")
    service.list()
    service.show("gold")
    service.delete("gold")
    err = capsys.readouterr().err
    assert SECRET not in err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [(line["object"], line["name"], line["change"]) for line in lines] == [
        ("audience", "gold", "create"),
        ("audience", "gold", "update"),
        ("audience_connection", "gold", "create"),
        ("audience_connection", "gold", "update"),
        ("audience_connection", "gold", "delete"),
        ("audience", "gold", "delete"),
    ]
    assert {line["event"] for line in lines} == {"config_changed"}
    assert lines[0]["id"] == created["id"] and lines[1]["criteria_changed"] is True
    assert lines[2]["output"] == "crm"
