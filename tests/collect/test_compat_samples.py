"""Every sample batch from mParticle's docs and every capture of the official SDKs is accepted.

The JSON samples are posted to a running server and must come back 202 and be stored with
their bytes unchanged. The raw captures (request line, headers and body exactly as the
Python and Node SDKs sent them) are replayed over a plain socket with only the credentials
and the ``Host`` header swapped.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchbay.clock import SystemClock
from patchbay.collect.inputs import create_input
from tests.conftest import (
    DATA,
    Credentials,
    Server,
    read_response,
    start_server,
    stop_server,
)
from tests.deployments import Deployment

INBOUND = DATA / "inbound"
CAPTURED = DATA / "captured"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    """One request to send and what the server must store for it."""

    id: str
    route: str
    body: bytes
    #: The exact bytes of each batch that must be stored, in order.
    stored: list[bytes]
    duplicates: int = 0


def split_array(body: bytes) -> list[bytes]:
    """The exact bytes of each element of a JSON array, found without Patchbay's decoder."""
    text = body.decode("utf-8")
    decoder = json.JSONDecoder()

    def skip(pos: int) -> int:
        while text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip(0)
    assert text[pos] == "["
    pos = skip(pos + 1)
    items: list[bytes] = []
    if text[pos] == "]":
        return items
    while True:
        _, end = decoder.raw_decode(text, pos)
        items.append(text[pos:end].encode("utf-8"))
        pos = skip(end)
        if text[pos] == "]":
            return items
        assert text[pos] == ","
        pos = skip(pos + 1)


def _short(path: Path) -> str:
    return path.stem.rsplit("__", 1)[-1]


def inbound_cases() -> list[Case]:
    """The docs' samples: single batches, bulk batches, wrapped event examples."""
    cases: list[Case] = []
    for path in sorted(INBOUND.glob("*.json")):
        name = _short(path)
        body = path.read_bytes()
        if "error-response" in path.name:
            continue  # a response body, not a batch
        if "event-examples" in path.name:
            for i, event in enumerate(json.loads(body)):
                wrapped = json.dumps({"events": [event]}).encode()
                cases.append(
                    Case(f"event-{i}-{event['event_type']}", "/v2/events", wrapped, [wrapped])
                )
        elif isinstance(json.loads(body), list):
            items = split_array(body)
            cases.append(Case(name, "/v2/bulkevents", body, items))
            # Each batch of the bulk on its own, too.
            cases += [Case(f"{name}-{i}", "/v2/events", b, [b]) for i, b in enumerate(items)]
        else:
            cases.append(Case(name, "/v2/events", body, [body]))
    return cases


def captured_cases() -> list[Case]:
    """The bodies the official Python and Node SDKs sent."""
    cases: list[Case] = []
    for path in sorted(CAPTURED.glob("*.json")):
        body = path.read_bytes()
        name = path.stem
        if path.stem.endswith("_v2_bulkevents"):
            batches = split_array(body)
            ids = [json.loads(b).get("source_request_id") for b in batches]
            kept: list[bytes] = []
            seen: set[str] = set()
            for batch, srid in zip(batches, ids, strict=True):
                if srid is not None and srid in seen:
                    continue
                if srid is not None:
                    seen.add(srid)
                kept.append(batch)
            cases.append(
                Case(name, "/v2/bulkevents", body, kept, duplicates=len(batches) - len(kept))
            )
        else:
            assert path.stem.endswith("_v2_events"), path
            cases.append(Case(name, "/v2/events", body, [body]))
    return cases


INBOUND_CASES = inbound_cases()
CAPTURED_CASES = captured_cases()
RAW_FILES = sorted(CAPTURED.glob("*.raw"))


def test_the_samples_are_all_there() -> None:
    names = [c.id for c in INBOUND_CASES]
    # 5 single batches, the bulk example (as a bulk, then each of its 2 batches alone), the
    # consent_state example, 13 event examples.
    assert len([n for n in names if n.startswith("event-")]) == 13
    assert "consent_state-example" in names
    assert "v2-bulkevents-example" in names
    assert len(INBOUND_CASES) == 22
    assert len(CAPTURED_CASES) == 5
    assert len(RAW_FILES) == 5


def test_python_sdk_bulk_capture_repeats_its_source_request_id() -> None:
    """The duplicate below is in the capture itself, not an artefact of these tests."""
    (case,) = [c for c in CAPTURED_CASES if "pypi" in c.id and "bulk" in c.id]
    ids = [json.loads(b)["source_request_id"] for b in split_array(case.body)]
    assert ids == ["7fa67be4-f83a-429f-9d73-38b660c50825"] * 2
    assert case.duplicates == 1
    assert len(case.stored) == 1


