"""``patchbay partner``: check a partner integration; where a partner is (--url/--lambda)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec

from patchbay.cli.common import (
    data_dir_option,
    opened,
    pass_settings,
)
from patchbay.settings import Settings

if TYPE_CHECKING:
    from patchbay.partner.targets import Target


def target_options(function: Callable[..., None]) -> Callable[..., None]:
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


def partner_target(
    url: str | None,
    token: str | None,
    function_name: str | None,
    region: str | None,
    endpoint_url: str | None,
) -> Target:
    """The transport target the options describe (a UsageError when they conflict)."""
    from patchbay.partner.targets import DEFAULT_LAMBDA_REGION, HttpTarget, LambdaTarget

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


def timeouts_of(timeout: float) -> Any:
    from patchbay.partner.transport import Timeouts

    return Timeouts(total=timeout, connect=min(timeout, 5.0))


@click.group()
def partner() -> None:
    """Tools for partner integrations: check one the way the platform does."""


@partner.command("verify")
@pass_settings
@target_options
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
    settings: Settings,
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

    from patchbay.activate.targets import TargetPolicy
    from patchbay.partner.verify import verify

    if module_name is not None:
        if url is not None or function_name is not None:
            raise click.UsageError("give --module or a target (--url/--lambda), not both")
        target = _module_target(module_name, settings)
    else:
        target = partner_target(url, token, function_name, region, endpoint_url)
    result = asyncio.run(
        verify(
            target,
            timeouts=timeouts_of(timeout),
            latency_budget_ms=latency_budget_ms,
            latency_samples=latency_samples,
            policy=TargetPolicy.from_setting(settings.allowed_targets),
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


def _module_target(name: str, settings: Settings) -> Target:
    with opened(settings) as backend:
        module = backend.modules.get_module(name)
    if module is None:
        raise click.ClickException(f"no module named {name!r} (see `patchbay modules list`)")
    return module.target
