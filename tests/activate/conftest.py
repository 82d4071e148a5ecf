"""Run the behavioural suite of Activate on each of :data:`~tests.deployments.DEPLOYED`."""

from __future__ import annotations

import pytest

from tests.deployments import DEPLOYED, BackendSpec


@pytest.fixture(params=DEPLOYED, ids=lambda s: s.name)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """Each deployment in turn: the behavioural suite runs on both."""
    spec: BackendSpec = request.param
    return spec
