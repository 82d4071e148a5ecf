"""The Web SDK (npm ``@mparticle/web-sdk``) in Chromium against a real Patchbay on HTTPS:
identify at init, login, modify, logout and alias, each checked in Patchbay's profiles."""

from __future__ import annotations

import pytest

from tests.browser.harness import SdkPage, find_profile, identities_of, needs_browser
from tests.conftest import Server

pytestmark = [pytest.mark.slow, needs_browser]


def test_init_identifies_over_https_and_nothing_leaves_the_machine(
    sdk: SdkPage, patchbay: Server, domain: str
) -> None:
    mpid = sdk.init(patchbay.credentials.key, domain)
    assert f"https://{domain}/identity/v1/identify" in sdk.requests
    assert sdk.hosts() <= {"127.0.0.1", "localhost"}
    assert not [e for e in sdk.errors() if "identity" in e.lower()]
    shown = find_profile(patchbay, "show", mpid)
    assert str(shown["mpid"]) == mpid


def test_login_modify_logout_and_alias(sdk: SdkPage, patchbay: Server, domain: str) -> None:
    sdk.init(patchbay.credentials.key, domain)

    login = sdk.identity(
        "login", {"userIdentities": {"customerid": "web-cust-1", "email": "one@example.com"}}
    )
    assert login["httpCode"] == 200, login
    known = login["mpid"]
    assert sdk.mpid() == known
    assert sdk.run("mParticle.Identity.getCurrentUser().isLoggedIn()") is True
    profile = find_profile(patchbay, "find", "--customer-id", "web-cust-1")
    assert str(profile["mpid"]) == known
    assert identities_of(profile) == {"customer_id": "web-cust-1", "email": "one@example.com"}

    modify = sdk.identity(
        "modify", {"userIdentities": {"customerid": "web-cust-1", "email": "two@example.com"}}
    )
    assert modify["httpCode"] == 200, modify
    profile = find_profile(patchbay, "find", "--email", "two@example.com")
    assert str(profile["mpid"]) == known
    assert identities_of(profile)["email"] == "two@example.com"

    logout = sdk.identity("logout")
    assert logout["httpCode"] == 200, logout
    anonymous = logout["mpid"]
    assert sdk.mpid() == anonymous != known
    assert sdk.run("mParticle.Identity.getCurrentUser().isLoggedIn()") is False

    alias = sdk.run(
        """([source, destination]) => new Promise(resolve => {
            const now = Date.now();
            mParticle.Identity.aliasUsers(
                {sourceMpid: source, destinationMpid: destination, scope: 'device',
                 startTime: now - 60000, endTime: now},
                result => resolve(result.httpCode));
        })""",
        [anonymous, known],
    )
    assert alias == 202
    alias_url = f"https://{domain}/webevents/v1/identity/{patchbay.credentials.key}/Alias"
    assert alias_url in sdk.requests
    folded = find_profile(patchbay, "show", anonymous)
    assert str(folded["mpid"]) == known
    assert [(str(m["from_mpid"]), m["reason"]) for m in folded["merges"]] == [(anonymous, "alias")]

    again = sdk.identity("login", {"userIdentities": {"customerid": "web-cust-1"}})
    assert (again["httpCode"], again["mpid"]) == (200, known)
    assert sdk.hosts() <= {"127.0.0.1", "localhost"}


def test_identify_request_at_init_names_the_user(
    sdk: SdkPage, patchbay: Server, domain: str
) -> None:
    mpid = sdk.init(
        patchbay.credentials.key,
        domain,
        identifyRequest={"userIdentities": {"customerid": "web-cust-2"}},
    )
    assert str(find_profile(patchbay, "find", "--customer-id", "web-cust-2")["mpid"]) == mpid
