"""``patchbay audiences``: real-time audiences (user segments), their members and where they
are sent.

Every command works while ``patchbay serve`` runs on the same data directory (none takes the
data directory's lock): the segment stage in ``serve`` computes what they define. After
``create`` and ``update``, unless ``--no-wait``, the command follows the audience's build on
stderr until it is live when ``serve`` is running (exit code 3 when ``--timeout`` passes
first: the audience is saved and still being computed), and says that it will be computed
when ``serve`` starts when it is not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
import msgspec

from patchbay.cli.common import (
    data_dir_option,
    echo_mapping,
    parse_settings_args,
    pass_settings,
    print_json,
    service_of,
    setting_option,
    table,
)
from patchbay.locking import LOCK_FILE
from patchbay.settings import Settings

if TYPE_CHECKING:
    from patchbay.segment.service import AudienceService

#: How many members ``members`` reads at a time.
MEMBERS_PAGE: Final = 10_000
#: How often a followed build is read again (seconds).
POLL_INTERVAL_S: Final = 0.5
#: The exit code when ``--timeout`` passes before the audience is live.
TIMED_OUT_EXIT: Final = 3


def audience_service(settings: Settings) -> contextlib.AbstractContextManager[AudienceService]:
    """The audience service over the settings' backend; its errors become CLI errors."""
    from patchbay.segment.service import AudienceError, AudienceService

    return service_of(settings, AudienceService, AudienceError)


# -- is serve running? ---------------------------------------------------------------------


def _held_in_proc_locks(path: Path) -> bool | None:
    """Whether ``/proc/locks`` lists a lock on ``path`` (``None``: it cannot tell)."""
    try:
        stat = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    wanted = (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino)
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->":  # "->": waiting for a lock, not holding one
            continue
        try:
            major, minor, inode = parts[5].split(":")
            found = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if found == wanted:
            return True
    return None  # not listed: ask flock itself (a file system may show other numbers)


def serve_running(data_dir: Path) -> bool:
    """Whether a process (``patchbay serve``) holds the data directory's lock.

    Read from ``/proc/locks`` without touching the lock. Where that cannot tell, a shared
    lock is tried without waiting and let go at once: it fails while the lock is held, and
    when it is free it is held for an instant only.
    """
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    if _held_in_proc_locks(path):
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# -- following a build ---------------------------------------------------------------------


def progress_text(summary: dict[str, Any]) -> str:
    """One line about how far an audience's build got."""
    build = summary["build"]
    name = f"audience {summary['name']!r} (version {summary['version']})"
    phase = build["phase"]
    if phase == "live":
        size = summary["size"]
        return f"{name} is live: {size:,} member{'' if size == 1 else 's'}"
    if phase == "evaluating":
        total = build["users_total"]
        share = f" ({100 * build['users_done'] / total:.0f}%)" if total else ""
        return (
            f"{name}: evaluating users: {build['users_done']:,} / {total:,}{share};"
            f" {summary['size']:,} members so far"
        )
    conditions = build.get("conditions") or {}
    counting = (
        f"{conditions.get('building', 0)} event condition(s) being counted over the stored"
        f" batches{_history_text(build.get('history') or [])},"
        f" {conditions.get('scanned', 0):,} batches scanned"
    )
    if phase == "scanning":
        return f"{name}: scanning: {counting}"
    return f"{name}: waiting for the segment stage ({counting})"


def _history_text(history: list[dict[str, Any]]) -> str:
    """Which batches the log retains for a build: `` (from 0:1235, received ...; older
    ones removed by retention)``, or nothing when it retains every batch."""
    parts = [
        f"from {h['from']}, received {h['from_received_at']}" if h["from"] else "none"
        for h in history
        if h["removed_upto"]
    ]
    if not parts:
        return ""
    return f" ({'; '.join(parts)}; older ones removed by retention)"


