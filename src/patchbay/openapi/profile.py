"""The Profile API's part of the OpenAPI document, with its OAuth2 token endpoint."""

from __future__ import annotations

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
from patchbay.resolve.profile_http import OAuthErrorBody, ResolveRequest
from patchbay.resolve.profile_view import PROFILE_FIELDS

#: A bearer token from ``/oauth/token``, or HTTP Basic with the API client's id and secret.
SECURITY: list[Doc] = [{"oauth2": ["profiles:read"]}, {"clientBasic": []}]

_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}
_INTEGER = {"type": "integer"}

_IDENTITY: Doc = {
    "type": "object",
    "properties": {
        "type": _STRING,
        "encoding": _STRING,
        "value": _STRING,
        "created_timestamp_ms": _INTEGER,
        "last_seen_timestamp_ms": _INTEGER,
    },
}
_CONSENT: Doc = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {
            "consented": {"type": "boolean"},
            "timestamp_unixtime_ms": {"type": ["integer", "null"]},
            "document": _NULLABLE_STRING,
            "location": _NULLABLE_STRING,
            "hardware_id": _NULLABLE_STRING,
        },
    },
}

#: A profile in mParticle's shape (:func:`patchbay.resolve.profile_view.profile_document`);
#: the optional members come when ``fields`` asks for them.
PROFILE: Doc = {
    "type": "object",
    "required": [
        "mpid",
        "created_timestamp_ms",
        "last_stored_timestamp_ms",
        "is_opted_out",
        "limit_ad_tracking",
        "inputs",
    ],
    "properties": {
        "mpid": _INTEGER,
        "created_timestamp_ms": _INTEGER,
        "last_stored_timestamp_ms": _INTEGER,
        "is_opted_out": {"type": "boolean"},
        "limit_ad_tracking": {"type": "boolean"},
        "inputs": {"type": "array", "items": _STRING},
        "device_identities": {"type": "array", "items": _IDENTITY},
        "user_identities": {"type": "array", "items": _IDENTITY},
        "user_attributes": {"type": "object"},
        "audience_memberships": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "audience_id": _INTEGER,
                    "audience_name": _STRING,
                    "expiration_timestamp_ms": {"type": "null"},
                },
            },
        },
        "consent_state": {
            "type": "object",
            "properties": {"gdpr": _CONSENT, "ccpa": _CONSENT},
        },
    },
}

#: The answer of a granted token request (RFC 6749 section 5.1).
TOKEN: Doc = {
    "type": "object",
    "required": ["access_token", "token_type", "expires_in"],
    "properties": {
        "access_token": _STRING,
        "token_type": {"type": "string", "enum": ["Bearer"]},
        "expires_in": _INTEGER,
        "scope": _STRING,
    },
}

#: A token request: form-encoded as RFC 6749 has it, or JSON as mParticle's clients send it.
TOKEN_REQUEST: Doc = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "client_id": _STRING,
        "client_secret": _STRING,
        "scope": _STRING,
    },
}


def _token(schemas: Schemas) -> Doc:
    oauth_error = schemas(OAuthErrorBody)
    limits = {status: response(text, oauth_error) for status, text in BODY_LIMITS.items()}
    return {
        "operationId": "oauthToken",
        "tags": ["Profile API"],
        "summary": "A bearer token for an API client (client-credentials grant)",
        "security": [{"clientBasic": []}, {}],
        "requestBody": {
            "required": True,
            "content": {
                **content(TOKEN_REQUEST, "application/x-www-form-urlencoded"),
                **content(TOKEN_REQUEST),
            },
        },
        "responses": {
            "200": response("The token, valid for 8 hours.", TOKEN),
            "400": response("An invalid request, grant type or scope.", oauth_error),
            "401": response("Wrong client id or secret, or a disabled client.", oauth_error),
            **limits,
        },
    }


def _profile_responses(schemas: Schemas, bad_request: str, not_found: str, body: bool) -> Doc:
    answers = {
        "200": response("The profile.", PROFILE),
        "400": error(schemas, bad_request),
        "401": error(schemas, "No valid credentials of an enabled API client."),
        "403": error(schemas, "The API client lacks the profiles:read scope."),
        "404": error(schemas, not_found),
    }
    if body:
        answers |= {status: error(schemas, text) for status, text in BODY_LIMITS.items()}
    return answers


def profile_paths(schemas: Schemas) -> dict[str, Doc]:
    """``/oauth/token`` and the two profile routes."""
    workspace = [
        path_parameter(name, "Accepted and ignored: one Patchbay is one workspace.")
        for name in ("org", "account", "workspace")
    ]
    fields = query_parameter(
        "fields", f"Comma-separated: which of {', '.join(PROFILE_FIELDS)} to return (all)."
    )
    by_mpid: Doc = {
        "tags": ["Profile API"],
        "summary": "A profile by MPID",
        "security": SECURITY,
        "parameters": [*workspace, path_parameter("mpid", "The user's MPID."), fields],
        "responses": _profile_responses(
            schemas, "An unknown field or an MPID that is not one.", "No such user.", body=False
        ),
    }
    return {
        "/oauth/token": {"post": _token(schemas)},
        "/userprofile/v1/resolve/{org}/{account}/{workspace}": {
            "post": {
                "operationId": "resolveProfile",
                "tags": ["Profile API"],
                "summary": "A profile by an identity",
                "security": SECURITY,
                "parameters": [*workspace, fields],
                "requestBody": json_body(schemas(ResolveRequest)),
                "responses": _profile_responses(
                    schemas,
                    "An unknown field, a body that is not a request, an unknown identity type.",
                    "No user has this identity.",
                    body=True,
                ),
            }
        },
        "/userprofile/v1/{org}/{account}/{workspace}/{mpid}": {
            "get": {"operationId": "getProfile", **by_mpid},
            "post": {"operationId": "getProfileByPost", **by_mpid},
        },
    }
