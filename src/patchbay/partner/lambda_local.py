"""A local stand-in for AWS Lambda's Invoke API, to run a partner's Lambda handler with the
same client (boto3, or the platform's delivery engine) that calls the real thing.

It implements the one call Firehose uses::

    POST /2015-03-31/functions/{FunctionName}/invocations

* The function name may be a plain name, ``name:alias``, a partial ARN
  (``123456789012:function:name``) or a full ARN; the qualifier (alias or version, also
  ``?Qualifier=``) is accepted and ignored: every function is ``$LATEST``.
* ``X-Amz-Invocation-Type``: ``RequestResponse`` (default) runs the handler and answers 200
  with its JSON output; ``Event`` answers 202 and runs it after the answer; ``DryRun``
  answers 204.
* A handler exception answers 200 with ``X-Amz-Function-Error: Unhandled`` and the error
  payload Lambda's Python runtime sends (``errorMessage``, ``errorType``, ``requestId``,
  ``stackTrace``); an output that is not JSON gives ``errorType`` ``Runtime.MarshalError``.
* API errors are answered as Lambda does (``x-amzn-ErrorType`` header and
  ``{"Type": "User", "message": ...}``), so boto3 raises its modelled exceptions: 404
  ``ResourceNotFoundException`` for an unknown function, 400
  ``InvalidRequestContentException`` for a payload that is not JSON, 413
  ``RequestTooLargeException`` beyond 6 MB.
* ``GET /2015-03-31/functions/`` (ListFunctions) and ``GET /2015-03-31/functions/{name}``
  (GetFunction) describe the registered functions.

Handlers are given as ``module:function`` (or Lambda's own ``module.function``) and run in
this process, in a worker thread, one invocation at a time per function (as one Lambda
instance does), with a context object that has the usual attributes
(``aws_request_id``, ``function_name``, ``get_remaining_time_in_millis()``, ...).

Run it from a shell::

    python -m patchbay.partner.lambda_local --port 9001 \
        --function sqlite=examples.sqlite_partner.handler:handler

or from Python (tests)::

    with LocalLambda({"sqlite": "examples.sqlite_partner.handler:handler"}).serve() as server:
        boto3.client("lambda", endpoint_url=server.url, ...).invoke(FunctionName="sqlite", ...)

:class:`BackgroundServer` runs any ASGI app with uvicorn in a thread the same way.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import decimal
import importlib
import json
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

#: A Lambda handler: ``handler(event, context)``.
Handler = Callable[[Any, Any], Any]

#: The largest synchronous invocation payload Lambda accepts (6 MB).
MAX_PAYLOAD_BYTES: Final = 6 * 1024 * 1024

_FUNCTIONS: Final = "/2015-03-31/functions"


def load_handler(spec: str) -> Handler:
    """Import a handler given as ``package.module:function`` (or Lambda's own
    ``package.module.function``); ``function`` may be a dotted attribute path."""
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"Expected a handler as module:function, got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec!r} is not callable")
    handler: Handler = target
    return handler


@dataclass
class LambdaContext:
    """The context object a handler receives (the attributes of Lambda's Python runtime)."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str
    deadline_ms: int
    function_version: str = "$LATEST"
    memory_limit_in_mb: str = "128"
    log_group_name: str = ""
    log_stream_name: str = ""
    client_context: Any = None
    identity: Any = None

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout."""
        return max(0, self.deadline_ms - int(time.time() * 1000))


@dataclass
class LocalFunction:
    """A registered function: its name, handler and timeout (seconds, only reported to the
    handler through the context: nothing is stopped when it runs longer)."""

    name: str
    handler: Handler
    handler_name: str
    timeout_s: float
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class LocalLambda:
    """The Invoke API over a set of functions (see the module doc). ``app`` is the ASGI
    app; :meth:`serve` runs it in a thread."""

    def __init__(
        self,
        functions: Mapping[str, str | Handler] | None = None,
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        timeout_s: float = 30.0,
    ) -> None:
        self.region = region
        self.account_id = account_id
        self.timeout_s = timeout_s
        self.functions: dict[str, LocalFunction] = {}
        for name, handler in (functions or {}).items():
            self.add_function(name, handler)
        self.app = Starlette(
            routes=[
                Route(f"{_FUNCTIONS}/{{function}}/invocations", self._invoke, methods=["POST"]),
                Route(_FUNCTIONS, self._list, methods=["GET"]),
                Route(f"{_FUNCTIONS}/", self._list, methods=["GET"]),
                Route(f"{_FUNCTIONS}/{{function}}", self._get, methods=["GET"]),
            ]
        )

    def add_function(self, name: str, handler: str | Handler) -> LocalFunction:
        """Register ``handler`` (a callable, or ``module:function`` imported now) as
        ``name``."""
        if not name or ":" in name or "/" in name:
            raise ValueError(f"Invalid function name {name!r}")
        if isinstance(handler, str):
            function = LocalFunction(name, load_handler(handler), handler, self.timeout_s)
        else:
            label = f"{getattr(handler, '__module__', '?')}:{getattr(handler, '__qualname__', '?')}"
            function = LocalFunction(name, handler, label, self.timeout_s)
        self.functions[name] = function
        return function

    def arn(self, name: str) -> str:
        """The function's ARN (with this server's region and account)."""
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
        """Start serving in a thread; use the result as a context manager (or ``stop()``)."""
        return BackgroundServer(self.app, host, port).start()

    def invoke(self, name: str, event: Any) -> tuple[bytes, bool]:
        """Run a function directly: its JSON output and whether it is a function error."""
        function = self.resolve(name)
        if function is None:
            raise LookupError(f"Function not found: {name}")
        return self._run(function, event, str(uuid.uuid4()), None)

    def resolve(self, identifier: str) -> LocalFunction | None:
        """The function a ``FunctionName`` (name, ``name:qualifier``, partial or full ARN)
        designates."""
        parts = identifier.split(":")
        if parts[0] == "arn":
            # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
            if len(parts) < 7 or parts[2] != "lambda" or parts[5] != "function":
                return None
            name = parts[6]
        elif len(parts) >= 3 and parts[1] == "function":
            name = parts[2]  # ACCOUNT:function:NAME[:QUALIFIER]
        else:
            name = parts[0]  # NAME[:QUALIFIER]
        return self.functions.get(name)

    # -- the API

    async def _invoke(self, request: Request) -> Response:
        identifier = request.path_params["function"]
        function = self.resolve(identifier)
        if function is None:
            name = identifier if identifier.startswith("arn:") else self.arn(identifier)
            return _api_error(404, "ResourceNotFoundException", f"Function not found: {name}")
        invocation_type = request.headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type not in ("RequestResponse", "Event", "DryRun"):
            return _api_error(
                400,
                "InvalidParameterValueException",
                f"Unsupported invocation type {invocation_type!r}",
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_PAYLOAD_BYTES:
                return _api_error(
                    413,
                    "RequestTooLargeException",
                    f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the "
                    "InvokeFunction operation",
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            event = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return _api_error(
                400,
                "InvalidRequestContentException",
                f"Could not parse request body into json: {exc}",
            )
        if invocation_type == "DryRun":
            return Response(status_code=204)
        request_id = str(uuid.uuid4())
        headers = {"x-amzn-requestid": request_id, "x-amz-executed-version": "$LATEST"}
        client_context = _client_context(request.headers.get("x-amz-client-context"))
        if invocation_type == "Event":
            task = BackgroundTask(self._run, function, event, request_id, client_context)
            return Response(status_code=202, headers=headers, background=task)
        payload, failed = await run_in_threadpool(
            self._run, function, event, request_id, client_context
        )
        if failed:
            headers["x-amz-function-error"] = "Unhandled"
        return Response(payload, 200, headers, media_type="application/json")

    async def _list(self, request: Request) -> Response:
        return JSONResponse(
            {"Functions": [self._configuration(f) for f in self.functions.values()]}
        )

    async def _get(self, request: Request) -> Response:
        identifier = request.path_params["function"]
        function = self.resolve(identifier)
        if function is None:
            return _api_error(
                404, "ResourceNotFoundException", f"Function not found: {self.arn(identifier)}"
            )
        return JSONResponse({"Configuration": self._configuration(function)})

    def _configuration(self, function: LocalFunction) -> dict[str, Any]:
        return {
            "FunctionName": function.name,
            "FunctionArn": self.arn(function.name),
            "Runtime": f"python{sys.version_info.major}.{sys.version_info.minor}",
            "Handler": function.handler_name,
            "Timeout": int(function.timeout_s),
            "Version": "$LATEST",
            "State": "Active",
        }

    def _run(
        self, function: LocalFunction, event: Any, request_id: str, client_context: Any
    ) -> tuple[bytes, bool]:
        """Run the handler: its JSON output, and whether it is a function error."""
        with function.lock:
            context = LambdaContext(
                function_name=function.name,
                invoked_function_arn=self.arn(function.name),
                aws_request_id=request_id,
                deadline_ms=int((time.time() + function.timeout_s) * 1000),
                log_group_name=f"/aws/lambda/{function.name}",
                log_stream_name=f"local/[$LATEST]{request_id.replace('-', '')}",
                client_context=client_context,
            )
            try:
                result = function.handler(event, context)
            except Exception as exc:  # noqa: BLE001 - reported to the caller, as Lambda does
                return _function_error(
                    str(exc),
                    type(exc).__name__,
                    request_id,
                    # Lambda's runtime leaves out its own frames: the handler's come first.
                    traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:]),
                ), True
        try:
            return json.dumps(result, default=_decimal).encode(), False
        except (TypeError, ValueError) as exc:
            return _function_error(
                f"Unable to marshal response: {exc}", "Runtime.MarshalError", request_id, []
            ), True


class BackgroundServer:
    """An ASGI app served by uvicorn in a daemon thread, on a socket bound before the start
    (so ``port`` and ``url`` are known at once; ``port=0`` picks a free one)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"uvicorn-{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        """Start the thread and wait until the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"The server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the server to shut down and wait for its thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _api_error(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"Type": "User", "message": message}, status, headers={"x-amzn-ErrorType": code}
    )


