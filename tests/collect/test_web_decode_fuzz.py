"""Property tests of the Web SDK's batch decoding (:func:`patchbay.collect.ingest.prepare_web`):
whatever the body, it returns one stamped batch or raises :class:`BadInput` (the 422), never
anything else; what it stores decodes as the batch it checked, with the browser's
``User-Agent``, every other value kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from patchbay.backends.records import Input
from patchbay.collect.batch import Batch
from patchbay.collect.decode import BadInput
from patchbay.collect.ingest import WEB_CHANNEL, Prepared, RequestStamps, prepare_web
from tests.collect.test_decode_fuzz import FAST, batches, encode, json_values

FIXTURE = Path(__file__).parent.parent / "data" / "web" / "webevents-v3-batch.json"
WEB_BATCH: dict[str, Any] = json.loads(FIXTURE.read_text())
SITE = Input(id="i-web", name="site", type="web", rate_limit=0, enabled=True, created_at_ms=0)
STAMPS = RequestStamps(SITE, "203.0.113.9", 1_700_000_000_000, channel=WEB_CHANNEL)
user_agents = st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)


def check(body: bytes, user_agent: str | None) -> Prepared | None:
    """``prepare_web`` returns a good batch or raises ``BadInput``; nothing else."""
    try:
        prepared = prepare_web(body, STAMPS, user_agent)
    except BadInput as exc:
        assert exc.path and exc.reason
        return None
    (stored,) = prepared.batches
    assert (stored.input_id, stored.channel, stored.ip) == ("i-web", WEB_CHANNEL, "203.0.113.9")
    checked = msgspec.json.decode(body, type=Batch)
    kept = msgspec.json.decode(stored.body, type=Batch)
    assert prepared.events == [checked.event_count] == [kept.event_count]
    assert kept.events == checked.events
    if user_agent:
        assert kept.device_info is not None
        named = checked.device_info.http_header_user_agent if checked.device_info else None
        assert kept.device_info.http_header_user_agent == (named or user_agent)
    return prepared


@st.composite
def damaged_web_batches(draw: st.DrawFn) -> Any:
    """The fixture with one value anywhere in it replaced by any JSON value."""
    batch = json.loads(json.dumps(WEB_BATCH))
    node: Any = batch
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return batch
        key = draw(st.sampled_from(keys))
        child = node[key]
        if not isinstance(child, dict | list) or draw(st.booleans()):
            node[key] = draw(json_values)
            return batch
        node = child


@FAST
@given(st.binary(max_size=300), user_agents)
def test_arbitrary_bytes(body: bytes, user_agent: str | None) -> None:
    check(body, user_agent)


@FAST
@given(batches | json_values, st.booleans(), user_agents)
def test_arbitrary_json(value: Any, ascii_only: bool, user_agent: str | None) -> None:
    check(encode(value, ascii_only), user_agent)


@FAST
@given(damaged_web_batches(), st.booleans(), user_agents)
def test_web_batches_with_one_value_changed(
    value: Any, ascii_only: bool, user_agent: str | None
) -> None:
    check(encode(value, ascii_only), user_agent)


@given(user_agents)
def test_the_fixture_always_decodes(user_agent: str | None) -> None:
    assert check(json.dumps(WEB_BATCH).encode(), user_agent) is not None
