"""What to do about a node that failed, for the hint after an error: an SSH host key to record,
an SSH key the node refused."""

from __future__ import annotations

from collections.abc import Iterable

from ..adapters.inventory import Node
from ..adapters.ssh_masters import auth_hint, host_key_hint, is_auth_failure, is_host_key_failure

__all__ = ["ssh_fix"]


def ssh_fix(reasons: Iterable[tuple[Node, str]]) -> str | None:
    """How to fix the first node that failed on its SSH host key and the first whose SSH key
    was refused (None if no node did either)."""
    fixes: dict[str, str] = {}
    for node, reason in reasons:
        if is_host_key_failure(reason):
            fixes.setdefault(
                "host key", f"{node.name}: {host_key_hint(node.address, node.ssh_port, node.known_hosts)}"
            )
        elif is_auth_failure(reason):
            fixes.setdefault("auth", f"{node.name}: " + auth_hint(
                node.address, node.ssh_port, node.user, node.private_key, reason=reason))
    return "; ".join(fixes.values()) or None
