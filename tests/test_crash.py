"""Durability: a batch answered with 202 survives the server being killed (SIGKILL).

Client threads post bulk requests with unique ``source_request_id`` values and remember
every request answered 202. The server is killed in the middle of the load and started
again on the same data directory: every remembered batch must be there, every request must
be stored entirely or not at all, and the log must hold only whole, valid rows.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from patchbay.backends.sqlite import DB_FILE
from patchbay.collect.decode import decode_batch
from tests.conftest import Credentials, Server, add_input, start_server, stop_server

pytestmark = pytest.mark.slow

THREADS = 8
BATCHES_PER_REQUEST = 20
#: Kill the server once this many requests were acknowledged (or after MAX_LOAD_S).
ACKED_BEFORE_KILL = 150
MAX_LOAD_S = 3.0


@dataclass
class Load:
    """What the clients sent and what the server acknowledged."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Request id -> the source_request_ids of its batches, for every request sent.
    sent: dict[str, list[str]] = field(default_factory=dict)
    #: The requests answered 202 with every batch accepted.
    acked: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)


def bulk_body(request_id: str, srids: list[str]) -> bytes:
    batches = [
        {
            "source_request_id": srid,
            "environment": "development",
            "user_identities": {"customer_id": request_id},
            "events": [
                {
                    "event_type": "custom_event",
                    "data": {
                        "event_name": f"load {srid}",
                        "custom_event_type": "other",
                        "custom_attributes": {"pad": "x" * 200},
                    },
                }
            ],
        }
        for srid in srids
    ]
    return json.dumps(batches).encode()


def client(port: int, credentials: Credentials, worker: int, load: Load) -> None:
    """Post bulks until told to stop or until the server goes away."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": credentials.basic}
    try:
        n = 0
        while not load.stop.is_set():
            request_id = f"w{worker}-r{n}"
            srids = [f"{request_id}-b{i}" for i in range(BATCHES_PER_REQUEST)]
            with load.lock:
                load.sent[request_id] = srids
            try:
                conn.request("POST", "/v2/bulkevents", bulk_body(request_id, srids), headers)
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                return  # the server was killed
            if response.status != 202:
                load.errors.append(f"{request_id}: {response.status} {answer!r}")
                return
            decoded = json.loads(answer)
            if decoded != {"accepted": BATCHES_PER_REQUEST, "duplicates": 0, "rejected": []}:
                load.errors.append(f"{request_id}: {decoded}")
                return
            with load.lock:
                load.acked.add(request_id)
            n += 1
    finally:
        conn.close()


def run_load_and_kill(server: Server, load: Load) -> None:
    threads = [
        threading.Thread(target=client, args=(server.port, server.credentials, i, load))
        for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + MAX_LOAD_S
        while time.monotonic() < deadline and not load.errors:
            with load.lock:
                if len(load.acked) >= ACKED_BEFORE_KILL:
                    break
            time.sleep(0.01)
        server.process.kill()  # SIGKILL, with requests in flight
        server.process.wait(timeout=15)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)


def stored_source_request_ids(server: Server) -> list[str]:
    """Every stored batch's source_request_id, checking that each row is a whole batch."""
    ids: list[str] = []
    offsets: list[int] = []
    for stored in server.stored():
        batch = decode_batch(stored.body)  # raises on a partial or corrupt body
        assert batch.source_request_id is not None
        assert stored.input_id == server.credentials.id
        assert stored.channel == "server_to_server"
        ids.append(batch.source_request_id)
        offsets.append(stored.offset)
    assert offsets == sorted(set(offsets)), "offsets must strictly increase"
    return ids


def integrity_check(data_dir: Path) -> None:
    conn = sqlite3.connect(data_dir / DB_FILE)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        (rows,) = conn.execute("SELECT count(*) FROM batches").fetchone()
        (keys,) = conn.execute("SELECT count(*) FROM dedup").fetchone()
        assert rows == keys  # each stored batch has its de-duplication entry, and no more
    finally:
        conn.close()


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_acknowledged_batches_survive_sigkill(data_dir: Path, durability: str) -> None:
    credentials = add_input(data_dir, "crash-test")
    server = start_server(data_dir, "--durability", durability)
    server.credentials = credentials
    load = Load()
    try:
        run_load_and_kill(server, load)
    finally:
        stop_server(server)
    assert not load.errors, load.errors
    assert len(load.acked) > 0

    restarted = start_server(data_dir, "--durability", durability)
    restarted.credentials = credentials
    try:
        ids = stored_source_request_ids(restarted)
        assert len(ids) == len(set(ids)), "a batch was stored twice"
        present = set(ids)

        for request_id in load.acked:
            missing = [s for s in load.sent[request_id] if s not in present]
            assert not missing, f"acknowledged request {request_id} lost {missing}"
        # A request is appended in one transaction: all of its batches or none.
        for request_id, srids in load.sent.items():
            found = sum(s in present for s in srids)
            assert found in (0, len(srids)), f"{request_id}: {found} of {len(srids)} stored"
        assert present <= {s for srids in load.sent.values() for s in srids}

        status, body = restarted.get("/healthz")
        assert status == 200
        last = restarted.stored()[-1].offset
        assert json.loads(body)["last_offset"] == last

        # The restarted server works, and still remembers the source_request_ids.
        request_id = next(iter(load.acked))
        srids = load.sent[request_id]
        status, _, answer = restarted.post("/v2/bulkevents", bulk_body(request_id, srids))
        assert status == 202, answer
        assert json.loads(answer) == {"accepted": 0, "duplicates": len(srids), "rejected": []}
        status, _, answer = restarted.post("/v2/bulkevents", bulk_body("after", ["after-restart"]))
        assert status == 202, answer
        assert json.loads(answer)["accepted"] == 1
        assert restarted.stored()[-1].offset > last
    finally:
        stop_server(restarted)
    integrity_check(data_dir)
