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


class App:
    """Health endpoint whose answers the test changes: (status, version, delay)."""

    def __init__(self) -> None:
        self.status, self.version, self.delay = 200, "1.0.0", 0.0
        self.healthy_after = 0.0
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(app.delay)
                ready = time.monotonic() >= app.healthy_after
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
    app.healthy_after = time.monotonic() + 0.3
    result = check.run(params(app.url))
    assert result["healthy"] is True and result["attempts"] > 1
    assert result["status"] == 200 and result["version"] == "1.0.0"


def test_wrong_version_status_and_latency_are_unhealthy(app: App) -> None:
    app.version = "0.9.0"
    result = check.run(params(app.url, deadline=0.3))
    assert result["healthy"] is False and "expected '1.0.0'" in result["reason"]
    assert result["attempts"] > 1 and 0.2 < result["elapsed"] < 1.0
    app.version, app.status = "1.0.0", 500
    assert "status 500" in check.run(params(app.url, deadline=0))["reason"]
    app.status, app.delay = 200, 0.2
    assert "over the limit" in check.run(params(app.url, deadline=0, max_latency_ms=100))["reason"]
    assert check.run(params(app.url, deadline=0, version_field="", max_latency_ms=1000))["healthy"]


def test_single_attempt_and_unreachable(app: App) -> None:
    app.status = 503
    result = check.run(params(app.url, single_attempt=True, deadline=5))
    assert result["attempts"] == 1 and result["healthy"] is False
    app.server.shutdown()
    app.server.server_close()
    down = check.run(params(app.url, deadline=0.2))
    assert down["status"] == 0 and "request failed" in down["reason"]
