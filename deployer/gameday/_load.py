"""Bounded load through the load balancer while a scenario runs: any http(s) URL, at most
``rate`` requests per second, stopping by itself after ``max_seconds``.

Every request is kept (when it started and ended, and whether it got a 2xx answer in full), so a
scenario can count what failed before its fault, while it was in place and after, and the steady
state can be judged on the requests of the last seconds alone. Long-lived requests (a download,
a stream: :meth:`Load.hold`) are counted apart.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .._errors import UsageError

__all__ = ["Load", "LoadCount", "Request"]


@dataclass(frozen=True)
class Request:
    """One request: its start and end (monotonic seconds) and how it ended."""

    started: float
    ended: float
    ok: bool
    error: str = ""
    long_lived: bool = False


@dataclass
class LoadCount:
    """Requests sent and failed, with the most common reasons."""

    sent: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def share(self) -> float:
        return self.failed / self.sent if self.sent else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"sent": self.sent, "failed": self.failed, "errors": dict(self.errors.most_common(5))}

    def line(self) -> str:
        why = "; ".join(f"{k}: {n}" for k, n in self.errors.most_common(3))
        return f"{self.sent} sent, {self.failed} failed" + (f" ({why})" if why else "")


def _split(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--load: {url!r} must be an http:// or https:// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return parts.scheme, parts.hostname, port, path


class Load:
    """``workers`` threads sending GET ``url`` at most ``rate`` times a second in all."""

    def __init__(
        self, url: str, *, rate: float, workers: int = 4, max_seconds: float = 900.0,
        timeout: float = 5.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise UsageError(f"--rate: must be above 0 requests per second (got {rate:g})")
        self.url = url
        self.scheme, self.host, self.port, self.path = _split(url)
        self.rate = rate
        self.workers = max(1, min(workers, int(rate) + 1))
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.clock = clock
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next = 0.0
        self._t0 = 0.0

    # -- running --------------------------------------------------------------------------

    def start(self) -> Load:
        self._t0 = self._next = self.clock()
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"gameday-load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 2)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _slot(self) -> float | None:
        """When this worker may send its next request (the rate shared by every worker), or
        None once the load is over."""
        with self._lock:
            now = self.clock()
            if self._stop.is_set() or now - self._t0 > self.max_seconds:
                return None
            slot = max(now, self._next)
            self._next = slot + 1.0 / self.rate
            return slot

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _work(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while (slot := self._slot()) is not None:
            wait = slot - self.clock()
            if wait > 0 and self._stop.wait(wait):
                break
            if conn is None:
                conn = self._connection(self.timeout)
            ok, error, keep = self._get(conn, self.path)
            if not keep:
                conn.close()
                conn = None
            self._record(Request(slot, self.clock(), ok, error))
        if conn is not None:
            conn.close()

    def _get(self, conn: http.client.HTTPConnection, path: str) -> tuple[bool, str, bool]:
        """One GET: (whether it got a 2xx answer in full, why not, keep the connection)."""
        try:
            conn.request("GET", path, headers={"User-Agent": "deployer-gameday"})
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            return False, type(exc).__name__, False
        if not 200 <= resp.status < 300:
            return False, f"HTTP {resp.status}", not resp.will_close
        return True, "", not resp.will_close

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def hold(self, count: int, path: str, *, seconds: float) -> list[threading.Thread]:
        """Open ``count`` long-lived requests to ``path`` (each lasting about ``seconds``), each
        on a connection of its own; they are recorded when they end."""
        threads = []
        for i in range(count):
            thread = threading.Thread(target=self._long, args=(path, seconds),
                                      name=f"gameday-hold-{i}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def _long(self, path: str, seconds: float) -> None:
        started = self.clock()
        conn = self._connection(seconds + self.timeout + 5)
        try:
            ok, error, _ = self._get(conn, path)
        finally:
            conn.close()
        self._record(Request(started, self.clock(), ok, error, long_lived=True))

    # -- counting -------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def count(self, since: float = 0.0, until: float | None = None, *,
              long_lived: bool | None = None) -> LoadCount:
        """Requests started in [since, until) that have ended (``long_lived``: only those, or
        only the others)."""
        total = LoadCount()
        with self._lock:
            requests = list(self.requests)
        for r in requests:
            if r.started < since or (until is not None and r.started >= until):
                continue
            if long_lived is not None and r.long_lived != long_lived:
                continue
            total.sent += 1
            if not r.ok:
                total.failed += 1
                total.errors[r.error] += 1
        return total

    def window(self) -> float:
        """Seconds of requests the steady state is judged on: enough for about 20 requests,
        at least 2 s."""
        return max(2.0, 20.0 / self.rate)
