"""The kits' part of the OpenAPI document: the Web SDK's config and forwarding statistics
(the key in the path is all that identifies the web input), and the kit routes of the admin
API."""

from __future__ import annotations

from patchbay.activate.admin_http import PREFIX
from patchbay.kits.admin_http import KitConnectionBody
from patchbay.kits.http import ForwardingBatch, ForwardingStat
from patchbay.openapi.admin import admin_operation
from patchbay.openapi.spec import (
    BODY_LIMITS,
    Doc,
    Schemas,
    content,
    error,
    json_body,
    path_parameter,
    query_parameter,
    response,
)

_OBJECT: Doc = {"type": "object"}
_KEY = path_parameter("key", "A web input's key (public: it is in the page).")
_KIT = path_parameter("name", "The kit's key (name-suffix), or its name.")


def _forwarding(schemas: Schemas, operation_id: str, summary: str, body: Doc) -> Doc:
    return {
        "operationId": operation_id,
        "tags": ["Web SDK"],
        "summary": summary,
        "security": [{}],
        "parameters": [_KEY],
        "requestBody": {
            "required": True,
            "content": {**content(body, "text/plain"), **content(body)},
        },
        "responses": {
            "202": response("Counted."),
            "401": error(schemas, "The key is no enabled web input's."),
            "413": error(schemas, BODY_LIMITS["413"]),
            "415": error(schemas, "A Content-Encoding other than gzip."),
            "422": error(schemas, "A body that is not a statistic (never 400)."),
        },
    }


def _web_sdk(schemas: Schemas) -> dict[str, Doc]:
    return {
        "/tags/JS/v2/{key}/config": {
            "get": {
                "operationId": "webSdkConfig",
                "tags": ["Web SDK"],
                "summary": "The Web SDK's config: flags and the kits connected to the input",
                "security": [{}],
                "parameters": [
                    _KEY,
                    query_parameter("env", "1: development (isDebug kits), else production."),
                    query_parameter("plan_id", "Ignored: Patchbay has no data plans."),
                    query_parameter("plan_version", "Ignored."),
                ],
                "responses": {
                    "200": response(
                        "appName, workspaceToken, minWebviewBridgeVersion, flags, kitConfigs,"
                        " pixelConfigs.",
                        _OBJECT,
                    ),
                    "401": error(schemas, "The key is no enabled web input's."),
                },
            }
        },
        "/webevents/v1/JS/{key}/Forwarding": {
            "post": _forwarding(
                schemas, "webSdkForwarding", "A kit forwarded an event", schemas(ForwardingStat)
            )
        },
        "/webevents/v2/JS/{key}/Forwarding": {
            "post": _forwarding(
                schemas,
                "webSdkForwardingBatch",
                "Kits forwarded events (batched)",
                schemas(ForwardingBatch),
            )
        },
    }


def _admin(schemas: Schemas) -> dict[str, Doc]:
    op = admin_operation
    base = f"{PREFIX}/kits"
    kit = response("The kit.", _OBJECT)
    return {
        base: {
            "get": op(
                schemas,
                "listKits",
                "The kits",
                {"200": response("Kits.", {"type": "array", "items": _OBJECT})},
                not_found=None,
            ),
            "post": op(
                schemas,
                "registerKit",
                "Register (or update) a kit from its descriptor",
                {"200": kit, "201": kit},
                body=json_body(_OBJECT),
            ),
        },
        f"{base}/{{name}}": {
            "get": op(
                schemas, "showKit", "A kit, its connections and totals", {"200": kit}, [_KIT]
            ),
            "delete": op(
                schemas, "unregisterKit", "Remove a kit (not while connected)", {"200": kit}, [_KIT]
            ),
        },
        f"{base}/{{name}}/connections": {
            "post": op(
                schemas,
                "connectKit",
                "Connect a kit to a web input (or change the connection)",
                {
                    "200": response("The connection, changed.", _OBJECT),
                    "201": response("The connection, new.", _OBJECT),
                },
                [_KIT],
                body=json_body(schemas(KitConnectionBody)),
            )
        },
        f"{base}/{{name}}/connections/{{input}}": {
            "delete": op(
                schemas,
                "disconnectKit",
                "Disconnect a kit from an input",
                {"200": response("What was removed.", _OBJECT)},
                [
                    _KIT,
                    path_parameter("input", "The input's name or id."),
                    query_parameter("development", "true: the development connection."),
                ],
            )
        },
    }


def kits_paths(schemas: Schemas) -> dict[str, Doc]:
    """The Web SDK's kit routes and the kit admin routes."""
    return {**_web_sdk(schemas), **_admin(schemas)}
