"""The partner transports against real local servers: a uvicorn-served ASGI partner over
HTTP, and the local Lambda Invoke API server through boto3."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from patchbay.activate.targets import TargetPolicy
from patchbay.firehose import (
    AudienceSubscriptionResponse,
    EventProcessingRequest,
    EventProcessingResponse,
    ModuleRegistrationRequest,
    ModuleRegistrationResponse,
    UnknownTypeError,
    to_dict,
)
from patchbay.firehose.asgi import asgi_app
from patchbay.firehose.lambda_handler import lambda_handler
from patchbay.partner.lambda_local import BackgroundServer, LocalLambda
from patchbay.partner.transport import (
    HttpTarget,
    HttpTransport,
    InvalidResponseError,
    LambdaTarget,
    LambdaTransport,
    PartnerConnectionError,
    PartnerFunctionError,
    PartnerStatusError,
    PartnerThrottledError,
    PartnerTimeoutError,
    TargetRefusedError,
    Timeouts,
    TransportConfigError,
    UnexpectedResponseTypeError,
    open_transport,
    response_type_for,
)
from tests.partner.partners import (
    TOKEN,
    Answer,
    DemoPartner,
    ScriptedPartner,
    answer_json,
    demo_script,
    serving,
)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request() -> EventProcessingRequest:
    return EventProcessingRequest(events=[])


async def _send(target: HttpTarget | LambdaTarget, message: Any, **options: Any) -> Any:
    timeouts = options.pop("timeouts", None)
    async with open_transport(target, timeouts=timeouts) as transport:
        return await transport.send(message, **options)


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def partner_url() -> Iterator[str]:
    """The demo partner behind the SDK's ASGI adapter, with a token."""
    with serving(asgi_app(DemoPartner(), token=TOKEN)) as url:
        yield url


def test_http_round_trip_with_token(partner_url: str) -> None:
    request = _request()
    reply = asyncio.run(_send(HttpTarget(partner_url, TOKEN), request))
    assert isinstance(reply.message, EventProcessingResponse)
    assert reply.status == 200
    assert reply.latency_ms > 0
    assert reply.json()["type"] == "event_processing_response"


def test_http_without_the_token_is_refused_with_status_and_body(partner_url: str) -> None:
    with pytest.raises(PartnerStatusError) as caught:
        asyncio.run(_send(HttpTarget(partner_url, None), _request()))
    error = caught.value
    assert error.status == 401
    assert "unauthorized" in error.body
    assert not error.retryable
    assert "401" in str(error)


def test_http_registration_is_sent_without_the_token() -> None:
    partner = ScriptedPartner(demo_script())
    with serving(partner) as url:
        target = HttpTarget(url, TOKEN)
        reply = asyncio.run(_send(target, ModuleRegistrationRequest(), authenticate=False))
        asyncio.run(_send(target, _request()))
    assert isinstance(reply.message, ModuleRegistrationResponse)
    (registration_headers, _), (event_headers, _) = partner.requests
    assert "authorization" not in registration_headers
    assert event_headers["authorization"] == f"Token {TOKEN}"
    assert event_headers["content-type"] == "application/json"


def test_http_reuses_a_given_session(partner_url: str) -> None:
    async def run() -> tuple[list[Any], bool]:
        async with aiohttp.ClientSession() as session:
            transport = HttpTransport(HttpTarget(partner_url, TOKEN), session=session)
            replies = [await transport.send(_request()) for _ in range(3)]
            await transport.close()  # leaves the caller's session open
            return replies, session.closed

    replies, closed = asyncio.run(run())
    assert [type(r.message) for r in replies] == [EventProcessingResponse] * 3
    assert not closed


def test_http_connection_refused() -> None:
    url = f"http://127.0.0.1:{_free_port()}/firehose"
    with pytest.raises(PartnerConnectionError) as caught:
        asyncio.run(_send(HttpTarget(url), _request()))
    assert caught.value.retryable
    assert url in str(caught.value)


