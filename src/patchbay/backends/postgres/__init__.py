"""The scale-out state backend: every store in one PostgreSQL database, shared by any
number of Patchbay processes (``--state postgresql://USER[:PASSWORD]@HOST:PORT/DB``).

Each store is a module of this package over :class:`~.db.PostgresDatabase`, with its
schema as versioned migrations of its own component (:meth:`~.db.PostgresDatabase.migrate`).
The stored partner credentials are sealed with the same key file as in the embedded mode
(:mod:`patchbay.secretbox`), which every process of a deployment must share.
"""

from __future__ import annotations

from patchbay.backends.postgres.db import PostgresDatabase, SchemaTooNew, masked

__all__ = ["PostgresDatabase", "SchemaTooNew", "masked"]
