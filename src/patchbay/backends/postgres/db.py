"""One PostgreSQL database (optionally one schema of it): a pool of connections, short
transactions, versioned migrations, and the translation of its errors.

* **Transactions.** :meth:`PostgresDatabase.transaction` lends a pooled connection inside
  one transaction: committed when the block ends, rolled back when it raises. Every store
  call is one transaction, so any number of Patchbay processes on any number of machines
  share the database (PostgreSQL serialises what must be: rows locked by
  ``SELECT ... FOR UPDATE``, unique constraints, ``ON CONFLICT``).
* **Migrations.** Each store declares its schema as an ordered list of SQL scripts, its
  *component* (``inputs``, ``outbox``, ...). :meth:`PostgresDatabase.migrate` applies the
  ones a database has not seen, under an advisory lock (two processes starting at once
  apply each script once), and records the version in ``patchbay_schema``. A database at
  a version newer than the code knows is refused (:class:`SchemaTooNew`): an older
  Patchbay never writes over a newer schema.
* **Errors.** A full disk (SQLSTATE class 53, ``disk_full``, ``out_of_memory``...) is
  :class:`~patchbay.errors.StorageFull`, like SQLite's ``SQLITE_FULL``; a database that
  cannot be reached is :class:`~patchbay.backends.records.StoreUnavailable`. The URL's
  password is never in a message (:func:`masked`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from patchbay.backends.records import StoreUnavailable
from patchbay.errors import PatchbayError, StorageFull

#: The advisory lock key migrations hold (any constant: one lock for every component).
MIGRATION_LOCK = 0x7061_7463_6862_6179  # "patchbay"
#: A schema name given for tests (the database's own default otherwise).
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

Connection = psycopg.Connection[TupleRow]


def masked(url: str) -> str:
    """``url`` without its password (``postgresql://user:***@host/db``)."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


class SchemaTooNew(PatchbayError):
    """The database holds a schema newer than this version of Patchbay knows."""


class PostgresDatabase:
    """A connection pool to the database at ``url``; with ``schema``, every connection
    works in that schema (created when missing), as tests do to share one server."""

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 8) -> None:
        self.url = url
        self.where = masked(url) + (f" (schema {schema})" if schema else "")
        #: The scripts :meth:`migrate` applied, by component (``patchbay db upgrade``).
        self.applied: dict[str, int] = {}
        kwargs: dict[str, Any] = {"autocommit": False}
        if schema is not None:
            if not _SCHEMA_NAME.match(schema):
                raise ValueError(f"not a schema name: {schema!r}")
            kwargs["options"] = f"-c search_path={schema}"
        self._options: str = kwargs.get("options", "")
        try:
            # One connection first: a server that cannot be reached fails at once, with its
            # reason (the pool would retry until its timeout).
            with psycopg.connect(url, autocommit=True) as conn:
                if schema is not None:
                    create = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}")
                    conn.execute(create.format(sql.Identifier(schema)))
            self.pool: ConnectionPool[Connection] = ConnectionPool(
                url, min_size=1, max_size=max(1, pool_size), kwargs=kwargs, open=False
            )
            self.pool.open(wait=True, timeout=10.0)
        except (psycopg.Error, PoolTimeout) as exc:
            raise self.unavailable(exc) from None

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        """The error for a database that cannot be reached or used."""
        return StoreUnavailable(self.where, masked(str(exc).strip() or type(exc).__name__))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A pooled connection in one transaction: committed at the end of the block,
        rolled back if it raises."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.errors.InsufficientResources as exc:  # class 53: disk full, ...
            raise StorageFull(self.where, str(exc).strip()) from exc
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self.unavailable(exc) from exc

    def connect(self, options: str = "", **kwargs: Any) -> Connection:
        """A connection of its own, outside the pool (autocommit), in the pool's schema;
        ``options`` adds server settings (``-c name=value ...``), ``kwargs`` libpq
        parameters. Raises :class:`~patchbay.backends.records.StoreUnavailable`."""
        joined = f"{self._options} {options}".strip()
        if joined:
            kwargs["options"] = joined
        try:
            return psycopg.connect(self.url, autocommit=True, **kwargs)
        except psycopg.Error as exc:
            raise self.unavailable(exc) from None

    def write(self, statement: str, params: Sequence[object] = ()) -> int:
        """Run one write statement in its own transaction; return the rows it changed."""
        with self.transaction() as conn:
            return conn.execute(statement, params).rowcount

    def migrate(self, component: str, scripts: Sequence[str]) -> int:
        """Apply the scripts of ``component`` the database has not seen yet, in order, each
        in its transaction; return how many. Raises :class:`SchemaTooNew` when the database
        is at a later version than ``len(scripts)``."""
        applied = 0
        with self.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS patchbay_schema ("
                " component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = conn.execute(
                "SELECT version FROM patchbay_schema WHERE component = %s", (component,)
            ).fetchone()
            version = int(row[0]) if row else 0
            if version > len(scripts):
                raise SchemaTooNew(
                    f"{self.where}: the {component} schema is at version {version}; this"
                    f" Patchbay knows {len(scripts)}: upgrade Patchbay"
                )
            self.applied[component] = len(scripts) - version
            for number, script in enumerate(scripts[version:], start=version + 1):
                conn.execute(script.encode())
                conn.execute(
                    "INSERT INTO patchbay_schema (component, version) VALUES (%s, %s)"
                    " ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                    (component, number),
                )
                applied += 1
        return applied

    def versions(self) -> dict[str, int]:
        """Each component's schema version in the database."""
        with self.transaction() as conn:
            exists = conn.execute("SELECT to_regclass('patchbay_schema')").fetchone()
            if exists is None or exists[0] is None:
                return {}
            rows = conn.execute("SELECT component, version FROM patchbay_schema").fetchall()
        return {str(c): int(v) for c, v in rows}

    def close(self) -> None:
        """Close the pool's connections."""
        self.pool.close()
