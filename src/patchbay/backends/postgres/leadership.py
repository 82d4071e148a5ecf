"""The lead of one kind of work across the processes sharing a database
(:class:`PostgresLeadership`, the PostgreSQL side of :mod:`patchbay.leadership`).

The leader holds a session-level advisory lock (``pg_try_advisory_lock``) on a connection
of its own, outside the pool, for as long as it leads; the lock's key is a hash of the
schema and the work's name, so deployments in two schemas of one database do not
compete. PostgreSQL releases the lock when that session ends: the process closed it, was
killed (the kernel closes its socket: at once), or vanished with its machine or network
(the session's server-side TCP keepalives, set short on that connection, end it within
about :data:`SERVER_KEEPALIVE_S`). A standby calling :meth:`PostgresLeadership.acquire`
every second then takes it.

**A leader that lost its lock stops before the next one starts.** Every write of the work
is made only while :meth:`~PostgresLeadership.held` is true (the segment stage asks before
each of its commits), which needs a confirmation, by a query on the lock's session,
*sent* less than :data:`VALIDITY_S` ago. A new leader acts only :data:`TAKEOVER_S` after
its lock was *granted* (its answer arrived). The old leader's last confirmation was sent
before its session ended, which is before the new leader's lock was granted: so the old
leader's last write starts before ``grant + VALIDITY_S``, and the new leader's first one
after ``grant + TAKEOVER_S``, leaving :data:`TAKEOVER_S` - :data:`VALIDITY_S` for a write
already under way to finish. What this assumes, as any lease: the two processes measure
seconds alike (monotonic clocks, no shared wall clock), and a write does not stall longer
than that margin between its check and its transaction's commit (a process paused for
seconds at that very point, by a debugger or a frozen VM, would break it). Fenced commits
cover the rest of the segment stage (:class:`~patchbay.backends.records.CheckpointMoved`).

A leader whose confirmation lapsed, even briefly (a slow query), has lost the lead for
good: its next :meth:`~PostgresLeadership.acquire` closes the session and answers false,
so the work discards what it held in memory (a write refused meanwhile may have left it
ahead of the store) and competes again from scratch.

The lock connection's TCP settings bound how long a query on a dead network can hang
(``tcp_user_timeout``, keepalives): a leader whose confirmation hangs stops all the same,
since :meth:`~PostgresLeadership.held` turns false :data:`VALIDITY_S` after the last one
was sent. The lock's connection must reach PostgreSQL itself, not through a pooler in
transaction mode (which would hand the session's lock to other clients).
"""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg
import structlog

from patchbay.backends.postgres.db import Connection, PostgresDatabase
from patchbay.backends.records import StoreUnavailable

log = structlog.get_logger("patchbay.leadership")

#: How long a confirmation of the lead lets the leader act.
VALIDITY_S = 3.0
#: How long after its lock is granted a new leader starts acting.
TAKEOVER_S = VALIDITY_S + 2.0
#: How long PostgreSQL keeps the session of a leader that vanished (idle, interval, count).
SERVER_KEEPALIVE = (2, 1, 2)
SERVER_KEEPALIVE_S = SERVER_KEEPALIVE[0] + SERVER_KEEPALIVE[1] * SERVER_KEEPALIVE[2]
#: The lock connection's own bounds (libpq parameters).
CLIENT_TIMEOUTS: dict[str, object] = {
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 3000,  # ms: unacknowledged data for longer ends the connection
}


def application_name(name: str) -> str:
    """The ``application_name`` of the sessions that hold or try for the lead of ``name``
    (``pg_stat_activity``; the one holding it has the advisory lock in ``pg_locks``)."""
    return f"patchbay {name} lead"


class _Lapsed(Exception):
    """The lead's confirmation lapsed."""


class PostgresLeadership:
    """The lead of the work ``name`` among the processes sharing ``db`` (see the module
    documentation); ``validity_s`` and ``takeover_s`` for tests."""

    def __init__(
        self,
        db: PostgresDatabase,
        name: str,
        *,
        validity_s: float = VALIDITY_S,
        takeover_s: float = TAKEOVER_S,
    ) -> None:
        if takeover_s < validity_s:
            raise ValueError("takeover_s must not be shorter than validity_s")
        self.name = name
        self._db = db
        self._validity = validity_s
        self._takeover = takeover_s
        self._lock = threading.Lock()  # acquire() and release() from different threads
        self._conn: Connection | None = None
        #: When the lock was granted, and when the last confirmation was sent (monotonic).
        self._granted_at: float | None = None
        self._confirmed_at: float | None = None

    def acquire(self) -> bool:
        """Try the lock, or confirm it on its session; whether this process may act as
        the leader now (not until :data:`TAKEOVER_S` after the lock was granted). A
        confirmation that fails, or that comes after the last one lapsed, loses the lead:
        the session is closed (releasing the lock) and the next call starts over."""
        with self._lock:
            sent = time.monotonic()
            try:
                conn = self._conn = self._conn or self._connect()
                if self._granted_at is None:
                    row = conn.execute(
                        "SELECT pg_try_advisory_lock("
                        " hashtextextended(coalesce(current_schema(), '') || %s, 0))",
                        (f"/patchbay/{self.name}",),
                    ).fetchone()
                    if not (row and row[0]):
                        return False
                    self._granted_at = time.monotonic()  # its answer is in: granted by now
                else:
                    conn.execute("SELECT 1")  # the session lives: it holds the lock
                    if self._lapsed():
                        raise _Lapsed("a confirmation came too late")
            except (psycopg.Error, StoreUnavailable, _Lapsed) as exc:
                if self._granted_at is not None:
                    log.warning("leader_session_lost", work=self.name, error=str(exc))
                self._drop()
                return False
            self._confirmed_at = sent
        return self.held()

    def _lapsed(self) -> bool:
        """Whether :meth:`held` may have turned false since the last confirmation (a
        writer may have been refused meanwhile: the lead is lost, the work starts over)."""
        confirmed = self._confirmed_at
        return confirmed is None or time.monotonic() - confirmed >= self._validity

    def held(self) -> bool:
        """Whether the lock was confirmed less than ``validity_s`` ago and granted at
        least ``takeover_s`` ago."""
        granted, confirmed = self._granted_at, self._confirmed_at
        if granted is None or confirmed is None:
            return False
        now = time.monotonic()
        return now - confirmed < self._validity and now - granted >= self._takeover

    def release(self) -> None:
        """Close the lock's session (PostgreSQL releases the lock)."""
        with self._lock:
            self._drop()

    def _connect(self) -> Connection:
        idle, interval, count = SERVER_KEEPALIVE
        options = (
            f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval}"
            f" -c tcp_keepalives_count={count} -c statement_timeout=5000"
        )
        return self._db.connect(
            options, application_name=application_name(self.name), **CLIENT_TIMEOUTS
        )

    def _drop(self) -> None:
        self._granted_at = self._confirmed_at = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error):  # gone already
                conn.close()
