"""A deployment's plan, as data: computed once from what the preflight read, then shown by
``deployer plan`` or run by ``deployer deploy`` (the same object either way).

- :class:`DeploymentPlan`: every node with why it is or is not a target, the steps in order
  (each with the safe point before it), the refusals the deployment would make (with the exit
  code it would end with), and notes;
- the rolling batches: :func:`make_plan` cuts the targets into :class:`Batch` es under the
  capacity floor (:func:`batch_limits`), as a :class:`Plan`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError
from ..config import RollingStrategy

__all__ = [
    "Batch",
    "DeploymentPlan",
    "NodePlan",
    "Plan",
    "Refusal",
    "Step",
    "batch_limits",
    "make_plan",
    "resolve_count",
]


def resolve_count(spec: str, total: int, *, minimum: int = 1) -> int:
    """'3' -> 3, '25%' of 16 -> 4 (rounded up, at least ``minimum``; '0' -> ``minimum``)."""
    if spec.endswith("%"):
        return max(minimum, math.ceil(total * int(spec[:-1]) / 100))
    return max(minimum, int(spec))


@dataclass(frozen=True)
class Batch:
    index: int  # 1-based
    nodes: tuple[str, ...]
    canary: bool = False


@dataclass(frozen=True)
class Plan:
    fleet: tuple[str, ...]
    targets: tuple[str, ...]  # nodes that need the release
    skipped: tuple[str, ...]  # nodes already on it
    batches: tuple[Batch, ...]
    min_healthy: int
    forks: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return {
            "fleet": list(self.fleet),
            "targets": list(self.targets),
            "skipped": list(self.skipped),
            "min_healthy": self.min_healthy,
            "forks": self.forks,
            "batches": [
                {"index": b.index, "nodes": list(b.nodes), "canary": b.canary} for b in self.batches
            ],
            "notes": list(self.notes),
        }


def batch_limits(
    strategy: RollingStrategy, total: int, *, source: str = "config", unavailable: int = 0
) -> tuple[int, int, list[str]]:
    """(batch size, capacity floor, notes) for a fleet of ``total`` nodes, ``unavailable`` of
    which are out of service and stay so (e.g. an operator's maintenance)."""
    batch_size = min(resolve_count(strategy.batch_size, total), max(1, total))
    min_healthy = resolve_count(strategy.min_healthy, total, minimum=0)
    if total == 1:
        # A single node cannot keep anything in service while it is replaced.
        min_healthy = 0
    if min_healthy >= total and total > 0:
        raise ConfigError(
            f"the capacity floor of {min_healthy} node(s) leaves no node that can be taken out of "
            f"service in a fleet of {total}",
            file=source, field="strategy.min_healthy", value=strategy.min_healthy,
        )
    # Shrink batches so that the rest of the fleet always meets the floor (at least one node
    # per batch: the capacity check before each batch refuses what cannot be done).
    allowed = max(1, total - min_healthy - unavailable)
    notes = []
    if batch_size > allowed:
        notes.append(
            f"batch size {batch_size} lowered to {allowed} to keep {min_healthy} node(s) in service"
        )
        batch_size = allowed
    return batch_size, min_healthy, notes


def make_plan(
    fleet: Sequence[str], targets: Sequence[str], strategy: RollingStrategy, *,
    source: str = "config", unavailable: int = 0,
) -> Plan:
    """Batches over ``targets`` (in fleet order); raises ConfigError if the floor cannot hold.
    ``unavailable`` nodes of the fleet are out of service and stay so: batches shrink for them."""
    total = len(fleet)
    ordered = [n for n in fleet if n in set(targets)]
    batch_size, min_healthy, notes = batch_limits(
        strategy, total, source=source, unavailable=unavailable
    )
    batches: list[Batch] = []
    rest = list(ordered)
    # canary "0" (like null) means no canary batch.
    canary = resolve_count(strategy.canary, total, minimum=0) if strategy.canary else 0
    if canary and rest:
        n = min(canary, batch_size, len(rest))
        batches.append(Batch(index=1, nodes=tuple(rest[:n]), canary=True))
        rest = rest[n:]
    while rest:
        batches.append(Batch(index=len(batches) + 1, nodes=tuple(rest[:batch_size])))
        rest = rest[batch_size:]
    largest = max((len(b.nodes) for b in batches), default=1)
    forks = strategy.forks or max(largest, 1)
    return Plan(
        fleet=tuple(fleet),
        targets=tuple(ordered),
        skipped=tuple(n for n in fleet if n not in set(ordered)),
        batches=tuple(batches),
        min_healthy=min_healthy,
        forks=max(forks, largest),
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class NodePlan:
    """One node in a plan: what it runs, and why it is or is not a target."""

    name: str
    current: str
    target: bool
    # Why: "1.0.0 -> 1.1.0", "already on 1.1.0, healthy and in service", "left as it is: ...".
    reason: str
    load_balancer: str = ""
    leg: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.name, "current": self.current or None, "target": self.target,
                "reason": self.reason, "load_balancer": self.load_balancer or None,
                **({"leg": self.leg} if self.leg else {})}


@dataclass(frozen=True)
class Step:
    """One step of a deployment, with the safe point reached before it (if any)."""

    kind: str  # prestage | batch | soak | release_leg | preview_smoke | switch | uplift | ...
    label: str
    nodes: tuple[str, ...] = ()
    safe_point: str | None = None
    operations: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "nodes": list(self.nodes),
                "safe_point": self.safe_point, "operations": list(self.operations)}


@dataclass(frozen=True)
class Refusal:
    """A refusal the deployment would make, and the exit code it would end with."""

    reason: str
    exit_code: int
    hint: str = ""
    # When: "before any node leaves the load balancer", "before batch 2", ...
    when: str = "before any node leaves the load balancer"

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "exit_code": self.exit_code, "hint": self.hint or None,
                "when": self.when}


@dataclass(frozen=True)
class DeploymentPlan:
    """What a deployment of ``version`` does, read from the fleet and the load balancer now."""

    strategy: str
    version: str
    kind: str
    nodes: tuple[NodePlan, ...]
    steps: tuple[Step, ...]
    refusals: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # The rolling batches (blue-green: the batches of the leg released first).
    batches: Plan | None = None
    # Blue-green: which leg is live, which receives the release.
    legs: dict[str, Any] = field(default_factory=dict)
    # What each check registered with the lifecycle (the gates) would decide now, before the
    # lock: {"check", "decision", "reason"}.
    checks: tuple[dict[str, str], ...] = ()
    # Why the deployment would be High Risk ("": it would not).
    high_risk: str = ""

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes if n.target)

    @property
    def refused(self) -> Refusal | None:
        """The first refusal before any change, if the deployment would be refused."""
        return next((r for r in self.refusals if r.exit_code == 9), None)

    @property
    def exit_code(self) -> int:
        """What the deployment would exit with, as far as the plan can tell."""
        return self.refusals[0].exit_code if self.refusals else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy, "version": self.version, "kind": self.kind,
            "nodes": [n.to_dict() for n in self.nodes],
            "targets": list(self.targets),
            "steps": [s.to_dict() for s in self.steps],
            "refusals": [r.to_dict() for r in self.refusals],
            "exit_code": self.exit_code,
            "notes": list(self.notes), "warnings": list(self.warnings),
            # The rolling batches, flat: fleet, skipped, min_healthy, forks, batches.
            **({k: v for k, v in self.batches.to_dict().items() if k not in ("targets", "notes")}
               if self.batches else {}),
            **({"legs": self.legs} if self.legs else {}),
            "checks": [dict(c) for c in self.checks],
            "high_risk": self.high_risk or None,
        }
