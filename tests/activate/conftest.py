"""Run the behavioural tests of Activate on each deployment
(:data:`~tests.deployments.DEPLOYED`: the embedded store and the scale-out mode). The
``stores``, ``backend`` and ``deployment`` fixtures are in ``tests/conftest.py``."""

from __future__ import annotations

import pytest

from tests.deployments import DEPLOYED, BackendSpec


@pytest.fixture(params=DEPLOYED, ids=lambda s: s.name)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """Each deployment in turn: the behavioural suite runs on both."""
    spec: BackendSpec = request.param
    return spec
