"""Reading a fleet (or one blue-green leg) and its load balancer, and the guards deployer keeps
around them: no deployment without the load balancer, an operator's maintenance is theirs, and
the capacity floor.

A :class:`Fleet` is a set of nodes behind one backend. It reads what each node runs and whether
it is healthy (a playbook run on every node at once: ``probe.yml``, or ``prestage.yml``, which
also pulls, verifies and unpacks the release), and the load balancer's view of every node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import DeploymentFailed, DeploymentRefused, LoadBalancerError
from ..adapters.inventory import Node
from ..adapters.journal import Journal
from ..adapters.loadbalancer import LoadBalancer, ServerState
from ..adapters.runner import Runner, RunnerEvent, RunRequest, RunResult
from ..config import EnvironmentConfig
from .left_out import left_out_by_deployer
from .model import NodeFacts, NodeStatus
from .plan import Batch, Plan
from .tracking import UNTOUCHED

__all__ = ["CapacityShortfall", "Fleet", "held_text"]


def held_text(held: Mapping[str, ServerState]) -> str:
    names = ", ".join(f"{n} ({s.label})" for n, s in held.items())
    return f"{names} {'is' if len(held) == 1 else 'are'} out of the load balancer, put there by someone else"


@dataclass(frozen=True)
class CapacityShortfall:
    """A batch that would take the fleet below its capacity floor."""

    batch: int
    staying: int
    floor: int
    out_now: tuple[str, ...]
    nodes: tuple[str, ...]

    def text(self) -> str:
        return (
            f"capacity floor: only {self.staying} node(s) would stay in service during batch "
            f"{self.batch} (floor {self.floor}; out of service now: {', '.join(self.out_now) or 'none'}); "
            f"stopped before touching {', '.join(self.nodes)}"
        )


class Fleet:
    """The nodes of an environment (or of one leg) behind ``backend``."""

    def __init__(
        self, *, env_name: str, env: EnvironmentConfig, nodes: Sequence[Node], runner: Runner,
        lb: LoadBalancer, journal: Journal, backend: str, config_file: str = "config",
        leg: str | None = None,
    ) -> None:
        self.env_name = env_name
        self.env = env
        self.nodes = list(nodes)
        self.runner = runner
        self.lb = lb
        self.journal = journal
        self.backend = backend
        self.config_file = config_file
        self.leg = leg

    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # -- the nodes ------------------------------------------------------------------------

    def survey(
        self, playbook: str, extravars: Mapping[str, Any], cancelled: Callable[[], bool], *,
        exclude: Iterable[str] = (), on_event: Callable[[RunnerEvent], None] | None = None,
        runner: Runner | None = None,
    ) -> tuple[dict[str, NodeFacts], RunResult]:
        """Run a playbook on every node (but ``exclude``) that reports releases and health
        (probe.yml, or prestage.yml, which also stages the release) and collect what each node
        said. ``on_event`` hears every event too (a deployment's node phases); ``runner`` runs
        it instead of the fleet's (a deployment's one run, whose first part pre-stages)."""
        left_out = set(exclude)
        nodes = [n for n in self.nodes if n.name not in left_out]
        facts = {n.name: NodeFacts() for n in nodes}
        if not nodes:
            # Every node left out: no run (one without hosts would have no limit: every node).
            return facts, RunResult(status="successful", rc=0)

        def heard(ev: RunnerEvent) -> None:
            if on_event is not None:
                on_event(ev)
            if ev.kind == "unreachable" and ev.host in facts:
                facts[ev.host].unreachable_reason = ev.message
            if ev.kind == "ok" and isinstance(ev.facts.get("deployer_nodes_with_activation_hooks"), list):
                # One answer for the whole fleet (prestage.yml); a node it does not name has none.
                hooked = {str(n) for n in ev.facts["deployer_nodes_with_activation_hooks"]}
                for name, node_facts in facts.items():
                    node_facts.activation_hooks = name in hooked
            if ev.host not in facts or ev.kind not in ("ok", "failed"):
                return
            f = facts[ev.host]
            if "deployer_release_current" in ev.facts:
                f.current = str(ev.facts.get("deployer_release_current") or "")
                f.previous = str(ev.facts.get("deployer_release_previous") or "")
            if ev.role == "deployer_smoke":
                f.healthy = ev.kind == "ok" and bool(ev.result.get("healthy", ev.kind == "ok"))
                f.health_detail = str(ev.result.get("msg") or ev.message or "")

        result = (runner or self.runner).run(
            RunRequest(
                playbook=playbook, inventory=self.env.inventory, hosts=[n.name for n in nodes],
                extravars=extravars, forks=max(1, len(nodes)),
            ),
            heard,
            cancelled,
        )
        # A run the operator stopped is not a failure to read: the caller sees it canceled.
        if result.error and result.status != "canceled":
            raise DeploymentFailed(f"could not read the nodes' state: {result.error}")
        for host in result.unreachable_hosts:
            if host in facts:
                facts[host].healthy = None
                facts[host].health_detail = "unreachable"
        return facts, result

    # -- the load balancer ----------------------------------------------------------------

    def lb_states(self) -> dict[str, ServerState]:
        """Every server of the backend; raises LoadBalancerError when it cannot be read."""
        return self.lb.servers(self.backend)

    def missing_servers(self, states: Mapping[str, ServerState]) -> str:
        missing = [f"{n.name} (server {n.lb_server!r})" for n in self.nodes if n.lb_server not in states]
        if not missing:
            return ""
        return (
            f"the load balancer ({self.lb.where}) has no server for "
            f"{', '.join(missing)} in backend {self.backend!r}"
        )

    def read_lb(self, when: str, *, refuse: bool = False) -> dict[str, ServerState]:
        """The load balancer's view of every node, or an error saying why not (``refuse``:
        DeploymentRefused, nothing having changed yet; else DeploymentFailed)."""
        error = DeploymentRefused if refuse else DeploymentFailed
        try:
            states = self.lb_states()
        except LoadBalancerError as exc:
            raise error(
                f"cannot read the load balancer {when}: {exc}",
                hint=exc.hint or "check load_balancer in the config",
            ) from None
        missing = self.missing_servers(states)
        if missing:
            raise error(
                missing,
                hint=f"fix load_balancer.backend in {self.config_file}, or set deployer_lb_server "
                "for the node in the inventory",
            )
        return states

    def held_by_others(
        self, states: Mapping[str, ServerState], status: Mapping[str, NodeStatus] | None = None,
    ) -> dict[str, ServerState]:
        """Nodes in MAINT or DRAIN on the load balancer that deployer did not put there: neither
        this deployment (``status``) nor an earlier one that left them out (the journal says
        which)."""
        held = {}
        for node in self.nodes:
            s = states.get(node.lb_server)
            st = (status or {}).get(node.name)
            if s is not None and s.admin != "ready" and (st is None or st.phase in UNTOUCHED):
                held[node.name] = s
        if held:
            for name in left_out_by_deployer(self.journal, self.env_name, held):
                del held[name]
        return held

    def refusal_for_held(self, held: Mapping[str, ServerState]) -> tuple[str, str] | None:
        """(reason, hint) when an operator's maintenance refuses the deployment, else None."""
        if not held or self.env.strategy.operator_maintenance != "refuse":
            return None
        return (
            f"{held_text(held)}; deployer does not touch a node someone else took out of the "
            "load balancer",
            "wait until they are back in service, or set strategy.operator_maintenance: skip in "
            f"{self.config_file} to deploy to the other nodes and leave them as they are",
        )

    def capacity_shortfall(
        self, batch: Batch, plan: Plan, states: Mapping[str, ServerState],
        *, back_in_service: Iterable[str] = (),
    ) -> CapacityShortfall | None:
        """Whether ``batch`` would take the fleet below the plan's capacity floor, given the
        load balancer's ``states`` (``back_in_service``: nodes counted in service whatever the
        states say, e.g. earlier batches of a plan, which come back before this one)."""
        back = set(back_in_service)
        in_service = {
            n.name: (n.name in back) or (n.lb_server in states and states[n.lb_server].in_service)
            for n in self.nodes
        }
        outside = [n for n, ok in in_service.items() if n not in batch.nodes and ok]
        removes_capacity = any(in_service[n] for n in batch.nodes)
        if removes_capacity and len(outside) < plan.min_healthy:
            out_now = tuple(
                f"{n.name} ({states[n.lb_server].label})" for n in self.nodes
                if not in_service[n.name] and n.lb_server in states
            )
            return CapacityShortfall(batch=batch.index, staying=len(outside), floor=plan.min_healthy,
                                     out_now=out_now, nodes=batch.nodes)
        return None

    def without(self, batch: Batch, names: Iterable[str]) -> Batch:
        drop = set(names)
        return dataclasses.replace(batch, nodes=tuple(n for n in batch.nodes if n not in drop))
