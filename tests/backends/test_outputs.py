"""The contract of :class:`~patchbay.backends.abstract.OutputStore`, on every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from patchbay.backends.abstract import Backend, OutputStore
from patchbay.backends.records import (
    Circuit,
    Connection,
    DuplicateName,
    FileDestination,
    Filters,
    ModuleDestination,
    Output,
    WebhookDestination,
)
from patchbay.backends.sqlite import open_sqlite
from patchbay.backends.sqlite.outbox import DELIVERIES_FILE
from tests.deployments import Stores

NOW = 1_700_000_000_000


@pytest.fixture
def outputs(backend: Backend) -> OutputStore:
    return backend.outputs


def webhook(name: str = "hook", **changes: object) -> Output:
    output = Output(name, WebhookDestination("http://x"), NOW, NOW, settings={"token": "hunter2"})
    return msgspec.structs.replace(output, **changes)


def test_empty_store(outputs: OutputStore) -> None:
    """A new store has no output and no connection."""
    assert outputs.list_outputs() == []
    assert outputs.get_output("hook") is None
    assert outputs.list_connections() == []
    assert not outputs.remove_connection("c1")
    assert not outputs.set_paused("hook", True, None, NOW)


def test_outputs_add_get_list_by_name(outputs: OutputStore) -> None:
    """Outputs of every kind come back as stored, listed by name; ``repr`` hides their
    settings."""
    hook = webhook("m-hook")
    file = Output("a-file", FileDestination("/tmp/out.jsonl"), NOW, NOW + 1)
    module = Output("z-module", ModuleDestination("demo"), NOW, NOW, settings={"apiKey": "k"})
    for output in (hook, file, module):
        outputs.add_output(output)
    assert outputs.get_output("m-hook") == hook
    assert outputs.get_output("missing") is None
    assert outputs.list_outputs() == [file, hook, module]
    assert "hunter2" not in repr(hook)


def test_duplicate_output_name(outputs: OutputStore) -> None:
    """An output with a taken name raises ``DuplicateName`` and changes nothing."""
    outputs.add_output(webhook())
    with pytest.raises(DuplicateName):
        outputs.add_output(webhook(destination=FileDestination("/tmp/other.jsonl")))
    assert outputs.list_outputs() == [webhook()]


def test_pause_and_resume(outputs: OutputStore) -> None:
    """Pausing records the reason and the time; resuming clears the reason; only the named
    output changes; a missing output says so."""
    outputs.add_output(webhook())
    outputs.add_output(webhook("other"))
    assert outputs.set_paused("hook", True, "because", NOW + 1)
    assert outputs.get_output("hook") == webhook(
        paused=True, paused_reason="because", updated_at_ms=NOW + 1
    )
    assert outputs.set_paused("hook", False, "ignored", NOW + 2)
    assert outputs.get_output("hook") == webhook(updated_at_ms=NOW + 2)
    assert outputs.get_output("other") == webhook("other")
    assert not outputs.set_paused("missing", True, None, NOW)


def test_circuits_recorded_per_output_last_one_wins(outputs: OutputStore) -> None:
    """The engine records each breaker's state; the latest record of an output is kept."""
    assert outputs.circuits() == {}
    outputs.set_circuit("hook", Circuit("open", NOW, "HTTP 503"))
    outputs.set_circuit("other", Circuit("closed", NOW + 1))
    outputs.set_circuit("hook", Circuit("probing", NOW + 2, "HTTP 503"))
    assert outputs.circuits() == {
        "hook": Circuit("probing", NOW + 2, "HTTP 503"),
        "other": Circuit("closed", NOW + 1),
    }


def test_connections_add_list_remove(outputs: OutputStore) -> None:
    """Connections come back with their settings and filters, listed by input then output;
    removing says whether one existed."""
    filters = Filters(environment="production", event_types=["custom_event"], sample_percent=50)
    c1 = Connection("c1", "input-b", "hook", NOW, {"a": "1"}, filters)
    c2 = Connection("c2", "input-a", "z-out", NOW)
    c3 = Connection("c3", "input-b", "a-out", NOW + 5)
    c4 = Connection("c4", "input-a", "hook", NOW)
    for connection in (c1, c2, c3, c4):
        outputs.add_connection(connection)
    assert outputs.list_connections() == [c4, c2, c3, c1]
    assert outputs.remove_connection("c1")
    assert not outputs.remove_connection("c1")
    assert outputs.list_connections() == [c4, c2, c3]


def test_duplicate_connection(outputs: OutputStore) -> None:
    """Connecting an input to an output twice, or reusing a connection id, raises
    ``DuplicateName`` and changes nothing; once removed, the pair may connect again."""
    first = Connection("c1", "input-1", "hook", NOW)
    outputs.add_connection(first)
    with pytest.raises(DuplicateName):
        outputs.add_connection(Connection("c2", "input-1", "hook", NOW))
    with pytest.raises(DuplicateName):
        outputs.add_connection(Connection("c1", "input-2", "other", NOW))
    assert outputs.list_connections() == [first]
    outputs.remove_connection("c1")
    again = Connection("c2", "input-1", "hook", NOW)
    outputs.add_connection(again)
    assert outputs.list_connections() == [again]


@pytest.mark.persists
def test_outputs_and_connections_persist_across_reopen(stores: Stores, backend: Backend) -> None:
    """Outputs, their paused state and connections are there after reopening."""
    filters = Filters(event_names_keep=["a"], consent_purposes=["marketing"])
    connection = Connection("c1", "input-1", "hook", NOW, {"k": "v"}, filters)
    backend.outputs.add_output(webhook())
    backend.outputs.set_paused("hook", True, "because", NOW + 1)
    backend.outputs.add_connection(connection)
    outputs = stores.reopen(backend).outputs
    assert outputs.list_outputs() == [
        webhook(paused=True, paused_reason="because", updated_at_ms=NOW + 1)
    ]
    assert outputs.list_connections() == [connection]


def test_sqlite_keeps_the_destination_in_its_columns(tmp_path: Path) -> None:
    """The destination is stored in the ``kind``, ``module``, ``url`` and ``path`` columns,
    as before it was a type (existing data directories read the same)."""
    backend = open_sqlite(tmp_path)
    try:
        backend.outputs.add_output(webhook("hook"))
        backend.outputs.add_output(Output("lines", FileDestination("/tmp/o.jsonl"), NOW, NOW))
        backend.outputs.add_output(Output("mod", ModuleDestination("demo"), NOW, NOW))
    finally:
        backend.close()
    with sqlite3.connect(tmp_path / DELIVERIES_FILE) as db:
        rows = db.execute("SELECT name, kind, module, url, path FROM outputs ORDER BY name")
        assert rows.fetchall() == [
            ("hook", "webhook", None, "http://x", None),
            ("lines", "file", None, None, "/tmp/o.jsonl"),
            ("mod", "module", "demo", None, None),
        ]
    db.close()
    backend = open_sqlite(tmp_path)
    try:
        assert [o.destination for o in backend.outputs.list_outputs()] == [
            WebhookDestination("http://x"),
            FileDestination("/tmp/o.jsonl"),
            ModuleDestination("demo"),
        ]
    finally:
        backend.close()
