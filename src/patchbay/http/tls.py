"""HTTPS for ``patchbay serve``: the certificate and key files of settings ``tls_cert`` and
``tls_key``, checked before the server starts (docs/web-sdk.md, "HTTPS").

:func:`check_tls_files` reads both files and refuses, with a message naming the file, one
that cannot be read, is not PEM, holds an encrypted key, or a key that is not the
certificate's; uvicorn then serves HTTPS with them. It logs a warning when group or others
can read the key file (the way Patchbay treats secrets) and when the certificate has expired.
"""

from __future__ import annotations

import datetime
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from patchbay.clock import Clock
from patchbay.errors import PatchbayError

log = structlog.get_logger("patchbay.tls")


class TlsError(PatchbayError):
    """The certificate or key file cannot be served with; the message says which and why."""


@dataclass(frozen=True)
class TlsFiles:
    """A certificate chain (PEM, the server's certificate first) and its private key (PEM)."""

    cert: Path
    key: Path


def check_tls_files(files: TlsFiles, clock: Clock) -> x509.Certificate:
    """The server certificate of ``files`` once both files are usable together
    (:class:`TlsError` otherwise); logs the warnings described in the module docstring."""
    cert_pem = _read(files.cert, "tls_cert")
    key_pem = _read(files.key, "tls_key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsError(f"tls_cert {files.cert}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TlsError(
            f"tls_key {files.key}: the key is encrypted; serve needs it unencrypted (keep the"
            " file 0600): openssl pkey -in KEY -out PLAIN_KEY"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsError(f"tls_key {files.key}: not a PEM private key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if chain[0].public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise TlsError(
            f"tls_key {files.key} is not the key of the certificate in tls_cert {files.cert}"
        )
    try:  # what uvicorn will do: OpenSSL must take them too
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"tls_cert {files.cert}, tls_key {files.key}: {exc}") from None
    _warn_if_readable(files.key)
    not_after = chain[0].not_valid_after_utc
    now = datetime.datetime.fromtimestamp(clock.now_ms() / 1000, datetime.UTC)
    if not_after < now:
        log.warning("tls_certificate_expired", cert=str(files.cert), not_after=str(not_after))
    log.info(
        "tls_enabled",
        cert=str(files.cert),
        subject=chain[0].subject.rfc4514_string(),
        not_after=str(not_after),
    )
    return chain[0]


def _read(path: Path, field: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{field} {path}: {exc.strerror or exc}") from None


def _warn_if_readable(key: Path) -> None:
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "tls_key_readable",
            key=str(key),
            mode=f"{mode:04o}",
            hint=f"group or others can read the private key; run: chmod 600 {key}",
        )
