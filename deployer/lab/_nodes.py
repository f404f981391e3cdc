"""The lab's nodes: start each one (an sshd in its own mount + UTS namespace, then its
supervisord), adopt what already runs, and stop exactly the node's own processes.

Every process of a node lives in the node's cgroup (see ``_cgroup.py``): its sshd enters it
before exec, SSH sessions and supervisord's children inherit it, and supervisord is started
through the same launcher. Stopping a node signals what is in that cgroup — never "whatever
now holds the node's old namespace number", which the kernel gives to the next namespace made
on the machine, quite possibly another lab's node.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._errors import LabError
from ._cgroup import Cgroup
from ._procs import (
    ProcessRef,
    mount_namespace_of,
    port_accepts,
    port_is_free,
    stop_processes,
    wait_until,
)
from ._render import NodeLayout, sshd_config
from ._spec import LabSpec
from ._state import NodeState
from ._sys import START_TIMEOUT, SYSTEM_ENV, atomic_write, tail

__all__ = ["NodeProcesses"]


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=15)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host: object) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self._path)


def _supervisor_rpc(socket_path: Path) -> xmlrpc.client.ServerProxy:
    """supervisord's XML-RPC interface on its unix socket (what supervisorctl talks to)."""
    return xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(socket_path))


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class NodeProcesses:
    """Starts, adopts and stops the processes of one lab's nodes.

    ``lab_cgroup`` is the lab's own cgroup; node N lives in its child ``nodeN``. ``launcher``
    and ``init_script`` are the lab's ``bin/in-cgroup`` and ``bin/node-init``."""

    def __init__(
        self, *, lab_dir: Path, lab_cgroup: Cgroup | None, launcher: Path, init_script: Path,
        authorized_keys: Path,
        host_setup: Callable[[NodeState], list[tuple[Path, str]]] | None = None,
    ) -> None:
        # host_setup: the production-like topology's per-host files, as bind mounts; hosts then
        # keep their shell start-up files and accept the deploy user's own key.
        self._host_setup = host_setup
        self._lab_dir = lab_dir
        self._lab_cgroup = lab_cgroup
        self._launcher = launcher
        self._init_script = init_script
        self._authorized_keys = authorized_keys

    def layout(self, node: NodeState) -> NodeLayout:
        return NodeLayout(
            name=node.name, address=node.address, ssh_port=node.ssh_port,
            root=self._lab_dir / "nodes" / node.name,
        )

    def cgroup_of(self, node: NodeState) -> Cgroup | None:
        if node.cgroup is None or self._lab_cgroup is None:
            return None
        return Cgroup(self._lab_cgroup.root, node.cgroup)

    # -- stopping -------------------------------------------------------------------------

    def stop(self, nodes: list[NodeState]) -> None:
        """Stop every process of ``nodes`` (sshd, SSH sessions, supervisord, the application)
        and forget them. Touches nothing outside the nodes' own cgroups."""
        for node in nodes:
            cgroup = self.cgroup_of(node)
            if cgroup is not None:
                cgroup.stop()
            elif node.mount_namespace is not None or node.sshd is not None:
                self._stop_recorded(node)
            node.sshd = None
            node.supervisord = None
            node.mount_namespace = None

    def crash(self, node: NodeState) -> None:
        """SIGKILL every process of ``node`` at once, as if its VM lost power. The lab's record
        is kept, so `lab up` repairs the node afterwards."""
        cgroup = self.cgroup_of(node)
        if cgroup is None:
            raise LabError(f"node {node.name} has no cgroup: it was not started by this lab")
        cgroup.kill()
        if not wait_until(lambda: not cgroup.populated(), timeout=10):
            raise LabError(f"node {node.name}: processes survived SIGKILL: {cgroup.pids()}")

    @staticmethod
    def _stop_recorded(node: NodeState) -> None:
        """A node recorded before nodes had cgroups: stop its recorded processes, and the rest
        of its mount namespace only while that namespace is provably still the node's."""
        refs = [r for r in (node.sshd, node.supervisord) if r is not None and r.alive()]
        pinned: int | None = None
        for ref in refs:
            with contextlib.suppress(OSError):
                fd = os.open(f"/proc/{ref.pid}/ns/mnt", os.O_RDONLY)
                # The open descriptor keeps the namespace (and so its number) from being
                # recycled; the process still alive after opening proves it was the node's.
                if ref.alive() and f"mnt:[{os.fstat(fd).st_ino}]" == node.mount_namespace:
                    pinned = fd
                    break
                os.close(fd)
        try:
            pids = {r.pid for r in refs}
            if pinned is not None and node.mount_namespace != mount_namespace_of(os.getpid()):
                for entry in os.listdir("/proc"):
                    if entry.isdigit() and mount_namespace_of(int(entry)) == node.mount_namespace:
                        pids.add(int(entry))
            pids.discard(os.getpid())
            left = stop_processes(sorted(pids))
        finally:
            if pinned is not None:
                os.close(pinned)
        if left:
            raise LabError(f"node {node.name}: processes would not stop: {left}")

    # -- starting -------------------------------------------------------------------------

    def assign_ports(self, spec: LabSpec, nodes: list[NodeState]) -> None:
        """Pick each node's sshd port, and refuse when its application port is taken (another
        lab on the same addresses, most likely)."""
        for node in nodes:
            if not port_is_free(node.address, spec.app_port):
                raise LabError(
                    f"{node.address}:{spec.app_port} (node {node.name}'s application port) is "
                    "already in use, probably by another lab on the same --net",
                    hint="pass another --net, e.g. --net 127.0.2",
                )
            wanted = spec.ssh_port or node.ssh_port or 22
            if port_is_free(node.address, wanted):
                node.ssh_port = wanted
            elif spec.ssh_port is not None:
                raise LabError(
                    f"{node.address}:{wanted} is already in use (node {node.name})",
                    hint="pass another --ssh-port, or leave it out to let the lab pick",
                )
            else:
                node.ssh_port = _free_port(node.address)

    def ensure_host_keys(self, nodes: list[NodeState]) -> None:
        missing = []
        for node in nodes:
            layout = self.layout(node)
            layout.root.mkdir(parents=True, exist_ok=True)
            if not layout.host_key.is_file():
                layout.host_key.with_suffix(".pub").unlink(missing_ok=True)
                missing.append(layout.host_key)
        procs = [
            subprocess.Popen(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.parent.name,
                 "-f", str(key)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=SYSTEM_ENV,
            )
            for key in missing
        ]
        for key, proc in zip(missing, procs, strict=True):
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise LabError(f"ssh-keygen failed for {key}: {err.decode(errors='replace').strip()}")

    def write_known_hosts(self, nodes: list[NodeState], path: Path) -> None:
        lines = []
        for node in nodes:
            key_type, key = self.layout(node).host_key.with_suffix(".pub").read_text().split()[:2]
            host = node.address if node.ssh_port == 22 else f"[{node.address}]:{node.ssh_port}"
            lines.append(f"{host} {key_type} {key}\n")
        atomic_write(path, "".join(lines))

    def start(self, spec: LabSpec, nodes: list[NodeState]) -> None:
        """Start each node's sshd in a fresh mount + UTS namespace and a fresh cgroup."""
        assert self._lab_cgroup is not None
        own_namespace = mount_namespace_of(os.getpid())
        started: list[tuple[NodeState, subprocess.Popen[bytes], Path]] = []
        for node in nodes:
            cgroup = self._lab_cgroup.child(node.name)
            cgroup.stop()  # an earlier life of this node left in its cgroup, if any
            cgroup.create()
            node.cgroup = cgroup.name
            layout = self.layout(node)
            binds: list[str] = []
            for host_dir, point in layout.binds(spec.app):
                host_dir.mkdir(parents=True, exist_ok=True)
                binds += [str(host_dir), point]
            if self._host_setup is not None:
                for host_path, point in self._host_setup(node):
                    binds += [str(host_path), point]
            else:
                for empty, point in layout.masked_files():
                    empty.touch()
                    binds += [str(empty), point]
            atomic_write(layout.sshd_config, sshd_config(
                layout, authorized_keys=self._authorized_keys,
                user_keys=self._host_setup is not None,
            ))
            log_path = layout.root / "node.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [str(self._launcher), str(cgroup.procs_file),
                     "unshare", "--mount", "--uts", "--propagation", "private",
                     str(self._init_script), node.name, str(layout.sshd_config), *binds],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, env=SYSTEM_ENV, cwd="/",
                )
            node.sshd = ProcessRef.of(proc.pid)
            node.supervisord = None
            started.append((node, proc, log_path))

        def ready() -> bool:
            for node, proc, log_path in started:
                if proc.poll() is not None:
                    raise LabError(
                        f"node {node.name}: sshd exited (code {proc.returncode}): {tail(log_path)}"
                    )
            return all(port_accepts_ssh(n) for n, _, _ in started)

        if not wait_until(ready, timeout=START_TIMEOUT, interval=0.05):
            slow = [n.name for n, _, _ in started if not port_accepts_ssh(n)]
            raise LabError(f"nodes did not start listening in {START_TIMEOUT:.0f} s: {', '.join(slow)}")
        for node, proc, _ in started:
            own_cgroup = self.cgroup_of(node)
            namespace = mount_namespace_of(proc.pid)
            if (
                namespace is None or namespace == own_namespace
                or own_cgroup is None or not own_cgroup.contains(proc.pid)
            ):
                raise LabError(
                    f"node {node.name}: sshd is not in a mount namespace and cgroup of its own"
                )

    def _supervisord_pidfile(self, node: NodeState) -> Path:
        assert node.sshd is not None
        # The node's private /run, seen through its sshd.
        return Path(f"/proc/{node.sshd.pid}/root/run/supervisord.pid")

    def _node_process(self, node: NodeState, pid: int) -> ProcessRef | None:
        """``pid`` as a process of ``node`` (alive, in its cgroup), or None."""
        cgroup = self.cgroup_of(node)
        ref = ProcessRef.of(pid)
        if ref is None or not ref.alive() or cgroup is None or not cgroup.contains(pid):
            return None
        return ref

    def _read_supervisord(self, node: NodeState) -> ProcessRef | None:
        try:
            pid = int(self._supervisord_pidfile(node).read_text().strip())
        except (OSError, ValueError):
            return None
        return self._node_process(node, pid)

    def _running_supervisord(self, node: NodeState) -> ProcessRef | None:
        """A supervisord already running in the node (one an interrupted `up` started but
        never recorded), so it is adopted rather than joined by a second one."""
        found = self._read_supervisord(node)
        if found is not None:
            return found
        cgroup = self.cgroup_of(node)
        candidates = [
            ref for pid in (cgroup.pids() if cgroup else [])
            if any(arg.endswith("supervisord") for arg in _cmdline(pid)[:2])
            and (ref := self._node_process(node, pid)) is not None
        ]
        return min(candidates, key=lambda r: r.start_time) if candidates else None

    def start_supervisords(self, nodes: list[NodeState]) -> None:
        """Make sure each node runs exactly one supervisord: keep or adopt a running one,
        start one where none runs."""
        waiting: list[NodeState] = []
        procs = []
        for node in nodes:
            if node.supervisord and node.supervisord.alive():
                continue
            self._check_sshd_alive(node)
            assert node.sshd is not None
            node.supervisord = self._running_supervisord(node)
            if node.supervisord is not None:
                continue
            cgroup = self.cgroup_of(node)
            assert cgroup is not None
            self._supervisord_pidfile(node).unlink(missing_ok=True)
            procs.append(
                subprocess.Popen(
                    [str(self._launcher), str(cgroup.procs_file),
                     "nsenter", f"--target={node.sshd.pid}", "--mount", "--uts", "--",
                     "/usr/bin/supervisord", "-c", "/etc/supervisor/supervisord.conf"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    env=SYSTEM_ENV, cwd="/",
                )
            )
            waiting.append(node)
        for node, proc in zip(waiting, procs, strict=True):
            _, err = proc.communicate(timeout=START_TIMEOUT)
            if proc.returncode != 0:
                raise LabError(
                    f"node {node.name}: supervisord did not start: "
                    f"{err.decode(errors='replace').strip()}"
                )

        def ready() -> bool:
            for node in waiting:
                if node.supervisord is not None:
                    continue
                self._check_sshd_alive(node)
                node.supervisord = self._read_supervisord(node)
            return all(n.supervisord is not None for n in waiting)

        if not wait_until(ready, timeout=START_TIMEOUT, interval=0.05):
            slow = [n.name for n in waiting if n.supervisord is None]
            raise LabError(
                f"supervisord did not write its pidfile in {START_TIMEOUT:.0f} s on: {', '.join(slow)}",
                hint="see /var/log/supervisor/supervisord.log inside the node "
                "(<lab>/nodes/<node>/supervisor-log)",
            )

    def _check_sshd_alive(self, node: NodeState) -> None:
        # supervisord is reached through the sshd (its namespace and /run): without it, say so
        # rather than wait for a pidfile that can no longer be read.
        if node.sshd is None or not node.sshd.alive():
            raise LabError(
                f"{node.name}'s sshd died while waiting for supervisord to start",
                hint=f"see {self.layout(node).root / 'node.log'}; `deployer lab up` restarts the node",
            )

    def supervisor_update(self, node: NodeState, app: str) -> None:
        """Make a running supervisord pick up a changed program file (`supervisorctl update`)."""
        assert node.sshd is not None
        rpc: Any = _supervisor_rpc(Path(f"/proc/{node.sshd.pid}/root/run/supervisor.sock"))
        try:
            added, changed, removed = rpc.supervisor.reloadConfig()[0]
            for name in [*changed, *removed]:
                rpc.supervisor.stopProcessGroup(name)
                rpc.supervisor.removeProcessGroup(name)
            for name in [*added, *changed]:
                rpc.supervisor.addProcessGroup(name)
        except (OSError, xmlrpc.client.Error) as exc:
            raise LabError(
                f"node {node.name}: supervisord did not load the {app} program: {exc}"
            ) from None


def port_accepts_ssh(node: NodeState) -> bool:
    return port_accepts(node.address, node.ssh_port, timeout=0.2)
