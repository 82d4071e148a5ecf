"""A property-based API test: schemathesis draws requests for every operation of
``/openapi.json`` and sends them to a real ``patchbay serve``; each answer must be no 500,
and its status code, content type and body must be the ones the document gives.

Bounded (a few examples per operation, a fixed seed): ``pytest tests/openapi -m slow``
runs it, within about two minutes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from patchbay.openapi import build_openapi
from tests.conftest import (
    ApiClientCredentials,
    Credentials,
    Server,
    add_api_client,
    add_input,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "admin-token-schemathesis"
METRICS_TOKEN = "metrics-token-schemathesis"

#: Requests drawn for each operation (more: ``PATCHBAY_API_EXAMPLES=200``).
MAX_EXAMPLES = int(os.environ.get("PATCHBAY_API_EXAMPLES", "10"))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Live:
    """The server, and the credentials of each API."""

    server: Server
    input: Credentials
    client: ApiClientCredentials

    def authorization(self, path: str) -> str:
        """The ``Authorization`` that the route of ``path`` accepts."""
        if path.startswith("/admin/"):
            return f"Bearer {ADMIN_TOKEN}"
        if path == "/metrics":
            return f"Bearer {METRICS_TOKEN}"
        if path.startswith(("/oauth/", "/userprofile/")):
            return self.client.basic
        return self.input.basic


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """``patchbay serve`` on a fresh data dir with an input, an API client, an admin token
    and a metrics token."""
    data_dir = tmp_path_factory.mktemp("schemathesis") / "data"
    credentials = add_input(data_dir, "app")
    client = add_api_client(data_dir, "crm")
    token_file = data_dir.parent / "metrics.token"
    token_file.write_text(METRICS_TOKEN + "\n")
    token_file.chmod(0o600)
    server = start_server(
        data_dir, "--admin-token", ADMIN_TOKEN, "--metrics-token-file", str(token_file)
    )
    yield Live(server, credentials, client)
    stop_server(server)


@pytest.fixture(scope="module")
def api_schema(live: Live) -> OpenApiSchema:
    """The document as the server serves it, loaded by schemathesis."""
    config = SchemathesisConfig.from_dict({"base-url": live.server.url})
    return schemathesis.openapi.from_url(live.server.url + "/openapi.json", config=config)


#: Every operation of the document (the same as the server's, save the token URL).
OPERATIONS = [
    operation["operationId"]
    for item in build_openapi("http://127.0.0.1/")["paths"].values()
    for operation in item.values()
]


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_operation_conforms(operation_id: str, api_schema: OpenApiSchema, live: Live) -> None:
    """Valid and invalid requests alike get an answer the document describes."""
    operation = api_schema.find_operation_by_id(operation_id)
    headers = {"Authorization": live.authorization(operation.path)}
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: Case[Any]) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    conforms()
