"""The one place a strategy is chosen from an environment's config (``strategy.kind``)."""

from __future__ import annotations

from collections.abc import Mapping

from ..adapters.journal import Journal
from ..adapters.loadbalancer import LoadBalancer
from ..config import BlueGreenStrategy, EnvironmentConfig, RollingStrategy
from .bluegreen import BlueGreen, PreviewGet
from .fleet import Fleet
from .model import StoreVerifier
from .rolling import Rolling
from .soaking import Soaks
from .strategy import Strategy

__all__ = ["leg_environment", "make_strategy"]


def leg_environment(env: EnvironmentConfig, leg: str) -> EnvironmentConfig:
    """A blue-green environment as one of its legs sees it: the leg's group and backend, and
    the leg's release strategy (all its nodes at once)."""
    assert isinstance(env.strategy, BlueGreenStrategy)
    spec = env.strategy.legs[leg]
    return env.model_copy(update={
        "group": spec.group,
        "load_balancer": env.load_balancer.model_copy(update={"backend": spec.backend}),
        "strategy": env.strategy.leg_strategy(),
    })


def make_strategy(
    *, env_name: str, env: EnvironmentConfig, fleets: Mapping[str, Fleet], lb: LoadBalancer,
    journal: Journal, verify_release: StoreVerifier, soaks: Soaks | None,
    config_file: str = "config", preview_get: PreviewGet | None = None,
) -> Strategy:
    """The environment's strategy over its fleets (one for rolling, keyed ""; one per leg)."""
    if isinstance(env.strategy, RollingStrategy):
        return Rolling(fleets[""], soaks=soaks)
    return BlueGreen(env_name=env_name, env=env, legs=fleets, lb=lb, journal=journal,
                     verify_release=verify_release, soaks=soaks, preview_get=preview_get,
                     config_file=config_file)
