"""HTTPS for ``patchbay serve`` (``tls_cert`` and ``tls_key``): the files checked at start,
both or neither, and a real server answering over TLS."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from structlog.testing import capture_logs

from patchbay.clock import ManualClock, SystemClock
from patchbay.config import ConfigError, load_settings
from patchbay.http.devcert import DevCert, make_dev_cert
from patchbay.http.tls import TlsError, TlsFiles, check_tls_files
from tests.conftest import start_server, stop_server, tls_args
from tests.ports import free_port


def write_key(path: Path, password: bytes | None = None) -> Path:
    """A new EC private key in PEM at ``path`` (0600), encrypted with ``password``."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def test_a_dev_cert_passes_the_check(dev_cert: DevCert) -> None:
    with capture_logs() as logs:
        cert = check_tls_files(TlsFiles(dev_cert.cert, dev_cert.key), SystemClock())
    assert "localhost" in cert.subject.rfc4514_string()
    assert [line["event"] for line in logs] == ["tls_enabled"]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("missing cert", r"tls_cert .*missing\.pem: No such file"),
        ("missing key", r"tls_key .*missing\.pem: No such file"),
        ("cert not PEM", r"tls_cert .*: not a PEM certificate"),
        ("key not PEM", r"tls_key .*: not a PEM private key"),
        ("encrypted key", r"tls_key .*: the key is encrypted"),
        ("another key", r"tls_key .* is not the key of the certificate in tls_cert"),
    ],
)
def test_unusable_files_are_refused_naming_the_file(
    dev_cert: DevCert, tmp_path: Path, broken: str, message: str
) -> None:
    cert, key = dev_cert.cert, dev_cert.key
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    if broken == "missing cert":
        cert = tmp_path / "missing.pem"
    elif broken == "missing key":
        key = tmp_path / "missing.pem"
    elif broken == "cert not PEM":
        cert = garbage
    elif broken == "key not PEM":
        key = garbage
    elif broken == "encrypted key":
        key = write_key(tmp_path / "encrypted.pem", b"secret")
    else:
        key = write_key(tmp_path / "other.pem")
    with pytest.raises(TlsError, match=message):
        check_tls_files(TlsFiles(cert, key), SystemClock())


def test_a_key_others_can_read_and_an_expired_cert_are_logged(tmp_path: Path) -> None:
    made = make_dev_cert(tmp_path, ManualClock(), days=1)
    made.key.chmod(0o644)
    later = ManualClock(ManualClock().now_ms() + 3 * 86_400_000)
    with capture_logs() as logs:
        check_tls_files(TlsFiles(made.cert, made.key), later)
    events = {line["event"]: line for line in logs}
    assert events["tls_key_readable"]["mode"] == "0644"
    assert f"chmod 600 {made.key}" in events["tls_key_readable"]["hint"]
    assert "tls_certificate_expired" in events


def test_cert_and_key_come_both_or_neither(tmp_path: Path) -> None:
    both = load_settings({}, {"PATCHBAY_TLS_CERT": "c.pem", "PATCHBAY_TLS_KEY": "k.pem"})
    assert (both.tls_cert, both.tls_key) == (Path("c.pem"), Path("k.pem"))
    file = tmp_path / "patchbay.toml"
    file.write_text('tls_cert = "c.pem"\ntls_key = "k.pem"\n')
    assert load_settings({}, {}, file).tls_key == Path("k.pem")
    with pytest.raises(ConfigError, match=r"tls_cert is set but not tls_key \(--tls-key, PATCH"):
        load_settings({"tls_cert": Path("c.pem")}, {})
    with pytest.raises(ConfigError, match=r"tls_key is set but not tls_cert \(--tls-cert, PATCH"):
        load_settings({}, {"PATCHBAY_TLS_KEY": "k.pem"})


@pytest.mark.slow
def test_serve_answers_https_with_the_certificate(dev_cert: DevCert, data_dir: Path) -> None:
    server = start_server(data_dir, *tls_args(dev_cert), ca=dev_cert.ca)
    try:
        assert server.url.startswith("https://localhost:")
        assert server.get("/healthz")[0] == 200
        # 127.0.0.1 is in the certificate too; a client that does not trust the CA is refused
        by_address = f"https://127.0.0.1:{server.port}/healthz"
        with urllib.request.urlopen(by_address, context=server.context, timeout=10) as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(by_address, context=ssl.create_default_context(), timeout=10)
        # plain HTTP on the HTTPS port gets no answer of the API
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
    finally:
        stop_server(server)


@pytest.mark.slow
def test_serve_refuses_a_key_that_is_not_the_certificates(
    dev_cert: DevCert, data_dir: Path, tmp_path: Path
) -> None:
    other = write_key(tmp_path / "other.pem")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "patchbay",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(free_port()),
            "--tls-cert",
            str(dev_cert.cert),
            "--tls-key",
            str(other),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"Error: tls_key {other} is not the key of the certificate" in done.stderr
    assert not data_dir.exists()  # refused before anything was created
