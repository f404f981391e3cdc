"""What a lab should look like (:class:`LabSpec`), validated on construction."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import Any

from .._errors import UsageError
from .._versions import validate_version

__all__ = ["MAX_NODES", "LabSpec", "split_address"]

# Node N lives on <net>.N; .255 is kept out of the range.
MAX_NODES = 254
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

    nodes: int = 3
    # First three octets of the node addresses: node N is <net>.N.
    net: str = "127.0.1"
    # sshd port on every node; None means 22 where free, else a free port picked per node.
    ssh_port: int | None = None
    frontend: str = "127.0.0.1:8080"
    store: str = "127.0.0.1:8081"
    app: str = "hello"
    app_port: int = 8000
    # A published release installed on every node at creation, as if baked into the VM image.
    seed: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= MAX_NODES:
            raise UsageError(f"--nodes: must be between 1 and {MAX_NODES} (got {self.nodes})")
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
        frontend = split_address(self.frontend, what="--frontend")
        store = split_address(self.store, what="--store")
        if frontend == store:
            raise UsageError(f"--frontend and --store must differ (both {self.frontend})")
        if self.seed is not None:
            validate_version(self.seed, where="--seed")

    def node_name(self, index: int) -> str:
        return f"node{index}"

    def node_address(self, index: int) -> str:
        return f"{self.net}.{index}"

    @property
    def frontend_address(self) -> tuple[str, int]:
        return split_address(self.frontend, what="--frontend")

    @property
    def store_address(self) -> tuple[str, int]:
        return split_address(self.store, what="--store")

    @property
    def group(self) -> str:
        """The inventory group of the nodes."""
        return f"{self.app}_nodes"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def shape(self) -> dict[str, Any]:
        """Everything but the seed: a running lab cannot change these without `lab down`."""
        data = self.to_dict()
        data.pop("seed")
        return data
