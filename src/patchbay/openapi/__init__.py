"""The OpenAPI 3.1 document of every HTTP API, served at ``/openapi.json``.

Each API's paths come from a module of its own (:mod:`.events`, :mod:`.idsync`,
:mod:`.web`, :mod:`.profile`, :mod:`.admin`, :mod:`.kits`, :mod:`.service`); request and response
bodies are the msgspec models the handlers decode and encode, where there are such models.
"""

from __future__ import annotations

from typing import Any

from patchbay import __version__
from patchbay.openapi.admin import admin_paths
from patchbay.openapi.events import events_paths
from patchbay.openapi.idsync import idsync_paths
from patchbay.openapi.kits import kits_paths
from patchbay.openapi.profile import profile_paths
from patchbay.openapi.service import service_paths
from patchbay.openapi.spec import Schemas
from patchbay.openapi.web import web_paths

__all__ = ["build_openapi"]


def security_schemes(token_url: str) -> dict[str, Any]:
    """Who may call what; ``token_url`` is the absolute URL of ``/oauth/token``."""
    return {
        "inputBasic": {
            "type": "http",
            "scheme": "basic",
            "description": "An input's key and secret (Events API, IDSync).",
        },
        "inputKey": {
            "type": "apiKey",
            "in": "header",
            "name": "x-mp-key",
            "description": "An input's key alone (IDSync: web inputs, and client inputs with"
            " idsync_key_only), or with a signature.",
        },
        "inputSignature": {
            "type": "apiKey",
            "in": "header",
            "name": "x-mp-signature",
            "description": "An HMAC-SHA256 of the request made with the input's secret, with the"
            " request's Date header (IDSync, mobile SDKs).",
        },
        "clientBasic": {
            "type": "http",
            "scheme": "basic",
            "description": "An API client's id and secret (Profile API, /oauth/token).",
        },
        "oauth2": {
            "type": "oauth2",
            "description": "A bearer token for an API client (Profile API), valid 8 hours.",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": token_url,
                    "scopes": {"profiles:read": "read profiles"},
                }
            },
        },
        "adminToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The admin token given to `patchbay serve` (admin API).",
        },
        "metricsToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The metrics token, when one is set (/metrics).",
        },
    }


def build_openapi(base_url: str) -> dict[str, Any]:
    """The OpenAPI document served at ``/openapi.json`` of ``base_url`` (the OAuth2 token
    URL is absolute, as OpenAPI 3.1 requires)."""
    schemas = Schemas()
    paths: dict[str, Any] = {}
    parts = (
        events_paths,
        idsync_paths,
        web_paths,
        profile_paths,
        admin_paths,
        kits_paths,
        service_paths,
    )
    for part in parts:
        paths |= part(schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Patchbay",
            "version": __version__,
            "description": "mParticle-compatible Events API, IDSync and Profile API, and"
            " Patchbay's admin API.",
        },
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": security_schemes(base_url.rstrip("/") + "/oauth/token"),
        },
        "paths": paths,
    }
