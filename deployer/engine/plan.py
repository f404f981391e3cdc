"""Cut a fleet into batches according to a strategy, and check the capacity floor."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._config import StrategyConfig
from .._errors import ConfigError

__all__ = ["Batch", "Plan", "batch_limits", "make_plan", "resolve_count"]


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
    strategy: StrategyConfig, total: int, *, source: str = "config", unavailable: int = 0
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
    fleet: Sequence[str], targets: Sequence[str], strategy: StrategyConfig, *,
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
