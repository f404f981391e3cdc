"""hello-service: a tiny HTTP application used to exercise rolling releases.

Standard library only: it runs on the nodes' system python3 (3.11). The release layout is::

    <release>/bin/run       entry point (executable)
    <release>/lib/hello.py  this module
    <release>/VERSION       the release version (one line)
    <release>/VARIANT       good | badhealth | errors (optional, default good)

Environment: HOST (default 127.0.0.1), PORT (default 8000), APP_VERSION (the version the
deployment meant to start; a mismatch with VERSION is logged), ERRORS_AFTER (seconds, variant
``errors`` only, default 5).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["VARIANTS", "ServiceSettings", "main"]

VARIANTS = ("good", "badhealth", "errors")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_ERRORS_AFTER_SECONDS = 5.0
SLOW_DEFAULT_MS = 1000
DEFAULT_FAULT_FILE = "/etc/hello/fault"
SLOW_MAX_MS = 30_000
# How long SIGTERM waits for in-flight requests before exiting anyway.
SHUTDOWN_GRACE_SECONDS = 10.0
# A client that connects and then says nothing must not hold a thread forever.
CLIENT_SOCKET_TIMEOUT_SECONDS = 15.0

_log_lock = threading.Lock()


def log(line: str) -> None:
    """Write one whole line to stdout (threads never interleave inside a line)."""
    with _log_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class StartupError(Exception):
    """The release or its environment is not usable; the message says what to fix."""


@dataclass(frozen=True)
class ServiceSettings:
    version: str
    variant: str
    host: str
    port: int
    node: str
    errors_after_seconds: float
    expected_version: str | None

    @classmethod
    def load(cls, release_dir: Path, environ: dict[str, str]) -> ServiceSettings:
        return cls(
            version=_read_version(release_dir),
            variant=_read_variant(release_dir),
            host=environ.get("HOST") or DEFAULT_HOST,
            port=_parse_port(environ.get("PORT")),
            node=socket.gethostname(),
            errors_after_seconds=_parse_errors_after(environ.get("ERRORS_AFTER")),
            expected_version=environ.get("APP_VERSION") or None,
        )


def _read_version(release_dir: Path) -> str:
    path = release_dir / "VERSION"
    try:
        version = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise StartupError(
            f"{path}: file missing; build the release with examples/hello-service/build.py"
        ) from None
    if not version or any(ch.isspace() for ch in version):
        raise StartupError(f"{path}: expected one version on one line, got {version!r}")
    return version


def _read_variant(release_dir: Path) -> str:
    path = release_dir / "VARIANT"
    try:
        variant = path.read_text(encoding="utf-8").strip() or "good"
    except FileNotFoundError:
        return "good"
    if variant not in VARIANTS:
        raise StartupError(f"{path}: unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    return variant


def _parse_port(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise StartupError(f"environment PORT: {raw!r} is not a TCP port (0-65535)")
    return port


def _parse_errors_after(raw: str | None) -> float:
    if raw is None or raw == "":
        return DEFAULT_ERRORS_AFTER_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise StartupError(f"environment ERRORS_AFTER: {raw!r} is not a number of seconds >= 0")
    return seconds


class HelloServer(ThreadingHTTPServer):
    """Threaded HTTP server that counts open connections so shutdown can wait for them."""

    daemon_threads = True
    allow_reuse_address = True
    # Load tests open many connections at once; the default backlog of 5 would drop some.
    request_queue_size = 128

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.started_at = time.monotonic()
        self._open_connections = 0
        self._idle = threading.Condition()
        if ":" in settings.host:
            self.address_family = socket.AF_INET6
        super().__init__((settings.host, settings.port), HelloHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Counted on accept (in the serving thread), so a request cannot slip past the wait.
        with self._idle:
            self._open_connections += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connection_done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_done()

    def _connection_done(self) -> None:
        with self._idle:
            self._open_connections -= 1
            self._idle.notify_all()

    def wait_for_open_connections(self, timeout: float) -> int:
        """Wait until no connection is open or ``timeout`` passes; return how many remain."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._open_connections > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(remaining)
            return self._open_connections

    def failing_now(self) -> bool:
        """True once the ``errors`` variant has passed its ERRORS_AFTER delay."""
        return (
            self.settings.variant == "errors"
            and time.monotonic() - self.started_at >= self.settings.errors_after_seconds
        )


# Faults a game day can place on one node (see injected_fault).
FAULTS = ("unhealthy", "errors", "crash")


def injected_fault(version: str) -> str | None:
    """Game-day fault injection: a node-local file plays a failure of this release on this node.

    ``$FAULT_FILE`` (default /etc/hello/fault) holds one fault and, optionally, the versions it
    applies to (none: every version), so a rollback to another version heals it:

    - ``unhealthy [VERSION...]``: ``/health`` answers 503;
    - ``errors [VERSION...]``: ``/`` answers 500 while ``/health`` stays 200 (only live traffic
      shows it);
    - ``crash [VERSION...]``: the process exits at start-up (its supervisor restarts it, again and
      again: a crash loop).

    Returns the fault that applies to ``version`` now, or None.
    """
    path = Path(os.environ.get("FAULT_FILE") or DEFAULT_FAULT_FILE)
    try:
        words = path.read_text().split()
    except OSError:
        return None
    if not words or words[0] not in FAULTS:
        return None
    return words[0] if len(words) == 1 or version in words[1:] else None


