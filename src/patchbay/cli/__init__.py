"""The ``patchbay`` command line: run the server, manage inputs and API clients, read the
batch log.

The command names and their flags are a stable interface: scripts rely on them. Each
command takes ``--data-dir`` and ``--config`` and gets its
:class:`~patchbay.settings.Settings` from :func:`patchbay.cli.common.pass_settings`.
"""

from __future__ import annotations

import click

from patchbay import __version__
from patchbay.cli.api_clients import api_clients
from patchbay.cli.audiences import audiences
from patchbay.cli.batches import batches
from patchbay.cli.connections import connections
from patchbay.cli.deliveries import deliveries
from patchbay.cli.inputs import inputs
from patchbay.cli.modules import modules
from patchbay.cli.outputs import outputs
from patchbay.cli.partner import partner
from patchbay.cli.profiles import profiles, reprocess
from patchbay.cli.serve import serve

__all__ = ["main"]


@click.group()
@click.version_option(__version__, prog_name="patchbay")
def main() -> None:
    """Patchbay: a self-hosted customer data platform compatible with mParticle's APIs."""


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
):
    main.add_command(command)
