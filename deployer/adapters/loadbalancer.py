"""The load-balancer seam: what the engine and the CLI need from a load balancer.

The engine depends only on :class:`LoadBalancer` and :class:`ServerState`; the concrete clients
(HAProxy over a local socket, ``tcp://``, over SSH on the load-balancer host, or several load
balancers at once) live in :mod:`deployer.adapters.haproxy` and are picked by the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ADMIN_STATES", "FakeLoadBalancer", "LoadBalancer", "ServerState"]

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


class FakeLoadBalancer:
    """A load balancer in memory, for tests at the seam: servers UP unless told otherwise,
    every change recorded in ``changes``; ``unreadable`` makes every read fail."""

    def __init__(
        self, backend: str, servers: Iterable[str], *, where: str = "fake", unreadable: str = ""
    ) -> None:
        self.backend = backend
        self.admin = dict.fromkeys(servers, "ready")
        self.status = dict.fromkeys(self.admin, "UP")
        self.changes: list[tuple[str, str]] = []
        self.reads = 0
        self.unreadable = unreadable
        self._where = where
        self.maps: dict[str, dict[str, str]] = {}
        self.backends: dict[str, dict[str, str]] = {}

    @property
    def where(self) -> str:
        return self._where

    def add_backend(self, backend: str, servers: Iterable[str]) -> None:
        """Another backend (e.g. a second leg), its servers UP and ready."""
        self.backends[backend] = dict.fromkeys(servers, "ready")

    def servers(self, backend: str) -> dict[str, ServerState]:
        from .._errors import LoadBalancerError

        self.reads += 1
        if self.unreadable:
            raise LoadBalancerError(f"cannot reach the load balancer at {self.where}: {self.unreadable}")
        if backend in self.backends:
            return {
                name: ServerState(backend=backend, server=name, status="MAINT" if a == "maint" else "UP",
                                  admin=a, sessions=0)
                for name, a in self.backends[backend].items()
            }
        if backend != self.backend:
            raise LoadBalancerError(f"{self.where} has no backend named {backend!r}")
        return {
            name: ServerState(
                backend=backend, server=name,
                status="MAINT" if admin == "maint" else self.status[name], admin=admin, sessions=0,
            )
            for name, admin in self.admin.items()
        }

    def set_state(self, backend: str, server: str, state: str) -> None:
        if state not in ADMIN_STATES:
            raise ValueError(state)
        if backend in self.backends:
            self.backends[backend][server] = state
        else:
            self.admin[server] = state
        self.changes.append((server, state))

    def route(self, map_file: str, key: str) -> str | None:
        return self.maps.get(map_file, {}).get(key)

    def set_route(self, map_file: str, key: str, backend: str) -> None:
        self.maps.setdefault(map_file, {})[key] = backend
        self.changes.append((f"{map_file}:{key}", backend))
