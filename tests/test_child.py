"""Child processes (:mod:`patchbay.child`): messages both ways, metrics shown in the parent
and kept across a restart, a new child when one exits on its own, and a clean stop."""

from __future__ import annotations

import json
import os
import queue

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric

from patchbay.child import ChildMetrics, ChildProcess, Message, ParentLink
from tests.activate.test_engine_support import wait_for


def echo(link: ParentLink, greeting: str) -> None:
    """A child: counts the parent's messages, answers each, exits on ``("exit",)``."""
    counted = Counter("echoed", "Messages echoed.", registry=link.registry)
    level = Gauge("level", "The last number sent.", registry=link.registry)
    inbox: queue.Queue[Message] = queue.Queue()
    link.listen(inbox.put, on_stop=lambda: inbox.put(("stopped",)))
    link.send(("hello", greeting, os.getpid()))
    while True:
        message = inbox.get()
        if message[0] in ("stopped", "exit"):
            return
        counted.inc()
        level.set(message[1])
        link.send(("echo", message[1]))


def sample(registry: CollectorRegistry, line: str) -> float | None:
    for text in generate_latest(registry).decode().splitlines():
        if text.startswith(line + " "):
            return float(text.rsplit(" ", 1)[1])
    return None


def test_a_child_talks_reports_metrics_and_is_replaced_when_it_exits() -> None:
    registry = CollectorRegistry()
    received: queue.Queue[Message] = queue.Queue()
    child = ChildProcess("echo", echo, ("hi",), registry, received.put, stop_timeout_s=10)
    child.start()
    try:
        hello = received.get(timeout=30)
        assert hello[:2] == ("hello", "hi") and hello[2] == child.pid
        for n in (1, 2):
            child.send(("number", n))
            assert received.get(timeout=10) == ("echo", n)
        wait_for(lambda: sample(registry, "echoed_total") == 2.0, 10, "the child's metrics")
        assert sample(registry, "level") == 2.0

        first = child.pid
        child.send(("exit",))  # exits on its own: a new child starts
        hello = received.get(timeout=30)
        assert hello[0] == "hello" and child.pid != first and child.restarts == 1
        assert sample(registry, "echoed_total") == 2.0  # kept across the restart
        child.send(("number", 7))
        assert received.get(timeout=10) == ("echo", 7)
        wait_for(lambda: sample(registry, "echoed_total") == 3.0, 10, "the new child's metrics")
        assert sample(registry, "level") == 7.0
    finally:
        child.stop()
    assert child.restarts == 1  # a stop is not an exit on its own


def counter(name: str, **values: float) -> Metric:
    family = Metric(name, "doc", "counter")
    for label, value in values.items():
        family.add_sample(f"{name}_total", {"output": label}, value)
        family.add_sample(f"{name}_created", {"output": label}, 1.0)
    return family


def gauge(name: str, value: float) -> Metric:
    family = Metric(name, "doc", "gauge")
    family.add_sample(name, {}, value)
    return family


def values(metrics: ChildMetrics) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("output", "")): s.value
        for family in metrics.collect()
        for s in family.samples
    }


def test_child_metrics_add_what_children_gone_counted() -> None:
    metrics = ChildMetrics()
    metrics.families = [counter("sent", a=3, b=1), gauge("queue", 5)]
    metrics.bank()
    # before the new child reports, the last totals, without the gauge
    assert values(metrics) == {("sent_total", "a"): 3, ("sent_total", "b"): 1}
    metrics.families = [counter("sent", a=2, c=4), gauge("queue", 1)]
    assert values(metrics) == {
        ("sent_total", "a"): 5,
        ("sent_total", "b"): 1,
        ("sent_total", "c"): 4,
        ("queue", ""): 1,
    }
    metrics.bank()
    metrics.families = [counter("sent", a=1)]
    assert values(metrics)[("sent_total", "a")] == 6


def fail(link: ParentLink, message: str) -> None:
    """A child whose work raises, in a thread of its own and then in its main thread."""
    import threading

    from patchbay.child import child_setup

    child_setup("info")
    link.send(("started",))
    worker = threading.Thread(target=lambda: 1 / 0, name="worker")
    worker.start()
    worker.join()
    raise RuntimeError(message)


def test_a_failing_child_logs_json_lines_only(capfd: pytest.CaptureFixture[str]) -> None:
    # Nothing the child writes is plain text: not multiprocessing's traceback of the
    # exception its work raised, nor Python's of a thread's uncaught exception.
    received: queue.Queue[Message] = queue.Queue()
    child = ChildProcess("fail", fail, ("it broke",), None, received.put, stop_timeout_s=10)
    capfd.readouterr()
    child.start()
    try:
        assert received.get(timeout=30) == ("started",)
        wait_for(lambda: child.restarts >= 1, 30, "a new child after the failure")
    finally:
        child.stop()
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    thread = next(line for line in lines if line["event"] == "uncaught_exception")
    assert thread["thread"] == "worker" and "ZeroDivisionError" in thread["exception"]
    failed = next(line for line in lines if line["event"] == "child_process_failed")
    assert failed["process"] == "fail" and "RuntimeError: it broke" in failed["exception"]
