"""What an environment runs, read from the fleet itself (never from a journal alone): each
serving node's release, as the nodes say (``probe.yml``, as ``deployer status`` reads them).
The serving nodes are the whole fleet of a rolling environment, and the live leg of a
blue-green one (the idle leg holding the previous release is the fallback, not drift)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from ..engine.bluegreen import BlueGreen
from ..engine.fleet import Fleet
from ..engine.strategy import Strategy
from ..engine.variables import base_vars

__all__ = ["UNREADABLE", "Observed", "observe"]

# The release of a node that could not be read.
UNREADABLE = "?"


@dataclass(frozen=True)
class Observed:
    """The serving nodes and the release each runs ("" none, ``?`` unreadable)."""

    nodes: Mapping[str, str]
    # The live leg of a blue-green environment.
    leg: str | None = None

    @property
    def versions(self) -> dict[str, int]:
        """How many serving nodes run each release."""
        return dict(sorted(Counter(self.nodes.values()).items()))

    @property
    def running(self) -> str | None:
        """The one release every serving node runs, or None (none, several, or unreadable)."""
        found = set(self.nodes.values())
        if len(found) != 1:
            return None
        only = found.pop()
        return only if only not in ("", UNREADABLE) else None

    @property
    def unreadable(self) -> list[str]:
        return [n for n, v in self.nodes.items() if v == UNREADABLE]

    def describe(self) -> str:
        if self.running:
            return f"every serving node runs {self.running}"
        parts = [f"{count} on {version or 'no release'}" if version != UNREADABLE
                 else f"{count} unreadable" for version, count in self.versions.items()]
        return "serving nodes: " + (", ".join(parts) or "none")


def observe(strategy: Strategy, fleets: Mapping[str, Fleet]) -> Observed:
    """Read the serving nodes (the live leg's, for blue-green). Raises what reading the load
    balancer (the live leg) raises."""
    leg: str | None = None
    if isinstance(strategy, BlueGreen):
        leg = strategy.live_leg()
        serving = [fleets[leg]]
    else:
        serving = list(fleets.values())
    nodes: dict[str, str] = {}
    for fleet in serving:
        facts, _ = fleet.survey("probe.yml", base_vars(fleet.env, backend=fleet.backend), lambda: False)
        for node in fleet.nodes:
            f = facts.get(node.name)
            nodes[node.name] = UNREADABLE if f is None or f.unreachable else f.current
    return Observed(nodes=nodes, leg=leg)
