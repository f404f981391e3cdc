"""Which nodes deployer itself left out of the load balancer, by the journal's word.

A node a deployment drained and could not put back (an abort, a failed revert, a lost node)
stays in MAINT or DRAIN. That is deployer's to undo (``deployer recover``, ``deployer rollback``),
unlike a node an operator took out. A later deployment that only read, staged or skipped the node
(refused, say) does not change that: only events of a deployment that touched the node count.
"""

from __future__ import annotations

from collections.abc import Collection

from ..adapters.journal import Journal, NodeEvent
from .states import NodePhase

__all__ = ["TAKEN_OUT", "left_out_by_deployer"]

P = NodePhase

# A node's last word in the journal when deployer took it out and has not put it back.
TAKEN_OUT = frozenset({
    P.DRAINING.value, P.DEPLOYING.value, P.SMOKE.value, P.REJOINING.value, P.REVERTING.value,
    P.FAILED.value, "out_of_service",
})

# Events of a deployment that did not take the node out: they say nothing about who did.
_SAYS_NOTHING = frozenset({P.PENDING.value, P.STAGING.value, P.STAGED.value, P.SKIPPED.value})

# How many of the environment's latest deployments are read, at most.
LOOKBACK = 500


def left_out_by_deployer(journal: Journal, env: str, nodes: Collection[str]) -> dict[str, NodeEvent]:
    """The nodes among ``nodes`` whose latest event that touched them says deployer took them
    out of the load balancer and did not put them back (that event for each)."""
    wanted = set(nodes)
    last: dict[str, NodeEvent] = {}
    for record in journal.deployments(env, limit=LOOKBACK):
        for event in reversed(journal.node_events(record.id)):
            if event.node in wanted and event.node not in last and event.phase not in _SAYS_NOTHING:
                last[event.node] = event
        if len(last) == len(wanted):
            break
    return {name: event for name, event in last.items() if event.phase in TAKEN_OUT}