def follow(settings: Settings, service: AudienceService, name: str, timeout_s: float) -> None:
    """Print the build's progress on stderr until it is live (or serve stops, or the
    timeout passes: exit code 3)."""
    if settings.backend == "memory":
        return
    if not serve_running(settings.data_dir):
        click.echo(
            f"patchbay serve is not running: audience {name!r} will be computed when"
            " `patchbay serve` starts",
            err=True,
        )
        return
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        summary = service.progress(name)
        text = progress_text(summary)
        if text != last:
            click.echo(text, err=True)
            last = text
        if summary["status"] == "live":
            return
        if time.monotonic() >= deadline:
            click.echo(
                f"audience {name!r} is saved and still being computed after {timeout_s:g}s:"
                f" follow it with `patchbay audiences show {name}`",
                err=True,
            )
            click.get_current_context().exit(TIMED_OUT_EXIT)
        if not serve_running(settings.data_dir):
            click.echo(
                f"patchbay serve stopped: audience {name!r} will be computed when it starts",
                err=True,
            )
            return
        time.sleep(POLL_INTERVAL_S)


def _read(file: Path) -> tuple[str, str | None]:
    """The text of ``file`` (``-``: stdin) and the file name given to the parser."""
    if str(file) == "-":
        return sys.stdin.read(), None
    try:
        return file.read_text(encoding="utf-8"), str(file)
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None


def _wait_options(function: Any) -> Any:
    function = click.option(
        "--timeout",
        type=click.FloatRange(min=0),
        default=600.0,
        show_default=True,
        help="Seconds to follow the build before giving up (exit code 3).",
    )(function)
    return click.option(
        "--no-wait",
        is_flag=True,
        help="Do not follow the build (patchbay serve computes it in the background).",
    )(function)


_FILE = click.Path(dir_okay=False, path_type=Path, allow_dash=True)


# -- the commands ----------------------------------------------------------------------------


@click.group()
def audiences() -> None:
    """Audiences: users selected by criteria, kept up to date and sent to partner modules."""


@audiences.command("create")
@pass_settings
@click.argument("file", type=_FILE)
@data_dir_option
@_wait_options
@click.option("--json", "as_json", is_flag=True, help='Print {"id", "name"} as JSON.')
def audiences_create(
    file: Path, settings: Settings, no_wait: bool, timeout: float, as_json: bool
) -> None:
    """Define a new audience from FILE (JSON or YAML; `-` reads stdin)."""
    text, filename = _read(file)
    with audience_service(settings) as service:
        summary = service.create(text, filename)
        if as_json:
            print_json({"id": summary["id"], "name": summary["name"]})
        else:
            click.echo(f"created audience {summary['name']!r} (id {summary['id']})")
        if not no_wait:
            follow(settings, service, summary["name"], timeout)


@audiences.command("update")
@pass_settings
@click.argument("name")
@click.argument("file", type=_FILE)
@data_dir_option
@_wait_options
@click.option("--json", "as_json", is_flag=True, help="Print the audience as JSON.")
def audiences_update(
    name: str, file: Path, settings: Settings, no_wait: bool, timeout: float, as_json: bool
) -> None:
    """Replace audience NAME's definition with FILE (it may rename it). Its members are
    computed again only when its criteria change."""
    text, filename = _read(file)
    with audience_service(settings) as service:
        summary = service.update(name, text, filename)
        if as_json:
            print_json(summary)
        else:
            again = "; computed again" if summary.get("criteria_changed") else ""
            click.echo(
                f"updated audience {summary['name']!r} (id {summary['id']},"
                f" version {summary['version']}{again})"
            )
        if not no_wait:
            follow(settings, service, summary["name"], timeout)


def _status(summary: dict[str, Any]) -> str:
    build = summary["build"]
    if build["phase"] == "evaluating" and build["users_total"]:
        return f"evaluating {100 * build['users_done'] / build['users_total']:.0f}%"
    return str(build["phase"])


