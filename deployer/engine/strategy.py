"""The strategy interface: how a release reaches the fleet, as one lifecycle.

A deployment is always: **preflight** (the load balancer and every node read, the release
pre-staged, soak sources checked) → **plan** (data, :class:`~deployer.engine.plan.DeploymentPlan`,
the same that ``deployer plan`` shows) → **steps** (each after a safe point) → **outcome**.
:class:`Execution` is that sequence, written once; a strategy supplies its parts:

- :meth:`Execution.read`: the preflight's reading (and pre-staging);
- :meth:`Execution.plan`: the plan, from that reading, including every refusal it predicts;
- :meth:`Execution.steps`: the steps, calling :meth:`Run.safe_point` before each;
- :meth:`Execution.handle`: how the strategy ends after a stop or a failure (revert, roll back,
  switch back), leaving no node half-done;
- :meth:`Execution.account`: which nodes it left out of the load balancer, at the end.

A :class:`Strategy` makes an :class:`Execution` per deployment (:meth:`Strategy.begin`), and
knows the environment's nodes and what ``rollback`` goes back to. Rolling
(:mod:`deployer.engine.rolling`) and blue-green (:mod:`deployer.engine.bluegreen`) are the two
today; a third (a canary by traffic weight, say) is one new module implementing these.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._errors import DeployerError, DeploymentFailed, Interrupted, LoadBalancerError
from ..adapters.inventory import Node
from .events import PhaseEntered
from .model import NodeStatus
from .plan import DeploymentPlan
from .rollout import Accounting
from .run import Run, Stopped
from .safepoints import SafePoint

__all__ = ["Execution", "StepsResult", "Strategy"]


@dataclass
class StepsResult:
    """How the steps ended, as the strategy tells it (the lifecycle adds the accounting)."""

    status: str  # succeeded | failed | rolled_back | cancelled | refused | stopped
    summary: str
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # A check's stop: the error the deployment ends with (its exit code).
    stop_error: DeployerError | None = None


class Execution(ABC):
    """One deployment by one strategy; see the module documentation."""

    def __init__(self, run: Run) -> None:
        self.run = run
        # Set by the lifecycle: hears the plan once it is made (to publish and journal it).
        self.on_plan: Callable[[DeploymentPlan, Mapping[str, str]], None] | None = None

    def perform(self) -> StepsResult:
        """Preflight, plan and steps, ending with the strategy's own handling of a stop or a
        failure. A crash (any other exception) propagates: the lifecycle records it."""
        run = self.run
        try:
            with self.session():
                run.publish(PhaseEntered(phase="preflight"))
                self.read(stage=True)
                run.publish(PhaseEntered(phase="plan"))
                plan = self.plan()
                if self.on_plan is not None:
                    self.on_plan(plan, self.from_versions())
                run.publish(PhaseEntered(phase="steps"))
                return self.steps(plan)
        except (Stopped, Interrupted, DeploymentFailed, LoadBalancerError) as exc:
            return self.handle(exc)

    def session(self) -> AbstractContextManager[object]:
        """What the preflight and the steps of one deployment share, ended before a stop or a
        failure is handled (rolling: the deployment's one Ansible run). None by default."""
        return contextlib.nullcontext()

    @abstractmethod
    def read(self, *, stage: bool) -> None:
        """Read the load balancer and every node; with ``stage``, pre-stage the release."""

    @abstractmethod
    def plan(self) -> DeploymentPlan:
        """The plan, from what :meth:`read` learned (changes nothing)."""

    @abstractmethod
    def steps(self, plan: DeploymentPlan) -> StepsResult:
        """Run the plan; the first step comes after the ``before_start`` safe point."""

    @abstractmethod
    def handle(self, exc: Stopped | Interrupted | DeploymentFailed | LoadBalancerError) -> StepsResult:
        """End safely after a stop or a failure."""

    @abstractmethod
    def account(self) -> Accounting:
        """The nodes this deployment left out of the load balancer, and those someone else
        holds (read from the load balancer at the end)."""

    @abstractmethod
    def node_status(self) -> dict[str, NodeStatus]:
        """Every node's place in this deployment."""

    def outcome_details(self) -> dict[str, Any]:
        """What the strategy adds to the outcome and the journal (blue-green: legs, switches)."""
        return {}

    def states(self) -> str:
        """Where every node stands now, in words (for a halted High Risk deployment, whose
        next step people decide): grouped by what happened to it and what it runs."""
        from .states import NodePhase

        groups: dict[str, list[str]] = {}
        version = self.run.release.version
        for name, st in self.node_status().items():
            if st.phase is NodePhase.DONE:
                what = f"on {version}"
            elif st.phase is NodePhase.REVERTED:
                what = f"reverted to {st.from_version or 'nothing'}"
            elif st.phase is NodePhase.FAILED:
                what = "failed (see the journal)"
            elif st.phase is NodePhase.SKIPPED and st.from_version == version:
                what = f"on {version} already"
            else:
                what = f"not changed, on {st.from_version or 'nothing'}"
            leg = f" ({st.leg} leg)" if st.leg else ""
            groups.setdefault(what + leg, []).append(name)
        return "; ".join(f"{what}: {', '.join(names)}" for what, names in groups.items())

    def from_versions(self) -> dict[str, str]:
        """What each node ran before this deployment (as read in preflight)."""
        return {n: st.from_version for n, st in self.node_status().items()}

    @property
    def changed(self) -> bool:
        """Whether any node has left the load balancer in this deployment."""
        from .tracking import UNTOUCHED

        return any(st.phase not in UNTOUCHED for st in self.node_status().values())

    def start(self, plan: DeploymentPlan) -> None:
        """The ``before_start`` safe point (the first thing :meth:`steps` does)."""
        first = next((s.label for s in plan.steps if s.safe_point), "")
        self.run.safe_point(SafePoint.BEFORE_START, label=first)


class Strategy(Protocol):
    """How a release reaches an environment's fleet."""

    kind: str

    @property
    def nodes(self) -> list[Node]:
        """Every node of the environment."""
        ...

    def begin(self, run: Run) -> Execution:
        """An execution of this strategy for one deployment (or one plan)."""
        ...

    def rollback_target(self) -> str:
        """The release ``deployer rollback`` goes back to (raises ConfigError when none is
        known)."""
        ...
