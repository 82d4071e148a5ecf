"""``patchbay outputs``: where resolved data goes."""

from __future__ import annotations

import click

from patchbay.cli.common import (
    activate_service,
    data_dir_option,
    echo_mapping,
    parse_settings_args,
    pass_settings,
    print_json,
    setting_option,
    table,
)
from patchbay.settings import Settings


@click.group()
def outputs() -> None:
    """Outputs: where resolved data goes (Firehose modules, webhooks, JSON-lines files)."""


@outputs.command("add")
@pass_settings
@click.argument("name")
@click.option("--module", "module", default=None, help="A registered module (Firehose).")
@click.option(
    "--webhook",
    default=None,
    metavar="URL",
    help="POST each batch as JSON to URL (http(s); within allowed_targets when set).",
)
@click.option(
    "--file",
    "file_",
    default=None,
    metavar="PATH",
    help="Append JSON lines to PATH, inside the outputs directory (outputs_dir, by default"
    " DATA_DIR/outputs); a relative PATH is taken inside it.",
)
@setting_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the output as JSON.")
def outputs_add(
    name: str,
    module: str | None,
    webhook: str | None,
    file_: str | None,
    settings_args: tuple[str, ...],
    settings: Settings,
    as_json: bool,
) -> None:
    """Create output NAME: --module MODULE [--setting ID=VALUE]..., --webhook URL or
    --file PATH. Confidential settings, and passwords and tokens in URLs, are never printed.

    A webhook never goes to link-local, cloud metadata, unspecified or multicast addresses,
    and its token goes over plain http only to loopback or an allow-listed host. A file
    output's PATH must resolve inside the outputs directory."""
    if sum(x is not None for x in (module, webhook, file_)) != 1:
        raise click.UsageError("give exactly one of --module, --webhook or --file")
    with activate_service(settings) as service:
        summary = service.add_output(
            name,
            module=module,
            webhook=webhook,
            file=file_,
            settings=parse_settings_args(settings_args),
        )
    if as_json:
        print_json(summary)
        return
    click.echo(f"created output {name!r}")
    echo_mapping(summary)


@outputs.command("list")
@pass_settings
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def outputs_list(settings: Settings, as_json: bool) -> None:
    """List the outputs."""
    with activate_service(settings) as service:
        found = service.list_outputs()
    if as_json:
        for item in found:
            print_json(item)
        return
    rows = [
        [
            o["name"],
            o["kind"],
            str(o.get("module") or o.get("url") or o.get("path")),
            "paused" if o["paused"] else "active",
        ]
        for o in found
    ]
    table(["NAME", "KIND", "DESTINATION", "STATE"], rows)


@outputs.command("show")
@pass_settings
@click.argument("name")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the output as JSON.")
def outputs_show(name: str, settings: Settings, as_json: bool) -> None:
    """Show an output, its connections and its queue."""
    with activate_service(settings) as service:
        summary = service.show_output(name)
    if as_json:
        print_json(summary)
    else:
        echo_mapping(summary)


@outputs.command("pause")
@pass_settings
@click.argument("name")
@data_dir_option
def outputs_pause(name: str, settings: Settings) -> None:
    """Stop sending to an output; its deliveries wait in the outbox."""
    with activate_service(settings) as service:
        service.set_paused(name, True)
    click.echo(f"paused output {name!r}")


@outputs.command("resume")
@pass_settings
@click.argument("name")
@data_dir_option
def outputs_resume(name: str, settings: Settings) -> None:
    """Send to a paused output again (also after a partner's suspend_subscription)."""
    with activate_service(settings) as service:
        service.set_paused(name, False)
    click.echo(f"resumed output {name!r}")


@outputs.command("status")
@pass_settings
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def outputs_status(settings: Settings, as_json: bool) -> None:
    """A table of the outputs: state, pending and parked deliveries, oldest pending age."""
    with activate_service(settings) as service:
        rows = service.status()
    if as_json:
        for row in rows:
            print_json(row)
        return
    table(
        ["OUTPUT", "KIND", "STATE", "CIRCUIT", "PENDING", "PARKED", "OLDEST S", "REASON"],
        [
            [
                r["name"],
                r["kind"],
                r["state"],
                r["circuit"]
                if r["circuit"] == "closed"
                else f"{r['circuit']} {r['circuit_since_s']:g}s",
                str(r["pending"]),
                str(r["parked"]),
                "-" if r["oldest_pending_age_s"] is None else f"{r['oldest_pending_age_s']:g}",
                r["paused_reason"] or r["circuit_error"] or "",
            ]
            for r in rows
        ],
    )
