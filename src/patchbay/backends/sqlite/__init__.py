"""The embedded backend: SQLite files in the data directory, the default.

* ``patchbay.db``: the batch log, the de-duplication index, inputs and modules;
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
"""

from __future__ import annotations

from pathlib import Path

from patchbay.backends.abstract import Backend
from patchbay.backends.sqlite.audiences import SEGMENT_FILE, SEGMENT_PRAGMAS, SqliteAudienceStore
from patchbay.backends.sqlite.db import Durability, SqliteDatabase
from patchbay.backends.sqlite.dedup import SqliteDedupIndex
from patchbay.backends.sqlite.inputs import SqliteInputStore
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
from patchbay.secretbox import KEY_FILE, SecretBox

__all__ = ["DB_FILE", "DELIVERIES_FILE", "SEGMENT_FILE", "STATE_FILE", "open_sqlite"]


def open_sqlite(
    data_dir: Path, durability: Durability = "full", key_file: Path | None = None
) -> Backend:
    """Open (creating what is missing) the embedded stores in ``data_dir``, which must be
    owner-only (:func:`~patchbay.datadir.prepare_data_dir`); the stored secrets are
    encrypted with the key in ``key_file`` (default: ``secrets.key`` in ``data_dir``)."""
    prepare_data_dir(data_dir)
    box = SecretBox(key_file if key_file is not None else data_dir / KEY_FILE)
    main = SqliteDatabase(data_dir / DB_FILE, durability)
    state = SqliteDatabase(data_dir / STATE_FILE, durability, STATE_PRAGMAS)
    outbox = SqliteOutbox(SqliteDatabase(data_dir / DELIVERIES_FILE, durability), box)
    segment = SqliteDatabase(data_dir / SEGMENT_FILE, durability, SEGMENT_PRAGMAS)
    return Backend(
        name="sqlite",
        log=SqliteBatchLog(main),
        dedup=SqliteDedupIndex(SqliteDatabase(data_dir / DB_FILE, "normal")),
        inputs=SqliteInputStore(main),
        state=SqliteStateStore(state),
        positions=SqliteStagePositions(state),
        modules=SqliteModuleStore(main, box),
        outputs=outbox,
        outbox=outbox,
        audiences=SqliteAudienceStore(segment, box),
    )
