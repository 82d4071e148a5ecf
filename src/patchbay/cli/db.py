"""``patchbay db``: the schema of the store."""

from __future__ import annotations

import click

from patchbay.cli.common import data_dir_option, opened, pass_settings
from patchbay.settings import Settings


@click.group()
def db() -> None:
    """The schema of the store."""


@db.command("upgrade")
@pass_settings
@data_dir_option
def upgrade(settings: Settings) -> None:
    """Apply the schema migrations this version of Patchbay brings (`serve` applies them
    too when it starts, and refuses a schema newer than it knows)."""
    # A new PostgreSQL database gets its schema here; a data directory is made by `serve`
    # or `inputs add`.
    with opened(settings, create=settings.state is not None) as backend:
        migrations = backend.migrations
    if not migrations:
        click.echo(f"the {backend.name} store is up to date")
        return
    for component, count in sorted(migrations.items()):
        done = f"{count} migration{'s' if count != 1 else ''} applied" if count else "up to date"
        click.echo(f"{component}: {done}")
