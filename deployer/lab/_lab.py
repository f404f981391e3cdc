"""The local lab: a VM-like fleet on one machine.

Each node is an sshd in its own mount + UTS namespace on its own loopback address, with private
``/opt/<app>``, ``/etc/<app>``, ``/var/log/<app>``, supervisord directories and ``/run``, plus a
supervisord of its own. HAProxy fronts the nodes, nginx serves the artefact store. Everything the
lab starts is recorded (PID and start time) in ``<lab>/lab.json`` so ``up`` can be repeated and
``down`` stops exactly what was started.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import DeployerError, LabError, PrerequisiteError
from ._procs import (
    ProcessRef,
    mount_namespace_of,
    port_accepts,
    port_is_free,
    stop_processes,
    wait_until,
)
from ._render import (
    NodeLayout,
    deployer_config,
    haproxy_config,
    inventory,
    nginx_config,
    node_init_script,
    program_file,
    sshd_config,
)
from ._spec import LabSpec

__all__ = ["SAMPLE_RELEASES", "Lab", "LabState", "LabStatus", "NodeState", "NodeStatus"]

# The sample service's releases published by `lab up`: (version, variant).
SAMPLE_RELEASES: tuple[tuple[str, str], ...] = (
    ("1.0.0", "good"),
    ("1.1.0", "good"),
    ("1.2.0-badhealth", "badhealth"),
    ("1.3.0-errors", "errors"),
)

# Commands the lab runs, and the Debian package that provides each.
_REQUIRED_COMMANDS = {
    "/usr/sbin/sshd": "openssh-server",
    "/usr/bin/ssh-keygen": "openssh-client",
    "/usr/sbin/haproxy": "haproxy",
    "/usr/sbin/nginx": "nginx-light",
    "/usr/bin/supervisord": "supervisor",
    "/usr/bin/supervisorctl": "supervisor",
    "/usr/bin/unshare": "util-linux",
    "/usr/bin/nsenter": "util-linux",
    "/usr/bin/hostname": "hostname",
    "/usr/bin/python3": "python3",
}
# Processes the lab starts get a plain system environment, not the caller's (e.g. a venv).
_SYSTEM_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
_START_TIMEOUT = 20.0
_SEED_TIMEOUT = 30.0
# Longest unix socket path the kernel accepts (sun_path is 108 bytes, NUL included).
_MAX_SOCKET_PATH = 107


# Written last into releases/<version> by the release role; marks a complete, verified stage.
RELEASE_MARKER = ".deployer-release.json"


@dataclass
class NodeState:
    """A running (or recorded) lab node."""

    name: str
    address: str
    ssh_port: int
    sshd: ProcessRef | None = None
    # Identity of the node's mount namespace: every process in it belongs to the node.
    mount_namespace: str | None = None
    supervisord: ProcessRef | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "ssh_port": self.ssh_port,
            "sshd": self.sshd.to_dict() if self.sshd else None,
            "mount_namespace": self.mount_namespace,
            "supervisord": self.supervisord.to_dict() if self.supervisord else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeState:
        return cls(
            name=data["name"],
            address=data["address"],
            ssh_port=int(data["ssh_port"]),
            sshd=ProcessRef.from_dict(data["sshd"]) if data.get("sshd") else None,
            mount_namespace=data.get("mount_namespace"),
            supervisord=ProcessRef.from_dict(data["supervisord"]) if data.get("supervisord") else None,
        )


@dataclass
class LabState:
    """What ``lab up`` built: the spec, the nodes and the shared services."""

    dir: Path
    spec: LabSpec
    nodes: list[NodeState] = field(default_factory=list)
    haproxy: ProcessRef | None = None
    nginx: ProcessRef | None = None
    release_key: str | None = None
    release_public_key: str | None = None
    published: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "spec": self.spec.to_dict(),
            "nodes": [n.to_dict() for n in self.nodes],
            "haproxy": self.haproxy.to_dict() if self.haproxy else None,
            "nginx": self.nginx.to_dict() if self.nginx else None,
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
            release_key=data.get("release_key"),
            release_public_key=data.get("release_public_key"),
            published=list(data.get("published", [])),
        )

    def processes(self) -> list[ProcessRef]:
        refs = [self.haproxy, self.nginx]
        for node in self.nodes:
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
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
        }


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "the lab needs root (it creates mount namespaces and binds node addresses): "
            "run it as root, e.g. `sudo deployer lab up`"
        )
    missing = sorted({pkg for cmd, pkg in _REQUIRED_COMMANDS.items() if not os.access(cmd, os.X_OK)})
    if missing:
        raise PrerequisiteError(
            f"the lab needs these Debian packages: {', '.join(missing)}",
            hint=f"run scripts/bootstrap.sh, or `apt-get install -y {' '.join(missing)}`",
        )


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _http_status(url: str, *, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def _run(argv: list[str], *, what: str, timeout: float = 60.0) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=_SYSTEM_ENV, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{what} failed (exit {proc.returncode}): {' | '.join(detail[-3:])}")
    return proc.stdout


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


def _examples_dir() -> Path:
    from .._resources import examples_dir

    return examples_dir()


class Lab:
    """A lab fleet kept in one directory. ``up`` builds or repairs it, ``down`` removes it."""

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir).absolute()

    # -- where things live -------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / "lab.json"

    @property
    def config_path(self) -> Path:
        return self.dir / "deployer.yml"

    @property
    def inventory_path(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def store_dir(self) -> Path:
        return self.dir / "store"

    @property
    def keys_dir(self) -> Path:
        return self.dir / "keys"

    @property
    def haproxy_socket(self) -> Path:
        return self.dir / "haproxy" / "admin.sock"

    @property
    def store_url(self) -> str:
        host, port = self._recorded_spec().store_address
        return f"http://{host}:{port}/"

    @property
    def frontend_url(self) -> str:
        host, port = self._recorded_spec().frontend_address
        return f"http://{host}:{port}/"

    @property
    def private_key(self) -> Path:
        return self.keys_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.keys_dir / "known_hosts"

    def _recorded_spec(self) -> LabSpec:
        state = self._load_state()
        if state is None:
            raise LabError(f"no lab in {self.dir}", hint="run `deployer lab up` first")
        return state.spec

    def _node_layout(self, node: NodeState) -> NodeLayout:
        return NodeLayout(
            name=node.name, address=node.address, ssh_port=node.ssh_port,
            root=self.dir / "nodes" / node.name,
        )

    # -- state -------------------------------------------------------------------------------

    def _load_state(self) -> LabState | None:
        try:
            raw = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LabError(f"cannot read the lab state {self.state_path}: {exc}") from None
        try:
            return LabState.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError, DeployerError) as exc:
            raise LabError(
                f"the lab state {self.state_path} is damaged ({exc})",
                hint=f"stop the lab's processes by hand, then remove {self.dir}",
            ) from None

    def _save_state(self, state: LabState) -> None:
        _atomic_write(self.state_path, json.dumps(state.to_dict(), indent=2) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up` or `down` at a time per lab directory."""
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- up ----------------------------------------------------------------------------------

    def up(self, spec: LabSpec) -> LabState:
        """Build the lab described by ``spec``, or restart whatever part of it has died."""
        _check_prerequisites()
        if len(str(self.haproxy_socket)) > _MAX_SOCKET_PATH:
            raise LabError(
                f"the lab directory {self.dir} is too deep for a unix socket path: "
                "pass a shorter --dir"
            )
        if str(self.dir).startswith("/run/") or self.dir == Path("/run"):
            raise LabError(f"the lab directory cannot be under /run (got {self.dir}): nodes hide it")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LabError(f"cannot create the lab directory {self.dir}: {exc}") from None
        with self._locked():
            state = self._prepare_state(spec)
            try:
                self._up(state)
            finally:
                self._save_state(state)
            return state

    def _prepare_state(self, spec: LabSpec) -> LabState:
        old = self._load_state()
        if old is not None and old.spec.shape() != spec.shape():
            if any(ref.alive() for ref in old.processes()):
                changed = sorted(k for k, v in spec.shape().items() if old.spec.shape()[k] != v)
                raise LabError(
                    f"a lab with other settings ({', '.join(changed)}) runs in {self.dir}",
                    hint="run `deployer lab down` first, or pass another --dir",
                )
            self._stop(old)
            old = None
        state = old or LabState(dir=self.dir, spec=spec)
        state.spec = spec
        for sub in ("nodes", "haproxy", "nginx/tmp", "keys", "store", "bin"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if not state.nodes:
            state.nodes = [
                NodeState(name=spec.node_name(i), address=spec.node_address(i), ssh_port=0)
                for i in range(1, spec.nodes + 1)
            ]
        return state

    def _up(self, state: LabState) -> None:
        spec = state.spec
        self._check_service_ports(state)
        self._ensure_ssh_keys()
        self._create_mount_points(state)
        init_script = self.dir / "bin" / "node-init"
        _atomic_write(init_script, node_init_script(), mode=0o755)

        self._ensure_release_key(state)
        self._publish_samples(state)
        for node in state.nodes:
            for host_dir, _ in self._node_layout(node).binds(spec.app):
                host_dir.mkdir(parents=True, exist_ok=True)
        # Seeded files are in place before supervisord starts, so it starts the app itself.
        seeded = self._install_seed(state, spec.seed) if spec.seed is not None else []

        to_start = [n for n in state.nodes if not (n.sshd and n.sshd.alive())]
        self._assign_ssh_ports(state, to_start)
        self._ensure_host_keys(state.nodes)
        self._write_known_hosts(state.nodes)
        self._start_nodes(state, to_start, init_script)
        self._save_state(state)
        running = [n for n in seeded if n.supervisord and n.supervisord.alive()]
        self._start_supervisords(state)
        self._save_state(state)
        for node in running:
            self._supervisor_update(node, spec.app)

        layouts = [self._node_layout(n) for n in state.nodes]
        if not (state.haproxy and state.haproxy.alive()):
            state.haproxy = self._start_haproxy(spec, layouts)
        if not (state.nginx and state.nginx.alive()):
            state.nginx = self._start_nginx(spec)
        self._save_state(state)

        _atomic_write(
            self.inventory_path,
            inventory(spec, layouts, private_key=self.private_key, known_hosts=self.known_hosts),
        )
        assert state.release_public_key is not None
        _atomic_write(
            self.config_path,
            deployer_config(
                spec,
                inventory_path=Path(self.inventory_path.name),
                store_url=f"http://{spec.store}/",
                trusted_key=Path(state.release_public_key).relative_to(self.dir),
                haproxy_socket=self.haproxy_socket,
            ),
        )
        if spec.seed is not None:
            self._wait_seeded(state, spec.seed)

    def _check_service_ports(self, state: LabState) -> None:
        checks = []
        if not (state.haproxy and state.haproxy.alive()):
            checks.append(("--frontend", state.spec.frontend_address))
        if not (state.nginx and state.nginx.alive()):
            checks.append(("--store", state.spec.store_address))
        for flag, (host, port) in checks:
            if not port_is_free(host, port):
                raise LabError(
                    f"{host}:{port} is already in use by another program",
                    hint=f"pass {flag} ADDR:PORT with a free port",
                )

    def _ensure_ssh_keys(self) -> None:
        if not self.private_key.is_file():
            for stale in (self.private_key, self.private_key.with_suffix(".pub")):
                stale.unlink(missing_ok=True)
            _run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer-lab",
                 "-f", str(self.private_key)],
                what="ssh-keygen (lab login key)",
            )
        public = self.private_key.with_suffix(".pub").read_text()
        _atomic_write(self.keys_dir / "authorized_keys", public, mode=0o600)

    def _ensure_host_keys(self, nodes: list[NodeState]) -> None:
        missing = []
        for node in nodes:
            layout = self._node_layout(node)
            layout.root.mkdir(parents=True, exist_ok=True)
            if not layout.host_key.is_file():
                layout.host_key.with_suffix(".pub").unlink(missing_ok=True)
                missing.append(layout.host_key)
        procs = [
            subprocess.Popen(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.parent.name,
                 "-f", str(key)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=_SYSTEM_ENV,
            )
            for key in missing
        ]
        for key, proc in zip(missing, procs, strict=True):
            _, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise LabError(f"ssh-keygen failed for {key}: {err.decode(errors='replace').strip()}")

    def _write_known_hosts(self, nodes: list[NodeState]) -> None:
        lines = []
        for node in nodes:
            key_type, key = self._node_layout(node).host_key.with_suffix(".pub").read_text().split()[:2]
            host = node.address if node.ssh_port == 22 else f"[{node.address}]:{node.ssh_port}"
            lines.append(f"{host} {key_type} {key}\n")
        _atomic_write(self.known_hosts, "".join(lines))

    def _create_mount_points(self, state: LabState) -> None:
        # Bind mounts need a directory to land on; on the host they stay empty, and `down`
        # leaves them: removing one would detach the mounts of any other lab's nodes.
        app = state.spec.app
        for point in (f"/opt/{app}", f"/etc/{app}", f"/var/log/{app}",
                      "/etc/supervisor/conf.d", "/var/log/supervisor"):
            os.makedirs(point, exist_ok=True)

    def _assign_ssh_ports(self, state: LabState, nodes: list[NodeState]) -> None:
        for node in nodes:
            wanted = state.spec.ssh_port or node.ssh_port or 22
            if port_is_free(node.address, wanted):
                node.ssh_port = wanted
            elif state.spec.ssh_port is not None:
                raise LabError(
                    f"{node.address}:{wanted} is already in use (node {node.name})",
                    hint="pass another --ssh-port, or leave it out to let the lab pick",
                )
            else:
                node.ssh_port = self._free_port(node.address)

    @staticmethod
    def _free_port(host: str) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])

    def _start_nodes(self, state: LabState, nodes: list[NodeState], init_script: Path) -> None:
        own_namespace = mount_namespace_of(os.getpid())
        started: list[tuple[NodeState, subprocess.Popen[bytes], Path]] = []
        for node in nodes:
            self._stop_node(node)  # whatever is left of an earlier life of this node
            layout = self._node_layout(node)
            binds: list[str] = []
            for host_dir, point in layout.binds(state.spec.app):
                host_dir.mkdir(parents=True, exist_ok=True)
                binds += [str(host_dir), point]
            for empty, point in layout.masked_files():
                empty.touch()
                binds += [str(empty), point]
            _atomic_write(
                layout.sshd_config,
                sshd_config(layout, authorized_keys=self.keys_dir / "authorized_keys"),
            )
            log_path = layout.root / "node.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    ["unshare", "--mount", "--uts", "--propagation", "private",
                     str(init_script), node.name, str(layout.sshd_config), *binds],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, env=_SYSTEM_ENV, cwd="/",
                )
            node.sshd = ProcessRef.of(proc.pid)
            node.mount_namespace = None
            node.supervisord = None
            started.append((node, proc, log_path))

        def ready() -> bool:
            for node, proc, log_path in started:
                if proc.poll() is not None:
                    raise LabError(
                        f"node {node.name}: sshd exited (code {proc.returncode}): {_tail(log_path)}"
                    )
            return all(port_accepts(n.address, n.ssh_port, timeout=0.2) for n, _, _ in started)

        if not wait_until(ready, timeout=_START_TIMEOUT, interval=0.05):
            slow = [n.name for n, _, _ in started if not port_accepts(n.address, n.ssh_port)]
            raise LabError(f"nodes did not start listening in {_START_TIMEOUT:.0f} s: {', '.join(slow)}")
        for node, proc, _ in started:
            namespace = mount_namespace_of(proc.pid)
            if namespace is None or namespace == own_namespace:
                raise LabError(f"node {node.name}: sshd is not in a mount namespace of its own")
            node.mount_namespace = namespace

    def _supervisord_pidfile(self, node: NodeState) -> Path:
        assert node.sshd is not None
        # The node's private /run, seen through its sshd.
        return Path(f"/proc/{node.sshd.pid}/root/run/supervisord.pid")

    def _read_supervisord(self, node: NodeState) -> ProcessRef | None:
        try:
            pid = int(self._supervisord_pidfile(node).read_text().strip())
        except (OSError, ValueError):
            return None
        ref = ProcessRef.of(pid)
        if ref is None or not ref.alive() or mount_namespace_of(pid) != node.mount_namespace:
            return None
        return ref

    def _start_supervisords(self, state: LabState) -> None:
        waiting: list[NodeState] = []
        procs = []
        for node in state.nodes:
            if node.supervisord and node.supervisord.alive():
                continue
            assert node.sshd is not None
            node.supervisord = None
            self._supervisord_pidfile(node).unlink(missing_ok=True)
            procs.append(
                subprocess.Popen(
                    ["nsenter", f"--target={node.sshd.pid}", "--mount", "--uts", "--",
                     "/usr/bin/supervisord", "-c", "/etc/supervisor/supervisord.conf"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    env=_SYSTEM_ENV, cwd="/",
                )
            )
            waiting.append(node)
        for node, proc in zip(waiting, procs, strict=True):
            _, err = proc.communicate(timeout=_START_TIMEOUT)
            if proc.returncode != 0:
                raise LabError(
                    f"node {node.name}: supervisord did not start: "
                    f"{err.decode(errors='replace').strip()}"
                )

        def ready() -> bool:
            for node in waiting:
                if node.supervisord is None:
                    node.supervisord = self._read_supervisord(node)
            return all(n.supervisord is not None for n in waiting)

        if not wait_until(ready, timeout=_START_TIMEOUT, interval=0.05):
            slow = [n.name for n in waiting if n.supervisord is None]
            raise LabError(
                f"supervisord wrote no pidfile in {_START_TIMEOUT:.0f} s on: {', '.join(slow)}",
                hint="see /var/log/supervisor/supervisord.log inside the node "
                "(<lab>/nodes/<node>/supervisor-log)",
            )

    def _start_haproxy(self, spec: LabSpec, nodes: list[NodeLayout]) -> ProcessRef:
        work = self.dir / "haproxy"
        config = work / "haproxy.cfg"
        _atomic_write(config, haproxy_config(spec, nodes, admin_socket=self.haproxy_socket))
        self.haproxy_socket.unlink(missing_ok=True)
        _run(["haproxy", "-c", "-q", "-f", str(config)], what=f"checking {config}")
        log_path = work / "haproxy.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=_SYSTEM_ENV, cwd=str(work),
            )
        host, port = spec.frontend_address
        self._wait_started(
            proc, "HAProxy", log_path,
            lambda: self.haproxy_socket.exists() and port_accepts(host, port, timeout=0.2),
        )
        ref = ProcessRef.of(proc.pid)
        assert ref is not None
        return ref

    def _start_nginx(self, spec: LabSpec) -> ProcessRef:
        work = self.dir / "nginx"
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (work / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        config = work / "nginx.conf"
        _atomic_write(config, nginx_config(spec, store_dir=self.store_dir, work_dir=work))
        log_path = work / "nginx.out"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                ["nginx", "-e", str(work / "error.log"), "-p", str(work), "-c", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=_SYSTEM_ENV, cwd=str(work),
            )
        host, port = spec.store_address
        self._wait_started(proc, "nginx", work / "error.log", lambda: port_accepts(host, port, timeout=0.2))
        ref = ProcessRef.of(proc.pid)
        assert ref is not None
        return ref

    @staticmethod
    def _wait_started(
        proc: subprocess.Popen[bytes], what: str, log_path: Path, ready: Callable[[], bool]
    ) -> None:
        def check() -> bool:
            if proc.poll() is not None:
                raise LabError(f"{what} exited at start (code {proc.returncode}): {_tail(log_path)}")
            return bool(ready())

        if not wait_until(check, timeout=_START_TIMEOUT):
            stop_processes([proc.pid])
            raise LabError(f"{what} did not get ready in {_START_TIMEOUT:.0f} s: {_tail(log_path)}")

    # -- releases ----------------------------------------------------------------------------

    def _ensure_release_key(self, state: LabState) -> None:
        if (
            state.release_key and Path(state.release_key).is_file()
            and state.release_public_key and Path(state.release_public_key).is_file()
        ):
            return
        from ..artefacts import generate_keypair

        pair = generate_keypair(self.keys_dir, "release", force=True)
        # Releases signed by an earlier key would no longer verify: publish them again.
        shutil.rmtree(self.store_dir, ignore_errors=True)
        self.store_dir.mkdir()
        state.release_key = str(pair.secret_path)
        state.release_public_key = str(pair.public_path)
        state.published = []

    def _publish_samples(self, state: LabState) -> None:
        from ..artefacts import build_artefact, open_store, sign_manifest

        app = state.spec.app
        todo = [
            (v, variant) for v, variant in SAMPLE_RELEASES
            if not (self.store_dir / app / v / "manifest.json.minisig").is_file()
        ]
        state.published = [v for v, _ in SAMPLE_RELEASES if (v, _) not in todo]
        if not todo:
            return
        build_script = _examples_dir() / "build.py"
        if not build_script.is_file():
            raise LabError(
                f"the sample service is missing: {build_script} not found",
                hint="reinstall deployer from its wheel, or set DEPLOYER_CONTENT_DIR to a directory"
                " holding examples/hello-service",
            )
        assert state.release_key is not None
        store = open_store(f"file://{self.store_dir}")
        with tempfile.TemporaryDirectory(dir=self.dir, prefix=".build-") as tmp:
            for version, variant in todo:
                src = Path(tmp) / f"src-{version}"
                _run(
                    [sys.executable, str(build_script), "--version", version,
                     "--variant", variant, "--out", str(src)],
                    what=f"building the sample service {version}",
                )
                built = build_artefact(
                    src, app=app, version=version, out_dir=Path(tmp) / f"artefact-{version}"
                )
                sign_manifest(built.manifest_path, Path(state.release_key))
                store.publish(built.dir)
                state.published.append(version)

    def _install_seed(self, state: LabState, version: str) -> list[NodeState]:
        """Install release ``version`` on every node that has none yet; return those nodes."""
        app = state.spec.app
        tarball = self.store_dir / app / version / f"{app}-{version}.tar.gz"
        if not tarball.is_file():
            raise LabError(
                f"--seed {version}: no such release of {app} in the lab store {self.store_dir}",
                hint=f"published: {', '.join(state.published) or 'none'}",
            )
        to_seed = [
            n for n in state.nodes
            if not os.path.lexists(self._node_layout(n).root / "opt" / "current")
        ]
        if to_seed:
            data = tarball.read_bytes()
            # The same completeness marker the release role writes, so the role can later
            # switch back to this release without downloading it again.
            marker = json.dumps(
                {"version": version, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            ) + "\n"
            with tempfile.TemporaryDirectory(dir=self.dir, prefix=".seed-") as tmp:
                release = self._unpack(tarball, Path(tmp))
                (release / RELEASE_MARKER).write_text(marker)
                for node in to_seed:
                    self._install_release(state, node, release, version)
        return to_seed

    def _wait_seeded(self, state: LabState, version: str) -> None:
        spec = state.spec

        def healthy() -> bool:
            return all(
                _http_status(f"http://{n.address}:{spec.app_port}/health", timeout=0.5) == 200
                for n in state.nodes
            )

        if not wait_until(healthy, timeout=_SEED_TIMEOUT, interval=0.2):
            raise LabError(
                f"--seed {version}: the app did not become healthy on every node in "
                f"{_SEED_TIMEOUT:.0f} s",
                hint=f"see {self.dir}/nodes/<node>/log/app.log",
            )
        self._wait_lb_up(state)

    @staticmethod
    def _unpack(tarball: Path, into: Path) -> Path:
        with tarfile.open(tarball) as tar:
            tar.extractall(into, filter="data")
        if (into / "bin" / "run").is_file():
            return into
        children = [p for p in into.iterdir() if p.is_dir()]
        if len(children) == 1 and (children[0] / "bin" / "run").is_file():
            return children[0]
        raise LabError(f"{tarball}: the release has no bin/run entry point")

    def _install_release(self, state: LabState, node: NodeState, release: Path, version: str) -> None:
        app = state.spec.app
        layout = self._node_layout(node)
        target = layout.root / "opt" / "releases" / version
        if not target.exists():
            staging = target.with_name(f".{version}.tmp")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(release, staging, symlinks=True)
            os.replace(staging, target)
        link = layout.root / "opt" / ".current.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(f"/opt/{app}/releases/{version}")
        os.replace(link, layout.root / "opt" / "current")
        _atomic_write(
            layout.root / "supervisor-conf.d" / f"{app}.conf",
            program_file(state.spec, address=node.address, version=version),
        )

    def _supervisor_update(self, node: NodeState, app: str) -> None:
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

    def _lb_states(self, spec: LabSpec) -> dict[str, str]:
        from ..adapters.haproxy import HAProxyRuntime

        servers = HAProxyRuntime(str(self.haproxy_socket), timeout=2.0).servers(spec.app)
        return {name: server.label for name, server in servers.items()}

    def _wait_lb_up(self, state: LabState) -> None:
        names = {n.name for n in state.nodes}

        def all_up() -> bool:
            try:
                states = self._lb_states(state.spec)
            except DeployerError:
                return False
            return all(states.get(name, "").startswith("UP") for name in names)

        if not wait_until(all_up, timeout=_SEED_TIMEOUT, interval=0.1):
            raise LabError(f"HAProxy did not report every node UP in {_SEED_TIMEOUT:.0f} s")

    # -- down --------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything the lab started and remove its files. Safe to repeat."""
        _check_prerequisites()
        if not self.dir.is_dir():
            return
        with self._locked():
            state = self._load_state()
            if state is not None:
                self._stop(state)
            self._remove_files()
        (self.dir / ".lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def _stop(self, state: LabState) -> None:
        services = [r.pid for r in (state.haproxy, state.nginx) if r is not None and r.alive()]
        left = stop_processes(services)
        left += self._stop_nodes(state.nodes)
        if left:
            raise LabError(f"these lab processes would not stop: {', '.join(map(str, left))}")
        listening = [(n.address, n.ssh_port) for n in state.nodes if n.ssh_port]
        wait_until(lambda: all(port_is_free(a, p) for a, p in listening), timeout=5)
        busy = [f"{a}:{p}" for a, p in listening if not port_is_free(a, p)]
        if busy:
            raise LabError(f"lab addresses still in use after stopping: {', '.join(busy)}")

    def _stop_node(self, node: NodeState) -> None:
        left = self._stop_nodes([node])
        if left:
            raise LabError(f"node {node.name}: processes would not stop: {left}")

    @staticmethod
    def _stop_nodes(nodes: list[NodeState]) -> list[int]:
        """Stop every process of ``nodes``: their sshd, and everything in their namespaces
        (supervisord, the app, SSH sessions kept open by ControlPersist clients)."""
        own = {mount_namespace_of(os.getpid()), mount_namespace_of(1)}
        namespaces = {n.mount_namespace for n in nodes if n.mount_namespace} - own
        left: list[int] = []
        for _ in range(3):  # supervisord may respawn a child between scans
            pids = {
                ref.pid for n in nodes for ref in (n.sshd, n.supervisord)
                if ref is not None and ref.alive()
            }
            if namespaces:
                for entry in os.listdir("/proc"):
                    if entry.isdigit() and mount_namespace_of(int(entry)) in namespaces:
                        pids.add(int(entry))
            pids.discard(os.getpid())
            if not pids:
                return []
            left = stop_processes(sorted(pids))
        return left

    def _remove_files(self) -> None:
        for name in ("nodes", "haproxy", "nginx", "keys", "store", "bin", "state"):
            shutil.rmtree(self.dir / name, ignore_errors=True)
        for path in (self.state_path, self.config_path, self.inventory_path):
            path.unlink(missing_ok=True)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> LabStatus:
        """What runs, what each node serves, and where the lab keeps its files."""
        state = self._load_state()
        if state is None:
            return LabStatus(
                dir=self.dir, exists=False, nodes=[], haproxy_up=False, store_up=False,
                config_path=self.config_path, inventory_path=self.inventory_path,
                store_dir=self.store_dir, store_url=None, frontend_url=None,
                haproxy_socket=self.haproxy_socket, keys_dir=self.keys_dir, published=[],
            )
        spec = state.spec
        haproxy_up = bool(state.haproxy and state.haproxy.alive())
        lb_states: dict[str, str] = {}
        if haproxy_up:
            with contextlib.suppress(DeployerError):
                lb_states = self._lb_states(spec)

        def node_status(node: NodeState) -> NodeStatus:
            current = self._node_layout(node).root / "opt" / "current"
            try:
                version: str | None = Path(os.readlink(current)).name
            except OSError:
                version = None
            sshd_up = bool(node.sshd and node.sshd.alive()) and port_accepts(
                node.address, node.ssh_port
            )
            health = _http_status(f"http://{node.address}:{spec.app_port}/health", timeout=1.0)
            return NodeStatus(
                name=node.name, address=node.address, ssh_port=node.ssh_port, sshd_up=sshd_up,
                supervisord_up=bool(node.supervisord and node.supervisord.alive()),
                app_version=version, app_healthy=health == 200, lb_state=lb_states.get(node.name),
            )

        with ThreadPoolExecutor(max_workers=16) as pool:
            nodes = list(pool.map(node_status, state.nodes))
        store_host, store_port = spec.store_address
        front_host, front_port = spec.frontend_address
        return LabStatus(
            dir=self.dir, exists=True, nodes=nodes, haproxy_up=haproxy_up,
            store_up=bool(state.nginx and state.nginx.alive())
            and port_accepts(store_host, store_port),
            config_path=self.config_path, inventory_path=self.inventory_path,
            store_dir=self.store_dir, store_url=f"http://{store_host}:{store_port}/",
            frontend_url=f"http://{front_host}:{front_port}/",
            haproxy_socket=self.haproxy_socket, keys_dir=self.keys_dir, published=state.published,
        )
