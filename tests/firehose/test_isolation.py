"""``patchbay.firehose`` imports without the server's dependencies or the rest of Patchbay
(but the exception root, ``patchbay.errors``), so partners can use it with msgspec alone (the
wheel's core); ``patchbay.partner.targets`` needs msgspec alone too, and the partner
transport imports boto3 only for a Lambda call."""

from __future__ import annotations

import json
import subprocess
import sys

#: What the ``server`` and ``lambda`` extras bring in.
EXTRA_MODULES = (
    "starlette",
    "uvicorn",
    "structlog",
    "prometheus_client",
    "click",
    "aiohttp",
    "boto3",
    "botocore",
)

CODE = """
import json, sys
import patchbay.firehose
import patchbay.firehose.serialize
import patchbay.firehose.lambda_handler
import patchbay.firehose.asgi
from patchbay.firehose import parse, dumps
dumps(parse('{"type": "event_processing_request", "events": []}'))
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str) -> list[str]:
    """The modules loaded once ``code`` ran in a new interpreter (which prints them)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    modules: list[str] = json.loads(done.stdout.splitlines()[-1])
    return modules


def _extras(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in EXTRA_MODULES]


def test_firehose_imports_without_the_server_dependencies() -> None:
    modules = _modules_after(CODE)
    assert _extras(modules) == []
    outside = [
        m
        for m in modules
        if m.startswith("patchbay.")
        and not m.startswith("patchbay.firehose")
        and m != "patchbay.errors"  # the exception root, which imports nothing
    ]
    assert outside == []
    assert "msgspec" in modules


def test_targets_import_msgspec_alone() -> None:
    modules = _modules_after(
        "import json, sys\n"
        "from patchbay.partner.targets import HttpTarget, LambdaTarget\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert _extras(modules) == []
    assert [m for m in modules if m.startswith("patchbay")] == [
        "patchbay",
        "patchbay.partner",
        "patchbay.partner.targets",
    ]


def test_the_transport_imports_boto3_only_for_a_lambda_call() -> None:
    code = """
import asyncio, json, sys
from patchbay.partner.transport import LambdaTarget, open_transport

async def main():
    async with open_transport(LambdaTarget("fn"), threads=1):
        pass

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""
    modules = _modules_after(code)
    assert "aiohttp" in modules
    assert [m for m in modules if m.split(".")[0] in ("boto3", "botocore")] == []
