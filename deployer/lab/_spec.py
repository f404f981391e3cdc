"""What a lab should look like (:class:`LabSpec`), validated on construction.

A lab owns no fixed port unless asked: each port it binds (frontend, store, preview, HAProxy's
metrics, Prometheus) is given, or left None until ``lab up`` chooses it once
(:meth:`LabSpec.with_ports`): the default lab takes the documented defaults (``DEFAULT_PORTS``),
any other lab free ports, and the lab records what it chose so a later ``up`` reuses it
(:meth:`LabSpec.with_ports_of`). So a test's, a benchmark's or a second demo lab never takes a
port the default lab needs, whichever comes up first.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, replace
from typing import Any

from .._errors import UsageError
from .._versions import validate_version

__all__ = ["DEFAULT_NET", "DEFAULT_PORTS", "MAX_NODES", "LabSpec", "PortPicker", "split_address"]

# Node N lives on <net>.N; .255 is kept out of the range.
MAX_NODES = 254
# The default lab's network and the addresses it takes when not told otherwise (the README's).
DEFAULT_NET = "127.0.1"
DEFAULT_PORTS = {
    "frontend": "127.0.0.1:8080",
    "store": "127.0.0.1:8081",
    "preview": "127.0.0.1:8082",
    "metrics": "127.0.0.1:8404",
    "prometheus_address": "127.0.0.1:9090",
}
# The flag that sets each address field (named in errors).
_FLAGS = {"frontend": "--frontend", "store": "--store", "preview": "--preview",
          "metrics": "--metrics", "prometheus_address": "--prometheus-address"}
# How a lab picks free ports: (how many, ports to avoid) -> that many distinct free ports.
PortPicker = Callable[[int, Collection[int]], list[int]]
_APP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def _loopback(host: str, *, what: str) -> str:
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError:
        raise UsageError(f"{what}: {host!r} is not an IPv4 address") from None
    if not addr.is_loopback:
        raise UsageError(f"{what}: {host} is not a loopback address (the lab uses only 127.0.0.0/8)")
    return host


def split_address(value: str, *, what: str) -> tuple[str, int]:
    """Parse ``ADDR:PORT`` on loopback, e.g. ``127.0.0.1:8080``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"{what}: {value!r} must look like ADDR:PORT, e.g. 127.0.0.1:8080")
    return _loopback(host, what=what), int(port_text)


