"""``python -m patchbay`` and the ``patchbay`` console script run the command line, which
needs the ``server`` extra (``pip install 'patchbay[server]'``)."""

from __future__ import annotations

import sys

#: What the command line imports beyond the core (msgspec), all from the ``server`` extra.
SERVER_MODULES = frozenset(
    {"aiohttp", "click", "prometheus_client", "starlette", "structlog", "uvicorn"}
)


def main() -> None:
    """Run the command line, or say which extra to install when its packages are missing."""
    try:
        from patchbay.cli import main as cli_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        sys.exit(
            f"patchbay: the command line needs the 'server' extra ({exc.name} is not"
            " installed): pip install 'patchbay[server]'"
        )
    cli_main()


if __name__ == "__main__":  # not when a spawned child process imports it
    main()
