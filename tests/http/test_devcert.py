"""``patchbay dev-cert``: a local CA and a server certificate for localhost and the hosts
given, the key owner-only, nothing overwritten without ``--force``."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from patchbay.cli import main
from patchbay.clock import ManualClock
from patchbay.http.devcert import DevCertError, make_dev_cert


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_certificate_is_for_localhost_and_the_hosts_given(tmp_path: Path) -> None:
    made = make_dev_cert(tmp_path / "tls", ManualClock(), ["pb.test", "10.1.2.3"], days=10)
    leaf, ca = x509.load_pem_x509_certificates(made.cert.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "pb.test"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3")
    ]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca == x509.load_pem_x509_certificate(made.ca.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(ca)
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 10
    assert made.hosts == ("localhost", "127.0.0.1", "::1", "pb.test", "10.1.2.3")
    assert (mode(made.key), mode(made.cert), mode(made.ca), mode(made.key.parent)) == (
        0o600,
        0o644,
        0o644,
        0o700,
    )
    assert sorted(p.name for p in made.key.parent.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    first = make_dev_cert(tmp_path, ManualClock())
    before = first.cert.read_bytes()
    first.key.chmod(0o644)
    with pytest.raises(DevCertError, match=r"cert\.pem.* already exist \(--force replaces"):
        make_dev_cert(tmp_path, ManualClock())
    assert first.cert.read_bytes() == before
    again = make_dev_cert(tmp_path, ManualClock(), force=True)
    assert again.cert.read_bytes() != before
    assert mode(again.key) == 0o600  # made owner-only again


@pytest.mark.parametrize("host", ["bad host", "-x.test", "a..b", ""])
def test_a_name_that_cannot_be_in_a_certificate_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(DevCertError, match="not a DNS name or an IP address"):
        make_dev_cert(tmp_path, ManualClock(), [host])
    assert not any(tmp_path.iterdir())


def test_the_command_prints_the_serve_flags_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "tls"
    runner = CliRunner()
    done = runner.invoke(main, ["dev-cert", "--out", str(out), "--host", "pb.test"])
    assert done.exit_code == 0, done.output
    assert f"patchbay serve --tls-cert {out}/cert.pem --tls-key {out}/key.pem" in done.output
    assert "localhost, 127.0.0.1, ::1, pb.test" in done.output
    assert f"--cacert {out}/ca.pem" in done.output
    again = runner.invoke(main, ["dev-cert", "--out", str(out)])
    assert again.exit_code == 1
    assert "already exist (--force replaces them)" in again.output
    assert runner.invoke(main, ["dev-cert", "--out", str(out), "--force"]).exit_code == 0
    assert runner.invoke(main, ["dev-cert", "--out", str(out), "--days", "0"]).exit_code == 2
