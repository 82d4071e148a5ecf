"""The embedded backend of the delivery outbox: ``deliveries.db`` in the data directory.

A file of its own, so that a busy outbox never slows the batch log. Outputs, connections and
deliveries live here; a delivery row is keyed by its message id, so enqueueing the same
batch twice (a replayed resolve chunk) adds nothing. The settings of outputs and
connections (a webhook's token, a module's confidential account settings) are stored
encrypted (:mod:`patchbay.secretbox`); plain text an earlier version stored is encrypted
when the store opens. So is every delivery's payload, the request a partner will receive
with the account settings it carries (:meth:`~patchbay.secretbox.SecretBox.seal_payload`,
bound to the delivery's id): written sealed, opened when read, and the plain payloads of an
earlier version sealed once (``PRAGMA user_version`` 1). ``synchronous=FULL`` by default, so
that an enqueued delivery survives a crash. One class serves as both the
:class:`~patchbay.backends.abstract.OutputStore` and the
:class:`~patchbay.backends.abstract.Outbox`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from patchbay.backends.records import (
    Circuit,
    Connection,
    Delivery,
    Destination,
    DuplicateName,
    Filters,
    Output,
    QueueStats,
)
from patchbay.backends.sqlite.db import SqliteDatabase, insert_rows
from patchbay.backends.sqlite.sealed import open_text, seal_plain_columns, seal_plain_payloads
from patchbay.secretbox import SecretBox

DELIVERIES_FILE = "deliveries.db"
#: ``PRAGMA user_version`` of a ``deliveries.db`` whose payloads are all sealed.
SEALED_PAYLOADS = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    module TEXT,
    url TEXT,
    path TEXT,
    settings TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    paused_reason TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS connections (
    id TEXT PRIMARY KEY,
    input_id TEXT NOT NULL,
    output TEXT NOT NULL,
    settings TEXT NOT NULL,
    filters TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (input_id, output)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    batch_offset INTEGER NOT NULL,
    payload BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    parked_at_ms INTEGER,
    leased_by TEXT,
    leased_until_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (output, state, next_attempt_ms);
CREATE TABLE IF NOT EXISTS output_circuits (
    output TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    error TEXT
) WITHOUT ROWID;
"""

#: The columns of each table (the PostgreSQL outbox has the same, and shares the row
#: helpers at the end of this module). ``kind, module, url, path``: the destination (see
#: :func:`destination_columns`).
OUTPUT_COLUMNS = (
    "name, kind, module, url, path, settings, paused, paused_reason, created_at_ms, updated_at_ms"
)
CONNECTION_COLUMNS = "id, input_id, output, settings, filters, created_at_ms"
DELIVERY_COLUMNS = (
    "id, output, connection_id, batch_offset, payload, created_at_ms, since_ms,"
    " next_attempt_ms, state, attempts, last_error, parked_at_ms"
)

#: A delivery's lease ended.
_UNLEASED = "leased_by = NULL, leased_until_ms = NULL"
#: No owner but the caller holds the delivery (a caller without one: anything goes;
#: parameters: owner, owner, now).
_NOT_HELD = "(? IS NULL OR leased_by IS NULL OR leased_by = ? OR leased_until_ms <= ?)"
#: Acknowledging needs no other owner to hold the delivery (parameters: owner, owner).
_HOLDER = " AND (? IS NULL OR leased_by IS NULL OR leased_by = ?)"

_settings_decoder = msgspec.json.Decoder(dict[str, str])
_filters_decoder = msgspec.json.Decoder(Filters)