@pytest.fixture(scope="module")
def samples_server(
    tmp_path_factory: pytest.TempPathFactory, module_deployment: Deployment
) -> Iterator[Server]:
    """One server for every sample (per deployment); each test sends with an input of its
    own."""
    running = start_server(tmp_path_factory.mktemp("samples") / "data")
    running.deployment = module_deployment
    yield running
    stop_server(running)


def new_input(server: Server, name: str) -> Credentials:
    """A fresh input (so that de-duplication is scoped to one test) in ``server``'s stores."""
    backend = server.open_store()
    try:
        created = create_input(backend.inputs, name, "server", 0, SystemClock())
    finally:
        backend.close()
    return Credentials(created.id, created.key, created.secret)


def check_stored(server: Server, credentials: Credentials, case: Case) -> None:
    mine = [s for s in server.stored() if s.input_id == credentials.id]
    assert [s.body for s in mine] == case.stored
    for stored in mine:
        assert stored.channel == "server_to_server"
        assert stored.historical is False


@pytest.mark.parametrize("case", INBOUND_CASES + CAPTURED_CASES, ids=lambda c: c.id)
def test_sample_is_accepted_and_stored_unchanged(samples_server: Server, case: Case) -> None:
    credentials = new_input(samples_server, f"sample-{case.id}")
    status, _, answer = samples_server.post(case.route, case.body, auth=credentials.basic)
    assert status == 202, answer
    assert json.loads(answer) == {
        "accepted": len(case.stored),
        "duplicates": case.duplicates,
        "rejected": [],
    }
    check_stored(samples_server, credentials, case)


def test_python_sdk_bulk_capture_sent_again_is_all_duplicates(samples_server: Server) -> None:
    (case,) = [c for c in CAPTURED_CASES if "pypi" in c.id and "bulk" in c.id]
    credentials = new_input(samples_server, "sample-pypi-bulk-twice")
    for answer_expected in (
        {"accepted": 1, "duplicates": 1, "rejected": []},
        {"accepted": 0, "duplicates": 2, "rejected": []},
    ):
        status, _, answer = samples_server.post(case.route, case.body, auth=credentials.basic)
        assert status == 202, answer
        assert json.loads(answer) == answer_expected
    check_stored(samples_server, credentials, case)


# -- raw replays ---------------------------------------------------------------------------


def rewrite_raw(raw: bytes, credentials: Credentials, port: int) -> bytes:
    """``raw`` with our credentials and ``Host``; every other byte (Content-Length too) kept."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, "no end of headers"
    lines = head.split(b"\r\n")
    out = [lines[0]]
    replaced = set()
    for line in lines[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name == b"authorization":
            line = b"Authorization: " + credentials.basic.encode()
            replaced.add(name)
        elif name == b"host":
            line = b"Host: 127.0.0.1:" + str(port).encode()
            replaced.add(name)
        out.append(line)
    assert replaced == {b"authorization", b"host"}
    return b"\r\n".join(out) + sep + body


@pytest.fixture(scope="module")
def raw_server(
    tmp_path_factory: pytest.TempPathFactory, module_deployment: Deployment
) -> Iterator[Server]:
    """A fresh server for the raw replays."""
    running = start_server(tmp_path_factory.mktemp("raw") / "data")
    running.deployment = module_deployment
    yield running
    stop_server(running)


@pytest.mark.parametrize("path", RAW_FILES, ids=lambda p: p.stem)
def test_raw_capture_replayed_gets_202(raw_server: Server, path: Path) -> None:
    raw = path.read_bytes()
    credentials = new_input(raw_server, f"raw-{path.stem}")
    request = rewrite_raw(raw, credentials, raw_server.port)
    body = raw.partition(b"\r\n\r\n")[2]
    declared = re.search(rb"\r\nContent-Length: *(\d+)\r\n", raw, re.IGNORECASE)
    assert declared is not None and int(declared[1]) == len(body)

    with socket.create_connection(("127.0.0.1", raw_server.port), timeout=30) as sock:
        sock.sendall(request)
        status_line, _, answer = read_response(sock)
    assert status_line.startswith(b"HTTP/1.1 202"), (status_line, answer)

    route = request.split(b" ", 2)[1].decode()
    expected = split_array(body) if route == "/v2/bulkevents" else [body]
    ids = [json.loads(b).get("source_request_id") for b in expected]
    unique = [b for i, b in enumerate(expected) if ids[i] is None or ids[i] not in ids[:i]]
    assert json.loads(answer) == {
        "accepted": len(unique),
        "duplicates": len(expected) - len(unique),
        "rejected": [],
    }
    mine = [s.body for s in raw_server.stored() if s.input_id == credentials.id]
    assert mine == unique
