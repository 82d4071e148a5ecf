"""The ``patchbay`` command line: run the server, manage inputs, read the batch log.

The command names and their flags are a stable interface: scripts rely on them.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import msgspec

from patchbay import __version__
from patchbay.clock import SystemClock
from patchbay.collect.inputs import (
    DEFAULT_RATE_LIMIT,
    INPUT_TYPES,
    create_input,
    rotate_credentials,
)
from patchbay.collect.stamp import stored_line
from patchbay.locking import AlreadyRunning, data_dir_lock
from patchbay.resolve.identities import ALL_IDENTITY_TYPES, Identity
from patchbay.resolve.profile import Profile
from patchbay.resolve.profile_view import merge_documents, profile_document
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolveStage
from patchbay.resolve.state import StateChanges
from patchbay.resolve.strategy import IdentityStrategy, load_strategy
from patchbay.settings import (
    DEFAULT_DEDUP_WINDOW_S,
    DEFAULT_MAX_BATCHES,
    DEFAULT_MAX_REQUEST_BYTES,
    Settings,
)
from patchbay.store.base import DuplicateName, Input
from patchbay.store.sqlite import SqliteStore
from patchbay.store.sqlite_profiles import SqliteProfileStore

DEFAULT_DATA_DIR = Path("patchbay-data")

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    envvar="PATCHBAY_DATA_DIR",
    show_default=True,
    help="Directory of the embedded store (created if missing).",
)


def _open(data_dir: Path) -> SqliteStore:
    return SqliteStore(data_dir)


def _find(store: SqliteStore, name: str) -> Input:
    item = store.get_input(name)
    if item is None:
        raise click.ClickException(f"no input named {name!r} (see `patchbay inputs list`)")
    return item


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    try:
        with data_dir_lock(data_dir):
            yield
    except AlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None


def _print_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


@click.group()
@click.version_option(__version__, prog_name="patchbay")
def main() -> None:
    """Patchbay: a self-hosted customer data platform compatible with mParticle's APIs."""


