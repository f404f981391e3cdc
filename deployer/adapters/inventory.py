"""Read the nodes of an environment from its Ansible inventory (any format Ansible reads)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._errors import ConfigError
from .ssh import known_hosts_file

__all__ = ["Node", "load_nodes"]


@dataclass(frozen=True)
class Node:
    name: str  # the inventory hostname
    address: str  # ansible_host
    app_host: str  # the address the app listens on and is checked on
    lb_server: str  # the server's name in the load balancer
    # How SSH reaches the node, for hints: its port (ansible_port) and the known_hosts file the
    # inventory names (UserKnownHostsFile in its ansible_ssh_*_args), when it sets them.
    ssh_port: int | None = None
    known_hosts: str | None = None


def load_nodes(inventory: Path, group: str) -> list[Node]:
    """The hosts of ``group`` in inventory order, with the variables deployer relies on."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ansible.inventory.helpers import get_group_vars
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.utils.display import Display

    Display().verbosity = 0
    try:
        manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
    except Exception as exc:  # Ansible raises many kinds here; all mean a bad inventory
        raise ConfigError(f"cannot read inventory: {exc}", file=str(inventory)) from None
    if group != "all" and group not in manager.groups:
        known = ", ".join(sorted(g for g in manager.groups if g not in ("all", "ungrouped")))
        raise ConfigError(
            f"inventory has no group {group!r} (groups: {known or 'none'})",
            file=str(inventory), field="group",
        )
    hosts = manager.get_hosts(pattern=group)
    if not hosts:
        raise ConfigError(f"group {group!r} has no hosts", file=str(inventory))
    nodes = []
    for host in hosts:
        hv = host.get_vars()
        address = str(hv.get("ansible_host", host.name))
        merged = {**get_group_vars(host.get_groups()), **hv}  # SSH settings are often per group
        port = merged.get("ansible_port", merged.get("ansible_ssh_port"))
        nodes.append(
            Node(
                name=host.name,
                address=address,
                app_host=str(hv.get("deployer_app_host", address)),
                lb_server=str(hv.get("deployer_lb_server", host.name)),
                ssh_port=int(str(port)) if str(port).isdigit() else None,
                known_hosts=known_hosts_file(merged),
            )
        )
    return nodes