def test_http_timeout() -> None:
    slow = ScriptedPartner(lambda request, headers: answer_json({}, delay_s=1.0))
    with serving(slow) as url, pytest.raises(PartnerTimeoutError) as caught:
        asyncio.run(_send(HttpTarget(url), _request(), timeouts=Timeouts(total=0.3, connect=0.3)))
    assert caught.value.retryable
    assert "0.3 s" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (500, PartnerStatusError, True),
        (503, PartnerStatusError, True),
        (400, PartnerStatusError, False),
        (429, PartnerThrottledError, True),
        (307, PartnerStatusError, False),  # redirects are not followed
    ],
)
def test_http_error_statuses(status: int, error: type[PartnerStatusError], retryable: bool) -> None:
    body = b'{"error": "boom", "detail": "' + b"x" * 1000 + b'"}'
    failing = ScriptedPartner(
        lambda request, headers: Answer(status, body, {"location": "http://127.0.0.1:9/elsewhere"})
    )
    with serving(failing) as url, pytest.raises(error) as caught:
        asyncio.run(_send(HttpTarget(url), _request()))
    assert type(caught.value) is error
    assert caught.value.status == status
    assert caught.value.retryable is retryable
    assert caught.value.body.startswith('{"error": "boom"')
    assert len(caught.value.body) <= 300  # an excerpt
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>Internal</html>", "Not valid JSON"),
        (b"[1, 2]", "Expected a JSON object"),
        (b'{"type": "event_processing_answer"}', "event_processing_answer"),
        (b'{"type": "event_processing_response", "id": "not-a-uuid"}', "UUID"),
        (b"", "empty answer"),
    ],
)
def test_http_unparseable_answers(body: bytes, expected: str) -> None:
    partner = ScriptedPartner(lambda request, headers: Answer(200, body))
    with serving(partner) as url, pytest.raises(InvalidResponseError) as caught:
        asyncio.run(_send(HttpTarget(url), _request()))
    assert expected in str(caught.value)
    assert not caught.value.retryable
    if b"event_processing_answer" in body:
        assert isinstance(caught.value.cause, UnknownTypeError)


def test_http_wrong_response_type() -> None:
    wrong = to_dict(AudienceSubscriptionResponse())
    partner = ScriptedPartner(lambda request, headers: answer_json(wrong))
    with serving(partner) as url:
        with pytest.raises(UnexpectedResponseTypeError) as caught:
            asyncio.run(_send(HttpTarget(url), _request()))
        reply = asyncio.run(_send(HttpTarget(url), _request(), check_type=False))
    assert caught.value.expected == "event_processing_response"
    assert caught.value.got == "audience_subscription_response"
    assert isinstance(reply.message, AudienceSubscriptionResponse)


def test_http_accepted_without_body() -> None:
    partner = ScriptedPartner(lambda request, headers: Answer(202, b""))
    with serving(partner) as url:
        reply = asyncio.run(_send(HttpTarget(url), _request()))
    assert reply.message is None
    assert reply.status == 202


def test_http_answer_too_large() -> None:
    huge = b'{"type": "event_processing_response", "pad": "' + b"x" * 200_000 + b'"}'
    partner = ScriptedPartner(lambda request, headers: Answer(200, huge))

    async def run(url: str) -> None:
        transport = HttpTransport(HttpTarget(url), max_response_bytes=100_000)
        async with transport:
            await transport.send(_request())

    with serving(partner) as url, pytest.raises(InvalidResponseError, match="too large"):
        asyncio.run(run(url))


async def _send_capped(url: str, limit: int) -> None:
    async with HttpTransport(HttpTarget(url), max_response_bytes=limit) as transport:
        await transport.send(_request())


