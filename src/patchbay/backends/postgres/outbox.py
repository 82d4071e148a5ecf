"""Outputs, connections and the delivery outbox on PostgreSQL (component ``outbox``).

One class serves as both the :class:`~patchbay.backends.abstract.OutputStore` and the
:class:`~patchbay.backends.abstract.Outbox`, with the tables and columns of the embedded
``deliveries.db`` (and its row helpers). The settings of outputs and connections are stored
sealed (:meth:`~patchbay.secretbox.SecretBox.seal`), every delivery's payload too
(:meth:`~patchbay.secretbox.SecretBox.seal_payload`, bound to the delivery's id: a payload
copied to another row does not open); there is no plain text of an earlier version to
migrate. A delivery is keyed by its message id, so enqueueing the same batch twice adds
nothing.

What is serialised, and why (several processes share these tables):

* Names and ids are unique constraints: :meth:`~PostgresOutbox.add_output` and
  :meth:`~PostgresOutbox.add_connection` insert ``ON CONFLICT DO NOTHING`` and raise
  :class:`~patchbay.backends.records.DuplicateName` when nothing was inserted, whoever won.
* :meth:`~PostgresOutbox.enqueue` is one ``INSERT ... ON CONFLICT (id) DO NOTHING`` over
  arrays: processes enqueueing the same ids at once add each once (the second waits for the
  first's transaction, then skips). Rows go in sorted by id, so two enqueues of overlapping
  ids take their locks in the same order and never deadlock; ``succeeded_many``'s
  ``= ANY`` look-up locks in index order too.
* :meth:`~PostgresOutbox.due` is a lease, in one statement: ``UPDATE ... SET leased_by,
  leased_until_ms WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``. The rows
  another transaction has locked (being leased, acknowledged, rescheduled) are skipped, and
  a row whose lease another deliverer committed after this statement's snapshot is checked
  again once locked (read committed re-reads it): two deliverers never get the same
  delivery while a lease holds, and one whose lease expired is handed to the next that
  asks. :meth:`~PostgresOutbox.succeeded_many`, :meth:`~PostgresOutbox.retry_at` and
  :meth:`~PostgresOutbox.park` end the lease, and change nothing of a delivery another
  owner holds (its lease moved on: the other's outcome stands).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from patchbay.backends.postgres.db import PostgresDatabase
from patchbay.backends.records import (
    Circuit,
    Connection,
    Delivery,
    DuplicateName,
    Output,
    QueueStats,
)
from patchbay.backends.sqlite.outbox import (
    CONNECTION_COLUMNS,
    DELIVERY_COLUMNS,
    OUTPUT_COLUMNS,
    connection_from_row,
    delivery_from_row,
    delivery_row,
    destination_columns,
    open_settings,
    output_from_row,
    seal_settings,
)
from patchbay.secretbox import SecretBox

MIGRATIONS = [
    """
    CREATE TABLE outputs (
        name TEXT COLLATE "C" PRIMARY KEY,
        kind TEXT NOT NULL,
        module TEXT,
        url TEXT,
        path TEXT,
        settings TEXT NOT NULL,
        paused BOOLEAN NOT NULL DEFAULT FALSE,
        paused_reason TEXT,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE TABLE connections (
        id TEXT PRIMARY KEY,
        input_id TEXT COLLATE "C" NOT NULL,
        output TEXT COLLATE "C" NOT NULL,
        settings TEXT NOT NULL,
        filters TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        UNIQUE (input_id, output)
    );
    CREATE TABLE deliveries (
        id TEXT COLLATE "C" PRIMARY KEY,
        output TEXT NOT NULL,
        connection_id TEXT NOT NULL,
        batch_offset BIGINT NOT NULL,
        payload BYTEA NOT NULL,
        created_at_ms BIGINT NOT NULL,
        since_ms BIGINT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'parked')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        parked_at_ms BIGINT
    );
    CREATE INDEX deliveries_due ON deliveries (output, next_attempt_ms, created_at_ms, id)
        WHERE state = 'pending';
    CREATE INDEX deliveries_parked ON deliveries (parked_at_ms, created_at_ms, id)
        WHERE state = 'parked';
    CREATE TABLE output_circuits (
        output TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        since_ms BIGINT NOT NULL,
        error TEXT
    );
    """,
    # 2: leases, so that several deliverers share the outbox
    """
    ALTER TABLE deliveries ADD COLUMN leased_by TEXT, ADD COLUMN leased_until_ms BIGINT;
    """,
]
#: Acknowledging needs no other owner to hold the delivery (parameters: owner, owner).
_HOLDER = " AND (%s::text IS NULL OR leased_by IS NULL OR leased_by = %s)"
#: A delivery's lease ended.
_UNLEASED = "leased_by = NULL, leased_until_ms = NULL"

#: The ``unnest`` of a delivery's columns (in :data:`DELIVERY_COLUMNS` order).
_DELIVERY_ARRAYS = (
    "%b::text[], %b::text[], %b::text[], %b::bigint[], %b::bytea[], %b::bigint[],"
    " %b::bigint[], %b::bigint[], %b::text[], %b::integer[], %b::text[], %b::bigint[]"
)


class PostgresOutbox:
    """Outputs, connections, circuits and deliveries in PostgreSQL."""

    def __init__(self, db: PostgresDatabase, box: SecretBox) -> None:
        self._db = db
        self._box = box
        db.migrate("outbox", MIGRATIONS)

    def _delivery(self, row: Sequence[object]) -> Delivery:
        stored = row[4]
        assert isinstance(stored, bytes)
        return delivery_from_row(row, self._box.open_payload(stored, str(row[0])))

    def _write(self, sql: str, params: Sequence[object]) -> int:
        """Run one statement in its transaction; how many rows it changed."""
        with self._db.transaction() as conn:
            return conn.execute(sql, params).rowcount

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._db.transaction() as conn:
            return conn.execute(sql, params).fetchall()

    # -- outputs -------------------------------------------------------------------------

    def add_output(self, output: Output) -> None:
        """Create ``output``; raises :class:`DuplicateName` if the name is taken."""
        added = self._write(
            f"INSERT INTO outputs ({OUTPUT_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                output.name,
                *destination_columns(output.destination),
                seal_settings(self._box, output.settings),
                output.paused,
                output.paused_reason,
                output.created_at_ms,
                output.updated_at_ms,
            ),
        )
        if not added:
            raise DuplicateName(f"an output named {output.name!r} already exists")

    def get_output(self, name: str) -> Output | None:
        """The output with this name."""
        rows = self._read(f"SELECT {OUTPUT_COLUMNS} FROM outputs WHERE name = %s", (name,))
        return self._output(rows[0]) if rows else None

    def list_outputs(self) -> list[Output]:
        """Every output, by name (names, ids and inputs sort by bytes (``COLLATE "C"``),
        as in SQLite)."""
        rows = self._read(f"SELECT {OUTPUT_COLUMNS} FROM outputs ORDER BY name")
        return [self._output(r) for r in rows]

    def _output(self, row: Sequence[object]) -> Output:
        return output_from_row(row, open_settings(self._box, row[5]))

    def set_paused(self, name: str, paused: bool, reason: str | None, now_ms: int) -> bool:
        """Pause or resume an output; whether it exists."""
        changed = self._write(
            "UPDATE outputs SET paused = %s, paused_reason = %s, updated_at_ms = %s"
            " WHERE name = %s",
            (paused, reason if paused else None, now_ms, name),
        )
        return changed > 0

    def set_circuit(self, name: str, circuit: Circuit) -> None:
        """Record the state of an output's circuit breaker (the last one recorded wins)."""
        self._write(
            "INSERT INTO output_circuits (output, state, since_ms, error)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (output) DO UPDATE SET"
            " state = EXCLUDED.state, since_ms = EXCLUDED.since_ms, error = EXCLUDED.error",
            (name, circuit.state, circuit.since_ms, circuit.error),
        )

    def circuits(self) -> dict[str, Circuit]:
        """The recorded circuit breaker of every output that has one."""
        rows = self._read("SELECT output, state, since_ms, error FROM output_circuits")
        return {
            str(o): Circuit(str(s), int(str(t)), None if e is None else str(e))
            for o, s, t, e in rows
        }

    # -- connections ---------------------------------------------------------------------

    def add_connection(self, connection: Connection) -> None:
        """Create ``connection``; raises :class:`DuplicateName` if the input is already
        connected to the output (or the id is taken)."""
        added = self._write(
            f"INSERT INTO connections ({CONNECTION_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                connection.id,
                connection.input_id,
                connection.output,
                seal_settings(self._box, connection.settings),
                msgspec.json.encode(connection.filters).decode(),
                connection.created_at_ms,
            ),
        )
        if not added:
            raise DuplicateName(f"the input is already connected to {connection.output!r}")

    def list_connections(self) -> list[Connection]:
        """Every connection, by input then output."""
        rows = self._read(f"SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY input_id, output")
        return [connection_from_row(r, open_settings(self._box, r[3])) for r in rows]

    def remove_connection(self, connection_id: str) -> bool:
        """Remove a connection; whether it existed (its pending deliveries stay queued)."""
        return self._write("DELETE FROM connections WHERE id = %s", (connection_id,)) > 0

    # -- deliveries ----------------------------------------------------------------------

    def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        """Add the deliveries whose id is new (the first of an id in ``deliveries`` wins),
        in one statement; return how many."""
        if not deliveries:
            return 0
        # sorted by id (stably): the lock order of every enqueue (see the module docstring)
        rows = [
            delivery_row(d, self._box.seal_payload(d.payload, d.id))
            for d in sorted(deliveries, key=lambda d: d.id)
        ]
        columns = [list(column) for column in zip(*rows, strict=True)]
        return self._write(
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS})"
            f" SELECT * FROM unnest({_DELIVERY_ARRAYS}) ON CONFLICT (id) DO NOTHING",
            columns,
        )

    def due(
        self,
        output: str,
        now_ms: int,
        limit: int,
        exclude: Sequence[str] = (),
        owner: str | None = None,
        lease_ms: int = 0,
    ) -> list[Delivery]:
        """Pending deliveries of ``output`` due at ``now_ms``, oldest due first (then oldest
        created, then by id, as the embedded outbox's index orders them), leaving out
        the ids in ``exclude`` (those the caller already holds), those another owner holds
        and those another transaction has locked; leased to ``owner`` (see the module
        docstring)."""
        if limit <= 0:
            return []
        select = (
            "SELECT {columns} FROM deliveries"
            " WHERE output = %s AND state = 'pending' AND next_attempt_ms <= %s"
            " AND id <> ALL(%b::text[])"
            " AND (%s::text IS NULL OR leased_by IS NULL OR leased_by = %s"
            " OR leased_until_ms <= %s)"
            " ORDER BY next_attempt_ms, created_at_ms, id LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        params: list[object] = [output, now_ms, list(exclude), owner, owner, now_ms, limit]
        if owner is None:
            rows = self._read(select.format(columns=DELIVERY_COLUMNS), params)
        else:
            rows = self._read(
                "UPDATE deliveries SET leased_by = %s, leased_until_ms = %s"
                f" WHERE id IN ({select.format(columns='id')}) RETURNING {DELIVERY_COLUMNS}",
                [owner, now_ms + lease_ms, *params],
            )
            rows.sort(key=lambda r: (int(str(r[7])), int(str(r[5])), str(r[0])))
        return [self._delivery(r) for r in rows]

    def succeeded(self, delivery_id: str, owner: str | None = None) -> None:
        """Remove a delivery that was accepted (unless another owner holds it)."""
        self.succeeded_many([delivery_id], owner)

    def succeeded_many(self, delivery_ids: Sequence[str], owner: str | None = None) -> None:
        """Remove deliveries that were accepted, in one statement (but those another owner
        holds)."""
        if delivery_ids:
            self._write(
                f"DELETE FROM deliveries WHERE id = ANY(%b::text[]){_HOLDER}",
                (list(delivery_ids), owner, owner),
            )

    def retry_at(
        self,
        delivery_id: str,
        attempts: int,
        next_attempt_ms: int,
        error: str,
        owner: str | None = None,
    ) -> None:
        """Record a failed attempt and when to try again, ending the lease (a parked
        delivery stays parked)."""
        self._write(
            "UPDATE deliveries SET attempts = %s, next_attempt_ms = %s, last_error = %s,"
            f" {_UNLEASED} WHERE id = %s AND state = 'pending'{_HOLDER}",
            (attempts, next_attempt_ms, error, delivery_id, owner, owner),
        )

    def park(
        self, delivery_id: str, attempts: int, error: str, now_ms: int, owner: str | None = None
    ) -> None:
        """Give up on a delivery for now, keeping it with its last error, ending the
        lease."""
        self._write(
            "UPDATE deliveries SET state = 'parked', attempts = %s, last_error = %s,"
            f" parked_at_ms = %s, {_UNLEASED} WHERE id = %s{_HOLDER}",
            (attempts, error, now_ms, delivery_id, owner, owner),
        )

    def parked(self, output: str | None = None, limit: int = 1000) -> list[Delivery]:
        """Parked deliveries, oldest parked first (then oldest created)."""
        rows = self._read(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries"
            " WHERE state = 'parked' AND (%s::text IS NULL OR output = %s)"
            " ORDER BY parked_at_ms, created_at_ms, id LIMIT %s",
            (output, output, max(0, limit)),
        )
        return [self._delivery(r) for r in rows]

    def replay(self, now_ms: int, output: str | None = None, ids: Sequence[str] = ()) -> int:
        """Make parked deliveries (of ``output``, among ``ids``) pending again, due now,
        with a new retry window; return how many."""
        return self._write(
            "UPDATE deliveries SET state = 'pending', next_attempt_ms = %s, since_ms = %s,"
            " attempts = 0, parked_at_ms = NULL WHERE state = 'parked'"
            " AND (%s::text IS NULL OR output = %s)"
            " AND (cardinality(%b::text[]) = 0 OR id = ANY(%b::text[]))",
            (now_ms, now_ms, output, output, list(ids), list(ids)),
        )

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery."""
        rows = self._read(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = %s", (delivery_id,)
        )
        return self._delivery(rows[0]) if rows else None

    def stats(self) -> dict[str, QueueStats]:
        """Queue statistics by output (outputs with no deliveries are absent)."""
        rows = self._read(
            "SELECT output, count(*) FILTER (WHERE state = 'pending'),"
            " count(*) FILTER (WHERE state = 'parked'),"
            " min(created_at_ms) FILTER (WHERE state = 'pending')"
            " FROM deliveries GROUP BY output"
        )
        return {
            str(o): QueueStats(int(str(p)), int(str(k)), None if m is None else int(str(m)))
            for o, p, k, m in rows
        }

    def close(self) -> None:
        """Nothing to release: the database is the backend's, closed by it."""
