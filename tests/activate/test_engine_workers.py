"""The delivery engine in process, against a real HTTP endpoint: webhook and file outputs,
retries, parking and replay, Retry-After, pausing, per-output isolation, and what a module's
answers to audience messages do (subscription settings recorded, suspend_subscription)."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from structlog.testing import CapturingLogger

from patchbay.activate import engine as engine_module
from patchbay.activate.engine import DeliveryEngine, EngineConfig, RetryPolicy, reply_type
from patchbay.activate.files import OutputsDir
from patchbay.backends.abstract import Backend, ModuleStore
from patchbay.backends.records import (
    AudienceConnection,
    AudienceRecord,
    Delivery,
    FileDestination,
    ModuleDestination,
    ModuleRecord,
    Output,
    WebhookDestination,
)
from patchbay.clock import Clock, ManualClock, SystemClock
from patchbay.firehose import (
    AudienceMembershipChangeRequest,
    AudienceMembershipChangeResponse,
    AudienceSubscriptionRequest,
    AudienceSubscriptionResponse,
    BaseMessage,
    DsrProcessingRequest,
    EventProcessingRequest,
    EventProcessingResponse,
    ModuleRegistrationRequest,
    dumps,
)
from patchbay.partner.lambda_local import LocalLambda
from patchbay.partner.targets import HttpTarget, LambdaTarget, Target
from patchbay.partner.transport import Timeouts, response_type_for
from tests.activate.test_engine_support import (
    Deliveries,
    Recorder,
    async_wait_for,
    deliveries_of,
    serve,
)
from tests.conftest import CountingClock, Lines

FAST = EngineConfig(
    concurrency=2,
    timeouts=Timeouts(total=30.0, connect=5.0),
    policy=RetryPolicy(base_delay_s=0.05, max_delay_s=0.2, max_age_s=3600.0),
    poll_s=0.05,
    refresh_s=0.1,
)


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder()
    server = serve(rec.app)
    try:
        yield rec, server.url
    finally:
        rec.release()
        server.stop()


def run_engine(
    backend: Backend,
    body: Callable[[DeliveryEngine, Deliveries], Awaitable[None]],
    clock: Clock | None = None,
    config: EngineConfig = FAST,
) -> None:
    """Run ``body`` with an engine started on ``backend`` and the store of its outputs and
    outbox; the engine is stopped after (the backend stays open)."""
    store = deliveries_of(backend)

    async def main() -> None:
        engine = DeliveryEngine(backend, clock or SystemClock(), config)
        await engine.start()
        try:
            await body(engine, store)
        finally:
            await engine.stop()

    asyncio.run(main())


def webhook(store: Deliveries, name: str, url: str, now: int = 0) -> None:
    store.add_output(Output(name, WebhookDestination(url), now, now, settings={"token": "sekret"}))


def enqueue(store: Deliveries, output: str, count: int, now: int) -> list[str]:
    ids = [f"{output}-{i}" for i in range(count)]
    store.enqueue(
        [
            Delivery(i, output, "c", n, msgspec.json.encode({"id": i}), now, now, now)
            for n, i in enumerate(ids)
        ]
    )
    return ids


def test_webhook_deliveries_arrive_and_leave_the_outbox(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    rec, url = recorder

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "hook", url + "/hook")
        await engine.refresh()
        ids = enqueue(store, "hook", 5, engine.clock.now_ms())
        engine.notify({"hook"})
        await async_wait_for(lambda: len(rec.at("/hook")) >= 5, what="5 deliveries")
        await async_wait_for(
            lambda: not store.stats().get("hook", None) or not store.stats()["hook"].pending
        )
        got = rec.at("/hook")
        assert sorted(r.headers["x-patchbay-delivery-id"] for r in got) == sorted(ids)
        assert all(r.headers["authorization"] == "Bearer sekret" for r in got)
        assert sorted(r.json()["id"] for r in got) == sorted(ids)

    run_engine(backend, body)


def test_retryable_errors_are_retried_with_the_same_id(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    rec, url = recorder
    rec.set("/flaky", status=503)

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "flaky", url + "/flaky")
        await engine.refresh()
        enqueue(store, "flaky", 1, engine.clock.now_ms())
        await async_wait_for(lambda: len(rec.at("/flaky")) >= 3, what="three attempts")
        pending = store.get_delivery("flaky-0")
        assert pending is not None and pending.state == "pending" and pending.attempts >= 1
        assert "503" in (pending.last_error or "")
        rec.set("/flaky", status=200)
        await async_wait_for(lambda: len(rec.at("/flaky", handled=True)) == 1, what="success")
        await async_wait_for(lambda: store.get_delivery("flaky-0") is None, what="removal")
        assert {r.headers["x-patchbay-delivery-id"] for r in rec.at("/flaky")} == {"flaky-0"}

    run_engine(backend, body)


def test_non_retryable_errors_park_at_once_and_replay_resends(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    rec, url = recorder
    rec.set("/bad", status=400, body=b'{"error": "no such list"}')

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "bad", url + "/bad")
        await engine.refresh()
        enqueue(store, "bad", 2, engine.clock.now_ms())
        await async_wait_for(lambda: len(store.parked("bad")) == 2, what="parked")
        assert len(rec.at("/bad")) == 2  # one attempt each
        parked = store.parked("bad")
        assert all(
            "400" in (d.last_error or "") and "no such list" in (d.last_error or "") for d in parked
        )
        rec.set("/bad", status=200)
        assert store.replay(engine.clock.now_ms(), output="bad") == 2
        await async_wait_for(lambda: len(rec.at("/bad", handled=True)) == 2, what="replayed")
        ids = [r.headers["x-patchbay-delivery-id"] for r in rec.at("/bad")]
        assert sorted(ids) == ["bad-0", "bad-0", "bad-1", "bad-1"]

    run_engine(backend, body)


def test_retries_stop_at_the_retry_window(backend: Backend, recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    rec.set("/down", status=502)
    config = EngineConfig(
        concurrency=1,
        policy=RetryPolicy(base_delay_s=0.05, max_delay_s=0.1, max_age_s=0.5),
        poll_s=0.05,
        refresh_s=0.1,
    )

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "down", url + "/down")
        await engine.refresh()
        enqueue(store, "down", 1, engine.clock.now_ms())
        await async_wait_for(lambda: len(store.parked("down")) == 1, what="parked")
        parked = store.parked("down")[0]
        assert parked.attempts >= 2 and "502" in (parked.last_error or "")

    run_engine(backend, body, config=config)


def attempts(store: Deliveries, delivery_id: str) -> int | None:
    """The failed attempts recorded for a pending delivery (``None``: not in the outbox)."""
    delivery = store.get_delivery(delivery_id)
    return None if delivery is None else delivery.attempts


def test_retry_after_is_honoured(backend: Backend, recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    rec.set("/busy", status=429, headers={"Retry-After": "30"})
    clock = ManualClock()

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "busy", url + "/busy")
        await engine.refresh()
        first_at = clock.now_ms()
        enqueue(store, "busy", 1, first_at)
        engine.notify({"busy"})
        await async_wait_for(lambda: len(rec.at("/busy")) == 1, what="first attempt")

        await async_wait_for(lambda: attempts(store, "busy-0") == 1, what="retry recorded")
        delivery = store.get_delivery("busy-0")
        assert delivery is not None and delivery.next_attempt_ms >= first_at + 30_000
        rec.set("/busy", status=200)
        clock.advance(29)
        for _ in range(10):  # ten worker polls: nothing is due yet
            engine.notify({"busy"})
            await asyncio.sleep(FAST.poll_s)
        assert len(rec.at("/busy")) == 1
        clock.advance(1.01)
        engine.notify({"busy"})
        await async_wait_for(lambda: len(rec.at("/busy")) == 2, what="the retry")

    run_engine(backend, body, clock=clock)


def test_paused_output_holds_its_queue(backend: Backend, recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "held", url + "/held")
        store.set_paused("held", True, "maintenance", 0)
        await engine.refresh()
        enqueue(store, "held", 3, engine.clock.now_ms())
        for _ in range(10):
            engine.notify({"held"})
            await asyncio.sleep(FAST.poll_s)
        assert rec.at("/held") == []
        store.set_paused("held", False, None, 0)
        await async_wait_for(lambda: len(rec.at("/held")) == 3, what="resumed deliveries")

    run_engine(backend, body)


def test_file_output_appends_json_lines(tmp_path: Path, backend: Backend) -> None:
    path = tmp_path / "out" / "events.jsonl"
    config = dataclasses.replace(FAST, outputs=OutputsDir(tmp_path / "out"))

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        store.add_output(Output("lines", FileDestination(str(path)), 0, 0))
        await engine.refresh()
        enqueue(store, "lines", 4, engine.clock.now_ms())
        await async_wait_for(
            lambda: path.exists() and len(path.read_bytes().splitlines()) == 4, what="4 lines"
        )

    run_engine(backend, body, config=config)
    lines = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
    assert sorted(x["id"] for x in lines) == [f"lines-{i}" for i in range(4)]


def test_a_full_disk_backs_the_engine_off_and_loses_nothing(
    tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch, storage_log: Lines
) -> None:
    """A file output's disk is full: no attempt is counted, the engine tries again after 1 s,
    2 s, 4 s... of its clock, logs once, and writes everything once there is room."""
    path = tmp_path / "out" / "events.jsonl"
    config = dataclasses.replace(FAST, concurrency=1, outputs=OutputsDir(tmp_path / "out"))
    clock = CountingClock()
    tries: list[int] = []
    room = False
    real_write = os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        if room or not path.exists() or os.fstat(fd).st_ino != path.stat().st_ino:
            return real_write(fd, data)
        tries.append(fd)  # the output's disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)

    def tried(engine: DeliveryEngine, count: int) -> bool:
        """The write was refused ``count`` times, and the engine has taken each refusal in
        (the write runs in a thread: the test must not move the clock in between)."""
        return len(tries) == count and engine.backoff.refusals == count

    async def went_round() -> None:
        start = clock.reads
        await async_wait_for(lambda: clock.reads >= start + 5, what="the worker's loop")

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        nonlocal room
        store.add_output(Output("lines", FileDestination(str(path)), 0, 0))
        await engine.refresh()
        enqueue(store, "lines", 3, clock.now_ms())
        engine.notify({"lines"})
        await async_wait_for(partial(tried, engine, 1), what="the first try")
        for done, wait_s in ((1, 1.0), (2, 2.0), (3, 4.0)):
            await went_round()
            assert len(tries) == done
            clock.advance(wait_s)
            await async_wait_for(partial(tried, engine, done + 1), what="the next try")
        assert [d.attempts for d in store.due("lines", clock.now_ms(), 10)] == [0, 0, 0]
        room = True
        clock.advance(8.0)
        await async_wait_for(lambda: not store.stats().get("lines"), what="every delivery")
        assert not engine.backoff.full

    run_engine(backend, body, clock=clock, config=config)
    assert sorted(msgspec.json.decode(line)["id"] for line in path.read_bytes().splitlines()) == [
        f"lines-{i}" for i in range(3)
    ]
    assert [(level, event) for level, event, _ in storage_log.lines] == [
        ("warning", "storage_full"),
        ("info", "storage_recovered"),
    ]


def test_file_outputs_outside_or_changed_on_disk_are_parked_never_written(
    tmp_path: Path, backend: Backend
) -> None:
    outputs = OutputsDir(tmp_path / "out", tmp_path / "data")
    config = dataclasses.replace(FAST, outputs=outputs)
    outside = tmp_path / "elsewhere.jsonl"
    inside = tmp_path / "out" / "events.jsonl"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        store.add_output(Output("old", FileDestination(str(outside)), 0, 0))
        store.add_output(Output("lines", FileDestination(str(inside)), 0, 0))
        await engine.refresh()
        enqueue(store, "old", 1, engine.clock.now_ms())
        enqueue(store, "lines", 1, engine.clock.now_ms())
        await async_wait_for(lambda: len(store.parked("old")) == 1, what="parked (outside)")
        await async_wait_for(lambda: inside.exists(), what="the first line")
        error = store.parked("old")[0].last_error or ""
        assert "outside the outputs directory" in error and "outputs_dir" in error
        assert "patchbay deliveries replay" in error
        # the file is swapped for a link to another file behind the engine's back
        inside.unlink()
        inside.symlink_to(victim)
        store.enqueue([Delivery("swap", "lines", "c", 9, b'{"id": "swap"}', 0, 0, 0)])
        engine.notify({"lines"})
        await async_wait_for(lambda: len(store.parked("lines")) == 1, what="parked (link)")
        assert "changed on disk" in (store.parked("lines")[0].last_error or "")

    run_engine(backend, body, config=config)
    assert not outside.exists()
    assert victim.read_bytes() == b"keep"


def test_refused_targets_are_parked_with_the_reason_and_never_sent(
    backend: Backend, recorder: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, url = recorder
    port = url.rsplit(":", 1)[1]
    # a name that resolves to the metadata address, another to the local recorder
    monkeypatch.setattr(
        "aiohttp.DefaultResolver",
        lambda: FakeResolver({"meta.test": "169.254.169.254", "local.test": "127.0.0.1"}),
    )

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        store.add_output(Output("meta", WebhookDestination("http://169.254.169.254/x"), 0, 0))
        store.add_output(Output("named", WebhookDestination(f"http://meta.test:{port}/x"), 0, 0))
        store.add_output(Output("fine", WebhookDestination(f"http://local.test:{port}/ok"), 0, 0))
        await engine.refresh()
        for name in ("meta", "named", "fine"):
            enqueue(store, name, 1, engine.clock.now_ms())
        await async_wait_for(lambda: len(rec.at("/ok", handled=True)) == 1, what="sent")
        for name in ("meta", "named"):
            await async_wait_for(lambda n=name: len(store.parked(n)) == 1, what=f"{name} parked")
            error = store.parked(name)[0].last_error or ""
            assert "cloud metadata address" in error and "never sends there" in error, error

    run_engine(backend, body)


def test_tokens_never_cross_plain_http_to_other_hosts(
    backend: Backend, recorder: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, url = recorder
    port = url.rsplit(":", 1)[1]
    # the partner's name now resolves to a private address (not loopback, not listed)
    monkeypatch.setattr(
        "aiohttp.DefaultResolver", lambda: FakeResolver({"partner.test": "10.1.2.3"})
    )

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        webhook(store, "hook", f"http://partner.test:{port}/hook")
        await engine.refresh()
        enqueue(store, "hook", 1, engine.clock.now_ms())
        await async_wait_for(lambda: len(store.parked("hook")) == 1, what="parked")
        error = store.parked("hook")[0].last_error or ""
        assert "plain http" in error and "sekret" not in error

    run_engine(backend, body)
    assert rec.at("/hook") == []


class FakeResolver(AbstractResolver):
    """Answers host names from a table (a DNS the test controls)."""

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.table[host]
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


def test_a_slow_or_failing_output_does_not_delay_another(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    rec, url = recorder
    # Slower than the engine's 10 s request timeout: the slow output never gets an answer.
    rec.set("/slow", delay_s=12.0)
    rec.set("/broken", status=500)

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        for name in ("slow", "broken", "good"):
            webhook(store, name, f"{url}/{name}")
        await engine.refresh()
        now = engine.clock.now_ms()
        enqueue(store, "slow", 20, now)
        enqueue(store, "broken", 20, now)
        await async_wait_for(lambda: len(rec.at("/slow")) >= 2, what="slow output busy")
        await async_wait_for(lambda: len(rec.at("/broken")) >= 2, what="broken output busy")
        enqueue(store, "good", 20, engine.clock.now_ms())
        engine.notify({"good"})
        await async_wait_for(lambda: len(rec.at("/good", handled=True)) == 20, what="good")
        # the good output finished while the slow one has not delivered anything
        assert len(rec.at("/slow", handled=True)) == 0
        assert len(rec.at("/broken", handled=True)) == 0

    run_engine(backend, body)


# --------------------------------------------------------------------------- module outputs

#: An answer just over the transport's cap (4 MiB): the attempt must fail, not read it whole.
OVERSIZED = b'{"type": "event_processing_response", "pad": "' + b"x" * (4 << 20) + b'"}'
ACCEPTED = dumps(EventProcessingResponse())


def module_output(store: Deliveries, modules: ModuleStore, name: str, target: Target) -> None:
    """A module ``name`` reached at ``target``, and an output of the same name sending to
    it."""
    modules.put_module(ModuleRecord(name, name, "1.0", target, b"{}", 0, 0))
    store.add_output(Output(name, ModuleDestination(name), 0, 0))


def test_a_module_answer_over_the_cap_fails_the_attempt(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    rec, url = recorder
    rec.set("/big", body=OVERSIZED)

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        module_output(store, engine.modules, "big", HttpTarget(url + "/big"))
        await engine.refresh()
        enqueue(store, "big", 1, engine.clock.now_ms())
        await async_wait_for(lambda: len(store.parked("big")) == 1, what="parked")
        assert "too large" in (store.parked("big")[0].last_error or "")
        # the worker goes on: the same delivery, replayed, is accepted
        rec.set("/big", body=ACCEPTED)
        assert store.replay(engine.clock.now_ms(), output="big") == 1
        await async_wait_for(lambda: store.get_delivery("big-0") is None, what="delivered")

    run_engine(backend, body)


def test_a_lambda_module_answer_over_the_cap_fails_the_attempt(
    backend: Backend, aws_env: None
) -> None:
    answers = {"size": "big"}

    def handler(event: Any, context: Any) -> dict[str, Any]:
        if answers["size"] == "big":
            return {"type": "event_processing_response", "pad": "x" * (4 << 20)}
        return {"type": "event_processing_response"}

    with LocalLambda({"fn": handler}).serve() as server:

        async def body(engine: DeliveryEngine, store: Deliveries) -> None:
            module_output(store, engine.modules, "fn", LambdaTarget("fn", endpoint_url=server.url))
            await engine.refresh()
            enqueue(store, "fn", 1, engine.clock.now_ms())
            await async_wait_for(lambda: len(store.parked("fn")) == 1, what="parked")
            assert "too large" in (store.parked("fn")[0].last_error or "")
            answers["size"] = "small"
            assert store.replay(engine.clock.now_ms(), output="fn") == 1
            await async_wait_for(lambda: store.get_delivery("fn-0") is None, what="delivered")

        run_engine(backend, body)


def test_a_module_retry_after_is_honoured(backend: Backend, recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    rec.set("/busy", status=503, headers={"Retry-After": "30"})
    clock = ManualClock()

    async def body(engine: DeliveryEngine, store: Deliveries) -> None:
        module_output(store, engine.modules, "busy", HttpTarget(url + "/busy"))
        await engine.refresh()
        first_at = clock.now_ms()
        enqueue(store, "busy", 1, first_at)

        await async_wait_for(lambda: attempts(store, "busy-0") == 1, what="retry recorded")
        delivery = store.get_delivery("busy-0")
        assert delivery is not None and delivery.next_attempt_ms >= first_at + 30_000
        assert "503" in (delivery.last_error or "")

    run_engine(backend, body, clock=clock)


# --------------------------------------------------------------------------- audience answers

LIST_SETTING: dict[str, object] = {
    "type": "text",
    "id": "listName",
    "name": "List",
    "visible": False,
}


def audience_output(backend: Backend, url: str, name: str = "crm") -> int:
    """A module (declaring the ``listName`` subscription setting) at ``url``, an output of
    it, and an audience connected to the output; the audience's id."""
    backend.modules.put_module(
        ModuleRecord(
            name,
            name,
            "1.0",
            HttpTarget(url),
            b"{}",
            0,
            0,
            audience=True,
            audience_subscription_settings=[LIST_SETTING],
        )
    )
    backend.outputs.add_output(Output(name, ModuleDestination(name), 0, 0))
    audience = backend.audiences.add_audience(AudienceRecord(0, "Buyers", "", b"{}", 0, 0))
    backend.audiences.put_audience_connection(
        AudienceConnection(audience.id, name, 0, settings={"region": "eu"})
    )
    return audience.id


