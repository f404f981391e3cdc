"""Rules: what counts as a breach of one indicator in one round.

- :class:`ThresholdRule`: a value above ``max`` (or below ``min``) over a window, with at least
  ``min_samples`` requests behind it.
- :class:`ComparisonRule`: the new release's servers against the old release's (the baseline)
  over the same window; a breach when the new value exceeds the baseline by more than the
  allowed margin and ratio. No baseline (no old servers serving, or too few requests) is
  "no data".

A rule with too little data returns :attr:`Status.NO_DATA`; what that means is the judge's
policy, not the rule's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from ._model import Measurement, RuleResult, Status
from ._source import MetricSource

__all__ = ["ComparisonRule", "Rule", "ThresholdRule"]


class Rule(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...

    def evaluate(self, sources: Mapping[str, MetricSource]) -> RuleResult: ...


def _too_few(m: Measurement, min_samples: int) -> bool:
    return m.samples is not None and m.samples < min_samples


@dataclass(frozen=True)
class ThresholdRule:
    """``indicator`` of ``group`` (from ``source``) must stay at most ``max`` / at least ``min``."""

    source: str
    indicator: str
    max: float | None = None
    min: float | None = None
    group: str = "all"
    window: float = 30.0
    min_samples: int = 20
    label: str | None = None

    def __post_init__(self) -> None:
        if (self.max is None) == (self.min is None):
            raise ValueError("a threshold rule needs exactly one of max or min")

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        bound = f"max {self.max}" if self.max is not None else f"min {self.min}"
        scope = f"[{self.group}]" if self.group != "all" else ""
        return f"{self.source}:{self.indicator}{scope} {bound}"

    def evaluate(self, sources: Mapping[str, MetricSource]) -> RuleResult:
        m = sources[self.source].measure(self.indicator, group=self.group, window=self.window)
        threshold = self.max if self.max is not None else self.min
        comparison = ">" if self.max is not None else "<"
        base = RuleResult(
            rule=self.name, status=Status.NO_DATA, indicator=self.indicator, value=m.value,
            threshold=threshold, comparison=comparison, window=m.window or self.window,
            samples=m.samples, source=self.source, group=self.group,
        )
        if m.value is None:
            return replace(base, detail=m.detail or "no data")
        if _too_few(m, self.min_samples):
            return replace(base, detail=f"{m.samples} requests, fewer than the {self.min_samples} needed")
        breach = (self.max is not None and m.value > self.max) or (
            self.min is not None and m.value < self.min
        )
        return replace(base, status=Status.BREACH if breach else Status.OK)


@dataclass(frozen=True)
class ComparisonRule:
    """``indicator`` of the ``new`` group against the ``baseline`` group over the same window.

    The limit is the baseline plus ``max_margin`` (an absolute difference: 0.01 is one
    percentage point for a share) or the baseline times ``max_ratio``, whichever is larger
    (the more tolerant); at least one of them is required. The new group breaches when its value
    is above the limit.
    """

    source: str
    indicator: str
    max_margin: float | None = 0.01
    max_ratio: float | None = None
    new: str = "new"
    baseline: str = "old"
    window: float = 30.0
    min_samples: int = 20
    label: str | None = None

    def __post_init__(self) -> None:
        if self.max_margin is None and self.max_ratio is None:
            raise ValueError("a comparison rule needs max_margin, max_ratio or both")

    @property
    def name(self) -> str:
        return self.label or f"{self.source}:{self.indicator} {self.new} vs {self.baseline}"

    def limit(self, baseline: float) -> float:
        limits = []
        if self.max_margin is not None:
            limits.append(baseline + self.max_margin)
        if self.max_ratio is not None:
            limits.append(baseline * self.max_ratio)
        return max(limits)

    def evaluate(self, sources: Mapping[str, MetricSource]) -> RuleResult:
        src = sources[self.source]
        new = src.measure(self.indicator, group=self.new, window=self.window)
        old = src.measure(self.indicator, group=self.baseline, window=self.window)
        base = RuleResult(
            rule=self.name, status=Status.NO_DATA, indicator=self.indicator, value=new.value,
            comparison=">", window=new.window or self.window, samples=new.samples,
            source=self.source, group=self.new,
        )
        for m, which in ((new, self.new), (old, self.baseline)):
            if m.value is None:
                return replace(base, detail=f"{which}: {m.detail or 'no data'}")
            if _too_few(m, self.min_samples):
                return replace(
                    base, detail=f"{which}: {m.samples} requests, fewer than the {self.min_samples} needed"
                )
        assert new.value is not None and old.value is not None
        limit = self.limit(old.value)
        return replace(
            base, status=Status.BREACH if new.value > limit else Status.OK, threshold=limit,
            detail=f"baseline ({self.baseline} servers): {old.value:.4g} over {old.samples} requests",
        )
