"""One SQLite database file as the embedded stores use it: WAL, a connection per thread.

Every embedded store (the batch log, the resolve state, the modules, the outbox) works on
its file through :class:`SqliteDatabase`, so connection handling, pragmas, durability and
the write transaction live in one place. Several stores may share one database (the log,
the inputs and the modules are all in ``patchbay.db``); each creates its own tables.

Every write goes through :meth:`SqliteDatabase.create`, :meth:`~SqliteDatabase.transaction`
or :meth:`~SqliteDatabase.write`, which turn SQLite's ``SQLITE_FULL`` ("database or disk is
full") into :class:`~patchbay.errors.StorageFull` once the transaction is rolled back.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog

from patchbay.datadir import DIR_MODE, create_owner_only
from patchbay.errors import StorageFull

log = structlog.get_logger("patchbay.backends.sqlite")

#: SQLite's primary result code for "database or disk is full".
SQLITE_FULL = 13

#: ``full`` fsyncs every commit (survives power loss); ``normal`` survives a process crash.
Durability = Literal["full", "normal"]


#: Bytes the ``-wal`` file is cut back to after a checkpoint.
WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: Pages given back per transaction by :meth:`SqliteDatabase.reclaim` (1 MiB of 4 KiB pages).
RECLAIM_STEP_PAGES = 256
_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


class SqliteDatabase:
    """A SQLite file in WAL mode with one connection per thread and one writer at a time.

    Other processes (the CLI next to a running server) wait on ``busy_timeout``. The file is
    created owner-only (``0600``, as SQLite then creates its ``-wal`` and ``-shm`` files).

    ``checkpoint_every_s``: the write-ahead log is copied into the file by a thread of its
    own, that often, once this process wrote (``PRAGMA wal_checkpoint(PASSIVE)``, which
    never waits for readers or writers), instead of by the commit that fills
    ``wal_autocheckpoint`` pages: SQLite does that work without the GIL, so a busy writer
    (the segment stage) leaves it to the other core instead of stopping for it.
    """

    def __init__(
        self,
        path: Path,
        durability: Durability = "full",
        pragmas: Iterable[str] = (),
        checkpoint_every_s: float | None = None,
    ) -> None:
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        create_owner_only(path)  # 0600: SQLite gives its -wal and -shm files the same mode
        self.path = path
        self.durability = durability
        self._pragmas = (
            "PRAGMA busy_timeout = 30000",
            # before journal_mode, which writes the first page: a new file gets it (an
            # existing one is rewritten once for it: use_incremental_vacuum)
            "PRAGMA auto_vacuum = INCREMENTAL",
            "PRAGMA journal_mode = WAL",
            f"PRAGMA synchronous = {durability.upper()}",
            # the -wal file is cut back to this after a checkpoint (a burst of writes, a
            # large delete, would otherwise keep it at its largest)
            f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}",
            *pragmas,
            *(() if checkpoint_every_s is None else ("PRAGMA wal_autocheckpoint = 0",)),
        )
        self._local = threading.local()
        self.write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._checkpoint_every_s = checkpoint_every_s
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        #: Frames of the write-ahead log the checkpoint thread copied into the file.
        self.checkpointed_frames = 0

    def _start_checkpoints(self) -> None:
        """Start the checkpoint thread (``checkpoint_every_s``), unless it runs."""
        if self._checkpoint_every_s is None or self._checkpointer is not None:
            return
        self._checkpointer = threading.Thread(
            target=self._checkpoints, name=f"sqlite-checkpoint-{self.path.name}", daemon=True
        )
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        assert self._checkpoint_every_s is not None
        while not self._closing.wait(self._checkpoint_every_s):
            try:
                row = self.conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.checkpointed_frames += max(0, int(row[2]))
            except sqlite3.Error as exc:  # a full disk: the log keeps it; the next one tries
                log.warning("sqlite_checkpoint_failed", file=self.path.name, error=str(exc))

    def create(self, schema: str) -> None:
        """Create what ``schema`` describes (``CREATE ... IF NOT EXISTS`` statements)."""
        with self.write_lock, self._full_is_storage_full():
            self.conn().executescript(schema)

    def pragma(self, statement: str) -> None:
        """Run ``statement`` (``PRAGMA ...``) on every connection, those open and those
        opened later (the tests use it to cap a store with ``max_page_count``)."""
        with self._connections_lock:
            self._pragmas = (*self._pragmas, statement)
            for conn in self._connections:
                conn.execute(statement)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: transactions are explicit)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for pragma in self._pragmas:
                conn.execute(pragma)
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on exit, rolled back on any exception.

        ``synced=False`` commits without an fsync of its own even on a ``full`` database
        (``synchronous = NORMAL`` for this transaction): a process crash loses nothing, a
        power failure may lose it until the next synced commit, whose fsync of the WAL
        makes every earlier commit durable too. For state derived from what is durable
        elsewhere, which can be computed again."""
        conn = self.conn()
        relax = not synced and self.durability == "full"
        with self.write_lock:
            if relax:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                with self._full_is_storage_full():
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        yield conn
                        conn.execute("COMMIT")
                        self._start_checkpoints()
                    except BaseException:
                        # SQLITE_FULL may have rolled the transaction back already; a
                        # failed COMMIT may not have: never leave one open
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
            finally:
                if relax:
                    conn.execute("PRAGMA synchronous = FULL")

    def write(self, sql: str, params: Iterable[object] = ()) -> int:
        """Run one write statement in its own transaction; return the rows it changed."""
        conn = self.conn()
        with self.write_lock, self._full_is_storage_full():
            return conn.execute(sql, tuple(params)).rowcount

    @contextlib.contextmanager
    def _full_is_storage_full(self) -> Iterator[None]:
        """Raise :class:`~patchbay.errors.StorageFull` for SQLite's ``SQLITE_FULL``."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_FULL:
                raise StorageFull(self.path, str(exc)) from exc
            raise

    def use_incremental_vacuum(self) -> bool:
        """Make freed pages returnable (:meth:`reclaim`): a new file has ``auto_vacuum =
        INCREMENTAL`` from the start; a file made before it is rewritten once (``VACUUM``,
        which needs as much free disk as the file takes). Returns whether it rewrote."""
        conn = self.conn()
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
            return False
        with self.write_lock:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
        return True

    def pages(self) -> tuple[int, int, int]:
        """The page size, how many pages the file has and how many of them are free."""
        conn = self.conn()
        return (
            int(conn.execute("PRAGMA page_size").fetchone()[0]),
            int(conn.execute("PRAGMA page_count").fetchone()[0]),
            int(conn.execute("PRAGMA freelist_count").fetchone()[0]),
        )

    def reclaim(
        self, keep_bytes: int = 0, pause_s: float = 0.0, step_pages: int = RECLAIM_STEP_PAGES
    ) -> int:
        """Give the free pages beyond ``keep_bytes`` back to the file system,
        ``step_pages`` per transaction (short: writers wait for each), ``pause_s`` apart;
        return the bytes. Free pages are reused by later writes anyway: this returns what a
        shrinking store (a drained outbox, a log cut by retention) no longer needs."""
        returned = 0
        while True:
            if returned:
                time.sleep(pause_s)
            page_size, _, free = self.pages()
            excess = free - keep_bytes // page_size
            if excess <= 0:
                return returned
            with self.write_lock:  # executescript: steps the pragma to its end
                self.conn().executescript(f"PRAGMA incremental_vacuum({min(excess, step_pages)});")
            left = self.pages()[2]
            if left >= free:  # auto_vacuum is off: nothing can be given back
                return returned
            returned += (free - left) * page_size

    def file_bytes(self) -> int:
        """What the database takes on disk: its file, write-ahead log and shared memory."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += self.path.with_name(self.path.name + suffix).stat().st_size
        return total

    def close(self) -> None:
        """Stop the checkpoint thread; close every connection opened so far."""
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None
        self._closing = threading.Event()  # (a store may go on after a close: tests do)
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


