"""Fixtures shared by the test suite: data files, a store, and a real ``patchbay serve``."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import patchbay.backoff
import patchbay.logs
from patchbay.backends.abstract import Backend
from patchbay.backends.records import LogPosition, StoredBatch
from patchbay.backends.sqlite import open_sqlite
from patchbay.clock import ManualClock, SystemClock
from patchbay.http.devcert import DevCert, make_dev_cert
from tests.deployments import DEPLOYED, BackendSpec, Deployment, Stores, new_deployment
from tests.ports import free_port

DATA = Path(__file__).parent / "data"

# A CLI command run in-process configures logging; with loggers cached at first use, a later
# test's capture_logs would miss them.
patchbay.logs.CACHE_LOGGERS = False


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``patchbay ARGS --data-dir DATA_DIR`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "patchbay", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Credentials:
    """An input's id, key and secret, as ``patchbay inputs add --json`` prints them."""

    id: str
    key: str
    secret: str

    @property
    def basic(self) -> str:
        """The ``Authorization`` header value."""
        token = base64.b64encode(f"{self.key}:{self.secret}".encode()).decode()
        return f"Basic {token}"


def add_input(
    data_dir: Path,
    name: str,
    type_: str = "server",
    rate_limit: float = 0,
    idsync_key_only: bool = False,
    allowed_origins: Sequence[str] = (),
) -> Credentials:
    """Create an input with the real CLI."""
    flags = ["--idsync-key-only"] if idsync_key_only else []
    flags += [f"--allowed-origin={origin}" for origin in allowed_origins]
    done = run_cli(
        "inputs",
        "add",
        name,
        "--type",
        type_,
        "--rate-limit",
        str(rate_limit),
        *flags,
        "--json",
        data_dir=data_dir,
    )
    assert done.returncode == 0, done.stderr
    fields = json.loads(done.stdout)
    return Credentials(fields["id"], fields["key"], fields["secret"])


@dataclass
class ApiClientCredentials:
    """An API client's id and secret, as ``patchbay api-clients add --json`` prints them."""

    client_id: str
    client_secret: str

    @property
    def basic(self) -> str:
        """The ``Authorization`` header value (HTTP Basic)."""
        token = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return f"Basic {token}"


