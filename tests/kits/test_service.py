"""Kits and their connections through :class:`~patchbay.kits.service.KitService`: the
checks on connecting, what is shown and what the SDK's config carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchbay.backends.abstract import Backend
from patchbay.backends.records import KitFilters
from patchbay.clock import ManualClock
from patchbay.collect.inputs import create_input
from patchbay.kits.hashing import event_name_hash, generate_hash
from patchbay.kits.service import KitError, KitService, subscription_id

BRAZE = Path(__file__).parents[2] / "examples" / "kits" / "braze.json"


@pytest.fixture
def service(backend: Backend) -> KitService:
    clock = ManualClock()
    create_input(backend.inputs, "site", "web", 0, clock)
    create_input(backend.inputs, "backend", "server", 0, clock)
    made = KitService(backend, clock)
    made.register(BRAZE.read_bytes())
    return made


def connect(service: KitService, **settings: str) -> dict[str, object]:
    values = {"apiKey": "braze-key", "cluster": "EU", **settings}
    return service.connect("Appboy", "site", values)


def test_register_again_updates(service: KitService) -> None:
    again = service.register(BRAZE.read_bytes())
    assert again["action"] == "update" and again["key"] == "Appboy-v4"
    assert [k["key"] for k in service.list_kits()] == ["Appboy-v4"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cluster": "EU"}, r"kit setting 'apiKey' \(API key\) is required"),
        ({"apiKey": "k", "cluster": "EU", "colour": "red"}, "unknown kit setting 'colour'"),
        ({"apiKey": "k", "cluster": "EU", "ABKSessionTimeoutKey": "soon"}, "must be an integer"),
        ({"apiKey": "k", "cluster": "EU", "doNotLoadFontAwesome": "maybe"}, "true or false"),
        (
            {"apiKey": "k", "cluster": "EU", "userIdentificationType": "Phone"},
            "setting 'userIdentificationType' must be one of 'MPID', 'CustomerId'",
        ),
    ],
)
def test_settings_are_checked(service: KitService, settings: dict[str, str], message: str) -> None:
    with pytest.raises(KitError, match=message):
        service.connect("Appboy", "site", settings)
    assert service.kits.list_kit_connections() == []


def test_only_web_inputs(service: KitService) -> None:
    with pytest.raises(KitError, match=r"'backend' is a server input: .* web inputs only"):
        connect_to(service, "backend")
    with pytest.raises(KitError, match="no input named 'nope'") as caught:
        connect_to(service, "nope")
    assert caught.value.not_found


def connect_to(service: KitService, input_: str) -> None:
    service.connect("Appboy-v4", input_, {"apiKey": "k", "cluster": "EU"})


def test_filters_are_checked(service: KitService) -> None:
    with pytest.raises(KitError, match=r"unknown event type 'Clicks'.*unknown user identity"):
        service.connect(
            "Appboy",
            "site",
            {"apiKey": "k", "cluster": "EU"},
            filters=KitFilters(event_types=["Clicks"], user_identities=["passport"]),
        )


def test_config_entry(service: KitService) -> None:
    connection = service.connect(
        "Appboy",
        "site",
        {"apiKey": "braze-key", "cluster": "EU", "doNotLoadFontAwesome": "yes"},
        filters=KitFilters(
            event_types=["navigation"],
            event_names=["Transaction:Bought", "Clicked"],
            screen_names=["Home"],
            user_attributes=["age"],
            user_identities=["Email"],
        ),
    )
    assert connection["settings"]["apiKey"] == "***"
    assert connection["filters"]["event_types"] == ["Navigation"]
    web = service.web_input(_key(service))
    assert web is not None
    [entry] = service.kit_configs(web.id, development=False)
    assert service.kit_configs(web.id, development=True) == []
    assert entry["name"] == "Appboy" and entry["suffix"] == "v4" and entry["moduleId"] == 28
    assert entry["isDebug"] is False and entry["isDebugString"] == "false"
    assert entry["eventSubscriptionId"] == subscription_id("Appboy-v4", web.id, False)
    assert entry["settings"] == {
        "apiKey": "braze-key",
        "cluster": "EU",
        "userIdentificationType": "CustomerId",
        "doNotLoadFontAwesome": "True",
        "enableHtmlInAppMessages": "False",
        "register_inapp": "True",
        "forwardScreenViews": "False",
        "setEventNameForPageView": "False",
        "bundleCommerceEventData": "False",
        "forwardSkuAsProductName": "False",
        "ABKSessionTimeoutKey": "1800",
    }
    assert entry["eventTypeFilters"] == [generate_hash("1")]
    assert entry["eventNameFilters"] == [
        event_name_hash(4, "Bought"),
        *(event_name_hash(t, "Clicked") for t in range(10)),
    ]
    assert entry["screenNameFilters"] == [generate_hash("0Home")]
    assert entry["userAttributeFilters"] == [generate_hash("age")]
    assert entry["userIdentityFilters"] == [7]


def _key(service: KitService) -> str:
    site = service.inputs.get_input("site")
    assert site is not None
    return service.inputs.credentials(site.id)[0].key


def test_development_and_production_are_apart(service: KitService) -> None:
    first = connect(service)
    dev = service.connect("Appboy", "site", {"apiKey": "d", "cluster": "01"}, development=True)
    assert first["event_subscription_id"] != dev["event_subscription_id"]
    shown = service.show("Appboy")
    assert [c["environment"] for c in shown["connections"]] == ["production", "development"]
    again = connect(service, cluster="02")
    assert again["action"] == "update"
    assert again["event_subscription_id"] == first["event_subscription_id"]
    site = service.inputs.get_input("site")
    assert site is not None
    [entry] = service.kit_configs(site.id, development=True)
    assert entry["isDebug"] is True and entry["settings"]["apiKey"] == "d"


def test_unregister_refused_while_connected(service: KitService) -> None:
    connect(service)
    with pytest.raises(KitError, match="connected to 1 input"):
        service.unregister("Appboy")
    service.disconnect("Appboy", "site")
    with pytest.raises(KitError, match="not connected") as caught:
        service.disconnect("Appboy", "site")
    assert caught.value.not_found
    assert service.unregister("Appboy") == {"key": "Appboy-v4", "action": "unregister"}
    with pytest.raises(KitError, match="no kit named 'Appboy'"):
        service.show("Appboy")


def test_unknown_or_other_keys_get_no_config(service: KitService, backend: Backend) -> None:
    assert service.web_input("pk_nope") is None
    server = backend.inputs.get_input("backend")
    assert server is not None
    assert service.web_input(backend.inputs.credentials(server.id)[0].key) is None
    site = backend.inputs.get_input("site")
    assert site is not None
    backend.inputs.set_input_enabled(site.id, False)
    assert service.web_input(_key(service)) is None
