"""Soak analysis: watch a release after its smoke check and fail it on a breach.

Layers, each replaceable on its own:

- **sources** (:class:`MetricSource`): :class:`HAProxySource` (HAProxy's counters through its
  runtime API, per group of servers), :class:`PrometheusSource` (instant queries), and
  and :class:`deployer.testing.FakeSource` for unit tests;
- **rules**: :class:`ThresholdRule` and :class:`ComparisonRule` (new release vs old release);
- **the judge** (:class:`Judge`, with its :class:`Policy`): failure limits, what missing data
  means, and the :class:`Verdict`;
- **further smoke tests**: :class:`CommandCheck` and :class:`HttpCheck`;
- **the soak** (:class:`Soak`): all of the above in background threads for a bounded time;
- **config**: :class:`AnalysisConfig` (an environment's ``analysis:`` section) and
  :func:`build_soak`, which turns it into a :class:`Soak`.
"""

from __future__ import annotations

from .._errors import AnalysisError
from ._build import build_soak
from ._config import AnalysisConfig, parse_analysis_config
from ._haproxy import HAPROXY_INDICATORS, HAProxySource, RuntimeCommand, parse_show_stat
from ._judge import Judge, Observer, Policy
from ._model import (
    Breach,
    Clock,
    Measurement,
    Outcome,
    RuleResult,
    Status,
    SystemClock,
    Verdict,
)
from ._prometheus import PrometheusQuery, PrometheusSource
from ._rules import ComparisonRule, Rule, ThresholdRule
from ._smoke import CommandCheck, HttpCheck, SmokeCheck, SmokeContext
from ._soak import Soak
from ._source import MetricSource

__all__ = [
    "HAPROXY_INDICATORS",
    "AnalysisConfig",
    "AnalysisError",
    "Breach",
    "Clock",
    "CommandCheck",
    "ComparisonRule",
    "HAProxySource",
    "HttpCheck",
    "Judge",
    "Measurement",
    "MetricSource",
    "Observer",
    "Outcome",
    "Policy",
    "PrometheusQuery",
    "PrometheusSource",
    "Rule",
    "RuleResult",
    "RuntimeCommand",
    "SmokeCheck",
    "SmokeContext",
    "Soak",
    "Status",
    "SystemClock",
    "ThresholdRule",
    "Verdict",
    "build_soak",
    "parse_analysis_config",
    "parse_show_stat",
]