def add_api_client(data_dir: Path, name: str, scope: str = "profiles:read") -> ApiClientCredentials:
    """Create an API client with the real CLI."""
    done = run_cli("api-clients", "add", name, "--scope", scope, "--json", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    fields = json.loads(done.stdout)
    return ApiClientCredentials(fields["client_id"], fields["client_secret"])


@dataclass
class Server:
    """A running ``patchbay serve`` process with one input (unlimited rate)."""

    url: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    credentials: Credentials
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    #: Where its data is (the embedded store in ``data_dir``, or the scale-out mode).
    deployment: Deployment = field(default_factory=lambda: Deployment(DEPLOYED[0], {}))
    #: How :meth:`post` and :meth:`get` check the certificate of a server on HTTPS.
    context: ssl.SSLContext | None = None
    _reader: Backend | None = None
    #: What :meth:`stored` read with ``_reader``: up to where, by partition, and the batches.
    _read: tuple[dict[int, LogPosition], list[StoredBatch]] = field(
        default_factory=lambda: ({}, [])
    )

    def post(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        auth: str | None = "default",
    ) -> tuple[int, dict[str, str], bytes]:
        """POST ``body`` to ``path``; returns status, headers and body (errors included)."""
        all_headers = {"Content-Type": "application/json"}
        if auth == "default":
            all_headers["Authorization"] = self.credentials.basic
        elif auth is not None:
            all_headers["Authorization"] = auth
        all_headers.update(headers or {})
        request = urllib.request.Request(self.url + path, data=body, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path``; returns status and body."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30, context=self.context) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stored(self) -> list[StoredBatch]:
        """Every batch in the server's log, read straight from its store (partition by
        partition). In the scale-out mode (where opening the stores and reading a topic
        from its start take a tenth of a second each) the stores stay open until
        :func:`stop_server` and each call reads only what was appended since the last one
        (the tests' topics only grow)."""
        if not self.deployment.scaled:
            backend = self.open_store()
            try:
                return _read_all(backend, {}, [])
            finally:
                backend.close()
        if self._reader is None:
            self._reader = self.open_store()
            self._read = ({}, [])
        return list(_read_all(self._reader, *self._read))

    def open_store(self) -> Backend:
        """The server's stores, opened beside it (the caller closes them)."""
        return self.deployment.open(self.data_dir)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None


def _read_all(
    backend: Backend, after: dict[int, LogPosition], batches: list[StoredBatch]
) -> list[StoredBatch]:
    """``batches`` (read before, up to ``after``) and the batches of ``backend``'s log past
    ``after``, partition by partition (both updated)."""
    for partition in range(backend.log.partitions):
        new = backend.log.read(partition, after.get(partition), 1_000_000)
        if new:
            after[partition] = new[-1].position
            index = sum(1 for b in batches if b.partition <= partition)
            batches[index:index] = new
    return batches


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait until something listens on ``port`` of 127.0.0.1; fail if ``process`` exits
    first or 30 s pass."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start") from None
            time.sleep(0.05)


def read_response(sock: socket.socket) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Status line, headers and body of one HTTP/1.1 response (with Content-Length); reads
    nothing past it, so the next response on the connection can be read in turn."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"connection closed before the end of the headers: {head!r}"
        head += byte
    head, rest = head[:-4], b""
    status_line, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        chunk = sock.recv(length - len(rest))
        assert chunk, "connection closed before the end of the body"
        rest += chunk
    return status_line, headers, rest


def start_server(
    data_dir: Path,
    *extra_args: str,
    port: int | None = None,
    main: str = "-mpatchbay",
    ca: Path | None = None,
) -> Server:
    """Start ``patchbay serve`` on a free port and wait until ``/healthz`` answers (its
    stdout and stderr go to ``log_path``). ``main``: how Python runs Patchbay's command
    line (``-cCODE``: code that ends in ``patchbay.cli.main()``). ``ca``: the server serves
    HTTPS (``extra_args`` give ``--tls-cert`` and ``--tls-key``) with a certificate for
    ``localhost`` that this CA file signed, and is called at ``https://localhost:PORT``."""
    port = port or free_port()
    context = None if ca is None else ssl.create_default_context(cafile=ca)
    log_path = data_dir.parent / f"serve-{port}.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                main,
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                *extra_args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}" if ca is None else f"https://localhost:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1, context=context) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"patchbay serve did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    return Server(
        url,
        port,
        data_dir,
        process,
        Credentials("", "", ""),
        log_path,
        list(extra_args),
        context=context,
    )


def stop_server(server: Server) -> None:
    """Stop the server gracefully (SIGTERM), killing it if it hangs; close the stores
    :meth:`Server.stored` kept open."""
    if server._reader is not None:
        server._reader.close()
        server._reader = None
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def dev_cert(tmp_path_factory: pytest.TempPathFactory) -> DevCert:
    """A certificate for localhost, 127.0.0.1 and ::1 made as ``patchbay dev-cert`` makes
    it, for the servers on HTTPS (``start_server(..., ca=dev_cert.ca)``)."""
    return make_dev_cert(tmp_path_factory.mktemp("tls"), SystemClock())


