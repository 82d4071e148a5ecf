"""The local Lambda Invoke API (``patchbay.partner.lambda_local``), called with real boto3:
function names and ARNs, invocation types, function errors, API errors, the context object,
and the ``python -m`` entry point."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from patchbay.firehose import ModuleRegistrationResponse, parse
from patchbay.partner.lambda_local import (
    MAX_PAYLOAD_BYTES,
    BackgroundServer,
    LambdaContext,
    LocalLambda,
    load_handler,
)
from tests.conftest import wait_for_port

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests.partner.test_lambda_local"

calls: list[tuple[Any, LambdaContext]] = []
running = {"now": 0, "most": 0}
running_lock = threading.Lock()


def echo(event: Any, context: LambdaContext) -> dict[str, Any]:
    calls.append((event, context))
    return {
        "event": event,
        "function_name": context.function_name,
        "arn": context.invoked_function_arn,
        "request_id": context.aws_request_id,
        "version": context.function_version,
        "time_left": context.get_remaining_time_in_millis() > 0,
        "client_context": context.client_context,
    }


def fail(event: Any, context: LambdaContext) -> None:
    raise KeyError("no such thing")


def not_json(event: Any, context: LambdaContext) -> object:
    return {"value": object()}


def money(event: Any, context: LambdaContext) -> dict[str, Any]:
    return {"amount": Decimal("10.50")}


def one_at_a_time(event: Any, context: LambdaContext) -> int:
    with running_lock:
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
    time.sleep(0.02)
    with running_lock:
        running["now"] -= 1
    return 1


class Namespace:
    handler = staticmethod(echo)


@pytest.fixture
def server(aws_env: None) -> Iterator[BackgroundServer]:
    calls.clear()
    functions = LocalLambda(
        {
            "echo": f"{HERE}:echo",
            "aws-style": f"{HERE}.echo",
            "nested": f"{HERE}:Namespace.handler",
            "fail": fail,
            "not-json": not_json,
            "money": money,
            "serial": one_at_a_time,
        },
        timeout_s=60,
    )
    with functions.serve() as running_server:
        yield running_server


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[Any]:
    lambda_client = boto3.client(
        "lambda",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    yield lambda_client
    lambda_client.close()


def invoke(client: Any, name: str, payload: Any = None, **options: Any) -> tuple[Any, Any]:
    """Invoke synchronously: the response and its decoded payload."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload or {"n": 1}).encode()
    response = client.invoke(FunctionName=name, Payload=body, **options)
    return response, json.loads(response["Payload"].read())


pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "name",
    [
        "echo",
        "echo:production",
        "123456789012:function:echo",
        "arn:aws:lambda:us-east-1:000000000000:function:echo",
        "arn:aws:lambda:eu-west-1:999999999999:function:echo:live",
    ],
)
def test_a_function_is_found_by_name_alias_or_arn(client: Any, name: str) -> None:
    response, output = invoke(client, name, {"hello": "world"}, InvocationType="RequestResponse")
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert output["event"] == {"hello": "world"}
    assert output["function_name"] == "echo"
    assert output["arn"] == "arn:aws:lambda:us-east-1:000000000000:function:echo"
    assert output["request_id"] == response["ResponseMetadata"]["RequestId"]
    assert output["version"] == "$LATEST"
    assert output["time_left"] is True


def test_handlers_are_given_as_module_function_or_lambda_style(client: Any) -> None:
    for name in ("aws-style", "nested"):
        _, output = invoke(client, name, {"x": 1})
        assert output["event"] == {"x": 1}
    _, output = invoke(client, "echo", {"x": 1}, Qualifier="prod")
    assert output["function_name"] == "echo"


def test_the_client_context_reaches_the_handler(client: Any) -> None:
    context = base64.b64encode(json.dumps({"custom": {"a": "b"}}).encode()).decode()
    _, output = invoke(client, "echo", ClientContext=context)
    assert output["client_context"] == {"custom": {"a": "b"}}


def test_an_empty_payload_is_an_empty_object(client: Any) -> None:
    response = client.invoke(FunctionName="echo")
    assert json.loads(response["Payload"].read())["event"] == {}


def test_a_handler_exception_is_an_unhandled_function_error(client: Any) -> None:
    response, output = invoke(client, "fail")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert output["errorType"] == "KeyError"
    assert output["errorMessage"] == "'no such thing'"
    assert output["requestId"] == response["ResponseMetadata"]["RequestId"]
    # Like Lambda's runtime, the stack starts at the handler's own frame.
    assert len(output["stackTrace"]) == 1
    assert "test_lambda_local.py" in output["stackTrace"][0]
    assert "in fail" in output["stackTrace"][0]


def test_an_output_that_is_not_json_is_a_marshal_error(client: Any) -> None:
    response, output = invoke(client, "not-json")
    assert response["FunctionError"] == "Unhandled"
    assert output["errorType"] == "Runtime.MarshalError"
    assert output["errorMessage"].startswith("Unable to marshal response:")


def test_decimals_are_written_as_numbers(client: Any) -> None:
    _, output = invoke(client, "money")
    assert output == {"amount": 10.5}


def test_an_unknown_function_is_resource_not_found(client: Any) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
        client.invoke(FunctionName="missing", Payload=b"{}")
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Error"]["Message"] == (
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:missing"
    )
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="arn:aws:lambda:us-east-1:1:function:missing", Payload=b"{}")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="missing")


