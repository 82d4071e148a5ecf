"""The stable ids are exactly uuid5 of their parts."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from patchbay.activate.ids import NAMESPACE, event_id, message_id


@given(st.text(), st.text(), st.integers(0, 10_000), st.text(min_size=1))
def test_ids_are_uuid5_of_their_parts(output: str, batch: str, index: int, part: str) -> None:
    assert message_id(output, batch) == uuid.uuid5(NAMESPACE, f"{output}\x1f{batch}")
    assert event_id(output, batch, index, part) == uuid.uuid5(
        NAMESPACE, f"{output}\x1f{batch}\x1f{index}\x1f{part}"
    )
    assert message_id(output, batch).version == 5
