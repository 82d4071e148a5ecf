"""Client-side kits configured by Patchbay: the Web SDK fetches its configuration
(``GET /tags/JS/v2/{key}/config``) and starts the Braze kit (npm
``@mparticle/web-braze-kit``) connected to the input, with the settings Patchbay gives it;
Braze's own calls go to the test site's stub. Skipped where the endpoint is not served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.harness import SdkPage, Site, needs_browser, skip_unless_served, wait_until
from tests.conftest import Server, run_cli

pytestmark = [pytest.mark.slow, needs_browser]

BRAZE_API_KEY = "braze-test-key"
BRAZE_DESCRIPTOR = Path(__file__).parents[2] / "examples" / "kits" / "braze.json"


def connect_braze_kit(server: Server, cluster_host: str) -> None:
    """Register the Braze kit (examples/kits/braze.json) and connect it to the server's web
    input with the CLI, its cluster being ``cluster_host``."""
    settings = {
        "apiKey": BRAZE_API_KEY,
        "cluster": json.dumps({"JS": cluster_host}),
        "userIdentificationType": "MPID",
        "doNotLoadFontAwesome": "true",
        "enableHtmlInAppMessages": "false",
    }
    done = run_cli("kits", "register", str(BRAZE_DESCRIPTOR), data_dir=server.data_dir)
    assert done.returncode == 0, done.stderr
    flags = [arg for key, value in settings.items() for arg in ("--setting", f"{key}={value}")]
    done = run_cli(
        "kits",
        "connect",
        "Appboy-v4",
        "--input",
        server.credentials.id,
        *flags,
        data_dir=server.data_dir,
    )
    assert done.returncode == 0, done.stderr


def test_the_braze_kit_starts_with_patchbays_settings(
    sdk: SdkPage, site: Site, patchbay: Server, domain: str
) -> None:
    key = patchbay.credentials.key
    skip_unless_served(patchbay, f"/tags/JS/v2/{key}/config", "the Web SDK's config endpoint")
    connect_braze_kit(patchbay, site.braze_host)
    site.braze.clear()
    sdk.open("/braze.html")
    mpid = sdk.init(key, domain, identifyRequest={"userIdentities": {"customerid": "web-kit-1"}})
    assert f"https://{domain}/tags/JS/v2/{key}/config?env=0" in sdk.requests
    active = sdk.run("mParticle._getActiveForwarders().map(f => [f.name, f.id, f.settings])")
    [(name, module_id, settings)] = active
    assert (name, module_id, settings["apiKey"]) == ("Appboy", 28, BRAZE_API_KEY)
    assert json.loads(settings["cluster"]) == {"JS": site.braze_host}

    sdk.run("mParticle.logEvent('Kit event', mParticle.EventType.Other)")
    sent = wait_until(
        lambda: [r for r in site.braze if r.path.startswith("/braze/api/v3/")],
        "Braze's first request to the stub",
        timeout_s=30,
    )
    assert sent[0].headers.get("X-Braze-Api-Key") == BRAZE_API_KEY
    assert any(mpid in r.body.decode(errors="replace") for r in sent)
    assert sdk.hosts() <= {"127.0.0.1", "localhost"}
