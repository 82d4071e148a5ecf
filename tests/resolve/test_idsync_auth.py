"""IDSync's HMAC signatures (patchbay.resolve.idsync_auth): dates, paths, comparisons."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from patchbay.resolve.idsync_auth import (
    REPLAY_WINDOW_MS,
    date_problem,
    parse_date,
    signature,
    signature_matches,
    signed_paths,
)

# 2017-07-12T22:41:27Z, the date of the SDKs' example.
WHEN_MS = 1_499_899_287_000


@pytest.mark.parametrize(
    "value",
    [
        "20170712T224127Z",
        " 20170712T224127Z ",
        "Wed, 12 Jul 2017 22:41:27 GMT",
        "Wednesday, 12-Jul-17 22:41:27 GMT",
        "Wed Jul 12 22:41:27 2017",
        "Wed, 12 Jul 2017 23:41:27 +0100",
    ],
)
def test_dates_the_sdks_send(value: str) -> None:
    assert parse_date(value) == WHEN_MS


@pytest.mark.parametrize(
    "value",
    ["", "now", "20170712T224127", "20171312T224127Z", "2017-07-12", "20170712T224127+0100"],
)
def test_dates_that_are_refused(value: str) -> None:
    assert parse_date(value) is None


def test_the_replay_window() -> None:
    assert REPLAY_WINDOW_MS == 15 * 60 * 1000
    date = "20170712T224127Z"
    assert date_problem(date, WHEN_MS) is None
    assert date_problem(date, WHEN_MS + REPLAY_WINDOW_MS) is None
    assert date_problem(date, WHEN_MS - REPLAY_WINDOW_MS) is None
    late = date_problem(date, WHEN_MS + REPLAY_WINDOW_MS + 1000)
    assert late is not None and late.startswith("Date: more than 15 minutes")
    assert date_problem(date, WHEN_MS - REPLAY_WINDOW_MS - 1000) == late
    assert date_problem(None, WHEN_MS) == "Date: required with x-mp-signature"
    assert date_problem(" ", WHEN_MS) == "Date: required with x-mp-signature"
    bad = date_problem("yesterday", WHEN_MS)
    assert bad is not None and bad.startswith("Date: expected ISO 8601 basic")


def test_the_signature_is_the_sdks() -> None:
    body = b'{"known_identities":{"email":"a@example.com"}}'
    expected = hmac.new(
        b"ps_secret",
        b"POST\n20170712T224127Z\n/v1/identify" + body,
        hashlib.sha256,
    ).hexdigest()
    assert signature("ps_secret", "POST", "20170712T224127Z", "/v1/identify", body) == expected


def test_the_paths_a_client_may_sign() -> None:
    assert signed_paths("/v1/identify", "") == ["/v1/identify"]
    assert signed_paths("/identity/v1/identify", "") == ["/identity/v1/identify", "/v1/identify"]
    assert signed_paths("/webevents/v1/identity/pk/Alias", "") == [
        "/webevents/v1/identity/pk/Alias",
        "/v1/identity/pk/Alias",
    ]
    assert signed_paths("/identity/v1/identify", "read_only=true") == [
        "/identity/v1/identify?read_only=true",
        "/v1/identify?read_only=true",
    ]
    assert signed_paths("/identityx/v1/identify", "") == ["/identityx/v1/identify"]


def test_signature_matches() -> None:
    body = b"{}"
    date = "20170712T224127Z"
    over_v1 = signature("s", "POST", date, "/v1/identify", body)
    over_served = signature("s", "POST", date, "/identity/v1/identify", body)
    for given in (over_v1, over_served, over_v1.upper()):
        assert signature_matches("s", "POST", date, "/identity/v1/identify", "", body, given)
    assert signature_matches("s", "POST", date, "/v1/identify", "", body, over_v1)
    assert not signature_matches("s", "POST", date, "/v1/identify", "", body, over_served)
    assert not signature_matches("s", "POST", date, "/v1/identify", "", b"{ }", over_v1)
    assert not signature_matches("t", "POST", date, "/v1/identify", "", body, over_v1)
    assert not signature_matches("s", "PUT", date, "/v1/identify", "", body, over_v1)
    other_date = "20170712T224128Z"
    assert not signature_matches("s", "POST", other_date, "/v1/identify", "", body, over_v1)
    assert not signature_matches("s", "POST", date, "/v1/identify", "", body, "")
    assert not signature_matches("s", "POST", date, "/v1/identify", "", body, "é" * 64)
