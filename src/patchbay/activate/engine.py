"""The delivery engine: one worker per output drains that output's queue in the outbox.

* **Isolation.** Each output has its own asyncio task, its own bound on concurrent sends,
  its own HTTP connection pool and its own threads (Lambda calls, file writes): a failing,
  slow or paused output never delays another. The outbox is read and written on a small
  thread pool of the engine's own.
* **Retries.** Connection errors, timeouts, 408, 429 and 5xx (and a throttled Lambda) are
  retried with exponential backoff and full jitter, never sooner than a ``Retry-After``,
  until the delivery is older than the retry window (default 24 h); then, and at once for
  any other error, the delivery is *parked* with its last error, until
  ``patchbay deliveries replay``. See :func:`next_attempt`.
* **At least once.** A delivery leaves the outbox only after the output accepted it, so a
  crash at any point resends it (with the same message id) after the restart. Successes
  are acknowledged in groups (:class:`AckBatcher`): one transaction removes every delivery
  accepted in the last few milliseconds. A crash before that commit only resends them.
* **Reading the outbox.** A worker reads due deliveries a page at a time into a queue of
  its own and reads again only when the queue runs low and there may be more (new
  deliveries, a poll, a failed acknowledgement); the output and module records are read
  again on every :meth:`DeliveryEngine.refresh` (each ``refresh_s``), not per send.
* **Several deliverers.** What a worker reads is leased to its engine
  (:attr:`DeliveryEngine.deliverer`) for ``lease_s``: no other deliverer sharing the outbox
  sends it meanwhile. A send starts only if it ends (its timeouts) before the lease does;
  a queued delivery too close to its lease's end is read again, which renews the lease.
  Acknowledgements, retries and parks are the owner's: one whose lease went to another
  deliverer changes nothing (docs/scale-out.md).
* **suspend_subscription.** A module that answers ``suspend_subscription: true`` (to an
  event or an audience membership change) has its output paused, with the reason shown by
  ``patchbay outputs status``.
* **Reply types.** A module's answer must be the response type of the request sent, told
  by the stored payload's ``type``: :func:`dumps` writes it first, so the prefix of the
  bytes tells, without decoding the payload (:func:`reply_type`).
* **Where it sends.** Every HTTP send goes through the :class:`EngineConfig.targets` policy
  (:mod:`patchbay.activate.targets`: checked on the URL, and on each address the host name
  resolves to before connecting) and every file write through the outputs directory
  (:mod:`patchbay.activate.files`): a refused target or path parks the delivery at once
  with the reason, and nothing is sent or written.
* **Audience subscriptions.** The settings a module answers to an ``add`` or ``update``
  ``audience_subscription_request`` are recorded on the audience connection
  (``AudienceStore.subscribed``), keeping only the module's registered audience
  subscription settings, before the delivery counts as accepted: if recording fails, the
  request is retried.
* **Errors name no secret.** A delivery's error (stored with it, shown by ``patchbay
  deliveries parked``, logged) may quote the partner's answer: the values of the output's
  confidential settings and of its connections' are replaced by ``***`` in it first
  (:func:`~patchbay.activate.outputs.redacted`).
* **A full store.** When the outbox (or a file output's disk) has no room
  (:class:`~patchbay.errors.StorageFull`), every worker backs off together
  (:mod:`patchbay.backoff`): the delivery stays pending, its attempt is not counted, and
  accepted deliveries wait for room to be acknowledged rather than being sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import random
import secrets
import socket
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import msgspec
import structlog

from patchbay import __version__
from patchbay.activate.breaker import BreakerPolicy, BreakerState, CircuitBreaker, Transition
from patchbay.activate.files import OutputPathError, OutputsDir
from patchbay.activate.outputs import confidential_values, redacted
from patchbay.activate.targets import TargetPolicy
from patchbay.backends import EMBEDDED_BACKENDS
from patchbay.backends.abstract import Backend
from patchbay.backends.records import (
    Circuit,
    Connection,
    Delivery,
    FileDestination,
    ModuleDestination,
    ModuleRecord,
    Output,
    WebhookDestination,
)
from patchbay.backoff import CLOCK_POLL_S, StorageBackoff
from patchbay.clock import Clock
from patchbay.errors import StorageFull
from patchbay.firehose import (
    AudienceMembershipChangeResponse,
    AudienceSubscriptionResponse,
    BaseMessage,
    EventProcessingResponse,
)
from patchbay.firehose.errors import FirehoseError
from patchbay.partner.registration import registration_of
from patchbay.partner.targets import HttpTarget, Target
from patchbay.partner.transport import (
    HttpTransport,
    Timeouts,
    Transport,
    TransportError,
    open_transport,
    response_type_named,
)
from patchbay.settings import Settings

log = structlog.get_logger("patchbay.activate")

T = TypeVar("T")


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff: ``base_delay_s * 2**(attempt-1)`` capped at ``max_delay_s``, with full
    jitter; a delivery is parked once it has been failing for ``max_age_s``."""

    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    max_age_s: float = 24 * 3600.0


