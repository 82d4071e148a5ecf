"""The segment suite runs on each deployment (:data:`~tests.deployments.DEPLOYED`); its
in-process worlds are on the test's backend."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from patchbay.backends.abstract import Backend
from tests.deployments import DEPLOYED, BackendSpec, Stores
from tests.segment.harness import SegmentWorld


@pytest.fixture(params=DEPLOYED, ids=lambda s: s.name)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """Each deployment in turn: the behavioural suite runs on both."""
    spec: BackendSpec = request.param
    return spec


@pytest.fixture
def world(backend: Backend) -> SegmentWorld:
    """A segment world on this test's backend."""
    return SegmentWorld(backend)


#: Opens an empty backend, closed on leaving the ``with``.
Fresh = Callable[[], AbstractContextManager[Backend]]


@pytest.fixture
def fresh_backends(spec: BackendSpec, tmp_path: Path) -> Fresh:
    """Opens an empty backend of ``spec`` at a location of its own each time, closed on
    leaving the ``with`` (a property test's examples each start from nothing). Each
    location is a copy of one where an empty backend was made and closed: an embedded
    store is made once, not per example; the scale-out mode's schema and topic are
    named after the location, so each copy has new ones."""
    template = tmp_path / "empty"
    template.mkdir()
    Stores(spec, template).open().close()
    numbers = itertools.count()

    @contextmanager
    def fresh() -> Iterator[Backend]:
        location = tmp_path / f"example-{next(numbers)}"
        shutil.copytree(template, location)
        stores = Stores(spec, location)
        try:
            yield stores.open()
        finally:
            stores.close_all()

    return fresh
