"""Soak analysis inside a deployment: what the strategies ask of :mod:`deployer.analysis`.

A strategy asks three things: that every metric source answers before anything is touched
(:meth:`Soaks.preflight`), a soak of the configured duration that blocks until it ends or
breaches (:meth:`Soaks.run`: after a rolling canary batch, after each batch, or after a
blue-green switch), and a soak left running while later batches roll (:meth:`Soaks.watch`),
which the engine polls between batches without adding to any node's time out of the load
balancer. Every round of the rules and every further smoke test's run is published on the
deployment's event stream (:class:`SoakEvents`), with each rule's value and threshold.

A plan also asks whether the rules can judge at all (:meth:`Soaks.sample_warning`): a rule
needs ``min_samples`` requests in its window, and an environment without that much traffic
gives rounds of no data only, which ``no_data`` then passes or fails without looking at the
release.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Sequence
from typing import Any

from .._errors import AnalysisError, DeploymentRefused, LoadBalancerError
from ..analysis import (
    AnalysisConfig,
    Clock,
    HAProxySource,
    RuleResult,
    RuntimeCommand,
    SmokeContext,
    Soak,
    SystemClock,
    Verdict,
    build_soak,
)
from .events import EventStream, SoakRound, SoakSmoke, SoakStarted

__all__ = ["SoakEvents", "Soaks", "result_dict"]

# A watch lasts until the rollout ends it; this only bounds it if nothing does.
_WATCH_LIMIT = 24 * 3600.0
# The request rate is read from two `show stat` reads this many seconds apart.
TRAFFIC_READ_SPAN = 1.0


def result_dict(result: RuleResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["status"] = str(result.status)
    return data


class SoakEvents:
    """Publishes a soak's rounds and smoke runs on a deployment's event stream."""

    def __init__(self, events: EventStream, scope: str) -> None:
        self.events = events
        self.scope = scope

    def on_round(self, number: int, results: Sequence[RuleResult]) -> None:
        self.events.publish(SoakRound(scope=self.scope, round=number,
                                      results=[result_dict(r) for r in results]))

    def on_smoke(self, result: RuleResult) -> None:
        self.events.publish(SoakSmoke(scope=self.scope, result=result_dict(result)))


class Soaks:
    """Soaks for one environment, built from its ``analysis:`` section."""

    def __init__(
        self, config: AnalysisConfig, *, runtime: RuntimeCommand | None, env_name: str,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._runtime = runtime
        self._env_name = env_name
        # The analysis clock (a test's moves only when the soak waits).
        self._clock = clock

    @property
    def when(self) -> str:
        return self.config.when

    @property
    def duration(self) -> float:
        return self.config.duration

    def _build(
        self, *, version: str, backend: str, new: Collection[str], old: Collection[str],
        config: AnalysisConfig | None = None, observer: SoakEvents | None = None,
    ) -> Soak:
        return build_soak(
            config or self.config, haproxy=self._runtime, backend=backend, new=new, old=old,
            context=SmokeContext(
                target_url=(self.config.target_url or "").rstrip("/"), version=version,
                environment=self._env_name, node=",".join(sorted(new)),
            ),
            observer=observer, clock=self._clock,
        )

    def check(self, backend: str) -> None:
        """Every metric source answers now (raises AnalysisError or LoadBalancerError if not).
        Smoke tests are not run: they judge the release, which is not there yet."""
        quiet = self.config.model_copy(update={"smoke": self.config.smoke.model_copy(
            update={"commands": [], "http": []})})
        soak = self._build(version="", backend=backend, new=(), old=(), config=quiet)
        soak.start()
        soak.stop()

    def preflight(self, backend: str, config_file: str) -> None:
        """:meth:`check`, before a deployment touches any node: a source that cannot be read
        refuses the deployment (nothing changed), saying what to fix."""
        try:
            self.check(backend)
        except (AnalysisError, LoadBalancerError) as exc:
            raise DeploymentRefused(
                f"soak analysis cannot start: {exc}", hint=exc.hint or "fix the analysis: section "
                f"of {config_file} or the metric source, then deploy again",
            ) from None

    def run(
        self, *, events: EventStream, scope: str, version: str, backend: str,
        new: Collection[str], old: Collection[str], stopped: threading.Event | None = None,
    ) -> Verdict:
        """Soak for the configured duration (or until the first breach, or ``stopped``)."""
        events.publish(SoakStarted(scope=scope, servers=sorted(new), baseline=sorted(old),
                                   duration_s=self.config.duration))
        soak = self._build(version=version, backend=backend, new=new, old=old,
                           observer=SoakEvents(events, scope))
        # Not strict: the sources were read before the deployment began (preflight); one that
        # stops answering now is missing data for the policy to judge, not a crash that would
        # leave the canary unjudged and unreverted.
        soak.start(strict=False)
        while soak.running and not (stopped is not None and stopped.is_set()):
            soak.wait(timeout=0.2)
        return soak.stop() if soak.running else soak.wait()

    def watch(
        self, *, events: EventStream, scope: str, version: str, backend: str,
        new: Collection[str], old: Collection[str],
    ) -> Soak:
        """A soak that keeps watching until stopped (``breached()`` says whether it failed)."""
        events.publish(SoakStarted(scope=scope, servers=sorted(new), baseline=sorted(old)))
        config = self.config.model_copy(update={"duration": _WATCH_LIMIT})
        soak = self._build(version=version, backend=backend, new=new, old=old, config=config,
                           observer=SoakEvents(events, scope))
        soak.start(strict=False)  # as in run()
        return soak

    def request_rate(self, backend: str, *, span: float = TRAFFIC_READ_SPAN) -> float | None:
        """Requests per second the backend's servers answer now: the increase of HAProxy's
        answer counters between two ``show stat`` reads ``span`` seconds apart (None without
        the HAProxy source, or when it cannot be read)."""
        hap = self.config.sources.haproxy
        if hap is None or self._runtime is None:
            return None
        source = HAProxySource(self._runtime, hap.backend or backend)
        clock = self._clock or SystemClock()
        try:
            first = clock.now()
            source.collect(first)
            clock.wait(threading.Event(), span)
            source.collect(clock.now())
        except (AnalysisError, LoadBalancerError):
            return None
        answers = source.measure("requests", window=clock.now() - first + span)
        elapsed = answers.window or span
        return (answers.samples or 0) / elapsed if elapsed > 0 else None

    def sample_warning(self, backend: str, *, new_share: float = 1.0) -> str:
        """A warning when, at the backend's request rate now, the HAProxy rules would not see
        ``min_samples`` requests in their window ("" when they would, or when it cannot be
        told). ``new_share``: the part of the backend's traffic the soaked servers (the group
        ``new``) get; the rest goes to ``old``."""
        needs = self._sample_needs(new_share)
        if not needs:
            return ""
        rate = self.request_rate(backend)
        if rate is None:
            return ""
        short = [f"{name} would see ~{rate * share * window:.0f} in its {window:g}s window "
                 f"(min_samples {needed})"
                 for name, share, window, needed in needs if rate * share * window < needed]
        if not short:
            return ""
        policy = {
            "pass": "analysis.no_data: pass, so such rounds pass without judging the release",
            "fail": "analysis.no_data: fail, so the soak fails the release",
            "inconclusive": "analysis.no_data: inconclusive, so the soak fails the release after "
                            f"{self.config.inconclusive_limit} such rounds in a row",
        }[self.config.no_data]
        hap = self.config.sources.haproxy
        watched = (hap.backend if hap is not None else None) or backend
        return (
            f"the soak's rules cannot get enough requests at the current traffic: the backend "
            f"{watched} answers {rate:.2g} requests/s now, so {'; '.join(short)}; every round is then no "
            f"data ({policy}). Send traffic during the soak, lower analysis.min_samples, set "
            "analysis.no_data: pass, or add further smoke tests (analysis.smoke)"
        )

    def _sample_needs(self, new_share: float) -> list[tuple[str, float, float, int]]:
        """(rule, share of the traffic it sees, window, min_samples) of each HAProxy rule that
        needs requests behind its value."""
        config = self.config
        if config.sources.haproxy is None:
            return []
        share = {"all": 1.0, "new": new_share, "old": 1.0 - new_share}
        needs: list[tuple[str, float, float, int]] = []
        for rule in config.rules:
            needed = config.min_samples if rule.min_samples is None else rule.min_samples
            if rule.source != "haproxy" or rule.indicator == "servers_down" or needed <= 0:
                continue
            needs.append((rule.name or rule.indicator, share[rule.group], rule.window or config.window,
                          needed))
        if 0 < new_share < 1:  # a comparison needs a baseline, and requests on both sides
            for c in config.compare:
                needed = config.min_samples if c.min_samples is None else c.min_samples
                if needed > 0:
                    needs.append((c.name or f"{c.indicator} (new against old)",
                                  min(new_share, 1 - new_share), c.window or config.window, needed))
        return needs
