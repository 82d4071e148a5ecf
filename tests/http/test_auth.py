"""The authentication helpers every API shares (patchbay.http.auth)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from patchbay.http import auth
from patchbay.http.auth import BearerToken, auth_failed, key_prefix


def test_bearer_token_says_why_a_header_does_not_carry_it() -> None:
    token = BearerToken("s3cret")
    assert token.check("Bearer s3cret") is None
    assert token.check("bearer  s3cret ") is None
    assert token.check(None) == "no Authorization header"
    assert token.check("Basic czNjcmV0") == "not a Bearer token"
    assert token.check("Bearer ") == "not a Bearer token"
    assert token.check("Bearer s3cre") == "wrong token"


def test_key_prefix_shows_at_most_four_characters() -> None:
    assert key_prefix("pk_abcdefgh") == "pk_a..."
    assert key_prefix("") is None and key_prefix(None) is None


def test_auth_failed_logs_address_and_reason_never_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def warning(self, event: str, **fields: Any) -> None:
            logged.append((event, fields))

    monkeypatch.setattr(auth, "log", Recorder())
    scope = {"type": "http", "path": "/v2/events", "client": ("10.1.2.3", 5000), "headers": []}
    auth_failed(Request(scope), "events", "wrong secret", "pk_abcdefgh")
    assert logged == [
        (
            "auth_failed",
            {
                "api": "events",
                "path": "/v2/events",
                "source": "10.1.2.3",
                "reason": "wrong secret",
                "key_prefix": "pk_a...",
            },
        )
    ]
