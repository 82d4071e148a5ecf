"""``patchbay connections``: which input goes to which output."""

from __future__ import annotations

import click

from patchbay.cli.common import (
    activate_service,
    data_dir_option,
    parse_settings_args,
    pass_settings,
    print_json,
    setting_option,
    table,
)
from patchbay.settings import Settings


def _split(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


@click.group()
def connections() -> None:
    """Connections: which input goes to which output, with settings and filters."""


@connections.command("add")
@pass_settings
@click.option("--input", "input_", required=True, help="Input name or id.")
@click.option("--output", "output", required=True, help="Output name.")
@setting_option
@click.option("--event-types", default=None, metavar="T1,T2", help="Forward only these types.")
@click.option(
    "--environment",
    type=click.Choice(["production", "development"]),
    default=None,
    help="Forward only batches of this environment (none = production).",
)
@click.option("--event-names", default=None, metavar="N1,N2", help="Forward only these names.")
@click.option("--drop-event-names", default=None, metavar="N1,N2", help="Drop these names.")
@click.option("--attributes", default=None, metavar="A1,A2", help="Keep only these attributes.")
@click.option("--drop-attributes", default=None, metavar="A1,A2", help="Drop these attributes.")
@click.option(
    "--sample-percent",
    type=click.FloatRange(0, 100),
    default=100.0,
    show_default=True,
    help="Forward this percentage of users (stable per mpid).",
)
@click.option(
    "--consent-purpose",
    "consent_purposes",
    multiple=True,
    help="Forward only when this GDPR purpose is consented (repeat).",
)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the connection as JSON.")
def connections_add(
    input_: str,
    output: str,
    settings_args: tuple[str, ...],
    event_types: str | None,
    environment: str | None,
    event_names: str | None,
    drop_event_names: str | None,
    attributes: str | None,
    drop_attributes: str | None,
    sample_percent: float,
    consent_purposes: tuple[str, ...],
    settings: Settings,
    as_json: bool,
) -> None:
    """Connect an input to an output."""
    from patchbay.backends.records import Filters

    filters = Filters(
        environment=environment,
        event_types=_split(event_types),
        event_names_keep=_split(event_names),
        event_names_drop=_split(drop_event_names),
        attributes_keep=_split(attributes),
        attributes_drop=_split(drop_attributes),
        sample_percent=sample_percent,
        consent_purposes=list(consent_purposes),
    )
    with activate_service(settings) as service:
        summary = service.add_connection(
            input_=input_,
            output=output,
            settings=parse_settings_args(settings_args),
            filters=filters,
        )
    if as_json:
        print_json(summary)
        return
    click.echo(f"connected {summary['input']!r} to {output!r} (connection {summary['id']})")


@connections.command("list")
@pass_settings
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def connections_list(settings: Settings, as_json: bool) -> None:
    """List the connections."""
    with activate_service(settings) as service:
        found = service.list_connections()
    if as_json:
        for item in found:
            print_json(item)
        return
    rows = [
        [
            c["id"],
            str(c["input"]),
            c["output"],
            ", ".join(f"{k}={v}" for k, v in c["filters"].items()) or "-",
        ]
        for c in found
    ]
    table(["ID", "INPUT", "OUTPUT", "FILTERS"], rows)


@connections.command("remove")
@pass_settings
@click.argument("connection_id", required=False)
@click.option("--input", "input_", default=None, help="Input name or id (with --output).")
@click.option("--output", "output", default=None, help="Output name (with --input).")
@data_dir_option
def connections_remove(
    connection_id: str | None, input_: str | None, output: str | None, settings: Settings
) -> None:
    """Remove a connection by ID, or by --input and --output. Deliveries already queued
    are still sent."""
    with activate_service(settings) as service:
        removed = service.remove_connection(connection_id, input_=input_, output=output)
    click.echo(f"removed {removed} connection(s)")
