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
from patchbay.backends import Backend, open_backend
from patchbay.backends.abstract import BatchLog, InputStore
from patchbay.backends.records import DuplicateName, Input, LogPosition, StateChanges
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
from patchbay.resolve.strategy import IdentityStrategy, load_strategy
from patchbay.settings import (
    DEFAULT_DEDUP_WINDOW_S,
    DEFAULT_MAX_BATCHES,
    DEFAULT_MAX_REQUEST_BYTES,
    Settings,
)

DEFAULT_DATA_DIR = Path("patchbay-data")

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    envvar="PATCHBAY_DATA_DIR",
    show_default=True,
    help="Directory of the embedded store (created if missing).",
)


class _LogPositionType(click.ParamType[LogPosition, Any]):
    name = "position"

    def convert(self, value: Any, param: Any, ctx: Any) -> LogPosition:
        if isinstance(value, LogPosition):
            return value
        try:
            return LogPosition.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


LOG_POSITION = _LogPositionType()


def _open(data_dir: Path) -> Backend:
    return open_backend(Settings(data_dir=data_dir))


def _find(store: InputStore, name: str) -> Input:
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
@click.option(
    "--delivery-process/--no-delivery-process",
    default=True,
    show_default=True,
    help="Run the delivery engine in a process of its own (a core of its own for sending).",
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
    delivery_process: bool,
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
        delivery_process=delivery_process,
    )
    strategy = load_strategy(identity_strategy) if identity_strategy else None
    app = create_app(settings, strategy=strategy)
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
    backend = _open(data_dir)
    store = backend.inputs
    try:
        created = create_input(store, name, type_, rate_limit, SystemClock())
    except DuplicateName:
        raise click.ClickException(f"an input named {name!r} already exists") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        backend.close()
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
    backend = _open(data_dir)
    store = backend.inputs
    try:
        rows = [(item, store.credentials(item.id)) for item in store.list_inputs()]
    finally:
        backend.close()
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
    backend = _open(data_dir)
    store = backend.inputs
    try:
        created = rotate_credentials(store, _find(store, name), SystemClock(), keep_old)
    finally:
        backend.close()
    _show_credentials(created.id, created.key, created.secret, as_json)


def _set_enabled(name: str, data_dir: Path, enabled: bool) -> None:
    backend = _open(data_dir)
    store = backend.inputs
    try:
        store.set_input_enabled(_find(store, name).id, enabled)
    finally:
        backend.close()
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
    backend = _open(data_dir)
    store = backend.inputs
    try:
        if store.find_credential(key) is None:
            raise click.ClickException("no such key")
        store.set_credential_enabled(key, False)
    finally:
        backend.close()
    click.echo("key disabled")


@inputs.command("set-rate-limit")
@click.argument("name")
@click.argument("batches_per_s", type=click.FloatRange(min=0))
@data_dir_option
def inputs_set_rate_limit(name: str, batches_per_s: float, data_dir: Path) -> None:
    """Change an input's rate limit in batches per second (0: unlimited)."""
    backend = _open(data_dir)
    store = backend.inputs
    try:
        store.set_rate_limit(_find(store, name).id, batches_per_s)
    finally:
        backend.close()
    click.echo(f"input {name!r}: {batches_per_s:g} batches/s")


@main.command()
@data_dir_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Print at most N batches.")
@click.option(
    "--after",
    type=LOG_POSITION,
    default=None,
    help="Start after this position: OFFSET, or PARTITION:OFFSET (default: the start).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing batches as they arrive.")
