"""A refusal behind pipelined requests (patchbay/http/protocol.py) waits for their answers,
in order, on a transport that records what is written: the requests before it are
answered, then the refusal, then the connection is closed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from patchbay.http.protocol import protocol_class
from patchbay.settings import Settings


class Transport(asyncio.Transport):
    """Records what the protocol writes and whether it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Reads the body, then answers 202."""
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


def post(*headers: bytes) -> bytes:
    lines = [b"POST /v2/events HTTP/1.1", b"Host: x", b"Content-Length: 2", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n{}"


LARGE = post(*[b"X-Many-%d: %s" % (i, b"b" * 1000) for i in range(70)])  # 71 KB of headers


@pytest.mark.parametrize(
    ("reads", "status"),
    [
        ([post() + LARGE], b"431"),
        ([post() + LARGE[:1000], LARGE[1000:69_000]], b"431"),  # over the limit, incomplete
        ([post() + b"POST /v2/events HTTP/1.1\r\nHost x\r\n\r\n"], b"400"),
    ],
    ids=["complete", "incomplete", "malformed"],
)
def test_a_refusal_behind_a_request_waits_for_its_answer(reads: list[bytes], status: bytes) -> None:
    settings = Settings(max_header_bytes=65536)

    async def exchange() -> Transport:
        config = Config(app, lifespan="off", log_config=None)
        protocol = protocol_class(settings)(config, ServerState(), {})
        transport = Transport()
        protocol.connection_made(transport)
        for data in reads:  # before the first request's application runs
            protocol.data_received(data)
        assert transport.written == b""
        for _ in range(100):
            if transport.closed:
                break
            await asyncio.sleep(0)
        assert transport.closed
        protocol.connection_lost(None)
        return transport

    transport = asyncio.run(exchange())
    first, _, rest = transport.written.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 202")
    assert rest.startswith(b"HTTP/1.1 " + status)
    assert rest.endswith(b"}")  # the JSON error, and nothing after it
