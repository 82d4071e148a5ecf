"""The adapters: the ASGI app (token check, error mapping, body limit, methods), called
directly and over a real uvicorn server, and the Lambda handler, called directly and
through the local Lambda Invoke API with boto3."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest

import patchbay.firehose as fh
from patchbay.firehose.asgi import FirehoseASGIApp, asgi_app
from patchbay.firehose.lambda_handler import lambda_handler
from patchbay.firehose.processor import (
    HandlerError,
    InvalidMessageError,
    InvalidSettingsError,
    MessageProcessor,
    ProcessorError,
)
from patchbay.firehose.serialize import dumps, parse
from patchbay.partner.lambda_local import BackgroundServer, LocalLambda

DATA = Path(__file__).parent.parent / "data" / "firehose"
TOKEN = "s3cret-token"

REGISTRATION = (DATA / "ModuleRegistrationRequest.json").read_bytes()
EVENTS = (DATA / "EventProcessingRequest_android.json").read_bytes()


class Partner(MessageProcessor):
    """Answers everything; a custom event's name chooses a failure."""

    def registration(self) -> fh.ModuleRegistrationResponse:
        return fh.ModuleRegistrationResponse(
            name="Adapter test",
            version="1.0",
            event_processing_registration=fh.EventProcessingRegistration(
                account_settings=[fh.TextSetting(id="apiKey", name="API Key", required=True)]
            ),
        )

    def process_custom_event(self, event: fh.CustomEvent) -> None:
        if event.name == "boom":
            raise RuntimeError("kaput")
        if event.name == "busy":
            raise ProcessorError("Try again later.", status=503, code="busy")
        self.settings.text("apiKey")


def epr(name: str = "ok", **account_settings: str) -> bytes:
    settings = account_settings or {"apiKey": "k"}
    request = fh.EventProcessingRequest(
        account=fh.Account(account_id=1, account_settings=dict(settings)),
        events=[fh.CustomEvent(name=name)],
    )
    return dumps(request)


# --------------------------------------------------------------------------- ASGI, direct

Reply = tuple[int, dict[str, str], bytes]


def call(
    app: FirehoseASGIApp,
    body: bytes = b"",
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    chunks: Sequence[bytes] | None = None,
    content_length: bool = True,
) -> Reply:
    """One HTTP request through the ASGI app, without a server."""
    parts = list(chunks) if chunks is not None else [body]
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if content_length and chunks is None:
        raw_headers.append((b"content-length", str(len(body)).encode()))
    inbox: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/firehose",
        "raw_path": b"/firehose",
        "query_string": b"",
        "headers": raw_headers,
    }
    asyncio.run(app(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    response_headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    assert response_headers["content-type"] == "application/json"
    assert int(response_headers["content-length"]) == len(sent[1]["body"])
    return sent[0]["status"], response_headers, sent[1]["body"]


def auth(token: str = TOKEN, scheme: str = "Token") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


@pytest.fixture
def app() -> FirehoseASGIApp:
    return asgi_app(Partner(), token=TOKEN)


def test_a_request_with_the_token_is_answered_with_json(app: FirehoseASGIApp) -> None:
    status, _, body = call(app, EVENTS, headers=auth())
    assert status == 200
    assert isinstance(parse(body), fh.EventProcessingResponse)


def test_registration_is_answered_without_a_token(app: FirehoseASGIApp) -> None:
    status, _, body = call(app, REGISTRATION)
    assert status == 200
    response = parse(body)
    assert isinstance(response, fh.ModuleRegistrationResponse)
    assert response.name == "Adapter test"
    # A wrong token does not matter for registration either.
    assert call(app, REGISTRATION, headers=auth("wrong"))[0] == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        auth("wrong"),
        auth(TOKEN + "x"),
        auth(TOKEN[:-1]),
        auth(scheme="Bearer"),
        auth(scheme="Basic"),
        {"Authorization": TOKEN},
        {"Authorization": "Token"},
        {"Authorization": ""},
    ],
)
def test_other_requests_need_the_token(app: FirehoseASGIApp, headers: dict[str, str]) -> None:
    for body in (EVENTS, epr(), (DATA / "DsrProcessingRequest.json").read_bytes()):
        status, response_headers, answer = call(app, body, headers=headers)
        assert status == 401
        assert response_headers["www-authenticate"] == "Token"
        assert json.loads(answer) == {
            "error": "unauthorized",
            "message": "Missing or wrong token: send 'Authorization: Token <token>'.",
        }


@pytest.mark.parametrize("value", [f"token {TOKEN}", f"TOKEN {TOKEN}", f"Token  {TOKEN} "])
def test_the_scheme_is_case_insensitive_and_spaces_are_ignored(
    app: FirehoseASGIApp, value: str
) -> None:
    assert call(app, epr(), headers={"Authorization": value})[0] == 200