def batches(data_dir: Path, limit: int | None, after: LogPosition | None, follow: bool) -> None:
    """Print the stored batches as JSON lines, oldest first, with their stamps."""
    backend = _open(data_dir)
    out = sys.stdout.buffer
    try:
        for line in _iter_batches(backend.log, after, limit, follow):
            out.write(line + b"\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`)
    finally:
        backend.close()


def _iter_batches(
    log: BatchLog, after: LogPosition | None, limit: int | None, follow: bool
) -> Iterator[bytes]:
    """The batches after ``after`` (in its partition; every partition from the start when
    ``None``), a partition at a time, then the new ones as they arrive with ``follow``."""
    printed = 0
    partitions = [after.partition] if after is not None else list(range(log.partitions))
    positions: dict[int, LogPosition | None] = {p: after for p in partitions}
    while limit is None or printed < limit:
        got = 0
        for partition in partitions:
            want = min(500, limit - printed) if limit else 500
            if want <= 0:
                return
            page = log.read(partition, positions[partition], want)
            for stored in page:
                yield stored_line(stored)
            printed += len(page)
            got += len(page)
            if page:
                positions[partition] = page[-1].position
        if not got:
            if not follow:
                return
            time.sleep(0.2)


def _open_service(data_dir: Path) -> tuple[Backend, ResolveService]:
    backend = _open(data_dir)
    return backend, ResolveService(backend.state, Resolver(IdentityStrategy()), SystemClock())


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
    backend, service = _open_service(data_dir)
    try:
        profile = service.profile(mpid)
        if profile is None:
            raise click.ClickException(f"no user {mpid}")
        _show_profile(service, profile)
    finally:
        backend.close()


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
    backend, service = _open_service(data_dir)
    try:
        profile = service.find(given[0])
        if profile is None:
            raise click.ClickException(f"no user has {given[0].type} {given[0].value!r}")
        _show_profile(service, profile)
    finally:
        backend.close()


@main.command()
@click.option(
    "--from",
    "from_position",
    type=LOG_POSITION,
    default=None,
    help="Replay the log from this position, OFFSET or PARTITION:OFFSET (default: everything).",
)
@data_dir_option
@click.option(
    "--identity-strategy",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON file of the identity strategy.",
)
def reprocess(
    from_position: LogPosition | None, data_dir: Path, identity_strategy: Path | None
) -> None:
    """Rebuild profiles from the batch log (stop `patchbay serve` first).

    Every profile, identity link and merge is dropped, then the log is resolved again from
    --from: MPIDs are derived from batch ids, so a full replay gives the same users.
    """
    strategy = load_strategy(identity_strategy) if identity_strategy else IdentityStrategy()
    with _exclusive(data_dir):
        backend = _open(data_dir)
        try:
            log, state = backend.log, backend.state
            ends = {p: e for p in range(log.partitions) if (e := log.end(p)) is not None}
            state.reset()
            if from_position is not None:
                start = from_position.offset - 1
                if start >= 0:
                    begin = LogPosition(from_position.partition, start)
                    state.commit(StateChanges(), {begin.partition: begin})
            stage = ResolveStage(log, state, Resolver(strategy))
            started = time.monotonic()
            done = 0
            try:
                while n := stage.step():
                    done += n
                    reached = ", ".join(str(p) for p in state.checkpoint().values())
                    total = ", ".join(str(p) for p in ends.values())
                    click.echo(f"\rresolved up to {reached} of {total}", nl=False, err=True)
            finally:
                stage.close()
            elapsed = max(time.monotonic() - started, 1e-9)
            click.echo(
                f"\rresolved {done} batches in {elapsed:.1f}s ({done / elapsed:,.0f}/s);"
                f" {state.count_profiles()} profiles",
                err=True,
            )
        finally:
            backend.close()


# -- partner modules (Firehose integrations) ---------------------------------------------


def _target_options(function: Callable[..., None]) -> Callable[..., None]:
    """The options that say where a partner is: --url [--token] or --lambda [--region]
    [--endpoint-url]."""
    options = [
        click.option("--url", default=None, help="The partner's HTTPS endpoint."),
        click.option(
            "--token",
            default=None,
            envvar="PATCHBAY_PARTNER_TOKEN",
            help="Token sent as 'Authorization: Token ...' (with --url; env"
            " PATCHBAY_PARTNER_TOKEN).",
        ),
        click.option(
            "--lambda", "function_name", default=None, help="The partner's Lambda function."
        ),
        click.option(
            "--region", default=None, help="The function's AWS region (default us-east-1)."
        ),
        click.option(
            "--endpoint-url", default=None, help="Lambda API endpoint (e.g. a local emulator)."
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _partner_target(
    url: str | None,
    token: str | None,
    function_name: str | None,
    region: str | None,
    endpoint_url: str | None,
) -> Any:
    """The transport target the options describe (a UsageError when they conflict)."""
    from patchbay.partner.transport import DEFAULT_LAMBDA_REGION, HttpTarget, LambdaTarget

    if (url is None) == (function_name is None):
        raise click.UsageError("give either --url URL or --lambda FUNCTION")
    if url is not None:
        if region is not None or endpoint_url is not None:
            raise click.UsageError("--region and --endpoint-url go with --lambda, not --url")
        return HttpTarget(url, token or None)
    context = click.get_current_context(silent=True)
    from_env = (
        context is not None
        and context.get_parameter_source("token") is click.core.ParameterSource.ENVIRONMENT
    )
    if token and not from_env:
        raise click.UsageError("--token goes with --url (Lambda calls are authorized by AWS)")
    assert function_name is not None
    return LambdaTarget(function_name, region or DEFAULT_LAMBDA_REGION, endpoint_url)


def _timeouts(timeout: float) -> Any:
    from patchbay.partner.transport import Timeouts

    return Timeouts(total=timeout, connect=min(timeout, 5.0))


@main.group()
def modules() -> None:
    """Partner modules: the Firehose integrations this platform sends data to."""


@modules.command("register")
@click.argument("name")
@_target_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the registration.",
)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the stored module as JSON.")
def modules_register(
    name: str,
    url: str | None,
    token: str | None,
    function_name: str | None,
    region: str | None,
    endpoint_url: str | None,
    timeout: float,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Ask a partner for its registration, check it and store it as module NAME.

    Registering NAME again replaces the module (its history is kept). The token is stored
    for later calls and never printed.
    """
    import asyncio

    from patchbay.partner.registration import (
        RegistrationError,
        check_module_name,
        module_summary,
        register,
    )
    from patchbay.partner.transport import TransportError

    try:
        check_module_name(name)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    target = _partner_target(url, token, function_name, region, endpoint_url)
    backend = _open(data_dir)
    store = backend.modules
    try:
        registered = asyncio.run(register(store, name, target, timeouts=_timeouts(timeout)))
    except RegistrationError as exc:
        for problem in exc.problems:
            click.echo(f"{problem.severity}: {problem}", err=True)
        errors = [p for p in exc.problems if p.severity == "error"]
        raise click.ClickException(
            f"registration of {name!r} rejected ({len(errors)} error(s)): {errors[0]}"
            if errors
            else f"registration of {name!r} rejected"
        ) from None
    except TransportError as exc:
        raise click.ClickException(f"registration of {name!r} failed: {exc}") from None
    finally:
        backend.close()
    module = registered.module
    for problem in registered.warnings:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        _print_json(module_summary(module))
        return
    verb = "updated" if registered.replaced else "registered"
    click.echo(
        f"{verb} module {module.name!r}: {module.display_name} {module.version}"
        f" ({registered.latency_ms:.0f} ms)"
    )
    _echo_module(module_summary(module))


def _echo_module(summary: dict[str, Any]) -> None:
    def line(key: str, value: Any) -> None:
        click.echo(f"  {key + ':':37} {value}")

    endpoint_keys = (
        ("url", "token")
        if summary["transport"] == "http"
        else ("lambda_function", "lambda_region", "lambda_endpoint_url")
    )
    for key in ("display_name", "version", "description", "sdk_version", "transport"):
        line(key, summary.get(key) or "-")
    for key in endpoint_keys:
        line(key, summary.get(key) or "-")
    for key in (
        "supported_event_types",
        "supported_runtime_environments",
        "supported_system_notification_types",
        "supported_dsr_types",
    ):
        line(key, ", ".join(summary[key]) or "-")
    line("audience", "yes" if summary["audience"] else "no")
    line("dsr", "yes" if summary["dsr"] else "no")
    permissions = summary["permissions"]
    flags = [k for k, v in permissions.items() if v is True]
    identities = [
        f"{p['type']} ({p['encoding']}{', required' if p.get('required') else ''})"
        for key in ("user_identities", "device_identities", "partner_identities")
        for p in permissions.get(key, [])
    ]
    line("identities", ", ".join(identities) or "-")
    line("permissions", ", ".join(flags) or "-")
    for key in ("account_settings", "connection_settings", "audience_subscription_settings"):
        settings = [
            f"{s['id']} ({s.get('type')}"
            + (", required" if s.get("required") else "")
            + (", confidential" if s.get("confidential") else "")
            + ")"
            for s in summary[key]
        ]
        line(key, ", ".join(settings) or "-")
    line("registered", f"{summary['created_at']}, updated {summary['updated_at']}")


@modules.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def modules_list(data_dir: Path, as_json: bool) -> None:
    """List the registered modules (never their tokens)."""
    from patchbay.partner.registration import module_summary

    backend = _open(data_dir)
    store = backend.modules
    try:
        summaries = [module_summary(m) for m in store.list_modules()]
    finally:
        backend.close()
    if as_json:
        for summary in summaries:
            _print_json(summary)
        return
    click.echo(f"{'NAME':20} {'VERSION':10} {'TRANSPORT':9} {'TOKEN':7} {'KINDS':20} ENDPOINT")
    for s in summaries:
        kinds = ",".join(
            k
            for k, on in (
                ("events", bool(s["supported_event_types"])),
                ("audience", s["audience"]),
                ("dsr", s["dsr"]),
            )
            if on
        )
        if s["transport"] == "http":
            endpoint, token = s["url"], s["token"]
        else:
            endpoint, token = f"{s['lambda_function']} ({s['lambda_region']})", "-"
        click.echo(
            f"{s['name']:20} {s['version']:10} {s['transport']:9} {token:7} {kinds or '-':20}"
            f" {endpoint}"
        )


@modules.command("show")
@click.argument("name")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the module and its registration.")
def modules_show(name: str, data_dir: Path, as_json: bool) -> None:
    """Show a registered module (its token only as set / not set)."""
    from patchbay.partner.registration import module_summary

    backend = _open(data_dir)
    store = backend.modules
    try:
        module = store.get_module(name)
        history = store.module_history(name) if module is not None else []
    finally:
        backend.close()
    if module is None:
        raise click.ClickException(f"no module named {name!r} (see `patchbay modules list`)")
    if as_json:
        summary = module_summary(module, with_registration=True)
        summary["registrations"] = len(history)
        click.echo(msgspec.json.format(msgspec.json.encode(summary), indent=2).decode())
        return
    click.echo(f"module {module.name!r} ({len(history)} registration(s))")
    _echo_module(module_summary(module))


@main.group()
def partner() -> None:
    """Tools for partner integrations: check one the way the platform does."""


@partner.command("verify")
@_target_options
@click.option(
    "--module",
    "module_name",
    default=None,
    help="Verify a registered module (its stored endpoint and token) instead.",
)
@data_dir_option
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the results as JSON to this file.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option(
    "--latency-budget-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Latency budget (default: 100 ms over HTTP, 200 ms over Lambda).",
)
@click.option(
    "--latency-samples",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Extra verification requests sent to measure latency.",
)
def partner_verify(
    url: str | None,
    token: str | None,
    function_name: str | None,
    region: str | None,
    endpoint_url: str | None,
    module_name: str | None,
    data_dir: Path,
    report: Path | None,
    timeout: float,
    latency_budget_ms: float | None,
    latency_samples: int,
) -> None:
    """Run the checks a platform runs before it lists an integration.

    Registers the partner (without storing it), sends a request of every kind it
    registered and checks each answer's type, shape and latency. Exits non-zero when a
    check fails; warnings do not fail.
    """
    import asyncio

    from patchbay.partner.verify import verify

    if module_name is not None:
        if url is not None or function_name is not None:
            raise click.UsageError("give --module or a target (--url/--lambda), not both")
        target = _module_target(module_name, data_dir)
    else:
        target = _partner_target(url, token, function_name, region, endpoint_url)
    result = asyncio.run(
        verify(
            target,
            timeouts=_timeouts(timeout),
            latency_budget_ms=latency_budget_ms,
            latency_samples=latency_samples,
        )
    )
    rows = [
        (
            c.check,
            c.status.value,
            "-" if c.latency_ms is None else f"{c.latency_ms:.1f}",
            c.detail,
        )
        for c in result.checks
    ]
    width = max(len("CHECK"), *(len(r[0]) for r in rows))
    click.echo(f"verifying {result.target}")
    click.echo(f"{'CHECK':{width}}  RESULT  {'LATENCY MS':>10}  DETAIL")
    for check, status, latency, detail in rows:
        click.echo(f"{check:{width}}  {status:6}  {latency:>10}  {detail}")
    counts = result.to_dict()["counts"]
    click.echo(
        f"{result.result.value}: {counts['PASS']} passed, {counts['WARN']} warned,"
        f" {counts['FAIL']} failed, {counts['SKIP']} skipped"
    )
    if report is not None:
        document = msgspec.json.format(msgspec.json.encode(result.to_dict()), indent=2)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_bytes(document + b"\n")
        click.echo(f"report written to {report}", err=True)
    if not result.passed:
        raise SystemExit(1)


def _module_target(name: str, data_dir: Path) -> Any:
    from patchbay.partner.registration import target_of

    backend = _open(data_dir)
    store = backend.modules
    try:
        module = store.get_module(name)
    finally:
        backend.close()
    if module is None:
        raise click.ClickException(f"no module named {name!r} (see `patchbay modules list`)")
    return target_of(module)


# --------------------------------------------------------------------------- activate


@contextlib.contextmanager
def _activate(data_dir: Path) -> Iterator[Any]:
    """The outputs/connections/deliveries service over the stores of ``data_dir``."""
    from patchbay.activate.service import ActivateError, ActivateService

    backend = _open(data_dir)
    try:
        yield ActivateService(backend, SystemClock())
    except ActivateError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        backend.close()


def _settings_of(items: tuple[str, ...]) -> dict[str, str]:
    from patchbay.activate.outputs import SettingsError, parse_setting_args

    try:
        return parse_setting_args(items)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def _echo_mapping(summary: dict[str, Any], indent: str = "") -> None:
    for key, value in summary.items():
        if isinstance(value, dict) and value:
            click.echo(f"{indent}{key}:")
            _echo_mapping(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{indent}{key}:")
            for item in value:
                click.echo(f"{indent}  -")
                _echo_mapping(item, indent + "    ")
        else:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            click.echo(f"{indent}{key}: {'-' if shown in (None, '', {}) else shown}")


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


setting_option = click.option(
    "--setting",
    "settings",
    multiple=True,
    metavar="ID=VALUE",
    help="A setting (repeat); checked against the module's registration.",
)


@main.group()
def outputs() -> None:
    """Outputs: where resolved data goes (Firehose modules, webhooks, JSON-lines files)."""


@outputs.command("add")
@click.argument("name")
@click.option("--module", "module", default=None, help="A registered module (Firehose).")
@click.option("--webhook", default=None, metavar="URL", help="POST each batch as JSON to URL.")
@click.option("--file", "file_", default=None, metavar="PATH", help="Append JSON lines to PATH.")
@setting_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the output as JSON.")
def outputs_add(
    name: str,
    module: str | None,
    webhook: str | None,
    file_: str | None,
    settings: tuple[str, ...],
    data_dir: Path,
    as_json: bool,
) -> None:
    """Create output NAME: --module MODULE [--setting ID=VALUE]..., --webhook URL or
    --file PATH. Confidential settings are never printed."""
    if sum(x is not None for x in (module, webhook, file_)) != 1:
        raise click.UsageError("give exactly one of --module, --webhook or --file")
    with _activate(data_dir) as service:
        summary = service.add_output(
            name, module=module, webhook=webhook, file=file_, settings=_settings_of(settings)
        )
    if as_json:
        _print_json(summary)
        return
    click.echo(f"created output {name!r}")
    _echo_mapping(summary)


@outputs.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def outputs_list(data_dir: Path, as_json: bool) -> None:
    """List the outputs."""
    with _activate(data_dir) as service:
        found = service.list_outputs()
    if as_json:
        for item in found:
            _print_json(item)
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
    _table(["NAME", "KIND", "DESTINATION", "STATE"], rows)


@outputs.command("show")
@click.argument("name")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the output as JSON.")
def outputs_show(name: str, data_dir: Path, as_json: bool) -> None:
    """Show an output, its connections and its queue."""
    with _activate(data_dir) as service:
        summary = service.show_output(name)
    if as_json:
        _print_json(summary)
    else:
        _echo_mapping(summary)


@outputs.command("pause")
@click.argument("name")
@data_dir_option
def outputs_pause(name: str, data_dir: Path) -> None:
    """Stop sending to an output; its deliveries wait in the outbox."""
    with _activate(data_dir) as service:
        service.set_paused(name, True)
    click.echo(f"paused output {name!r}")


@outputs.command("resume")
@click.argument("name")
@data_dir_option
def outputs_resume(name: str, data_dir: Path) -> None:
    """Send to a paused output again (also after a partner's suspend_subscription)."""
    with _activate(data_dir) as service:
        service.set_paused(name, False)
    click.echo(f"resumed output {name!r}")


@outputs.command("status")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def outputs_status(data_dir: Path, as_json: bool) -> None:
    """A table of the outputs: state, pending and parked deliveries, oldest pending age."""
    with _activate(data_dir) as service:
        rows = service.status()
    if as_json:
        for row in rows:
            _print_json(row)
        return
    _table(
        ["OUTPUT", "KIND", "STATE", "PENDING", "PARKED", "OLDEST S", "REASON"],
        [
            [
                r["name"],
                r["kind"],
                r["state"],
                str(r["pending"]),
                str(r["parked"]),
                "-" if r["oldest_pending_age_s"] is None else f"{r['oldest_pending_age_s']:g}",
                r["paused_reason"] or "",
            ]
            for r in rows
        ],
    )


def _split(value: str | None) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


@main.group()
def connections() -> None:
    """Connections: which input goes to which output, with settings and filters."""


@connections.command("add")
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
    settings: tuple[str, ...],
    event_types: str | None,
    environment: str | None,
    event_names: str | None,
    drop_event_names: str | None,
    attributes: str | None,
    drop_attributes: str | None,
    sample_percent: float,
    consent_purposes: tuple[str, ...],
    data_dir: Path,
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
    with _activate(data_dir) as service:
        summary = service.add_connection(
            input_=input_, output=output, settings=_settings_of(settings), filters=filters
        )
    if as_json:
        _print_json(summary)
        return
    click.echo(f"connected {summary['input']!r} to {output!r} (connection {summary['id']})")


@connections.command("list")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def connections_list(data_dir: Path, as_json: bool) -> None:
    """List the connections."""
    with _activate(data_dir) as service:
        found = service.list_connections()
    if as_json:
        for item in found:
            _print_json(item)
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
    _table(["ID", "INPUT", "OUTPUT", "FILTERS"], rows)


@connections.command("remove")
@click.argument("connection_id", required=False)
@click.option("--input", "input_", default=None, help="Input name or id (with --output).")
@click.option("--output", "output", default=None, help="Output name (with --input).")
@data_dir_option
def connections_remove(
    connection_id: str | None, input_: str | None, output: str | None, data_dir: Path
) -> None:
    """Remove a connection by ID, or by --input and --output. Deliveries already queued
    are still sent."""
    with _activate(data_dir) as service:
        removed = service.remove_connection(connection_id, input_=input_, output=output)
    click.echo(f"removed {removed} connection(s)")


@main.group()
def deliveries() -> None:
    """Deliveries: the outbox; parked deliveries and their replay."""


@deliveries.command("parked")
@click.option("--output", default=None, help="Only this output's deliveries.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def deliveries_parked(output: str | None, limit: int, data_dir: Path, as_json: bool) -> None:
    """List parked deliveries with their last error."""
    with _activate(data_dir) as service:
        found = service.parked(output, limit)
    if as_json:
        for item in found:
            _print_json(item)
        return
    _table(
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
@click.option("--output", default=None, help="Replay this output's parked deliveries.")
@click.option("--id", "ids", multiple=True, help="Replay this delivery (repeat).")
@click.option("--all", "all_", is_flag=True, help="Replay every parked delivery.")
@data_dir_option
def deliveries_replay(output: str | None, ids: tuple[str, ...], all_: bool, data_dir: Path) -> None:
    """Send parked deliveries again, with their original message ids (a running server
    picks them up at once)."""
    if not (output or ids or all_):
        raise click.UsageError("give --output OUTPUT, --id ID or --all")
    with _activate(data_dir) as service:
        count = service.replay_all() if all_ else service.replay(output, list(ids))
    click.echo(f"replaying {count} parked deliveries")


def _add_admin_token_option() -> None:
    """``serve --admin-token``: enables the admin HTTP API (passed on in the environment of
    the server, never stored)."""
    original = serve.callback
    assert original is not None

    def callback(admin_token: str | None, **kwargs: Any) -> Any:
        import os

        if admin_token:
            os.environ["PATCHBAY_ADMIN_TOKEN"] = admin_token
        return original(**kwargs)

    serve.params.append(
        click.Option(
            ["--admin-token"],
            default=None,
            envvar="PATCHBAY_ADMIN_TOKEN",
            help="Token of the admin HTTP API (Authorization: Bearer ...); without one the"
            " admin API is disabled. Env PATCHBAY_ADMIN_TOKEN.",
        )
    )
    serve.callback = callback


_add_admin_token_option()