def next_attempt(
    policy: RetryPolicy,
    *,
    attempts: int,
    since_ms: int,
    now_ms: int,
    retryable: bool,
    retry_after_s: float | None = None,
    jitter: float = 1.0,
) -> int | None:
    """When to try a delivery again after its ``attempts``-th failed attempt, or ``None``
    to park it.

    ``jitter`` in [0, 1] picks the delay between half and all of the exponential delay
    (pass ``random.random()``). A ``Retry-After`` is a lower bound. A delivery failing
    since ``since_ms`` is parked when the next attempt would fall after the retry window.
    """
    if not retryable:
        return None
    exponent = min(max(attempts - 1, 0), 60)
    delay = min(policy.max_delay_s, policy.base_delay_s * (2.0**exponent))
    delay *= 0.5 + 0.5 * min(max(jitter, 0.0), 1.0)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    at = now_ms + max(1, round(delay * 1000))
    if at - since_ms > policy.max_age_s * 1000:
        return None
    return at


def parse_retry_after(value: str | None, now_ms: int) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_ms / 1000)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Tuning of the engine. ``concurrency``: sends in flight per output; ``poll_s``: how
    often an idle worker looks at its queue (new deliveries also wake it at once);
    ``refresh_s``: how often outputs (pause state, settings) and modules are read again;
    ``page``: how many due deliveries a worker reads at once; ``ack_delay_s`` and
    ``ack_max``: successes are removed from the outbox in one transaction at most
    ``ack_delay_s`` after the first of them, or as soon as ``ack_max`` are waiting.
    ``targets``: where HTTP outputs and modules may send; ``outputs``: where file outputs
    may write (``None``: nowhere). ``breaker``: when an output's circuit breaker opens and
    how often it probes; ``summary_s``: how often a failing output's failures are logged
    (0: never). ``lease_s``: how long the deliveries read stay this engine's (longer than
    :attr:`longest_send_ms`)."""

    concurrency: int = 32
    timeouts: Timeouts = field(default_factory=Timeouts)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    poll_s: float = 0.25
    refresh_s: float = 1.0
    page: int = 256
    ack_delay_s: float = 0.005
    ack_max: int = 512
    targets: TargetPolicy = field(default_factory=TargetPolicy)
    outputs: OutputsDir | None = None
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    summary_s: float = 60.0
    lease_s: float = 60.0

    @property
    def longest_send_ms(self) -> int:
        """The longest one send can take (its timeouts): none starts closer than this to
        the end of its delivery's lease."""
        return round((self.timeouts.total + self.timeouts.connect) * 1000)

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        """The engine's tuning given by the ``delivery_*`` settings."""
        return cls(
            concurrency=settings.delivery_concurrency,
            timeouts=Timeouts(
                total=settings.delivery_timeout_s, connect=settings.delivery_connect_timeout_s
            ),
            policy=RetryPolicy(
                base_delay_s=settings.delivery_base_delay_s,
                max_delay_s=settings.delivery_max_delay_s,
                max_age_s=settings.delivery_max_age_s,
            ),
            poll_s=settings.delivery_poll_s,
            page=settings.delivery_page,
            ack_delay_s=settings.delivery_ack_delay_s,
            ack_max=settings.delivery_ack_max,
            targets=TargetPolicy.from_setting(settings.allowed_targets),
            outputs=OutputsDir.from_settings(settings),
            breaker=BreakerPolicy(
                failures_to_open=settings.delivery_breaker_failures,
                base_delay_s=settings.delivery_base_delay_s,
                max_delay_s=settings.delivery_probe_max_delay_s,
            ),
            summary_s=settings.log_summary_interval_s,
            lease_s=settings.delivery_lease_s,
        )


# --------------------------------------------------------------------------- senders


