"""The admin HTTP API of kits: the ``kits`` commands over HTTP.

The routes sit beside the outputs and audiences routes (:mod:`patchbay.activate.admin_http`)
and behave the same: behind that API's token check, JSON answers, problems in the one error
shape with the ``error`` field (400 for a bad request or descriptor, 404 for a missing kit
or input).

Routes::

    GET    /admin/v1/kits                          POST /admin/v1/kits (a descriptor)
    GET    /admin/v1/kits/{name}                   DELETE /admin/v1/kits/{name}
    POST   /admin/v1/kits/{name}/connections       {"input", "settings", "development",
                                                    "exclude": {"event_types", "event_names",
                                                    "screen_names", "user_attributes",
                                                    "user_identities"}}
    DELETE /admin/v1/kits/{name}/connections/{input}[?development=true]

Mount :meth:`KitAdminApi.routes` before the outputs routes, whose last route answers every
other ``/admin/v1`` path with 404.
"""

from __future__ import annotations

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
from patchbay.backends.records import KitFilters
from patchbay.kits.descriptor import DescriptorError
from patchbay.kits.service import KitError, KitService


class KitConnectionBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/v1/kits/{name}/connections``."""

    input: str
    settings: dict[str, str] = {}
    development: bool = False
    exclude: KitFilters = KitFilters()


class KitAdminApi:
    """The kit routes over a :class:`KitService`, behind ``admin``'s token check."""

    def __init__(self, service: KitService, admin: AdminApi) -> None:
        self._service = service
        self._admin = admin

    def _guard(self, handler: Handler) -> Handler:
        return self._admin.guard_errors(handler, (KitError, DescriptorError))

    _call = staticmethod(in_thread)

    async def list_kits(self, request: Request) -> Response:
        return json_response(await self._call(self._service.list_kits))

    async def register(self, request: Request) -> Response:
        kit = await self._call(self._service.register, await self._admin.body(request))
        return json_response(kit, 201 if kit["action"] == "register" else 200)

    async def show(self, request: Request) -> Response:
        return json_response(await self._call(self._service.show, request.path_params["name"]))

    async def unregister(self, request: Request) -> Response:
        name = request.path_params["name"]
        return json_response(await self._call(self._service.unregister, name))

    async def connect(self, request: Request) -> Response:
        body = msgspec.json.decode(await self._admin.body(request), type=KitConnectionBody)
        connection = await self._call(
            self._service.connect,
            request.path_params["name"],
            body.input,
            body.settings,
            development=body.development,
            filters=body.exclude,
        )
        return json_response(connection, 201 if connection["action"] == "add" else 200)

    async def disconnect(self, request: Request) -> Response:
        params = request.path_params
        development = request.query_params.get("development", "").lower() in ("1", "true")
        result = await self._call(
            self._service.disconnect, params["name"], params["input"], development=development
        )
        return json_response(result)

    def routes(self) -> list[Route]:
        """The kit routes, each behind the token check."""
        g = self._guard
        base = f"{PREFIX}/kits"
        return [
            Route(base, g(self.list_kits), methods=["GET"]),
            Route(base, g(self.register), methods=["POST"]),
            Route(f"{base}/{{name}}", g(self.show), methods=["GET"]),
            Route(f"{base}/{{name}}", g(self.unregister), methods=["DELETE"]),
            Route(f"{base}/{{name}}/connections", g(self.connect), methods=["POST"]),
            Route(f"{base}/{{name}}/connections/{{input}}", g(self.disconnect), methods=["DELETE"]),
        ]
