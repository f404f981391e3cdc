"""Read the nodes of an environment from its Ansible inventory (any format Ansible reads)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from .._errors import ConfigError
from .ssh import SshTarget
from .ssh_masters import known_hosts_file

__all__ = ["Node", "load_nodes", "ssh_target"]


@dataclass(frozen=True)
class Node:
    name: str  # the inventory hostname
    address: str  # ansible_host
    app_host: str  # the address the app listens on and is checked on
    lb_server: str  # the server's name in the load balancer
    # How SSH reaches the node, for hints: its port (ansible_port), the known_hosts file the
    # inventory names (UserKnownHostsFile in its ansible_ssh_*_args), the user and the private
    # key (ansible_user, ansible_ssh_private_key_file), when it sets them.
    ssh_port: int | None = None
    known_hosts: str | None = None
    user: str | None = None
    private_key: str | None = None


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
                user=_first(merged, "ansible_user", "ansible_ssh_user"),
                private_key=_first(merged, "ansible_ssh_private_key_file", "ansible_private_key_file"),
            )
        )
    return nodes


def _first(variables: dict[str, object], *names: str) -> str | None:
    """The first of ``names`` set (and not empty) in ``variables``, as a string."""
    for name in names:
        value = variables.get(name)
        if value not in (None, ""):
            return str(value)
    return None


_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def ssh_target(inventory: Path, host: str) -> SshTarget | None:
    """How Ansible would reach ``host`` over SSH, from the inventory's connection variables
    (address, port, user, key, SSH arguments, interpreter, become); None when it runs ``host``'s
    tasks on this machine (``localhost`` or ``ansible_connection: local``)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.template import Templar
        from ansible.vars.manager import VariableManager

    loader = DataLoader()
    try:
        manager = InventoryManager(loader=loader, sources=[str(inventory)])
    except Exception as exc:  # Ansible raises many kinds here; all mean a bad inventory
        raise ConfigError(f"cannot read inventory: {exc}", file=str(inventory)) from None
    known = manager.get_host(host)
    if known is None:
        if host in _LOCAL_NAMES:
            return None
        return SshTarget(host=host, address=host)
    variables = VariableManager(loader=loader, inventory=manager).get_vars(host=known)
    templar = Templar(loader=loader, variables=variables)

    def var(*names: str) -> str | None:
        for name in names:
            value = variables.get(name)
            if value is not None:
                value = templar.template(value)
                return None if value in ("", None) else str(value)
        return None

    connection = var("ansible_connection") or "ssh"
    if connection in ("local", "ansible.builtin.local") or (
        host in _LOCAL_NAMES and "ansible_host" not in variables
    ):
        return None
    if connection not in ("ssh", "smart", "ansible.builtin.ssh", "paramiko", "paramiko_ssh"):
        raise ConfigError(
            f"host {host!r} uses the {connection!r} connection; deployer reads the load balancer "
            "over SSH only", file=str(inventory),
            hint="use an SSH connection for the load-balancer host, or a tcp:// socket address",
        )
    become = (var("ansible_become") or "").lower() in ("true", "yes", "1", "on")
    python = var("ansible_python_interpreter") or "python3"
    port = var("ansible_port", "ansible_ssh_port")
    return SshTarget(
        host=host,
        address=var("ansible_host", "ansible_ssh_host") or host,
        port=int(port) if port else None,
        user=var("ansible_user", "ansible_ssh_user"),
        private_key=var("ansible_ssh_private_key_file", "ansible_private_key_file"),
        ssh_args=tuple(
            shlex.split(var("ansible_ssh_common_args") or "")
            + shlex.split(var("ansible_ssh_extra_args") or "")
        ),
        python="python3" if python.startswith("auto") else python,
        become_user=(var("ansible_become_user") or "root") if become else None,
        ssh=var("ansible_ssh_executable") or "ssh",
        connect_timeout=int(var("ansible_ssh_timeout", "ansible_timeout") or 10),
    )
