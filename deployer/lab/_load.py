"""A bounded HTTP load generator for the lab: proves zero downtime during a rollout.

It only targets loopback addresses, stops by itself after ``max_requests`` or ``max_seconds``,
and counts every request that did not get a 2xx answer in full.
"""

from __future__ import annotations

import http.client
import ipaddress
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .._errors import UsageError

__all__ = ["LoadGenerator", "LoadReport"]

_VERSION_IN_BODY = re.compile(rb"\(v([^)]+)\)")


@dataclass
class LoadReport:
    sent: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    nodes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent, "failed": self.failed, "errors": dict(self.errors),
            "versions": dict(self.versions), "nodes": dict(self.nodes),
            "seconds": round(self.seconds, 3),
        }

    def line(self) -> str:
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(self.versions.items()))
        errs = "; ".join(f"{k}: {n}" for k, n in self.errors.most_common(3))
        return (f"{self.sent} requests, {self.failed} failed in {self.seconds:.1f}s "
                f"(versions served: {versions or 'none'}){' — ' + errs if errs else ''}")


def _check_loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addr = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        raise UsageError(f"load generator: cannot resolve {host!r}") from None
    if not addr.is_loopback:
        raise UsageError(f"load generator: refusing to send traffic to {host} (loopback only)")
    return host, parts.port or 80


class LoadGenerator:
    """Threads sending a mix of quick and slow requests until stopped or a bound is reached."""

    def __init__(
        self,
        url: str,
        *,
        concurrency: int = 8,
        max_requests: int = 20_000,
        max_seconds: float = 300.0,
        slow_share: float = 0.2,
        slow_ms: int = 300,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port = _check_loopback(url)
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.slow_share = slow_share
        self.slow_ms = slow_ms
        self.timeout = timeout
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0

    def start(self) -> LoadGenerator:
        self._t0 = time.monotonic()
        for i in range(self.concurrency):
            t = threading.Thread(target=self._worker, args=(i,), daemon=True, name=f"load-{i}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> LoadReport:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        self.report.seconds = time.monotonic() - self._t0
        return self.report

    def wait(self) -> LoadReport:
        """Block until a bound is reached."""
        for t in self._threads:
            t.join()
        self.report.seconds = time.monotonic() - self._t0
        return self.report

    def _take_ticket(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self.report.sent >= self.max_requests:
                return False
            if time.monotonic() - self._t0 > self.max_seconds:
                return False
            self.report.sent += 1
            return True

    def _worker(self, seed: int) -> None:
        rng = random.Random(seed)
        conn: http.client.HTTPConnection | None = None
        while self._take_ticket():
            slow = rng.random() < self.slow_share
            path = f"/slow?ms={self.slow_ms}" if slow else "/"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                if not 200 <= resp.status < 300:
                    self._fail(f"HTTP {resp.status}")
                    conn.close()
                    conn = None
                    continue
                self._ok(body)
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self._fail(type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _ok(self, body: bytes) -> None:
        m = _VERSION_IN_BODY.search(body)
        node = body.split(b"hello from ", 1)[1].split(b" ", 1)[0] if b"hello from " in body else b""
        with self._lock:
            if m:
                self.report.versions[m.group(1).decode(errors="replace")] += 1
            if node:
                self.report.nodes[node.decode(errors="replace")] += 1

    def _fail(self, kind: str) -> None:
        with self._lock:
            self.report.failed += 1
            self.report.errors[kind] += 1
