"""What the lab records and reports: its nodes, its services, its status."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._procs import ProcessRef
from ._spec import LabSpec

__all__ = ["LabState", "LabStatus", "NodeState", "NodeStatus"]


@dataclass
class NodeState:
    """A running (or recorded) lab node."""

    name: str
    address: str
    ssh_port: int
    sshd: ProcessRef | None = None
    supervisord: ProcessRef | None = None
    # The node's cgroup (its path under the cgroup v2 root): every process in it is the node's.
    cgroup: str | None = None
    # Recorded by labs from before cgroups; read only to stop such a lab safely.
    mount_namespace: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "ssh_port": self.ssh_port,
            "sshd": self.sshd.to_dict() if self.sshd else None,
            "supervisord": self.supervisord.to_dict() if self.supervisord else None,
            "cgroup": self.cgroup,
            **({"mount_namespace": self.mount_namespace} if self.mount_namespace else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeState:
        return cls(
            name=data["name"],
            address=data["address"],
            ssh_port=int(data["ssh_port"]),
            sshd=ProcessRef.from_dict(data["sshd"]) if data.get("sshd") else None,
            supervisord=ProcessRef.from_dict(data["supervisord"]) if data.get("supervisord") else None,
            cgroup=data.get("cgroup"),
            mount_namespace=data.get("mount_namespace"),
        )


@dataclass
class LabState:
    """What ``lab up`` built: the spec, the nodes and the shared services."""

    dir: Path
    spec: LabSpec
    nodes: list[NodeState] = field(default_factory=list)
    haproxy: ProcessRef | None = None
    nginx: ProcessRef | None = None
    prometheus: ProcessRef | None = None
    # The load balancer's own host (production topology), started like a node.
    lb_host: NodeState | None = None
    release_key: str | None = None
    release_public_key: str | None = None
    published: list[str] = field(default_factory=list)
    # The lab's own cgroup (under the cgroup v2 root): one child per node, one for the services.
    cgroup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "cgroup": self.cgroup,
            "spec": self.spec.to_dict(),
            "nodes": [n.to_dict() for n in self.nodes],
            "haproxy": self.haproxy.to_dict() if self.haproxy else None,
            "nginx": self.nginx.to_dict() if self.nginx else None,
            "prometheus": self.prometheus.to_dict() if self.prometheus else None,
            "lb_host": self.lb_host.to_dict() if self.lb_host else None,
            "release_key": self.release_key,
            "release_public_key": self.release_public_key,
            "published": self.published,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabState:
        return cls(
            dir=Path(data["dir"]),
            spec=LabSpec.from_dict(data["spec"]),
            nodes=[NodeState.from_dict(n) for n in data.get("nodes", [])],
            haproxy=ProcessRef.from_dict(data["haproxy"]) if data.get("haproxy") else None,
            nginx=ProcessRef.from_dict(data["nginx"]) if data.get("nginx") else None,
            prometheus=ProcessRef.from_dict(data["prometheus"]) if data.get("prometheus") else None,
            lb_host=NodeState.from_dict(data["lb_host"]) if data.get("lb_host") else None,
            release_key=data.get("release_key"),
            release_public_key=data.get("release_public_key"),
            published=list(data.get("published", [])),
            cgroup=data.get("cgroup"),
        )

    @property
    def hosts(self) -> list[NodeState]:
        """Every host the lab runs: the nodes, and the load balancer's host if it has one."""
        return [*self.nodes, *([self.lb_host] if self.lb_host else [])]

    def processes(self) -> list[ProcessRef]:
        refs = [self.haproxy, self.nginx, self.prometheus]
        for node in self.hosts:
            refs += [node.sshd, node.supervisord]
        return [r for r in refs if r is not None]


@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    ssh_port: int
    sshd_up: bool
    supervisord_up: bool
    # The release the node's `current` symlink points at, or None.
    app_version: str | None
    app_healthy: bool
    # HAProxy's view of the node (UP, DOWN, MAINT, DRAIN, ...), or None when unknown.
    lb_state: str | None
    # blue or green in a blue-green lab, else None.
    leg: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "leg": self.leg,
            "address": self.address,
            "ssh_port": self.ssh_port,
            "sshd_up": self.sshd_up,
            "supervisord_up": self.supervisord_up,
            "app_version": self.app_version,
            "app_healthy": self.app_healthy,
            "lb_state": self.lb_state,
        }


@dataclass(frozen=True)
class LabStatus:
    dir: Path
    # True when a lab is recorded in `dir` (it may be partly dead: see the fields).
    exists: bool
    nodes: list[NodeStatus]
    haproxy_up: bool
    store_up: bool
    config_path: Path
    inventory_path: Path
    store_dir: Path
    store_url: str | None
    frontend_url: str | None
    haproxy_socket: Path
    keys_dir: Path
    published: list[str]
    # Where the lab's processes live (see deployer/lab/_cgroup.py), or None with no lab.
    cgroup: str | None = None
    metrics_url: str | None = None
    # Blue-green labs: the idle leg's frontend and the leg taking live traffic.
    preview_url: str | None = None
    live_leg: str | None = None
    # Labs with Prometheus (`lab up --prometheus`).
    prometheus_url: str | None = None
    prometheus_up: bool = False
    # The production topology's load-balancer host (its address), else None.
    lb_host: str | None = None
    topology: str = "lab"
    # The environment's name in the lab's config.
    env: str = "lab"

    @property
    def healthy(self) -> bool:
        """Every service runs and every node answers SSH."""
        return (
            self.exists and self.haproxy_up and self.store_up and all(n.sshd_up for n in self.nodes)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "exists": self.exists,
            "healthy": self.healthy,
            "nodes": [n.to_dict() for n in self.nodes],
            "haproxy_up": self.haproxy_up,
            "store_up": self.store_up,
            "config": str(self.config_path),
            "inventory": str(self.inventory_path),
            "store_dir": str(self.store_dir),
            "store_url": self.store_url,
            "frontend_url": self.frontend_url,
            "haproxy_socket": str(self.haproxy_socket),
            "keys_dir": str(self.keys_dir),
            "published": self.published,
            "cgroup": self.cgroup,
            "metrics_url": self.metrics_url,
            "preview_url": self.preview_url,
            "live_leg": self.live_leg,
            "prometheus_url": self.prometheus_url,
            "prometheus_up": self.prometheus_up,
            "lb_host": self.lb_host,
            "topology": self.topology,
            "env": self.env,
        }
