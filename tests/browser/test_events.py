"""The Web SDK's event uploads (``POST /webevents/v3/JS/{key}/events``) from Chromium into
Patchbay's log: several event types and a commerce purchase, and the batch the SDK sends
with ``navigator.sendBeacon`` when the page is left. Each batch is in the log once, under
the MPID IDSync gave. Skipped where the endpoint is not served."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.browser.harness import (
    SdkPage,
    needs_browser,
    skip_unless_served,
    wait_until,
    web_batches,
)
from tests.conftest import Server

pytestmark = [pytest.mark.slow, needs_browser]

LOG_EVENTS = """() => {
    mParticle.logPageView('Home', {page: '/'});
    mParticle.logEvent('Clicked buy', mParticle.EventType.Navigation, {button: 'buy'});
    mParticle.Identity.getCurrentUser().setUserAttribute('plan', 'gold');
    const shoe = mParticle.eCommerce.createProduct('Shoe', 'sku-1', 50, 2);
    const paid = mParticle.eCommerce.createTransactionAttributes('tx-1', null, null, 100, 0, 0);
    mParticle.eCommerce.logProductAction(
        mParticle.ProductActionType.Purchase, [shoe], null, null, paid);
}"""


@pytest.fixture
def events_served(patchbay: Server) -> None:
    skip_unless_served(
        patchbay, f"/webevents/v3/JS/{patchbay.credentials.key}/events", "the Web SDK's uploads"
    )


def events_of(batches: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], str]]:
    """Every event of ``batches`` as (event_type, data, the batch's mpid)."""
    return [(e["event_type"], e["data"], b["mpid"]) for b in batches for e in b["events"]]


def by_type(events: list[tuple[str, dict[str, Any], str]], kind: str) -> list[dict[str, Any]]:
    return [data for event_type, data, _ in events if event_type == kind]


def test_events_of_every_type_are_logged_once_under_the_users_mpid(
    sdk: SdkPage, patchbay: Server, domain: str, events_served: None
) -> None:
    mpid = sdk.init(
        patchbay.credentials.key,
        domain,
        identifyRequest={"userIdentities": {"customerid": "web-events-1"}},
    )
    sdk.run(LOG_EVENTS)

    def all_there() -> list[dict[str, Any]] | None:
        batches = web_batches(patchbay, patchbay.credentials.id)
        return batches if by_type(events_of(batches), "commerce_event") else None

    batches = wait_until(all_there, "the purchase in the log")
    events = events_of(batches)
    kinds = {event_type for event_type, _, _ in events}
    assert {"session_start", "screen_view", "custom_event", "commerce_event"} <= kinds
    assert {m for _, _, m in events} == {mpid}
    assert [d["screen_name"] for d in by_type(events, "screen_view")] == ["Home"]
    clicked = by_type(events, "custom_event")
    assert [(d["event_name"], d["custom_event_type"]) for d in clicked] == [
        ("Clicked buy", "navigation")
    ]
    assert clicked[0]["custom_attributes"] == {"button": "buy"}
    [purchase] = by_type(events, "commerce_event")
    action = purchase["product_action"]
    assert (action["action"], action["transaction_id"], action["total_amount"]) == (
        "purchase",
        "tx-1",
        100,
    )
    assert [(p["id"], p["quantity"]) for p in action["products"]] == [("sku-1", 2)]
    assert [d["user_attribute_name"] for d in by_type(events, "user_attribute_change")] == ["plan"]
    # once each: no batch twice in the log, and no upload the browser had to retry
    request_ids = [b["source_request_id"] for b in batches]
    assert Counter(request_ids).most_common(1)[0][1] == 1
    messages = [d["source_message_id"] for _, d, _ in events]
    assert len(messages) == len(set(messages))
    uploads = [u for u in sdk.requests if u.endswith(f"/v3/JS/{patchbay.credentials.key}/events")]
    assert len(uploads) == len(batches)
    assert sdk.hosts() <= {"127.0.0.1", "localhost"}


def test_the_batch_pending_when_the_page_is_left_arrives_by_beacon(
    sdk: SdkPage, patchbay: Server, domain: str, events_served: None
) -> None:
    # uploads every minute only, so the event is still pending when the page goes
    mpid = sdk.init(
        patchbay.credentials.key,
        domain,
        identifyRequest={"userIdentities": {"customerid": "web-events-2"}},
        requestConfig=False,
        flags={"eventBatchingIntervalMillis": "60000"},
    )
    sdk.run("mParticle.logEvent('Leaving soon', mParticle.EventType.Other)")
    sdk.page.goto(sdk.site.origin + "/elsewhere.html")

    def left() -> list[dict[str, Any]] | None:
        events = events_of(web_batches(patchbay, patchbay.credentials.id))
        found = [d for d in by_type(events, "custom_event") if d["event_name"] == "Leaving soon"]
        return found or None

    [leaving] = wait_until(left, "the beacon's batch in the log")
    batches = web_batches(patchbay, patchbay.credentials.id)
    carrying = [b for b in batches if leaving in (e["data"] for e in b["events"])]
    assert [b["mpid"] for b in carrying] == [mpid]
