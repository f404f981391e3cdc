"""From an environment's ``analysis:`` section to a ready :class:`Soak`."""

from __future__ import annotations

from collections.abc import Collection

from .._errors import ConfigError
from ._config import AnalysisConfig
from ._haproxy import HAProxySource, RuntimeCommand
from ._judge import Judge, Observer, Policy
from ._model import Clock
from ._prometheus import PrometheusQuery, PrometheusSource
from ._rules import ComparisonRule, Rule, ThresholdRule
from ._smoke import CommandCheck, HttpCheck, SmokeCheck, SmokeContext
from ._soak import Soak
from ._source import MetricSource

__all__ = ["build_soak"]


def build_soak(
    config: AnalysisConfig,
    *,
    haproxy: RuntimeCommand | None = None,
    backend: str | None = None,
    new: Collection[str] = (),
    old: Collection[str] = (),
    context: SmokeContext | None = None,
    clock: Clock | None = None,
    observer: Observer | None = None,
) -> Soak:
    """A soak for ``config`` (not started: call :meth:`Soak.start`).

    ``haproxy`` runs runtime API commands on the environment's load balancer (an
    :class:`~deployer.adapters.haproxy.HAProxyRuntime`, or anything with ``command(line)``);
    when None and ``sources.haproxy.socket`` is set, a client for that socket is made.
    ``backend`` defaults to ``sources.haproxy.backend``. ``new`` and ``old`` are the servers on
    the new and on the old release; comparison rules are left out while ``old`` is empty (there
    is no baseline) and listed in ``soak.skipped``. ``observer`` hears every round and every
    further smoke test's run.
    """
    sources: list[MetricSource] = []
    hap = config.sources.haproxy
    haproxy_source: HAProxySource | None = None
    if hap is not None:
        runtime = haproxy
        if runtime is None and hap.socket:
            from ..adapters.haproxy import HAProxyRuntime

            runtime = HAProxyRuntime(hap.socket, timeout=3.0)
        the_backend = hap.backend or backend
        if runtime is None or not the_backend:
            raise ConfigError(
                "the HAProxy source needs the load balancer's runtime API and backend",
                field="analysis.sources.haproxy",
            )
        haproxy_source = HAProxySource(runtime, the_backend, groups={"new": new, "old": old})
        sources.append(haproxy_source)
    prom = config.sources.prometheus
    if prom is not None:
        sources.append(PrometheusSource(
            prom.url, {k: PrometheusQuery(q.query, q.samples) for k, q in prom.queries.items()},
            timeout=prom.timeout,
        ))

    rules: list[Rule] = []
    for r in config.rules:
        rules.append(ThresholdRule(
            source=r.source, indicator=r.indicator, max=r.max, min=r.min, group=r.group,
            window=r.window or config.window,
            min_samples=config.min_samples if r.min_samples is None else r.min_samples,
            label=r.name,
        ))
    skipped: list[str] = []
    for c in config.compare:
        rule = ComparisonRule(
            source=c.source, indicator=c.indicator, max_margin=c.max_margin, max_ratio=c.max_ratio,
            window=c.window or config.window,
            min_samples=config.min_samples if c.min_samples is None else c.min_samples,
            label=c.name,
        )
        if old and new:
            rules.append(rule)
        else:
            skipped.append(rule.name)

    checks: list[SmokeCheck] = []
    for cmd in config.smoke.commands:
        checks.append(CommandCheck(cmd.run, label=cmd.name, interval=cmd.interval or config.smoke.interval,
                                   timeout=cmd.timeout))
    for h in config.smoke.http:
        checks.append(HttpCheck(
            h.url, expect_status=h.expect_status, body_contains=h.body_contains,
            json_field=h.json_field, json_equals=h.json_equals, label=h.name,
            interval=h.interval or config.smoke.interval, timeout=h.timeout,
        ))

    policy = Policy(
        failure_limit=config.failure_limit, total_failure_limit=config.total_failure_limit,
        no_data=config.no_data, inconclusive_limit=config.inconclusive_limit,
        smoke_failure_limit=config.smoke.failure_limit,
    )
    judge = Judge(sources, rules, policy=policy, clock=clock)
    judge.observer = observer
    soak = Soak(judge, duration=config.duration, interval=config.interval, smoke=checks,
                context=context, clock=clock)
    soak.skipped = skipped
    soak.haproxy = haproxy_source
    return soak
