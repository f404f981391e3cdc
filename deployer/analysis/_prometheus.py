"""Prometheus as a metric source: named instant queries against its HTTP API
(``GET /api/v1/query``).

Each query should give one number: a scalar, or a vector of one series (with several series the
largest value counts: the worst one; an empty vector is "no data"). A query may have a second
``samples`` query giving how many requests the value rests on, so a rule's minimum sample count
applies to it too. The window of a Prometheus indicator is written in the query itself
(``rate(...[30s])``).
"""

from __future__ import annotations

import json
import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import AnalysisError
from ._model import Measurement

__all__ = ["PrometheusQuery", "PrometheusSource"]


@dataclass(frozen=True)
class PrometheusQuery:
    query: str
    # A query giving the number of requests behind the value (for the minimum sample count).
    samples: str | None = None


class PrometheusSource:
    """Instant queries against the Prometheus at ``url`` (e.g. ``http://127.0.0.1:9090``)."""

    def __init__(
        self,
        url: str,
        queries: Mapping[str, PrometheusQuery | str],
        *,
        name: str = "prometheus",
        timeout: float = 3.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.queries = {
            k: q if isinstance(q, PrometheusQuery) else PrometheusQuery(q) for k, q in queries.items()
        }
        self._name = name
        self.timeout = timeout
        self._values: dict[str, Measurement] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def indicators(self) -> frozenset[str]:
        return frozenset(self.queries)

    def query(self, promql: str) -> float | None:
        """The value of one instant query; None when it returns no series."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(address, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            message = _error_message(body) or f"HTTP {exc.code}"
            raise AnalysisError(
                f"Prometheus at {self.url} rejected the query {promql!r}: {message}",
                hint="check the query in the analysis section of the config",
            ) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AnalysisError(
                f"cannot reach Prometheus at {self.url}: {reason}",
                hint="is Prometheus running, and is analysis.sources.prometheus.url right?",
            ) from None
        try:
            data = json.loads(body)
        except ValueError:
            raise AnalysisError(f"Prometheus at {self.url} answered something that is not JSON") from None
        if data.get("status") != "success":
            raise AnalysisError(
                f"Prometheus at {self.url} rejected the query {promql!r}: "
                f"{data.get('error') or data.get('status')}"
            )
        return _value(data.get("data") or {})

    def collect(self, now: float) -> None:
        values: dict[str, Measurement] = {}
        for name, q in self.queries.items():
            value = self.query(q.query)
            samples = None
            if q.samples is not None:
                n = self.query(q.samples)
                samples = 0 if n is None else int(n)
            values[name] = Measurement(value, samples=samples, detail=f"{q.query}")
        with self._lock:
            self._values = values

    def measure(self, indicator: str, *, group: str = "all", window: float) -> Measurement:
        if indicator not in self.queries:
            raise KeyError(indicator)
        with self._lock:
            found = self._values.get(indicator)
        if found is None:
            return Measurement(None, detail="not queried yet")
        return Measurement(found.value, samples=found.samples, window=window, detail=found.detail)


def _error_message(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("error"):
        return f"{data.get('errorType', 'error')}: {data['error']}"
    return None


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _value(data: Mapping[str, Any]) -> float | None:
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return _number(result[1])
    if kind == "vector" and isinstance(result, list):
        values = [
            v for v in (_number(s.get("value", [None, None])[1]) for s in result if isinstance(s, dict))
            if v is not None
        ]
        return max(values) if values else None
    raise AnalysisError(f"Prometheus answered a {kind!r}; a query must give a scalar or an instant vector")
