"""The OpenAPI 3.1 document of the HTTP API, built from the msgspec models."""

from __future__ import annotations

from typing import Any

import msgspec

from patchbay import __version__
from patchbay.collect.batch import Batch
from patchbay.collect.http import Accepted
from patchbay.http.errors import ErrorBody

_REF = "#/components/schemas/{name}"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="ErrorBody")}}},
    }


def _operation(summary: str, body: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "202": {
            "description": "Stored durably. A bulk request lists its rejected batches.",
            "content": {"application/json": {"schema": {"$ref": _REF.format(name="Accepted")}}},
        },
        "400": _error(
            "Malformed JSON, a key repeated in one object (the message names its JSON path,"
            " e.g. `events[0].data.custom_attributes.color: duplicate key`; a bulk request is"
            " refused whole), or a batch that breaks the format; nothing stored."
        ),
        "401": _error("No Authorization header, or not HTTP Basic."),
        "403": _error("Unknown or disabled key, or wrong secret."),
        "413": _error("The body (or its decompressed form) is over the size limit."),
        "415": _error(
            "A Content-Type other than JSON (`application/json` with any parameters, or"
            " `application/*+json`; a request without Content-Type is read as JSON), or a"
            " Content-Encoding other than gzip; nothing stored."
        ),
        "429": {
            **_error("Over the input's rate limit; retry after Retry-After seconds."),
            "headers": {
                "Retry-After": {"schema": {"type": "integer"}},
                "X-mp-rate-limit-exceeded": {"schema": {"type": "string"}},
            },
        },
    }
    return {
        "summary": summary,
        "security": [{"basic": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": responses,
        **extra,
    }


def build_openapi() -> dict[str, Any]:
    """The OpenAPI document served at ``/openapi.json``."""
    (batch, _accepted, _error), components = msgspec.json.schema_components(
        [Batch, Accepted, ErrorBody], ref_template=_REF
    )
    bulk = {"type": "array", "items": batch, "maxItems": 100}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Patchbay Events API",
            "version": __version__,
            "description": "mParticle-compatible server-to-server Events API.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        },
        "paths": {
            "/v2/events": {
                "post": _operation("Upload one batch", batch, {"operationId": "uploadEvents"})
            },
            "/v2/bulkevents": {
                "post": _operation(
                    "Upload up to 100 batches", bulk, {"operationId": "bulkUploadEvents"}
                )
            },
            "/v2/bulkevents/historical": {
                "post": _operation(
                    "Upload batches older than 72 hours",
                    bulk,
                    {"operationId": "bulkUploadHistoricalEvents"},
                )
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and store check",
                    "responses": {"200": {"description": "OK"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "OK"}},
                }
            },
        },
    }
