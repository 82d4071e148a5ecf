"""The README's examples work as written: its Python SDK example sends a batch to a real
``patchbay serve``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import Server

README = Path(__file__).parent.parent / "README.md"


def python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_sdk_example_sends_a_batch(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    (example,) = [code for code in python_examples() if "mparticle.EventsApi" in code]
    assert "http://127.0.0.1:8080/v2" in example
    monkeypatch.setenv("KEY", server.credentials.key)
    monkeypatch.setenv("SECRET", server.credentials.secret)
    code = example.replace("http://127.0.0.1:8080/v2", f"{server.url}/v2")
    exec(compile(code, str(README), "exec"), {})  # raises unless the server answered 202
    (stored,) = server.stored()
    batch = json.loads(stored.body)
    assert batch["user_identities"] == {"customerid": "1234"}
    assert [e["data"]["event_name"] for e in batch["events"]] == ["click"]
