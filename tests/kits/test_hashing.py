"""The kit filter hashes against the Web SDK's own: the numbers below were printed by
``generateHash`` of ``@mparticle/web-sdk`` 2.68.0 in node
(``node -e 'const m = require("./dist/mparticle.common.js"); console.log(m.generateHash(x))'``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchbay.kits.hashing import (
    EVENT_TYPES,
    IDENTITY_TYPES,
    event_name_hash,
    event_type_hash,
    generate_hash,
    user_attribute_hash,
)

FROM_THE_SDK = {
    "1": 49,
    "8": 56,
    "16": 1573,
    "0": 48,
    "1Clicked Buy": -424094148,
    "8Purchase": -689877703,
    "0Home Page": 1217185536,
    "0home page": 1217185536,
    "Email": 96619420,
    "favorite_color": -1435060480,
    "": 0,
    "a": 97,
    "Ünïcødé ✓": -1344834646,
    "😀 emoji": -1572615351,
    "İstanbul": -643200019,
    "A very long attribute name that overflows 32 bits many times over": 1649991078,
}


@pytest.mark.parametrize(("text", "expected"), FROM_THE_SDK.items())
def test_generate_hash_is_the_sdks(text: str, expected: int) -> None:
    assert generate_hash(text) == expected


def test_filter_hashes() -> None:
    assert event_type_hash(EVENT_TYPES["Navigation"]) == 49
    assert event_type_hash(EVENT_TYPES["ProductPurchase"]) == 1573
    assert event_name_hash(EVENT_TYPES["Navigation"], "Clicked Buy") == -424094148
    assert event_name_hash(0, "Home Page") == 1217185536
    assert user_attribute_hash("favorite_color") == -1435060480
    assert IDENTITY_TYPES["email"] == 7 and IDENTITY_TYPES["other10"] == 18


@given(st.text())
def test_hash_is_a_signed_32_bit_int_and_ignores_case(text: str) -> None:
    value = generate_hash(text)
    assert -(2**31) <= value < 2**31
    assert generate_hash(text.lower()) == value
