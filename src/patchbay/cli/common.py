"""What the commands share: the settings options, the backend, output helpers."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec
import structlog
from click.core import ParameterSource

from patchbay.backends import (
    Backend,
    StoreMissing,
    StoreUnavailable,
    check_store,
    open_backend,
)
from patchbay.backends.records import LogPosition
from patchbay.clock import SystemClock
from patchbay.config import FLAGS, ConfigError, parse_seconds, settings_from_process
from patchbay.datadir import DataDirError
from patchbay.locking import AlreadyRunning, data_dir_lock
from patchbay.logs import configure_logging
from patchbay.resolve.strategy import IdentityStrategy, load_strategy
from patchbay.settings import Settings

if TYPE_CHECKING:
    from patchbay.activate.service import ActivateService

#: The defaults, as ``--help`` shows them.
DEFAULTS = Settings()
#: The click parameter of each setting that has a flag (``max_batches``: the setting
#: ``max_batches_per_request``).
SETTING_PARAMS = {
    flag.split("/")[0].removeprefix("--").replace("-", "_"): field for field, flag in FLAGS.items()
}


def _settings_options(function: Callable[..., Any], data_dir_help: str) -> Callable[..., Any]:
    function = click.option(
        "--secrets-key-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Key file of the stored partner tokens and confidential settings (default:"
        " secrets.key in the data directory; created 0600 on first use). Keep a backup"
        " apart from the data.",
    )(function)
    function = click.option(
        "--state",
        default=None,
        metavar="postgresql://USER@HOST:PORT/DB",
        help="Keep the state in PostgreSQL instead of the data directory (env PATCHBAY_STATE;"
        " put a password in ~/.pgpass or the variable, not here); see docs/scale-out.md.",
    )(function)
    for flag, clients, variable in (
        ("--kafka-consumer-option", "Kafka consumers (on top of --kafka-option)", "CONSUMER_"),
        ("--kafka-producer-option", "the Kafka producer (on top of --kafka-option)", "PRODUCER_"),
        ("--kafka-option", "every Kafka client (TLS, SASL, tuning)", ""),
    ):
        function = click.option(
            flag,
            multiple=True,
            metavar="KEY=VALUE",
            help=f"A librdkafka property of {clients}, repeatable; env"
            f" PATCHBAY_KAFKA_{variable}OPTIONS=KEY=VALUE,... Put passwords in the variable or"
            " the config file, not here (see docs/configuration.md).",
        )(function)
    function = click.option(
        "--log",
        default=None,
        metavar="kafka://HOST:PORT[,...]",
        help="Keep the batch log in Apache Kafka (env PATCHBAY_LOG); needs --state.",
    )(function)
    function = click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="TOML file of settings (default: $PATCHBAY_CONFIG); see docs/configuration.md.",
    )(function)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULTS.data_dir,
        show_default=True,
        help=data_dir_help,
    )(function)


def data_dir_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--data-dir`` and ``--config``, the settings options of every command."""
    return _settings_options(
        function,
        "Directory of the store (env PATCHBAY_DATA_DIR); it must exist: only `serve` and"
        " `inputs add` create one (0700); refused if group or others can access it.",
    )


