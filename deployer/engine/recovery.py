"""Putting back what a deployment left out of the load balancer (``deployer recover``).

``recover`` is narrow on purpose: only nodes the journal says a deployment took out and did
not put back, in every backend of the environment (both legs of a blue-green one), and only
those that are healthy now; a node someone else put in maintenance is left as it is. It holds
the environment's lock and is journalled as a deployment of kind ``recover``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._errors import DeployerError
from ..adapters.journal import Journal
from ..adapters.lock import DeploymentLock, held
from .fleet import Fleet
from .left_out import left_out_by_deployer
from .variables import base_vars

__all__ = ["RecoverResult", "recover"]


@dataclass
class RecoverResult:
    deployment_id: int | None = None
    put_back: list[str] = field(default_factory=list)
    still_out: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)


def recover(
    fleets: Sequence[Fleet], journal: Journal, lock: DeploymentLock, *, env_name: str, app: str,
    command: str, say: Callable[[str], None],
) -> RecoverResult:
    """Put healthy nodes that deployer left out of the load balancer back into service, in
    every fleet (backend) of the environment. Raises DeployerError when some stay out."""
    result = RecoverResult()
    journal.mark_abandoned(env_name)
    todo: list[tuple[Fleet, list[str]]] = []
    for fleet in fleets:
        states = fleet.lb_states()
        ours = left_out_by_deployer(journal, env_name, fleet.names())
        out_nodes = []
        for node in fleet.nodes:
            s = states.get(node.lb_server)
            if s is None or s.admin == "ready":
                continue
            if node.name in ours:
                out_nodes.append(node.name)
            else:
                result.left_alone.append(node.name)
                say(f"{node.name}: {s.label} on the load balancer, not set by deployer; left as it is")
        if out_nodes:
            todo.append((fleet, out_nodes))
    if not todo:
        say("no node that deployer took out of the load balancer is out; nothing to recover")
        return result
    with held(lock, on_note=say):
        dep = journal.start_deployment(env=env_name, app=app, kind="recover", version="-",
                                       command=command)
        result.deployment_id = dep
        for fleet, names in todo:
            facts, _ = fleet.survey("probe.yml", base_vars(fleet.env, backend=fleet.backend),
                                    lambda: False)
            for name in names:
                f = facts.get(name)
                node = fleet.node(name)
                if f is not None and f.healthy:
                    fleet.lb.set_state(fleet.backend, node.lb_server, "ready")
                    journal.record_phase(dep, name, "rejoined", from_version=f.current,
                                         to_version=f.current, detail="healthy; put back into service")
                    say(f"{name}: healthy on {f.current}; put back into service")
                    result.put_back.append(name)
                else:
                    why = f.health_detail if f is not None else "not read"
                    journal.record_phase(dep, name, "out_of_service",
                                         from_version=f.current if f else "", detail=f"unhealthy: {why}")
                    say(f"{name}: unhealthy ({why}); left out")
                    result.still_out.append(name)
        left = result.still_out
        journal.finish_deployment(dep, "failed" if left else "succeeded",
                                  f"left out: {', '.join(left)}" if left else "recovered")
    if left:
        raise DeployerError(
            f"{', '.join(left)} still unhealthy and out of service",
            hint=f"deployer rollback --env {env_name}",
        )
    return result
