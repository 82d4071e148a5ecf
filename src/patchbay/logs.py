"""Structured logs: one JSON object per line on standard error, whoever writes it.

structlog's lines and the standard library's (uvicorn's "Uvicorn running on ...", aiohttp,
asyncio, warnings) go through one handler and one formatter, so every line is JSON with the
same fields: ``event``, ``level``, ``logger`` (the logger's name), ``pid``, ``timestamp``
(ISO 8601, UTC), any bound context, and ``exception`` (the traceback, as a string) when
there is one. A process that runs Patchbay (``serve`` and its children) also logs the
exceptions nothing caught (``uncaught_exception``), rather than letting Python print them.

:func:`config_changed` is the one line of every change to the configuration (inputs, API
clients, modules, outputs, connections, audiences), whichever path made it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import TracebackType
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

log = structlog.get_logger("patchbay.config")


def _add_pid(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """The process's id (``serve``'s children log to the same stderr)."""
    event_dict["pid"] = os.getpid()
    return event_dict


#: What every line gets, structlog's and the standard library's alike.
_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.stdlib.add_logger_name,
    _add_pid,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _stripped(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """The event of a standard library record without its trailing newlines (uvicorn's
    "Exception in ASGI application\\n", warnings)."""
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = event.rstrip()
    return event_dict


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test runner may swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


#: Whether a logger keeps the configuration of its first use (fast). The test suite turns
#: this off, so that ``structlog.testing.capture_logs`` sees every logger whatever an
#: earlier test configured.
CACHE_LOGGERS = True


def configure_logging(level: str = "info", *, catch_uncaught: bool = False) -> None:
    """Send structlog's and the standard library's logs to stderr as JSON lines, from
    ``level`` up; with ``catch_uncaught``, log uncaught exceptions (of any thread) too."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=CACHE_LOGGERS,
    )
    handler = _Stderr()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_SHARED, _stripped],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _Stderr)] + [handler]
    root.setLevel(numeric)
    logging.captureWarnings(True)
    # oauthlib logs the tokens it issues at DEBUG: never below INFO, whatever the level.
    logging.getLogger("oauthlib").setLevel(max(numeric, logging.INFO))
    if catch_uncaught:
        sys.excepthook = _uncaught
        threading.excepthook = _uncaught_in_thread


_uncaught_log = structlog.get_logger("patchbay.uncaught")


def _uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    _uncaught_log.error("uncaught_exception", exc_info=(kind, value, traceback))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    value = args.exc_value or args.exc_type()
    _uncaught_log.error(
        "uncaught_exception",
        thread=args.thread.name if args.thread else None,
        exc_info=(args.exc_type, value, args.exc_traceback),
    )


def config_changed(what: str, name: str | int, change: str, **fields: Any) -> None:
    """Log one change to the configuration: ``what`` changed (``input``, ``api_client``,
    ``module``, ``output``, ``connection``, ``audience``, ``audience_connection``), its
    ``name`` and the ``change`` (``create``, ``update``, ``delete``, ``enable``, ...), with
    ``fields`` saying more. Never give it a secret, a token or a whole key."""
    log.info("config_changed", object=what, name=name, change=change, **fields)
