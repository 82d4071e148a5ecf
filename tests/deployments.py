"""The backends the tests run on, and the deployments ``patchbay`` commands run against.

Each backend is a :class:`BackendSpec`: a name, a function that opens the
:class:`~patchbay.backends.abstract.Backend` kept at a location (a fresh temporary directory
per test), and whether it ``persists``. Opening the same location again must reopen the same
data; tests that reopen are marked ``@pytest.mark.persists`` and are skipped, explicitly, on
a backend that does not persist.

- :data:`BACKENDS`: every backend; the contract suites of ``tests/backends/`` run on each.
  To add a backend, append one ``BackendSpec`` whose ``open`` connects to a database or
  schema derived from the location (creating it when missing).
- :data:`PARTITIONED`: configurations with several log partitions (the log and append
  suites run on those too).
- :data:`DEPLOYED`: the two ways Patchbay is deployed, the embedded store and the
  scale-out mode; the behavioural suites of Collect, Resolve, Segment and Activate run on
  both (their ``conftest.py`` parametrizes the ``spec`` fixture over them).

The ``postgres`` backends are the scale-out mode: every store in a schema of the test's own
on this session's PostgreSQL server, the log in a topic of its own on this session's Kafka
broker (both started by ``scripts/infra.sh``, :mod:`tests.infra`). A test that runs
``patchbay`` commands or ``patchbay serve`` gets the same through :class:`Deployment`: a
database and a topic of its own, named in the environment the commands inherit.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from patchbay.backends.abstract import Backend
from patchbay.backends.kafka import KafkaBatchLog
from patchbay.backends.memory import open_memory
from patchbay.backends.postgres import PostgresDatabase, open_postgres
from patchbay.backends.sqlite import open_sqlite
from patchbay.secretbox import SecretBox, key_path
from patchbay.settings import Settings
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


#: The deployments the behavioural suites run on: the embedded store (its derived state not
#: synced commit by commit, as ``serve`` keeps it) and the scale-out mode.
DEPLOYED: list[BackendSpec] = [
    BackendSpec("sqlite", lambda location: open_sqlite(location / "data", "normal"), persists=True),
    BACKENDS[3],
]


@dataclass(frozen=True)
class Deployment:
    """Where the ``patchbay`` commands and ``patchbay serve`` of one test keep their data:
    the embedded store in the data directory, or (``scaled``) a PostgreSQL database and a
    Kafka topic of the test's own, named in the environment (``PATCHBAY_STATE``,
    ``PATCHBAY_LOG``, ...) that the commands inherit."""

    spec: BackendSpec
    #: The environment variables the commands need (empty for the embedded store).
    env: dict[str, str]

    @property
    def scaled(self) -> bool:
        return bool(self.env)

    def open(self, data_dir: Path, *, create: bool = False) -> Backend:
        """The backend the commands of this deployment use with ``data_dir`` (the key of
        stored secrets is in it in both modes), created if missing with ``create``; the
        caller closes it."""
        from patchbay.backends import open_backend

        return open_backend(self.settings(data_dir), create=create)

    def settings(self, data_dir: Path, **flags: object) -> Settings:
        """The settings of this deployment's commands with ``data_dir`` and ``flags``."""
        from patchbay.config import settings_from_process

        with _environment(self.env):
            return settings_from_process({"data_dir": data_dir, **flags}, None)


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def new_deployment(spec: BackendSpec) -> Deployment:
    """A deployment of ``spec``: for the scale-out mode, a fresh database and topic names."""
    if not spec.shared_state:
        return Deployment(spec, {})
    import psycopg

    name = "d_" + uuid.uuid4().hex[:12]
    server = infra.postgres_url()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    return Deployment(
        spec,
        {
            "PATCHBAY_STATE": server.rpartition("/")[0] + "/" + name,
            "PATCHBAY_LOG": infra.kafka_url(),
            "PATCHBAY_KAFKA_TOPIC": f"patchbay.{name}",
            "PATCHBAY_KAFKA_PARTITIONS": "1",
            "PATCHBAY_KAFKA_GROUP": f"patchbay.{name}",
            "PATCHBAY_STATE_POOL_SIZE": "4",
        },
    )