#: Rows per statement of :func:`insert_rows` (at most 64 x 12 = 768 parameters in the stores).
ROWS_PER_INSERT = 64
#: Keys per ``IN (...)`` list in the bulk look-ups.
KEYS_PER_LOOKUP = 500

_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int = KEYS_PER_LOOKUP) -> Iterator[Sequence[_T]]:
    """``items`` in slices of at most ``size`` (one ``IN (...)`` look-up each)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def docs_by_mpid(
    conn: sqlite3.Connection, table: str, mpids: Collection[int]
) -> Iterator[tuple[int, bytes]]:
    """The ``(mpid, doc)`` rows of ``table`` among ``mpids``, a statement per
    :data:`KEYS_PER_LOOKUP`."""
    for part in chunks(list(mpids)):
        sql = f"SELECT mpid, doc FROM {table} WHERE mpid IN ({marks(len(part))})"
        for mpid, doc in conn.execute(sql, part):
            yield int(mpid), doc


@cache
def marks(count: int) -> str:
    """``?, ?, ...``: ``count`` parameter marks for an ``IN (...)`` list."""
    return ", ".join("?" * count)


def insert_rows(
    conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]], tail: str = ""
) -> list[tuple[int, int]]:
    """Run ``head`` (``"INSERT INTO t (a, b)"``, any conflict clause) with ``rows`` as
    multi-row ``VALUES`` lists, 64 rows a statement, then ``tail`` (an upsert clause); return
    each statement's row count and ``lastrowid``. A few statements instead of one per row:
    each statement hands the GIL over and, under load, waits to get it back."""
    done = []
    for start in range(0, len(rows), ROWS_PER_INSERT):
        part = rows[start : start + ROWS_PER_INSERT]
        cursor = conn.execute(_values_sql(head, len(part[0]), len(part), tail), _flat(part))
        done.append((len(part), int(cursor.lastrowid or 0)))
    return done


def rows_returning(
    conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]], tail: str
) -> list[tuple[Any, ...]]:
    """Run ``head ... VALUES (...), ... tail`` over ``rows`` as :func:`insert_rows` does,
    where ``tail`` ends in a ``RETURNING`` clause (or is one); every row it returned."""
    returned: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), ROWS_PER_INSERT):
        part = rows[start : start + ROWS_PER_INSERT]
        sql = _values_sql(head, len(part[0]), len(part), tail)
        returned.extend(conn.execute(sql, _flat(part)).fetchall())
    return returned


@cache
def _values_sql(head: str, width: int, rows: int, tail: str = "") -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES " + ", ".join([one] * rows) + (f" {tail}" if tail else "")


def _flat(rows: Sequence[Sequence[object]]) -> list[object]:
    return [value for row in rows for value in row]
