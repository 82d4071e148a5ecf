"""The admin HTTP API of audiences: the ``audiences`` commands over HTTP.

The routes sit beside the outputs routes of :mod:`patchbay.activate.admin_http` and behave
the same: each is behind that API's token check (``Authorization: Bearer <token>``; without
a configured token every route answers 404), answers JSON, and reports problems in the one
error shape with the ``error`` field (400 for a bad request, 404 for a missing audience,
output or module).

Routes::

    GET    /admin/v1/audiences                     POST /admin/v1/audiences
    GET    /admin/v1/audiences/{name}              PUT  /admin/v1/audiences/{name}
    DELETE /admin/v1/audiences/{name}
    GET    /admin/v1/audiences/{name}/members[?after=MPID&limit=N]
    POST   /admin/v1/audiences/{name}/connections  {"output", "settings", "attributes"}
    DELETE /admin/v1/audiences/{name}/connections/{output}

``POST`` and ``PUT`` take the definition as a JSON document, or as YAML text with
``Content-Type: application/yaml`` (or ``text/yaml``); any other declared type is a 415, and
a key repeated in an object (JSON) or a mapping (YAML) a 400. Mount
:meth:`AudienceAdminApi.routes` before :meth:`~patchbay.activate.admin_http.AdminApi.routes`,
whose last route answers every other ``/admin/v1`` path with 404.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.activate.admin_http import (
    PREFIX,
    AdminApi,
    Handler,
    in_thread,
    json_response,
)
from patchbay.http.body import media_type
from patchbay.segment.service import DEFAULT_PAGE, AudienceError, AudienceService

#: Content types whose body is YAML text rather than a JSON document.
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


class AudienceConnectionBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/v1/audiences/{name}/connections``."""

    output: str
    settings: dict[str, str] = {}
    attributes: list[str] = []


class AudienceAdminApi:
    """The audience routes over an :class:`AudienceService`, behind ``admin``'s token check."""

    def __init__(self, service: AudienceService, admin: AdminApi) -> None:
        self._service = service
        self._admin = admin

    def _guard(self, handler: Handler) -> Handler:
        return self._admin.guard_errors(handler, (AudienceError,))

    _call = staticmethod(in_thread)

    async def _definition(self, request: Request) -> str | dict[str, Any]:
        """The body: YAML text (by its content type), else a JSON object."""
        raw = await self._admin.body(request, others=YAML_TYPES)
        if media_type(request.headers.get("content-type")) in YAML_TYPES:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AudienceError(f"the body is not UTF-8 text: {exc}") from None
        document = msgspec.json.decode(raw)
        if not isinstance(document, dict):
            raise AudienceError("the body must be a JSON object (an audience definition)")
        return document

    async def list_audiences(self, request: Request) -> Response:
        return json_response(await self._call(self._service.list))

    async def create(self, request: Request) -> Response:
        definition = await self._definition(request)
        return json_response(await self._call(self._service.create, definition), 201)

    async def show(self, request: Request) -> Response:
        return json_response(await self._call(self._service.show, request.path_params["name"]))

    async def update(self, request: Request) -> Response:
        definition = await self._definition(request)
        name = request.path_params["name"]
        return json_response(await self._call(self._service.update, name, definition))

    async def delete(self, request: Request) -> Response:
        return json_response(await self._call(self._service.delete, request.path_params["name"]))

    async def members(self, request: Request) -> Response:
        query = request.query_params
        try:
            after = int(query["after"]) if query.get("after") else None
            limit = int(query["limit"]) if query.get("limit") else DEFAULT_PAGE
        except ValueError:
            raise AudienceError("after and limit must be integers") from None
        name = request.path_params["name"]
        return json_response(await self._call(self._service.members, name, after, limit))

    async def connect(self, request: Request) -> Response:
        body = msgspec.json.decode(await self._admin.body(request), type=AudienceConnectionBody)
        connection = await self._call(
            self._service.connect,
            request.path_params["name"],
            body.output,
            body.settings,
            body.attributes,
        )
        return json_response(connection, 201 if connection["action"] == "add" else 200)

    async def disconnect(self, request: Request) -> Response:
        params = request.path_params
        return json_response(
            await self._call(self._service.disconnect, params["name"], params["output"])
        )

    def routes(self) -> list[Route]:
        """The audience routes, each behind the token check."""
        g = self._guard
        base = f"{PREFIX}/audiences"
        return [
            Route(base, g(self.list_audiences), methods=["GET"]),
            Route(base, g(self.create), methods=["POST"]),
            Route(f"{base}/{{name}}", g(self.show), methods=["GET"]),
            Route(f"{base}/{{name}}", g(self.update), methods=["PUT"]),
            Route(f"{base}/{{name}}", g(self.delete), methods=["DELETE"]),
            Route(f"{base}/{{name}}/members", g(self.members), methods=["GET"]),
            Route(f"{base}/{{name}}/connections", g(self.connect), methods=["POST"]),
            Route(
                f"{base}/{{name}}/connections/{{output}}", g(self.disconnect), methods=["DELETE"]
            ),
        ]
