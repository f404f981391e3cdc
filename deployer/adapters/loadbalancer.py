"""The load-balancer seam: what the engine and the CLI need from a load balancer.

The engine depends only on :class:`LoadBalancer` and :class:`ServerState`; the concrete clients
(HAProxy over a local socket, ``tcp://``, over SSH on the load-balancer host, or several load
balancers at once) live in :mod:`deployer.adapters.haproxy` and are picked by the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["ADMIN_STATES", "LoadBalancer", "ServerState"]

# Administrative states, from the least to the most out of service.
ADMIN_STATES = ("ready", "drain", "maint")


@dataclass(frozen=True)
class ServerState:
    backend: str
    server: str
    # HAProxy's status column: UP, DOWN, MAINT, DRAIN, "UP 1/2", "no check", ...
    status: str
    # Admin state as set through the runtime API: ready, drain or maint.
    admin: str
    sessions: int
    # Where this state was read (one load balancer), or "" when merged from several that agree.
    where: str = ""

    @property
    def in_service(self) -> bool:
        """True when the server takes new traffic: ready and passing its checks."""
        return self.admin == "ready" and self.status.split()[0] in ("UP", "no")

    @property
    def label(self) -> str:
        text = self.admin.upper() if self.admin != "ready" else self.status
        return f"{text} on {self.where}" if self.where else text


class LoadBalancer(Protocol):
    """One load balancer, or several acting as one (an HA pair)."""

    @property
    def where(self) -> str:
        """Where the runtime API is reached, for messages (e.g. ``lb1 over SSH``)."""
        ...

    def servers(self, backend: str) -> dict[str, ServerState]:
        """Every server of ``backend``; raises LoadBalancerError when it cannot be read."""
        ...

    def set_state(self, backend: str, server: str, state: str) -> None:
        """Set ``server``'s admin state (ready, drain or maint) everywhere it is served."""
        ...

    def route(self, map_file: str, key: str) -> str | None:
        """The backend a routing map sends ``key`` to (e.g. the live leg), or None if unset."""
        ...

    def set_route(self, map_file: str, key: str, backend: str) -> None:
        """Point ``key`` of a routing map at ``backend``: one operation per load balancer, so
        every new request after it goes to the new backend and none is cut."""
        ...


