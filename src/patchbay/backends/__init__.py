"""Storage behind one seam: the interfaces (:mod:`.abstract`), their records
(:mod:`.records`), one package per backend (:mod:`.sqlite`, :mod:`.memory`), and
:func:`open_backend`, the one place that opens stores.

A new backend is a package beside these that returns a
:class:`~patchbay.backends.abstract.Backend`, a name accepted by :func:`open_backend`, and a
line in ``tests/backends/conftest.py`` so that every contract suite runs on it.
"""

from __future__ import annotations

from patchbay.backends.abstract import Backend
from patchbay.backends.records import StoreMissing, StoreUnavailable
from patchbay.settings import Settings

__all__ = [
    "EMBEDDED_BACKENDS",
    "Backend",
    "StoreMissing",
    "StoreUnavailable",
    "check_store",
    "open_backend",
]

#: The backends whose store belongs to one ``serve`` (its data directory, or its memory).
EMBEDDED_BACKENDS = ("sqlite", "memory")


def open_backend(settings: Settings, *, create: bool = True) -> Backend:
    """Open every store of the backend ``settings`` names (the embedded SQLite files in the
    data directory by default).

    ``create=False`` opens only a store that exists: without one it raises
    :class:`StoreMissing` and creates nothing (the commands that only read or change what a
    store holds). A store that cannot be opened or created raises
    :class:`StoreUnavailable`. The memory backend always starts empty.
    """
    if settings.state is not None or settings.log is not None:
        return _open_scaled(settings, create=create)
    if settings.backend == "memory":
        from patchbay.backends.memory import open_memory

        return open_memory()
    from patchbay.backends.sqlite import open_sqlite

    return open_sqlite(
        settings.data_dir, settings.durability, settings.secrets_key_file, create=create
    )


def _open_scaled(settings: Settings, *, create: bool) -> Backend:
    """The scale-out mode: the batch log in Kafka, every other store in PostgreSQL, the key
    of the stored secrets in a file (``secrets.key`` in the data directory by default),
    which every process of the deployment must share (docs/scale-out.md)."""
    from patchbay.backends.kafka import KafkaBatchLog
    from patchbay.backends.kafka.options import KafkaOptions
    from patchbay.backends.postgres import PostgresDatabase, open_postgres
    from patchbay.config import ConfigError
    from patchbay.datadir import prepare_data_dir
    from patchbay.secretbox import SecretBox, key_path

    if settings.state is None or settings.log is None:
        raise ConfigError(
            "the scale-out mode needs both --log kafka://... and --state postgresql://..."
            " (PATCHBAY_LOG and PATCHBAY_STATE)"
        )
    if settings.secrets_key_file is None:
        prepare_data_dir(settings.data_dir)
    box = SecretBox(key_path(settings.data_dir, settings.secrets_key_file))
    db = PostgresDatabase(settings.state.reveal(), pool_size=settings.state_pool_size)
    try:
        # No retention of Kafka's own: it would remove batches a stage has not read yet.
        # Patchbay's retention pass removes what every stage has passed (retention.py).
        log = KafkaBatchLog(
            settings.log,
            topic=settings.kafka_topic,
            partitions=settings.kafka_partitions,
            replication=settings.kafka_replication_factor,
            options=KafkaOptions.from_settings(settings),
        )
    except BaseException:
        db.close()
        raise
    try:
        return open_postgres(db, log, box, create=create)
    except BaseException:
        log.close()
        db.close()
        raise


def check_store(settings: Settings) -> None:
    """Raise :class:`StoreMissing` (or :class:`StoreUnavailable`) unless the store
    ``settings`` names exists; creates nothing. The memory backend always exists; the
    scale-out mode's database is checked when it is opened."""
    if settings.backend == "memory" or settings.state is not None:
        return
    from patchbay.backends.sqlite import check_sqlite

    check_sqlite(settings.data_dir)
