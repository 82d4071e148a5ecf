"""``patchbay profiles`` and ``patchbay reprocess``: the profiles the resolve stage builds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import click
import msgspec

from patchbay.backends.abstract import Backend, BatchLog, StateStore
from patchbay.backends.records import LogPosition, StateChanges
from patchbay.cli.common import (
    LOG_POSITION,
    data_dir_option,
    exclusive,
    identity_strategy,
    opened,
    pass_settings,
)
from patchbay.clock import SystemClock
from patchbay.resolve.identities import ALL_IDENTITY_TYPES, Identity
from patchbay.resolve.profile import Profile
from patchbay.resolve.profile_view import merge_documents, profile_document
from patchbay.resolve.resolver import Resolver
from patchbay.resolve.service import ResolveService
from patchbay.resolve.stage import ResolveStage
from patchbay.resolve.strategy import IdentityStrategy
from patchbay.retention import retained
from patchbay.segment.replay import replay
from patchbay.settings import Settings


def _service(profiles: StateStore) -> ResolveService:
    return ResolveService(profiles, Resolver(IdentityStrategy()), SystemClock())


def _show_profile(service: ResolveService, profile: Profile, backend: Backend) -> None:
    from patchbay.segment.service import AudienceService

    memberships = AudienceService(backend, SystemClock()).memberships(profile.mpid)
    document = profile_document(profile, memberships=memberships)
    document["merges"] = merge_documents(service.merges(profile.mpid))
    click.echo(msgspec.json.format(msgspec.json.encode(document), indent=2).decode())


@click.group()
def profiles() -> None:
    """User profiles built by the resolve stage."""


@profiles.command("show", context_settings={"ignore_unknown_options": True})
@pass_settings
@click.argument("mpid", type=int)
@data_dir_option
def profiles_show(mpid: int, settings: Settings) -> None:
    """Print the profile of MPID (following merges) as JSON, with its merge history."""
    with opened(settings) as backend:
        service = _service(backend.state)
        profile = service.profile(mpid)
        if profile is None:
            raise click.ClickException(f"no user {mpid}")
        _show_profile(service, profile, backend)


def _identity_options(function: Callable[..., None]) -> Callable[..., None]:
    for identity_type in reversed(ALL_IDENTITY_TYPES):
        flag = "--" + identity_type.replace("_", "-")
        function = click.option(flag, identity_type, default=None, help=None)(function)
    return function


@profiles.command("find")
@pass_settings
@_identity_options
@data_dir_option
def profiles_find(settings: Settings, **identities: str | None) -> None:
    """Find the profile holding one identity: --email X, --customer-id X, --ios-idfv X..."""
    given = [Identity(k, v) for k, v in identities.items() if v is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one identity, e.g. --email a@example.com")
    with opened(settings) as backend:
        service = _service(backend.state)
        profile = service.find(given[0])
        if profile is None:
            raise click.ClickException(f"no user has {given[0].type} {given[0].value!r}")
        _show_profile(service, profile, backend)


def _say_retained(log: BatchLog, from_position: LogPosition | None) -> None:
    """Print which batches a replay covers, and what retention removed before them."""
    for part in retained(log):
        click.echo(f"log partition {part.partition}: {part.describe()}", err=True)
        if part.removed is None:
            continue
        if from_position is None or from_position.partition != part.partition:
            click.echo(
                "  the batches removed by retention are not replayed: what only they said"
                " is not in the rebuilt profiles and audiences",
                err=True,
            )
        elif from_position <= part.removed:
            click.echo(
                f"  --from {from_position}: the batches up to {part.removed} were removed by"
                " retention; the replay starts at the oldest one retained",
                err=True,
            )


@click.command()
@pass_settings
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
def reprocess(from_position: LogPosition | None, settings: Settings) -> None:
    """Rebuild profiles from the batch log (stop `patchbay serve` first).

    Every profile, identity link and merge is dropped, then the log is resolved again from
    --from: MPIDs are derived from batch ids, so a full replay gives the same users. Then
    the audiences are computed again from the whole log (connected outputs receive every
    member again). Only the batches the log retains are replayed: the range is printed
    first, with what retention removed (--log-retention).
    """
    strategy = identity_strategy(settings)
    with exclusive(settings), opened(settings) as backend:
        log, state = backend.log, backend.state
        _say_retained(log, from_position)
        ends = [e for p in range(log.partitions) if (e := log.end(p)) is not None]
        state.reset()
        if from_position is not None and from_position.offset > 0:
            begin = LogPosition(from_position.partition, from_position.offset - 1)
            state.commit(StateChanges(), {begin.partition: begin})
        stage = ResolveStage(log, state, Resolver(strategy))
        started = time.monotonic()
        done = 0
        try:
            while n := stage.step():
                done += n
                reached = ", ".join(str(p) for p in state.checkpoint().values())
                total = ", ".join(str(p) for p in ends)
                click.echo(f"\rresolved up to {reached} of {total}", nl=False, err=True)
        finally:
            stage.close()
        elapsed = max(time.monotonic() - started, 1e-9)
        click.echo(
            f"\rresolved {done} batches in {elapsed:.1f}s ({done / elapsed:,.0f}/s);"
            f" {state.count_profiles()} profiles",
            err=True,
        )
        if backend.audiences.list_audiences():
            started = time.monotonic()
            counted = replay(
                backend,
                SystemClock(),
                lambda line: click.echo(f"\raudiences: {line}\033[K", nl=False, err=True),
            )
            sizes = backend.audiences.sizes()
            click.echo(
                f"\raudiences: {counted} batches counted, {len(sizes)} audiences with members,"
                f" in {time.monotonic() - started:.1f}s\033[K",
                err=True,
            )
