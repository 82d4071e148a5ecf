"""End to end over HTTP: a real ``patchbay serve`` computes an audience that the CLI created
and connected to the SQLite example partner, and the partner receives the subscription,
the adds, the attribute updates, the deletes when the window passes, and the remove on
disconnect; every message Patchbay sends also parses with the strict Firehose models."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.sqlite_partner.http import build_app
from patchbay.firehose import (
    AudienceMembershipChangeRequest,
    AudienceSubscriptionRequest,
)
from patchbay.partner.lambda_local import BackgroundServer
from tests.activate.test_deliveries_e2e import PartnerProxy, cli
from tests.activate.test_deliveries_e2e import partner_rows as rows
from tests.activate.test_engine_support import wait_for
from tests.conftest import Server, add_input, start_server, stop_server
from tests.deployments import Deployment
from tests.segment.test_process import wait_for_segment_lead

pytestmark = pytest.mark.slow

TOKEN = "partner-token-e2e"
FAST = {
    "PATCHBAY_DELIVERY_BASE_DELAY_S": "0.1",
    "PATCHBAY_DELIVERY_MAX_DELAY_S": "0.5",
    "PATCHBAY_DELIVERY_POLL_S": "0.05",
}
#: The window of the audience: short, so that the test sees users leave it.
#: The audience's window: long enough for the CLI calls made while ada is a member (each
#: starts a Python process: a second or two on a loaded machine).
WINDOW_S = 6


@pytest.fixture
def partner(tmp_path: Path) -> Iterator[tuple[PartnerProxy, Path, int]]:
    db = tmp_path / "partner.db"
    recorder = PartnerProxy(build_app(str(db), TOKEN))
    server = BackgroundServer(recorder).start()
    try:
        yield recorder, db, server.port
    finally:
        server.stop()


def batch(customer: str, *, play: bool, **attributes: str) -> dict[str, Any]:
    events = []
    if play:
        now_ms = int(time.time() * 1000)
        events.append(
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "Play",
                    "custom_event_type": "other",
                    "timestamp_unixtime_ms": now_ms,
                },
            }
        )
    return {
        "environment": "production",
        "user_identities": {"customer_id": customer, "email": f"{customer}@example.com"},
        "user_attributes": attributes,
        "events": events,
    }


def test_audience_from_cli_to_partner(
    partner: tuple[PartnerProxy, Path, int],
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    deployment: Deployment,
) -> None:
    recorder, partner_db, port = partner
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    credentials = add_input(data_dir, "app")
    cli(data_dir, "modules", "register", "sqlite", "--url",
        f"http://127.0.0.1:{port}/firehose", "--token", TOKEN)  # fmt: skip
    cli(data_dir, "outputs", "add", "crm", "--module", "sqlite", "--setting", "apiKey=K-1")
    server: Server = start_server(data_dir)
    server.credentials = credentials
    try:
        definition = {
            "name": "players",
            "description": "Played in the last few seconds, in Germany or France",
            "criteria": {
                "all": [
                    {"event": {"type": "custom_event", "name": "Play"}, "within": f"{WINDOW_S}s"},
                    {"user_attribute": "country", "op": "in", "value": ["DE", "FR"]},
                ]
            },
        }
        path = tmp_path / "players.json"
        path.write_text(json.dumps(definition))
        created = json.loads(cli(data_dir, "audiences", "create", str(path), "--json"))
        assert created["name"] == "players"
        audience_id = created["id"]
        cli(data_dir, "audiences", "connect", "players", "--output", "crm", "--attribute", "plan")

        # the subscription: add, answered with the list name the partner chose
        wait_for(
            lambda: rows(partner_db, "SELECT status FROM audience_subscriptions") == [("active",)],
            what="the subscription at the partner",
        )
        (subscription,) = recorder.messages(AudienceSubscriptionRequest)
        assert subscription.action == "add"
        assert subscription.audience_id == audience_id
        assert subscription.audience_name == "players"

        # ada's play stays in the window for WINDOW_S from now: the stage must run already
        wait_for_segment_lead(server)
        # two users play; one is in Germany (joins), one in Spain (does not)
        for body in (batch("ada", play=True, country="DE", plan="gold"),
                     batch("bob", play=True, country="ES", plan="gold")):  # fmt: skip
            assert server.post("/v2/events", json.dumps(body).encode())[0] == 202
        members_sql = "SELECT user_key FROM audience_members"
        wait_for(lambda: len(rows(partner_db, members_sql)) == 1, what="ada's add")
        (user_key,) = rows(partner_db, members_sql)[0]
        assert cli(data_dir, "audiences", "members", "players").split() == [user_key[5:]]
        profile = json.loads(cli(data_dir, "profiles", "find", "--customer-id", "ada"))
        mpid = profile["mpid"]
        assert user_key == f"mpid:{mpid}"
        changes_sql = "SELECT action, user_attributes FROM audience_changes ORDER BY rowid"
        assert rows(partner_db, changes_sql) == [("add", json.dumps({"plan": "gold"}))]
        assert profile["audience_memberships"][0]["audience_name"] == "players"

        # ada's plan changes while she is a member: an attribute update
        body = batch("ada", play=False, plan="platinum")
        assert server.post("/v2/events", json.dumps(body).encode())[0] == 202
        wait_for(lambda: len(rows(partner_db, changes_sql)) >= 2, what="the attribute update")
        assert rows(partner_db, changes_sql)[1] == (
            "attribute_update",
            json.dumps({"plan": "platinum"}),
        )

        # the play leaves the window: ada leaves the audience, by itself
        wait_for(
            lambda: rows(partner_db, members_sql) == [],
            timeout_s=WINDOW_S + 10,
            what="ada's delete when the window passed",
        )
        assert rows(partner_db, changes_sql)[-1][0] == "delete"
        assert cli(data_dir, "audiences", "members", "players").split() == []

        # disconnect: remove
        cli(data_dir, "audiences", "disconnect", "players", "--output", "crm")
        wait_for(
            lambda: rows(partner_db, "SELECT status FROM audience_subscriptions") == [("removed",)],
            what="the remove at the partner",
        )
        actions = [m.action for m in recorder.messages(AudienceSubscriptionRequest)]
        assert actions == ["add", "remove"]
        changes = recorder.messages(AudienceMembershipChangeRequest)
        sent = [
            (a.action, p.mpid) for m in changes for p in m.user_profiles or [] for a in p.audiences
        ]
        assert sent == [("add", str(mpid)), ("attribute_update", str(mpid)), ("delete", str(mpid))]
        assert all(
            a.audience_subscription_settings.get("listName")
            for m in changes
            for p in m.user_profiles or []
            for a in p.audiences
        ), "the settings the partner answered are sent back"
        metrics = server.get("/metrics")[1].decode()
        assert 'patchbay_audience_joins_total{audience="players"} 1.0' in metrics
        assert 'patchbay_audience_leaves_total{audience="players"} 1.0' in metrics
    finally:
        stop_server(server)
