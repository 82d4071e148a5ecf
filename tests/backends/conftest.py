"""Run every contract suite of ``tests/backends/`` on every backend
(:data:`~tests.deployments.BACKENDS`; the log and append suites also on
:data:`~tests.deployments.PARTITIONED`). The ``stores`` and ``backend`` fixtures are in
``tests/conftest.py``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from patchbay.backends.postgres import PostgresDatabase
from tests import infra
from tests.deployments import BACKENDS, BackendSpec


def spec_of(request: pytest.FixtureRequest) -> BackendSpec:
    spec: BackendSpec = request.param
    return spec


@pytest.fixture(params=BACKENDS, ids=lambda s: s.name)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """Each backend in turn (a suite may override this fixture to add
    :data:`~tests.deployments.PARTITIONED`)."""
    return spec_of(request)


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