def creating_data_dir_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`data_dir_option` of the commands that create a missing store."""
    return _settings_options(
        function,
        "Directory of the store (env PATCHBAY_DATA_DIR; created 0700 if missing; refused if"
        " group or others can access it).",
    )


def pass_settings(function: Callable[..., Any]) -> Callable[..., Any]:
    """Give the command ``settings`` instead of its settings options (``--config`` and the
    flags of :data:`SETTING_PARAMS`): the flags given, else the environment, else the file.
    Logging is configured from them (JSON lines on stderr: a command that changes the
    configuration logs it, :func:`patchbay.logs.config_changed`)."""

    @functools.wraps(function)
    def command(**kwargs: Any) -> Any:
        context = click.get_current_context()
        file = kwargs.pop("config")
        flags = {}
        for param, field in SETTING_PARAMS.items():
            if param in kwargs:
                value = kwargs.pop(param)
                if context.get_parameter_source(param) is ParameterSource.COMMANDLINE:
                    flags[field] = value
        try:
            settings = settings_from_process(flags, file)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        configure_logging(settings.log_level)
        return function(settings=settings, **kwargs)

    return command


def identity_strategy(settings: Settings) -> IdentityStrategy:
    """The identity strategy the settings name (mParticle's default strategy without one)."""
    if settings.identity_strategy is None:
        return IdentityStrategy()
    try:
        return load_strategy(settings.identity_strategy)
    except (OSError, ValueError, msgspec.ValidationError) as exc:
        raise click.BadParameter(str(exc), param_hint="identity_strategy") from None


# -- the backend ---------------------------------------------------------------------------


#: What to do when a command finds no store (only ``serve`` and ``inputs add`` create one).
NO_STORE_HINT = (
    "give --data-dir or PATCHBAY_DATA_DIR; `patchbay serve` or `patchbay inputs add` creates one"
)


def store_error(exc: StoreMissing | StoreUnavailable) -> click.ClickException:
    """The one-line CLI error for a store that is missing or cannot be opened (the path in
    full, so that a command run from another directory says where it looked)."""
    where = exc.data_dir.absolute() if isinstance(exc.data_dir, Path) else exc.data_dir
    if isinstance(exc, StoreMissing):
        return click.ClickException(f"no Patchbay data at {where} ({NO_STORE_HINT})")
    return click.ClickException(f"cannot open the Patchbay data at {where}: {exc.reason}")


@contextlib.contextmanager
def opened(settings: Settings, *, create: bool = False) -> Iterator[Backend]:
    """The stores of the backend ``settings`` names, closed on the way out.

    Only the commands that set a store up (``serve``, ``inputs add``) pass ``create``;
    every other command fails with a clear error when there is no store where the settings
    point, rather than creating an empty one and showing nothing. What is logged meanwhile
    says ``"via": "cli"``.
    """
    try:
        backend = open_backend(settings, create=create)
    except (StoreMissing, StoreUnavailable) as exc:
        raise store_error(exc) from None
    try:
        with structlog.contextvars.bound_contextvars(via="cli"):
            yield backend
    finally:
        backend.close()


class LogPositionType(click.ParamType[LogPosition, Any]):
    """A log position on the command line: ``OFFSET`` or ``PARTITION:OFFSET``."""

    name = "position"

    def convert(self, value: Any, param: Any, ctx: Any) -> LogPosition:
        if isinstance(value, LogPosition):
            return value
        try:
            return LogPosition.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


LOG_POSITION = LogPositionType()


class DurationType(click.ParamType[float, Any]):
    """A duration on the command line: seconds, or a number and s, m, h or d (``7d``)."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float | int):
            return float(value)
        try:
            return parse_seconds(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


_Service = TypeVar("_Service")


@contextlib.contextmanager
def service_of(
    settings: Settings,
    make: Callable[[Backend, SystemClock], _Service],
    errors: type[Exception],
) -> Iterator[_Service]:
    """A stage's service (``make(backend, clock)``) over the settings' backend
    (:func:`opened`); its ``errors`` become CLI errors."""
    with opened(settings) as backend:
        try:
            yield make(backend, SystemClock())
        except errors as exc:
            raise click.ClickException(str(exc)) from None


def activate_service(settings: Settings) -> contextlib.AbstractContextManager[ActivateService]:
    """The outputs/connections/deliveries service; its errors become CLI errors."""
    from patchbay.activate.service import ActivateError, ActivateService

    def make(backend: Backend, clock: SystemClock) -> ActivateService:
        return ActivateService.from_settings(backend, clock, settings)

    return service_of(settings, make, ActivateError)


@contextlib.contextmanager
def exclusive(settings: Settings, *, create: bool = False) -> Iterator[None]:
    """Hold the data directory's lock (a CLI error if a server holds it, or if group or
    others can access the directory); in the scale-out mode, the deployment's lock alone
    (a CLI error while any ``patchbay serve`` of it runs; see
    :mod:`patchbay.backends.postgres.serving`).
    Without ``create``, a CLI error when there is no store there (and nothing is created)."""
    if not create:
        try:
            check_store(settings)
        except (StoreMissing, StoreUnavailable) as exc:
            raise store_error(exc) from None
    if settings.state is not None:
        with _deployment_lock(settings, alone=True):
            yield
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(data_dir_lock(settings.data_dir))
        except (AlreadyRunning, DataDirError) as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise store_error(StoreUnavailable.of(settings.data_dir, exc)) from None
        yield


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[None]:
    """What a ``patchbay serve`` holds while it runs: the data directory's lock on the
    embedded store (:func:`exclusive`, creating a missing store), the deployment's lock
    shared with the other serves in the scale-out mode."""
    if settings.state is None:
        with exclusive(settings, create=True):
            yield
        return
    with _deployment_lock(settings, alone=False):
        yield


@contextlib.contextmanager
def _deployment_lock(settings: Settings, *, alone: bool) -> Iterator[None]:
    from patchbay.backends.postgres import PostgresDatabase
    from patchbay.backends.postgres.serving import ServingLock

    assert settings.state is not None
    try:
        db = PostgresDatabase(settings.state.reveal(), pool_size=1)
    except StoreUnavailable as exc:
        raise store_error(exc) from None
    lock = ServingLock(db)
    try:
        try:
            if not alone:
                lock.share()
            elif not lock.try_alone():
                raise click.ClickException(
                    f"a patchbay serve is running on {db.where}: stop every serve of the"
                    " deployment first"
                )
        except StoreUnavailable as exc:
            raise store_error(exc) from None
        yield
    finally:
        lock.release()
        db.close()


# -- output --------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    """One line of JSON."""
    click.echo(msgspec.json.encode(value).decode())


def echo_mapping(summary: dict[str, Any], indent: str = "") -> None:
    """A summary as indented ``key: value`` lines."""
    for key, value in summary.items():
        if isinstance(value, dict) and value:
            click.echo(f"{indent}{key}:")
            echo_mapping(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{indent}{key}:")
            for item in value:
                click.echo(f"{indent}  -")
                echo_mapping(item, indent + "    ")
        else:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            click.echo(f"{indent}{key}: {'-' if shown in (None, '', {}) else shown}")


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- module settings of outputs and connections ----------------------------------------------

setting_option = click.option(
    "--setting",
    "settings_args",
    multiple=True,
    metavar="ID=VALUE",
    help="A setting (repeat); checked against the module's registration.",
)


def parse_settings_args(items: tuple[str, ...]) -> dict[str, str]:
    """``--setting ID=VALUE`` options as a mapping (a usage error when malformed)."""
    from patchbay.activate.outputs import parse_setting_args
    from patchbay.firehose.errors import SettingError

    try:
        return parse_setting_args(items)
    except SettingError as exc:
        raise click.UsageError(str(exc)) from None
