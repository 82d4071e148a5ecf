"""The ``patchbay`` command line: run the server, manage inputs and API clients, read the
batch log.

The command names and their flags are a stable interface: scripts rely on them. Each
command takes ``--data-dir``, ``--secrets-key-file`` and ``--config`` and gets its
:class:`~patchbay.settings.Settings` from :func:`patchbay.cli.common.pass_settings`.

Every command runs with the umask ``0o077`` (what it creates is its user's alone), and a
:class:`~patchbay.errors.PatchbayError` it does not handle itself (a data directory others
can read, a stored secret that cannot be decrypted) ends it with a one-line error.
"""

from __future__ import annotations

from typing import Any

import click

from patchbay import __version__
from patchbay.cli.api_clients import api_clients
from patchbay.cli.audiences import audiences
from patchbay.cli.batches import batches
from patchbay.cli.connections import connections
from patchbay.cli.db import db
from patchbay.cli.deliveries import deliveries
from patchbay.cli.dev_cert import dev_cert
from patchbay.cli.inputs import inputs
from patchbay.cli.kits import kits
from patchbay.cli.modules import modules
from patchbay.cli.outputs import outputs
from patchbay.cli.partner import partner
from patchbay.cli.profiles import profiles, reprocess
from patchbay.cli.serve import serve
from patchbay.datadir import owner_only_umask
from patchbay.errors import PatchbayError

__all__ = ["main"]


class PatchbayGroup(click.Group):
    """The command group: a :class:`PatchbayError` becomes a one-line error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PatchbayError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=PatchbayGroup)
@click.version_option(__version__, prog_name="patchbay")
def main() -> None:
    """Patchbay: a self-hosted customer data platform compatible with mParticle's APIs."""
    owner_only_umask()


for command in (
    serve,
    inputs,
    api_clients,
    batches,
    profiles,
    reprocess,
    modules,
    partner,
    outputs,
    connections,
    deliveries,
    audiences,
    kits,
    db,
    dev_cert,
):
    main.add_command(command)
