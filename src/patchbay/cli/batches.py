"""``patchbay batches``: the batch log as JSON lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import click

from patchbay.backends.abstract import BatchLog
from patchbay.backends.records import LogPosition
from patchbay.cli.common import LOG_POSITION, data_dir_option, opened, pass_settings
from patchbay.collect.stamp import stored_line
from patchbay.settings import Settings


@click.command()
@pass_settings
@data_dir_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Print at most N batches.")
@click.option(
    "--after",
    type=LOG_POSITION,
    default=None,
    help="Start after this position: OFFSET, or PARTITION:OFFSET (default: the start).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing batches as they arrive.")
def batches(settings: Settings, limit: int | None, after: LogPosition | None, follow: bool) -> None:
    """Print the stored batches as JSON lines, oldest first, with their stamps.

    One JSON object per line, always: a pretty-printed batch is put on one line (same
    members, same order), and a body that is not valid JSON comes out as a JSON string.
    """
    out = sys.stdout.buffer
    with opened(settings) as backend:
        try:
            for line in _iter_batches(backend.log, after, limit, follow):
                out.write(line + b"\n")
                out.flush()
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`)


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
