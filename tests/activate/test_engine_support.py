"""Shared pieces of the delivery tests: a recording HTTP endpoint whose behaviour can be
changed while it runs, waiting helpers, and a backend's outputs and outbox as one store (no
test in this module)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patchbay.backends.abstract import Backend, Outbox, OutputStore
from patchbay.partner.lambda_local import BackgroundServer


class Deliveries(OutputStore, Outbox, Protocol):
    """A backend's outputs and its outbox: one store on every backend."""


def deliveries_of(backend: Backend) -> Deliveries:
    """The store that keeps ``backend``'s outputs and outbox."""
    outputs: object = backend.outputs
    assert outputs is backend.outbox
    return cast(Deliveries, backend.outbox)


@dataclass
class Received:
    """One request the endpoint received."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class Behaviour:
    """How a path answers: status, body, headers, and an optional delay first."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class Recorder:
    """A Starlette app that records every POST and answers as configured per path."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.handled: list[Received] = []  # answered 2xx
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def set(self, path: str, **kwargs: Any) -> None:
        self.behaviours[path] = Behaviour(**kwargs)

    def release(self) -> None:
        """End every delay now and from now on (so that the server stops without waiting
        for the answers held back)."""
        self._released.set()

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        item = Received(path, dict(request.headers), await request.body(), time.monotonic())
        with self._lock:
            self.received.append(item)
        behaviour = self.behaviours.get(path, Behaviour())
        deadline = time.monotonic() + behaviour.delay_s
        while time.monotonic() < deadline and not self._released.is_set():
            await asyncio.sleep(min(0.05, behaviour.delay_s))
        if 200 <= behaviour.status < 300:
            with self._lock:
                self.handled.append(item)
        return Response(
            behaviour.body,
            behaviour.status,
            headers=behaviour.headers,
            media_type="application/json",
        )

    def at(self, path: str, handled: bool = False) -> list[Received]:
        with self._lock:
            items = self.handled if handled else self.received
            return [r for r in items if r.path == path]


def serve(app: Any) -> BackgroundServer:
    """Run ``app`` with uvicorn in a thread on a free port."""
    return BackgroundServer(app).start()


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    """Poll ``check`` until true; fail after ``timeout_s`` (a deadline, not an assertion on
    how long it took)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


async def async_wait_for(
    check: Callable[[], bool], timeout_s: float = 30.0, what: str = ""
) -> None:
    """:func:`wait_for` inside an event loop."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)
