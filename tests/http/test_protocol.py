"""Oversized headers, slow clients and too many connections against a real ``patchbay
serve`` (patchbay/http/protocol.py), over raw sockets: each is answered in the JSON error
shape where a response is possible, cut off, and stores nothing."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress

import pytest

from tests.conftest import Server, add_input, read_response, start_server, stop_server

pytestmark = pytest.mark.slow

BATCH = json.dumps(
    {"environment": "production", "user_identities": {"customer_id": "c1"}, "events": []}
).encode()


def request(
    server: Server, *headers: bytes, body: bytes = BATCH, length: int | None = None
) -> bytes:
    """A ``POST /v2/events`` of ``body`` with the server's credentials and ``headers``."""
    lines = [
        b"POST /v2/events HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Authorization: " + server.credentials.basic.encode(),
        b"Content-Type: application/json",
        b"Content-Length: %d" % (len(body) if length is None else length),
        *headers,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def connect(server: Server) -> socket.socket:
    """A connection to ``server``."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def send_quietly(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send ``data`` on a thread of its own, ignoring the error of a connection the server
    closed first (it may answer and close before it has read everything)."""

    def send() -> None:
        with suppress(OSError):
            sock.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def error_of(answer: bytes) -> str:
    """The code of the one error of a body in the JSON error shape."""
    (error,) = json.loads(answer)["errors"]
    assert error["message"]
    return str(error["code"])


def closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (nothing more to read but its end)."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def serve(data_dir_factory: pytest.TempPathFactory, *flags: str) -> Iterator[Server]:
    """A running ``patchbay serve FLAGS`` with an input in ``credentials``."""
    data_dir = data_dir_factory.mktemp("protocol") / "data"
    credentials = add_input(data_dir, "app")
    running = start_server(data_dir, *flags)
    running.credentials = credentials
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that keeps 3 connections, with timeouts longer than any test here."""
    yield from serve(tmp_path_factory, "--max-connections", "3", "--header-timeout", "60")


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that waits half a second for headers and for a body."""
    yield from serve(tmp_path_factory, "--header-timeout", "0.5", "--body-timeout", "0.5")


@pytest.mark.parametrize(
    "headers",
    [
        [b"X-Big: " + b"a" * (1 << 20)],  # one header of 1 MiB: refused before it is all read
        [b"X-Many-%d: %s" % (i, b"b" * 1000) for i in range(70)],  # 70 KiB in all, complete
    ],
    ids=["one-1MiB-header", "70-1KiB-headers"],
)
def test_headers_over_the_limit_are_431_and_nothing_is_stored(
    capped: Server, headers: list[bytes]
) -> None:
    before = len(capped.stored())
    with connect(capped) as sock:
        sender = send_quietly(sock, request(capped, *headers))
        status_line, fields, answer = read_response(sock)
        assert status_line.startswith(b"HTTP/1.1 431"), (status_line, answer)
        assert fields[b"content-type"] == b"application/json"
        assert error_of(answer) == "REQUEST_HEADER_FIELDS_TOO_LARGE"
        assert closed(sock)
        sender.join(timeout=30)
    assert len(capped.stored()) == before


def test_headers_over_the_limit_after_a_request_in_the_same_write_are_431(
    capped: Server,
) -> None:
    large = [b"X-Many-%d: %s" % (i, b"b" * 1000) for i in range(70)]
    before = len(capped.stored())
    with connect(capped) as sock:
        send_quietly(sock, request(capped) + request(capped, *large))
        assert read_response(sock)[0].startswith(b"HTTP/1.1 202")
        status_line, _, answer = read_response(sock)
        assert status_line.startswith(b"HTTP/1.1 431"), (status_line, answer)
        assert closed(sock)
    assert len(capped.stored()) == before + 1


def test_many_normal_headers_still_work(capped: Server) -> None:
    headers = [b"X-Normal-%d: %s" % (i, b"c" * 200) for i in range(100)]  # 21 KiB
    before = len(capped.stored())
    with connect(capped) as sock:
        sock.sendall(request(capped, *headers))
        status_line, _, answer = read_response(sock)
    assert status_line.startswith(b"HTTP/1.1 202"), (status_line, answer)
    assert len(capped.stored()) == before + 1


def test_the_limit_is_per_request_on_a_kept_alive_connection(capped: Server) -> None:
    headers = [b"X-Normal-%d: %s" % (i, b"d" * 1000) for i in range(20)]  # 20 KiB each
    before = len(capped.stored())
    with connect(capped) as sock:
        for _ in range(5):  # 100 KiB of headers in all, one request after the other
            sock.sendall(request(capped, *headers))
            assert read_response(sock)[0].startswith(b"HTTP/1.1 202")
        sock.sendall(request(capped, *headers) * 3)  # pipelined, in one write
        for _ in range(3):
            assert read_response(sock)[0].startswith(b"HTTP/1.1 202")
    assert len(capped.stored()) == before + 8


def test_a_malformed_request_is_400_in_the_json_shape(capped: Server) -> None:
    with connect(capped) as sock:
        sock.sendall(b"POST /v2/events HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n")
        status_line, _, answer = read_response(sock)
        assert status_line.startswith(b"HTTP/1.1 400"), (status_line, answer)
        assert error_of(answer) == "BAD_REQUEST"
        assert closed(sock)


def test_a_stalled_header_is_cut_off_with_408(impatient: Server) -> None:
    with connect(impatient) as sock:
        sock.sendall(b"POST /v2/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ab")
        status_line, _, answer = read_response(sock)
        assert status_line.startswith(b"HTTP/1.1 408"), (status_line, answer)
        assert error_of(answer) == "REQUEST_TIMEOUT"
        assert closed(sock)


def test_a_connection_that_sends_nothing_is_closed(impatient: Server) -> None:
    with connect(impatient) as sock:
        assert closed(sock)


def test_a_stalled_body_is_cut_off_and_nothing_is_stored(impatient: Server) -> None:
    with connect(impatient) as sock:
        sock.sendall(request(impatient, body=BATCH[:20], length=len(BATCH)))
        status_line, _, answer = read_response(sock)
        assert status_line.startswith(b"HTTP/1.1 408"), (status_line, answer)
        assert error_of(answer) == "REQUEST_TIMEOUT"
        assert closed(sock)
    assert impatient.stored() == []
    # the application read a disconnect and answered nothing: no error of its own
    assert "Exception in ASGI application" not in impatient.log_path.read_text()
    status, _, _ = impatient.post("/v2/events", BATCH)  # a whole request still gets in
    assert status == 202


def test_connections_over_the_cap_are_refused_while_others_work(capped: Server) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(connect(capped)) for _ in range(3)]
        for sock in held:  # each in the middle of its headers, as a slow client
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        with connect(capped) as extra:
            send_quietly(extra, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").join(30)
            status_line, fields, answer = read_response(extra)
            assert status_line.startswith(b"HTTP/1.1 503"), (status_line, answer)
            assert fields[b"retry-after"] == b"1"
            assert error_of(answer) == "SERVICE_UNAVAILABLE"
            assert closed(extra)
        held.pop().close()  # under the cap again: a request gets in
        assert healthz_once_admitted(capped).startswith(b"HTTP/1.1 200")
        held[0].sendall(b"Host: 127.0.0.1\r\n\r\n")  # a held connection is served too
        assert read_response(held[0])[0].startswith(b"HTTP/1.1 200")


def healthz_once_admitted(server: Server) -> bytes:
    """The status line of ``GET /healthz`` on the first connection the server admits (it
    learns of a closed connection a moment after the client closed it)."""
    for _ in range(100):
        with connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status_line = read_response(sock)[0]
        if not status_line.startswith(b"HTTP/1.1 503"):
            return status_line
        time.sleep(0.05)
    raise AssertionError("the server kept refusing connections under its cap")
