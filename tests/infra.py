"""Real servers for the tests of the scale-out mode, started once per test session through
``scripts/infra.sh`` (as a user would) on free ports, and stopped at its end.

A process the tests start (the child a crash test kills) uses the session's servers, not
servers of its own (which nobody would stop): their URLs are passed down in the
environment (:data:`ENV`).

A test that stops and starts brokers has a cluster of its own (:class:`KafkaCluster`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "infra.sh"
#: By server: the environment variable that gives child processes the session's URL.
ENV = {"postgres": "PATCHBAY_TEST_POSTGRES", "kafka": "PATCHBAY_TEST_KAFKA"}
#: The variable that gives child processes the file of the session broker's SASL listener.
SASL_ENV = "PATCHBAY_TEST_KAFKA_SASL"

_lock = threading.Lock()
#: By server: the directory and URL of what this process started.
_started: dict[str, tuple[Path, str]] = {}


def _url(server: str, port: int) -> str:
    """The URL of the session's ``server``: the one this process started, the one its
    parent passed down, or one started now with ``scripts/infra.sh SERVER start DIR PORT``."""
    with _lock:
        if server in _started:
            return _started[server][1]
        if inherited := os.environ.get(ENV[server]):
            return inherited
        # The cluster's owner (the postgres user, when the tests run as root) must reach
        # the directory: a searchable parent outside pytest's private temporary tree.
        parent = Path(tempfile.mkdtemp(prefix="patchbay-infra-"))
        parent.chmod(0o755)
        directory = parent / server
        url = _script(server, "start", str(directory), str(port)).strip().rpartition("=")[2]
        _started[server] = (directory, url)
        os.environ[ENV[server]] = url
        if server == "kafka":
            os.environ[SASL_ENV] = str(directory / "sasl.env")
        return url


def postgres_url() -> str:
    """The URL of this session's PostgreSQL server (started at the first call)."""
    return _url("postgres", free_port())


def kafka_url() -> str:
    """The ``kafka://`` URL of this session's Kafka broker (started at the first call)."""
    return _url("kafka", _free_port_run(3))


def kafka_sasl() -> dict[str, str]:
    """The variables that point Patchbay at the SASL_PLAINTEXT listener (mechanism PLAIN)
    of this session's broker: ``PATCHBAY_LOG`` and ``PATCHBAY_KAFKA_OPTIONS`` (with the
    user and password ``scripts/infra.sh`` made for the session)."""
    kafka_url()
    lines = Path(os.environ[SASL_ENV]).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def _free_port_run(count: int) -> int:
    """A port that is free, with the ``count - 1`` next ones free too."""
    while True:
        port = free_port()
        if port + count > 65536:
            continue
        socks = [socket.socket() for _ in range(count - 1)]
        try:
            for offset, sock in enumerate(socks, 1):
                sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return port


def _script(*args: str) -> str:
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/infra.sh {' '.join(args)} failed: {done.stderr}")
    return done.stdout


class KafkaCluster:
    """A Kafka cluster of ``brokers`` brokers of one test's own (``scripts/infra.sh kafka
    start DIR PORT --brokers N``), whose brokers the test may stop and start again."""

    def __init__(self, directory: Path, brokers: int) -> None:
        self.directory = directory
        self.brokers = brokers
        try:
            out = _script("kafka", "start", str(directory), str(_free_port_run(3 * brokers)),
                          "--brokers", str(brokers))  # fmt: skip
        except BaseException:
            self.stop()  # the brokers that did start
            raise
        self.url = out.strip().rpartition("=")[2]

    def stop_broker(self, broker: int, kill: bool = False) -> None:
        """Stop broker ``broker`` (from 1): a controlled shutdown, or a crash (SIGKILL)."""
        _script("kafka", "stop-broker", str(self.directory), str(broker), *["--kill"] * kill)

    def start_broker(self, broker: int) -> None:
        """Start broker ``broker`` again; returns once it listens."""
        _script("kafka", "start-broker", str(self.directory), str(broker))

    def pause_broker(self, broker: int) -> None:
        """Freeze broker ``broker`` (SIGSTOP): its connections stay open and it answers
        nothing, as a machine that hangs."""
        os.kill(self._pid(broker), signal.SIGSTOP)

    def resume_broker(self, broker: int) -> None:
        """Let a frozen broker go on (SIGCONT)."""
        os.kill(self._pid(broker), signal.SIGCONT)

    def _pid(self, broker: int) -> int:
        return int((self.directory / f"broker-{broker}" / "pid").read_text())

    def stop(self) -> None:
        """Stop every broker."""
        subprocess.run([str(SCRIPT), "kafka", "stop", str(self.directory)], check=False)


def stop_all() -> None:
    """Stop what :func:`postgres_url` and :func:`kafka_url` started."""
    with _lock:
        for server, (directory, _) in _started.items():
            subprocess.run([str(SCRIPT), server, "stop", str(directory)], check=False)
            subprocess.run(["rm", "-rf", str(directory.parent)], check=False)
            os.environ.pop(ENV[server], None)
        os.environ.pop(SASL_ENV, None)
        _started.clear()
