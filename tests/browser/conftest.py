"""Fixtures of the browser tests: the test site and one Chromium for the package, a
Patchbay on HTTPS per module, a fresh page (empty storage) per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from patchbay.http.devcert import DevCert
from tests.browser.harness import SdkPage, Site, launch, missing, start_site
from tests.conftest import Server, add_input, start_server, stop_server, tls_args


@pytest.fixture(scope="package")
def site(dev_cert: DevCert) -> Iterator[Site]:
    """The test site on ``https://127.0.0.1:PORT``."""
    running = start_site(dev_cert)
    yield running
    running.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for every browser test (stopped with the package: Playwright's
    event loop must not outlive it into other tests)."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def patchbay(dev_cert: DevCert, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A ``patchbay serve`` on ``https://localhost:PORT`` with a ``web`` input (its key in
    ``credentials.key``)."""
    data_dir = tmp_path_factory.mktemp("patchbay") / "data"
    credentials = add_input(data_dir, "website", type_="web")
    server = start_server(
        data_dir,
        *tls_args(dev_cert),
        "--no-delivery-process",
        "--no-segment-process",
        ca=dev_cert.ca,
    )
    server.credentials = credentials
    yield server
    stop_server(server)


@pytest.fixture
def domain(patchbay: Server) -> str:
    """The SDK's ``domain`` option for ``patchbay``."""
    return f"localhost:{patchbay.port}"


@pytest.fixture
def sdk(browser: Any, site: Site) -> Iterator[SdkPage]:
    """The site's page in a new browser context (no stored SDK state)."""
    context = browser.new_context(ignore_https_errors=True)
    page = SdkPage(context.new_page(), site)
    page.open("/")
    yield page
    context.close()
