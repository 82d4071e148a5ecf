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
    SERVER_SIDE_TYPES,
    check_allowed_origins,
    check_idsync_key_only,
    check_new_input,
    create_input,
    key_only_allowed,
    rotate_credentials,
)
from patchbay.http.auth import key_prefix
from patchbay.logs import config_changed
from patchbay.secretbox import SecretBox, key_path
from patchbay.settings import Settings


@click.group()
def inputs() -> None:
    """Inputs: the platforms and partner feeds that send data, each with a key and secret."""


def _find(store: InputStore, name: str) -> Input:
    item = store.get_input(name)
    if item is None:
        raise click.ClickException(f"no input named {name!r} (see `patchbay inputs list`)")
    return item


def _box(settings: Settings, type_: str) -> SecretBox | None:
    """The box that seals a new secret of a client input (IDSync's HMAC signatures need
    them); none for server and feed inputs, whose secrets are never sealed."""
    if type_ in SERVER_SIDE_TYPES:
        return None
    return SecretBox(key_path(settings.data_dir, settings.secrets_key_file))


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
    help="Batches per second on the Events API, and IDSync requests per second (0: unlimited).",
)
@click.option(
    "--idsync-key-only",
    is_flag=True,
    help="Let IDSync accept this client input's key alone (x-mp-key, no secret or signature);"
    " web inputs always do, server and feed inputs never.",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="URL",
    help="A web input: an origin (https://shop.example[:port]) whose pages may use the key;"
    " repeatable. Default: any origin.",
)
@creating_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print {id, key, secret} as JSON.")
def inputs_add(
    name: str,
    type_: str,
    rate_limit: float,
    idsync_key_only: bool,
    allowed_origins: tuple[str, ...],
    settings: Settings,
    as_json: bool,
) -> None:
    """Create an input and print its key and secret (the secret is shown only once).

    Creates the data directory's store if there is none yet. A client input's secret is
    also kept encrypted with the secrets key (secrets_key_file), so that IDSync can
    check the mobile SDKs' signatures."""
    try:  # a refused input creates no store
        check_new_input(name, type_, rate_limit, idsync_key_only)
        check_allowed_origins(type_, allowed_origins)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    with opened(settings, create=True) as backend:
        box = _box(settings, type_)
        try:
            created = create_input(
                backend.inputs,
                name,
                type_,
                rate_limit,
                SystemClock(),
                idsync_key_only=idsync_key_only,
                box=box,
                allowed_origins=allowed_origins,
            )
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
            document = msgspec.structs.asdict(item)
            document["idsync_key_only"] = key_only_allowed(item)
            print_json({**document, "keys": keys})
        return
    click.echo(
        f"{'NAME':20} {'TYPE':8} {'RATE/S':>8} {'ENABLED':7} {'KEY-ONLY':8} {'ORIGINS':8}  KEYS"
    )
    for item, creds in rows:
        shown = ", ".join(c.key + ("" if c.enabled else " (disabled)") for c in creds)
        rate = "unlimited" if item.rate_limit == 0 else f"{item.rate_limit:g}"
        enabled = "yes" if item.enabled else "no"
        key_only = "yes" if key_only_allowed(item) else "no"
        origins = ",".join(item.allowed_origins) or "*"
        click.echo(
            f"{item.name:20} {item.type:8} {rate:>8} {enabled:7} {key_only:8} {origins:8}  {shown}"
        )


@inputs.command("rotate")
@pass_settings
@click.argument("name")
@click.option("--keep-old", is_flag=True, help="Leave the old keys enabled (disable them later).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print {id, key, secret} as JSON.")
def inputs_rotate(name: str, keep_old: bool, settings: Settings, as_json: bool) -> None:
    """Give an input a new key and secret; its old keys stop working unless --keep-old.

    Rotating also gives a client input made before IDSync checked signatures a key whose
    signatures can be checked."""
    with opened(settings) as backend:
        item = _find(backend.inputs, name)
        box = _box(settings, item.type)
        created = rotate_credentials(backend.inputs, item, SystemClock(), keep_old, box)
    _show_credentials(created.id, created.key, created.secret, as_json)


def _set_enabled(name: str, settings: Settings, enabled: bool) -> None:
    with opened(settings) as backend:
        item = _find(backend.inputs, name)
        backend.inputs.set_input_enabled(item.id, enabled)
        config_changed("input", name, "enable" if enabled else "disable", id=item.id)
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
        found = backend.inputs.find_credential(key)
        if found is None:
            raise click.ClickException("no such key")
        backend.inputs.set_credential_enabled(key, False)
        item = found[1]
        config_changed("input", item.name, "disable_key", id=item.id, key_prefix=key_prefix(key))
    click.echo("key disabled")


@inputs.command("set-rate-limit")
@pass_settings
@click.argument("name")
@click.argument("batches_per_s", type=click.FloatRange(min=0))
@data_dir_option
def inputs_set_rate_limit(name: str, batches_per_s: float, settings: Settings) -> None:
    """Change an input's rate limit in batches per second (0: unlimited)."""
    with opened(settings) as backend:
        item = _find(backend.inputs, name)
        backend.inputs.set_rate_limit(item.id, batches_per_s)
        config_changed("input", name, "update", id=item.id, rate_limit=batches_per_s)
    click.echo(f"input {name!r}: {batches_per_s:g} batches/s")


@inputs.command("set-idsync-key-only")
@pass_settings
@click.argument("name")
@click.argument("switch", metavar="on|off", type=click.Choice(["on", "off"]))
@data_dir_option
def inputs_set_idsync_key_only(name: str, switch: str, settings: Settings) -> None:
    """Whether IDSync accepts a client input's key alone (x-mp-key, no secret or signature).

    Off by default for ios, android and the other client types, whose SDKs sign their IDSync
    requests; always on for web inputs (the Web SDK has no secret); never on for server and
    feed inputs. A request authenticated by the key alone may modify or alias only users its
    input has seen."""
    on = switch == "on"
    with opened(settings) as backend:
        item = _find(backend.inputs, name)
        try:
            check_idsync_key_only(item.type, on)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        backend.inputs.set_idsync_key_only(item.id, on)
        config_changed("input", name, "update", id=item.id, idsync_key_only=on)
    click.echo(f"input {name!r}: IDSync key-only {switch}")


@inputs.command("set-allowed-origins")
@pass_settings
@click.argument("name")
@click.argument("origins", nargs=-1, metavar="[URL]...")
@data_dir_option
def inputs_set_allowed_origins(name: str, origins: tuple[str, ...], settings: Settings) -> None:
    """Replace the origins whose pages may use a web input's key (none given: any origin).

    A browser request from another origin gets no CORS permission and a 403."""
    with opened(settings) as backend:
        item = _find(backend.inputs, name)
        try:
            found = check_allowed_origins(item.type, origins)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        backend.inputs.set_allowed_origins(item.id, found)
        config_changed("input", name, "update", id=item.id, allowed_origins=list(found))
    click.echo(f"input {name!r}: allowed origins {', '.join(found) or 'any'}")
