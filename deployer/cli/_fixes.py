"""What to do about a node that failed, for the hint after an error: an SSH host key to record,
an SSH key the node refused, a release the nodes could not download."""

from __future__ import annotations

from collections.abc import Iterable

from ..adapters.inventory import Node
from ..adapters.ssh_masters import auth_hint, host_key_hint, is_auth_failure, is_host_key_failure
from ..config import EnvironmentConfig

__all__ = ["download_fix", "ssh_fix"]


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


# The release module's words when a node cannot fetch the tarball.
_DOWNLOAD_FAILED = "cannot download "


def download_fix(env: EnvironmentConfig, reasons: Iterable[tuple[Node, str]]) -> str | None:
    """Where the nodes download releases from, when one could not (None if none failed so)."""
    failed = next((node for node, reason in reasons if _DOWNLOAD_FAILED in reason), None)
    if failed is None:
        return None
    url = env.store.url
    if env.store.node_url:
        where = f"store.node_url ({env.store.node_url})"
    elif url.startswith("file://"):
        return (f"the nodes read a file:// store ({url}) as a path on themselves: set "
                "store.node_url to an HTTP(S) URL serving that directory, which the nodes reach")
    elif url.startswith("s3://"):
        where = f"presigned URLs of the store (store.url: {url}), from the S3 endpoint"
    else:
        where = (f"the store's URL (store.url: {url}; set store.node_url when the nodes reach "
                 "the store at another address)")
    return (f"the nodes download releases from {where}: check that the URL above answers "
            f"from a node, e.g. with 'curl -sI URL' on {failed.name}")