class SqliteOutbox:
    """Outputs, connections and deliveries in ``deliveries.db``."""

    def __init__(self, db: SqliteDatabase, box: SecretBox) -> None:
        self._db = db
        self._box = box
        db.create(_SCHEMA)
        add_lease_columns(db)
        seal_plain_columns(db, box, "outputs", ("name",), "settings")
        seal_plain_columns(db, box, "connections", ("id",), "settings")
        seal_plain_payloads(db, box, "deliveries", "id", "payload", SEALED_PAYLOADS)

    def _sealed(self, settings: dict[str, str]) -> str:
        return seal_settings(self._box, settings)

    def _settings(self, stored: object) -> dict[str, str]:
        return open_settings(self._box, stored)

    def _output(self, row: Sequence[object]) -> Output:
        return output_from_row(row, self._settings(row[5]))

    def _delivery_row(self, d: Delivery) -> tuple[object, ...]:
        return delivery_row(d, self._box.seal_payload(d.payload, d.id))

    def _delivery(self, row: Sequence[object]) -> Delivery:
        stored = row[4]
        assert isinstance(stored, bytes | memoryview)
        return delivery_from_row(row, self._box.open_payload(bytes(stored), str(row[0])))

    # -- outputs -------------------------------------------------------------------------

    def add_output(self, output: Output) -> None:
        """Create ``output``; raises :class:`DuplicateName` if the name is taken."""
        try:
            self._db.write(
                f"INSERT INTO outputs ({OUTPUT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    output.name,
                    *destination_columns(output.destination),
                    self._sealed(output.settings),
                    int(output.paused),
                    output.paused_reason,
                    output.created_at_ms,
                    output.updated_at_ms,
                ),
            )
        except sqlite3.IntegrityError:
            raise DuplicateName(f"an output named {output.name!r} already exists") from None

    def get_output(self, name: str) -> Output | None:
        """The output with this name."""
        row = (
            self._db.conn()
            .execute(f"SELECT {OUTPUT_COLUMNS} FROM outputs WHERE name = ?", (name,))
            .fetchone()
        )
        return self._output(row) if row else None

    def list_outputs(self) -> list[Output]:
        """Every output, by name."""
        rows = self._db.conn().execute(f"SELECT {OUTPUT_COLUMNS} FROM outputs ORDER BY name")
        return [self._output(r) for r in rows]

    def set_paused(self, name: str, paused: bool, reason: str | None, now_ms: int) -> bool:
        """Pause or resume an output; whether it exists."""
        changed = self._db.write(
            "UPDATE outputs SET paused = ?, paused_reason = ?, updated_at_ms = ? WHERE name = ?",
            (int(paused), reason if paused else None, now_ms, name),
        )
        return changed > 0

    def set_circuit(self, name: str, circuit: Circuit) -> None:
        """Record the state of an output's circuit breaker."""
        self._db.write(
            "INSERT OR REPLACE INTO output_circuits (output, state, since_ms, error)"
            " VALUES (?, ?, ?, ?)",
            (name, circuit.state, circuit.since_ms, circuit.error),
        )

    def circuits(self) -> dict[str, Circuit]:
        """The recorded circuit breaker of every output that has one."""
        rows = self._db.conn().execute("SELECT output, state, since_ms, error FROM output_circuits")
        return {str(r[0]): Circuit(str(r[1]), int(r[2]), r[3]) for r in rows}

    # -- connections ---------------------------------------------------------------------

    def add_connection(self, connection: Connection) -> None:
        """Create ``connection``; raises :class:`DuplicateName` if the input is already
        connected to the output."""
        try:
            self._db.write(
                f"INSERT INTO connections ({CONNECTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    connection.id,
                    connection.input_id,
                    connection.output,
                    self._sealed(connection.settings),
                    msgspec.json.encode(connection.filters).decode(),
                    connection.created_at_ms,
                ),
            )
        except sqlite3.IntegrityError:
            raise DuplicateName(
                f"the input is already connected to {connection.output!r}"
            ) from None

    def list_connections(self) -> list[Connection]:
        """Every connection, by input then output."""
        rows = self._db.conn().execute(
            f"SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY input_id, output"
        )
        return [connection_from_row(r, self._settings(r[3])) for r in rows]

    def remove_connection(self, connection_id: str) -> bool:
        """Remove a connection; whether it existed (its pending deliveries stay queued)."""
        return self._db.write("DELETE FROM connections WHERE id = ?", (connection_id,)) > 0

    # -- deliveries ----------------------------------------------------------------------

    def enqueue(self, deliveries: Sequence[Delivery]) -> int:
        """Add the deliveries whose id is new, in one transaction; return how many.

        Multi-row INSERTs: a statement per row would hand the GIL over and wait to get it
        back once per delivery while the resolve stage runs on another thread."""
        if not deliveries:
            return 0
        rows = [self._delivery_row(d) for d in deliveries]
        with self._db.transaction() as conn:
            before = conn.total_changes
            insert_rows(conn, f"INSERT OR IGNORE INTO deliveries ({DELIVERY_COLUMNS})", rows)
            return conn.total_changes - before

    def due(
        self,
        output: str,
        now_ms: int,
        limit: int,
        exclude: Sequence[str] = (),
        owner: str | None = None,
        lease_ms: int = 0,
    ) -> list[Delivery]:
        """Pending deliveries of ``output`` due at ``now_ms``, oldest due first, leaving out
        the ids in ``exclude`` (those the caller already holds) and those another owner
        holds; then leased to ``owner`` (in one transaction, each only if it is still
        free: nothing found, no write). The lease is committed without an fsync of its
        own: one lost to a power failure only lets the delivery be sent again, which at
        least once allows."""
        if limit <= 0:
            return []
        skip = set(exclude)
        query = (
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries"
            " WHERE output = ? AND state = 'pending' AND next_attempt_ms <= ?"
            f" AND {_NOT_HELD}"
            " ORDER BY next_attempt_ms, created_at_ms LIMIT ?"
        )
        params = (output, now_ms, owner, owner, now_ms, limit + len(skip))
        rows = self._db.conn().execute(query, params)
        try:
            found = [r for r in rows if r[0] not in skip][:limit]
        finally:
            rows.close()  # end the read at once (a WAL snapshot must not stay open)
        if owner is not None and found:
            # leased only if still free (another process may have leased it since the read)
            with self._db.transaction(synced=False) as conn:
                found = [
                    r
                    for r in found
                    if conn.execute(
                        "UPDATE deliveries SET leased_by = ?, leased_until_ms = ?"
                        " WHERE id = ? AND state = 'pending' AND next_attempt_ms <= ?"
                        f" AND {_NOT_HELD}",
                        (owner, now_ms + lease_ms, r[0], now_ms, owner, owner, now_ms),
                    ).rowcount
                ]
        return [self._delivery(r) for r in found]

    def succeeded(self, delivery_id: str, owner: str | None = None) -> None:
        """Remove a delivery that was accepted (unless another owner holds it)."""
        self._db.write(f"DELETE FROM deliveries WHERE id = ?{_HOLDER}", (delivery_id, owner, owner))

    def succeeded_many(self, delivery_ids: Sequence[str], owner: str | None = None) -> None:
        """Remove deliveries that were accepted, in one transaction (one commit)."""
        if not delivery_ids:
            return
        with self._db.transaction() as conn:
            conn.executemany(
                f"DELETE FROM deliveries WHERE id = ?{_HOLDER}",
                [(i, owner, owner) for i in delivery_ids],
            )

    def retry_at(
        self,
        delivery_id: str,
        attempts: int,
        next_attempt_ms: int,
        error: str,
        owner: str | None = None,
    ) -> None:
        """Record a failed attempt and when to try again, ending the lease."""
        self._db.write(
            "UPDATE deliveries SET attempts = ?, next_attempt_ms = ?, last_error = ?,"
            f" {_UNLEASED} WHERE id = ? AND state = 'pending'{_HOLDER}",
            (attempts, next_attempt_ms, error, delivery_id, owner, owner),
        )

    def park(
        self, delivery_id: str, attempts: int, error: str, now_ms: int, owner: str | None = None
    ) -> None:
        """Give up on a delivery for now, keeping it with its last error."""
        self._db.write(
            "UPDATE deliveries SET state = 'parked', attempts = ?, last_error = ?,"
            f" parked_at_ms = ?, {_UNLEASED} WHERE id = ?{_HOLDER}",
            (attempts, error, now_ms, delivery_id, owner, owner),
        )

    def parked(self, output: str | None = None, limit: int = 1000) -> list[Delivery]:
        """Parked deliveries, oldest first."""
        where = "state = 'parked'" + (" AND output = ?" if output is not None else "")
        params: tuple[object, ...] = (output, limit) if output is not None else (limit,)
        rows = self._db.conn().execute(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {where}"
            " ORDER BY parked_at_ms, created_at_ms LIMIT ?",
            params,
        )
        return [self._delivery(r) for r in rows]

    def replay(self, now_ms: int, output: str | None = None, ids: Sequence[str] = ()) -> int:
        """Make parked deliveries pending again, due now, with a new retry window."""
        sql = (
            "UPDATE deliveries SET state = 'pending', next_attempt_ms = ?, since_ms = ?,"
            " attempts = 0, parked_at_ms = NULL WHERE state = 'parked'"
        )
        params: list[object] = [now_ms, now_ms]
        if output is not None:
            sql += " AND output = ?"
            params.append(output)
        if ids:
            sql += f" AND id IN ({', '.join('?' for _ in ids)})"
            params.extend(ids)
        return self._db.write(sql, params)

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery."""
        row = (
            self._db.conn()
            .execute(f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,))
            .fetchone()
        )
        return self._delivery(row) if row else None

    def stats(self) -> dict[str, QueueStats]:
        """Queue statistics by output."""
        rows = self._db.conn().execute(
            "SELECT output, SUM(state = 'pending'), SUM(state = 'parked'),"
            " MIN(CASE WHEN state = 'pending' THEN created_at_ms END)"
            " FROM deliveries GROUP BY output"
        )
        return {
            str(r[0]): QueueStats(
                pending=int(r[1] or 0),
                parked=int(r[2] or 0),
                oldest_pending_ms=None if r[3] is None else int(r[3]),
            )
            for r in rows
        }

    def close(self) -> None:
        """Close every connection this store opened."""
        self._db.close()


def add_lease_columns(db: SqliteDatabase) -> None:
    """Add the lease columns to the ``deliveries`` of an earlier version (once, whichever
    of the processes opening the file at once gets there first)."""

    def missing(conn: sqlite3.Connection) -> bool:
        return "leased_by" not in {r[1] for r in conn.execute("PRAGMA table_info(deliveries)")}

    if missing(db.conn()):
        with db.transaction() as conn:
            if missing(conn):
                conn.execute("ALTER TABLE deliveries ADD COLUMN leased_by TEXT")
                conn.execute("ALTER TABLE deliveries ADD COLUMN leased_until_ms INTEGER")


#: The columns that hold an output's destination: ``kind`` (its tag), then one column for
#: each kind's field (``NULL`` in the others).
DESTINATION_COLUMNS = ("kind", "module", "url", "path")


def destination_columns(destination: Destination) -> tuple[object, ...]:
    fields = msgspec.to_builtins(destination)
    return tuple(fields.get(column) for column in DESTINATION_COLUMNS)


def seal_settings(box: SecretBox, settings: dict[str, str]) -> str:
    """``settings`` (an output's or a connection's) as stored: JSON, sealed."""
    return box.seal(msgspec.json.encode(settings).decode())


def open_settings(box: SecretBox, stored: object) -> dict[str, str]:
    """The settings :func:`seal_settings` stored (or plain text not yet migrated)."""
    return _settings_decoder.decode(open_text(box, stored))


def output_from_row(row: Sequence[object], settings: dict[str, str]) -> Output:
    """The output of a row of :data:`OUTPUT_COLUMNS` with its ``settings`` opened."""
    return msgspec.convert(
        {
            "name": row[0],
            "destination": dict(zip(DESTINATION_COLUMNS, row[1:5], strict=True)),
            "settings": settings,
            "paused": bool(row[6]),
            "paused_reason": row[7],
            "created_at_ms": row[8],
            "updated_at_ms": row[9],
        },
        Output,
    )


def connection_from_row(row: Sequence[object], settings: dict[str, str]) -> Connection:
    """The connection of a row of :data:`CONNECTION_COLUMNS` with its ``settings`` opened."""
    return Connection(
        id=str(row[0]),
        input_id=str(row[1]),
        output=str(row[2]),
        settings=settings,
        filters=_filters_decoder.decode(str(row[4])),
        created_at_ms=int(str(row[5])),
    )


def delivery_row(d: Delivery, payload: bytes) -> tuple[object, ...]:
    """The columns of ``d`` with its ``payload`` as stored (sealed)."""
    return (
        d.id,
        d.output,
        d.connection_id,
        d.batch_offset,
        payload,
        d.created_at_ms,
        d.since_ms,
        d.next_attempt_ms,
        d.state,
        d.attempts,
        d.last_error,
        d.parked_at_ms,
    )


def delivery_from_row(row: Sequence[object], payload: bytes) -> Delivery:
    """The delivery of ``row`` with its ``payload`` opened."""
    return Delivery(
        id=str(row[0]),
        output=str(row[1]),
        connection_id=str(row[2]),
        batch_offset=int(str(row[3])),
        payload=payload,
        created_at_ms=int(str(row[5])),
        since_ms=int(str(row[6])),
        next_attempt_ms=int(str(row[7])),
        state="parked" if row[8] == "parked" else "pending",
        attempts=int(str(row[9])),
        last_error=None if row[10] is None else str(row[10]),
        parked_at_ms=None if row[11] is None else int(str(row[11])),
    )
