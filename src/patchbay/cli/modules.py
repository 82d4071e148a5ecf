"""``patchbay modules``: the registered partner (Firehose) integrations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import msgspec

from patchbay.cli.common import (
    data_dir_option,
    opened,
    pass_settings,
    print_json,
)
from patchbay.cli.partner import partner_target, target_options, timeouts_of
from patchbay.settings import Settings

if TYPE_CHECKING:
    from patchbay.backends.records import ModuleRecord


@click.group()
def modules() -> None:
    """Partner modules: the Firehose integrations this platform sends data to."""


@modules.command("register")
@pass_settings
@click.argument("name")
@target_options
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
    settings: Settings,
    as_json: bool,
) -> None:
    """Ask a partner for its registration, check it and store it as module NAME.

    The registration request is sent without the token; then, over HTTP, the partner's
    verification request is sent with it (or without, when none is given): a partner that
    answers 401 or 403 refuses the token, and nothing is stored. Registering NAME again
    replaces the module (its history is kept). The token is stored for later calls and
    never printed.
    The URL must be http(s) and not a link-local, cloud metadata, unspecified or multicast
    address, within allowed_targets when that is set; a token goes over plain http only to
    loopback or an allow-listed host.
    """
    import asyncio

    from patchbay.activate.targets import TargetPolicy
    from patchbay.partner.registration import (
        AccessRefusedError,
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
    target = partner_target(url, token, function_name, region, endpoint_url)
    with opened(settings) as backend:
        try:
            registered = asyncio.run(
                register(
                    backend.modules,
                    name,
                    target,
                    timeouts=timeouts_of(timeout),
                    policy=TargetPolicy.from_setting(settings.allowed_targets),
                )
            )
        except RegistrationError as exc:
            for problem in exc.problems:
                click.echo(f"{problem.severity}: {problem}", err=True)
            errors = [p for p in exc.problems if p.severity == "error"]
            raise click.ClickException(
                f"registration of {name!r} rejected ({len(errors)} error(s)): {errors[0]}"
                if errors
                else f"registration of {name!r} rejected"
            ) from None
        except AccessRefusedError as exc:
            raise click.ClickException(
                f"registration of {name!r} refused, nothing stored: {exc}"
            ) from None
        except TransportError as exc:
            raise click.ClickException(
                f"registration of {name!r} failed, nothing stored: {exc}"
            ) from None
    module = registered.module
    for problem in registered.warnings:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        print_json(module_summary(module))
        return
    verb = "updated" if registered.replaced else "registered"
    click.echo(
        f"{verb} module {module.name!r}: {module.display_name} {module.version}"
        f" ({registered.latency_ms:.0f} ms)"
    )
    _echo_module(module)


def _echo_module(module: ModuleRecord) -> None:
    from patchbay.partner.registration import module_summary
    from patchbay.partner.targets import HttpTarget, LambdaTarget

    summary = module_summary(module)

    def line(key: str, value: Any) -> None:
        click.echo(f"  {key + ':':37} {value}")

    endpoint_keys: tuple[str, ...]
    match module.target:
        case HttpTarget():
            endpoint_keys = ("url", "token")
        case LambdaTarget():
            endpoint_keys = ("lambda_function", "lambda_region", "lambda_endpoint_url")
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
@pass_settings
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def modules_list(settings: Settings, as_json: bool) -> None:
    """List the registered modules (never their tokens)."""
    from patchbay.partner.registration import module_summary
    from patchbay.partner.targets import HttpTarget, LambdaTarget

    with opened(settings) as backend:
        found = backend.modules.list_modules()
    if as_json:
        for module in found:
            print_json(module_summary(module))
        return
    click.echo(f"{'NAME':20} {'VERSION':10} {'TRANSPORT':9} {'TOKEN':7} {'KINDS':20} ENDPOINT")
    for module in found:
        s = module_summary(module)
        kinds = ",".join(
            k
            for k, on in (
                ("events", bool(s["supported_event_types"])),
                ("audience", s["audience"]),
                ("dsr", s["dsr"]),
            )
            if on
        )
        match module.target:
            case HttpTarget():
                endpoint, token = s["url"], s["token"]
            case LambdaTarget(function=function, region=region):
                endpoint, token = f"{function} ({region})", "-"
        click.echo(
            f"{s['name']:20} {s['version']:10} {s['transport']:9} {token:7} {kinds or '-':20}"
            f" {endpoint}"
        )


@modules.command("show")
@pass_settings
@click.argument("name")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the module and its registration.")
def modules_show(name: str, settings: Settings, as_json: bool) -> None:
    """Show a registered module (its token only as set / not set)."""
    from patchbay.partner.registration import module_summary

    with opened(settings) as backend:
        module = backend.modules.get_module(name)
        history = backend.modules.module_history(name) if module is not None else []
    if module is None:
        raise click.ClickException(f"no module named {name!r} (see `patchbay modules list`)")
    if as_json:
        summary = module_summary(module, with_registration=True)
        summary["registrations"] = len(history)
        click.echo(msgspec.json.format(msgspec.json.encode(summary), indent=2).decode())
        return
    click.echo(f"module {module.name!r} ({len(history)} registration(s))")
    _echo_module(module)
