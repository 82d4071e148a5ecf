"""Run the behavioural tests of Collect on each deployment
(:data:`~tests.deployments.DEPLOYED`: the embedded store and the scale-out mode)."""

from __future__ import annotations

import pytest

from tests.deployments import DEPLOYED, BackendSpec


@pytest.fixture(scope="module", params=DEPLOYED, ids=lambda s: s.name)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    """Each deployment in turn: the behavioural suite runs on both (of module scope, so
    that a module's server, started once, serves every test of one deployment)."""
    spec: BackendSpec = request.param
    return spec
