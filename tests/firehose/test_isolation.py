"""``patchbay.firehose`` imports without the server's dependencies or the rest of Patchbay,
so partners can use it with msgspec alone."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_MODULES = ("starlette", "uvicorn", "structlog", "prometheus_client", "click")

CODE = """
import json, sys
import patchbay.firehose
import patchbay.firehose.serialize
from patchbay.firehose import parse, dumps
dumps(parse('{"type": "event_processing_request", "events": []}'))
print(json.dumps(sorted(sys.modules)))
"""


def test_firehose_imports_without_the_server_dependencies() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60, check=True
    )
    modules = json.loads(done.stdout)
    loaded = [m for m in modules if m.split(".")[0] in SERVER_MODULES]
    assert loaded == []
    outside = [
        m for m in modules if m.startswith("patchbay.") and not m.startswith("patchbay.firehose")
    ]
    assert outside == []
    assert "msgspec" in modules