def test_http_reply_carries_status_headers_and_body() -> None:
    answer = answer_json(to_dict(EventProcessingResponse()))
    answer.headers["X-Partner-Trace"] = "t-1"
    partner = ScriptedPartner(lambda request, headers: answer)
    with serving(partner) as url:
        reply = asyncio.run(_send(HttpTarget(url), _request()))
    assert reply.status == reply.response.status == 200
    assert reply.headers["x-partner-trace"] == "t-1"
    assert reply.response.header("X-Partner-Trace") == "t-1"
    assert reply.body == answer.body


def test_http_status_error_carries_the_answer_and_its_retry_after() -> None:
    body = b'{"error": "busy"}'
    partner = ScriptedPartner(lambda request, headers: Answer(503, body, {"Retry-After": "7"}))
    with serving(partner) as url, pytest.raises(PartnerStatusError) as caught:
        asyncio.run(_send(HttpTarget(url), _request()))
    response = caught.value.response
    assert response is not None
    assert (response.status, response.body) == (503, body)
    assert caught.value.headers["retry-after"] == "7"
    assert caught.value.latency_ms == response.latency_ms


def test_http_error_answer_over_the_cap_is_cut_at_the_cap() -> None:
    huge = b"x" * 200_000
    partner = ScriptedPartner(lambda request, headers: Answer(500, huge))

    with serving(partner) as url, pytest.raises(PartnerStatusError) as caught:
        asyncio.run(_send_capped(url, 100_000))
    assert caught.value.retryable  # still the status error, not an invalid answer
    assert caught.value.response is not None
    assert caught.value.response.body == huge[:100_000]


def test_http_answer_too_large_keeps_the_capped_start() -> None:
    huge = b'{"type": "event_processing_response", "pad": "' + b"x" * 200_000 + b'"}'
    partner = ScriptedPartner(lambda request, headers: Answer(200, huge))

    with serving(partner) as url, pytest.raises(InvalidResponseError) as caught:
        asyncio.run(_send_capped(url, 100_000))
    assert caught.value.status == 200
    assert caught.value.raw == huge[:100_000]


def test_http_post_sends_any_body_with_the_given_headers() -> None:
    partner = ScriptedPartner(lambda request, headers: Answer(204, b""))

    async def run(url: str) -> Any:
        async with HttpTransport(HttpTarget(url, TOKEN)) as transport:
            return await transport.post(
                b'{"id": "d-1"}',
                headers={"Authorization": "Bearer hook", "X-Delivery": "d-1"},
                authenticate=False,
            )

    with serving(partner) as url:
        response = asyncio.run(run(url))
    assert (response.status, response.body) == (204, b"")
    [(headers, request)] = partner.requests
    assert request == {"id": "d-1"}
    assert headers["authorization"] == "Bearer hook"
    assert headers["x-delivery"] == "d-1"


def test_http_rejects_other_schemes() -> None:
    with pytest.raises(TransportConfigError):
        HttpTransport(HttpTarget("ftp://example.com/x"))


def test_targets_never_show_the_token() -> None:
    target = HttpTarget("https://partner.example/firehose", TOKEN)
    assert TOKEN not in repr(target)
    assert TOKEN not in target.describe()


def test_targets_show_their_urls_masked() -> None:
    target = HttpTarget("https://bob:hunter2@partner.example/f?token=abc123", TOKEN)
    for shown in (repr(target), target.describe()):
        assert "hunter2" not in shown and "abc123" not in shown and TOKEN not in shown
    lam = LambdaTarget("fn", endpoint_url="http://u:pw@127.0.0.1:9001")
    assert "pw" not in lam.describe()