@dataclass(frozen=True)
class LabSpec:
    """The shape of a lab: node count, addresses, ports, application and optional seed release."""

    # Nodes in the fleet; with ``legs``, nodes in each of the two legs.
    nodes: int = 3
    # First three octets of the node addresses: node N is <net>.N.
    net: str = DEFAULT_NET
    # sshd port on every node; None means 22 where free, else a free port picked per node.
    ssh_port: int | None = None
    # The addresses below are ADDR:PORT on loopback, or None: chosen at `lab up` (see the module).
    frontend: str | None = None
    store: str | None = None
    app: str = "hello"
    app_port: int = 8000
    # A published release installed on every node at creation, as if baked into the VM image.
    seed: str | None = None
    # Blue-green: two legs (blue = the first ``nodes`` nodes, green = the next ``nodes``), each
    # its own HAProxy backend; live traffic goes to the leg a runtime-API map names, and the
    # ``preview`` frontend reaches the other (idle) leg.
    legs: bool = False
    preview: str | None = None
    # HAProxy's Prometheus exporter (always on), and a Prometheus server scraping it, if asked.
    metrics: str | None = None
    prometheus: bool = False
    prometheus_address: str | None = None
    # lab: everything as root, HAProxy beside the controller. production: a deploy user with
    # limited sudo, HAProxy on a host of its own reached over SSH, nodes' shell start-up files in
    # place, nodes pulling the store over HTTP only (see _production.py).
    topology: str = "lab"
    # Seconds of soak analysis in the lab's deployer.yml (after the canary batch, or after the
    # blue-green switch); 0 leaves analysis out.
    soak: float = 12.0
    # The environment's name in the lab's deployer.yml.
    env: str = "lab"
    # The directory of another lab whose artefact store (and release key) this lab uses: one
    # store for the environments of a path-to-live lab (``store`` is then that lab's address,
    # and this lab runs no store of its own).
    shared_store: str | None = None

    def __post_init__(self) -> None:
        if self.topology not in ("lab", "production"):
            raise UsageError(f"--topology: must be lab or production (got {self.topology!r})")
        if not 1 <= self.total_nodes <= self.max_nodes:
            most = self.max_nodes // 2 if self.legs else self.max_nodes
            raise UsageError(
                f"--nodes: must be between 1 and {most}{' per leg' if self.legs else ''} "
                f"(got {self.nodes})"
            )
        parts = self.net.split(".")
        if len(parts) != 3 or not all(p.isdigit() and int(p) < 256 for p in parts):
            raise UsageError(f"--net: {self.net!r} must be three octets such as 127.0.1")
        _loopback(f"{self.net}.1", what="--net")
        if self.ssh_port is not None and not 0 < self.ssh_port < 65536:
            raise UsageError(f"--ssh-port: must be between 1 and 65535 (got {self.ssh_port})")
        if not 0 < self.app_port < 65536:
            raise UsageError(f"app port: must be between 1 and 65535 (got {self.app_port})")
        if not _APP_NAME.match(self.app):
            raise UsageError(
                f"--app: {self.app!r} must be lower-case letters, digits, '-' or '_', "
                "starting with a letter"
            )
        if self.prometheus_address is not None and not self.prometheus:
            raise UsageError("--prometheus-address: only with --prometheus")
        addresses = {
            _FLAGS[f]: split_address(value, what=_FLAGS[f])
            for f, value in self._bound().items() if value is not None
        }
        seen: dict[tuple[str, int], str] = {}
        for flag, address in addresses.items():
            if address in seen:
                raise UsageError(f"{seen[address]} and {flag} must differ (both {address[0]}:{address[1]})")
            seen[address] = flag
        if self.seed is not None:
            validate_version(self.seed, where="--seed")
        if not 0 <= self.soak <= 3600:
            raise UsageError(f"--soak: must be between 0 and 3600 seconds (got {self.soak:g})")
        if not _APP_NAME.match(self.env):
            raise UsageError(
                f"environment name {self.env!r} must be lower-case letters, digits, '-' or '_', "
                "starting with a letter"
            )
        if self.shared_store is not None and self.store is None:
            raise ValueError("a lab sharing another's store is given that store's address")

    def _bound(self) -> dict[str, str | None]:
        """The address fields this lab binds, with their values (None: not chosen yet)."""
        bound = {"frontend": self.frontend, "metrics": self.metrics}
        if self.shared_store is None:
            bound["store"] = self.store
        if self.legs:
            bound["preview"] = self.preview
        if self.prometheus:
            bound["prometheus_address"] = self.prometheus_address
        return bound

    @property
    def unchosen(self) -> list[str]:
        """The address fields this lab binds that are not chosen yet."""
        return [f for f, value in self._bound().items() if value is None]

    def with_ports_of(self, recorded: LabSpec) -> LabSpec:
        """This spec with each address it leaves unchosen taken from ``recorded`` (the same
        lab's earlier `up`), so a later `lab up` without flags keeps, or repairs, what runs."""
        taken = {f: getattr(recorded, f) for f in self.unchosen if getattr(recorded, f) is not None}
        return replace(self, **taken) if taken else self

    def with_ports(self, *, defaults: bool, pick: PortPicker) -> LabSpec:
        """This spec with every address still unchosen chosen: the documented defaults for the
        default lab (``defaults``), else free ports on 127.0.0.1 from ``pick``, none of them a
        port given for another of its addresses."""
        missing = self.unchosen
        if not missing:
            return self
        chosen: dict[str, Any]
        if defaults:
            chosen = {f: DEFAULT_PORTS[f] for f in missing}
        else:
            given = {split_address(v, what=_FLAGS[f])[1] for f, v in self._bound().items() if v}
            ports = pick(len(missing), given)
            chosen = {f: f"127.0.0.1:{port}" for f, port in zip(missing, ports, strict=True)}
        return replace(self, **chosen)

    @staticmethod
    def _chosen(value: str | None, flag: str) -> tuple[str, int]:
        if value is None:
            # A bug, not bad input: every address is chosen before anything binds it.
            raise ValueError(f"{flag}: no address chosen yet (LabSpec.with_ports chooses them)")
        return split_address(value, what=flag)

    @property
    def production(self) -> bool:
        return self.topology == "production"

    @property
    def max_nodes(self) -> int:
        # The production topology keeps <net>.250 for its load-balancer host.
        return 249 if self.production else MAX_NODES

    @property
    def lb_address(self) -> str:
        """The load-balancer host's address (production topology)."""
        return f"{self.net}.250"

    @property
    def total_nodes(self) -> int:
        return self.nodes * 2 if self.legs else self.nodes

    def node_name(self, index: int) -> str:
        return f"node{index}"

    def leg_of(self, index: int) -> str | None:
        """``blue`` or ``green`` for node ``index`` of a blue-green lab, else None."""
        if not self.legs:
            return None
        return "blue" if index <= self.nodes else "green"

    def backend(self, leg: str | None) -> str:
        """The HAProxy backend of a leg (or of the whole fleet)."""
        return f"{self.app}_{leg}" if leg else self.app

    def leg_group(self, leg: str) -> str:
        """The inventory group of a leg's nodes."""
        return f"{self.app}_{leg}"

    def node_address(self, index: int) -> str:
        return f"{self.net}.{index}"

    @property
    def frontend_address(self) -> tuple[str, int]:
        return self._chosen(self.frontend, "--frontend")

    @property
    def store_address(self) -> tuple[str, int]:
        return self._chosen(self.store, "--store")

    @property
    def preview_address(self) -> tuple[str, int]:
        return self._chosen(self.preview, "--preview")

    @property
    def metrics_address(self) -> tuple[str, int]:
        return self._chosen(self.metrics, "--metrics")

    @property
    def prometheus_listen(self) -> tuple[str, int] | None:
        """Where the lab's Prometheus listens, or None without one."""
        return self._chosen(self.prometheus_address, "--prometheus-address") if self.prometheus else None

    @property
    def group(self) -> str:
        """The inventory group of the nodes."""
        return f"{self.app}_nodes"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabSpec:
        data = dict(data)
        if isinstance(data.get("prometheus"), str):
            # Recorded before the address had a field of its own: "prometheus" held it.
            data["prometheus"], data["prometheus_address"] = True, data["prometheus"]
        elif data.get("prometheus") is None:
            data["prometheus"] = False
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def shape(self) -> dict[str, Any]:
        """Everything but the seed and the soak (which only the config file carries): a running
        lab cannot change these without `lab down`."""
        data = self.to_dict()
        data.pop("seed")
        data.pop("soak")
        # An address the lab does not bind is no part of its shape.
        if not self.legs:
            data.pop("preview")
        if not self.prometheus:
            data.pop("prometheus_address")
        return data
