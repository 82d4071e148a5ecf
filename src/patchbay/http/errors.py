"""The one error shape of every HTTP API, and the handlers that answer in it.

``{"errors": [{"code": "NOT_FOUND", "message": "..."}]}``: the Events API's shape, which
IDSync and the Profile API share (see docs/api/errors.md). ``code`` is the HTTP status' name
(``BAD_REQUEST``, ``METHOD_NOT_ALLOWED``, ...) unless an API documents a finer one: a full
store answers every API's writes with 503 ``STORAGE_FULL`` and ``Retry-After``
(:func:`storage_full_response`), a batch log out of reach (Kafka) with 503
``LOG_UNAVAILABLE`` and ``Retry-After`` (:func:`log_unavailable_response`).
"""

from __future__ import annotations

from http import HTTPStatus

import msgspec
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from patchbay.errors import LogUnavailable, PatchbayError, ResolveConflict, StorageFull

log = structlog.get_logger("patchbay.http")

_encode = msgspec.json.Encoder().encode


class ApiError(msgspec.Struct):
    """One error, as mParticle's Events API reports it."""

    code: str
    message: str


class ErrorBody(msgspec.Struct):
    """The body of every error response."""

    errors: list[ApiError]


class LegacyErrorBody(ErrorBody):
    """:class:`ErrorBody` plus ``error``, the first message: the admin API's earlier shape."""

    error: str


class HttpError(PatchbayError):
    """An error a handler raises to answer with :func:`error_response`."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def status_code(status: int) -> str:
    """The error code of an HTTP status: its name, e.g. ``METHOD_NOT_ALLOWED``."""
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "ERROR"


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    legacy: bool = False,
) -> Response:
    """An error response in the one shape; ``legacy`` adds the admin API's ``error``."""
    if legacy:
        body = _encode(LegacyErrorBody([ApiError(code, message)], message))
    else:
        body = error_body(code, message)
    return Response(body, status, headers, media_type="application/json")


def error_body(code: str, message: str) -> bytes:
    """The JSON of one error in the one shape (what :func:`error_response` sends)."""
    return _encode(ErrorBody([ApiError(code, message)]))


#: The ``Retry-After`` of a 503 ``STORAGE_FULL``, in seconds.
STORAGE_FULL_RETRY_AFTER_S = 30
#: The message of a 503 ``STORAGE_FULL`` (where the store is full is logged, not told).
STORAGE_FULL_MESSAGE = "the server's storage is full: nothing was stored; retry later"


def storage_full_response(route: str, exc: StorageFull, *, legacy: bool = False) -> Response:
    """The answer to a write the store had no room for (logged): 503 ``STORAGE_FULL`` with
    ``Retry-After``; nothing of the request was written."""
    log.info("request_rejected", route=route, status=503, reason="storage_full", error=str(exc))
    headers = {"Retry-After": str(STORAGE_FULL_RETRY_AFTER_S)}
    return error_response(503, "STORAGE_FULL", STORAGE_FULL_MESSAGE, headers, legacy=legacy)


#: The ``Retry-After`` of a 503 ``LOG_UNAVAILABLE``, in seconds.
LOG_UNAVAILABLE_RETRY_AFTER_S = 5
#: The message of a 503 ``LOG_UNAVAILABLE`` (which log, and why, is logged, not told).
LOG_UNAVAILABLE_MESSAGE = "the server cannot reach its batch log: nothing was accepted; retry later"


def log_unavailable_response(route: str, exc: LogUnavailable) -> Response:
    """The answer to a request the batch log could not take (logged): 503
    ``LOG_UNAVAILABLE`` with ``Retry-After``; none of the request's batches is accepted."""
    log.warning(
        "request_rejected", route=route, status=503, reason="log_unavailable", error=str(exc)
    )
    headers = {"Retry-After": str(LOG_UNAVAILABLE_RETRY_AFTER_S)}
    return error_response(503, "LOG_UNAVAILABLE", LOG_UNAVAILABLE_MESSAGE, headers)


async def _log_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LogUnavailable)
    return log_unavailable_response(request.url.path, exc)


async def _storage_full(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageFull)
    return storage_full_response(request.url.path, exc)


#: The ``Retry-After`` of a 503 ``RESOLVE_CONFLICT``, in seconds.
RESOLVE_CONFLICT_RETRY_AFTER_S = 1


async def _resolve_conflict(request: Request, exc: Exception) -> Response:
    """An identity change that other resolvers' commits kept invalidating (logged): 503
    ``RESOLVE_CONFLICT`` with ``Retry-After``; nothing was changed."""
    assert isinstance(exc, ResolveConflict)
    route = request.url.path
    log.warning("request_rejected", route=route, status=503, reason="conflict", error=str(exc))
    headers = {"Retry-After": str(RESOLVE_CONFLICT_RETRY_AFTER_S)}
    message = "the user changed under this request too often: nothing was changed; retry"
    return error_response(503, "RESOLVE_CONFLICT", message, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors: an unknown route (404), a wrong method (405, with ``Allow``)."""
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"{where}: no such route"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{where}: method not allowed (allowed: {allowed})"
    else:
        message = f"{where}: {exc.detail}"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, status_code(exc.status_code), message, headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A client gone before its whole body (or cut off: patchbay/http/protocol.py): nobody
    to answer, and nothing to log; 499 (nginx's "client closed request") in the metrics."""
    return error_response(499, "CLIENT_CLOSED_REQUEST", "the client left before its whole body")


async def _unhandled(request: Request, exc: Exception) -> Response:
    """A 500 that names no internals (Starlette re-raises the exception: the server logs it)."""
    return error_response(500, status_code(500), "internal error")


#: The app's exception handlers (``Starlette(exception_handlers=...)``).
EXCEPTION_HANDLERS: dict[int | type[Exception], ExceptionHandler] = {
    HttpError: _http_error,
    StorageFull: _storage_full,
    LogUnavailable: _log_unavailable,
    ResolveConflict: _resolve_conflict,
    HTTPException: _http_exception,
    ClientDisconnect: _client_gone,
    Exception: _unhandled,
}
