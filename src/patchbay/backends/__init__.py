"""Storage behind one seam: the interfaces (:mod:`.abstract`), their records
(:mod:`.records`), one package per backend (:mod:`.sqlite`, :mod:`.memory`), and
:func:`open_backend`, the one place that opens stores.

A new backend is a package beside these that returns a
:class:`~patchbay.backends.abstract.Backend`, a name accepted by :func:`open_backend`, and a
line in ``tests/backends/conftest.py`` so that every contract suite runs on it.
"""

from __future__ import annotations

from patchbay.backends.abstract import Backend
from patchbay.settings import Settings

__all__ = ["Backend", "open_backend"]


def open_backend(settings: Settings) -> Backend:
    """Open every store of the backend ``settings`` names (the embedded SQLite files in the
    data directory by default)."""
    if settings.backend == "memory":
        from patchbay.backends.memory import open_memory

        return open_memory()
    from patchbay.backends.sqlite import open_sqlite

    return open_sqlite(settings.data_dir, settings.durability, settings.secrets_key_file)
