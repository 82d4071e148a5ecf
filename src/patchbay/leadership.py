"""Which process leads work that must run in one process at a time across the deployment
(the segment stage: :mod:`patchbay.segment.process`).

* The embedded and in-memory stores: the one ``serve`` always leads (:class:`AlwaysLeads`).
* PostgreSQL: whoever holds a session-level advisory lock of the work's own, on a
  connection kept for as long as it leads
  (:class:`~patchbay.backends.postgres.leadership.PostgresLeadership`); a process that
  stops, dies or loses that connection releases it, and a standby calling
  :meth:`Leadership.acquire` every :data:`POLL_S` takes over.

A leader must not write once it may have lost the lead: :meth:`Leadership.held` says
whether it may still act (no I/O: it can be asked before every write), and the
PostgreSQL implementation makes sure it turns false before a new leader may start (see
there). A write refused that way raises :class:`NotLeader`.
"""

from __future__ import annotations

from typing import Protocol

from patchbay.backends.abstract import Backend
from patchbay.backends.records import StoreUnavailable
from patchbay.errors import PatchbayError

#: How often a standby tries to take the lead, and a leader confirms it.
POLL_S = 1.0


class NotLeader(PatchbayError):
    """This process no longer leads: the write was not made (the next leader makes it)."""


class Leadership(Protocol):
    """The lead of one kind of work, for this process."""

    def acquire(self) -> bool:
        """Take the lead if it is free, or confirm it if this process has it (without
        waiting for another leader); whether this process may act as the leader now.
        False after true: the lead was lost, and the caller drops what it held in memory
        (a write :meth:`held` refused may have left it ahead of the store)."""
        ...

    def held(self) -> bool:
        """Whether this process may act as the leader now, as last confirmed (no I/O;
        callable from any thread)."""
        ...

    def release(self) -> None:
        """Give the lead up (others may take it); releasing twice is harmless."""
        ...


def ensure_leading(leadership: Leadership) -> None:
    """Raise :class:`NotLeader` unless this process may act as the leader now."""
    if not leadership.held():
        raise NotLeader("this process no longer leads: the next leader goes on")


class AlwaysLeads:
    """The lead of a store that belongs to one process: always this one."""

    def acquire(self) -> bool:
        """Always."""
        return True

    def held(self) -> bool:
        """Always."""
        return True

    def release(self) -> None:
        """Nothing to give up."""


def open_leadership(backend: Backend, name: str) -> Leadership:
    """The lead of the work ``name`` among the processes sharing ``backend``: an advisory
    lock when its state is in PostgreSQL, else always this process."""
    from patchbay.backends import EMBEDDED_BACKENDS

    if backend.name not in EMBEDDED_BACKENDS:
        from patchbay.backends.postgres import PostgresDatabase
        from patchbay.backends.postgres.leadership import PostgresLeadership

        for resource in backend.resources:
            if isinstance(resource, PostgresDatabase):
                return PostgresLeadership(resource, name)
        raise StoreUnavailable(backend.name, "no database to hold the lead in")
    return AlwaysLeads()