def _function_error(message: str, error_type: str, request_id: str, stack: list[str]) -> bytes:
    payload = {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": stack,
    }
    return json.dumps(payload).encode()


def _decimal(value: Any) -> Any:
    """Lambda's Python runtime writes decimals as numbers."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _client_context(header: str | None) -> Any:
    if not header:
        return None
    try:
        return json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError):
        return None


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m patchbay.partner.lambda_local --function NAME=module:function ...``"""
    parser = argparse.ArgumentParser(
        prog="python -m patchbay.partner.lambda_local",
        description="Serve Python Lambda handlers through the AWS Lambda Invoke API.",
    )
    parser.add_argument(
        "--function",
        action="append",
        required=True,
        metavar="NAME=MODULE:FUNCTION",
        help="a function to serve (repeatable), "
        "e.g. sqlite=examples.sqlite_partner.handler:handler",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args(argv)
    sys.path.insert(0, ".")  # handlers are found from the working directory, as with -m
    server = LocalLambda(region=args.region, timeout_s=args.timeout)
    for item in args.function:
        name, sep, handler = item.partition("=")
        if not sep:
            parser.error(f"--function expects NAME=MODULE:FUNCTION, got {item!r}")
        try:
            server.add_function(name, handler)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            parser.error(f"--function {item}: {exc}")
    url = f"http://{args.host}:{args.port}"
    names = ", ".join(server.functions)
    print(f"Lambda Invoke API on {url} (functions: {names})", file=sys.stderr, flush=True)
    uvicorn.Server(
        uvicorn.Config(server.app, host=args.host, port=args.port, access_log=False)
    ).run()


if __name__ == "__main__":
    main()
