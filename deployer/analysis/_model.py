"""The values the analysis passes around: measurements, rule results, breaches and verdicts,
and the clock everything reads the time from (injectable, so tests never sleep)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from .._clock import iso_utc

__all__ = [
    "Breach",
    "Clock",
    "Measurement",
    "Outcome",
    "RuleResult",
    "Status",
    "SystemClock",
    "Verdict",
    "format_value",
]


class Clock(Protocol):
    """Where the analysis reads the time and waits. ``now`` is monotonic seconds (intervals,
    windows, deadlines); ``wall`` is seconds since the epoch (when something was detected)."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` or until ``event`` is set; return whether it is set."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``Event.wait``."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


@dataclass(frozen=True)
class Measurement:
    """One indicator of one source over one window. ``value`` is None when there is no data;
    ``samples`` is how many requests (or data points) it rests on, None when not applicable."""

    value: float | None
    samples: int | None = None
    # Seconds of data the value really covers (may be shorter than asked early in a soak).
    window: float = 0.0
    detail: str = ""


class Status(StrEnum):
    OK = "ok"
    BREACH = "breach"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class RuleResult:
    """What one rule (or one run of a further smoke test) found in one round."""

    rule: str
    status: Status
    indicator: str
    value: float | None = None
    # The limit the value was held against, and how: ">" means "fails above", "<" "fails below".
    threshold: float | None = None
    comparison: str = ">"
    window: float = 0.0
    samples: int | None = None
    source: str = ""
    group: str = ""
    detail: str = ""


def format_value(indicator: str, value: float | None) -> str:
    """A value as a person reads it: shares in percent, times in ms, counts as integers."""
    if value is None:
        return "no data"
    if indicator.endswith("_share") or indicator.endswith("_ratio"):
        return f"{value * 100:.2f}%".replace(".00%", "%")
    if indicator.endswith("_ms"):
        return f"{value:.0f} ms"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


@dataclass(frozen=True)
class Breach:
    """Why a soak failed: the indicator, its value, the threshold, the window and when."""

    rule: str
    indicator: str
    value: float | None
    threshold: float | None
    comparison: str
    window: float
    detected_at: float  # seconds since the epoch
    source: str = ""
    group: str = ""
    samples: int | None = None
    detail: str = ""
    # Consecutive rounds in breach when the soak failed.
    breaches: int = 1

    @classmethod
    def from_result(cls, result: RuleResult, *, detected_at: float, breaches: int) -> Breach:
        return cls(
            rule=result.rule, indicator=result.indicator, value=result.value,
            threshold=result.threshold, comparison=result.comparison, window=result.window,
            detected_at=detected_at, source=result.source, group=result.group,
            samples=result.samples, detail=result.detail, breaches=breaches,
        )

    def line(self) -> str:
        if self.source == "smoke":
            what = f"{self.rule} ({self.indicator})"
        else:
            what = self.indicator + (f" of the {self.group} servers" if self.group not in ("", "all") else "")
        if self.status_is_no_data:
            text = f"{what}: no data"
        else:
            limit = format_value(self.indicator, self.threshold) if self.threshold is not None else "?"
            text = f"{what} {format_value(self.indicator, self.value)} {self.comparison} {limit}"
        if self.window:
            text += f" over the last {self.window:.0f} s"
        if self.samples is not None:
            text += f" ({self.samples} requests)"
        text += f", detected at {iso_utc(self.detected_at)}"
        if self.breaches > 1:
            text += f" ({self.breaches} rounds in a row)"
        if self.detail:
            text += ": " + " / ".join(ln.strip() for ln in self.detail.splitlines() if ln.strip())
        return text

    @property
    def status_is_no_data(self) -> bool:
        return self.value is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "indicator": self.indicator, "value": self.value,
            "threshold": self.threshold, "comparison": self.comparison, "window": self.window,
            "detected_at": iso_utc(self.detected_at), "source": self.source, "group": self.group,
            "samples": self.samples, "detail": self.detail, "breaches": self.breaches,
        }


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """The judgement of a soak (or of the analysis so far).

    ``failed`` carries the :class:`Breach` that decided it. ``inconclusive`` means no rule ever
    had enough data and the configured outcome for missing data is ``inconclusive``.
    """

    outcome: Outcome
    breach: Breach | None = None
    reason: str = ""
    rounds: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    # Last result of every rule and further smoke test, by rule name.
    last: dict[str, RuleResult] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def inconclusive(self) -> bool:
        return self.outcome is Outcome.INCONCLUSIVE

    def line(self) -> str:
        """One line for the operator, e.g. ``analysis failed: http_5xx_share ... > 1% ...``."""
        if self.breach is not None:
            return f"analysis {self.outcome}: {self.breach.line()}"
        text = f"analysis {self.outcome}"
        if self.reason:
            text += f": {self.reason}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome),
            "reason": self.reason,
            "rounds": self.rounds,
            "started_at": iso_utc(self.started_at) if self.started_at is not None else None,
            "ended_at": iso_utc(self.ended_at) if self.ended_at is not None else None,
            "breach": self.breach.to_dict() if self.breach else None,
            "line": self.line(),
        }
