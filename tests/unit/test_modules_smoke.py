"""deployer_http_check against a tiny local HTTP server."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from role_modules import load_module

check = load_module("deployer_smoke", "deployer_http_check")


class SteppedClock:
    """The module's clock, moved on by its own sleeps and by the time the app says an answer
    took (nothing else)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class App:
    """Health endpoint whose answers the test changes: (status, version, delay); the first
    ``failing`` requests are answered 503. With a ``clock``, an answer takes ``delay`` on that
    clock instead of really waiting."""

    def __init__(self) -> None:
        self.status, self.version, self.delay = 200, "1.0.0", 0.0
        self.failing = 0
        self.requests = 0
        self.clock: SteppedClock | None = None
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                app.requests += 1
                if app.clock is not None:
                    app.clock.sleep(app.delay)
                else:
                    time.sleep(app.delay)
                ready = app.requests > app.failing
                body = json.dumps({"version": app.version}).encode()
                self.send_response(app.status if ready else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"


@pytest.fixture()
def app() -> Iterator[App]:
    served = App()
    yield served
    served.server.shutdown()
    served.server.server_close()


def params(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "expect_status": 200,
        "version_field": "version",
        "expected_version": "1.0.0",
        "request_timeout": 1,
        "deadline": 1.0,
        "interval": 0.05,
        "max_latency_ms": 500,
        **extra,
    }


def test_waits_until_healthy(app: App) -> None:
    app.failing = 2
    result = check.run(params(app.url, deadline=30))
    assert result["healthy"] is True and result["attempts"] == 3 == app.requests
    assert result["status"] == 200 and result["version"] == "1.0.0"


def test_an_unhealthy_node_is_asked_every_interval_until_the_deadline(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.version = "0.9.0"
    app.clock = SteppedClock()
    monkeypatch.setattr(check, "time", app.clock)
    result = check.run(params(app.url, deadline=1.0, interval=0.25))
    assert result["healthy"] is False and "expected '1.0.0'" in result["reason"]
    # At 0, 0.25, 0.5, 0.75 and 1.0 s; the next one would come after the deadline.
    assert (result["attempts"], result["elapsed"], app.requests) == (5, 1.0, 5)


def test_wrong_version_status_and_latency_are_unhealthy(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.version = "0.9.0"
    result = check.run(params(app.url, deadline=0.3))
    assert result["healthy"] is False and "expected '1.0.0'" in result["reason"]
    assert result["attempts"] == app.requests
    app.version, app.status = "1.0.0", 500
    assert "status 500" in check.run(params(app.url, deadline=0))["reason"]
    # Answers that take 200 ms (on the module's clock): over a 100 ms limit, within 1000 ms.
    app.status, app.delay, app.clock = 200, 0.2, SteppedClock()
    monkeypatch.setattr(check, "time", app.clock)
    slow = check.run(params(app.url, deadline=0, max_latency_ms=100))
    assert slow["reason"] == "answer took 200 ms, over the limit of 100 ms"
    assert check.run(params(app.url, deadline=0, version_field="", max_latency_ms=1000))["healthy"]


def test_single_attempt_and_unreachable(app: App) -> None:
    app.status = 503
    result = check.run(params(app.url, single_attempt=True, deadline=5))
    assert result["attempts"] == 1 and result["healthy"] is False
    app.server.shutdown()
    app.server.server_close()
    down = check.run(params(app.url, deadline=0.2))
    assert down["status"] == 0 and "request failed" in down["reason"]
