"""Kit descriptors: what is accepted, and every refusal named by its JSON path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchbay.firehose.settings import BooleanSetting, SelectSetting, TextSetting
from patchbay.kits.descriptor import DescriptorError, kit_key, parse_descriptor

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "kits").glob("*.json"))


def descriptor(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "Appboy", "suffix": "v4", "module_id": 28}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def problems(document: dict[str, Any] | bytes) -> list[str]:
    with pytest.raises(DescriptorError) as caught:
        parse_descriptor(document)
    return [str(p) for p in caught.value.problems]


def test_a_full_descriptor() -> None:
    parsed, warnings = parse_descriptor(
        json.dumps(
            descriptor(
                description="Braze",
                settings=[
                    {"type": "text", "id": "apiKey", "name": "Key", "confidential": True},
                    {"type": "boolean", "id": "fa", "name": "FA", "default_value": True},
                    {"type": "select", "id": "c", "name": "C", "options": ["01", "EU"]},
                ],
            )
        )
    )
    assert warnings == []
    assert parsed.key == "Appboy-v4" and parsed.module_id == 28
    assert [type(s) for s in parsed.settings] == [TextSetting, BooleanSetting, SelectSetting]


def test_key() -> None:
    assert kit_key("Appboy", "v4") == "Appboy-v4"
    assert kit_key("Amplitude", None) == "Amplitude"
    parsed, _ = parse_descriptor(descriptor(suffix=None))
    assert parsed.key == "Appboy"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"{", "$: not JSON"),
        (b"[]", "$: a descriptor is a JSON object"),
        (descriptor(name=None), "$.name: the kit's name"),
        (descriptor(name="Appboy-v4"), "$.name: the kit's name"),
        (descriptor(suffix=""), "$.suffix: the kit's suffix"),
        (descriptor(module_id="28"), "$.module_id: a positive integer, got '28'"),
        (descriptor(module_id=True), "$.module_id: a positive integer"),
        (descriptor(module_id=0), "$.module_id: a positive integer, got 0"),
        (descriptor(colour="red"), "$.colour: unknown field"),
        (descriptor(description=3), "$.description: expected a string"),
        (descriptor(settings={}), "$.settings: expected a list of settings"),
        (descriptor(settings=[3]), "$.settings[0]: a setting must be an object"),
        (
            descriptor(settings=[{"type": "colour", "id": "a", "name": "A"}]),
            "$.settings[0].type: setting 'a' has unknown type 'colour': expected one of 'text',"
            " 'integer', 'float', 'boolean', 'select'",
        ),
        (descriptor(settings=[{"type": "text", "name": "A"}]), "$.settings[0].id: setting without"),
        (descriptor(settings=[{"type": "text", "id": "a"}]), "$.settings[0].name: setting 'a'"),
        (
            descriptor(
                settings=[
                    {"type": "text", "id": "a", "name": "A"},
                    {"type": "integer", "id": "a", "name": "B"},
                ]
            ),
            "$.settings[1].id: duplicate setting id 'a' (also at $.settings[0])",
        ),
        (
            descriptor(
                settings=[{"type": "integer", "id": "a", "name": "A", "confidential": True}]
            ),
            "$.settings[0].confidential: setting 'a': only text settings can be confidential",
        ),
        (
            descriptor(
                settings=[{"type": "integer", "id": "a", "name": "A", "default_value": "x"}]
            ),
            "$.settings[0].default_value: Expected `int | null`, got `str`",
        ),
        (
            descriptor(
                settings=[
                    {"type": "integer", "id": "a", "name": "A", "min_value": 5, "max_value": 1}
                ]
            ),
            "$.settings[0]: setting 'a': min_value 5 is above max_value 1",
        ),
        (
            descriptor(settings=[{"type": "select", "id": "a", "name": "A"}]),
            "$.settings[0]: Object missing required field `options`",
        ),
        (
            descriptor(settings=[{"type": "select", "id": "a", "name": "A", "options": []}]),
            "$.settings[0].options: setting 'a': a select needs options",
        ),
        (
            descriptor(
                settings=[{"type": "select", "id": "a", "name": "A", "options": ["x", "y", "x"]}]
            ),
            "$.settings[0].options[2]: setting 'a': 'x' is repeated",
        ),
        (
            descriptor(
                settings=[
                    {
                        "type": "select",
                        "id": "a",
                        "name": "A",
                        "options": ["x"],
                        "default_value": "z",
                    }
                ]
            ),
            "$.settings[0].default_value: setting 'a': default_value 'z' is not one of its options",
        ),
    ],
)
def test_refusals_name_the_path(document: dict[str, Any] | bytes, expected: str) -> None:
    found = problems(document)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported() -> None:
    found = problems(descriptor(name="a b", module_id=-1, settings=[{"type": "x"}]))
    assert [p.split(":")[0] for p in found] == [
        "$.name",
        "$.module_id",
        "$.settings[0].id",
        "$.settings[0].type",
        "$.settings[0].name",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_parse_without_warnings(path: Path) -> None:
    parsed, warnings = parse_descriptor(path.read_bytes())
    assert warnings == [] and parsed.settings


@given(
    name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.]{0,20}", fullmatch=True),
    suffix=st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.]{0,5}", fullmatch=True),
    module_id=st.integers(1, 2**31),
)
def test_any_valid_name_suffix_and_id(name: str, suffix: str | None, module_id: int) -> None:
    parsed, _ = parse_descriptor(descriptor(name=name, suffix=suffix, module_id=module_id))
    assert parsed.key == (f"{name}-{suffix}" if suffix else name)


@given(st.text().filter(lambda t: not t.isascii() or "-" in t or " " in t or not t))
def test_names_the_sdk_cannot_key_are_refused(name: str) -> None:
    assert any(p.startswith("$.name") for p in problems(descriptor(name=name)))
