"""The judge: runs the rules each round, counts breaches and missing data against the policy,
and keeps the verdict. Thread-safe: the soak's threads report to one judge."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from .._errors import AnalysisError, LoadBalancerError
from ._model import Breach, Clock, Outcome, RuleResult, Status, SystemClock, Verdict
from ._rules import Rule
from ._source import MetricSource

__all__ = ["Judge", "Observer", "Policy"]

NoDataOutcome = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Policy:
    """How rule results turn into a verdict.

    - ``failure_limit``: consecutive breaching rounds of one rule that fail the soak;
    - ``total_failure_limit``: breaching rounds of one rule in the whole soak that fail it
      (None: only consecutive ones count);
    - ``no_data``: what a round without enough data counts as: ``pass`` (ignored), ``fail`` (a
      breach) or ``inconclusive`` (neither, until ``inconclusive_limit`` rounds in a row, which
      fail the soak);
    - further smoke tests fail the soak after ``smoke_failure_limit`` consecutive failures.
    """

    failure_limit: int = 2
    total_failure_limit: int | None = None
    no_data: NoDataOutcome = "inconclusive"
    inconclusive_limit: int = 5
    smoke_failure_limit: int = 1

    def __post_init__(self) -> None:
        if self.failure_limit < 1 or self.inconclusive_limit < 1 or self.smoke_failure_limit < 1:
            raise ValueError("failure limits must be at least 1")
        if self.total_failure_limit is not None and self.total_failure_limit < 1:
            raise ValueError("total_failure_limit must be at least 1")


class Observer(Protocol):
    """Hears every round of the rules and every run of a further smoke test (e.g. to publish
    them as a deployment's events). Called outside the judge's lock; must be quick."""

    def on_round(self, number: int, results: Sequence[RuleResult]) -> None: ...

    def on_smoke(self, result: RuleResult) -> None: ...


@dataclass
class _Tally:
    consecutive: int = 0
    total: int = 0
    inconclusive: int = 0
    conclusive: int = 0


class Judge:
    """Evaluates ``rules`` over ``sources`` (by name) each time :meth:`evaluate` is called."""

    def __init__(
        self,
        sources: Sequence[MetricSource],
        rules: Sequence[Rule],
        *,
        policy: Policy | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.sources = {s.name: s for s in sources}
        if len(self.sources) != len(sources):
            raise ValueError("two metric sources have the same name")
        for rule in rules:
            if rule.source not in self.sources:
                raise ValueError(f"rule {rule.name!r} reads the unknown source {rule.source!r}")
        self.rules = list(rules)
        self.policy = policy or Policy()
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._tallies: dict[str, _Tally] = {}
        self._last: dict[str, RuleResult] = {}
        self._breach: Breach | None = None
        self._reason = ""
        self._rounds = 0
        self._started: float | None = None
        self.observer: Observer | None = None

    # -- rounds ---------------------------------------------------------------------------

    def start(self, *, strict: bool = True) -> None:
        """Take the first sample of every source. ``strict``: a source that cannot be read
        raises here (:class:`AnalysisError` / :class:`LoadBalancerError`), so a bad setup fails
        before anything changes. Otherwise (a soak inside a deployment, whose sources were read
        before it began) that source's rules count a round without data, as in later rounds:
        the policy, not an exception, decides what happens to the release."""
        now = self.clock.now()
        unreadable: dict[str, str] = {}
        for name, source in self.sources.items():
            try:
                source.collect(now)
            except (AnalysisError, LoadBalancerError) as exc:
                if strict:
                    raise
                unreadable[name] = str(exc)
        with self._lock:
            self._started = self.clock.wall()
        for result in self._unreadable_results(unreadable):
            self.record(result, smoke=False)

    def _unreadable_results(self, unreadable: dict[str, str]) -> list[RuleResult]:
        return [
            RuleResult(
                rule=rule.name, status=Status.NO_DATA, indicator=getattr(rule, "indicator", ""),
                source=rule.source, detail=unreadable[rule.source],
            )
            for rule in self.rules if rule.source in unreadable
        ]

    def evaluate(self) -> list[RuleResult]:
        """One round: sample every source, run every rule, apply the policy."""
        now = self.clock.now()
        unreadable: dict[str, str] = {}
        for name, source in self.sources.items():
            try:
                source.collect(now)
            except (AnalysisError, LoadBalancerError) as exc:
                unreadable[name] = str(exc)
        results = self._unreadable_results(unreadable)
        results += [rule.evaluate(self.sources) for rule in self.rules if rule.source not in unreadable]
        with self._lock:
            self._rounds += 1
            number = self._rounds
        for result in results:
            self.record(result, smoke=False)
        if self.observer is not None:
            self.observer.on_round(number, results)
        return results

    def record(self, result: RuleResult, *, smoke: bool = True) -> None:
        """Count one result (a rule's, or a further smoke test's run) against the policy."""
        self._count(result, smoke=smoke)
        if smoke and self.observer is not None:
            self.observer.on_smoke(result)

    def _count(self, result: RuleResult, *, smoke: bool) -> None:
        p = self.policy
        with self._lock:
            self._last[result.rule] = result
            if self._breach is not None:
                return
            tally = self._tallies.setdefault(result.rule, _Tally())
            status = result.status
            if status is Status.NO_DATA:
                if p.no_data == "pass":
                    status = Status.OK
                elif p.no_data == "fail":
                    status = Status.BREACH
            if status is Status.NO_DATA:
                tally.inconclusive += 1
                if tally.inconclusive >= p.inconclusive_limit:
                    self._fail(result, tally.inconclusive, f"no conclusive data in "
                               f"{tally.inconclusive} rounds in a row")
                return
            tally.inconclusive = 0
            tally.conclusive += 1
            if status is Status.OK:
                tally.consecutive = 0
                return
            tally.consecutive += 1
            tally.total += 1
            limit = p.smoke_failure_limit if smoke else p.failure_limit
            if tally.consecutive >= limit:
                self._fail(result, tally.consecutive, "")
            elif not smoke and p.total_failure_limit is not None and tally.total >= p.total_failure_limit:
                self._fail(result, tally.total, f"{tally.total} breaching rounds in this soak")

    def _fail(self, result: RuleResult, count: int, reason: str) -> None:
        detail = result.detail
        if reason:
            detail = f"{reason}; {detail}" if detail else reason
        breach = Breach.from_result(result, detected_at=self.clock.wall(), breaches=count)
        self._breach = replace(breach, detail=detail)
        self._reason = reason or "a rule was breached"

    # -- verdict --------------------------------------------------------------------------

    def breached(self) -> bool:
        with self._lock:
            return self._breach is not None

    def verdict(self, *, final: bool = False, reason: str = "") -> Verdict:
        """The verdict so far. With ``final``, a soak that never had conclusive data for some
        rule (and counts missing data as inconclusive) is inconclusive rather than passed."""
        with self._lock:
            ended = self.clock.wall() if final else None
            v = Verdict(Outcome.PASSED, reason=reason, rounds=self._rounds, started_at=self._started,
                        ended_at=ended, last=dict(self._last))
            if self._breach is not None:
                return replace(v, outcome=Outcome.FAILED, breach=self._breach, reason=self._reason)
            never = sorted(
                name for name, t in self._tallies.items() if t.conclusive == 0 and t.inconclusive > 0
            )
            if final and self.policy.no_data == "inconclusive" and never:
                why = f"no conclusive data for {', '.join(never)}"
                return replace(v, outcome=Outcome.INCONCLUSIVE,
                               reason=f"{why}{'; ' + reason if reason else ''}")
            return v
