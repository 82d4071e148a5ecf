"""The admin HTTP API: the ``outputs``, ``connections`` and ``deliveries`` commands over HTTP.

Every route requires ``Authorization: Bearer <token>`` with the admin token given to
``patchbay serve`` (``--admin-token-file``, ``$PATCHBAY_ADMIN_TOKEN`` or ``--admin-token``;
it is kept in memory only, as a SHA-256 digest, and compared in constant time). A refused
token is logged (``auth_failed``: address and reason, never the token); every request
let in is logged once (``admin_request``: source address, action, method, path and status;
at ``info`` for changes, at ``debug`` for ``GET``), and the changes it makes carry
``"via": "admin_api"`` and the ``source`` in their ``config_changed`` lines. Without a
configured token the admin API is disabled: every route answers 404 with a message saying
how to enable it.

Routes (JSON in and out)::

    GET    /admin/v1/outputs                  POST /admin/v1/outputs
    GET    /admin/v1/outputs/{name}           POST /admin/v1/outputs/{name}/pause|resume
    GET    /admin/v1/outputs-status
    GET    /admin/v1/connections              POST /admin/v1/connections
    DELETE /admin/v1/connections/{id}
    GET    /admin/v1/deliveries/parked[?output=NAME]
    POST   /admin/v1/deliveries/replay        {"output": NAME} | {"ids": [...]} | {"all": true}
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.activate.service import ActivateError, ActivateService
from patchbay.backends.records import Filters
from patchbay.errors import StorageFull
from patchbay.http.auth import BearerToken, auth_failed, source_address
from patchbay.http.body import BodyError, read_json
from patchbay.http.errors import error_response, status_code, storage_full_response
from patchbay.settings import DEFAULT_MAX_REQUEST_BYTES

#: The environment variable holding the admin token.
ADMIN_TOKEN_ENV = "PATCHBAY_ADMIN_TOKEN"

PREFIX = "/admin/v1"

Handler = Callable[[Request], Awaitable[Response]]

log = structlog.get_logger("patchbay.admin")


class OutputBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/v1/outputs``."""

    name: str
    module: str | None = None
    webhook: str | None = None
    file: str | None = None
    settings: dict[str, str] = {}


class ConnectionBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/v1/connections``."""

    input: str
    output: str
    settings: dict[str, str] = {}
    filters: Filters = Filters()


class ReplayBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/v1/deliveries/replay``."""

    output: str | None = None
    ids: list[str] = []
    all: bool = False


