"""The Web SDK's part of the OpenAPI document: its event uploads and its audience call, both
authenticated by a web input's key in the path (IDSync's browser paths are in
:mod:`.idsync`)."""

from __future__ import annotations

from patchbay.collect.batch import Batch
from patchbay.collect.http import Accepted
from patchbay.openapi.spec import (
    BODY_LIMITS,
    RATE_LIMIT_HEADERS,
    Doc,
    Schemas,
    content,
    error,
    path_parameter,
    response,
)
from patchbay.segment.web_http import AudienceMemberships

#: The key in the path authenticates a web input alone: no header.
KEY_IN_PATH: list[Doc] = [{}]

_KEY = path_parameter("key", "A web input's key.")
_UNAUTHORIZED = "Unknown or disabled key, or the key of an input that is not a web input."
_ORIGIN = "The request's Origin is not one the web input allows (CORS); nothing stored."


def web_paths(schemas: Schemas) -> dict[str, Doc]:
    """``/webevents/v3/JS/{key}/events`` and ``/nativesdks/v1/{key}/audience``."""
    batch = schemas(Batch)
    upload: Doc = {
        "operationId": "webUploadEvents",
        "tags": ["Web SDK"],
        "summary": "Upload one batch from the Web SDK (JSON, sent as text/plain)",
        "security": KEY_IN_PATH,
        "parameters": [_KEY],
        "requestBody": {
            "required": True,
            "content": {**content(batch), **content(batch, "text/plain")},
        },
        "responses": {
            "202": response(
                "Stored durably, or a batch sent again (same source_request_id) and not"
                " stored twice.",
                schemas(Accepted),
                headers={"X-mp-rate-limit-percentage-used": {"schema": {"type": "string"}}},
            ),
            "401": error(schemas, _UNAUTHORIZED),
            "403": error(schemas, _ORIGIN),
            **{status: error(schemas, text) for status, text in BODY_LIMITS.items()},
            "422": error(
                schemas,
                "Invalid JSON, a key repeated in one object, or a batch that breaks the"
                " format (the message names the JSON path); nothing stored. Never 400,"
                " which the Web SDK would send again for ever.",
            ),
            "429": error(
                schemas,
                "Over the input's rate limit; retry after Retry-After seconds.",
                headers=RATE_LIMIT_HEADERS,
            ),
        },
    }
    audience: Doc = {
        "operationId": "webUserAudiences",
        "tags": ["Web SDK"],
        "summary": "The audiences of a user the web input has seen (ids only)",
        "security": KEY_IN_PATH,
        "parameters": [
            _KEY,
            {
                "name": "mpid",
                "in": "query",
                "required": True,
                "description": "The user's MPID.",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": response(
                "The audiences the user is in; none for a user the input has not seen.",
                schemas(AudienceMemberships),
            ),
            "401": error(schemas, _UNAUTHORIZED),
            "403": error(schemas, _ORIGIN),
            "422": error(schemas, "No mpid, or not a signed 64-bit integer."),
        },
    }
    return {
        "/webevents/v3/JS/{key}/events": {"post": upload},
        "/nativesdks/v1/{key}/audience": {"get": audience},
    }