def enqueue_message(
    engine: DeliveryEngine, output: str, delivery_id: str, message: BaseMessage
) -> None:
    now = engine.clock.now_ms()
    engine.outbox.enqueue(
        [Delivery(delivery_id, output, "audiences", 0, dumps(message), now, now, now)]
    )
    engine.notify({output})


def the_connection(backend: Backend, audience_id: int, output: str = "crm") -> AudienceConnection:
    [found] = [
        c
        for c in backend.audiences.list_audience_connections()
        if (c.audience_id, c.output) == (audience_id, output)
    ]
    return found


def test_reply_types_are_told_by_the_payload_prefix() -> None:
    requests: list[BaseMessage] = [
        EventProcessingRequest(),
        AudienceSubscriptionRequest(audience_id=1, action="add"),
        AudienceMembershipChangeRequest(),
        DsrProcessingRequest(),
        ModuleRegistrationRequest(),
    ]
    for request in requests:
        payload = dumps(request)
        assert payload.startswith(b'{"type":"' + str(request.type).encode() + b'"')  # type first
        assert reply_type(payload) is response_type_for(request)
    # written otherwise: decoded for its type alone; no type: any answer is taken
    assert reply_type(b'{"id": "x", "type": "audience_subscription_request"}') is (
        AudienceSubscriptionResponse
    )
    assert reply_type(b'{"type": "event_processing_request"}') is EventProcessingResponse
    assert reply_type(b'{"type":"event_processing_request_v2"}') is None
    assert reply_type(b'{"id": "x"}') is None
    assert reply_type(b"[1, 2]") is None
    assert reply_type(b"not json") is None


