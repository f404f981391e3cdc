"""Soak analysis inside a deployment: what the strategies ask of :mod:`deployer.analysis`.

A strategy asks three things: that every metric source answers before anything is touched
(:meth:`Soaks.check`), a soak of the configured duration that blocks until it ends or breaches
(:meth:`Soaks.run`: after a rolling canary batch, after each batch, or after a blue-green
switch), and a soak left running while later batches roll (:meth:`Soaks.watch`), which the
engine polls between batches without adding to any node's time out of the load balancer.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

from .._errors import AnalysisError, DeploymentRefused, LoadBalancerError
from ..analysis import AnalysisConfig, RuntimeCommand, SmokeContext, Soak, Verdict, build_soak

__all__ = ["Soaks"]

# A watch lasts until the rollout ends it; this only bounds it if nothing does.
_WATCH_LIMIT = 24 * 3600.0


class Soaks:
    """Soaks for one environment, built from its ``analysis:`` section."""

    def __init__(
        self, config: AnalysisConfig, *, runtime: RuntimeCommand | None, env_name: str
    ) -> None:
        self.config = config
        self._runtime = runtime
        self._env_name = env_name

    @property
    def when(self) -> str:
        return self.config.when

    def _build(
        self, *, version: str, backend: str, new: Collection[str], old: Collection[str],
        config: AnalysisConfig | None = None,
    ) -> Soak:
        return build_soak(
            config or self.config, haproxy=self._runtime, backend=backend, new=new, old=old,
            context=SmokeContext(
                target_url=(self.config.target_url or "").rstrip("/"), version=version,
                environment=self._env_name, node=",".join(sorted(new)),
            ),
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
        self, *, version: str, backend: str, new: Collection[str], old: Collection[str],
        stopped: threading.Event | None = None,
    ) -> Verdict:
        """Soak for the configured duration (or until the first breach, or ``stopped``)."""
        soak = self._build(version=version, backend=backend, new=new, old=old)
        # Not strict: the sources were read before the deployment began (preflight); one that
        # stops answering now is missing data for the policy to judge, not a crash that would
        # leave the canary unjudged and unreverted.
        soak.start(strict=False)
        while soak.running and not (stopped is not None and stopped.is_set()):
            soak.wait(timeout=0.2)
        return soak.stop() if soak.running else soak.wait()

    def watch(
        self, *, version: str, backend: str, new: Collection[str], old: Collection[str]
    ) -> Soak:
        """A soak that keeps watching until stopped (``breached()`` says whether it failed)."""
        config = self.config.model_copy(update={"duration": _WATCH_LIMIT})
        soak = self._build(version=version, backend=backend, new=new, old=old, config=config)
        soak.start(strict=False)  # as in run()
        return soak