def tls_args(cert: DevCert) -> tuple[str, ...]:
    """The ``serve`` flags of HTTPS with ``cert``."""
    return ("--tls-cert", str(cert.cert), "--tls-key", str(cert.key))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh, empty data directory."""
    return tmp_path / "data"


def create_store(data_dir: Path) -> Path:
    """Create an empty store in ``data_dir``, as ``patchbay serve`` does on its first start
    (every command but ``serve`` and ``inputs add`` needs one); returns ``data_dir``."""
    open_sqlite(data_dir).close()
    return data_dir


@pytest.fixture
def store_dir(data_dir: Path, deployment: Deployment) -> Path:
    """``data_dir`` with an empty store of this test's deployment (in it, for the embedded
    store)."""
    if not deployment.scaled:
        return create_store(data_dir)
    deployment.open(data_dir, create=True).close()
    return data_dir


@pytest.fixture
def server(data_dir: Path, deployment: Deployment) -> Iterator[Server]:
    """A running ``patchbay serve`` with an input of unlimited rate in ``server.credentials``,
    on this test's deployment."""
    credentials = add_input(data_dir, "test-server")
    running = start_server(data_dir)
    running.credentials = credentials
    running.deployment = deployment
    yield running
    stop_server(running)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "persists: reopens the backend (skipped where the backend does not persist)"
    )


@pytest.fixture
def spec() -> BackendSpec:
    """The backend of the tests that take one: the embedded store. The behavioural suites
    (``tests/collect``, ``tests/resolve``, ``tests/segment``, ``tests/activate``) run on
    each of :data:`~tests.deployments.DEPLOYED`, the contract suites (``tests/backends``)
    on every backend: their ``conftest.py`` overrides this fixture."""
    return DEPLOYED[0]


@pytest.fixture
def stores(spec: BackendSpec, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stores]:
    """The opener of this test's backend; a ``persists`` test is skipped where data does
    not survive a reopen."""
    if request.node.get_closest_marker("persists") and not spec.persists:
        pytest.skip(f"{spec.name} backend does not persist")
    made = Stores(spec, tmp_path)
    yield made
    made.close_all()


@pytest.fixture
def backend(stores: Stores) -> Backend:
    """The backend of this test, freshly opened and empty."""
    return stores.open()


@pytest.fixture
def deployment(spec: BackendSpec, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """Where this test's ``patchbay`` commands and ``patchbay serve`` keep their data: the
    environment they inherit names a database and a topic of the test's own in the
    scale-out mode, nothing for the embedded store."""
    made = new_deployment(spec)
    for name, value in made.env.items():
        monkeypatch.setenv(name, value)
    return made


@pytest.fixture(scope="module")
def module_deployment(spec: BackendSpec) -> Iterator[Deployment]:
    """:func:`deployment`, shared by the tests of a module (whose server starts once); for
    the suites whose ``spec`` is of module scope (their ``conftest.py``)."""
    made = new_deployment(spec)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in made.env.items():
            patch.setenv(name, value)
        yield made


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Dummy AWS credentials and no shared config or instance metadata lookups, so boto3
    talks only to the local Lambda server (also for CLI subprocesses, which inherit it)."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


class Lines:
    """A stand-in for a module's structlog logger: the lines it was given."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))


class CountingClock(ManualClock):
    """A manual clock that counts how often it is read: a stage that looks at it twenty
    times more has gone round its loop, whatever the machine's speed."""

    def __init__(self) -> None:
        super().__init__(5_000)
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return super().monotonic()

    def idle(self, turns: int = 20) -> None:
        """Wait until the clock was read ``turns`` times more."""
        start = self.reads
        deadline = time.monotonic() + 30
        while self.reads < start + turns:
            assert time.monotonic() < deadline, "the stage's loop does not go round"
            time.sleep(0.01)


@pytest.fixture
def storage_log(monkeypatch: pytest.MonkeyPatch) -> Lines:
    """What :mod:`patchbay.backoff` logs (the stages' ``storage_full`` and
    ``storage_recovered`` lines)."""
    recorder = Lines()
    monkeypatch.setattr(patchbay.backoff, "log", recorder)
    return recorder


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the servers the scale-out tests started (:mod:`tests.infra`)."""
    from tests import infra

    infra.stop_all()
