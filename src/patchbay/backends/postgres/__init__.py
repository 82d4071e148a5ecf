"""The scale-out state backend: every store in one PostgreSQL database, shared by any
number of Patchbay processes (``--state postgresql://USER[:PASSWORD]@HOST:PORT/DB``).

Each store is a module of this package over :class:`~.db.PostgresDatabase`, with its
schema as versioned migrations of its own component (:meth:`~.db.PostgresDatabase.migrate`).
The stored partner credentials are sealed with the same key file as in the embedded mode
(:mod:`patchbay.secretbox`), which every process of a deployment must share.
"""

from __future__ import annotations

from patchbay.backends.abstract import Backend, BatchLog
from patchbay.backends.postgres.api_clients import PostgresApiClientStore
from patchbay.backends.postgres.audiences import PostgresAudienceStore
from patchbay.backends.postgres.db import PostgresDatabase, SchemaTooNew, masked
from patchbay.backends.postgres.dedup import PostgresDedupIndex
from patchbay.backends.postgres.files import PostgresFiles
from patchbay.backends.postgres.inputs import PostgresInputStore
from patchbay.backends.postgres.kits import PostgresKitStore
from patchbay.backends.postgres.modules import PostgresModuleStore
from patchbay.backends.postgres.outbox import PostgresOutbox
from patchbay.backends.postgres.positions import PostgresStagePositions
from patchbay.backends.postgres.state import PostgresStateStore
from patchbay.backends.records import StoreMissing
from patchbay.secretbox import SecretBox

__all__ = ["PostgresDatabase", "SchemaTooNew", "masked", "open_postgres"]


def open_postgres(
    db: PostgresDatabase, log: BatchLog, box: SecretBox, *, create: bool = True
) -> Backend:
    """Every store but the batch log (``log``) in the database ``db``, its schema migrated
    to this version (:class:`SchemaTooNew` if the database is newer). Without ``create``,
    a database Patchbay never used raises :class:`~patchbay.backends.records.StoreMissing`
    and nothing is created. Closing the backend closes ``db`` and ``log``."""
    if not create and not db.versions():
        raise StoreMissing(db.where)
    outbox = PostgresOutbox(db, box)
    return Backend(
        name="postgres",
        log=log,
        dedup=PostgresDedupIndex(db),
        inputs=PostgresInputStore(db),
        api_clients=PostgresApiClientStore(db),
        state=PostgresStateStore(db),
        positions=PostgresStagePositions(db),
        modules=PostgresModuleStore(db, box),
        outputs=outbox,
        outbox=outbox,
        audiences=PostgresAudienceStore(db, box),
        files=PostgresFiles(db),
        kits=PostgresKitStore(db, box),
        migrations=dict(db.applied),
        resources=(db,),
    )