@dataclass(frozen=True, slots=True)
class Subscription:
    """A module accepted an audience subscription (``add`` or ``update``) and answered
    these ``settings``."""

    audience_id: int
    settings: dict[str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt. ``subscription``: what to record before the delivery
    counts as accepted."""

    ok: bool
    retryable: bool = False
    error: str | None = None
    retry_after_s: float | None = None
    suspend: bool = False
    subscription: Subscription | None = None


class Sender:
    """Sends the payload of a delivery to one output."""

    async def send(self, delivery: Delivery, now_ms: int) -> Outcome:
        """One attempt."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections and threads."""


def _failed(error: TransportError, now_ms: int) -> Outcome:
    """The outcome of an attempt that raised ``error`` (with the answer's ``Retry-After``)."""
    retry_after = parse_retry_after(error.headers.get("retry-after"), now_ms)
    return Outcome(False, error.retryable, str(error), retry_after)


class TransportSender(Sender):
    """A sender over a :mod:`patchbay.partner.transport` transport (closed with it)."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def close(self) -> None:
        await self._transport.close()


class WebhookSender(TransportSender):
    """POSTs the JSON payload with the HTTP transport (same timeouts, answer cap, no
    redirects); any 2xx is success. ``token`` is sent as a bearer token."""

    _transport: HttpTransport

    def __init__(self, transport: HttpTransport, token: str | None) -> None:
        super().__init__(transport)
        self._token = token

    @classmethod
    def to(cls, url: str, token: str | None, config: EngineConfig) -> WebhookSender:
        """A sender to ``url`` with a pool of ``config.concurrency`` connections, within
        ``config.targets``."""
        target = HttpTarget(url)
        return cls(
            HttpTransport(
                target,
                timeouts=config.timeouts,
                connections=config.concurrency,
                policy=config.targets,
                credentials=bool(token),
            ),
            token,
        )

    async def send(self, delivery: Delivery, now_ms: int) -> Outcome:
        headers = {
            "User-Agent": f"patchbay/{__version__} (webhook)",
            "X-Patchbay-Delivery-Id": delivery.id,
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            await self._transport.post(delivery.payload, headers=headers, authenticate=False)
        except TransportError as exc:
            return _failed(exc, now_ms)
        return Outcome(True)


class FileSender(Sender):
    """Appends the payload as one line to a file inside the outputs directory (flushed and
    fsynced; created ``0600``), on a thread of its own. The path is checked again at every write
    (:meth:`OutputsDir.open_append`): one that left the directory, or became a link, parks
    the delivery with the reason and nothing is written."""

    def __init__(self, path: Path, outputs: OutputsDir | None) -> None:
        self._path = path
        self._outputs = outputs
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="patchbay-file")

    def _append(self, line: bytes) -> None:
        if self._outputs is None:
            raise OutputPathError(
                f"file output path {self._path}: no outputs directory is configured"
            )
        fd = self._outputs.open_append(str(self._path))
        try:
            size = os.fstat(fd).st_size
            try:
                rest = memoryview(line + b"\n")
                while rest:
                    rest = rest[os.write(fd, rest) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # never a partial line
                raise
        finally:
            os.close(fd)

    async def send(self, delivery: Delivery, now_ms: int) -> Outcome:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._append, delivery.payload)
        except OutputPathError as exc:
            return Outcome(False, False, str(exc))
        except OSError as exc:
            if (full := StorageFull.of(exc, self._path)) is not None:
                raise full from exc  # not an attempt: the engine backs off
            return Outcome(False, True, f"cannot write {self._path}: {exc}")
        return Outcome(True)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ModuleSender(TransportSender):
    """Sends the stored Firehose request over the module's transport."""

    @classmethod
    def to(cls, target: Target, config: EngineConfig) -> ModuleSender:
        """A sender to ``target`` within ``config.targets``. HTTP: one pool of
        ``config.concurrency`` connections; Lambda: as many threads of its own."""
        return cls(
            open_transport(
                target,
                timeouts=config.timeouts,
                connections=config.concurrency,
                threads=config.concurrency,
                policy=config.targets,
            )
        )

    async def send(self, delivery: Delivery, now_ms: int) -> Outcome:
        payload = delivery.payload
        try:
            # the stored bytes as they are: written once by the sink, never parsed again
            reply = await self._transport.send_serialized(
                payload, reply_type(payload), lenient=True
            )
        except TransportError as exc:
            return _failed(exc, now_ms)
        answer = reply.message
        if isinstance(answer, _SUSPENDABLE):
            return Outcome(True, suspend=answer.suspend_subscription)
        if isinstance(answer, AudienceSubscriptionResponse):
            return Outcome(True, subscription=_subscription(payload, answer))
        return Outcome(True)


#: The shortest setting value masked in errors when the module's settings are unknown.
_SECRET_LENGTH: Final = 8
#: The answers that may ask to suspend the subscription (pause the output).
_SUSPENDABLE: Final = (EventProcessingResponse, AudienceMembershipChangeResponse)
#: How :func:`patchbay.firehose.dumps` starts an event processing request (``type`` first).
_EVENT_REQUEST: Final = b'{"type":"event_processing_request"'
_TYPE_PREFIX: Final = b'{"type":"'
_LONGEST_TYPE: Final = 64


class _Typed(msgspec.Struct):
    type: str | None = None


class _SubscriptionFields(msgspec.Struct):
    audience_id: int = 0
    action: str | None = None


_decode_type: Final = msgspec.json.Decoder(_Typed).decode
_decode_subscription: Final = msgspec.json.Decoder(_SubscriptionFields).decode


def reply_type(payload: bytes) -> type[BaseMessage] | None:
    """The response type a module must answer the stored request ``payload`` with; ``None``
    (any message) when the payload names no request type.

    :func:`~patchbay.firehose.dumps` writes ``type`` first, so an event processing request
    (the hot path) is told by one prefix comparison and any other request by reading the
    literal after ``{"type":"``; only a payload written otherwise is decoded (for its
    ``type`` alone)."""
    if payload.startswith(_EVENT_REQUEST):
        return EventProcessingResponse
    name: str | None
    if payload.startswith(_TYPE_PREFIX):
        start = len(_TYPE_PREFIX)
        end = payload.find(b'"', start, start + _LONGEST_TYPE)
        name = payload[start:end].decode("ascii", "replace") if end > 0 else None
    else:
        try:
            name = _decode_type(payload).type
        except (msgspec.DecodeError, msgspec.ValidationError):
            name = None
    return response_type_named(name)


def _subscription(payload: bytes, answer: AudienceSubscriptionResponse) -> Subscription | None:
    """What to record for the answer to the subscription request ``payload``: only an
    ``add`` or an ``update`` subscribes."""
    try:
        request = _decode_subscription(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if request.action not in ("add", "update"):
        return None
    return Subscription(request.audience_id, dict(answer.audience_subscription_settings))


# --------------------------------------------------------------------------- engine


class DeliveryMetricsLike(Protocol):
    """The per-output metrics the engine updates (:class:`patchbay.metrics.DeliveryMetrics`)."""

    def attempt(self, output: str, ok: bool, seconds: float) -> None:
        """One attempt and its latency."""

    def retry(self, output: str) -> None:
        """A failed attempt that will be retried."""

    def parked(self, output: str) -> None:
        """A delivery parked."""

    def circuit(self, output: str, state: str, opened: bool) -> None:
        """The output's circuit breaker changed to ``state`` (``opened``: from closed)."""

    def queue(self, output: str, pending: int, parked: int, age_s: float, paused: bool) -> None:
        """The state of an output's queue."""

    def forget(self, output: str) -> None:
        """An output removed."""


class _NoMetrics:
    def attempt(self, output: str, ok: bool, seconds: float) -> None:
        pass

    def retry(self, output: str) -> None:
        pass

    def parked(self, output: str) -> None:
        pass

    def circuit(self, output: str, state: str, opened: bool) -> None:
        pass

    def queue(self, output: str, pending: int, parked: int, age_s: float, paused: bool) -> None:
        pass

    def forget(self, output: str) -> None:
        pass


class AckBatcher:
    """Removes accepted deliveries from the outbox in groups: one transaction (one fsync)
    for every delivery accepted within ``delay_s`` of the first, or ``max_ids`` at once.

    :meth:`add` returns the future of the group's commit: ``True`` once the deliveries are
    gone, ``False`` if the commit failed (they stay pending and will be sent again). A crash
    before the commit also leaves them pending, to be resent after the restart with the
    same ids: at least once, never lost.
    """

    def __init__(self, engine: DeliveryEngine, delay_s: float, max_ids: int) -> None:
        self._engine = engine
        self._delay_s = delay_s
        self._max = max(1, max_ids)
        self._ids: list[str] = []
        self._future: asyncio.Future[bool] | None = None
        self._ready = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        """Start the task that commits the groups."""
        self._task = asyncio.create_task(self._run(), name="patchbay-acks")

    def add(self, delivery_id: str) -> asyncio.Future[bool]:
        """Queue the removal of an accepted delivery; the future of its group's commit."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        self._ids.append(delivery_id)
        self._ready.set()
        if len(self._ids) >= self._max:
            self._full.set()
        return self._future

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            if len(self._ids) < self._max and self._delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._delay_s)
            await self._flush()

    async def _flush(self, wait_for_room: bool = True) -> None:
        """Commit the group; on a full store, wait for room (``wait_for_room``) and commit
        it then: the deliveries stay held meanwhile, not sent again."""
        ids, future = self._ids, self._future
        self._ids, self._future = [], None
        self._ready.clear()
        self._full.clear()
        if not ids or future is None:
            return
        engine = self._engine
        try:
            while True:
                try:
                    await engine.db(engine.outbox.succeeded_many, ids, engine.deliverer)
                    break
                except StorageFull as exc:
                    engine.backoff.failed(exc)
                    if not wait_for_room:
                        raise
                    while (wait := engine.backoff.wait_s()) > 0:
                        await asyncio.sleep(min(wait, CLOCK_POLL_S))
        except asyncio.CancelledError:
            if not future.done():
                future.set_result(False)
            raise
        except Exception as exc:
            if not isinstance(exc, StorageFull):
                log.exception("delivery_ack_failed", deliveries=len(ids))
            if not future.done():
                future.set_result(False)
            return
        engine.backoff.succeeded()
        self.commits += 1
        if not future.done():
            future.set_result(True)

    async def close(self) -> None:
        """Stop the task and commit what is waiting."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._flush(wait_for_room=False)


@dataclass(slots=True)
class FailureTally:
    """An output's failed attempts and parked deliveries since the last summary."""

    failed: int = 0
    parked: int = 0
    last_error: str | None = None

    def take(self) -> FailureTally:
        """The counts so far, starting again from zero."""
        taken = FailureTally(self.failed, self.parked, self.last_error)
        self.failed, self.parked, self.last_error = 0, 0, None
        return taken


class OutputWorker:
    """Drains one output's queue with at most ``concurrency`` sends in flight.

    It keeps a page of due deliveries in memory (``_queue``) and excludes from every read
    the deliveries it holds: queued, in flight, or accepted and waiting for their group's
    acknowledgement (``_acking``). Its :class:`~patchbay.activate.breaker.CircuitBreaker`
    stops the sends while the endpoint fails: the deliveries failed by the outage wait, due
    at once, while one probe at a time tests the endpoint."""

    def __init__(self, engine: DeliveryEngine, name: str, output: Output | None = None) -> None:
        self.engine = engine
        self.name = name
        self.output = output
        self.wake = asyncio.Event()
        self._queue: deque[Delivery] = deque()
        #: When the lease of each queued delivery ends (ms).
        self._lease_ends: dict[str, int] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._acking: set[str] = set()
        self._more = True
        self._module: ModuleRecord | None = None
        self._module_stale = True
        self._sender: Sender | None = None
        self._sender_key: tuple[object, ...] | None = None
        #: The output's connections (read by :meth:`DeliveryEngine.refresh`).
        self.connections: tuple[Connection, ...] = ()
        self._secrets: tuple[object, tuple[str, ...]] = (None, ())
        self.breaker = CircuitBreaker(engine.config.breaker, engine.random)
        self._probes: dict[str, int] = {}  # delivery id -> its probe's number
        self.tally = FailureTally()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker's task."""
        self.task = asyncio.create_task(self._run(), name=f"patchbay-output-{self.name}")

    def kick(self) -> None:
        """There may be new due deliveries: read the outbox again."""
        self._more = True
        self.wake.set()

    def update(self, output: Output) -> None:
        """The output as just read (by :meth:`DeliveryEngine.refresh`); its module is read
        again at the next send."""
        resumed = self.output is not None and self.output.paused and not output.paused
        self.output = output
        self._module_stale = True
        if resumed:
            self.kick()

    async def stop(self) -> None:
        """Cancel the worker and its sends (they stay pending in the outbox)."""
        # Cancel until nothing is left: a dispatch running when the worker is cancelled may
        # still have started sends after the first look.
        while tasks := [
            t for t in (self.task, *self._inflight.values()) if t is not None and not t.done()
        ]:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1.0)
        self._queue.clear()
        self._lease_ends.clear()
        await self._close_sender()

    async def _run(self) -> None:
        engine = self.engine
        config = engine.config
        while True:
            try:
                timeout = await self._dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("output_worker_failed", output=self.name)
                self._more = True
                timeout = max(config.poll_s, 1.0)
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                if timeout > 0:
                    self._more = True  # retries come due, other processes change the outbox
            self.wake.clear()

    def _drop_expiring(self) -> None:
        """Forget the queued deliveries whose lease ends before a send started now would:
        read again, their leases are renewed (or they went to another deliverer)."""
        ends = self._lease_ends
        latest_start = self.engine.clock.now_ms() + self.engine.config.longest_send_ms
        while self._queue and ends.get(self._queue[0].id, 0) < latest_start:
            ends.pop(self._queue.popleft().id, None)
            self._more = True

    def _holding(self) -> list[str]:
        return [*(d.id for d in self._queue), *self._inflight, *self._acking]

    async def _dispatch(self) -> float:
        """Start the sends that are due; return how long to wait before looking again."""
        engine = self.engine
        config = engine.config
        poll = config.poll_s
        output = self.output
        if output is None or output.paused:
            return poll
        if (wait := engine.backoff.wait_s()) > 0:
            return min(wait, CLOCK_POLL_S)  # a full store: no send until the next attempt
        breaker = self.breaker
        was = breaker.state
        allowed = breaker.allowed(engine.clock.now_ms())
        if breaker.state is not was:  # the probe time came
            engine.metrics.circuit(self.name, breaker.state, False)
            log.debug("output_circuit_probing", output=self.name)
        if allowed == 0:  # open, or probing with the probe in flight
            return min(breaker.wait_s(engine.clock.now_ms()) or poll, CLOCK_POLL_S)
        if len(self._inflight) >= config.concurrency:
            return poll
        self._drop_expiring()
        if self._more and len(self._queue) < config.concurrency:
            # cleared first: a notify during the read sets it again
            self._more = False
            page = max(config.page, config.concurrency)
            now = engine.clock.now_ms()
            lease_ms = round(config.lease_s * 1000)
            found = await engine.db(
                engine.outbox.due,
                self.name,
                now,
                page,
                self._holding(),
                engine.deliverer,
                lease_ms,
            )
            self._queue.extend(found)
            self._lease_ends.update((d.id, now + lease_ms) for d in found)
            if len(found) >= page:
                self._more = True
        if not self._queue:
            return poll
        sender = await self._sender_for(output)
        if sender is None:
            return poll
        if self.output is None or self.output.paused:
            return poll
        while self._queue and len(self._inflight) < config.concurrency:
            delivery = self._queue.popleft()
            self._lease_ends.pop(delivery.id, None)
            self._inflight[delivery.id] = asyncio.create_task(self._deliver(sender, delivery))
            if allowed == 1:  # the breaker's one probe
                self._probes[delivery.id] = breaker.probe_started()
                return 0
        if len(self._inflight) < config.concurrency and (self._queue or self._more):
            return 0
        return poll

    async def _sender_for(self, output: Output) -> Sender | None:
        """The sender for where ``output`` sends: the one in use while that is unchanged
        (for a module: its target), else a new one (the old one closed)."""
        engine = self.engine
        config = engine.config
        key: tuple[object, ...]
        make: Callable[[], Sender]
        match output.destination:
            case ModuleDestination(module=name):
                if self._module_stale or self._module is None or self._module.name != name:
                    self._module = await engine.db(engine.modules.get_module, name)
                    self._module_stale = False
                if self._module is None:
                    log.warning("module_missing", output=self.name, module=name)
                    return None
                target = self._module.target
                key = ("module", target)
                make = partial(ModuleSender.to, target, config)
            case WebhookDestination(url=url):
                token = output.settings.get("token")
                key = ("webhook", url, token)
                make = partial(WebhookSender.to, url, token, config)
            case FileDestination(path=path):
                key = ("file", path)
                make = partial(FileSender, Path(path), config.outputs)
        if self._sender is not None and key == self._sender_key:
            return self._sender
        await self._close_sender()
        sender = make()
        self._sender, self._sender_key = sender, key
        return sender

    async def _close_sender(self) -> None:
        if self._sender is not None:
            old, self._sender = self._sender, None
            # let the sends still using it finish with it
            running = [t for t in self._inflight.values() if not t.done()]
            if running:
                await asyncio.wait(running)
            await old.close()

    async def _deliver(self, sender: Sender, delivery: Delivery) -> None:
        engine = self.engine
        try:
            started = engine.clock.monotonic()
            outcome = await sender.send(delivery, engine.clock.now_ms())
            engine.metrics.attempt(self.name, outcome.ok, engine.clock.monotonic() - started)
            await self._record(delivery, outcome)
        except asyncio.CancelledError:
            raise
        except StorageFull as exc:  # still pending: sent again once there is room
            engine.backoff.failed(exc)
            self.kick()
        except Exception:
            log.exception("delivery_failed", output=self.name, delivery=delivery.id)
        finally:
            self._inflight.pop(delivery.id, None)
            self.wake.set()

    def _acked(self, delivery_id: str, future: asyncio.Future[bool]) -> None:
        self._acking.discard(delivery_id)
        if future.cancelled() or not future.result():
            self.kick()  # still pending in the outbox: read (and send) it again

    async def _subscribed(self, subscription: Subscription, now_ms: int) -> Outcome:
        """Record an accepted subscription with the settings the module answered, keeping
        only its registered audience subscription settings; a failure to record it is a
        failed (retried) attempt."""
        module = self._module
        declared = {
            str(s.get("id")) for s in (module.audience_subscription_settings if module else [])
        }
        kept = {k: v for k, v in subscription.settings.items() if k in declared}
        dropped = sorted(k for k in subscription.settings if k not in declared)
        if dropped:
            log.warning(
                "subscription_settings_dropped",
                output=self.name,
                audience_id=subscription.audience_id,
                dropped=dropped,
                reason="not registered audience subscription settings",
            )
        engine = self.engine
        try:
            found = await engine.db(
                engine.audiences.subscribed, subscription.audience_id, self.name, kept, now_ms
            )
        except Exception as exc:  # the store's errors: the request is retried
            log.exception(
                "subscription_record_failed",
                output=self.name,
                audience_id=subscription.audience_id,
            )
            return Outcome(False, True, f"cannot record the subscription: {exc}")
        if not found:
            log.warning(
                "subscription_without_connection",
                output=self.name,
                audience_id=subscription.audience_id,
            )
        return Outcome(True)

    def _redacted(self, error: str) -> str:
        """``error`` without the values of the confidential settings of the output and its
        connections (found again when they or the module changed)."""
        output, module, connections = self.output, self._module, self.connections
        if output is None:
            return error
        if self._secrets[0] != (output, module, connections):
            module_output = isinstance(output.destination, ModuleDestination)
            registration = None
            if module_output and module is not None:
                with contextlib.suppress(FirehoseError):
                    registration = registration_of(module)
            if module_output and registration is None:
                # its module is gone (or unreadable): any value long enough to be a key
                # may be a secret (not "true" or "5": "HTTP 500" must stay readable)
                settings = [output.settings, *(c.settings for c in connections)]
                found = {v for s in settings for v in s.values() if len(v) >= _SECRET_LENGTH}
                values: tuple[str, ...] = tuple(sorted(found, key=len, reverse=True))
            else:
                values = confidential_values(output, registration, connections)
            self._secrets = ((output, module, connections), values)
        return redacted(error, self._secrets[1])

    async def _circuit_changed(self, transition: Transition | None, now_ms: int) -> None:
        """Count, log and record a change of the breaker's state."""
        if transition is None:
            return
        engine = self.engine
        opened = transition.old is BreakerState.CLOSED
        engine.metrics.circuit(self.name, transition.new, opened)
        if transition.new is BreakerState.CLOSED:
            since = transition.opened_ms
            log.info(
                "output_circuit_closed",
                output=self.name,
                open_for_s=None if since is None else round((now_ms - since) / 1000, 3),
            )
            await engine.db(engine.outputs.set_circuit, self.name, Circuit("closed", now_ms))
            self.kick()  # everything that waited is due
        elif opened:
            log.warning(
                "output_circuit_open",
                output=self.name,
                error=transition.error,
                probe_in_s=transition.retry_in_s,
            )
            circuit = Circuit("open", now_ms, transition.error)
            await engine.db(engine.outputs.set_circuit, self.name, circuit)
        else:
            log.debug("output_probe_failed", output=self.name, error=transition.error)

    async def _record(self, delivery: Delivery, outcome: Outcome) -> None:
        engine = self.engine
        now = engine.clock.now_ms()
        probe = self._probes.pop(delivery.id, None)
        if outcome.ok and outcome.subscription is not None:
            outcome = await self._subscribed(outcome.subscription, now)
        if outcome.ok:
            await self._circuit_changed(self.breaker.succeeded(probe), now)
            # held (excluded from reads) until its group's commit removes it
            self._acking.add(delivery.id)
            engine.acks.add(delivery.id).add_done_callback(partial(self._acked, delivery.id))
            if outcome.suspend:
                reason = "the partner answered suspend_subscription: true"
                await engine.db(engine.outputs.set_paused, self.name, True, reason, now)
                if self.output is not None:
                    self.output = msgspec.structs.replace(
                        self.output, paused=True, paused_reason=reason
                    )
                log.warning("output_suspended", output=self.name, reason=reason)
            return
        attempts = delivery.attempts + 1
        error = self._redacted(outcome.error or "failed")
        self.tally.failed += 1
        self.tally.last_error = error
        if not outcome.retryable:  # the endpoint answered: it works
            await self._circuit_changed(self.breaker.succeeded(probe), now)
        else:
            failed = self.breaker.failed(now, error, outcome.retry_after_s, probe)
            await self._circuit_changed(failed, now)
            if probe is None and self.breaker.state is not BreakerState.CLOSED:
                # Failed with the endpoint: it waits with the others, due when it works.
                await engine.db(
                    engine.outbox.retry_at, delivery.id, attempts, now, error, engine.deliverer
                )
                engine.backoff.succeeded()
                engine.metrics.retry(self.name)
                return
        at = next_attempt(
            engine.config.policy,
            attempts=attempts,
            since_ms=delivery.since_ms,
            now_ms=now,
            retryable=outcome.retryable,
            retry_after_s=outcome.retry_after_s,
            jitter=engine.random(),
        )
        if at is None:
            await engine.db(engine.outbox.park, delivery.id, attempts, error, now, engine.deliverer)
            engine.backoff.succeeded()
            engine.metrics.parked(self.name)
            self.tally.parked += 1
            log.debug("delivery_parked", output=self.name, delivery=delivery.id, error=error)
        else:
            await engine.db(
                engine.outbox.retry_at, delivery.id, attempts, at, error, engine.deliverer
            )
            engine.backoff.succeeded()
            engine.metrics.retry(self.name)
            log.debug(
                "delivery_retrying",
                output=self.name,
                delivery=delivery.id,
                attempts=attempts,
                retry_in_s=(at - now) / 1000,
                error=error,
            )


#: The deliverer of an embedded backend: its one ``serve`` (the data directory's lock).
EMBEDDED_DELIVERER = "embedded"


def deliverer_id(backend_name: str) -> str:
    """Who leases deliveries: on a shared outbox, a name of this process's own
    (``host-pid-random``); on an embedded backend, always :data:`EMBEDDED_DELIVERER`, so
    that a restarted ``serve`` resends at once what it held when it stopped."""
    if backend_name in EMBEDDED_BACKENDS:
        return EMBEDDED_DELIVERER
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class DeliveryEngine:
    """Runs a worker per output; :meth:`notify` wakes the workers of new deliveries."""

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        config: EngineConfig | None = None,
        metrics: DeliveryMetricsLike | None = None,
        random_: Callable[[], float] = random.random,
        backoff: StorageBackoff | None = None,
        deliverer: str | None = None,
    ) -> None:
        #: Whose leases this engine's are (:func:`deliverer_id` by default).
        self.deliverer = deliverer or deliverer_id(backend.name)
        self.outputs = backend.outputs
        self.outbox = backend.outbox
        self.modules = backend.modules
        self.audiences = backend.audiences
        self.clock = clock
        self.config = config or EngineConfig()
        if self.config.lease_s * 1000 <= self.config.longest_send_ms:
            raise ValueError("the lease must be longer than a send can take (its timeouts)")
        self.metrics: DeliveryMetricsLike = metrics or _NoMetrics()
        self.random = random_
        #: Every worker's back-off from a full store.
        self.backoff = backoff or StorageBackoff("delivery", clock)
        self.workers: dict[str, OutputWorker] = {}
        self._executor = ThreadPoolExecutor(4, thread_name_prefix="patchbay-outbox")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._acks: AckBatcher | None = None
        self._summarized = 0.0

    @property
    def acks(self) -> AckBatcher:
        """The group commit of successes (created by :meth:`start`)."""
        if self._acks is None:
            self._acks = AckBatcher(self, self.config.ack_delay_s, self.config.ack_max)
            self._acks.start()
        return self._acks

    async def db(self, function: Callable[..., T], *args: Any) -> T:
        """Run an outbox call on the engine's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(function, *args))

    async def start(self) -> None:
        """Start the workers of the current outputs and the task that follows changes."""
        self._loop = asyncio.get_running_loop()
        _ = self.acks
        now = self.clock.now_ms()
        for name, circuit in (await self.db(self.outputs.circuits)).items():
            if circuit.state != BreakerState.CLOSED:  # every breaker starts closed
                await self.db(self.outputs.set_circuit, name, Circuit("closed", now))
        self._summarized = self.clock.monotonic()
        await self.refresh()
        self._supervisor = asyncio.create_task(self._supervise(), name="patchbay-deliveries")

    async def stop(self) -> None:
        """Stop every worker (pending deliveries stay in the outbox)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for worker in list(self.workers.values()):
            await worker.stop()
        self.workers.clear()
        if self._acks is not None:  # commit the successes still waiting
            await self._acks.close()
            self._acks = None
        self._loop = None
        self._executor.shutdown(wait=True)

    def notify(self, outputs: set[str]) -> None:
        """Wake the workers of ``outputs`` (callable from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake, outputs)

    def _wake(self, outputs: set[str]) -> None:
        for name in outputs:
            worker = self.workers.get(name)
            if worker is not None:
                worker.kick()

    async def refresh(self) -> None:
        """Start and stop workers to match the outputs, and update the queue gauges."""
        outputs = {o.name: o for o in await self.db(self.outputs.list_outputs)}
        connections: dict[str, list[Connection]] = {}
        for connection in await self.db(self.outputs.list_connections):
            connections.setdefault(connection.output, []).append(connection)
        for name, output in outputs.items():
            if name not in self.workers:
                worker = self.workers[name] = OutputWorker(self, name, output)
                worker.start()
            else:
                self.workers[name].update(output)
            self.workers[name].connections = tuple(connections.get(name, ()))
        for name in [n for n in self.workers if n not in outputs]:
            await self.workers.pop(name).stop()
            self.metrics.forget(name)
        stats = await self.db(self.outbox.stats)
        now = self.clock.now_ms()
        for name, output in outputs.items():
            s = stats.get(name)
            pending = s.pending if s else 0
            parked = s.parked if s else 0
            oldest = s.oldest_pending_ms if s else None
            age = 0.0 if oldest is None else max(0.0, (now - oldest) / 1000)
            self.metrics.queue(name, pending, parked, age, output.paused)

    def summarize(self) -> None:
        """Log one ``output_failures`` line per output that failed since the last one (its
        counts and last error): failures are summed up, never logged one by one at info."""
        now = self.clock.monotonic()
        interval, self._summarized = now - self._summarized, now
        for name, worker in sorted(self.workers.items()):
            tally = worker.tally.take()
            if tally.failed or tally.parked:
                log.warning(
                    "output_failures",
                    output=name,
                    interval_s=round(interval, 1),
                    failed=tally.failed,
                    parked=tally.parked,
                    last_error=tally.last_error,
                    circuit=worker.breaker.state,
                )

    async def _supervise(self) -> None:
        summary_s = self.config.summary_s
        while True:
            await asyncio.sleep(self.config.refresh_s)
            try:
                await self.refresh()
                if summary_s > 0 and self.clock.monotonic() - self._summarized >= summary_s:
                    self.summarize()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery_refresh_failed")