@pytest.mark.parametrize("action", ["add", "update"])
def test_the_settings_a_partner_answers_to_a_subscription_are_recorded(
    backend: Backend, recorder: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    rec, url = recorder
    answer = AudienceSubscriptionResponse(
        audience_subscription_settings={"listName": "partner-list-9", "secret": "not-declared"}
    )
    rec.set("/crm", body=dumps(answer))
    logged = CapturingLogger()
    monkeypatch.setattr(engine_module, "log", logged)

    async def body(engine: DeliveryEngine, _: Deliveries) -> None:
        audience_id = audience_output(backend, url + "/crm")
        await engine.refresh()
        assert the_connection(backend, audience_id).subscribed_at_ms is None
        request = AudienceSubscriptionRequest(audience_id=audience_id, action=action)
        enqueue_message(engine, "crm", "sub-1", request)
        await async_wait_for(lambda: backend.outbox.get_delivery("sub-1") is None, what="sent")
        connection = the_connection(backend, audience_id)
        assert connection.partner_settings == {"listName": "partner-list-9"}
        assert connection.subscribed_at_ms is not None
        assert connection.settings == {"region": "eu"}  # the customer's, untouched
        [warning] = [c for c in logged.calls if c.args == ("subscription_settings_dropped",)]
        assert warning.method_name == "warning"
        assert warning.kwargs["dropped"] == ["secret"]
        assert warning.kwargs["audience_id"] == audience_id

    run_engine(backend, body)
    [received] = rec.at("/crm")
    assert received.json()["type"] == "audience_subscription_request"


def test_a_removal_answer_records_nothing(backend: Backend, recorder: tuple[Recorder, str]) -> None:
    rec, url = recorder
    rec.set("/crm", body=dumps(AudienceSubscriptionResponse()))

    async def body(engine: DeliveryEngine, _: Deliveries) -> None:
        audience_id = audience_output(backend, url + "/crm")
        await engine.refresh()
        request = AudienceSubscriptionRequest(audience_id=audience_id, action="remove")
        enqueue_message(engine, "crm", "sub-1", request)
        await async_wait_for(lambda: backend.outbox.get_delivery("sub-1") is None, what="sent")
        assert the_connection(backend, audience_id).subscribed_at_ms is None

    run_engine(backend, body)


def test_a_subscription_that_cannot_be_recorded_is_retried(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    rec, url = recorder
    rec.set("/crm", body=dumps(AudienceSubscriptionResponse()))

    async def body(engine: DeliveryEngine, _: Deliveries) -> None:
        audience_id = audience_output(backend, url + "/crm")
        store = backend.audiences
        failures = [OSError("disk full")]

        class Failing:
            def subscribed(self, *args: Any) -> bool:
                if failures:
                    raise failures.pop()
                return store.subscribed(*args)

        engine.audiences = Failing()  # type: ignore[assignment]
        await engine.refresh()
        request = AudienceSubscriptionRequest(audience_id=audience_id, action="add")
        enqueue_message(engine, "crm", "sub-1", request)
        await async_wait_for(lambda: backend.outbox.get_delivery("sub-1") is None, what="sent")
        assert len(rec.at("/crm")) == 2  # sent again after the failed record
        assert the_connection(backend, audience_id).subscribed_at_ms is not None

    run_engine(backend, body)


def test_suspend_subscription_in_a_membership_answer_pauses_the_output(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    rec, url = recorder
    rec.set("/crm", body=dumps(AudienceMembershipChangeResponse(suspend_subscription=True)))

    async def body(engine: DeliveryEngine, _: Deliveries) -> None:
        audience_output(backend, url + "/crm")
        await engine.refresh()
        enqueue_message(engine, "crm", "m-1", AudienceMembershipChangeRequest(user_profiles=[]))

        def paused() -> bool:
            output = backend.outputs.get_output("crm")
            return output is not None and output.paused

        await async_wait_for(paused, what="paused")
        output = backend.outputs.get_output("crm")
        assert output is not None and "suspend_subscription" in (output.paused_reason or "")
        # accepted all the same: it leaves the outbox, the next one waits
        await async_wait_for(lambda: backend.outbox.get_delivery("m-1") is None, what="acked")
        enqueue_message(engine, "crm", "m-2", AudienceMembershipChangeRequest(user_profiles=[]))
        await asyncio.sleep(FAST.poll_s * 4)
        assert len(rec.at("/crm")) == 1

    run_engine(backend, body)


def test_an_answer_of_another_type_than_the_request_parks_it(
    backend: Backend, recorder: tuple[Recorder, str]
) -> None:
    rec, url = recorder
    rec.set("/crm", body=ACCEPTED)  # an event processing response

    async def body(engine: DeliveryEngine, _: Deliveries) -> None:
        audience_id = audience_output(backend, url + "/crm")
        await engine.refresh()
        request = AudienceSubscriptionRequest(audience_id=audience_id, action="add")
        enqueue_message(engine, "crm", "sub-1", request)
        await async_wait_for(lambda: len(backend.outbox.parked("crm")) == 1, what="parked")
        [parked] = backend.outbox.parked("crm")
        assert "expected audience_subscription_response" in (parked.last_error or "")
        assert the_connection(backend, audience_id).subscribed_at_ms is None

    run_engine(backend, body)
