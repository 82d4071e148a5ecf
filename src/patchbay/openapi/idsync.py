"""The IDSync API's part of the OpenAPI document: each endpoint under ``/v1`` and
``/identity/v1``, the alias request also under ``/webevents/v1``."""

from __future__ import annotations

from patchbay.openapi.spec import (
    BODY_LIMITS,
    RATE_LIMIT_HEADERS,
    Doc,
    Schemas,
    error,
    json_body,
    path_parameter,
    query_parameter,
    response,
)
from patchbay.resolve.idsync_http import (
    AliasRequest,
    IdentityRequest,
    IdentityResponse,
    ModifyRequest,
    ModifyResponse,
)

#: HTTP Basic with an input's key and secret; the key alone (``x-mp-key``, for the inputs that
#: accept it); or the key with an HMAC signature of the request (and its ``Date``).
SECURITY: list[Doc] = [
    {"inputBasic": []},
    {"inputKey": []},
    {"inputKey": [], "inputSignature": []},
]

_PREFIXES = {"": "", "/identity": "Web"}


def _responses(schemas: Schemas, ok: Doc, not_found: str | None) -> Doc:
    answers: Doc = {
        **ok,
        "400": error(schemas, "The body is not a valid request."),
        "401": error(
            schemas,
            "No credentials, credentials that are not HTTP Basic, or a signature that cannot"
            " be checked (no Date or one too far from now, a key without a sealed secret).",
        ),
        "403": error(
            schemas,
            "Unknown or disabled key, wrong secret or signature, a key alone where it is not"
            " accepted, or a key-only caller changing a user its input has not seen.",
        ),
        **{status: error(schemas, text) for status, text in BODY_LIMITS.items()},
        "429": error(schemas, "Over the input's rate limit.", headers=RATE_LIMIT_HEADERS),
        "500": error(schemas, "The server's secrets key does not open the sealed secrets."),
    }
    if not_found is not None:
        answers["404"] = error(schemas, not_found)
    return dict(sorted(answers.items()))


def _operations(schemas: Schemas) -> dict[str, tuple[str, Doc]]:
    """Each endpoint's path under ``/v1``, its operation id, and its operation."""
    identity = json_body(schemas(IdentityRequest))
    answer = {"200": response("The user, and whether it is new.", schemas(IdentityResponse))}
    read_only = query_parameter(
        "read_only", "Answer without changing anything (true, 1, yes or empty)."
    )
    operations: dict[str, tuple[str, Doc]] = {}
    for name, summary in (
        ("identify", "The user of these identities (created if none)"),
        ("login", "Log a user in"),
        ("logout", "Log the user out"),
    ):
        operations[f"/v1/{name}"] = (
            name,
            {
                "summary": summary,
                "parameters": [read_only],
                "requestBody": identity,
                "responses": _responses(schemas, answer, None),
            },
        )
    operations["/v1/search"] = (
        "search",
        {
            "summary": "The user of these identities, if there is one",
            "requestBody": identity,
            "responses": _responses(schemas, answer, "No user has these identities."),
        },
    )
    operations["/v1/{mpid}/modify"] = (
        "modify",
        {
            "summary": "Add, change or remove identities of a user",
            "parameters": [path_parameter("mpid", "The user's MPID.")],
            "requestBody": json_body(schemas(ModifyRequest)),
            "responses": _responses(
                schemas,
                {"200": response("Each change, applied or not.", schemas(ModifyResponse))},
                "No such user.",
            ),
        },
    )
    operations["/v1/identity/{key}/Alias"] = (
        "alias",
        {
            "summary": "Fold the source user into the destination user",
            "parameters": [
                path_parameter("key", "The input's key (it authenticates a web input alone).")
            ],
            "requestBody": json_body(schemas(AliasRequest)),
            "responses": _responses(
                schemas,
                {"202": response("Aliased.")},
                "No user has the source or destination MPID.",
            ),
            "security": [*SECURITY, {}],
        },
    )
    return operations


def idsync_paths(schemas: Schemas) -> dict[str, Doc]:
    """Every IDSync path."""
    paths: dict[str, Doc] = {}
    for path, (name, operation) in _operations(schemas).items():
        for prefix, suffix in _PREFIXES.items():
            paths[prefix + path] = {
                "post": {
                    "operationId": f"idsync{name.title()}{suffix}",
                    "tags": ["IDSync"],
                    "security": SECURITY,
                    **operation,
                }
            }
        if name == "alias":
            paths["/webevents" + path] = {
                "post": {"operationId": "idsyncAliasWebEvents", "tags": ["IDSync"], **operation}
            }
    return paths
