"""The admin API's part of the OpenAPI document: outputs, connections, deliveries and
audiences, each behind the admin token."""

from __future__ import annotations

from patchbay.activate.admin_http import PREFIX, ConnectionBody, OutputBody, ReplayBody
from patchbay.http.errors import LegacyErrorBody
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
from patchbay.segment.admin_http import YAML_TYPES, AudienceConnectionBody

SECURITY: list[Doc] = [{"adminToken": []}]

_OBJECT: Doc = {"type": "object"}
_LIST: Doc = {"type": "array", "items": _OBJECT}
_NAME = path_parameter("name", "The output's name.")
_AUDIENCE = path_parameter("name", "The audience's name (or id).")


def _count(name: str) -> Doc:
    return {"type": "object", "required": [name], "properties": {name: {"type": "integer"}}}


def admin_operation(
    schemas: Schemas,
    operation_id: str,
    summary: str,
    ok: Doc,
    parameters: list[Doc] | None = None,
    body: Doc | None = None,
    not_found: str | None = "No such object (or the admin API is disabled).",
) -> Doc:
    """An admin operation: every one may answer 401 and 404 (the admin API disabled)."""
    responses = {
        **ok,
        "401": error(schemas, "No admin token, or a wrong one (Bearer).", LegacyErrorBody),
        "404": error(
            schemas, not_found or "The admin API is disabled (no admin token).", LegacyErrorBody
        ),
    }
    operation: Doc = {
        "operationId": operation_id,
        "tags": ["Admin API"],
        "summary": summary,
        "security": SECURITY,
        "parameters": parameters or [],
        "responses": responses,
    }
    if body is not None or parameters:
        responses["400"] = error(schemas, "An invalid request or body.", LegacyErrorBody)
    if body is not None:
        operation["requestBody"] = body
        responses |= {
            status: error(schemas, text, LegacyErrorBody) for status, text in BODY_LIMITS.items()
        }
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _activate(schemas: Schemas) -> dict[str, Doc]:
    op = admin_operation
    output = response("The output.", _OBJECT)
    return {
        f"{PREFIX}/outputs": {
            "get": op(
                schemas,
                "listOutputs",
                "The outputs",
                {"200": response("Outputs.", _LIST)},
                not_found=None,
            ),
            "post": op(
                schemas,
                "addOutput",
                "Add an output",
                {"201": response("The new output.", _OBJECT)},
                body=json_body(schemas(OutputBody)),
            ),
        },
        f"{PREFIX}/outputs-status": {
            "get": op(
                schemas,
                "outputsStatus",
                "Delivery status of each output",
                {"200": response("One row per output.", _LIST)},
                not_found=None,
            )
        },
        f"{PREFIX}/outputs/{{name}}": {
            "get": op(schemas, "showOutput", "An output", {"200": output}, [_NAME])
        },
        f"{PREFIX}/outputs/{{name}}/pause": {
            "post": op(schemas, "pauseOutput", "Pause an output", {"200": output}, [_NAME])
        },
        f"{PREFIX}/outputs/{{name}}/resume": {
            "post": op(schemas, "resumeOutput", "Resume an output", {"200": output}, [_NAME])
        },
        f"{PREFIX}/connections": {
            "get": op(
                schemas,
                "listConnections",
                "The connections",
                {"200": response("Connections.", _LIST)},
                not_found=None,
            ),
            "post": op(
                schemas,
                "addConnection",
                "Connect an input to an output",
                {"201": response("The new connection.", _OBJECT)},
                body=json_body(schemas(ConnectionBody)),
            ),
        },
        f"{PREFIX}/connections/{{id}}": {
            "delete": op(
                schemas,
                "removeConnection",
                "Remove a connection (by id or id prefix)",
                {"200": response("How many were removed.", _count("removed"))},
                [path_parameter("id", "The connection's id, or a prefix of it.")],
            )
        },
        f"{PREFIX}/deliveries/parked": {
            "get": op(
                schemas,
                "parkedDeliveries",
                "Deliveries that were given up on",
                {"200": response("Parked deliveries.", _LIST)},
                [query_parameter("output", "Only this output's.")],
            )
        },
        f"{PREFIX}/deliveries/replay": {
            "post": op(
                schemas,
                "replayDeliveries",
                "Send parked deliveries again",
                {"200": response("How many were queued again.", _count("replayed"))},
                body=json_body(schemas(ReplayBody), required=False),
            )
        },
    }


def _audiences(schemas: Schemas) -> dict[str, Doc]:
    op = admin_operation
    base = f"{PREFIX}/audiences"
    audience = response("The audience.", _OBJECT)
    definition = {
        "required": True,
        "content": {
            **content(_OBJECT),
            **{media_type: {"schema": {"type": "string"}} for media_type in YAML_TYPES},
        },
    }
    named = [_AUDIENCE]
    return {
        base: {
            "get": op(
                schemas,
                "listAudiences",
                "The audiences",
                {"200": response("Audiences.", _LIST)},
                not_found=None,
            ),
            "post": op(
                schemas,
                "createAudience",
                "Create an audience (JSON or YAML definition)",
                {"201": audience},
                body=definition,
            ),
        },
        f"{base}/{{name}}": {
            "get": op(schemas, "showAudience", "An audience", {"200": audience}, named),
            "put": op(
                schemas,
                "updateAudience",
                "Change an audience's definition",
                {"200": audience},
                named,
                body=definition,
            ),
            "delete": op(schemas, "deleteAudience", "Delete an audience", {"200": audience}, named),
        },
        f"{base}/{{name}}/members": {
            "get": op(
                schemas,
                "audienceMembers",
                "A page of an audience's members",
                {"200": response("Members, and where the next page starts.", _OBJECT)},
                [
                    *named,
                    query_parameter(
                        "after", "The MPID after which the page starts.", {"type": "integer"}
                    ),
                    query_parameter("limit", "The page's size.", {"type": "integer"}),
                ],
            )
        },
        f"{base}/{{name}}/connections": {
            "post": op(
                schemas,
                "connectAudience",
                "Connect an audience to an output (or change the connection)",
                {
                    "200": response("The connection, changed.", _OBJECT),
                    "201": response("The connection, new.", _OBJECT),
                },
                named,
                body=json_body(schemas(AudienceConnectionBody)),
            )
        },
        f"{base}/{{name}}/connections/{{output}}": {
            "delete": op(
                schemas,
                "disconnectAudience",
                "Disconnect an audience from an output",
                {"200": response("What was removed.", _OBJECT)},
                [*named, path_parameter("output", "The output's name.")],
            )
        },
    }


def admin_paths(schemas: Schemas) -> dict[str, Doc]:
    """Every admin route."""
    return {**_activate(schemas), **_audiences(schemas)}