def test_a_payload_that_is_not_json_is_refused(client: Any) -> None:
    with pytest.raises(client.exceptions.InvalidRequestContentException) as caught:
        client.invoke(FunctionName="echo", Payload=b"{not json")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Could not parse request body into json" in str(caught.value)
    assert calls == []


def test_a_payload_over_6_mb_is_refused(client: Any) -> None:
    payload = b'"' + b"x" * MAX_PAYLOAD_BYTES + b'"'
    with pytest.raises(client.exceptions.RequestTooLargeException) as caught:
        client.invoke(FunctionName="echo", Payload=payload)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert calls == []


def test_event_invocations_run_after_a_202(client: Any) -> None:
    response = client.invoke(FunctionName="echo", InvocationType="Event", Payload=b'{"e": 1}')
    assert response["StatusCode"] == 202
    deadline = time.monotonic() + 30
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [event for event, _ in calls] == [{"e": 1}]


def test_dry_runs_do_not_run_the_handler(client: Any) -> None:
    response = client.invoke(FunctionName="echo", InvocationType="DryRun", Payload=b"{}")
    assert response["StatusCode"] == 204
    assert calls == []


def test_an_unknown_invocation_type_is_refused(server: BackgroundServer) -> None:
    request = urllib.request.Request(
        server.url + "/2015-03-31/functions/echo/invocations",
        data=b"{}",
        headers={"X-Amz-Invocation-Type": "Sometimes"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    with caught.value as error:
        assert error.code == 400
        assert error.headers["x-amzn-ErrorType"] == "InvalidParameterValueException"
        assert json.loads(error.read())["message"] == "Unsupported invocation type 'Sometimes'"


def test_functions_are_listed_and_described(client: Any) -> None:
    names = [f["FunctionName"] for f in client.list_functions()["Functions"]]
    assert names == ["echo", "aws-style", "nested", "fail", "not-json", "money", "serial"]
    configuration = client.get_function(FunctionName="echo")["Configuration"]
    assert configuration["Handler"] == f"{HERE}:echo"
    assert configuration["FunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:echo"
    assert configuration["Timeout"] == 60


def test_one_invocation_at_a_time_per_function(server: BackgroundServer) -> None:
    running.update(now=0, most=0)
    statuses: list[int] = []

    def call() -> None:
        lambda_client = boto3.client(
            "lambda",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        try:
            for _ in range(3):
                statuses.append(lambda_client.invoke(FunctionName="serial")["StatusCode"])
        finally:
            lambda_client.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 12
    assert running["most"] == 1


# --------------------------------------------------------------------------- helpers


def test_load_handler_forms() -> None:
    assert load_handler(f"{HERE}:echo") is echo
    assert load_handler(f"{HERE}.echo") is echo
    assert load_handler(f"{HERE}:Namespace.handler") is echo
    with pytest.raises(ValueError, match="Expected a handler as module:function"):
        load_handler("echo")
    with pytest.raises(ModuleNotFoundError):
        load_handler("no_such_module_xyz:handler")
    with pytest.raises(AttributeError):
        load_handler(f"{HERE}:no_such_function")
    with pytest.raises(TypeError, match="is not callable"):
        load_handler(f"{HERE}:HERE")


def test_function_names_are_checked() -> None:
    for bad in ("", "a:b", "a/b"):
        with pytest.raises(ValueError, match="Invalid function name"):
            LocalLambda({bad: echo})


def test_direct_invocation_and_resolution() -> None:
    functions = LocalLambda({"echo": echo})
    payload, failed = functions.invoke("echo", {"a": 1})
    assert not failed and json.loads(payload)["event"] == {"a": 1}
    assert functions.resolve("arn:aws:s3:::bucket") is None
    assert functions.resolve("arn:aws:lambda:us-east-1:1:layer:x") is None
    with pytest.raises(LookupError):
        functions.invoke("nope", {})


def test_the_context_reports_the_time_left() -> None:
    context = LambdaContext("f", "arn", "id", deadline_ms=int(time.time() * 1000) + 60_000)
    assert 0 < context.get_remaining_time_in_millis() <= 60_000
    expired = LambdaContext("f", "arn", "id", deadline_ms=0)
    assert expired.get_remaining_time_in_millis() == 0


# --------------------------------------------------------------------------- python -m


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_command_line_serves_a_partner_handler(aws_env: None, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SQLITE_PARTNER_DB": str(tmp_path / "partner.db")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "patchbay.partner.lambda_local",
            "--function",
            "sqlite-partner=examples.sqlite_partner.handler:handler",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, process, "the server")
        lambda_client = boto3.client(
            "lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1"
        )
        try:
            response = lambda_client.invoke(
                FunctionName="sqlite-partner",
                InvocationType="RequestResponse",
                Payload=b'{"type": "module_registration_request"}',
            )
        finally:
            lambda_client.close()
        registration = parse(response["Payload"].read())
        assert isinstance(registration, ModuleRegistrationResponse)
        assert registration.name == "SQLite Example"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert b"Lambda Invoke API on http://127.0.0.1:" in stderr
    assert b"functions: sqlite-partner" in stderr


def test_the_command_line_refuses_a_bad_function() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "patchbay.partner.lambda_local", "--function", "broken"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--function expects NAME=MODULE:FUNCTION, got 'broken'" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "patchbay.partner.lambda_local", "--function", "x=nope_xyz:f"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "No module named 'nope_xyz'" in done.stderr
