"""The OpenAPI document: valid OpenAPI 3.1, and every route the app serves is in it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import schemathesis
from starlette.routing import Route

from patchbay.openapi import build_openapi
from patchbay.openapi.spec import Schemas
from patchbay.server import create_app
from patchbay.settings import Settings

BASE_URL = "http://127.0.0.1:8080/"

#: Routes that are not an API: the admin API's answer (404) to every other ``/admin/v1`` path.
UNDOCUMENTED = {
    ("/admin/v1/{rest:path}", method) for method in ("GET", "POST", "PUT", "DELETE", "PATCH")
}


def served_routes(data_dir: Path) -> set[tuple[str, str]]:
    """Every (path, method) the app has; HEAD is Starlette's, beside each GET."""
    settings = Settings(
        data_dir=data_dir, backend="memory", delivery_process=False, segment_process=False
    )
    app = create_app(settings, admin_token="token")
    found = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        for method in route.methods or ():
            if method != "HEAD":
                found.add((route.path, method))
    return found


def test_every_route_is_documented(data_dir: Path) -> None:
    """A new route without documentation fails here."""
    document = build_openapi(BASE_URL)
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    served = served_routes(data_dir)
    assert served - UNDOCUMENTED == documented


def test_the_document_is_valid_openapi_3_1() -> None:
    document = build_openapi(BASE_URL)
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.1 schema
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_every_operation_has_security_and_errors_documented() -> None:
    """Each operation says who may call it (or that anyone may) and answers in the one error
    shape (the token endpoint in RFC 6749's)."""
    document = build_openapi(BASE_URL)
    schemes = set(document["components"]["securitySchemes"])
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for requirement in operation.get("security", []):
                assert set(requirement) <= schemes, (path, method)
            for status, answer in operation["responses"].items():
                if int(status) < 400:
                    continue
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[1] in {
                    "ErrorBody",
                    "LegacyErrorBody",
                    "OAuthErrorBody",
                }, (path, method, status)


def test_two_schemas_of_one_name_are_refused() -> None:
    schemas = Schemas()
    schemas(msgspec.defstruct("Thing", [("a", int)]))
    with pytest.raises(ValueError, match="Thing"):
        schemas(msgspec.defstruct("Thing", [("b", str)]))
