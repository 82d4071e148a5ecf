"""The SQLite example partner as an HTTP endpoint (the ASGI adapter served by uvicorn)::

    python -m examples.sqlite_partner.http --port 9090 --token SECRET --db partner.db

or with uvicorn's own command line (the settings come from the environment)::

    FIREHOSE_TOKEN=SECRET SQLITE_PARTNER_DB=partner.db \\
        uvicorn examples.sqlite_partner.http:app --port 9090

Without a token (``--token`` or ``$FIREHOSE_TOKEN``) every caller is accepted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from examples.sqlite_partner.partner import SqlitePartner
from patchbay.firehose.asgi import FirehoseASGIApp, asgi_app

TOKEN_ENV = "FIREHOSE_TOKEN"


def build_app(db: str | None = None, token: str | None = None) -> FirehoseASGIApp:
    """The partner's ASGI app: ``db`` defaults to ``$SQLITE_PARTNER_DB``."""
    return asgi_app(SqlitePartner(db), token=token or None)


#: For ``uvicorn examples.sqlite_partner.http:app``.
app = build_app(token=os.environ.get(TOKEN_ENV))


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the partner over HTTP until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m examples.sqlite_partner.http",
        description="Serve the SQLite example Firehose partner over HTTP.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"the token callers must send (default: ${TOKEN_ENV}; none: accept any caller)",
    )
    parser.add_argument("--db", default=None, help="the SQLite file (default: $SQLITE_PARTNER_DB)")
    args = parser.parse_args(argv)
    if not args.token:
        print("No token: every caller is accepted.", file=sys.stderr)
    uvicorn.run(build_app(args.db, args.token), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