class HelloHandler(BaseHTTPRequestHandler):
    server: HelloServer
    server_version = "hello-service"
    sys_version = ""
    timeout = CLIENT_SOCKET_TIMEOUT_SECONDS
    _request_started = 0.0
    _response_bytes: int | str = "-"

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def _dispatch(self, *, send_body: bool) -> None:
        self._request_started = time.monotonic()
        url = urlsplit(self.path)
        settings = self.server.settings
        if url.path == "/health":
            if settings.variant == "badhealth" or injected_fault(settings.version) == "unhealthy":
                self._send_json(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    {"version": settings.version, "node": settings.node, "status": "failing"},
                    send_body,
                )
            else:
                self._send_json(
                    HTTPStatus.OK,
                    {"version": settings.version, "node": settings.node, "status": "ok"},
                    send_body,
                )
        elif url.path == "/":
            if self.server.failing_now() or injected_fault(settings.version) == "errors":
                self._send_text(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    f"internal error on {settings.node} (v{settings.version})\n",
                    send_body,
                )
            else:
                self._send_text(
                    HTTPStatus.OK, f"hello from {settings.node} (v{settings.version})\n", send_body
                )
        elif url.path == "/version":
            self._send_text(HTTPStatus.OK, settings.version + "\n", send_body)
        elif url.path == "/slow":
            self._slow(url.query, send_body)
        else:
            self._send_text(HTTPStatus.NOT_FOUND, f"no such path: {url.path}\n", send_body)

    def _slow(self, query: str, send_body: bool) -> None:
        values = parse_qs(query).get("ms", [str(SLOW_DEFAULT_MS)])
        try:
            ms = int(values[-1])
        except ValueError:
            ms = -1
        if ms < 0:
            self._send_text(
                HTTPStatus.BAD_REQUEST,
                f"ms must be a whole number of milliseconds >= 0 (got {values[-1]!r})\n",
                send_body,
            )
            return
        ms = min(ms, SLOW_MAX_MS)
        time.sleep(ms / 1000)
        settings = self.server.settings
        self._send_json(
            HTTPStatus.OK,
            {"version": settings.version, "node": settings.node, "ms": ms},
            send_body,
        )

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any], send_body: bool) -> None:
        body = (json.dumps(payload) + "\n").encode("utf-8")
        self._send(status, "application/json", body, send_body)

    def _send_text(self, status: HTTPStatus, text: str, send_body: bool) -> None:
        self._send(status, "text/plain; charset=utf-8", text.encode("utf-8"), send_body)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, send_body: bool) -> None:
        self._response_bytes = len(body) if send_body else 0
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Access-log line: common log format plus duration, node and version.
        if isinstance(code, HTTPStatus):
            code = code.value
        duration_ms = (time.monotonic() - self._request_started) * 1000
        settings = self.server.settings
        self.log_message(
            '"%s" %s %s %.1fms node=%s version=%s',
            self.requestline,
            code,
            self._response_bytes,
            duration_ms,
            settings.node,
            settings.version,
        )

    def log_message(self, format: str, *args: Any) -> None:
        log(f"{self.address_string()} - - [{self.log_date_time_string()}] {format % args}")


def main(release_dir: Path) -> int:
    try:
        settings = ServiceSettings.load(release_dir, dict(os.environ))
    except StartupError as error:
        print(f"hello-service: cannot start: {error}", file=sys.stderr)
        return 2

    if injected_fault(settings.version) == "crash":
        print(f"hello-service: crashing at start-up: fault injected for {settings.version}",
              file=sys.stderr)
        return 3

    # Block the stop signals before any thread exists (threads inherit the mask), then take
    # them synchronously in the main thread with sigwait.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        server = HelloServer(settings)
    except OSError as error:
        print(
            f"hello-service: cannot listen on {settings.host}:{settings.port}: {error.strerror}",
            file=sys.stderr,
        )
        return 2

    # A short poll interval makes SIGTERM close the listener quickly.
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="serve", daemon=True
    )
    serving.start()
    log(
        f"hello-service starting: version={settings.version} variant={settings.variant} "
        f"node={settings.node} host={settings.host} port={server.server_port} pid={os.getpid()}"
    )
    if settings.expected_version and settings.expected_version != settings.version:
        log(
            f"hello-service warning: APP_VERSION={settings.expected_version} but this release "
            f"is {settings.version} ({release_dir / 'VERSION'}); serving {settings.version}"
        )

    received = signal.sigwait(stop_signals)
    log(f"hello-service stopping: {signal.Signals(received).name} received, closing listener")
    server.shutdown()
    server.server_close()  # new connections are now refused
    left = server.wait_for_open_connections(SHUTDOWN_GRACE_SECONDS)
    if left:
        log(
            f"hello-service stopped: {left} connection(s) still open after "
            f"{SHUTDOWN_GRACE_SECONDS:g}s, exiting anyway"
        )
    else:
        log("hello-service stopped: all in-flight requests finished")
    return 0
