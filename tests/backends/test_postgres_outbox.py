"""The PostgreSQL outbox shared by two processes (two pools on one database): what its
module docstring says is serialised; and the secrets it stores, sealed."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from patchbay.backends.postgres import PostgresDatabase
from patchbay.backends.postgres.outbox import MIGRATIONS, PostgresOutbox
from patchbay.backends.sqlite.outbox import DELIVERY_COLUMNS, delivery_row
from patchbay.secretbox import KEY_FILE, PAYLOAD_PREFIX, SecretBox, SecretsError
from tests.backends import test_sealed as sealed
from tests.backends.helpers import at_once
from tests.backends.test_outbox import NOW, delivery, ids

Pair = tuple[PostgresDatabase, PostgresDatabase]


def outboxes(pair: Pair, tmp_path: Path) -> tuple[PostgresOutbox, PostgresOutbox]:
    """The outbox as two processes with the same key file open it."""
    box = SecretBox(tmp_path / KEY_FILE)
    return PostgresOutbox(pair[0], box), PostgresOutbox(pair[1], box)


def test_due_skips_what_another_process_is_committing(two_databases: Pair, tmp_path: Path) -> None:
    """A delivery whose success another process is committing is not handed out again
    (nor does ``due`` wait for it); once rolled back, it is due again."""
    first, second = outboxes(two_databases, tmp_path)
    first.enqueue([delivery(i) for i in range(3)])
    database = two_databases[0]
    try:
        with database.transaction() as conn:  # a succeeded_many, not committed yet
            conn.execute("DELETE FROM deliveries WHERE id = 'd1'")
            assert ids(second.due("hook", NOW, 10)) == ["d0", "d2"]
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert ids(second.due("hook", NOW, 10)) == ["d0", "d1", "d2"]


def test_enqueues_of_the_same_ids_in_any_order_add_each_once(
    two_databases: Pair, tmp_path: Path
) -> None:
    """Two processes enqueueing the same deliveries at once, in opposite orders, add each
    once and never deadlock."""
    first, second = outboxes(two_databases, tmp_path)
    size = 200
    for start in range(0, 10 * size, size):
        batch = [delivery(i) for i in range(start, start + size)]
        added = at_once(partial(first.enqueue, batch), partial(second.enqueue, batch[::-1]))
        assert sum(added) == size
    assert len(first.due("hook", NOW, 100_000)) == 10 * size


def test_successes_and_due_from_two_processes(two_databases: Pair, tmp_path: Path) -> None:
    """Two processes acknowledging overlapping deliveries in opposite orders while asking
    for more never deadlock, and what they acknowledged is gone."""
    first, second = outboxes(two_databases, tmp_path)
    first.enqueue([delivery(i) for i in range(2000)])
    for _ in range(10):
        due = ids(first.due("hook", NOW, 200))
        at_once(
            partial(first.succeeded_many, due),
            partial(second.succeeded_many, due[::-1]),
            partial(second.due, "hook", NOW, 200),
        )
        assert not set(due) & set(ids(first.due("hook", NOW, 2000)))
    assert len(first.due("hook", NOW, 2000)) == 0


def test_secrets_and_payloads_are_sealed_in_the_database(
    two_databases: Pair, tmp_path: Path
) -> None:
    """Settings and payloads are stored sealed (no secret in any column) and read back;
    a payload copied to another delivery's row does not open."""
    outbox, _ = outboxes(two_databases, tmp_path)
    outbox.add_output(sealed.output())
    outbox.add_connection(sealed.connection())
    outbox.enqueue([sealed.delivery("d1"), sealed.delivery("d2")])
    with two_databases[0].transaction() as conn:
        stored = [
            *conn.execute("SELECT settings FROM outputs").fetchall(),
            *conn.execute("SELECT settings FROM connections").fetchall(),
            *conn.execute("SELECT payload FROM deliveries").fetchall(),
        ]
    raw = b"".join(v.encode() if isinstance(v, str) else bytes(v) for (v,) in stored)
    for secret in (sealed.WEBHOOK_TOKEN, sealed.CONNECTION_SECRET, sealed.QUEUED_SECRET):
        assert secret.encode() not in raw
    assert all(bytes(v).startswith(PAYLOAD_PREFIX) for (v,) in stored[2:])
    assert outbox.get_output("hook") == sealed.output()
    assert outbox.list_connections() == [sealed.connection()]
    assert outbox.due("hook", NOW, 10) == [sealed.delivery("d1"), sealed.delivery("d2")]

    with two_databases[0].transaction() as conn:
        conn.execute(
            "UPDATE deliveries SET payload = (SELECT payload FROM deliveries WHERE id = 'd1')"
            " WHERE id = 'd2'"
        )
    assert outbox.get_delivery("d1") == sealed.delivery("d1")
    with pytest.raises(SecretsError, match="cannot be decrypted"):
        outbox.get_delivery("d2")


def test_two_processes_leasing_at_once_get_disjoint_deliveries(
    two_databases: Pair, tmp_path: Path
) -> None:
    """Two deliverers (two pools) leasing at the same moment, again and again, never get
    the same delivery, and together get every one."""
    first, second = outboxes(two_databases, tmp_path)
    first.enqueue([delivery(i) for i in range(400)])
    held: dict[str, list[str]] = {"first": [], "second": []}  # excluded: as an engine does
    for _ in range(25):
        got = at_once(
            partial(first.due, "hook", NOW, 10, held["first"], "first", 60_000),
            partial(second.due, "hook", NOW, 10, held["second"], "second", 60_000),
        )
        assert not set(ids(got[0])) & set(ids(got[1]))
        held["first"] += ids(got[0])
        held["second"] += ids(got[1])
    handed = held["first"] + held["second"]
    assert sorted(handed) == sorted(f"d{i}" for i in range(400))


def test_an_outbox_of_the_first_version_gets_the_lease_columns(
    two_databases: Pair, tmp_path: Path
) -> None:
    """A database whose outbox is at migration 1 (no leases) is migrated when opened: its
    pending deliveries stay, and can be leased."""
    database = two_databases[0]
    database.migrate("outbox", MIGRATIONS[:1])
    box = SecretBox(tmp_path / KEY_FILE)
    with database.transaction() as conn:
        conn.execute(
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            delivery_row(delivery(1), box.seal_payload(delivery(1).payload, "d1")),
        )
    outbox = PostgresOutbox(database, box)
    assert ids(outbox.due("hook", NOW, 10, owner="a", lease_ms=60_000)) == ["d1"]
    assert outbox.due("hook", NOW, 10, owner="b", lease_ms=60_000) == []
