"""The local lab: a VM-like fleet on one machine.

Each node is an sshd in its own mount + UTS namespace on its own loopback address, with private
``/opt/<app>``, ``/etc/<app>``, ``/var/log/<app>``, supervisord directories and ``/run``, plus a
supervisord of its own (``_nodes.py``). HAProxy fronts the nodes, nginx serves the artefact store
(``_services.py``). Everything the lab starts runs in the lab's own cgroup, one per node
(``_cgroup.py``), and is recorded in ``<lab>/lab.json`` (``_state.py``), so ``up`` can be repeated
and ``down`` stops exactly what this lab started — never another lab's processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .._errors import DeployerError, LabError, PrerequisiteError
from ._cgroup import Cgroup, cgroup2_root, new_lab_cgroup_name
from ._dirs import standard_lab_dir
from ._nodes import NodeProcesses
from ._procs import free_ports, port_accepts, port_is_free, stop_processes, wait_until
from ._production import (
    DEPLOY_HOME,
    DEPLOY_USER,
    LB_CONFIG_DIR,
    LB_HOST,
    LB_LOCK_DIR,
    LB_SOCKET,
    ProductionHosts,
)
from ._render import (
    NodeLayout,
    cgroup_launcher_script,
    deployer_config,
    inventory,
    node_init_script,
    program_file,
)
from ._services import start_haproxy, start_haproxy_on_host, start_nginx, start_prometheus
from ._spec import DEFAULT_NET, LabSpec
from ._state import LabState, LabStatus, NodeState, NodeStatus
from ._sys import atomic_write, http_status, run

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
_SEED_TIMEOUT = 30.0
# Longest unix socket path the kernel accepts (sun_path is 108 bytes, NUL included).
_MAX_SOCKET_PATH = 107


# Written last into releases/<version> by the release role; marks a complete, verified stage.
RELEASE_MARKER = ".deployer-release.json"


def _check_prerequisites(spec: LabSpec | None = None) -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "the lab needs root (it creates mount namespaces and binds node addresses): "
            "run it as root, e.g. `sudo deployer lab up`"
        )
    required = dict(_REQUIRED_COMMANDS)
    if spec is not None and spec.prometheus:
        required["/usr/bin/prometheus"] = "prometheus"
    if spec is not None and spec.production:
        required["/usr/bin/sudo"] = "sudo"
    missing = sorted({pkg for cmd, pkg in required.items() if not os.access(cmd, os.X_OK)})
    if missing:
        raise PrerequisiteError(
            f"the lab needs these Debian packages: {', '.join(missing)}",
            hint=f"run scripts/bootstrap.sh, or `apt-get install -y {' '.join(missing)}`",
        )


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
        """The artefact store's directory: this lab's own, or that of the lab whose store it
        shares."""
        state = self._load_state()
        return self._store_dir(state.spec if state is not None else None)

    def _store_dir(self, spec: LabSpec | None) -> Path:
        if spec is not None and spec.shared_store is not None:
            return Path(spec.shared_store) / "store"
        return self.dir / "store"

    @property
    def pointer_dir(self) -> Path:
        """Where the lab's file pointer (and the status beside it) live."""
        return self.dir / "pointer"

    @property
    def lock_dir(self) -> Path:
        """Where the lab's deployment locks live (the plain topology; the production one keeps
        them on its load-balancer host)."""
        return self.dir / "locks"

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
        atomic_write(self.state_path, json.dumps(state.to_dict(), indent=2) + "\n")

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
        _check_prerequisites(spec)
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
        cgroup_root = cgroup2_root()
        with self._locked():
            state = self._prepare_state(spec, cgroup_root)
            try:
                self._up(state, cgroup_root)
            finally:
                self._save_state(state)
            return state

    def _is_default_lab(self, spec: LabSpec) -> bool:
        """The default lab: the default directory (whatever $DEPLOYER_LAB_DIR says) and network."""
        return spec.net == DEFAULT_NET and self.dir.resolve() == standard_lab_dir().resolve()

    def _choose_ports(self, spec: LabSpec, recorded: LabState | None) -> LabSpec:
        """``spec`` with every address it leaves unchosen chosen: what this lab recorded at its
        last `up` (kept, or repaired), else the documented defaults for the default lab, else
        free ports, so that no other lab ever holds a port the default lab needs."""
        if recorded is not None:
            spec = spec.with_ports_of(recorded.spec)
        return spec.with_ports(defaults=self._is_default_lab(spec), pick=free_ports)

    def _prepare_state(self, spec: LabSpec, cgroup_root: Path) -> LabState:
        old = self._load_state()
        spec = self._choose_ports(spec, old)
        if old is not None and old.spec.shape() != spec.shape():
            if any(ref.alive() for ref in old.processes()):
                shape, was = spec.shape(), old.spec.shape()
                changed = sorted(k for k in shape.keys() | was.keys() if shape.get(k) != was.get(k))
                raise LabError(
                    f"a lab with other settings ({', '.join(changed)}) runs in {self.dir}",
                    hint="run `deployer lab down` first, or pass another --dir",
                )
            self._stop(old, cgroup_root)
            old = None
        if old is not None and old.cgroup is None:
            # Recorded before the lab kept its processes in cgroups: start it afresh, once.
            self._stop(old, cgroup_root)
            old.nodes, old.haproxy, old.nginx = [], None, None
        state = old or LabState(dir=self.dir, spec=spec)
        state.spec = spec
        if state.cgroup is None:
            state.cgroup = new_lab_cgroup_name(self.dir)
        for sub in ("nodes", "haproxy", "nginx/tmp", "keys", "store", "bin", "locks"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if not state.nodes:
            state.nodes = [
                NodeState(name=spec.node_name(i), address=spec.node_address(i), ssh_port=0)
                for i in range(1, spec.total_nodes + 1)
            ]
        if spec.production and state.lb_host is None:
            state.lb_host = NodeState(name=LB_HOST, address=spec.lb_address, ssh_port=0)
        return state

    def _node_processes(self, state: LabState, cgroup_root: Path) -> NodeProcesses:
        return NodeProcesses(
            lab_dir=self.dir,
            lab_cgroup=Cgroup(cgroup_root, state.cgroup) if state.cgroup else None,
            launcher=self.dir / "bin" / "in-cgroup",
            init_script=self.dir / "bin" / "node-init",
            authorized_keys=self.keys_dir / "authorized_keys",
            host_setup=self._production_setup if state.spec.production else None,
        )

    def _production_setup(self, host: NodeState) -> list[tuple[Path, str]]:
        """The production-like topology's files for one host, as bind mounts."""
        lb = host.name == LB_HOST
        binds = ProductionHosts(self.dir).prepare(
            host.name, address=host.address, lb_host=lb,
            authorized_keys=self.keys_dir / "authorized_keys",
        )
        if lb:
            config = self._node_layout(host).root / "haproxy"
            config.mkdir(parents=True, exist_ok=True)
            binds.append((config, LB_CONFIG_DIR))
        return binds

    def admin_socket(self) -> Path:
        """A path on this machine that reaches HAProxy's runtime socket: the lab's own, or,
        in the production topology, the one in the load-balancer host's private /run (the lab
        may look in there; deployer goes through that host over SSH)."""
        state = self._load_state()
        if state is not None and state.lb_host is not None and state.lb_host.sshd is not None:
            return Path(f"/proc/{state.lb_host.sshd.pid}/root{LB_SOCKET}")
        return self.haproxy_socket

    def _up(self, state: LabState, cgroup_root: Path) -> None:
        spec = state.spec
        assert state.cgroup is not None
        lab_cgroup = Cgroup(cgroup_root, state.cgroup)
        lab_cgroup.create()
        nodes = self._node_processes(state, cgroup_root)
        self._check_service_ports(state)
        self._ensure_ssh_keys()
        self._create_mount_points(state)
        atomic_write(self.dir / "bin" / "node-init", node_init_script(), mode=0o755)
        atomic_write(self.dir / "bin" / "in-cgroup", cgroup_launcher_script(), mode=0o755)

        self._ensure_release_key(state)
        self._publish_samples(state)
        for node in state.nodes:
            for host_dir, _ in self._node_layout(node).binds(spec.app):
                host_dir.mkdir(parents=True, exist_ok=True)
        # Seeded files are in place before supervisord starts, so it starts the app itself.
        seeded = self._install_seed(state, spec.seed) if spec.seed is not None else []

        to_start = [n for n in state.hosts if not (n.sshd and n.sshd.alive())]
        # What is left of those nodes (an orphaned app, an SSH session) lives in their cgroups.
        nodes.stop(to_start)
        nodes.assign_ports(spec, to_start)
        nodes.ensure_host_keys(state.hosts)
        nodes.write_known_hosts(state.hosts, self.known_hosts)
        try:
            nodes.start(spec, to_start)
        finally:
            self._save_state(state)
        running = [n for n in seeded if n.supervisord and n.supervisord.alive()]
        try:
            nodes.start_supervisords(state.nodes)
        finally:
            self._save_state(state)
        for node in running:
            nodes.supervisor_update(node, spec.app)

        layouts = [self._node_layout(n) for n in state.nodes]
        services = lab_cgroup.child("services")
        services.create()
        launcher = self.dir / "bin" / "in-cgroup"
        if not (state.haproxy and state.haproxy.alive()):
            if state.lb_host is not None:
                assert state.lb_host.sshd is not None and state.lb_host.cgroup is not None
                state.haproxy = start_haproxy_on_host(
                    spec, layouts, host_root=self._node_layout(state.lb_host).root,
                    host_pid=state.lb_host.sshd.pid, launcher=launcher,
                    cgroup=Cgroup(cgroup_root, state.lb_host.cgroup), socket=LB_SOCKET,
                    config_dir=LB_CONFIG_DIR, socket_gid=ProductionHosts(self.dir).haproxy_gid(),
                )
            else:
                state.haproxy = start_haproxy(
                    spec, layouts, work=self.dir / "haproxy", admin_socket=self.haproxy_socket,
                    launcher=launcher, cgroup=services,
                )
        if spec.shared_store is None and not (state.nginx and state.nginx.alive()):
            state.nginx = start_nginx(
                spec, work=self.dir / "nginx", store_dir=self._store_dir(spec), launcher=launcher,
                cgroup=services,
            )
        if spec.prometheus and not (state.prometheus and state.prometheus.alive()):
            state.prometheus = start_prometheus(
                spec, work=self.dir / "prometheus", launcher=launcher, cgroup=services
            )
        self._save_state(state)

        atomic_write(
            self.inventory_path,
            inventory(
                spec, layouts, private_key=self.private_key, known_hosts=self.known_hosts,
                lb_host=self._node_layout(state.lb_host) if state.lb_host else None,
                deploy_user=DEPLOY_USER if spec.production else "root",
            ),
        )
        assert state.release_public_key is not None
        atomic_write(
            self.config_path,
            deployer_config(
                spec,
                inventory_path=Path(self.inventory_path.name),
                store_url="http://{}:{}/".format(*spec.store_address),
                trusted_key=Path(state.release_public_key).relative_to(self.dir),
                haproxy_socket=LB_SOCKET if spec.production else self.haproxy_socket,
                legs_map_path=f"{LB_CONFIG_DIR}/legs.map" if spec.production else self.legs_map,
                lb_host=LB_HOST if spec.production else None,
                lock_dir=None if spec.production else str(self.lock_dir),
                pointer_path=self.pointer_dir.relative_to(self.dir) / f"{spec.env}.json",
            ),
        )
        if spec.seed is not None:
            self._wait_seeded(state, spec.seed)

    def _check_service_ports(self, state: LabState) -> None:
        checks = []
        spec = state.spec
        if not (state.haproxy and state.haproxy.alive()):
            checks.append(("--frontend", spec.frontend_address))
            checks.append(("--metrics", spec.metrics_address))
            if spec.legs:
                checks.append(("--preview", spec.preview_address))
        if spec.prometheus_listen and not (state.prometheus and state.prometheus.alive()):
            checks.append(("--prometheus-address", spec.prometheus_listen))
        if spec.shared_store is None and not (state.nginx and state.nginx.alive()):
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
            run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer-lab",
                 "-f", str(self.private_key)],
                what="ssh-keygen (lab login key)",
            )
        public = self.private_key.with_suffix(".pub").read_text()
        atomic_write(self.keys_dir / "authorized_keys", public, mode=0o600)

    def _create_mount_points(self, state: LabState) -> None:
        # Bind mounts need a directory to land on; on the host they stay empty, and `down`
        # leaves them: removing one would detach the mounts of any other lab's nodes.
        app = state.spec.app
        points = [f"/opt/{app}", f"/etc/{app}", f"/var/log/{app}",
                  "/etc/supervisor/conf.d", "/var/log/supervisor"]
        if state.spec.production:
            points += [DEPLOY_HOME, LB_LOCK_DIR]
        for point in points:
            os.makedirs(point, exist_ok=True)

    # -- releases ----------------------------------------------------------------------------

    def _ensure_release_key(self, state: LabState) -> None:
        if state.spec.shared_store is not None:
            # Releases are signed by the lab whose store this one shares: trust its key.
            public = self.keys_dir / "release.pub"
            shutil.copyfile(Path(state.spec.shared_store) / "keys" / "release.pub", public)
            state.release_key, state.release_public_key = None, str(public)
            return
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
        store_dir = self._store_dir(state.spec)
        todo = [
            (v, variant) for v, variant in SAMPLE_RELEASES
            if not (store_dir / app / v / "manifest.json.minisig").is_file()
        ]
        state.published = [v for v, _ in SAMPLE_RELEASES if (v, _) not in todo]
        if not todo or state.spec.shared_store is not None:
            return  # a shared store is published by the lab that owns it
        build_script = _examples_dir() / "build.py"
        if not build_script.is_file():
            raise LabError(
                f"the sample service is missing: {build_script} not found",
                hint="reinstall deployer from its wheel, or set DEPLOYER_CONTENT_DIR to a directory"
                " holding examples/hello-service",
            )
        assert state.release_key is not None
        store = open_store(f"file://{store_dir}")
        with tempfile.TemporaryDirectory(dir=self.dir, prefix=".build-") as tmp:
            for version, variant in todo:
                src = Path(tmp) / f"src-{version}"
                run(
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
        store_dir = self._store_dir(state.spec)
        tarball = store_dir / app / version / f"{app}-{version}.tar.gz"
        if not tarball.is_file():
            raise LabError(
                f"--seed {version}: no such release of {app} in the lab store {store_dir}",
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
                http_status(f"http://{n.address}:{spec.app_port}/health", timeout=0.5) == 200
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
            staging.chmod(0o755)  # a temporary directory's 0700: the app (nobody) must read it
            os.replace(staging, target)
        link = layout.root / "opt" / ".current.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(f"/opt/{app}/releases/{version}")
        os.replace(link, layout.root / "opt" / "current")
        atomic_write(
            layout.root / "supervisor-conf.d" / f"{app}.conf",
            program_file(state.spec, address=node.address, version=version),
        )

    @property
    def legs_map(self) -> Path:
        """A blue-green lab's HAProxy map: which backend (leg) takes live traffic."""
        return self.dir / "haproxy" / "legs.map"

    def _lb_states(self, spec: LabSpec) -> dict[str, str]:
        from ..adapters.haproxy import HAProxyRuntime

        runtime = HAProxyRuntime(str(self.admin_socket()), timeout=2.0)
        states = {}
        for backend in [spec.backend(leg) for leg in ("blue", "green")] if spec.legs else [spec.app]:
            states.update({name: s.label for name, s in runtime.servers(backend).items()})
        return states

    def _live_leg(self, spec: LabSpec) -> str | None:
        """The leg HAProxy sends live traffic to (read through the runtime API)."""
        from ..adapters.haproxy import HAProxyRuntime

        try:
            legs_map = f"{LB_CONFIG_DIR}/legs.map" if spec.production else self.legs_map
            text = HAProxyRuntime(str(self.admin_socket()), timeout=2.0).command(
                f"show map {legs_map}"
            )
        except DeployerError:
            return None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "live":
                return next((leg for leg in ("blue", "green") if spec.backend(leg) == parts[2]), None)
        return None

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
        cgroup_root = cgroup2_root()
        with self._locked():
            state = self._load_state()
            if state is not None:
                self._stop(state, cgroup_root)
            self._remove_files()
        (self.dir / ".lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def _stop(self, state: LabState, cgroup_root: Path) -> None:
        """Stop what ``state`` records: the services, then each node's cgroup; then remove the
        lab's cgroup (and with it anything still in it, such as nginx's workers)."""
        services = [
            r.pid for r in (state.haproxy, state.nginx, state.prometheus) if r is not None and r.alive()
        ]
        left = stop_processes(services)
        if left:
            raise LabError(f"these lab processes would not stop: {', '.join(map(str, left))}")
        self._node_processes(state, cgroup_root).stop(state.hosts)
        if state.cgroup is not None:
            Cgroup(cgroup_root, state.cgroup).stop()
        state.haproxy = state.nginx = state.prometheus = None
        listening = [(n.address, n.ssh_port) for n in state.nodes if n.ssh_port]
        wait_until(lambda: all(port_is_free(a, p) for a, p in listening), timeout=5)
        busy = [f"{a}:{p}" for a, p in listening if not port_is_free(a, p)]
        if busy:
            raise LabError(f"lab addresses still in use after stopping: {', '.join(busy)}")

    def crash_node(self, name: str) -> None:
        """Kill every process of node ``name`` at once, as a VM losing power would (for tests
        and game days). The lab's record stays: `lab up` brings the node back."""
        _check_prerequisites()
        state = self._load_state()
        if state is None:
            raise LabError(f"no lab in {self.dir}", hint="run `deployer lab up` first")
        node = next((n for n in state.nodes if n.name == name), None)
        if node is None:
            names = ", ".join(n.name for n in state.nodes)
            raise LabError(f"the lab in {self.dir} has no node {name!r} (it has: {names})")
        self._node_processes(state, cgroup2_root()).crash(node)

    def _remove_files(self) -> None:
        for name in ("nodes", "haproxy", "nginx", "prometheus", "keys", "store", "bin", "state", "locks",
                     "pointer", "aws"):
            shutil.rmtree(self.dir / name, ignore_errors=True)
        # The production topology's hosts: their private passwd, shadow, sudoers.d and locks.
        shutil.rmtree(ProductionHosts(self.dir).root, ignore_errors=True)
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
        live_leg = None
        if haproxy_up:
            with contextlib.suppress(DeployerError):
                lb_states = self._lb_states(spec)
            if spec.legs:
                live_leg = self._live_leg(spec)

        def node_status(node: NodeState) -> NodeStatus:
            current = self._node_layout(node).root / "opt" / "current"
            try:
                version: str | None = Path(os.readlink(current)).name
            except OSError:
                version = None
            sshd_up = bool(node.sshd and node.sshd.alive()) and port_accepts(
                node.address, node.ssh_port
            )
            health = http_status(f"http://{node.address}:{spec.app_port}/health", timeout=1.0)
            return NodeStatus(
                name=node.name, address=node.address, ssh_port=node.ssh_port, sshd_up=sshd_up,
                supervisord_up=bool(node.supervisord and node.supervisord.alive()),
                app_version=version, app_healthy=health == 200, lb_state=lb_states.get(node.name),
                leg=spec.leg_of(int(node.name.removeprefix("node"))),
            )

        with ThreadPoolExecutor(max_workers=16) as pool:
            nodes = list(pool.map(node_status, state.nodes))
        store_host, store_port = spec.store_address
        front_host, front_port = spec.frontend_address
        store_runs = spec.shared_store is not None or bool(state.nginx and state.nginx.alive())
        return LabStatus(
            dir=self.dir, exists=True, nodes=nodes, haproxy_up=haproxy_up,
            store_up=store_runs and port_accepts(store_host, store_port),
            config_path=self.config_path, inventory_path=self.inventory_path,
            store_dir=self._store_dir(spec), store_url=f"http://{store_host}:{store_port}/",
            frontend_url=f"http://{front_host}:{front_port}/",
            haproxy_socket=self.haproxy_socket, keys_dir=self.keys_dir, published=state.published,
            cgroup=state.cgroup,
            metrics_url="http://{}:{}/metrics".format(*spec.metrics_address),
            preview_url="http://{}:{}/".format(*spec.preview_address) if spec.legs else None,
            live_leg=live_leg,
            prometheus_url=(
                "http://{}:{}/".format(*spec.prometheus_listen) if spec.prometheus_listen else None
            ),
            prometheus_up=bool(state.prometheus and state.prometheus.alive()),
            lb_host=state.lb_host.address if state.lb_host else None,
            topology=spec.topology, env=spec.env,
        )