def test_without_a_token_every_caller_is_accepted() -> None:
    open_app = asgi_app(Partner(), token=None)
    assert call(open_app, epr())[0] == 200
    assert call(open_app, epr(), headers=auth("anything"))[0] == 200


@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="token must not be empty"):
        asgi_app(Partner(), token=token)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "Not valid JSON"),
        (b"", "Not valid JSON"),
        (b"[]", "Expected a JSON object"),
        (b'{"type": "no_such_message"}', "Invalid MessageType value 'no_such_message'"),
        (b'{"events": []}', "Missing `type`"),
    ],
)
def test_input_that_is_not_a_message_is_a_400(
    app: FirehoseASGIApp, body: bytes, message: str
) -> None:
    status, _, answer = call(app, body, headers=auth())
    assert status == 400
    error = json.loads(answer)
    assert error["error"] == "invalid_message"
    assert message in error["message"]
    # Without the token, nothing is said about the body.
    assert call(app, body)[0] == 401


def test_a_response_message_is_a_400(app: FirehoseASGIApp) -> None:
    status, _, answer = call(app, dumps(fh.EventProcessingResponse()), headers=auth())
    assert status == 400
    assert json.loads(answer)["error"] == "unsupported_message"


def test_a_processor_exception_is_a_500_with_a_message_and_no_traceback(
    app: FirehoseASGIApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="patchbay.firehose.asgi"):
        status, _, answer = call(app, epr("boom"), headers=auth())
    assert status == 500
    assert json.loads(answer) == {
        "error": "processing_failed",
        "message": "Processing the event_processing_request failed: RuntimeError: kaput",
    }
    assert b"Traceback" not in answer and b".py" not in answer
    # The traceback goes to the log, with the partner's own frame.
    [record] = [r for r in caplog.records if r.name == "patchbay.firehose.asgi"]
    assert record.exc_info is not None
    assert "kaput" in caplog.text and "process_custom_event" in caplog.text


def test_a_processor_error_keeps_its_status(app: FirehoseASGIApp) -> None:
    status, _, answer = call(app, epr("busy"), headers=auth())
    assert status == 503
    assert json.loads(answer) == {"error": "busy", "message": "Try again later."}


def test_a_missing_required_setting_is_a_400(app: FirehoseASGIApp) -> None:
    status, _, answer = call(app, epr(other="x"), headers=auth())
    assert status == 400
    assert json.loads(answer) == {
        "error": "invalid_settings",
        "message": "The required account setting 'apiKey' (API Key) is missing.",
    }


def test_verification_requests_are_answered(app: FirehoseASGIApp) -> None:
    empty = b'{"type": "event_processing_request", "events": []}'
    status, _, answer = call(app, empty, headers=auth())
    assert status == 200 and isinstance(parse(answer), fh.EventProcessingResponse)
    no_profiles = b'{"type": "audience_membership_change_request"}'
    status, _, answer = call(app, no_profiles, headers=auth())
    assert status == 200 and isinstance(parse(answer), fh.AudienceMembershipChangeResponse)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"])
def test_only_post_is_accepted(app: FirehoseASGIApp, method: str) -> None:
    status, headers, answer = call(app, b"", method=method, headers=auth())
    assert status == 405
    assert headers["allow"] == "POST"
    assert json.loads(answer)["error"] == "method_not_allowed"


def test_a_declared_body_over_the_limit_is_refused_unread() -> None:
    small = asgi_app(Partner(), token=TOKEN, max_body_bytes=100)
    sent: list[Any] = []

    async def receive() -> Any:
        raise AssertionError("the body must not be read")

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"101")]}
    asyncio.run(small(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {
        "error": "payload_too_large",
        "message": "The body is larger than 100 bytes.",
    }


def test_a_streamed_body_over_the_limit_is_refused() -> None:
    body = epr()
    limit = len(body) - 1
    small = asgi_app(Partner(), token=TOKEN, max_body_bytes=limit)
    chunks = [body[i : i + 10] for i in range(0, len(body), 10)]
    status, _, answer = call(small, chunks=chunks, headers=auth())
    assert status == 413
    assert json.loads(answer)["error"] == "payload_too_large"
    # Exactly at the limit is fine.
    exact = asgi_app(Partner(), token=TOKEN, max_body_bytes=len(body))
    assert call(exact, chunks=chunks, headers=auth())[0] == 200


def test_an_invalid_content_length_is_a_400(app: FirehoseASGIApp) -> None:
    status, _, answer = call(
        app, epr(), headers={**auth(), "Content-Length": "many"}, content_length=False
    )
    assert status == 400
    assert json.loads(answer)["message"] == "Invalid Content-Length."


def test_a_client_that_goes_away_gets_no_answer(app: FirehoseASGIApp) -> None:
    sent: list[Any] = []
    events = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Any:
        return events.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "POST", "headers": []}, receive, send))
    assert sent == []


