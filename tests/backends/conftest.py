"""Run every contract suite of ``tests/backends/`` on every backend.

Each backend is a :class:`BackendSpec` in :data:`BACKENDS`: a name, a function that opens
the :class:`~patchbay.backends.abstract.Backend` kept at a location (a fresh temporary
directory per test), and whether it ``persists``. Opening the same location again must
reopen the same data; tests that reopen are marked ``@pytest.mark.persists`` and are skipped,
explicitly, on a backend that does not persist.

To add a backend, append one ``BackendSpec`` to :data:`BACKENDS` whose
``open`` connects to a database or schema derived from the location (creating it when
missing): every suite then runs on it. :data:`PARTITIONED` lists extra configurations with
several log partitions; the log and append suites run on those too.

The ``postgres`` backends are the scale-out mode: every store in a schema of the test's own
on this session's PostgreSQL server, the log in a topic of its own on this session's Kafka
broker (both started by ``scripts/infra.sh``, :mod:`tests.infra`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchbay.backends.abstract import Backend
from patchbay.backends.kafka import KafkaBatchLog
from patchbay.backends.memory import open_memory
from patchbay.backends.postgres import PostgresDatabase, open_postgres
from patchbay.backends.sqlite import open_sqlite
from patchbay.secretbox import SecretBox, key_path
from tests import infra


@dataclass(frozen=True)
class BackendSpec:
    """A backend under test."""

    name: str
    #: Opens the backend kept at ``location``; called again, reopens the same data.
    open: Callable[[Path], Backend]
    #: Whether data survives closing and reopening (``open`` again sees it).
    persists: bool
    #: Whether an append interrupted part way stores none of its batches (not Kafka's:
    #: see :meth:`~patchbay.backends.abstract.BatchLog.append`).
    atomic: bool = True
    #: Whether several resolvers may share its state: a resolve commit then checks the
    #: links and profiles it was decided on (a store with one writer may skip the check).
    shared_state: bool = False


def _location_name(location: Path) -> str:
    """A name of the test's own for what it keeps on a shared server."""
    return hashlib.sha1(str(location).encode()).hexdigest()[:20]


def _scaled(partitions: int) -> Callable[[Path], Backend]:
    """The scale-out mode (:func:`~patchbay.backends.postgres.open_postgres`): every store in
    a schema of the test's own on this session's PostgreSQL server, the log in a topic of its
    own (``partitions`` of them) on this session's Kafka broker."""

    def open_scaled(location: Path) -> Backend:
        name = _location_name(location)
        (location / "data").mkdir(mode=0o700, exist_ok=True)
        box = SecretBox(key_path(location / "data", None))
        db = PostgresDatabase(infra.postgres_url(), schema=f"t_{name}", pool_size=4)
        try:
            topic = f"patchbay.test.{name}"
            log = KafkaBatchLog(infra.kafka_url(), topic=topic, partitions=partitions)
        except BaseException:
            db.close()
            raise
        return open_postgres(db, log, box)

    return open_scaled


BACKENDS: list[BackendSpec] = [
    BackendSpec("memory", lambda _location: open_memory(), persists=False),
    BackendSpec("sqlite", lambda location: open_sqlite(location / "data"), persists=True),
    BackendSpec(
        "sqlite-normal", lambda location: open_sqlite(location / "data", "normal"), persists=True
    ),
    BackendSpec("postgres", _scaled(1), persists=True, atomic=False, shared_state=True),
]

#: Configurations with several log partitions, for the suites of the log and of appends.
PARTITIONED: list[BackendSpec] = [
    BackendSpec("memory-3", lambda _location: open_memory(partitions=3), persists=False),
    BackendSpec("postgres-3", _scaled(3), persists=True, atomic=False, shared_state=True),
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "persists: reopens the backend (skipped where the backend does not persist)"
    )


def spec_of(request: pytest.FixtureRequest) -> BackendSpec:
    spec: BackendSpec = request.param
    return spec


@pytest.fixture(params=BACKENDS, ids=lambda s: s.name)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """Each backend in turn (a suite may override this fixture to add :data:`PARTITIONED`)."""
    return spec_of(request)


class Stores:
    """Opens and reopens the backend of one test, and closes whatever is left open."""

    def __init__(self, spec: BackendSpec, location: Path) -> None:
        self.spec = spec
        self.location = location
        self._open: list[Backend] = []

    def open(self) -> Backend:
        """Open the backend at this test's location."""
        backend = self.spec.open(self.location)
        self._open.append(backend)
        return backend

    def reopen(self, backend: Backend) -> Backend:
        """Close ``backend`` and open the same data again (tests doing this are marked
        ``persists``)."""
        if not self.spec.persists:
            raise RuntimeError("a test that reopens must be marked @pytest.mark.persists")
        self._open.remove(backend)
        backend.close()
        return self.open()

    def close_all(self) -> None:
        while self._open:
            self._open.pop().close()


@pytest.fixture
def stores(spec: BackendSpec, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stores]:
    """The opener of this test's backend; a ``persists`` test is skipped where data does
    not survive a reopen."""
    if request.node.get_closest_marker("persists") and not spec.persists:
        pytest.skip(f"{spec.name} backend does not persist")
    made = Stores(spec, tmp_path)
    yield made
    made.close_all()


@pytest.fixture
def backend(stores: Stores) -> Backend:
    """The backend of this test, freshly opened and empty."""
    return stores.open()


@pytest.fixture
def two_databases() -> Iterator[tuple[PostgresDatabase, PostgresDatabase]]:
    """Two pools on one fresh schema of the session's server: two processes sharing a
    database, for the PostgreSQL stores' concurrency tests."""
    schema = "c_" + uuid.uuid4().hex[:12]
    first = PostgresDatabase(infra.postgres_url(), schema=schema, pool_size=4)
    second = PostgresDatabase(infra.postgres_url(), schema=schema, pool_size=4)
    yield first, second
    second.close()
    first.close()
