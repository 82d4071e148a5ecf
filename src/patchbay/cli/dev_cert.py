"""``patchbay dev-cert``: a local certificate for ``serve --tls-cert/--tls-key``."""

from __future__ import annotations

from pathlib import Path

import click

from patchbay.clock import SystemClock
from patchbay.http.devcert import MAX_DAYS, make_dev_cert


@click.command("dev-cert")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("patchbay-tls"),
    show_default=True,
    help="Directory to write ca.pem, cert.pem and key.pem into (created 0700 if missing).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="NAME",
    help="A host name or IP address the certificate is also for (repeatable); localhost,"
    " 127.0.0.1 and ::1 always are.",
)
@click.option(
    "--days",
    type=click.IntRange(1, MAX_DAYS),
    default=90,
    show_default=True,
    help="How long the certificate is valid.",
)
@click.option("--force", is_flag=True, help="Replace the files if they exist.")
def dev_cert(out: Path, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Make a self-signed certificate for HTTPS on this machine (development and tests)."""
    made = make_dev_cert(out, SystemClock(), hosts, days, force=force)
    ca = made.ca
    click.echo(
        f"""Wrote
  {made.cert}  certificate for {", ".join(made.hosts)}, valid until {made.not_after:%Y-%m-%d}
  {made.key}  its private key (0600: keep it so)
  {ca}  the one-off CA that signed it (its key was not kept): the file to trust

Serve HTTPS with:
  patchbay serve --tls-cert {made.cert} --tls-key {made.key}

Trust it (or, in a test browser only, start Chromium with --ignore-certificate-errors):
  curl, Python:        curl --cacert {ca} ...; SSL_CERT_FILE={ca}
  Chromium/Chrome:     certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n patchbay-dev -i {ca}
                       (Debian: apt-get install libnss3-tools), or Settings > Privacy and
                       security > Security > Manage certificates > Authorities > Import
  Firefox:             Settings > Privacy & Security > View Certificates > Authorities > Import
  Debian/Ubuntu:       sudo cp {ca} /usr/local/share/ca-certificates/patchbay-dev.crt
                       && sudo update-ca-certificates
  macOS:               sudo security add-trusted-cert -d -r trustRoot
                       -k /Library/Keychains/System.keychain {ca}
Remove the trust again when done: anyone with key.pem can then pose as these hosts to you."""
    )