def test_the_processor_can_run_on_the_event_loop() -> None:
    inline = asgi_app(Partner(), token=TOKEN, threaded=False)
    assert call(inline, EVENTS, headers=auth())[0] == 200
    assert call(inline, epr("boom"), headers=auth())[0] == 500


def test_lifespan_and_websockets() -> None:
    app = asgi_app(Partner(), token=None)
    sent: list[Any] = []
    events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> Any:
        return events.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    sent.clear()
    asyncio.run(app({"type": "websocket"}, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1003}]


def test_max_body_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        asgi_app(Partner(), token=None, max_body_bytes=0)


# --------------------------------------------------------------------------- ASGI, over HTTP


@pytest.fixture
def served() -> Iterator[BackgroundServer]:
    with BackgroundServer(asgi_app(Partner(), token=TOKEN, max_body_bytes=16384)).start() as server:
        yield server


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


@pytest.mark.slow
def test_over_http(served: BackgroundServer) -> None:
    url = served.url + "/firehose/events"
    status, headers, body = post(url, REGISTRATION)
    assert status == 200 and headers["content-type"] == "application/json"
    assert isinstance(parse(body), fh.ModuleRegistrationResponse)
    status, _, body = post(url, EVENTS, auth())
    assert status == 200 and isinstance(parse(body), fh.EventProcessingResponse)
    assert post(url, EVENTS)[0] == 401
    assert post(url, EVENTS, auth("nope"))[0] == 401
    assert post(url, b"{", auth())[0] == 400
    status, _, body = post(url, epr("boom"), auth())
    assert status == 500 and b"Traceback" not in body
    status, _, body = post(url, b" " * 20000, auth())
    assert status == 413 and json.loads(body)["error"] == "payload_too_large"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=30)  # GET
    with caught.value as error:
        assert error.code == 405 and error.headers["Allow"] == "POST"


# --------------------------------------------------------------------------- Lambda


def test_the_lambda_handler_answers_with_a_dict() -> None:
    handler = lambda_handler(Partner())
    expected = {
        "module_registration_request": "module_registration_response",
        "event_processing_request": "event_processing_response",
        "audience_subscription_request": "audience_subscription_response",
        "audience_membership_change_request": "audience_membership_change_response",
        "dsr_processing_request": "dsr_processing_response",
    }
    for path in sorted(DATA.glob("*Request*.json")):
        event = json.loads(path.read_bytes())
        answer = handler(event, None)
        assert isinstance(answer, dict)
        assert answer["type"] == expected[event["type"]]
        assert answer == fh.to_dict(parse(answer))
    # JSON text is accepted too.
    assert handler(EVENTS.decode(), None)["type"] == "event_processing_response"


@pytest.mark.parametrize(
    ("event", "error", "status"),
    [
        ({"type": "nope"}, InvalidMessageError, 400),
        ([1, 2], InvalidMessageError, 400),
        (json.loads(epr(other="x")), InvalidSettingsError, 400),
        (json.loads(epr("boom")), HandlerError, 500),
    ],
)
def test_the_lambda_handler_raises_processor_errors(
    event: Any, error: type[ProcessorError], status: int
) -> None:
    with pytest.raises(error) as caught:
        lambda_handler(Partner())(event, None)
    assert caught.value.status == status


@pytest.mark.slow
def test_lambda_errors_reach_the_caller_as_function_errors() -> None:
    functions = LocalLambda({"partner": lambda_handler(Partner())})
    with functions.serve() as server:
        client = boto3.client(
            "lambda",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        try:
            ok = client.invoke(FunctionName="partner", Payload=EVENTS)
            assert ok["StatusCode"] == 200 and "FunctionError" not in ok
            assert isinstance(parse(ok["Payload"].read()), fh.EventProcessingResponse)
            failed = client.invoke(FunctionName="partner", Payload=epr("boom"))
            assert failed["FunctionError"] == "Unhandled"
            payload = json.loads(failed["Payload"].read())
            assert payload["errorType"] == "HandlerError"
            assert payload["errorMessage"] == (
                "Processing the event_processing_request failed: RuntimeError: kaput"
            )
            invalid = client.invoke(FunctionName="partner", Payload=b'{"type": "nope"}')
            assert json.loads(invalid["Payload"].read())["errorType"] == "InvalidMessageError"
        finally:
            client.close()
