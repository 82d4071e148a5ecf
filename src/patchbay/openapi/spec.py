"""What every part of the OpenAPI document shares: schemas from msgspec types, gathered into
the components, and the shapes of responses, request bodies and parameters."""

from __future__ import annotations

from typing import Any

import msgspec

from patchbay.http.errors import ErrorBody

REF = "#/components/schemas/{name}"

JSON = "application/json"

#: A JSON Schema (or any piece of the document): a plain dict, as msgspec gives it.
Doc = dict[str, Any]


class Schemas:
    """The JSON Schemas of msgspec types; each struct's schema is kept once, in
    :attr:`components`, and referred to by ``$ref``."""

    def __init__(self) -> None:
        self.components: dict[str, Doc] = {}

    def __call__(self, type_: Any) -> Doc:
        """The schema of ``type_`` (a ``$ref`` for a struct)."""
        (schema,), components = msgspec.json.schema_components([type_], ref_template=REF)
        for name, component in components.items():
            if self.components.setdefault(name, component) != component:
                raise ValueError(f"two different schemas are named {name}")
        return schema


def content(schema: Doc, media_type: str = JSON) -> Doc:
    """The ``content`` of a body of one media type."""
    return {media_type: {"schema": schema}}


def response(description: str, schema: Doc | None = None, **extra: Any) -> Doc:
    """A response, with a JSON body when ``schema`` is given."""
    answer: Doc = {"description": description}
    if schema is not None:
        answer["content"] = content(schema)
    return {**answer, **extra}


def error(schemas: Schemas, description: str, body: Any = ErrorBody, **extra: Any) -> Doc:
    """An error response in the one error shape (``body``: :class:`ErrorBody` or a subclass)."""
    return response(description, schemas(body), **extra)


def json_body(schema: Doc, required: bool = True) -> Doc:
    """A JSON request body."""
    return {"required": required, "content": content(schema)}


def path_parameter(name: str, description: str, schema: Doc | None = None) -> Doc:
    """A parameter of the path (a string unless ``schema`` says otherwise)."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def query_parameter(name: str, description: str, schema: Doc | None = None) -> Doc:
    """An optional parameter of the query string."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


#: What the body limits answer on every route that reads a body.
BODY_LIMITS = {
    "413": "The body (or its decompressed form) is over the size limit.",
    "415": (
        "A Content-Type other than JSON (`application/json` with any parameters, or"
        " `application/*+json`; a request without Content-Type is read as JSON), or a"
        " Content-Encoding other than gzip; nothing stored."
    ),
}

#: The headers of a 429.
RATE_LIMIT_HEADERS = {
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}},
    "X-mp-rate-limit-exceeded": {"schema": {"type": "string", "enum": ["app", "feed"]}},
}