@main.command()
@data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--max-request-bytes",
    default=DEFAULT_MAX_REQUEST_BYTES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest request body, before and after gzip decompression.",
)
@click.option(
    "--max-batches",
    default=DEFAULT_MAX_BATCHES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most batches in one bulk request.",
)
@click.option(
    "--dedup-window",
    default=DEFAULT_DEDUP_WINDOW_S,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a source_request_id is remembered for de-duplication.",
)
@click.option(
    "--durability",
    type=click.Choice(["full", "normal"]),
    default="full",
    show_default=True,
    help="full: fsync every commit (survives power loss); normal: survives a process crash.",
)
@click.option(
    "--log-level", default="info", show_default=True, help="debug, info, warning or error."
)
@click.option(
    "--identity-strategy",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON file of the identity strategy (default: mParticle's default strategy).",
)
def serve(
    data_dir: Path,
    host: str,
    port: int,
    max_request_bytes: int,
    max_batches: int,
    dedup_window: float,
    durability: str,
    log_level: str,
    identity_strategy: Path | None,
) -> None:
    """Run the Events API and every stage on the embedded store."""
    import uvicorn

    from patchbay.logs import configure_logging
    from patchbay.server import create_app

    configure_logging(log_level)
    settings = Settings(
        data_dir=data_dir,
        host=host,
        port=port,
        max_request_bytes=max_request_bytes,
        max_batches_per_request=max_batches,
        dedup_window_s=dedup_window,
        durability="full" if durability == "full" else "normal",
        log_level=log_level,
    )
    store = SqliteStore(data_dir, settings.durability)
    profiles = SqliteProfileStore(data_dir, settings.durability)
    strategy = load_strategy(identity_strategy) if identity_strategy else None
    app = create_app(settings, store, profiles, strategy=strategy)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        log_level=log_level.lower(),
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    with _exclusive(data_dir):
        uvicorn.Server(config).run()  # the app's lifespan closes the stores on shutdown


@main.group()
def inputs() -> None:
    """Inputs: the platforms and partner feeds that send data, each with a key and secret."""


@inputs.command("add")
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
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print {id, key, secret} as JSON.")
def inputs_add(name: str, type_: str, rate_limit: float, data_dir: Path, as_json: bool) -> None:
    """Create an input and print its key and secret (the secret is shown only once)."""
    store = _open(data_dir)
    try:
        created = create_input(store, name, type_, rate_limit, SystemClock())
    except DuplicateName:
        raise click.ClickException(f"an input named {name!r} already exists") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    _show_credentials(created.id, created.key, created.secret, as_json)


def _show_credentials(input_id: str, key: str, secret: str, as_json: bool) -> None:
    if as_json:
        _print_json({"id": input_id, "key": key, "secret": secret})
        return
    click.echo(f"id:     {input_id}\nkey:    {key}\nsecret: {secret}")
    click.echo("The secret is not stored and cannot be shown again.", err=True)


@inputs.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def inputs_list(data_dir: Path, as_json: bool) -> None:
    """List the inputs and their keys (never the secrets)."""
    store = _open(data_dir)
    try:
        rows = [(item, store.credentials(item.id)) for item in store.list_inputs()]
    finally:
        store.close()
    if as_json:
        for item, creds in rows:
            keys = [
                {"key": c.key, "enabled": c.enabled, "created_at_ms": c.created_at_ms}
                for c in creds
            ]
            _print_json({**msgspec.structs.asdict(item), "keys": keys})
        return
    click.echo(f"{'NAME':20} {'TYPE':8} {'RATE/S':>8} {'ENABLED':7}  KEYS")
    for item, creds in rows:
        shown = ", ".join(c.key + ("" if c.enabled else " (disabled)") for c in creds)
        rate = "unlimited" if item.rate_limit == 0 else f"{item.rate_limit:g}"
        click.echo(
            f"{item.name:20} {item.type:8} {rate:>8} {'yes' if item.enabled else 'no':7}  {shown}"
        )


@inputs.command("rotate")
@click.argument("name")
@click.option("--keep-old", is_flag=True, help="Leave the old keys enabled (disable them later).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print {id, key, secret} as JSON.")
def inputs_rotate(name: str, keep_old: bool, data_dir: Path, as_json: bool) -> None:
    """Give an input a new key and secret; its old keys stop working unless --keep-old."""
    store = _open(data_dir)
    try:
        created = rotate_credentials(store, _find(store, name), SystemClock(), keep_old)
    finally:
        store.close()
    _show_credentials(created.id, created.key, created.secret, as_json)


def _set_enabled(name: str, data_dir: Path, enabled: bool) -> None:
    store = _open(data_dir)
    try:
        store.set_input_enabled(_find(store, name).id, enabled)
    finally:
        store.close()
    click.echo(f"input {name!r} {'enabled' if enabled else 'disabled'}")


@inputs.command("disable")
@click.argument("name")
@data_dir_option
def inputs_disable(name: str, data_dir: Path) -> None:
    """Refuse an input's requests (403) until it is enabled again."""
    _set_enabled(name, data_dir, False)


@inputs.command("enable")
@click.argument("name")
@data_dir_option
def inputs_enable(name: str, data_dir: Path) -> None:
    """Accept an input's requests again."""
    _set_enabled(name, data_dir, True)


@inputs.command("disable-key")
@click.argument("key")
@data_dir_option
def inputs_disable_key(key: str, data_dir: Path) -> None:
    """Disable one key of an input (for example the old one after `rotate --keep-old`)."""
    store = _open(data_dir)
    try:
        if store.find_credential(key) is None:
            raise click.ClickException("no such key")
        store.set_credential_enabled(key, False)
    finally:
        store.close()
    click.echo("key disabled")


@inputs.command("set-rate-limit")
@click.argument("name")
@click.argument("batches_per_s", type=click.FloatRange(min=0))
@data_dir_option
def inputs_set_rate_limit(name: str, batches_per_s: float, data_dir: Path) -> None:
    """Change an input's rate limit in batches per second (0: unlimited)."""
    store = _open(data_dir)
    try:
        store.set_rate_limit(_find(store, name).id, batches_per_s)
    finally:
        store.close()
    click.echo(f"input {name!r}: {batches_per_s:g} batches/s")


@main.command()
@data_dir_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Print at most N batches.")
@click.option("--after", type=click.IntRange(min=0), default=0, help="Start after this offset.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing batches as they arrive.")
def batches(data_dir: Path, limit: int | None, after: int, follow: bool) -> None:
    """Print the stored batches as JSON lines, oldest first, with their stamps."""
    store = _open(data_dir)
    out = sys.stdout.buffer
    try:
        for line in _iter_batches(store, after, limit, follow):
            out.write(line + b"\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`)
    finally:
        store.close()


def _iter_batches(
    store: SqliteStore, after: int, limit: int | None, follow: bool
) -> Iterator[bytes]:
    printed = 0
    while limit is None or printed < limit:
        page = store.read(after, min(500, limit - printed) if limit else 500)
        for stored in page:
            yield stored_line(stored)
        printed += len(page)
        if page:
            after = page[-1].offset
        elif not follow:
            return
        else:
            time.sleep(0.2)


def _open_service(data_dir: Path) -> tuple[SqliteProfileStore, ResolveService]:
    profiles = SqliteProfileStore(data_dir)
    return profiles, ResolveService(profiles, Resolver(IdentityStrategy()), SystemClock())


def _show_profile(service: ResolveService, profile: Profile) -> None:
    document = profile_document(profile)
    document["merges"] = merge_documents(service.merges(profile.mpid))
    click.echo(msgspec.json.format(msgspec.json.encode(document), indent=2).decode())


@main.group()
def profiles() -> None:
    """User profiles built by the resolve stage."""


@profiles.command("show", context_settings={"ignore_unknown_options": True})
@click.argument("mpid", type=int)
@data_dir_option
def profiles_show(mpid: int, data_dir: Path) -> None:
    """Print the profile of MPID (following merges) as JSON, with its merge history."""
    store, service = _open_service(data_dir)
    try:
        profile = service.profile(mpid)
        if profile is None:
            raise click.ClickException(f"no user {mpid}")
        _show_profile(service, profile)
    finally:
        store.close()


def _identity_options(function: Callable[..., None]) -> Callable[..., None]:
    for identity_type in reversed(ALL_IDENTITY_TYPES):
        flag = "--" + identity_type.replace("_", "-")
        function = click.option(flag, identity_type, default=None, help=None)(function)
    return function


@profiles.command("find")
@_identity_options
@data_dir_option
def profiles_find(data_dir: Path, **identities: str | None) -> None:
    """Find the profile holding one identity: --email X, --customer-id X, --ios-idfv X..."""
    given = [Identity(k, v) for k, v in identities.items() if v is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one identity, e.g. --email a@example.com")
    store, service = _open_service(data_dir)
    try:
        profile = service.find(given[0])
        if profile is None:
            raise click.ClickException(f"no user has {given[0].type} {given[0].value!r}")
        _show_profile(service, profile)
    finally:
        store.close()


@main.command()
@click.option(
    "--from",
    "from_offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Replay the log from this offset (0: everything).",
)
@data_dir_option
@click.option(
    "--identity-strategy",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON file of the identity strategy.",
)
def reprocess(from_offset: int, data_dir: Path, identity_strategy: Path | None) -> None:
    """Rebuild profiles from the batch log (stop `patchbay serve` first).

    Every profile, identity link and merge is dropped, then the log is resolved again from
    --from: MPIDs are derived from batch ids, so a full replay gives the same users.
    """
    strategy = load_strategy(identity_strategy) if identity_strategy else IdentityStrategy()
    with _exclusive(data_dir):
        log_store = SqliteStore(data_dir)
        profiles_store = SqliteProfileStore(data_dir)
        try:
            last = log_store.last_offset()
            profiles_store.reset()
            if from_offset > 0:
                profiles_store.commit(StateChanges(), from_offset - 1)
            stage = ResolveStage(log_store, profiles_store, Resolver(strategy))
            started = time.monotonic()
            done = 0
            while n := stage.step():
                done += n
                position = profiles_store.committed_offset()
                click.echo(f"\rresolved up to offset {position} of {last}", nl=False, err=True)
            elapsed = max(time.monotonic() - started, 1e-9)
            click.echo(
                f"\rresolved {done} batches in {elapsed:.1f}s ({done / elapsed:,.0f}/s);"
                f" {profiles_store.count_profiles()} profiles",
                err=True,
            )
        finally:
            log_store.close()
            profiles_store.close()
