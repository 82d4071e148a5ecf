"""``patchbay batches``: the batch log as JSON lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import click

from patchbay.cli.common import data_dir_option, open_stores, pass_settings
from patchbay.collect.stamp import stored_line
from patchbay.settings import Settings
from patchbay.store.sqlite import SqliteStore


@click.command()
@pass_settings
@data_dir_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Print at most N batches.")
@click.option("--after", type=click.IntRange(min=0), default=0, help="Start after this offset.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing batches as they arrive.")
def batches(settings: Settings, limit: int | None, after: int, follow: bool) -> None:
    """Print the stored batches as JSON lines, oldest first, with their stamps."""
    out = sys.stdout.buffer
    with open_stores(settings) as stores:
        try:
            for line in _iter_batches(stores.log, after, limit, follow):
                out.write(line + b"\n")
                out.flush()
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`)


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
