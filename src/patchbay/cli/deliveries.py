"""``patchbay deliveries``: the outbox, parked deliveries and their replay."""

from __future__ import annotations

import click

from patchbay.cli.common import (
    activate_service,
    data_dir_option,
    pass_settings,
    print_json,
    table,
)
from patchbay.settings import Settings


@click.group()
def deliveries() -> None:
    """Deliveries: the outbox; parked deliveries and their replay."""


@deliveries.command("parked")
@pass_settings
@click.option("--output", default=None, help="Only this output's deliveries.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def deliveries_parked(output: str | None, limit: int, settings: Settings, as_json: bool) -> None:
    """List parked deliveries with their last error."""
    with activate_service(settings) as service:
        found = service.parked(output, limit)
    if as_json:
        for item in found:
            print_json(item)
        return
    table(
        ["ID", "OUTPUT", "OFFSET", "ATTEMPTS", "PARKED AT", "LAST ERROR"],
        [
            [
                d["id"],
                d["output"],
                str(d["batch_offset"]),
                str(d["attempts"]),
                str(d["parked_at"]),
                d["last_error"] or "",
            ]
            for d in found
        ],
    )


@deliveries.command("replay")
@pass_settings
@click.option("--output", default=None, help="Replay this output's parked deliveries.")
@click.option("--id", "ids", multiple=True, help="Replay this delivery (repeat).")
@click.option("--all", "all_", is_flag=True, help="Replay every parked delivery.")
@data_dir_option
def deliveries_replay(
    output: str | None, ids: tuple[str, ...], all_: bool, settings: Settings
) -> None:
    """Send parked deliveries again, with their original message ids (a running server
    picks them up at once)."""
    if not (output or ids or all_):
        raise click.UsageError("give --output OUTPUT, --id ID or --all")
    with activate_service(settings) as service:
        count = service.replay_all() if all_ else service.replay(output, list(ids))
    click.echo(f"replaying {count} parked deliveries")