@audiences.command("list")
@pass_settings
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audiences_list(settings: Settings, as_json: bool) -> None:
    """List the audiences: size, build status and outputs."""
    with audience_service(settings) as service:
        found = service.list()
    if as_json:
        for item in found:
            print_json(item)
        return
    rows = [
        [
            str(a["id"]),
            a["name"],
            f"{a['size']:,}",
            _status(a),
            ", ".join(a["outputs"]) or "-",
        ]
        for a in found
    ]
    table(["ID", "NAME", "SIZE", "STATUS", "OUTPUTS"], rows)


@audiences.command("show")
@pass_settings
@click.argument("name")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the audience as JSON.")
def audiences_show(name: str, settings: Settings, as_json: bool) -> None:
    """Show an audience: definition, size, build progress and connections (confidential
    settings masked)."""
    with audience_service(settings) as service:
        summary = service.show(name)
    if as_json:
        print_json(summary)
        return
    definition = summary.pop("definition")
    echo_mapping(summary)
    click.echo("definition:")
    text = msgspec.json.format(msgspec.json.encode(definition), indent=2).decode()
    for line in text.splitlines():
        click.echo(f"  {line}")


@audiences.command("members")
@pass_settings
@click.argument("name")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of MPIDs.")
def audiences_members(name: str, settings: Settings, as_json: bool) -> None:
    """Print the MPIDs of an audience's members, one a line (read page by page)."""
    with audience_service(settings) as service:
        after: int | None = None
        first = True
        if as_json:
            click.echo("[", nl=False)
        while True:
            page = service.members(name, after, MEMBERS_PAGE)
            if page["members"]:
                if as_json:
                    prefix = "" if first else ","
                    click.echo(prefix + ",".join(map(str, page["members"])), nl=False)
                else:
                    click.echo("\n".join(map(str, page["members"])))
                first = False
            if page["next"] is None:
                break
            after = page["next"]
        if as_json:
            click.echo("]")


@audiences.command("delete")
@pass_settings
@click.argument("name")
@data_dir_option
def audiences_delete(name: str, settings: Settings) -> None:
    """Delete an audience (refused while other audiences refer to it); the outputs it is
    connected to are told to remove it."""
    with audience_service(settings) as service:
        deleted = service.delete(name)
    outputs = deleted["disconnected"]
    told = f"; removed from {', '.join(map(repr, outputs))}" if outputs else ""
    click.echo(f"deleted audience {deleted['name']!r}{told}")


@audiences.command("connect")
@pass_settings
@click.argument("name")
@click.option("--output", "output", required=True, help="A module output.")
@setting_option
@click.option(
    "--attribute",
    "attributes",
    multiple=True,
    metavar="KEY",
    help="A user attribute to send with the members (repeat; the module must allow it).",
)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the connection as JSON.")
def audiences_connect(
    name: str,
    output: str,
    settings_args: tuple[str, ...],
    attributes: tuple[str, ...],
    settings: Settings,
    as_json: bool,
) -> None:
    """Send audience NAME to a module output; again with other settings or attributes, change
    the connection. The module's audience subscription settings are given with --setting."""
    with audience_service(settings) as service:
        connection = service.connect(
            name, output, parse_settings_args(settings_args), list(attributes)
        )
    if as_json:
        print_json(connection)
        return
    audience = connection["audience"]
    if connection["action"] == "add":
        click.echo(f"connected audience {audience!r} to {output!r}")
    elif connection["action"] == "update":
        click.echo(f"changed the connection of audience {audience!r} to {output!r}")
    else:
        click.echo(f"audience {audience!r} is already connected to {output!r} so (unchanged)")


@audiences.command("disconnect")
@pass_settings
@click.argument("name")
@click.option("--output", "output", required=True, help="The output to stop sending to.")
@data_dir_option
def audiences_disconnect(name: str, output: str, settings: Settings) -> None:
    """Stop sending audience NAME to an output (the output is told to remove it)."""
    with audience_service(settings) as service:
        removed = service.disconnect(name, output)
    click.echo(f"disconnected audience {removed['audience']!r} from {output!r}")
