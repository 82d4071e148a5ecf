"""Membership changes as ``audience_membership_change_request`` messages
(:mod:`patchbay.segment.messages`): what a user profile carries under each permission, the
collapsing of several changes, dropped changes, deterministic ids, splitting, strict parsing,
what the example partner stores, and the flush policy."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import urllib.request
import uuid
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from examples.sqlite_partner import SqlitePartner
from examples.sqlite_partner.http import build_app
from patchbay.backends.records import (
    AudienceAction,
    AudienceConnection,
    AudienceRecord,
    ModuleDestination,
    Output,
    PendingChange,
)
from patchbay.firehose import (
    AudienceMembershipChangeRequest,
    AudienceMembershipChangeResponse,
    AudienceProcessingRegistration,
    BulkConfiguration,
    DeviceIdentityPermission,
    ModuleRegistrationResponse,
    Permissions,
    UserIdentityPermission,
    UserProfile,
    dumps,
    parse,
)
from patchbay.partner.lambda_local import BackgroundServer
from patchbay.resolve.profile import IdentityRecord, Profile
from patchbay.segment.messages import (
    DEFAULT_MAX_WAIT_S,
    NO_COUNT,
    flush_policy,
    membership_requests,
)

OUTPUT = Output("crm", ModuleDestination("crm-module"), 0, 0, settings={"apiKey": "k-1"})
BUYERS = AudienceRecord(7, "Buyers", "bought twice", b"{}", 0, 0)
BROWSERS = AudienceRecord(8, "Browsers", "", b"{}", 0, 0)
AUDIENCES = {a.id: a for a in (BUYERS, BROWSERS)}
EMAIL = "Ada@Example.com"


def connection(
    audience_id: int = 7,
    *,
    settings: dict[str, str] | None = None,
    attributes: Sequence[str] = (),
    partner_settings: dict[str, str] | None = None,
    output: str = "crm",
) -> AudienceConnection:
    return AudienceConnection(
        audience_id,
        output,
        0,
        settings=settings or {},
        attributes=list(attributes),
        partner_settings=partner_settings or {},
        subscribed_at_ms=1,
    )


CONNECTIONS = {7: connection(7), 8: connection(8)}


def registration(
    *,
    mpid: bool = True,
    attributes: bool = True,
    user: list[UserIdentityPermission] | None = None,
    device: list[DeviceIdentityPermission] | None = None,
    bulk: BulkConfiguration | None = None,
    audience: bool = True,
    sdk_version: str = "3.2.0",
) -> ModuleRegistrationResponse:
    return ModuleRegistrationResponse(
        sdk_version=sdk_version,
        name="CRM",
        version="1.0",
        permissions=Permissions(
            user_identities=user
            if user is not None
            else [
                UserIdentityPermission(type="email", encoding="sha256"),
                UserIdentityPermission(type="customer", encoding="raw"),
            ],
            device_identities=device
            if device is not None
            else [
                DeviceIdentityPermission(type="ios_advertising_id", encoding="raw"),
                DeviceIdentityPermission(type="android_id", encoding="md5"),
            ],
            allow_access_mpid=mpid,
            allow_audience_user_attributes=attributes,
        ),
        audience_processing_registration=AudienceProcessingRegistration(bulk_configuration=bulk)
        if audience
        else None,
    )


def profile(
    mpid: int = 100,
    *,
    identities: Sequence[tuple[str, str, int]] = (("email", EMAIL, 5), ("customer_id", "c-1", 5)),
    attributes: dict[str, Any] | None = None,
) -> Profile:
    return Profile(
        mpid=mpid,
        created_at_ms=0,
        last_seen_ms=0,
        identities=[IdentityRecord(t, v, 0, seen) for t, v, seen in identities],
        user_attributes=attributes or {},
    )


def change(
    seq: int,
    action: AudienceAction = "add",
    *,
    mpid: int = 100,
    audience_id: int = 7,
    at_ms: int | None = None,
    output: str = "crm",
) -> PendingChange:
    return PendingChange(
        seq, output, audience_id, mpid, action, at_ms if at_ms is not None else seq
    )


def build(
    changes: Sequence[PendingChange],
    *,
    reg: ModuleRegistrationResponse | None = None,
    connections: dict[int, AudienceConnection] | None = None,
    audiences: dict[int, AudienceRecord] | None = None,
    profiles: dict[int, Profile] | None = None,
    max_profiles: int = 100,
    output: Output = OUTPUT,
) -> list[tuple[str, bytes]]:
    return membership_requests(
        output,
        reg or registration(),
        CONNECTIONS if connections is None else connections,
        AUDIENCES if audiences is None else audiences,
        changes,
        {100: profile()} if profiles is None else profiles,
        max_profiles,
    )


def requests_of(built: list[tuple[str, bytes]]) -> list[AudienceMembershipChangeRequest]:
    """The payloads parsed with the strict models (after checking the ids and the bytes)."""
    out = []
    for delivery_id, payload in built:
        message = parse(payload)  # strict: unknown enum literals raise
        assert isinstance(message, AudienceMembershipChangeRequest)
        assert str(message.id) == delivery_id
        assert uuid.UUID(delivery_id).version == 5
        assert dumps(message) == payload  # written exactly as the SDK writes it
        out.append(message)
    return out


def only_profile(built: list[tuple[str, bytes]]) -> UserProfile:
    [request] = requests_of(built)
    assert request.user_profiles is not None
    [user] = request.user_profiles
    return user


def sha256(text: str) -> str:
    return hashlib.sha256(text.strip().lower().encode()).hexdigest()


# --------------------------------------------------------------------------- a request


def test_a_request_carries_the_account_and_one_profile_per_mpid() -> None:
    built = build(
        [change(1, at_ms=500), change(2, mpid=200, at_ms=900), change(3, audience_id=8, at_ms=700)],
        reg=registration(sdk_version="3.0.0"),
        profiles={100: profile(), 200: profile(200, identities=[("email", "b@x.org", 1)])},
    )
    [request] = requests_of(built)
    assert request.account is not None
    assert request.account.account_id == 0
    assert request.account.account_settings == {"apiKey": "k-1"}
    assert request.timestamp_ms == 900  # the latest change
    assert request.firehose_version == "3.0.0"
    assert request.user_profiles is not None
    assert [p.mpid for p in request.user_profiles] == ["100", "200"]
    first = request.user_profiles[0]
    assert [(a.audience_id, a.audience_name, a.action) for a in first.audiences] == [
        (7, "Buyers", "add"),
        (8, "Browsers", "add"),
    ]
    # the JSON: type first, user_profiles written
    document = json.loads(built[0][1])
    assert next(iter(document)) == "type"
    assert document["type"] == "audience_membership_change_request"


def test_identities_in_the_registered_encodings() -> None:
    user = only_profile(
        build(
            [change(1)],
            reg=registration(
                user=[
                    UserIdentityPermission(type="email", encoding="sha256"),
                    UserIdentityPermission(type="email", encoding="md5"),
                    UserIdentityPermission(type="customer", encoding="raw"),
                    UserIdentityPermission(type="other2", encoding="sha1"),
                    UserIdentityPermission(type="mobile_number", encoding="raw"),
                ]
            ),
            profiles={
                100: profile(
                    identities=[
                        ("email", "old@example.com", 1),
                        ("email", EMAIL, 9),
                        ("customer_id", "c-1", 5),
                        ("other_id_2", " Other Value ", 5),
                        ("alias", "no-literal", 5),
                        ("twitter", "@ada", 5),  # not registered
                    ]
                )
            },
        )
    )
    assert [(i.type, i.encoding, i.value) for i in user.user_identities] == [
        ("email", "sha256", sha256(EMAIL)),
        ("email", "md5", hashlib.md5(EMAIL.lower().encode()).hexdigest()),
        ("customer", "raw", "c-1"),
        ("other2", "sha1", hashlib.sha1(b"other value").hexdigest()),
    ]
    assert user.partner_identities == []  # profiles keep none


def test_device_identities_one_per_device_most_recent_first() -> None:
    idfa_opted_out = "00000000-0000-0000-0000-000000000000"
    user = only_profile(
        build(
            [change(1)],
            reg=registration(
                device=[
                    DeviceIdentityPermission(type="android_id", encoding="md5"),
                    DeviceIdentityPermission(type="ios_advertising_id", encoding="raw"),
                    DeviceIdentityPermission(type="google_advertising_id", encoding="raw"),
                ]
            ),
            profiles={
                100: profile(
                    identities=[
                        ("android_uuid", "old-device", 1),
                        ("android_uuid", "new-device", 9),
                        ("ios_advertising_id", idfa_opted_out, 5),
                        ("push_token", "tok", 5),  # its type needs a runtime
                        ("device_application_stamp", "das", 5),  # no device literal
                    ]
                )
            },
        )
    )
    assert [(i.type, i.encoding, i.value) for i in user.device_identities] == [
        ("android_id", "md5", hashlib.md5(b"new-device").hexdigest()),
        ("android_id", "md5", hashlib.md5(b"old-device").hexdigest()),
    ]


def test_mpid_only_with_allow_access_mpid() -> None:
    assert only_profile(build([change(1)], reg=registration(mpid=True))).mpid == "100"
    user = only_profile(build([change(1)], reg=registration(mpid=False)))
    assert user.mpid is None
    assert "mpid" not in json.loads(build([change(1)], reg=registration(mpid=False))[0][1])
    assert user.user_identities  # still identified by its identities


def test_a_user_without_a_profile_is_sent_with_its_mpid() -> None:
    user = only_profile(build([change(1, "delete")], profiles={}))
    assert user.mpid == "100"
    assert user.user_identities == [] and user.device_identities == []


def test_a_user_the_partner_cannot_tell_apart_is_left_out() -> None:
    no_mpid = registration(mpid=False)
    assert build([change(1)], reg=no_mpid, profiles={}) == []
    assert build([change(1)], reg=no_mpid, profiles={100: profile(identities=[])}) == []
    unregistered = profile(identities=[("twitter", "@ada", 1)])
    assert build([change(1)], reg=no_mpid, profiles={100: unregistered}) == []


def test_required_identities_are_needed() -> None:
    reg = registration(
        user=[
            UserIdentityPermission(type="email", encoding="raw", required=True),
            UserIdentityPermission(type="customer", encoding="raw"),
        ]
    )
    with_email = profile(100)
    without = profile(200, identities=[("customer_id", "c-2", 1)])
    built = build(
        [change(1), change(2, mpid=200), change(3, mpid=300)],
        reg=reg,
        profiles={100: with_email, 200: without},
    )
    [request] = requests_of(built)
    assert request.user_profiles is not None
    assert [p.mpid for p in request.user_profiles] == ["100"]


def test_subscription_settings_are_the_connections_with_the_partners_over_them() -> None:
    connections = {
        7: connection(
            settings={"list": "customer-list", "region": "eu"},
            partner_settings={"list": "partner-list-id", "token": "t-9"},
        )
    }
    [audience] = only_profile(build([change(1)], connections=connections)).audiences
    assert audience.audience_subscription_settings == {
        "list": "partner-list-id",
        "region": "eu",
        "token": "t-9",
    }


# --------------------------------------------------------------------------- attributes

ATTRIBUTES = {
    "plan": "gold",
    "visits": 3.0,
    "score": 2.5,
    "vip": True,
    "tags": ["a", None, "b"],
    "nickname": None,
}


def test_named_attributes_are_sent_with_their_current_values() -> None:
    connections = {
        7: connection(
            attributes=["plan", "visits", "score", "vip", "tags", "nickname", "gone", "plan"]
        )
    }
    built = build(
        [change(1)],
        connections=connections,
        profiles={100: profile(attributes=ATTRIBUTES)},
    )
    [audience] = only_profile(built).audiences
    got = [(a.key, a.action, a.value, a.list_value) for a in audience.user_attributes]
    assert got == [
        ("plan", "upsert", "gold", []),
        ("visits", "upsert", "3", []),  # as the event path writes numbers
        ("score", "upsert", "2.5", []),
        ("vip", "upsert", "true", []),
        ("tags", "upsert", None, ["a", "b"]),
        ("nickname", "upsert", None, []),  # set to null: the user has it, without a value
        ("gone", "delete", None, []),  # the user no longer has it
    ]
    entries = json.loads(built[0][1])["user_profiles"][0]["audiences"][0]["user_attributes"]
    assert entries[4] == {"key": "tags", "action": "upsert", "list_value": ["a", "b"]}
    assert entries[6] == {"key": "gone", "action": "delete"}


def test_attribute_updates_carry_the_attributes_and_deletes_none() -> None:
    connections = {7: connection(attributes=["plan"]), 8: connection(8, attributes=["plan"])}
    user = only_profile(
        build(
            [change(1, "attribute_update"), change(2, "delete", audience_id=8)],
            connections=connections,
            profiles={100: profile(attributes={"plan": "silver"})},
        )
    )
    update, delete = user.audiences
    assert update.action == "attribute_update"
    assert [(a.key, a.value) for a in update.user_attributes] == [("plan", "silver")]
    assert delete.action == "delete" and delete.user_attributes == []


def test_no_attributes_without_the_permission_or_without_names() -> None:
    named = {7: connection(attributes=["plan"])}
    plain = {100: profile(attributes={"plan": "gold"})}
    [audience] = only_profile(
        build([change(1)], reg=registration(attributes=False), connections=named, profiles=plain)
    ).audiences
    assert audience.action == "add" and audience.user_attributes == []
    [audience] = only_profile(build([change(1)], profiles=plain)).audiences
    assert audience.user_attributes == []
    # an attribute update that would carry nothing is not sent at all
    assert build([change(1, "attribute_update")], profiles=plain) == []
    assert (
        build(
            [change(1, "attribute_update")],
            reg=registration(attributes=False),
            connections=named,
            profiles=plain,
        )
        == []
    )


# --------------------------------------------------------------------------- collapsing


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        (["add"], "add"),
        (["delete"], "delete"),
        (["attribute_update"], "attribute_update"),
        (["add", "delete"], "delete"),  # the last add or delete wins
        (["delete", "add"], "add"),
        (["add", "delete", "add"], "add"),
        (["add", "attribute_update"], "add"),  # folded into the add
        (["attribute_update", "add"], "add"),
        (["attribute_update", "attribute_update"], "attribute_update"),  # one update
        (["attribute_update", "delete"], "delete"),
        (["delete", "attribute_update"], "delete"),  # dropped after a delete
        (["add", "delete", "attribute_update"], "delete"),
        (["delete", "add", "attribute_update"], "add"),
    ],
)
def test_changes_of_one_user_and_audience_collapse(
    actions: list[AudienceAction], expected: str
) -> None:
    connections = {7: connection(attributes=["plan"])}
    changes = [change(seq, action) for seq, action in enumerate(actions, 1)]
    random.Random(len(actions)).shuffle(changes)  # applied in seq order, whatever the order given
    built = build(changes, connections=connections, profiles={100: profile(attributes={"x": 1})})
    [audience] = only_profile(built).audiences
    assert audience.action == expected
    if expected != "delete":
        assert [(a.key, a.action) for a in audience.user_attributes] == [("plan", "delete")]


def test_audiences_of_one_user_collapse_separately() -> None:
    user = only_profile(
        build(
            [
                change(1, "add"),
                change(2, "add", audience_id=8),
                change(3, "delete"),
                change(4, "delete", audience_id=8),
                change(5, "add", audience_id=8),
            ]
        )
    )
    assert [(a.audience_id, a.action) for a in user.audiences] == [(7, "delete"), (8, "add")]


# --------------------------------------------------------------------------- dropped


def test_changes_of_gone_or_unconnected_audiences_and_other_outputs_are_dropped() -> None:
    changes = [
        change(1, audience_id=7),
        change(2, audience_id=8),  # not connected to this output
        change(3, audience_id=9),  # connected, but the audience no longer exists
        change(4, audience_id=7, output="other"),  # another output's
        change(5, audience_id=10),  # connected to another output only
    ]
    connections = {
        7: connection(7),
        9: connection(9),
        10: connection(10, output="other"),
    }
    audiences = {**AUDIENCES, 10: AudienceRecord(10, "Elsewhere", "", b"{}", 0, 0)}
    user = only_profile(build(changes, connections=connections, audiences=audiences))
    assert [a.audience_id for a in user.audiences] == [7]
    assert build([change(2, audience_id=8)], connections=connections) == []
    assert build([], connections=connections) == []


# --------------------------------------------------------------------------- ids and splitting


def test_the_same_changes_give_the_same_ids_and_bytes() -> None:
    changes = [change(1), change(2, mpid=200), change(3, "delete", audience_id=8)]
    profiles = {100: profile(), 200: profile(200)}
    first = build(changes, profiles=profiles)
    again = build(list(reversed(changes)), profiles=profiles)
    assert first == again
    requests_of(first)


def test_ids_depend_on_the_output_and_the_changes() -> None:
    changes = [change(1), change(2, mpid=200)]
    profiles = {100: profile(), 200: profile(200)}
    [(base, _)] = build(changes, profiles=profiles)
    other_output = Output("crm-2", ModuleDestination("crm-module"), 0, 0)
    other_connections = {7: connection(7, output="crm-2")}
    moved = [change(c.seq, c.action, mpid=c.mpid, output="crm-2") for c in changes]
    [(elsewhere, _)] = build(
        moved, profiles=profiles, output=other_output, connections=other_connections
    )
    [(more, _)] = build([*changes, change(3, mpid=200)], profiles=profiles)
    [(fewer, _)] = build(changes[:1], profiles=profiles)
    assert len({base, elsewhere, more, fewer}) == 4


def test_at_most_max_profiles_per_request_and_a_user_never_split() -> None:
    mpids = [101, 102, 103, 104, 105]
    changes = [change(i + 1, mpid=m) for i, m in enumerate(mpids)]
    # later changes of the first users: they join their users' requests
    changes += [change(10, "delete", mpid=101), change(11, "add", mpid=104, audience_id=8)]
    profiles = {m: profile(m) for m in mpids}
    built = build(changes, profiles=profiles, max_profiles=2)
    requests = requests_of(built)
    assert [[p.mpid for p in r.user_profiles or []] for r in requests] == [
        ["101", "102"],
        ["103", "104"],
        ["105"],
    ]
    assert len({delivery_id for delivery_id, _ in built}) == 3
    first_user = (requests[0].user_profiles or [])[0]
    assert [a.action for a in first_user.audiences] == ["delete"]
    fourth_user = (requests[1].user_profiles or [])[1]
    assert [(a.audience_id, a.action) for a in fourth_user.audiences] == [(7, "add"), (8, "add")]
    assert [r.timestamp_ms for r in requests] == [10, 11, 5]
    # built again: the same requests, the same ids
    assert build(list(reversed(changes)), profiles=profiles, max_profiles=2) == built
    assert [len(r.user_profiles or []) for r in requests_of(build(changes, profiles=profiles))] == [
        5
    ]


def test_max_profiles_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_profiles"):
        build([change(1)], max_profiles=0)


# --------------------------------------------------------------------------- the example partner

PARTNER_TOKEN = "partner-token-7"


def post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Token {PARTNER_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        answer: bytes = response.read()
        return answer


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.slow
def test_the_example_partner_stores_what_the_requests_say(tmp_path: Path) -> None:
    db = tmp_path / "partner.db"
    reg = SqlitePartner().registration()  # email sha256, customer raw, idfa raw...; mpid allowed
    output = Output("partner", ModuleDestination("sqlite"), 0, 0, settings={"listPrefix": "pb_"})
    connections = {
        7: connection(
            attributes=["plan", "tags"], partner_settings={"listName": "buyers"}, output="partner"
        ),
        8: connection(8, attributes=["plan"], output="partner"),
    }
    ada = profile(
        100,
        identities=[("email", EMAIL, 5), ("ios_advertising_id", "idfa-1", 5)],
        attributes={"plan": "gold", "tags": ["a", "b"]},
    )
    bob = profile(200, identities=[("customer_id", "bob-1", 5)], attributes={"plan": "free"})
    first = [
        PendingChange(1, "partner", 7, 100, "add", 10),
        PendingChange(2, "partner", 8, 100, "add", 11),
        PendingChange(3, "partner", 7, 200, "add", 12),
    ]
    second = [
        PendingChange(4, "partner", 8, 100, "delete", 20),
        PendingChange(5, "partner", 7, 200, "attribute_update", 21),
    ]
    profiles = {100: ada, 200: bob}
    batches = [
        membership_requests(output, reg, connections, AUDIENCES, first, profiles, 1),
        membership_requests(
            output,
            reg,
            connections,
            AUDIENCES,
            second,
            {100: ada, 200: profile(200, identities=[("customer_id", "bob-1", 5)])},
            1,
        ),
    ]
    assert [len(b) for b in batches] == [2, 2]
    with BackgroundServer(build_app(str(db), PARTNER_TOKEN)).start() as server:
        for built in batches:
            for _, payload in built:
                answer = parse(post(server.url + "/firehose", payload))
                assert isinstance(answer, AudienceMembershipChangeResponse)
                assert answer.suspend_subscription is False
    changes = rows(
        db,
        "SELECT audience_id, list_name, user_key, action, user_attributes FROM audience_changes"
        " ORDER BY rowid",
    )
    assert changes == [
        (7, "buyers", "mpid:100", "add", '{"plan": "gold", "tags": null}'),
        (8, "pb_8", "mpid:100", "add", '{"plan": "gold"}'),
        (7, "buyers", "mpid:200", "add", '{"plan": "free", "tags": null}'),
        (8, "pb_8", "mpid:100", "delete", "{}"),
        (7, "buyers", "mpid:200", "attribute_update", '{"plan": null, "tags": null}'),
    ]
    members = rows(
        db, "SELECT audience_id, user_key, user_attributes FROM audience_members ORDER BY 1, 2"
    )
    # Bob's plan was deleted by the attribute update; the example keeps only scalar values
    # (a list_value is stored as null)
    assert members == [(7, "mpid:100", '{"plan": "gold"}'), (7, "mpid:200", "{}")]
    identities = rows(
        db, "SELECT user_key, kind, type, encoding, value FROM identities ORDER BY 1, 2, 3"
    )
    assert identities == [
        ("mpid:100", "device", "ios_advertising_id", "raw", "idfa-1"),
        ("mpid:100", "user", "email", "sha256", sha256(EMAIL)),
        ("mpid:200", "user", "customer", "raw", "bob-1"),
    ]


# --------------------------------------------------------------------------- flush policy


@pytest.mark.parametrize(
    ("bulk", "expected"),
    [
        (None, (1, 0.0)),
        (BulkConfiguration(), (1, 0.0)),
        (
            BulkConfiguration(bulk_forward_wait_for_messages=4, bulk_forward_wait_in_minutes=30),
            (4, 1800.0),
        ),
        (BulkConfiguration(bulk_forward_wait_for_messages=50), (50, DEFAULT_MAX_WAIT_S)),
        (BulkConfiguration(bulk_forward_wait_in_minutes=5), (NO_COUNT, 300.0)),
        (BulkConfiguration(bulk_forward_wait_for_messages=0), (1, 0.0)),
        (
            BulkConfiguration(bulk_forward_wait_for_messages=-3, bulk_forward_wait_in_minutes=2),
            (NO_COUNT, 120.0),
        ),
    ],
)
def test_flush_policy(bulk: BulkConfiguration | None, expected: tuple[int, float]) -> None:
    assert flush_policy(registration(bulk=bulk)) == expected


def test_flush_policy_without_audience_processing() -> None:
    assert flush_policy(registration(audience=False)) == (1, 0.0)