def test_a_policy_refuses_before_connecting_and_is_not_retried(partner_url: str) -> None:
    async def post(url: str, policy: TargetPolicy) -> None:
        async with HttpTransport(HttpTarget(url, TOKEN), policy=policy) as transport:
            await transport.send(_request())

    with pytest.raises(TargetRefusedError, match="cloud metadata address") as caught:
        asyncio.run(post("http://0xa9fea9fe:80/f", TargetPolicy()))
    assert caught.value.retryable is False and TOKEN not in str(caught.value)
    # a name resolved by the real resolver to an address left out of allowed_targets
    local = partner_url.replace("127.0.0.1", "localhost")
    with pytest.raises(TargetRefusedError, match="not in allowed_targets"):
        asyncio.run(post(local, TargetPolicy.from_setting(["10.0.0.0/8"])))
    asyncio.run(post(partner_url, TargetPolicy()))  # loopback: allowed by default
    with pytest.raises(TargetRefusedError, match="not an http"):
        asyncio.run(_lambda_refused())


async def _lambda_refused() -> None:
    target = LambdaTarget("fn", endpoint_url="ftp://127.0.0.1:9001")
    async with LambdaTransport(target, policy=TargetPolicy()) as transport:
        await transport.send(_request())


def test_response_types() -> None:
    assert response_type_for(_request()) is EventProcessingResponse
    with pytest.raises(ValueError, match="not a request"):
        response_type_for(EventProcessingResponse())


# --------------------------------------------------------------------------- Lambda


def _failing_handler(event: Any, context: Any) -> dict[str, Any]:
    raise RuntimeError("the partner's database is down")


def _sleepy_handler(event: Any, context: Any) -> dict[str, Any]:
    time.sleep(1.0)
    return to_dict(EventProcessingResponse())


