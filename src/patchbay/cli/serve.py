"""``patchbay serve``: every stage and API, or some of them (``--role``, the scale-out
mode)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from patchbay.backends.records import StoreUnavailable
from patchbay.cli.common import (
    DEFAULTS,
    DURATION,
    creating_data_dir_option,
    identity_strategy,
    pass_settings,
    serving,
    store_error,
)
from patchbay.errors import PatchbayError
from patchbay.settings import ROLES, Settings

if TYPE_CHECKING:
    from patchbay.http.tls import TlsFiles


@click.command()
@pass_settings
@creating_data_dir_option
@click.option("--host", default=DEFAULTS.host, show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=DEFAULTS.port, show_default=True, type=int, help="Port to listen on."
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Serve HTTPS with this certificate chain (PEM, the server's certificate first);"
    " needs --tls-key. Env PATCHBAY_TLS_CERT. `patchbay dev-cert` makes one for development.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The unencrypted private key (PEM) of --tls-cert; keep it 0600. Env PATCHBAY_TLS_KEY.",
)
@click.option(
    "--role",
    type=click.Choice([*ROLES, "all"]),
    multiple=True,
    help="What this process runs, repeatable: ingest (the HTTP APIs), process (the"
    " pipeline), deliver (the delivery engine) or all (the default). Other than all: the"
    " scale-out mode only. Env PATCHBAY_ROLES (comma-separated).",
)
@click.option(
    "--max-request-bytes",
    default=DEFAULTS.max_request_bytes,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest request body, before and after gzip decompression.",
)
@click.option(
    "--max-batches",
    default=DEFAULTS.max_batches_per_request,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most batches in one bulk request.",
)
@click.option(
    "--dedup-window",
    default=DEFAULTS.dedup_window_s,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a source_request_id is remembered for de-duplication.",
)
@click.option(
    "--max-header-bytes",
    default=DEFAULTS.max_header_bytes,
    show_default=True,
    type=click.IntRange(min=1),
    help="Largest request line and headers of a request (431 beyond it).",
)
@click.option(
    "--header-timeout",
    default=DEFAULTS.header_timeout_s,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a client has to send a request's line and headers (408 and closed after).",
)
@click.option(
    "--body-timeout",
    default=DEFAULTS.body_timeout_s,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a client has to send a whole body once its headers are in (408 and closed"
    " after).",
)
@click.option(
    "--max-connections",
    default=DEFAULTS.max_connections,
    show_default=True,
    type=click.IntRange(min=1),
    help="Open HTTP connections kept; one more is answered 503 and closed.",
)
@click.option(
    "--log-retention",
    default=DEFAULTS.log_retention_s,
    show_default=True,
    type=DURATION,
    help="How long the batch log keeps batches every stage has handled: seconds or a"
    " duration (12h, 7d); 0 keeps them for ever.",
)
@click.option(
    "--log-retention-bytes",
    default=DEFAULTS.log_retention_bytes,
    show_default=True,
    type=click.IntRange(min=0),
    help="The most bytes of batches the log keeps (the oldest go first); 0: no limit.",
)
@click.option(
    "--durability",
    type=click.Choice(["full", "normal"]),
    default=DEFAULTS.durability,
    show_default=True,
    help="full: fsync every commit (survives power loss); normal: survives a process crash.",
)
@click.option(
    "--log-level",
    default=DEFAULTS.log_level,
    show_default=True,
    help="debug, info, warning or error.",
)
@click.option(
    "--log-summary-interval",
    default=DEFAULTS.log_summary_interval_s,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds between two throughput summaries in the log (0: none).",
)
@click.option(
    "--identity-strategy",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON file of the identity strategy (default: mParticle's default strategy).",
)
@click.option(
    "--delivery-process/--no-delivery-process",
    default=DEFAULTS.delivery_process,
    show_default=True,
    help="Run the delivery engine in a process of its own (a core of its own for sending).",
)
@click.option(
    "--segment-process/--no-segment-process",
    default=DEFAULTS.segment_process,
    show_default=True,
    help="Run the segment stage in a process of its own (a core of its own for audiences).",
)
@click.option(
    "--admin-token",
    default=None,
    help="Token of the admin HTTP API (Authorization: Bearer ...); without one the"
    " admin API is disabled. Other users can read the command line: prefer"
    " --admin-token-file or $PATCHBAY_ADMIN_TOKEN.",
)
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the admin token (first line; the file must be 0600 or stricter)."
    " Env PATCHBAY_ADMIN_TOKEN_FILE.",
)
@click.option(
    "--metrics-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the token /metrics then requires (Authorization: Bearer ...);"
    " or $PATCHBAY_METRICS_TOKEN. Without one /metrics is open.",
)
def serve(settings: Settings) -> None:
    """Run the Events API and every stage (or the roles --role names)."""
    from patchbay.logs import configure_logging
    from patchbay.server import create_app

    configure_logging(settings.log_level, catch_uncaught=True)
    strategy = identity_strategy(settings)
    tls = _tls_files(settings)
    # The lock before the backend is opened (and recovered); serve creates a missing store.
    # The embedded store's is the data directory's; the scale-out mode's is shared by every
    # serve of the deployment (and kept from `patchbay reprocess` while any runs).
    with serving(settings):
        try:
            app = create_app(settings, strategy=strategy)  # its lifespan closes the backend
        except StoreUnavailable as exc:
            raise store_error(exc) from None
        except PatchbayError as exc:
            raise click.ClickException(str(exc)) from None
        _run(app, settings, tls)


def _tls_files(settings: Settings) -> TlsFiles | None:
    """The checked certificate and key of HTTPS, if the settings name them."""
    from patchbay.clock import SystemClock
    from patchbay.http.tls import TlsFiles, check_tls_files

    if settings.tls_cert is None or settings.tls_key is None:
        return None
    files = TlsFiles(settings.tls_cert, settings.tls_key)
    check_tls_files(files, SystemClock())
    return files


def _run(app: Any, settings: Settings, tls: TlsFiles | None) -> None:
    import uvicorn

    from patchbay.http.protocol import protocol_class

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools with limits on header size, slow clients and open connections
        http=protocol_class(settings),
        access_log=False,
        log_config=None,
        log_level=settings.log_level.lower(),
        server_header=False,
        timeout_graceful_shutdown=10,
        # X-Forwarded-For/-Proto only from the configured proxies (uvicorn would believe
        # any local client by default, which could then set the address Patchbay stores)
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        ssl_certfile=tls.cert if tls else None,
        ssl_keyfile=tls.key if tls else None,
    )
    uvicorn.Server(config).run()
