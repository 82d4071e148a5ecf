"""``patchbay inputs``: the platforms and feeds that send data, with their credentials."""

from __future__ import annotations

import click
import msgspec

from patchbay.backends.abstract import InputStore
from patchbay.backends.records import DuplicateName, Input
from patchbay.cli.common import (
    creating_data_dir_option,
    data_dir_option,
    opened,
    pass_settings,
    print_json,
)
from patchbay.clock import SystemClock
from patchbay.collect.inputs import (
    DEFAULT_RATE_LIMIT,
    INPUT_TYPES,
    check_new_input,
    create_input,
    rotate_credentials,
)
from patchbay.settings import Settings


@click.group()
def inputs() -> None:
    """Inputs: the platforms and partner feeds that send data, each with a key and secret."""


def _find(store: InputStore, name: str) -> Input:
    item = store.get_input(name)
    if item is None:
        raise click.ClickException(f"no input named {name!r} (see `patchbay inputs list`)")
    return item


def _show_credentials(input_id: str, key: str, secret: str, as_json: bool) -> None:
    if as_json:
        print_json({"id": input_id, "key": key, "secret": secret})
        return
    click.echo(f"id:     {input_id}\nkey:    {key}\nsecret: {secret}")
    click.echo("The secret is not stored and cannot be shown again.", err=True)


@inputs.command("add")
@pass_settings
@click.argument("name")
@click.option(
    "--type", "type_", required=True, type=click.Choice(INPUT_TYPES), help="Platform or feed."
)
@click.option(
    "--rate-limit",
    default=DEFAULT_RATE_LIMIT,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Batches per second (0: unlimited).",
)
@creating_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print {id, key, secret} as JSON.")
def inputs_add(name: str, type_: str, rate_limit: float, settings: Settings, as_json: bool) -> None:
    """Create an input and print its key and secret (the secret is shown only once).

    Creates the data directory's store if there is none yet.
    """
    try:
        check_new_input(name, type_, rate_limit)  # a refused input creates no store
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    with opened(settings, create=True) as backend:
        try:
            created = create_input(backend.inputs, name, type_, rate_limit, SystemClock())
        except DuplicateName:
            raise click.ClickException(f"an input named {name!r} already exists") from None
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    _show_credentials(created.id, created.key, created.secret, as_json)


@inputs.command("list")
@pass_settings
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def inputs_list(settings: Settings, as_json: bool) -> None:
    """List the inputs and their keys (never the secrets)."""
    with opened(settings) as backend:
        rows = [
            (item, backend.inputs.credentials(item.id)) for item in backend.inputs.list_inputs()
        ]
    if as_json:
        for item, creds in rows:
            keys = [
                {"key": c.key, "enabled": c.enabled, "created_at_ms": c.created_at_ms}
                for c in creds
            ]
            print_json({**msgspec.structs.asdict(item), "keys": keys})
        return
    click.echo(f"{'NAME':20} {'TYPE':8} {'RATE/S':>8} {'ENABLED':7}  KEYS")
    for item, creds in rows:
        shown = ", ".join(c.key + ("" if c.enabled else " (disabled)") for c in creds)
        rate = "unlimited" if item.rate_limit == 0 else f"{item.rate_limit:g}"
        click.echo(
            f"{item.name:20} {item.type:8} {rate:>8} {'yes' if item.enabled else 'no':7}  {shown}"
        )


@inputs.command("rotate")
@pass_settings
@click.argument("name")
@click.option("--keep-old", is_flag=True, help="Leave the old keys enabled (disable them later).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print {id, key, secret} as JSON.")
def inputs_rotate(name: str, keep_old: bool, settings: Settings, as_json: bool) -> None:
    """Give an input a new key and secret; its old keys stop working unless --keep-old."""
    with opened(settings) as backend:
        item = _find(backend.inputs, name)
        created = rotate_credentials(backend.inputs, item, SystemClock(), keep_old)
    _show_credentials(created.id, created.key, created.secret, as_json)


def _set_enabled(name: str, settings: Settings, enabled: bool) -> None:
    with opened(settings) as backend:
        backend.inputs.set_input_enabled(_find(backend.inputs, name).id, enabled)
    click.echo(f"input {name!r} {'enabled' if enabled else 'disabled'}")


@inputs.command("disable")
@pass_settings
@click.argument("name")
@data_dir_option
def inputs_disable(name: str, settings: Settings) -> None:
    """Refuse an input's requests (403) until it is enabled again."""
    _set_enabled(name, settings, False)


@inputs.command("enable")
@pass_settings
@click.argument("name")
@data_dir_option
def inputs_enable(name: str, settings: Settings) -> None:
    """Accept an input's requests again."""
    _set_enabled(name, settings, True)


@inputs.command("disable-key")
@pass_settings
@click.argument("key")
@data_dir_option
def inputs_disable_key(key: str, settings: Settings) -> None:
    """Disable one key of an input (for example the old one after `rotate --keep-old`)."""
    with opened(settings) as backend:
        if backend.inputs.find_credential(key) is None:
            raise click.ClickException("no such key")
        backend.inputs.set_credential_enabled(key, False)
    click.echo("key disabled")


@inputs.command("set-rate-limit")
@pass_settings
@click.argument("name")
@click.argument("batches_per_s", type=click.FloatRange(min=0))
@data_dir_option
def inputs_set_rate_limit(name: str, batches_per_s: float, settings: Settings) -> None:
    """Change an input's rate limit in batches per second (0: unlimited)."""
    with opened(settings) as backend:
        backend.inputs.set_rate_limit(_find(backend.inputs, name).id, batches_per_s)
    click.echo(f"input {name!r}: {batches_per_s:g} batches/s")
