"""Which declared types a JSON route reads, and the 400 of a repeated key."""

from __future__ import annotations

import pytest

from patchbay.http.body import FORM, BodyError, check_media_type, check_unique_keys


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON;charset=UTF-8",
        " application/json ",
        "application/vnd.api+json",
    ],
)
def test_json_and_undeclared_bodies_are_read(content_type: str | None) -> None:
    check_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "text/json",
        FORM,
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "application/jsonx",
    ],
)
def test_other_types_are_415(content_type: str) -> None:
    with pytest.raises(BodyError) as caught:
        check_media_type(content_type)
    assert (caught.value.status, caught.value.code) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert caught.value.reason == "unsupported_media_type"
    assert caught.value.message.endswith(": send application/json")


def test_a_route_may_take_other_types_too() -> None:
    assert check_media_type(f"{FORM}; charset=utf-8", others=(FORM,)) == FORM
    with pytest.raises(BodyError) as caught:
        check_media_type("text/plain", others=(FORM,))
    assert caught.value.message.endswith(f": send application/json or {FORM}")


def test_a_repeated_key_is_a_400_naming_its_path() -> None:
    check_unique_keys(b'{"a": {"b": 1}, "c": {"b": 1}}')
    with pytest.raises(BodyError) as caught:
        check_unique_keys(b'{"a": {"b": 1, "b": 1}}')
    assert (caught.value.status, caught.value.code) == (400, "BAD_REQUEST")
    assert caught.value.message == "a.b: duplicate key"
