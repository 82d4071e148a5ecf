"""From the browser to a Firehose partner: the Web SDK's events, uploaded to Patchbay, are
delivered to the example partner (``examples/sqlite_partner``) connected to the web input,
under the MPID IDSync gave the page."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from examples.sqlite_partner.http import build_app
from patchbay.http.devcert import DevCert
from patchbay.partner.lambda_local import BackgroundServer
from tests.browser.harness import SdkPage, needs_browser, wait_until
from tests.conftest import Server, add_input, run_cli, start_server, stop_server, tls_args

pytestmark = [pytest.mark.slow, needs_browser]

LOG_EVENTS = """() => {
    mParticle.logPageView('Pricing', {page: '/pricing'});
    mParticle.logEvent('Chose plan', mParticle.EventType.Navigation, {plan: 'team'});
    const seat = mParticle.eCommerce.createProduct('Seat', 'seat-1', 12, 3);
    const paid = mParticle.eCommerce.createTransactionAttributes('tx-9', null, null, 36, 0, 0);
    mParticle.eCommerce.logProductAction(
        mParticle.ProductActionType.Purchase, [seat], null, null, paid);
    mParticle.upload();
}"""


@dataclass(frozen=True)
class Partner:
    """The example partner, running: where it answers and its database."""

    url: str
    db: Path


@pytest.fixture(scope="module")
def partner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Partner]:
    base = tmp_path_factory.mktemp("partner")
    with BackgroundServer(build_app(str(base / "partner.db"))).start() as running:
        yield Partner(running.url, base / "partner.db")


@pytest.fixture(scope="module")
def patchbay(
    dev_cert: DevCert, tmp_path_factory: pytest.TempPathFactory, partner: Partner
) -> Iterator[Server]:
    """A ``patchbay serve`` on HTTPS with its delivery process and a ``web`` input, the
    example partner registered as a module and an output of it connected to the input."""
    data_dir = tmp_path_factory.mktemp("patchbay") / "data"
    credentials = add_input(data_dir, "website", type_="web")
    for args in (
        ("modules", "register", "sqlite-http", "--url", partner.url),
        ("outputs", "add", "partner", "--module", "sqlite-http", "--setting", "apiKey=k1"),
        ("connections", "add", "--input", "website", "--output", "partner"),
    ):
        done = run_cli(*args, data_dir=data_dir)
        assert done.returncode == 0, done.stderr
    server = start_server(data_dir, *tls_args(dev_cert), ca=dev_cert.ca)
    server.credentials = credentials
    yield server
    stop_server(server)


def partner_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of the partner's database (none before its first request made it)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []


def test_the_browsers_events_reach_the_partner(
    sdk: SdkPage, patchbay: Server, partner: Partner
) -> None:
    domain = f"localhost:{patchbay.port}"
    mpid = sdk.init(
        patchbay.credentials.key,
        domain,
        identifyRequest={"userIdentities": {"customerid": "web-partner-1"}},
    )
    sdk.run(LOG_EVENTS)
    db = partner.db

    def purchase() -> list[tuple[Any, ...]] | None:
        sql = "SELECT event_type, name FROM events WHERE event_type = 'product_action'"
        return partner_rows(db, sql) or None

    # (Firehose carries a purchase as a product action event)
    assert wait_until(purchase, "the purchase at the partner") == [("product_action", "purchase")]
    expected = {"session_start", "screen_view", "custom_event", "product_action"}

    def kinds() -> set[Any] | None:  # (the SDK's uploads may reach the partner in any order)
        found = {kind for (kind,) in partner_rows(db, "SELECT event_type FROM events")}
        return found if expected <= found else None

    assert expected <= wait_until(kinds, "every kind of event at the partner")
    names = {name for (name,) in partner_rows(db, "SELECT name FROM events") if name}
    assert {"Pricing", "Chose plan"} <= names
    # every batch the partner got is the browser's user's, as IDSync gave it
    assert {m for (m,) in partner_rows(db, "SELECT mpid FROM batches")} == {mpid}
    assert sdk.hosts() <= {"127.0.0.1", "localhost"}
