"""``patchbay kits``: Web SDK kits (client-side integrations), their connections to web
inputs, and what the SDK reported they forwarded.

Every command works while ``patchbay serve`` runs on the same data directory (none takes
the data directory's lock): ``serve`` serves the change in the SDK's config within about a
second.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from patchbay.cli.common import (
    data_dir_option,
    echo_mapping,
    parse_settings_args,
    pass_settings,
    print_json,
    service_of,
    table,
)
from patchbay.settings import Settings

if TYPE_CHECKING:
    from patchbay.kits.service import KitService


def kit_service(settings: Settings) -> contextlib.AbstractContextManager[KitService]:
    """The kit service over the settings' backend; its errors become CLI errors."""
    from patchbay.kits.service import KitError, KitService

    return service_of(settings, KitService, KitError)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def kits() -> None:
    """Web SDK kits: client-side integrations served to the browser in the SDK's config."""


@kits.command("register")
@pass_settings
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@data_dir_option
@json_option
def kits_register(file: Path, settings: Settings, as_json: bool) -> None:
    """Register the kit the JSON descriptor FILE describes (docs/kits.md). Registering a
    kit of the same name and suffix again updates it; its connections stay."""
    from patchbay.kits.descriptor import DescriptorError

    raw = file.read_bytes()
    with kit_service(settings) as service:
        try:
            kit = service.register(raw)
        except DescriptorError as exc:
            for problem in exc.problems:
                click.echo(f"{problem.severity}: {problem}", err=True)
            raise click.ClickException(
                f"descriptor {str(file)!r} rejected ({len(exc.problems)} error(s)), nothing stored"
            ) from None
    for warning in kit["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(kit)
        return
    verb = "updated" if kit["action"] == "update" else "registered"
    click.echo(f"{verb} kit {kit['key']!r} (module {kit['module_id']})")


@kits.command("list")
@pass_settings
@data_dir_option
@json_option
def kits_list(settings: Settings, as_json: bool) -> None:
    """List the registered kits."""
    with kit_service(settings) as service:
        found = service.list_kits()
    if as_json:
        for kit in found:
            print_json(kit)
        return
    rows = [
        [k["key"], str(k["module_id"]), str(len(k["settings"])), str(k["connections"])]
        for k in found
    ]
    table(["KIT", "MODULE", "SETTINGS", "CONNECTIONS"], rows)


@kits.command("show")
@pass_settings
@click.argument("name")
@data_dir_option
@json_option
def kits_show(name: str, settings: Settings, as_json: bool) -> None:
    """Show a kit (NAME: its key, ``name-suffix``, or its name), its connections
    (confidential values as ``***``) and what the SDK reported it forwarded."""
    with kit_service(settings) as service:
        kit = service.show(name)
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(kit), indent=2).decode())
        return
    shown: dict[str, Any] = dict(kit)
    shown["settings"] = ", ".join(
        f"{s['id']} ({s['type']}{', required' if s.get('required') else ''}"
        f"{', confidential' if s.get('confidential') else ''})"
        for s in kit["settings"]
    )
    echo_mapping(shown)


@kits.command("connect")
@pass_settings
@click.argument("name")
@click.option("--input", "input_", required=True, help="A web input's name or id.")
@click.option(
    "--setting",
    "settings_args",
    multiple=True,
    metavar="ID=VALUE",
    help="A setting (repeat); checked against the kit's declarations.",
)
@click.option("--development", is_flag=True, help="The development connection (env=1).")
@click.option("--exclude-event-type", "event_types", multiple=True, metavar="TYPE")
@click.option(
    "--exclude-event-name",
    "event_names",
    multiple=True,
    metavar="[TYPE:]NAME",
    help="An event name not sent to the kit (of this type, or of any custom type).",
)
@click.option("--exclude-screen-name", "screen_names", multiple=True, metavar="NAME")
@click.option("--exclude-user-attribute", "user_attributes", multiple=True, metavar="NAME")
@click.option("--exclude-user-identity", "user_identities", multiple=True, metavar="TYPE")
@data_dir_option
@json_option
def kits_connect(
    name: str,
    input_: str,
    settings_args: tuple[str, ...],
    development: bool,
    event_types: tuple[str, ...],
    event_names: tuple[str, ...],
    screen_names: tuple[str, ...],
    user_attributes: tuple[str, ...],
    user_identities: tuple[str, ...],
    settings: Settings,
    as_json: bool,
) -> None:
    """Connect kit NAME to a web input (in production, or with --development in
    development; both may exist), or replace that connection. Excluded event types
    (``Navigation``, ``ProductPurchase``...), event and screen names, user attributes and
    user identity types (``email``, ``customerid``...) are not passed to the kit."""
    from patchbay.backends.records import KitFilters

    filters = KitFilters(
        event_types=list(event_types),
        event_names=list(event_names),
        screen_names=list(screen_names),
        user_attributes=list(user_attributes),
        user_identities=list(user_identities),
    )
    with kit_service(settings) as service:
        connection = service.connect(
            name,
            input_,
            parse_settings_args(settings_args),
            development=development,
            filters=filters,
        )
    if as_json:
        print_json(connection)
        return
    verb = "connected" if connection["action"] == "add" else "updated the connection of"
    click.echo(
        f"{verb} kit {connection['kit']!r} to {connection['input']!r}"
        f" ({connection['environment']}, event subscription {connection['event_subscription_id']})"
    )


@kits.command("disconnect")
@pass_settings
@click.argument("name")
@click.option("--input", "input_", required=True, help="Input name or id.")
@click.option("--development", is_flag=True, help="The development connection.")
@data_dir_option
def kits_disconnect(name: str, input_: str, development: bool, settings: Settings) -> None:
    """Disconnect kit NAME from an input (its production connection, or with --development
    its development one)."""
    with kit_service(settings) as service:
        done = service.disconnect(name, input_, development=development)
    click.echo(f"disconnected kit {done['kit']!r} from {done['input']!r} ({done['environment']})")


@kits.command("unregister")
@pass_settings
@click.argument("name")
@data_dir_option
def kits_unregister(name: str, settings: Settings) -> None:
    """Remove kit NAME (refused while it is connected to an input)."""
    with kit_service(settings) as service:
        done = service.unregister(name)
    click.echo(f"unregistered kit {done['key']!r}")
