"""Client-side kits configured by Patchbay: the Web SDK fetches its configuration
(``GET /tags/JS/v2/{key}/config``) and starts the Braze kit (npm
``@mparticle/web-braze-kit``) connected to the input, with the settings Patchbay gives it;
the kit gets the events the connection's filters let through and not the others, and the
forwarding statistics the SDK reports reach Patchbay (``/metrics``, ``kits show``).
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
        "--exclude-event-name",
        "Filtered event",
        "--exclude-event-type",
        "Navigation",
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

    # what the SDK hands the kit, recorded on the way in (filters apply before)
    sdk.run(
        """() => {
            window.__kitEvents = [];
            const kit = mParticle._getActiveForwarders()[0];
            const process = kit.process.bind(kit);
            kit.process = (event) => {
                window.__kitEvents.push(event.EventName);
                return process(event);
            };
        }"""
    )
    sdk.run(
        """() => {
            mParticle.logEvent('Kit event', mParticle.EventType.Other);
            mParticle.logEvent('Filtered event', mParticle.EventType.Other);
            mParticle.logEvent('Menu opened', mParticle.EventType.Navigation);
            mParticle.logEvent('Second kit event', mParticle.EventType.Other);
        }"""
    )
    sdk.wait_for("window.__kitEvents.includes('Second kit event')", "the kit's second event")
    assert sdk.run("window.__kitEvents") == ["Kit event", "Second kit event"]
    # the SDK's forwarding statistics, in /metrics and kept with the kit
    metric = (
        'patchbay_kit_forwarded_events_total{event_type="custom_event",input="website",'
        'kit="Appboy"} 2.0'
    )
    wait_until(lambda: metric in patchbay.get("/metrics")[1].decode(), "the statistics")

    def forwarded() -> int:
        done = run_cli("kits", "show", "Appboy-v4", "--json", data_dir=patchbay.data_dir)
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout)["forwarded"]["events"])

    wait_until(lambda: forwarded() >= 2, "the statistics kept with the kit")
    sent = wait_until(
        lambda: [r for r in site.braze if r.path.startswith("/braze/api/v3/")],
        "Braze's first request to the stub",
        timeout_s=30,
    )
    assert sent[0].headers.get("X-Braze-Api-Key") == BRAZE_API_KEY
    assert any(mpid in r.body.decode(errors="replace") for r in sent)
    # what reached Braze is what the kit was given
    bodies = " ".join(r.body.decode(errors="replace") for r in site.braze)
    assert "Filtered event" not in bodies and "Menu opened" not in bodies
    assert sdk.hosts() <= {"127.0.0.1", "localhost"}
