"""The faults a game day injects, each undoable from a record of it alone.

A fault is injected over SSH with the inventory's connection settings (:class:`Reach`), or on
the controller itself (its own nftables table, a file of the store it serves, the load
balancer's socket when it is local). Before a fault is injected its record goes into the
:class:`~deployer.gameday._ledger.FaultLedger`; :meth:`Fault.undo` needs nothing but that
record, so a fault left by a game day that was killed is undone by the next one, or by
``deployer gameday cleanup``. Every undo may run twice: it checks before it changes anything.

==================  =========================================================================
``app``             the application's fault file on a node (unhealthy, errors, crash)
``cut``             an nftables table of the game day's own dropping every packet to a node
``lb_api``          the load balancer's runtime socket moved aside (its API gone), then back
``tamper``          a release's tarball in the store changed after publishing, then restored
``disk_full``       a full filesystem over the node's releases directory, then unmounted
``pointer``         the environment's pointer written (a new version asked of its runner),
                    then given back what it held
``clock``           the clock the governance gates read, in the game day's own process, moved
                    to a window's end or past an approval's expiry, then put back (nothing is
                    left of it once that process is gone)
==================  =========================================================================
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .._clock import iso_utc
from .._errors import DeployerError, PrerequisiteError
from ..adapters.inventory import Node, load_nodes, ssh_target
from ..adapters.remote_shell import RemoteShell
from ..adapters.ssh import SshTarget
from ..agent import Desired, Pointer, pointer_from
from ..config import BlueGreenStrategy, EnvironmentConfig
from ._governance import GatesClock

__all__ = ["FAULT_KINDS", "AppFault", "ClockMoved", "CutNode", "DiskFull", "Fault", "LbApiGone",
           "PointerMoved", "Reach", "TamperArtefact", "fault_from_record"]

# The name every nftables table of a game day starts with (the rest is random: its own).
NFT_PREFIX = "deployer_gameday_"
# The source name of a game day's full filesystem, as /proc/self/mountinfo shows it.
MOUNT_SOURCE = "deployer-gameday"


class Reach:
    """How a game day reaches an environment's hosts: SSH as the inventory says (paramiko),
    one connection per host, closed by :meth:`close`."""

    def __init__(self, env: EnvironmentConfig) -> None:
        self.env = env
        self._shells: dict[str, RemoteShell] = {}
        self._nodes: dict[str, Node] | None = None

    @property
    def nodes(self) -> dict[str, Node]:
        """Every node of the environment (both legs of a blue-green one), by name."""
        if self._nodes is None:
            groups = ([leg.group for leg in self.env.strategy.legs.values()]
                      if isinstance(self.env.strategy, BlueGreenStrategy) else [self.env.group])
            self._nodes = {n.name: n for g in groups for n in load_nodes(self.env.inventory, g)}
        return self._nodes

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def by_server(self, server: str) -> str:
        """The node behind a load-balancer server name."""
        return next((n.name for n in self.nodes.values() if n.lb_server == server), server)

    def target(self, host: str) -> SshTarget:
        target = ssh_target(self.env.inventory, host)
        return target or SshTarget(host=host, address=host, local=True)

    def run(self, host: str, command: str, *, stdin: str | None = None, what: str) -> str:
        """Run ``command`` on ``host`` (over SSH, or here for a host Ansible runs locally);
        raise with ``what`` failed when it does not exit 0."""
        target = self.target(host)
        if target.local:
            argv = target.argv(["/bin/sh", "-c", command])
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60,
                                  check=False)
            status, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            shell = self._shells.get(host)
            if shell is None:
                shell = self._shells[host] = RemoteShell(target)
            result = shell.run(command, stdin=stdin)
            status, out, err = result.status, result.stdout, result.stderr
        if status != 0:
            raise DeployerError(f"{what} on {host}: {(err or out).strip() or f'exit {status}'}")
        return out

    def close(self) -> None:
        for shell in self._shells.values():
            shell.close()
        self._shells.clear()


class Fault(ABC):
    """One fault: what it is (``describe``), putting it in place, and undoing it."""

    kind: ClassVar[str]

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def inject(self, reach: Reach) -> None: ...

    @abstractmethod
    def undo(self, reach: Reach) -> None:
        """Undo the fault; nothing to do when it is not (or no longer) in place."""

    @abstractmethod
    def record(self) -> dict[str, Any]:
        """What :meth:`undo` needs, as JSON (the ledger keeps it)."""


class AppFault(Fault):
    """The application's fault file on a node: ``unhealthy``, ``errors`` or ``crash``, for one
    release (see examples/hello-service). Undone by putting back what the file held."""

    kind = "app"

    def __init__(self, node: str, path: str, words: str, previous: str | None = None) -> None:
        self.node, self.path, self.words, self.previous = node, path, words, previous

    def describe(self) -> str:
        return f"`{self.words}` in {self.path} on {self.node}"

    def inject(self, reach: Reach) -> None:
        path = shlex.quote(self.path)
        # What the file held, if anything, so that undoing puts it back (not just removes it).
        held = reach.run(self.node, f"if [ -f {path} ]; then cat {path}; else printf '\\001'; fi",
                         what="reading the fault file")
        self.previous = None if held == "\x01" else held
        reach.run(self.node, f"cat > {path}.gameday && mv {path}.gameday {path}",
                  stdin=self.words + "\n", what="writing the fault file")

    def undo(self, reach: Reach) -> None:
        path = shlex.quote(self.path)
        if self.previous is None:
            reach.run(self.node, f"rm -f {path} {path}.gameday", what="removing the fault file")
        else:
            reach.run(self.node, f"cat > {path}.gameday && mv {path}.gameday {path}",
                      stdin=self.previous, what="restoring the fault file")

    def record(self) -> dict[str, Any]:
        return {"node": self.node, "path": self.path, "words": self.words,
                "previous": self.previous}


def _nft(script: str, *, what: str) -> None:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not os.access(nft, os.X_OK):
        raise PrerequisiteError("cutting a node's network needs nftables (the `nft` command)",
                                hint="apt-get install -y nftables (scripts/bootstrap.sh does)")
    proc = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True,
                          timeout=30, check=False)
    if proc.returncode != 0:
        raise DeployerError(f"{what}: nft: {proc.stderr.strip() or proc.returncode}")


def _addresses(hosts: list[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    found: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError as exc:
            raise DeployerError(f"cannot resolve {host}: {exc}") from None
        for info in infos:
            addr = ipaddress.ip_address(info[4][0])
            found[str(addr)] = addr
    return list(found.values())


class CutNode(Fault):
    """Every packet from this machine to a node dropped (an nftables table of the game day's
    own, on the output hook): its SSH sessions, health checks and traffic time out, as when a
    VM's network goes. Undone by deleting that table, and only that one."""

    kind = "cut"

    def __init__(self, node: str, addresses: list[str], table: str | None = None) -> None:
        self.node, self.addresses = node, addresses
        self.table = table or f"{NFT_PREFIX}{secrets.token_hex(4)}"

    @classmethod
    def of(cls, node: Node) -> CutNode:
        hosts = list(dict.fromkeys([node.address, node.app_host]))
        return cls(node.name, [str(a) for a in _addresses(hosts)])

    def describe(self) -> str:
        return f"{self.node}'s network cut ({', '.join(self.addresses)} dropped by nftables table " \
               f"inet {self.table})"

    def inject(self, reach: Reach) -> None:
        rules = "\n".join(
            f"    {'ip6' if ipaddress.ip_address(a).version == 6 else 'ip'} daddr {a} drop"
            for a in self.addresses)
        _nft(f"table inet {self.table} {{\n  chain output {{\n"
             f"    type filter hook output priority 0; policy accept;\n{rules}\n  }}\n}}\n",
             what=f"cutting {self.node}'s network")

    def undo(self, reach: Reach) -> None:
        if not self.table.startswith(NFT_PREFIX):  # never a table the game day did not make
            raise DeployerError(f"refusing to delete nftables table {self.table!r}: not a game day's")
        nft = shutil.which("nft") or "/usr/sbin/nft"
        listed = subprocess.run([nft, "list", "table", "inet", self.table], capture_output=True,
                                text=True, timeout=30, check=False)
        if listed.returncode != 0:
            return  # gone already
        _nft(f"delete table inet {self.table}\n", what=f"restoring {self.node}'s network")

    def record(self) -> dict[str, Any]:
        return {"node": self.node, "addresses": self.addresses, "table": self.table}


