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

__all__ = ["Backend", "StoreMissing", "StoreUnavailable", "check_store", "open_backend"]


def open_backend(settings: Settings, *, create: bool = True) -> Backend:
    """Open every store of the backend ``settings`` names (the embedded SQLite files in the
    data directory by default).

    ``create=False`` opens only a store that exists: without one it raises
    :class:`StoreMissing` and creates nothing (the commands that only read or change what a
    store holds). A store that cannot be opened or created raises
    :class:`StoreUnavailable`. The memory backend always starts empty.
    """
    if settings.backend == "memory":
        from patchbay.backends.memory import open_memory

        return open_memory()
    from patchbay.backends.sqlite import open_sqlite

    return open_sqlite(
        settings.data_dir, settings.durability, settings.secrets_key_file, create=create
    )


def check_store(settings: Settings) -> None:
    """Raise :class:`StoreMissing` (or :class:`StoreUnavailable`) unless the store
    ``settings`` names exists; creates nothing. The memory backend always exists."""
    if settings.backend == "memory":
        return
    from patchbay.backends.sqlite import check_sqlite

    check_sqlite(settings.data_dir)
