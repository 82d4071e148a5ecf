"""The config cache of :class:`~patchbay.kits.http.KitsApi`: built once, dropped when kits
change (seen within a second), entries expiring; and forwarding counts flushed to the
store, kept when the store fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.applications import Starlette

from patchbay.backends.abstract import Backend
from patchbay.backends.records import KitForwarded
from patchbay.clock import ManualClock
from patchbay.collect.inputs import create_input
from patchbay.kits.http import CACHE_TTL_S, ForwardingStat, KitsApi
from patchbay.kits.service import KitService
from patchbay.metrics import Metrics
from tests.http.test_layer import call

MIXPANEL = Path(__file__).parents[2] / "examples" / "kits" / "mixpanel.json"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(backend: Backend, clock: ManualClock) -> KitService:
    create_input(backend.inputs, "site", "web", 0, clock)
    made = KitService(backend, clock)
    made.register(MIXPANEL.read_bytes())
    return made


def key_of(backend: Backend) -> str:
    site = backend.inputs.get_input("site")
    assert site is not None
    return backend.inputs.credentials(site.id)[0].key


def kit_names(body: bytes | None) -> list[str]:
    assert body is not None
    return [k["name"] for k in json.loads(body)["kitConfigs"]]


def test_config_cache(backend: Backend, service: KitService, clock: ManualClock) -> None:
    api = KitsApi(service, clock, Metrics())
    key = key_of(backend)
    builds = 0
    build = api._build

    def counted(key: str, development: bool) -> bytes | None:
        nonlocal builds
        builds += 1
        return build(key, development)

    api._build = counted  # type: ignore[method-assign]
    assert kit_names(api._cached(key, False)) == []
    assert kit_names(api._cached(key, False)) == [] and builds == 1
    service.connect("MixpanelEventForwarder", "site", {"token": "t"})
    clock.advance(0.5)
    assert kit_names(api._cached(key, False)) == [] and builds == 1  # checked once a second
    clock.advance(0.6)
    assert kit_names(api._cached(key, False)) == ["MixpanelEventForwarder"] and builds == 2
    clock.advance(CACHE_TTL_S)
    api._cached(key, False)
    assert builds == 3  # expired
    assert api._cached("pk_nobody", False) is None


def test_forwarding_counts_are_flushed_and_kept_on_failure(
    backend: Backend, service: KitService, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = KitsApi(service, clock, Metrics())
    api._fresh()
    api.count("site", [ForwardingStat(mid=10, dt=4), ForwardingStat(mid=77)])

    def failing(counts: dict[str, int], at_ms: int) -> None:
        raise OSError("disk gone")

    with monkeypatch.context() as patched:
        patched.setattr(backend.kits, "add_forwarded", failing)
        with pytest.raises(OSError):
            api.flush()
    api.count("site", [ForwardingStat(mid=10, dt=3)])
    api.flush()
    now = clock.now_ms()
    assert backend.kits.forwarded() == [
        KitForwarded("77", 1, now),
        KitForwarded("MixpanelEventForwarder", 2, now),
    ]


def test_config_and_forwarding_keep_to_the_inputs_rate_limit(
    backend: Backend, service: KitService, clock: ManualClock
) -> None:
    """Each route takes a token of the input's bucket per request (the Events API's limit,
    per second): over it, a 429 with ``Retry-After``; a second later, answered again."""
    create_input(backend.inputs, "limited", "web", 2, clock)
    limited = backend.inputs.get_input("limited")
    assert limited is not None
    key = backend.inputs.credentials(limited.id)[0].key
    app = Starlette(routes=KitsApi(service, clock, Metrics()).routes())
    stat = json.dumps({"mid": 10, "dt": 4, "n": "e"}).encode()
    for method, path, body, ok in (
        ("GET", f"/tags/JS/v2/{key}/config?env=0", b"", 200),
        ("POST", f"/webevents/v1/JS/{key}/Forwarding", stat, 202),
    ):
        assert [call(app, method, path, body=body)[0] for _ in range(2)] == [ok, ok]
        status, headers, answer = call(app, method, path, body=body)
        assert (status, headers["retry-after"]) == (429, "1")
        assert json.loads(answer)["errors"][0]["code"] == "TOO_MANY_REQUESTS"
        clock.advance(1.0)
        assert call(app, method, path, body=body)[0] == ok
        clock.advance(1.0)
