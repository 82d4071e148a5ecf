"""The browser tests' pieces: the test site (pages, the SDK's built files, a Braze stub) on
HTTPS, Debian's Chromium driven by Playwright, and :class:`SdkPage` to run the Web SDK in a
page. Nothing here reaches beyond this machine: Chromium resolves only ``localhost`` and
``127.0.0.1`` (docs/testing.md, "Browser tests")."""

from __future__ import annotations

import json
import shutil
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import pytest

from patchbay.http.devcert import DevCert
from patchbay.resolve.stage import IDSYNC_CHANNEL
from tests.conftest import Server, run_cli

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

T = TypeVar("T")
HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
#: The SDK's build for a script tag, and the Braze kit's (a CommonJS bundle that registers
#: itself with ``window.mParticle.addForwarder`` when loaded).
SDK_JS = NODE_MODULES / "@mparticle" / "web-sdk" / "dist" / "mparticle.js"
BRAZE_KIT_JS = NODE_MODULES / "@mparticle" / "web-braze-kit" / "dist" / "BrazeKit.common.js"
#: Where Debian's package puts Chromium (``/usr/bin/chromium`` is a shell wrapper).
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium",)
#: Every host name resolves to nothing but these two.
HOST_RULES = "MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--ignore-certificate-errors",
    f"--host-resolver-rules={HOST_RULES}",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Seconds a condition in the page is waited for.
WAIT_S = 20.0


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    for path in CHROMIUM_PATHS:
        if Path(path).exists():
            return path
    return shutil.which("chromium")


def missing() -> str | None:
    """Why the browser tests cannot run here (``None``: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (scripts/setup.sh --dev installs it)"
    if chromium_path() is None:
        return "Chromium is missing (scripts/browser.sh install, as root, installs Debian's)"
    for built in (SDK_JS, BRAZE_KIT_JS):
        if not built.exists():
            return f"{built.relative_to(HERE)} is missing (scripts/browser.sh install runs npm ci)"
    return None


#: The mark of every browser test: skipped, with the reason, where the set-up is missing.
needs_browser = pytest.mark.skipif(missing() is not None, reason=str(missing()))

# Each page loads the SDK from the site; ``exports`` lets the kit's CommonJS bundle load.
PAGES = {
    "/": "<script src='/mparticle.js'></script>",
    "/braze.html": (
        "<script src='/mparticle.js'></script>"
        "<script>window.exports = {};</script><script src='/braze-kit.js'></script>"
    ),
    "/elsewhere.html": "",
}


@dataclass
class Recorded:
    """A request the Braze stub received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Site:
    """The test site: the pages of :data:`PAGES`, the SDK and kit files, and under
    ``/braze/`` a stub of Braze's API that records what it receives (CORS open)."""

    server: ThreadingHTTPServer
    braze: list[Recorded] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def origin(self) -> str:
        """Where the pages are (a different origin from Patchbay's ``localhost``)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def braze_host(self) -> str:
        """The Braze kit's ``cluster`` host (``{"JS": braze_host}``)."""
        return f"localhost:{self.port}/braze"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_site(cert: DevCert) -> Site:
    """Serve the test site on HTTPS with ``cert``, on a free port of 127.0.0.1."""
    files = {"/mparticle.js": SDK_JS, "/braze-kit.js": BRAZE_KIT_JS}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    site: Site

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if self.path.startswith("/braze/"):
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", "*")
            self.end_headers()
            self.wfile.write(body)

        def _braze(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.command != "OPTIONS":
                site.braze.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), body)
                )
            self._send(200, b"{}", "application/json")

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path.startswith("/braze/"):
                self._braze()
            elif path in PAGES:
                html = f"<!doctype html><html><head>{PAGES[path]}</head><body></body></html>"
                self._send(200, html.encode(), "text/html; charset=utf-8")
            elif path in files:
                self._send(200, files[path].read_bytes(), "text/javascript")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            if self.path.startswith("/braze/"):
                self._braze()
            else:
                self._send(404, b"not found", "text/plain")

        def do_OPTIONS(self) -> None:
            self.do_POST()

    class TlsServer(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[Any, Any]:
            sock, address = super().get_request()
            # the handshake in the request's thread, not in the one that accepts
            wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            return wrapped, address

    site = Site(TlsServer(("127.0.0.1", 0), Handler))
    threading.Thread(target=site.server.serve_forever, daemon=True).start()
    return site


def launch(playwright: Any) -> Browser:
    """Headless Chromium from Debian, sandbox off (root in CI), names resolved locally."""
    browser: Browser = playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
    )
    return browser


# The page's state: the SDK's logs, and what the identity callbacks got.
_SETUP = """
window.__logs = [];
const log = level => message => window.__logs.push([level, String(message)]);
window.__logger = {verbose: log('verbose'), warning: log('warning'), error: log('error')};
"""