def json_response(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def admin_error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """An error in the one shape, plus the ``error`` field this API answered with before."""
    return error_response(status, status_code(status), message, headers, legacy=True)


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` on a worker thread: the services' stores block."""
    return await asyncio.to_thread(function, *args, **kwargs)


class AdminApi:
    """The admin routes over an :class:`ActivateService`."""

    def __init__(
        self,
        service: ActivateService,
        token: str | None,
        max_body_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self._service = service
        self._token = BearerToken(token) if token else None
        self._max_body_bytes = max_body_bytes

    async def body(self, request: Request, others: Collection[str] = ()) -> bytes:
        """The request's body, read by :func:`~patchbay.http.body.read_json`: at most
        ``max_body_bytes`` (413 beyond, as on every route), JSON without a repeated key (400)
        unless its ``Content-Type`` is one of ``others`` (any other type: 415). Raises
        :class:`~patchbay.http.body.BodyError`, which :meth:`guard` answers."""
        return await read_json(request, self._max_body_bytes, others)

    def _authorized(self, request: Request) -> Response | None:
        if self._token is None:
            return admin_error(
                "the admin API is disabled: start `patchbay serve` with --admin-token-file,"
                f" ${ADMIN_TOKEN_ENV} or --admin-token",
                404,
            )
        reason = self._token.check(request.headers.get("authorization"))
        if reason is not None:
            auth_failed(request, "admin", reason)
            return admin_error(
                "a valid admin token is required (Bearer)",
                401,
                {"WWW-Authenticate": 'Bearer realm="patchbay-admin"'},
            )
        return None

    def guard(self, handler: Handler) -> Handler:
        """``handler`` behind the token check, its errors answered in the one shape, and
        the request logged (see the module documentation)."""

        async def guarded(request: Request) -> Response:
            refused = self._authorized(request)
            if refused is not None:
                return refused
            source = source_address(request)
            with structlog.contextvars.bound_contextvars(via="admin_api", source=source):
                response = await self._answer(handler, request)
            (log.debug if request.method == "GET" else log.info)(
                "admin_request",
                action=handler.__name__,
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                source=source,
            )
            return response

        return guarded

    @staticmethod
    async def _answer(handler: Handler, request: Request) -> Response:
        try:
            return await handler(request)
        except ActivateError as exc:
            return admin_error(str(exc), 404 if exc.not_found else 400)
        except BodyError as exc:
            return error_response(exc.status, exc.code, exc.message, legacy=True)
        except msgspec.ValidationError as exc:
            return admin_error(f"invalid body: {exc}", 400)
        except msgspec.DecodeError as exc:
            return admin_error(f"the body is not JSON: {exc}", 400)
        except StorageFull as exc:  # the store rolled the change back
            return storage_full_response(request.url.path, exc, legacy=True)

    def guard_errors(self, handler: Handler, errors: tuple[type[Exception], ...]) -> Handler:
        """:meth:`guard`, with a service's ``errors`` answered in the one shape: 404 when
        their ``not_found`` is set, else 400 (the admin routes of other stages)."""

        @functools.wraps(handler)
        async def handled(request: Request) -> Response:
            try:
                return await handler(request)
            except errors as exc:
                return admin_error(str(exc), 404 if getattr(exc, "not_found", False) else 400)

        return self.guard(handled)

    _call = staticmethod(in_thread)

    async def list_outputs(self, request: Request) -> Response:
        return json_response(await self._call(self._service.list_outputs))

    async def add_output(self, request: Request) -> Response:
        body = msgspec.json.decode(await self.body(request), type=OutputBody)
        created = await self._call(
            self._service.add_output,
            body.name,
            module=body.module,
            webhook=body.webhook,
            file=body.file,
            settings=body.settings,
        )
        return json_response(created, 201)

    async def show_output(self, request: Request) -> Response:
        name = request.path_params["name"]
        return json_response(await self._call(self._service.show_output, name))

    async def pause(self, request: Request) -> Response:
        name = request.path_params["name"]
        return json_response(await self._call(self._service.set_paused, name, True))

    async def resume(self, request: Request) -> Response:
        name = request.path_params["name"]
        return json_response(await self._call(self._service.set_paused, name, False))

    async def status(self, request: Request) -> Response:
        return json_response(await self._call(self._service.status))

    async def list_connections(self, request: Request) -> Response:
        return json_response(await self._call(self._service.list_connections))

    async def add_connection(self, request: Request) -> Response:
        body = msgspec.json.decode(await self.body(request), type=ConnectionBody)
        created = await self._call(
            self._service.add_connection,
            input_=body.input,
            output=body.output,
            settings=body.settings,
            filters=body.filters,
        )
        return json_response(created, 201)

    async def remove_connection(self, request: Request) -> Response:
        connection_id = request.path_params["id"]
        removed = await self._call(self._service.remove_connection, connection_id)
        return json_response({"removed": removed})

    async def parked(self, request: Request) -> Response:
        output = request.query_params.get("output")
        return json_response(await self._call(self._service.parked, output))

    async def replay(self, request: Request) -> Response:
        raw = await self.body(request)
        body = msgspec.json.decode(raw, type=ReplayBody) if raw.strip() else ReplayBody()
        if body.all:
            count = await self._call(self._service.replay_all)
        else:
            count = await self._call(self._service.replay, body.output, body.ids)
        return json_response({"replayed": count})

    async def not_found(self, request: Request) -> Response:
        return admin_error(f"no admin route {request.method} {request.url.path}", 404)

    def routes(self) -> list[Route]:
        """The admin routes, each behind the token check."""
        g = self.guard
        return [
            Route(f"{PREFIX}/outputs", g(self.list_outputs), methods=["GET"]),
            Route(f"{PREFIX}/outputs", g(self.add_output), methods=["POST"]),
            Route(f"{PREFIX}/outputs-status", g(self.status), methods=["GET"]),
            Route(f"{PREFIX}/outputs/{{name}}", g(self.show_output), methods=["GET"]),
            Route(f"{PREFIX}/outputs/{{name}}/pause", g(self.pause), methods=["POST"]),
            Route(f"{PREFIX}/outputs/{{name}}/resume", g(self.resume), methods=["POST"]),
            Route(f"{PREFIX}/connections", g(self.list_connections), methods=["GET"]),
            Route(f"{PREFIX}/connections", g(self.add_connection), methods=["POST"]),
            Route(f"{PREFIX}/connections/{{id}}", g(self.remove_connection), methods=["DELETE"]),
            Route(f"{PREFIX}/deliveries/parked", g(self.parked), methods=["GET"]),
            Route(f"{PREFIX}/deliveries/replay", g(self.replay), methods=["POST"]),
            Route(
                f"{PREFIX}/{{rest:path}}",
                g(self.not_found),
                methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
            ),
        ]