def _not_a_message(event: Any, context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": "ok"}


@pytest.fixture(scope="module")
def lambda_url() -> Iterator[str]:
    functions = {
        "demo": lambda_handler(DemoPartner()),
        "failing": _failing_handler,
        "sleepy": _sleepy_handler,
        "not-a-message": _not_a_message,
    }
    with LocalLambda(functions).serve() as server:
        yield server.url


def test_lambda_round_trip(aws_env: None, lambda_url: str) -> None:
    reply = asyncio.run(_send(LambdaTarget("demo", endpoint_url=lambda_url), _request()))
    assert isinstance(reply.message, EventProcessingResponse)
    assert reply.status == 200
    assert reply.latency_ms > 0


def test_lambda_accepts_arns_and_regions(aws_env: None, lambda_url: str) -> None:
    arn = "arn:aws:lambda:eu-west-1:000000000000:function:demo:production"
    target = LambdaTarget(arn, region="eu-west-1", endpoint_url=lambda_url)
    reply = asyncio.run(_send(target, ModuleRegistrationRequest()))
    assert isinstance(reply.message, ModuleRegistrationResponse)
    assert reply.message.name == "Demo Partner"


def test_lambda_unsigned_without_credentials(
    aws_env: None, lambda_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    reply = asyncio.run(_send(LambdaTarget("demo", endpoint_url=lambda_url), _request()))
    assert isinstance(reply.message, EventProcessingResponse)


def test_lambda_function_error(aws_env: None, lambda_url: str) -> None:
    with pytest.raises(PartnerFunctionError) as caught:
        asyncio.run(_send(LambdaTarget("failing", endpoint_url=lambda_url), _request()))
    error = caught.value
    assert error.kind == "Unhandled"
    assert error.error_type == "RuntimeError"
    assert error.error_message == "the partner's database is down"
    assert "RuntimeError: the partner's database is down" in str(error)
    assert not error.retryable


def test_lambda_answer_not_a_message(aws_env: None, lambda_url: str) -> None:
    with pytest.raises(InvalidResponseError, match="Missing `type`"):
        asyncio.run(_send(LambdaTarget("not-a-message", endpoint_url=lambda_url), _request()))


def test_lambda_unknown_function(aws_env: None, lambda_url: str) -> None:
    with pytest.raises(PartnerStatusError) as caught:
        asyncio.run(_send(LambdaTarget("nope", endpoint_url=lambda_url), _request()))
    assert caught.value.status == 404
    assert "ResourceNotFoundException" in caught.value.body
    assert not caught.value.retryable


def test_lambda_timeout(aws_env: None, lambda_url: str) -> None:
    target = LambdaTarget("sleepy", endpoint_url=lambda_url)
    with pytest.raises(PartnerTimeoutError) as caught:
        asyncio.run(_send(target, _request(), timeouts=Timeouts(total=0.3, connect=1.0)))
    assert caught.value.retryable


def test_lambda_connection_refused(aws_env: None) -> None:
    target = LambdaTarget("demo", endpoint_url=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(PartnerConnectionError) as caught:
        asyncio.run(_send(target, _request(), timeouts=Timeouts(total=2, connect=1)))
    assert caught.value.retryable


async def _throttling_lambda(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Lambda's answer to an invocation beyond the concurrency limit."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = (
        b'{"Type": "User", "message": "Rate Exceeded.",'
        b' "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}'
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"x-amzn-errortype", b"TooManyRequestsException"),
        (b"retry-after", b"1"),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _throttled() -> PartnerThrottledError:
    """The error of a call to a throttled Lambda function."""
    server = BackgroundServer(_throttling_lambda).start()
    try:
        target = LambdaTarget("demo", endpoint_url=server.url)
        with pytest.raises(PartnerThrottledError) as caught:
            asyncio.run(_send(target, _request()))
    finally:
        server.stop()
    return caught.value


def test_lambda_throttling(aws_env: None) -> None:
    error = _throttled()
    assert error.status == 429
    assert error.retryable
    assert "TooManyRequestsException" in str(error)


def test_lambda_throttling_carries_the_retry_after(aws_env: None) -> None:
    error = _throttled()
    assert error.headers["retry-after"] == "1"
    assert error.response is not None and error.response.status == 429


class _FakeLambdaClient:
    """A boto3 Lambda client stand-in that answers ``payload`` and notes its threads."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.threads: list[str] = []

    def invoke(self, **call: Any) -> dict[str, Any]:
        self.threads.append(threading.current_thread().name)
        return {
            "StatusCode": 200,
            "Payload": io.BytesIO(self.payload),
            "ResponseMetadata": {"HTTPHeaders": {"x-amz-executed-version": "$LATEST"}},
        }


def test_lambda_transport_on_threads_of_its_own() -> None:
    client = _FakeLambdaClient(answer_json(to_dict(EventProcessingResponse())).body)

    async def run() -> Any:
        transport = LambdaTransport(LambdaTarget("demo"), client=client, threads=2)
        async with transport:
            return await transport.send(_request())

    reply = asyncio.run(run())
    assert isinstance(reply.message, EventProcessingResponse)
    assert reply.headers["x-amz-executed-version"] == "$LATEST"
    assert [name.startswith("patchbay-lambda") for name in client.threads] == [True]


def test_lambda_answer_too_large() -> None:
    client = _FakeLambdaClient(b'{"pad": "' + b"x" * 200_000 + b'"}')

    async def run() -> Any:
        transport = LambdaTransport(LambdaTarget("demo"), client=client, max_response_bytes=1000)
        async with transport:
            return await transport.send(_request())

    with pytest.raises(InvalidResponseError, match="too large") as caught:
        asyncio.run(run())
    assert caught.value.raw == client.payload[:1000]


def test_lambda_transport_uses_given_client(aws_env: None, lambda_url: str) -> None:
    import boto3

    client = boto3.client("lambda", region_name="us-east-1", endpoint_url=lambda_url)

    async def run() -> Any:
        transport = LambdaTransport(LambdaTarget("demo"), client=client)
        async with transport:
            return await transport.send(_request())

    try:
        reply = asyncio.run(run())
        # the caller's client is left open: it still works
        assert client.invoke(FunctionName="demo", Payload=b'{"type": "dsr_processing_request"}')
    finally:
        client.close()
    assert isinstance(reply.message, EventProcessingResponse)
