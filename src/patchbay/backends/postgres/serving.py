"""Which processes use a scale-out deployment: the embedded mode's data-directory lock,
for a deployment whose processes run on several machines.

Every ``patchbay serve`` of the deployment holds a *shared* session advisory lock for as long
as it runs; a command that needs the deployment to itself (``patchbay reprocess``, which
drops the resolve state and resolves the log again) asks for it *exclusively*, which
PostgreSQL grants only while no serve holds it, and holds it until it is done (a serve
starting meanwhile waits). A session that ends (a process stopped or killed, a machine gone:
the connection's TCP keepalives end it) releases its lock. The key is a hash of the schema
and a name of its own, so deployments sharing a database in several schemas do not meet.
"""

from __future__ import annotations

import contextlib

import psycopg
from psycopg import Connection

from patchbay.backends.postgres.db import PostgresDatabase

_KEY = "hashtextextended(coalesce(current_schema(), '') || '/patchbay/serving', 0)"
#: The server-side TCP keepalives of the lock's session (idle, interval, count: seconds):
#: a machine that vanished releases its lock in about this long.
_KEEPALIVE = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"


class ServingLock:
    """The lock of a deployment's processes on ``db`` (see the module documentation)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self._conn: Connection | None = None

    def share(self) -> None:
        """Hold the lock with the other serves (waits while a command holds it alone)."""
        conn = self._db.connect(_KEEPALIVE, application_name="patchbay serve")
        conn.execute(f"SELECT pg_advisory_lock_shared({_KEY})")
        self._conn = conn

    def try_alone(self) -> bool:
        """Take the lock alone if no serve holds it; whether it was taken."""
        conn = self._db.connect(_KEEPALIVE, application_name="patchbay reprocess")
        row = conn.execute(f"SELECT pg_try_advisory_lock({_KEY})").fetchone()
        if row and row[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def release(self) -> None:
        """End the lock's session (safe to call more than once)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error):
                conn.close()
