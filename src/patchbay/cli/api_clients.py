"""``patchbay api-clients``: server-side credentials for the Profile API, with scopes."""

from __future__ import annotations

import click

from patchbay.api_clients import SCOPES, ApiClientError, create_client, rotate_secret
from patchbay.backends.abstract import ApiClientStore
from patchbay.backends.records import ApiClient, DuplicateName
from patchbay.cli.common import data_dir_option, opened, pass_settings, print_json
from patchbay.clock import SystemClock
from patchbay.logs import config_changed
from patchbay.settings import Settings

_SCOPE_HELP = "; ".join(f"{name}: {what}" for name, what in SCOPES.items())


@click.group("api-clients")
def api_clients() -> None:
    """API clients: server-side credentials for reading data back (the Profile API).

    Input keys and secrets ship inside apps and can only send data; an API client's id and
    secret stay on your servers and carry scopes. The secret is shown once.
    """


def _find(store: ApiClientStore, name: str) -> ApiClient:
    client = store.get_client(name)
    if client is None:
        raise click.ClickException(
            f"no API client named {name!r} (see `patchbay api-clients list`)"
        )
    return client


def _show_secret(
    name: str, client_id: str, secret: str, scopes: tuple[str, ...], as_json: bool
) -> None:
    if as_json:
        print_json(
            {"name": name, "client_id": client_id, "client_secret": secret, "scopes": list(scopes)}
        )
        return
    click.echo(
        f"client_id:     {client_id}\nclient_secret: {secret}\nscopes:        {' '.join(scopes)}"
    )
    click.echo("The secret is not stored and cannot be shown again.", err=True)


@api_clients.command("add")
@pass_settings
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    metavar="SCOPE",
    help=f"A scope the client holds (repeat for several). {_SCOPE_HELP}.",
)
@data_dir_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print {name, client_id, client_secret, scopes}."
)
def api_clients_add(name: str, scopes: tuple[str, ...], settings: Settings, as_json: bool) -> None:
    """Create an API client and print its id and secret (the secret is shown only once)."""
    with opened(settings) as backend:
        try:
            made = create_client(backend.api_clients, name, scopes, SystemClock())
        except DuplicateName:
            raise click.ClickException(f"an API client named {name!r} already exists") from None
        except ApiClientError as exc:
            raise click.ClickException(str(exc)) from None
    _show_secret(made.name, made.client_id, made.client_secret, made.scopes, as_json)


@api_clients.command("list")
@pass_settings
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def api_clients_list(settings: Settings, as_json: bool) -> None:
    """List the API clients (never their secrets)."""
    with opened(settings) as backend:
        rows = backend.api_clients.list_clients()
    if as_json:
        for client in rows:
            print_json(
                {
                    "name": client.name,
                    "client_id": client.id,
                    "scopes": list(client.scopes),
                    "enabled": client.enabled,
                    "created_at_ms": client.created_at_ms,
                    "secret_set_at_ms": client.secret_set_at_ms,
                }
            )
        return
    click.echo(f"{'NAME':20} {'CLIENT ID':30} {'ENABLED':7}  SCOPES")
    for client in rows:
        enabled = "yes" if client.enabled else "no"
        click.echo(f"{client.name:20} {client.id:30} {enabled:7}  {' '.join(client.scopes)}")


@api_clients.command("rotate")
@pass_settings
@click.argument("name")
@data_dir_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print {name, client_id, client_secret, scopes}."
)
def api_clients_rotate(name: str, settings: Settings, as_json: bool) -> None:
    """Give an API client a new secret (same id); the old secret and every token issued
    with it stop working at once."""
    with opened(settings) as backend:
        made = rotate_secret(backend.api_clients, _find(backend.api_clients, name), SystemClock())
    _show_secret(made.name, made.client_id, made.client_secret, made.scopes, as_json)


def _set_enabled(name: str, settings: Settings, enabled: bool) -> None:
    with opened(settings) as backend:
        client = _find(backend.api_clients, name)
        backend.api_clients.set_client_enabled(client.id, enabled)
        config_changed("api_client", name, "enable" if enabled else "disable", id=client.id)
    click.echo(f"API client {name!r} {'enabled' if enabled else 'disabled'}")


@api_clients.command("disable")
@pass_settings
@click.argument("name")
@data_dir_option
def api_clients_disable(name: str, settings: Settings) -> None:
    """Refuse an API client's requests and tokens (401) until it is enabled again."""
    _set_enabled(name, settings, False)


@api_clients.command("enable")
@pass_settings
@click.argument("name")
@data_dir_option
def api_clients_enable(name: str, settings: Settings) -> None:
    """Accept an API client's requests again (its tokens that have not expired too)."""
    _set_enabled(name, settings, True)


@api_clients.command("remove")
@pass_settings
@click.argument("name")
@data_dir_option
def api_clients_remove(name: str, settings: Settings) -> None:
    """Delete an API client; its tokens stop working at once."""
    with opened(settings) as backend:
        client = _find(backend.api_clients, name)
        backend.api_clients.remove_client(client.id)
        config_changed("api_client", name, "delete", id=client.id)
    click.echo(f"API client {name!r} removed")