_IDENTITY_CALL = """([method, request, timeoutMs]) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('no callback from ' + method)), timeoutMs);
  mParticle.Identity[method](request, result => {
    clearTimeout(timer);
    const user = result.getUser && result.getUser();
    resolve({httpCode: result.httpCode, mpid: user ? user.getMPID() : null, body: result.body});
  });
})"""


class SdkPage:
    """A page of the test site with the Web SDK, pointed at a Patchbay (``domain``)."""

    def __init__(self, page: Page, site: Site) -> None:
        self.page = page
        self.site = site
        #: Every URL the page asked for, in order.
        self.requests: list[str] = []
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        self.requests.append(request.url)

    def open(self, path: str = "/") -> None:
        self.page.goto(self.site.origin + path)
        self.page.evaluate(_SETUP)

    def init(self, api_key: str, domain: str, **config: Any) -> str:
        """``mParticle.init`` with every service host on ``domain`` (``host:port``),
        production mode and the SDK's logs collected; waits until ``ready`` and returns the
        MPID identify gave."""
        options = {
            "domain": domain,
            # not covered by ``domain``: its default is mParticle's host
            "userAudienceUrl": f"{domain}/nativesdks/v1/",
            "isDevelopmentMode": False,
            "logLevel": "verbose",
            **config,
        }
        self.page.evaluate(
            """([key, options]) => {
                window.__ready = false;
                mParticle.init(key, {...options, logger: window.__logger});
                mParticle.ready(() => { window.__ready = true; });
            }""",
            [api_key, options],
        )
        self.wait_for("window.__ready === true", "the SDK to be ready")
        return self.mpid()

    def run(self, script: str, arg: Any = None) -> Any:
        """Evaluate ``script`` (an expression, or a function given ``arg``) in the page."""
        return self.page.evaluate(script, arg)

    def wait_for(self, condition: str, what: str, timeout_s: float = WAIT_S) -> None:
        """Wait until the JS expression ``condition`` holds; fail naming ``what`` and
        showing the SDK's last log lines otherwise."""
        deadline = time.monotonic() + timeout_s
        while not self.page.evaluate(f"!!({condition})"):
            if time.monotonic() > deadline:
                tail = "\n".join(f"{lvl}: {m}" for lvl, m in self.logs()[-15:])
                raise AssertionError(f"timed out waiting for {what}; the SDK's logs:\n{tail}")
            self.page.wait_for_timeout(50)

    def identity(self, method: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
        """``mParticle.Identity.METHOD(request, callback)``: what the callback got
        (``httpCode``, the user's ``mpid``, the response ``body``)."""
        result: dict[str, Any] = self.page.evaluate(
            _IDENTITY_CALL, [method, request or {}, WAIT_S * 1000]
        )
        return result

    def mpid(self) -> str:
        """The current user's MPID."""
        mpid: str = self.page.evaluate("mParticle.Identity.getCurrentUser().getMPID()")
        return mpid

    def logs(self) -> list[tuple[str, str]]:
        """The SDK's log lines so far (level, message)."""
        return [(level, message) for level, message in self.page.evaluate("window.__logs")]

    def errors(self) -> list[str]:
        """The SDK's error lines."""
        return [message for level, message in self.logs() if level == "error"]

    def hosts(self) -> set[str]:
        """The hosts of every request the page made."""
        return {urlsplit(url).hostname or "" for url in self.requests}


def find_profile(server: Server, *args: str) -> dict[str, Any]:
    """The profile ``patchbay profiles ARGS`` prints for ``server``'s store (``show MPID``,
    ``find --TYPE VALUE``)."""
    done = run_cli("profiles", *args, data_dir=server.data_dir)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def skip_unless_served(server: Server, path: str, what: str) -> None:
    """Skip the test when ``server`` has no route at ``path`` (a GET answered 404; a route
    for other methods answers 405): the build does not serve ``what`` yet."""
    if server.get(path)[0] == 404:
        shown = path.replace(server.credentials.key, "{key}")
        pytest.skip(f"needs {what} at {shown}, which this build does not serve (404)")


def web_batches(server: Server, input_id: str) -> list[dict[str, Any]]:
    """The batches the SDK uploaded to ``server`` for input ``input_id`` (not IDSync's
    records), decoded, with ``source_request_id`` as the log keeps it."""
    return [
        {**json.loads(b.body), "_stored_request_id": b.source_request_id}
        for b in server.stored()
        if b.input_id == input_id and b.channel != IDSYNC_CHANNEL
    ]


def wait_until(check: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
    """The first value of ``check()`` that is not ``None`` or false, polled."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def identities_of(document: dict[str, Any]) -> dict[str, str]:
    """A profile document's user identities as ``type: value``."""
    return {i["type"]: i["value"] for i in document.get("user_identities", [])}


def decoded(body: bytes) -> Any:
    """A JSON body."""
    return json.loads(body)
