"""Whether an environment's strategy can deploy with zero downtime, judged from its config and
its inventory; one that cannot must reference a decision record accepting it
(``gates.decision_record``: an id and a path or URL).

Rolling cannot when the group has a single node (it is out of service while it is replaced),
when a batch is the whole fleet (``batch_size`` of 100%), or when the capacity floor is 0
(``min_healthy``: nothing need stay in service). Blue-green is judged as blue-green: the idle
leg takes no live traffic while it is released (the per-leg batch of 100% it derives is not
a gap), and live traffic moves in one operation. Every environment has a load balancer (the
config requires one), so "no load balancer" cannot arise yet.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import BlueGreenStrategy, EnvironmentConfig, RollingStrategy
from ..engine.plan import resolve_count

__all__ = ["zero_downtime_gaps"]


def zero_downtime_gaps(env: EnvironmentConfig, nodes: Mapping[str, int]) -> list[str]:
    """Why the environment cannot deploy with zero downtime ([]: it can). ``nodes``: how many
    nodes each group holds (rolling: the environment's group, under "")."""
    strategy = env.strategy
    if isinstance(strategy, BlueGreenStrategy):
        return []
    assert isinstance(strategy, RollingStrategy)
    total = nodes.get("", 0)
    gaps = []
    if total == 1:
        gaps.append(f"a single node in group {env.group} (it is out of service while it is "
                    "replaced)")
        return gaps
    if total > 1 and resolve_count(strategy.batch_size, total) >= total:
        gaps.append(f"batches of the whole fleet (strategy.batch_size: {strategy.batch_size} of "
                    f"{total} nodes)")
    if total > 1 and resolve_count(strategy.min_healthy, total, minimum=0) == 0:
        gaps.append(f"a capacity floor of 0 (strategy.min_healthy: {strategy.min_healthy})")
    return gaps
