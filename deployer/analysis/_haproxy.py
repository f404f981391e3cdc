"""HAProxy's own counters as a metric source, read through its runtime API (``show stat``).

Each :meth:`HAProxySource.collect` takes one snapshot of every server of the backend. A
measurement over a window adds up the increases between consecutive snapshots in it, per
server, then per group of servers. A counter that went down (HAProxy restarted, counters
cleared) counts from zero again, so no window ever shows a negative number.

Indicators, per group of servers (``all``, or a group the caller names such as ``new`` and
``old``):

==================== =====================================================================
``http_5xx_share``   5xx answers / all answers over the window (samples: answers)
``http_4xx_share``   4xx answers / all answers
``http_5xx``         count of 5xx answers
``requests``         count of answers (any status)
``connection_errors`` failed connections to servers + failed responses (``econ`` + ``eresp``)
``response_time_ms`` HAProxy's average response time (``rtime``), weighted by answers
``servers_down``     servers whose health check fails now (DOWN; maintenance and drain are
                     deliberate and do not count)
==================== =====================================================================
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .._errors import LoadBalancerError
from ..adapters._haproxy_answers import stat_rows
from ._model import Measurement

__all__ = ["HAPROXY_INDICATORS", "HAProxySource", "RuntimeCommand", "ServerSample", "parse_show_stat"]

HAPROXY_INDICATORS = frozenset({
    "http_5xx_share", "http_4xx_share", "http_5xx", "requests", "connection_errors",
    "response_time_ms", "servers_down",
})

_COUNTERS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other",
             "stot", "econ", "eresp")
_ANSWERS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


class RuntimeCommand(Protocol):
    """Anything that runs one HAProxy runtime API command and returns its answer, such as
    :class:`deployer.adapters.haproxy.HAProxyRuntime` (or a client reaching a remote LB)."""

    def command(self, line: str) -> str: ...


@dataclass(frozen=True)
class ServerSample:
    """One server's row of ``show stat``: its cumulative counters and current state."""

    server: str
    counters: Mapping[str, int]
    status: str
    check_status: str
    rtime_ms: float


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def parse_show_stat(text: str, backend: str) -> dict[str, ServerSample]:
    """The servers of ``backend`` in the CSV answer of ``show stat``, keyed by name (read as
    the load-balancer clients read it: :func:`deployer.adapters._haproxy_answers.stat_rows`)."""
    return {
        name: ServerSample(
            server=name,
            counters={c: _int(row.get(c)) for c in _COUNTERS},
            status=row.get("status", ""),
            check_status=row.get("check_status", ""),
            rtime_ms=float(_int(row.get("rtime"))),
        )
        for name, row in (stat_rows(text, backend) or {}).items()
    }


@dataclass(frozen=True)
class _Snapshot:
    t: float
    servers: Mapping[str, ServerSample]


def _increase(series: list[ServerSample], counters: Iterable[str]) -> int:
    """Sum of the increases of ``counters`` over one server's consecutive samples. When any
    counter of the server went down between two samples, all of them were reset (HAProxy
    restarted, counters cleared) and counted up from zero since: the increase is the new value."""
    names = tuple(counters)
    total = 0
    for prev, cur in itertools.pairwise(series):
        reset = any(cur.counters[c] < prev.counters[c] for c in _COUNTERS)
        for c in names:
            total += cur.counters[c] if reset else cur.counters[c] - prev.counters[c]
    return total


class HAProxySource:
    """HAProxy counters of one backend, through ``runtime.command("show stat")``.

    ``groups`` maps a group name to server names (``{"new": ["node1"], "old": ["node2"]}``);
    ``all`` is every server of the backend. :meth:`set_groups` changes them while a soak runs
    (each server's history is kept, so a server moving group brings its window along).
    """

    def __init__(
        self,
        runtime: RuntimeCommand,
        backend: str,
        *,
        groups: Mapping[str, Iterable[str]] | None = None,
        name: str = "haproxy",
        keep_seconds: float = 900.0,
    ) -> None:
        self.runtime = runtime
        self.backend = backend
        self._name = name
        self.keep_seconds = keep_seconds
        self._snapshots: list[_Snapshot] = []
        self._groups: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self.set_groups(groups or {})

    @property
    def name(self) -> str:
        return self._name

    @property
    def indicators(self) -> frozenset[str]:
        return HAPROXY_INDICATORS

    def set_groups(self, groups: Mapping[str, Iterable[str]]) -> None:
        if "all" in groups:
            raise ValueError("the group 'all' is every server of the backend; name groups otherwise")
        with self._lock:
            self._groups = {k: frozenset(v) for k, v in groups.items()}

    @property
    def groups(self) -> dict[str, frozenset[str]]:
        with self._lock:
            return dict(self._groups)

    def collect(self, now: float) -> None:
        servers = parse_show_stat(self.runtime.command("show stat"), self.backend)
        if not servers:
            raise LoadBalancerError(f"HAProxy has no backend named {self.backend!r} (or it has no servers)")
        with self._lock:
            self._snapshots.append(_Snapshot(now, servers))
            horizon = now - self.keep_seconds
            while len(self._snapshots) > 2 and self._snapshots[1].t <= horizon:
                self._snapshots.pop(0)

    def _members(self, group: str, latest: _Snapshot) -> list[str]:
        if group == "all":
            return sorted(latest.servers)
        return sorted(self._groups.get(group, frozenset()))

    def measure(self, indicator: str, *, group: str = "all", window: float) -> Measurement:
        if indicator not in HAPROXY_INDICATORS:
            raise KeyError(indicator)
        with self._lock:
            snaps = list(self._snapshots)
            if not snaps:
                return Measurement(None, detail="no sample of HAProxy yet")
            latest = snaps[-1]
            members = self._members(group, latest)
        if not members:
            return Measurement(None, detail=f"no servers in the group {group!r}")
        if indicator == "servers_down":
            down = [s for s in members if s in latest.servers
                    and latest.servers[s].status.upper().startswith("DOWN")]
            return Measurement(float(len(down)), window=0.0, detail=", ".join(down))
        # The window: from the last snapshot at or before its start (else the oldest) to now.
        start = latest.t - window
        base = 0
        for i, snap in enumerate(snaps):
            if snap.t <= start:
                base = i
        span = snaps[base:]
        covered = latest.t - span[0].t
        if len(span) < 2:
            return Measurement(None, window=covered, detail="one sample of HAProxy so far")

        series = {m: [s.servers[m] for s in span if m in s.servers] for m in members}

        def increase(*counters: str) -> int:
            return sum(_increase(series[m], counters) for m in members)

        answers = increase(*_ANSWERS)
        if indicator == "requests":
            return Measurement(float(answers), samples=answers, window=covered)
        if indicator == "http_5xx":
            return Measurement(float(increase("hrsp_5xx")), samples=answers, window=covered)
        if indicator == "connection_errors":
            errors = increase("econ", "eresp")
            return Measurement(float(errors), samples=answers, window=covered)
        if answers == 0:
            return Measurement(None, samples=0, window=covered, detail="no requests in the window")
        if indicator == "http_5xx_share":
            return Measurement(increase("hrsp_5xx") / answers, samples=answers, window=covered)
        if indicator == "http_4xx_share":
            return Measurement(increase("hrsp_4xx") / answers, samples=answers, window=covered)
        # response_time_ms: each server's average, weighted by the answers it gave in the window.
        weighted = 0.0
        for server in members:
            if server not in latest.servers:
                continue
            n = _increase(series[server], _ANSWERS)
            weighted += n * latest.servers[server].rtime_ms
        return Measurement(weighted / answers, samples=answers, window=covered)
