"""``X-Forwarded-For`` is believed only from the configured proxies (``trusted_proxies``):
otherwise any client, a local one included, could choose the address Patchbay stores with
its batches and logs on failed authentication."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from patchbay.config import ConfigError, load_settings
from tests.conftest import add_input, start_server, stop_server

BATCH = json.dumps(
    {"environment": "production", "user_identities": {"customer_id": "c1"}, "events": []}
).encode()
SPOOFED = {"X-Forwarded-For": "203.0.113.9"}


@pytest.mark.parametrize(
    ("trusted", "stored_ip"), [(None, "127.0.0.1"), ("127.0.0.1/32", "203.0.113.9")]
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, trusted: str | None, stored_ip: str
) -> None:
    credentials = add_input(data_dir, "app")
    if trusted is not None:
        monkeypatch.setenv("PATCHBAY_TRUSTED_PROXIES", trusted)
    server = start_server(data_dir)
    server.credentials = credentials
    try:
        status, _, body = server.post("/v2/events", BATCH, headers=SPOOFED)
        assert status == 202, body
        (stored,) = server.stored()
        assert stored.ip == stored_ip
    finally:
        stop_server(server)


def test_trusted_proxies_are_addresses_or_cidrs(tmp_path: Path) -> None:
    env = {"PATCHBAY_TRUSTED_PROXIES": "10.0.0.5, 192.168.0.0/16 ,"}
    assert load_settings({}, env).trusted_proxies == ("10.0.0.5", "192.168.0.0/16")
    assert load_settings({}, {}).trusted_proxies == ()
    with pytest.raises(ConfigError, match=re.escape("PATCHBAY_TRUSTED_PROXIES: 'proxy.local' is")):
        load_settings({}, {"PATCHBAY_TRUSTED_PROXIES": "proxy.local"})
    file = tmp_path / "patchbay.toml"
    file.write_text('trusted_proxies = ["10.1.0.0/16"]\n')
    assert load_settings({}, {}, file).trusted_proxies == ("10.1.0.0/16",)
