"""The service routes' part of the OpenAPI document: ``/healthz``, ``/metrics`` and the
document itself."""

from __future__ import annotations

from patchbay.http.health import Health
from patchbay.openapi.spec import Doc, Schemas, error, response


def service_paths(schemas: Schemas) -> dict[str, Doc]:
    """``/healthz``, ``/metrics`` and ``/openapi.json``."""
    return {
        "/healthz": {
            "get": {
                "operationId": "health",
                "tags": ["Service"],
                "summary": "Liveness and store check",
                "responses": {"200": response("The store answers.", schemas(Health))},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["Service"],
                "summary": "Prometheus metrics",
                "security": [{"metricsToken": []}, {}],
                "responses": {
                    "200": {
                        "description": "The metrics, in Prometheus' text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": error(
                        schemas, "The metrics token is set and the request lacks it (Bearer)."
                    ),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["Service"],
                "summary": "This document",
                "responses": {"200": response("The OpenAPI 3.1 document.", {"type": "object"})},
            }
        },
    }
