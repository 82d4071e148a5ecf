"""The Events API's part of the OpenAPI document."""

from __future__ import annotations

from patchbay.collect.batch import Batch
from patchbay.collect.http import Accepted
from patchbay.openapi.spec import (
    BODY_LIMITS,
    RATE_LIMIT_HEADERS,
    Doc,
    Schemas,
    error,
    json_body,
    response,
)

#: The security of the Events API: an input's key and secret.
INPUT_BASIC: list[Doc] = [{"inputBasic": []}]


def _operation(schemas: Schemas, operation_id: str, summary: str, body: Doc) -> Doc:
    accepted = response(
        "Stored durably. A bulk request lists its rejected batches.",
        schemas(Accepted),
        headers={
            "X-mp-rate-limit-percentage-used": {"schema": {"type": "string"}},
        },
    )
    limits = {status: error(schemas, text) for status, text in BODY_LIMITS.items()}
    return {
        "operationId": operation_id,
        "tags": ["Events API"],
        "summary": summary,
        "security": INPUT_BASIC,
        "requestBody": json_body(body),
        "responses": {
            "202": accepted,
            "400": error(
                schemas,
                "Malformed JSON, a key repeated in one object (the message names its JSON"
                " path, e.g. `events[0].data.custom_attributes.color: duplicate key`; a bulk"
                " request is refused whole), or a batch that breaks the format; nothing"
                " stored (a bulk request: every batch was rejected).",
            ),
            "401": error(schemas, "No Authorization header, or not HTTP Basic."),
            "403": error(schemas, "Unknown or disabled key, or wrong secret."),
            **limits,
            "429": error(
                schemas,
                "Over the input's rate limit; retry after Retry-After seconds.",
                headers=RATE_LIMIT_HEADERS,
            ),
        },
    }


def events_paths(schemas: Schemas) -> dict[str, Doc]:
    """``/v2/events``, ``/v2/bulkevents`` and ``/v2/bulkevents/historical``."""
    batch = schemas(Batch)
    bulk = {"type": "array", "items": batch, "maxItems": 100}
    return {
        "/v2/events": {
            "post": _operation(schemas, "uploadEvents", "Upload one batch", batch),
        },
        "/v2/bulkevents": {
            "post": _operation(schemas, "bulkUploadEvents", "Upload up to 100 batches", bulk),
        },
        "/v2/bulkevents/historical": {
            "post": _operation(
                schemas,
                "bulkUploadHistoricalEvents",
                "Upload batches older than 72 hours",
                bulk,
            ),
        },
    }
