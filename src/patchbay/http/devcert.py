"""A certificate for HTTPS on a developer's machine and in the tests (``patchbay dev-cert``).

Browsers want the Web SDK's API host on HTTPS (docs/web-sdk.md). This makes, in one
directory, a one-off certificate authority (``ca.pem``: what a browser or a client is told
to trust), a server certificate it signed for ``localhost``, ``127.0.0.1``, ``::1`` and the
names given (``cert.pem``: the server certificate then the CA's) and the server's private
key (``key.pem``, ``0600``). The CA's own key is never written: trusting ``ca.pem`` trusts
this one server certificate and nothing that could be signed later.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from patchbay.clock import Clock
from patchbay.errors import PatchbayError

#: The names every development certificate is for.
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_FILE, CERT_FILE, KEY_FILE = "ca.pem", "cert.pem", "key.pem"
#: Longest validity ``dev-cert`` makes (what macOS and iOS accept of a local CA's leaf).
MAX_DAYS = 825
_DNS_NAME = re.compile(
    r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


class DevCertError(PatchbayError):
    """A host name that cannot be in a certificate, or files that would be overwritten."""


@dataclass(frozen=True)
class DevCert:
    """What :func:`make_dev_cert` wrote."""

    ca: Path
    cert: Path
    key: Path
    hosts: tuple[str, ...]
    not_after: datetime.datetime


def make_dev_cert(
    out: Path, clock: Clock, hosts: Sequence[str] = (), days: int = 90, *, force: bool = False
) -> DevCert:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` into ``out`` (created if missing),
    valid ``days`` days from now for :data:`DEFAULT_HOSTS` and ``hosts``; existing files are
    refused (:class:`DevCertError`) unless ``force``."""
    if not 1 <= days <= MAX_DAYS:
        raise DevCertError(f"days: expected 1 to {MAX_DAYS}, not {days}")
    names = tuple(dict.fromkeys([*DEFAULT_HOSTS, *(h.strip() for h in hosts)]))
    alt_names = [_general_name(name) for name in names]
    ca_path, cert_path, key_path = out / CA_FILE, out / CERT_FILE, out / KEY_FILE
    existing = [str(p) for p in (ca_path, cert_path, key_path) if p.exists()]
    if existing and not force:
        raise DevCertError(f"{', '.join(existing)} already exist (--force replaces them)")
    start = _now(clock) - datetime.timedelta(hours=1)  # a clock a little behind still accepts
    end = start + datetime.timedelta(days=days, hours=1)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Patchbay dev-cert"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"Patchbay development CA {os.urandom(4).hex()}"
            ),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        _builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]),
            ca_name,
            key.public_key(),
            start,
            end,
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = serialization.PrivateFormat.PKCS8
    _write(key_path, key.private_bytes(pem, private, serialization.NoEncryption()), 0o600)
    _write(cert_path, leaf.public_bytes(pem) + ca.public_bytes(pem), 0o644)
    _write(ca_path, ca.public_bytes(pem), 0o644)
    return DevCert(ca_path, cert_path, key_path, names, end)


def _now(clock: Clock) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(clock.now_ms() / 1000, datetime.UTC)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if len(name) > 253 or not _DNS_NAME.fullmatch(name):
        raise DevCertError(f"host {name!r}: not a DNS name or an IP address")
    return x509.DNSName(name.lower())


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` with ``mode`` (whatever the umask, and an existing file's mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with open(fd, "wb") as file:
        os.fchmod(fd, mode)
        file.write(data)
