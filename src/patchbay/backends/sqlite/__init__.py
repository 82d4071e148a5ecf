"""The embedded backend: SQLite files in the data directory, the default.

* ``patchbay.db``: the batch log, the de-duplication index, inputs, API clients, modules
  and kits;
* ``state.db``: the resolve state (profiles, identity links, merges, resolved users, the
  checkpoints of every stage), apart so that collecting and resolving never share a lock;
* ``deliveries.db``: outputs, connections and the outbox, apart so that a busy outbox never
  slows the log;
* ``segment.db``: audiences, their connections and the segment stage's state (conditions,
  builds, user states, memberships, pending membership changes, its checkpoint), apart so
  that the segment stage's commits never wait on the resolve stage's.

Every file is in WAL mode with ``synchronous=FULL`` by default (``durability="normal"``
survives a crash of the process, not of the machine), and owner-only (``0600``). The
credentials stored to call partners are encrypted with the key of a file apart
(:mod:`patchbay.secretbox`; ``secrets.key`` in the data directory by default).

Every file has ``auto_vacuum=INCREMENTAL``, so that the space of deleted rows can be given
back (:class:`~patchbay.backends.sqlite.files.SqliteFiles`); a file made before that is
rewritten once (``VACUUM``) the first time it is opened.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from patchbay.backends.abstract import Backend
from patchbay.backends.records import StoreMissing, StoreUnavailable
from patchbay.backends.sqlite.api_clients import SqliteApiClientStore
from patchbay.backends.sqlite.audiences import (
    SEGMENT_CHECKPOINT_EVERY_S,
    SEGMENT_FILE,
    SEGMENT_PRAGMAS,
    SqliteAudienceStore,
)
from patchbay.backends.sqlite.db import Durability, SqliteDatabase
from patchbay.backends.sqlite.dedup import SqliteDedupIndex
from patchbay.backends.sqlite.files import SqliteFiles
from patchbay.backends.sqlite.inputs import SqliteInputStore
from patchbay.backends.sqlite.kits import SqliteKitStore
from patchbay.backends.sqlite.log import DB_FILE, SqliteBatchLog
from patchbay.backends.sqlite.modules import SqliteModuleStore
from patchbay.backends.sqlite.outbox import DELIVERIES_FILE, SqliteOutbox
from patchbay.backends.sqlite.state import (
    STATE_FILE,
    STATE_PRAGMAS,
    SqliteStagePositions,
    SqliteStateStore,
)
from patchbay.datadir import prepare_data_dir
from patchbay.errors import StorageFull
from patchbay.secretbox import SecretBox, key_path

__all__ = [
    "DB_FILE",
    "DELIVERIES_FILE",
    "SEGMENT_FILE",
    "STATE_FILE",
    "check_sqlite",
    "open_sqlite",
]


def check_sqlite(data_dir: Path) -> None:
    """Raise :class:`~patchbay.backends.records.StoreMissing` unless ``data_dir`` holds a
    store (its ``patchbay.db``); creates nothing."""
    if (data_dir / DB_FILE).is_file():
        return
    if data_dir.exists() and not data_dir.is_dir():
        raise StoreUnavailable(data_dir, "not a directory")
    raise StoreMissing(data_dir)


def open_sqlite(
    data_dir: Path,
    durability: Durability = "full",
    key_file: Path | None = None,
    *,
    create: bool = True,
) -> Backend:
    """Open the embedded stores in ``data_dir``, creating what is missing; ``data_dir``
    must be owner-only (:func:`~patchbay.datadir.prepare_data_dir`), and the stored
    secrets are encrypted with the key in ``key_file`` (default: ``secrets.key`` in
    ``data_dir``).

    With ``create=False`` a directory without ``patchbay.db`` raises
    :class:`~patchbay.backends.records.StoreMissing` and nothing is created. A store that
    cannot be opened or created (a path through a regular file, no permission, a file that
    is not a database, a full disk) raises :class:`~patchbay.backends.records.StoreUnavailable`.
    """
    if not create:
        check_sqlite(data_dir)
    opened: list[SqliteDatabase] = []

    def database(
        path: Path,
        durability: Durability,
        pragmas: Iterable[str] = (),
        checkpoint_every_s: float | None = None,
    ) -> SqliteDatabase:
        db = SqliteDatabase(path, durability, pragmas, checkpoint_every_s)
        opened.append(db)
        return db

    try:
        prepare_data_dir(data_dir)
        box = SecretBox(key_path(data_dir, key_file))
        main = database(data_dir / DB_FILE, durability)
        state = database(data_dir / STATE_FILE, durability, STATE_PRAGMAS)
        outbox = SqliteOutbox(database(data_dir / DELIVERIES_FILE, durability), box)
        segment = database(
            data_dir / SEGMENT_FILE, durability, SEGMENT_PRAGMAS, SEGMENT_CHECKPOINT_EVERY_S
        )
        files = SqliteFiles(opened)
        files.migrate()  # before any store creates a table in a new file
        return Backend(
            name="sqlite",
            log=SqliteBatchLog(main),
            dedup=SqliteDedupIndex(database(data_dir / DB_FILE, "normal")),
            inputs=SqliteInputStore(main),
            api_clients=SqliteApiClientStore(main),
            state=SqliteStateStore(state),
            positions=SqliteStagePositions(state),
            modules=SqliteModuleStore(main, box),
            outputs=outbox,
            outbox=outbox,
            audiences=SqliteAudienceStore(segment, box),
            files=files,
            kits=SqliteKitStore(main, box),
        )
    except (OSError, sqlite3.Error, StorageFull) as exc:
        for db in opened:
            db.close()
        raise StoreUnavailable.of(data_dir, exc) from exc
