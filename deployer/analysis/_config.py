"""The ``analysis:`` section of an environment: soak analysis after the canary or each batch.

::

    analysis:
      when: after_canary          # or after_each_batch
      target_url: http://lb1:80   # the service as users reach it ({target_url} in smoke tests)
      duration: 60                # seconds of soak
      interval: 2                 # seconds between rounds
      window: 30                  # seconds of data a rule looks at (default for every rule)
      failure_limit: 2            # consecutive breaching rounds of a rule that fail the release
      total_failure_limit: null   # breaching rounds in the whole soak that fail it (null: off)
      min_samples: 20             # fewest requests behind a value (default for every rule)
      no_data: inconclusive       # pass | fail | inconclusive (fails after inconclusive_limit)
      inconclusive_limit: 5
      sources:
        haproxy: {}               # the environment's load balancer (socket/backend to override)
        prometheus:
          url: http://127.0.0.1:9090
          queries:
            error_rate: 'sum(rate(haproxy_backend_http_responses_total{code="5xx"}[30s]))'
      rules:
        - {indicator: http_5xx_share, max: 1%}   # a share (*_share, *_ratio): a percentage only
        - {source: prometheus, indicator: error_rate, max: 0.5}
      compare:
        - {indicator: http_5xx_share, max_margin: 1%}
      smoke:
        commands: [{run: ./checks/cart.sh, interval: 10, timeout: 30}]
        http: [{url: '{target_url}/health', json_field: version, json_equals: '{version}'}]

Errors name the field by its path (``analysis.rules.0.max``) and the value.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .._errors import ConfigError
from ._haproxy import HAPROXY_INDICATORS

__all__ = [
    "AnalysisConfig",
    "CommandCheckConfig",
    "CompareConfig",
    "HAProxySourceConfig",
    "HttpCheckConfig",
    "PrometheusQueryConfig",
    "PrometheusSourceConfig",
    "RuleConfig",
    "SmokeConfig",
    "SourcesConfig",
    "parse_analysis_config",
]

_SHARE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*$")
_SUBFIELD = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*): ")
_QUERY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _percent(v: object) -> object:
    """``"1%"`` → 0.01; anything else unchanged."""
    if isinstance(v, str):
        m = _SHARE.match(v)
        if m:
            return float(m.group(1)) / 100
    return v


def _is_share(indicator: str) -> bool:
    return indicator.endswith("_share") or indicator.endswith("_ratio")


def _share_bound(v: object, info: ValidationInfo) -> object:
    """A bound of a rule: for a share indicator only a percentage (``"1%"`` → 0.01). A bare
    number is refused there: ``max: 1`` would be 100%, a rule that can never fire, and ``0.5``
    reads as half a percent or as half."""
    indicator = info.data.get("indicator")
    if v is None or not isinstance(indicator, str) or not _is_share(indicator):
        return _percent(v)
    if isinstance(v, str) and _SHARE.match(v):
        return _percent(v)
    why = ""
    if isinstance(v, int | float | str) and not isinstance(v, bool):
        with contextlib.suppress(ValueError):  # not a number at all: nothing to explain
            why = f" (a bare number is ambiguous: this one would mean {float(v) * 100:g}%)"
    raise ValueError(f"{indicator} is a share: write it as a percentage, e.g. 1%{why}")


class HAProxySourceConfig(_Model):
    # The runtime API (unix socket path or tcp://host:port); default: load_balancer.socket.
    socket: str | None = None
    # The backend whose servers are watched; default: load_balancer.backend.
    backend: str | None = None


class PrometheusQueryConfig(_Model):
    query: str = Field(min_length=1)
    # A query giving how many requests the value rests on (for min_samples); optional.
    samples: str | None = None


class PrometheusSourceConfig(_Model):
    url: str
    timeout: float = Field(3.0, gt=0, le=60)
    # Named instant queries; each name is an indicator rules can use.
    queries: dict[str, PrometheusQueryConfig] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:9090")
        return v.rstrip("/")

    @field_validator("queries", mode="before")
    @classmethod
    def _plain_strings(cls, v: object) -> object:
        if isinstance(v, Mapping):
            for name in v:
                if not isinstance(name, str) or not _QUERY_NAME.match(name):
                    raise ValueError(f"query name {name!r} must be letters, digits and '_'")
            return {k: {"query": q} if isinstance(q, str) else q for k, q in v.items()}
        return v


class SourcesConfig(_Model):
    # HAProxy's own counters; null turns them off.
    haproxy: HAProxySourceConfig | None = HAProxySourceConfig()
    prometheus: PrometheusSourceConfig | None = None

    def names(self) -> list[str]:
        return [n for n in ("haproxy", "prometheus") if getattr(self, n) is not None]


class RuleConfig(_Model):
    """A threshold: ``indicator`` must stay at most ``max`` (or at least ``min``)."""

    source: str = "haproxy"
    indicator: str
    # Which servers (HAProxy only): all, the new release's, or the old release's.
    group: Literal["all", "new", "old"] = "all"
    max: float | None = None
    min: float | None = None
    # Defaults: the section's window and min_samples.
    window: float | None = Field(None, gt=0, le=86400)
    min_samples: int | None = Field(None, ge=0)
    name: str | None = None

    @field_validator("max", "min", mode="before")
    @classmethod
    def _share(cls, v: object, info: ValidationInfo) -> object:
        return _share_bound(v, info)

    @model_validator(mode="after")
    def _one_bound(self) -> RuleConfig:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of max or min")
        bound = self.max if self.max is not None else self.min
        assert bound is not None
        if _is_share(self.indicator) and not 0 <= bound <= 1:
            raise ValueError(
                f"{'max' if self.max is not None else 'min'}: threshold out of range: "
                f"{self.indicator} is a share between 0% and 100%, got {bound * 100:g}%"
            )
        if bound < 0:
            raise ValueError(f"{'max' if self.max is not None else 'min'}: threshold out of range: "
                             f"must not be negative, got {bound}")
        return self


class CompareConfig(_Model):
    """The new release's servers against the old release's over the same window (HAProxy)."""

    source: Literal["haproxy"] = "haproxy"
    indicator: str = "http_5xx_share"
    # Allowed excess over the baseline: absolute (0.01 = one percentage point of a share) and/or
    # relative (2 = twice the baseline); the more tolerant of the two applies.
    max_margin: float | None = 0.01
    max_ratio: float | None = Field(None, ge=1)
    window: float | None = Field(None, gt=0, le=86400)
    min_samples: int | None = Field(None, ge=0)
    name: str | None = None

    @field_validator("max_margin", mode="before")
    @classmethod
    def _share(cls, v: object, info: ValidationInfo) -> object:
        return _share_bound(v, info)

    @model_validator(mode="after")
    def _bounds(self) -> CompareConfig:
        if self.max_margin is None and self.max_ratio is None:
            raise ValueError("give max_margin, max_ratio or both")
        if self.max_margin is not None and (
            self.max_margin < 0 or (_is_share(self.indicator) and self.max_margin > 1)
        ):
            raise ValueError(f"max_margin: threshold out of range for {self.indicator}: {self.max_margin}")
        if self.indicator not in HAPROXY_INDICATORS:
            raise ValueError(
                f"indicator: unknown HAProxy indicator {self.indicator!r} "
                f"(known: {', '.join(sorted(HAPROXY_INDICATORS))})"
            )
        return self


class CommandCheckConfig(_Model):
    # An executable and its arguments: a list, or a string split like a shell would (no shell).
    run: list[str] | str
    name: str | None = None
    interval: float | None = Field(None, gt=0, le=3600)
    timeout: float = Field(30.0, gt=0, le=3600)

    @field_validator("run")
    @classmethod
    def _not_empty(cls, v: list[str] | str) -> list[str] | str:
        if (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and not v):
            raise ValueError("must name a command to run")
        return v


class HttpCheckConfig(_Model):
    # {target_url} stands for the release's target URL.
    url: str
    expect_status: int = Field(200, ge=100, le=599)
    body_contains: str | None = None
    json_field: str | None = None
    # {version} stands for the release version.
    json_equals: str | None = None
    name: str | None = None
    interval: float | None = Field(None, gt=0, le=3600)
    timeout: float = Field(5.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not (v.startswith("{target_url}") or re.match(r"^https?://[^/\s]+", v)):
            raise ValueError("must be an http(s):// URL or start with {target_url}")
        return v

    @model_validator(mode="after")
    def _equals_needs_field(self) -> HttpCheckConfig:
        if self.json_equals is not None and self.json_field is None:
            raise ValueError("json_equals needs json_field")
        return self


class SmokeConfig(_Model):
    commands: list[CommandCheckConfig] = Field(default_factory=list)
    http: list[HttpCheckConfig] = Field(default_factory=list)
    # Seconds between runs of each test (unless it sets its own).
    interval: float = Field(10.0, gt=0, le=3600)
    # Consecutive failures of one test that fail the release.
    failure_limit: int = Field(1, ge=1, le=100)


def _default_rules() -> list[RuleConfig]:
    return [RuleConfig.model_validate({"indicator": "http_5xx_share", "max": "1%"})]


class AnalysisConfig(_Model):
    when: Literal["after_canary", "after_each_batch"] = "after_canary"
    # The service as its users reach it (the load balancer's frontend): {target_url} in smoke
    # tests and DEPLOYER_TARGET_URL for smoke commands.
    target_url: str | None = Field(None, pattern=r"^https?://")
    duration: float = Field(60.0, gt=0, le=86400)
    interval: float = Field(2.0, gt=0, le=3600)
    window: float = Field(30.0, gt=0, le=86400)
    failure_limit: int = Field(2, ge=1, le=1000)
    total_failure_limit: int | None = Field(None, ge=1, le=100000)
    min_samples: int = Field(20, ge=0)
    no_data: Literal["pass", "fail", "inconclusive"] = "inconclusive"
    inconclusive_limit: int = Field(5, ge=1, le=1000)
    sources: SourcesConfig = SourcesConfig()
    rules: list[RuleConfig] = Field(default_factory=_default_rules)
    compare: list[CompareConfig] = Field(default_factory=list)
    smoke: SmokeConfig = SmokeConfig()
    # A rollback to a release that already ran successfully here: `skip` its soak (an emergency
    # rollback is never blocked by missing traffic), or `soak` it like a deployment (a breach is
    # then reported, and the rollback still ends with every node on one release).
    on_rollback: Literal["skip", "soak"] = "skip"

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisConfig:
        if self.interval > self.duration:
            raise ValueError(f"interval: {self.interval} s is longer than the soak ({self.duration} s)")
        names = self.sources.names()
        for i, rule in enumerate(self.rules):
            where = f"rules.{i}"
            if rule.source not in names:
                raise ValueError(
                    f"{where}.source: unknown source {rule.source!r} "
                    f"(configured: {', '.join(names) or 'none'})"
                )
            if rule.source == "haproxy" and rule.indicator not in HAPROXY_INDICATORS:
                raise ValueError(
                    f"{where}.indicator: unknown HAProxy indicator {rule.indicator!r} "
                    f"(known: {', '.join(sorted(HAPROXY_INDICATORS))})"
                )
            prom = self.sources.prometheus
            if rule.source == "prometheus" and prom is not None and rule.indicator not in prom.queries:
                raise ValueError(
                    f"{where}.indicator: no Prometheus query named {rule.indicator!r} "
                    f"(sources.prometheus.queries has: {', '.join(sorted(prom.queries))})"
                )
            if rule.source != "haproxy" and rule.group != "all":
                raise ValueError(f"{where}.group: only HAProxy rules can look at a group of servers")
        if self.compare and "haproxy" not in names:
            raise ValueError("compare: comparison rules read HAProxy, but sources.haproxy is off")
        if not self.rules and not self.compare and not self.smoke.commands and not self.smoke.http:
            raise ValueError("nothing to analyse: give rules, compare or smoke tests")
        return self


def parse_analysis_config(
    data: Mapping[str, Any] | None, *, file: str | None = None, field: str = "analysis"
) -> AnalysisConfig:
    """Validate an ``analysis:`` mapping, raising :class:`ConfigError` naming the field's path."""
    try:
        return AnalysisConfig.model_validate(data or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in (field, *err["loc"])]
        msg = err["msg"].removeprefix("Value error, ")
        # Checks across fields say which field they mean: "rules.0.source: unknown source ...".
        sub = _SUBFIELD.match(msg)
        if sub:
            loc.append(sub.group(1))
            msg = msg[sub.end():]
        path = ".".join(loc)
        value = err.get("input") if err["type"] != "missing" else None
        if isinstance(value, Mapping | list):
            value = None
        raise ConfigError(msg, file=file, field=path, value=value) from None