class LbApiGone(Fault):
    """The load balancer's runtime API unavailable: its socket moved aside (HAProxy keeps
    serving traffic; nothing can read or change it). Undone by moving it back."""

    kind = "lb_api"

    def __init__(self, socket_path: str, host: str | None = None, aside: str | None = None) -> None:
        self.socket, self.host = socket_path, host
        self.aside = aside or f"{socket_path}.gameday-{secrets.token_hex(3)}"

    def describe(self) -> str:
        where = f" on {self.host}" if self.host else ""
        return f"the load balancer's runtime API gone (its socket {self.socket}{where} moved aside)"

    def _move(self, reach: Reach, src: str, dst: str, *, what: str) -> None:
        if self.host is None:
            if os.path.lexists(src) and not os.path.lexists(dst):
                os.rename(src, dst)
            return
        a, b = shlex.quote(src), shlex.quote(dst)
        reach.run(self.host, f"if [ -e {a} ] && [ ! -e {b} ]; then mv {a} {b}; fi", what=what)

    def inject(self, reach: Reach) -> None:
        if self.socket.startswith("tcp://"):
            raise DeployerError("the load balancer's API is a tcp:// address: moving it aside is "
                                "not supported")
        self._move(reach, self.socket, self.aside, what="moving the runtime socket aside")

    def undo(self, reach: Reach) -> None:
        self._move(reach, self.aside, self.socket, what="moving the runtime socket back")

    def record(self) -> dict[str, Any]:
        return {"socket": self.socket, "host": self.host, "aside": self.aside}


