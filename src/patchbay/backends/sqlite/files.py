"""The files of the embedded stores, as :class:`~patchbay.backends.abstract.StoreFiles`."""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog

from patchbay.backends.sqlite.db import SqliteDatabase

log = structlog.get_logger("patchbay.backends.sqlite")


class SqliteFiles:
    """Every database file of the backend, each through the first of its databases."""

    def __init__(self, databases: Sequence[SqliteDatabase]) -> None:
        by_path: dict[str, SqliteDatabase] = {}
        for db in databases:
            by_path.setdefault(str(db.path), db)
        self._databases = list(by_path.values())

    def migrate(self) -> None:
        """Rewrite, once, each file made before freed pages could be given back
        (:meth:`~patchbay.backends.sqlite.db.SqliteDatabase.use_incremental_vacuum`)."""
        for db in self._databases:
            started = time.monotonic()
            if db.use_incremental_vacuum():
                log.info(
                    "store_rewritten_for_incremental_vacuum",
                    file=db.path.name,
                    bytes=db.file_bytes(),
                    seconds=round(time.monotonic() - started, 3),
                )

    def sizes(self) -> dict[str, int]:
        """Each file's bytes on disk, with its write-ahead log."""
        return {db.path.name: db.file_bytes() for db in self._databases}

    def reclaim(self, keep_min_bytes: int, keep_fraction: float, pause_s: float = 0.0) -> int:
        """Give each file's free pages back but for what is kept for reuse."""
        returned = 0
        for db in self._databases:
            page_size, pages, free = db.pages()
            used = (pages - free) * page_size
            returned += db.reclaim(max(keep_min_bytes, int(used * keep_fraction)), pause_s)
        return returned