class TamperArtefact(Fault):
    """A release's tarball in the store changed after it was signed and published (one byte
    flipped, the size kept). Undone by putting the published bytes back (kept beside the
    ledger)."""

    kind = "tamper"

    def __init__(self, path: str, backup: str) -> None:
        self.path, self.backup = path, backup

    def describe(self) -> str:
        return f"{Path(self.path).name} changed in the store after publishing (one byte flipped)"

    def inject(self, reach: Reach) -> None:
        data = bytearray(Path(self.path).read_bytes())
        if not Path(self.backup).exists():
            shutil.copy2(self.path, self.backup)
        data[len(data) // 2] ^= 0xFF
        tmp = Path(f"{self.path}.gameday")
        tmp.write_bytes(bytes(data))
        os.chmod(tmp, Path(self.backup).stat().st_mode & 0o777)
        os.replace(tmp, self.path)

    def undo(self, reach: Reach) -> None:
        if Path(self.backup).exists():
            os.replace(self.backup, self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}.gameday")

    def record(self) -> dict[str, Any]:
        return {"path": self.path, "backup": self.backup}


# Run on the node, as root, after `dir=...` and `source=...`: a tmpfs over the releases
# directory holding a copy of what is there (so `current` and `previous` still resolve), then
# shrunk to exactly what that copy uses: the next release unpacked there finds no room. In the
# node's own mount namespace (its SSH session's), never the machine's disk.
_OURS = """ours() {
  awk -v d="$dir" -v s="$source" \
    '$5 == d && index($0, " - tmpfs " s " ") { found = 1 } END { exit !found }' /proc/self/mountinfo
}
"""
_FILL = _OURS + """set -eu
[ -d "$dir" ]
if ours; then exit 0; fi
keep=$(mktemp -d "/run/$source.XXXXXX")
mount --bind "$dir" "$keep"
mount -t tmpfs -o size=256m,mode=0755 "$source" "$dir"
cp -a "$keep/." "$dir/"
umount "$keep"; rmdir "$keep"
used=$(df -k --output=used "$dir" | tail -1 | tr -d ' ')
mount -o "remount,size=$(( used > 4 ? used : 4 ))k" "$dir"
"""
_EMPTY = _OURS + """set -eu
while ours; do umount "$dir" 2>/dev/null || umount -l "$dir"; done
"""


class DiskFull(Fault):
    """The filesystem holding a node's releases full: a size-limited tmpfs mounted over the
    releases directory inside the node (with what was there copied in), so unpacking a new
    release fails for lack of space. Undone by unmounting it: the directory as it was appears
    again."""

    kind = "disk_full"

    def __init__(self, node: str, releases_dir: str) -> None:
        self.node, self.dir = node, releases_dir

    def describe(self) -> str:
        return f"{self.node}'s {self.dir} full (a tmpfs of the size of what it holds, mounted over it)"

    def _script(self, text: str) -> str:
        return f"dir={shlex.quote(self.dir)}; source={MOUNT_SOURCE}\n{text}"

    def inject(self, reach: Reach) -> None:
        reach.run(self.node, self._script(_FILL), what=f"filling {self.dir}")

    def undo(self, reach: Reach) -> None:
        reach.run(self.node, self._script(_EMPTY), what=f"emptying {self.dir}")

    def record(self) -> dict[str, Any]:
        return {"node": self.node, "releases_dir": self.dir}


class PointerMoved(Fault):
    """The environment's pointer written: its runner is asked for ``version`` (as by
    ``deployer pointer set``). What the pointer held, and what will be written, are known
    before anything is recorded, so undoing gives back what it held; an undo leaves alone a
    pointer someone else has written since."""

    kind = "pointer"

    def __init__(self, where: str, version: str, wrote: str, previous: str | None) -> None:
        self.where, self.version, self.wrote, self.previous = where, version, wrote, previous

    @classmethod
    def of(cls, reach: Reach, version: str, reason: str) -> PointerMoved:
        pointer = _pointer(reach, None)
        held = pointer.read()
        desired = Desired(version=version, reason=reason, requester="deployer gameday",
                          set_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return cls(pointer.where, version, desired.to_text(),
                   held.text if held is not None else None)

    def describe(self) -> str:
        return f"the pointer {self.where} set to {self.version}"

    def inject(self, reach: Reach) -> None:
        _pointer(reach, self.where).write(self.wrote)

    def undo(self, reach: Reach) -> None:
        pointer = _pointer(reach, self.where)
        held = pointer.read()
        if held is None or held.text.strip() != self.wrote.strip():
            return  # never written, given back already, or written since by someone else
        # Nothing was there: an empty value, which asks for no version.
        pointer.write(self.previous if self.previous is not None else "")

    def record(self) -> dict[str, Any]:
        return {"where": self.where, "version": self.version, "wrote": self.wrote,
                "previous": self.previous}


def _pointer(reach: Reach, where: str | None) -> Pointer:
    """The environment's pointer (the one at ``where``: refused if the config names another)."""
    if reach.env.pointer is None:
        raise DeployerError("the environment has no pointer (no `pointer:` section)")
    pointer = pointer_from(reach.env.pointer)
    if where is not None and pointer.where != where:
        raise DeployerError(f"the environment's pointer is now {pointer.where}, not {where}: "
                            "give that one back by hand")
    return pointer


class ClockMoved(Fault):
    """The clock the governance gates read moved to ``to`` (``what``: why that time); the
    controller's own clock untouched. It lives in the game day's process (``clock``): a record
    read back after that process died has nothing left to undo."""

    kind = "clock"

    def __init__(self, to: float, what: str, clock: GatesClock | None = None) -> None:
        self.to, self.what, self.clock = to, what, clock

    def describe(self) -> str:
        return f"the clock the gates read moved to {iso_utc(self.to)} ({self.what})"

    def inject(self, reach: Reach) -> None:
        if self.clock is None:
            raise DeployerError("no clock to move: the gates' clock lives in the game day's process")
        self.clock.move_to(self.to)

    def undo(self, reach: Reach) -> None:
        if self.clock is not None:
            self.clock.reset()

    def record(self) -> dict[str, Any]:
        return {"to": self.to, "what": self.what}


FAULT_KINDS: dict[str, type[Fault]] = {
    cls.kind: cls for cls in (AppFault, CutNode, LbApiGone, TamperArtefact, DiskFull, PointerMoved,
                              ClockMoved)
}


def fault_from_record(kind: str, record: Mapping[str, Any]) -> Fault:
    """The fault a ledger entry describes (to undo it)."""
    if kind == "app":
        return AppFault(record["node"], record["path"], record["words"], record.get("previous"))
    if kind == "cut":
        return CutNode(record["node"], list(record["addresses"]), record["table"])
    if kind == "lb_api":
        return LbApiGone(record["socket"], record.get("host"), record["aside"])
    if kind == "tamper":
        return TamperArtefact(record["path"], record["backup"])
    if kind == "disk_full":
        return DiskFull(record["node"], record["releases_dir"])
    if kind == "pointer":
        return PointerMoved(record["where"], record["version"], record["wrote"],
                            record.get("previous"))
    if kind == "clock":
        return ClockMoved(float(record["to"]), str(record["what"]))
    raise DeployerError(f"unknown fault kind {kind!r} in the game day's ledger")
