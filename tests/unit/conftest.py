"""What the engine's unit tests share: a world (a config, an inventory and signed releases in a
real file store) and deployments built on it with fakes at the seams only (the runner replays
scripted events; the load balancer and the lock host live in memory). Everything else is real:
the journal on disk, the store and its signatures, the planner, the lifecycle, the strategies.
"""

from __future__ import annotations

import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from deployer.adapters.journal import Journal
from deployer.adapters.lock import DeploymentLock, state_dir_lock
from deployer.artefacts import build_artefact, generate_keypair, open_store, sign_manifest
from deployer.cli._wiring import release_verifier
from deployer.config import BlueGreenStrategy, EnvironmentConfig, RollingStrategy, load_config
from deployer.engine.events import BatchStarted, NodePhaseChanged, Note, Published, Subscriber
from deployer.engine.fleet import Fleet
from deployer.engine.lifecycle import Lifecycle
from deployer.engine.model import Outcome
from deployer.engine.safepoints import Check
from deployer.engine.soaking import Soaks
from deployer.engine.strategies import leg_environment, make_strategy
from deployer.testing import FakeLoadBalancer, ReplayRunner, RunScript

NODES = ["node1", "node2", "node3"]
LEGS = {"blue": ["node1", "node2"], "green": ["node3", "node4"]}
MAP = "/etc/haproxy/legs.map"


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Path]:
    """A config, inventory and signed releases 1.0.0, 1.1.0 and 1.2.0-badhealth in a real file
    store (``config``: a rolling environment ``lab`` of three nodes; ``bg_config``: a blue-green
    one of two legs of two)."""
    keys = generate_keypair(tmp_path / "keys", "release")
    store = open_store(f"file://{tmp_path / 'store'}")
    for version in ("1.0.0", "1.1.0", "1.2.0-badhealth"):
        src = tmp_path / "src" / version / "bin"
        src.mkdir(parents=True)
        (src / "run").write_text(f"#!/bin/sh\necho {version}\n")
        built = build_artefact(src.parent, app="hello", version=version, out_dir=tmp_path / "out" / version)
        sign_manifest(built.manifest_path, keys.secret_path)
        store.publish(built.dir)
    inventory = tmp_path / "inventory.yml"
    hosts = {f"node{i}": {"ansible_host": f"127.0.1.{i}"} for i in range(1, 5)}
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "hello_nodes": {"hosts": {n: hosts[n] for n in NODES}},
        **{f"hello_{leg}": {"hosts": {n: hosts[n] for n in names}} for leg, names in LEGS.items()},
    }}}))
    common = f"""
            inventory: inventory.yml
            app: {{name: hello}}
            store: {{url: "file://{tmp_path / 'store'}"}}
            trusted_keys: [keys/release.pub]
    """
    config = tmp_path / "deployer.yml"
    config.write_text(textwrap.dedent(f"""
        state_dir: state
        environments:
          lab:
            group: hello_nodes
            {common.strip()}
            load_balancer: {{socket: /nonexistent.sock, backend: hello}}
            strategy: {{min_healthy: "1"}}
    """))
    bg_config = tmp_path / "bluegreen.yml"
    bg_config.write_text(textwrap.dedent(f"""
        state_dir: state
        environments:
          lab:
            group: hello_blue
            {common.strip()}
            load_balancer: {{socket: /nonexistent.sock, backend: hello_blue, legs_map: {MAP}}}
            strategy:
              kind: blue-green
              preview_url: http://127.0.0.1:9/
              legs:
                blue: {{group: hello_blue, backend: hello_blue}}
                green: {{group: hello_green, backend: hello_green}}
    """))
    return {"config": config, "bg_config": bg_config, "root": tmp_path}


class Recorder(Subscriber):
    """Hears every event as it is published (synchronously, so a test can act on one before
    the deployment moves on): ``on`` maps an event type to what the test does then."""

    synchronous: ClassVar[bool] = True

    def __init__(self) -> None:
        self.events: list[Published] = []
        self.on: dict[type, Callable[[Any], None]] = {}

    def on_event(self, published: Published) -> None:
        self.events.append(published)
        action = self.on.get(type(published.event))
        if action is not None:
            action(published.event)

    @property
    def messages(self) -> list[str]:
        return [p.event.text for p in self.events if isinstance(p.event, Note)]

    def of(self, kind: type) -> list[Any]:
        return [p.event for p in self.events if isinstance(p.event, kind)]

    def after_batch(self, index: int, action: Callable[[], None]) -> None:
        """Do ``action`` as batch ``index`` starts (not a rollback batch)."""
        self.on[BatchStarted] = lambda ev: action() if ev.index == index and not ev.rollback else None

    def at_phase(self, phase: str, action: Callable[[NodePhaseChanged], None]) -> None:
        self.on[NodePhaseChanged] = lambda ev: action(ev) if ev.phase == phase else None


@dataclass
class Deployment:
    """A lifecycle built on the world, with what the test reads back."""

    lifecycle: Lifecycle
    runner: ReplayRunner
    journal: Journal
    lb: FakeLoadBalancer
    recorder: Recorder
    env: EnvironmentConfig
    fleets: dict[str, Fleet] = field(default_factory=dict)

    def deploy(self, version: str, **kw: Any) -> Outcome:
        return self.lifecycle.deploy(version, **kw)

    def phases(self, outcome: Outcome, node: str) -> list[str]:
        return [e.phase for e in self.journal.node_events(outcome.deployment_id) if e.node == node]


def build(
    config_path: Path, scripts: Sequence[RunScript] | ReplayRunner, *,
    lb: FakeLoadBalancer | None = None, lock: DeploymentLock | None = None,
    checks: Sequence[Check] = (), soaks: Callable[[FakeLoadBalancer], Soaks] | None = None,
    strategy: dict[str, Any] | None = None,
    env_update: dict[str, Any] | None = None, preview_version: Callable[[str], str] | None = None,
) -> Deployment:
    """A deployment of environment ``lab`` of the config at ``config_path`` (``soaks``: the soak
    analysis, made from the fake load balancer whose counters it reads)."""
    cfg = load_config(config_path)
    env = cfg.environment("lab")
    if strategy:
        env = env.model_copy(update={"strategy": env.strategy.model_copy(update=strategy)})
    if env_update:
        env = env.model_copy(update=env_update)
    runner = scripts if isinstance(scripts, ReplayRunner) else ReplayRunner(scripts)
    journal = Journal(cfg.state_dir / "journal.sqlite")
    if lb is None:
        lb = FakeLoadBalancer("hello", NODES)
        if isinstance(env.strategy, BlueGreenStrategy):
            lb = FakeLoadBalancer("none")
            for leg, names in LEGS.items():
                lb.add_backend(f"hello_{leg}", names)
            lb.set_route(MAP, "live", "hello_blue")
            lb.changes.clear()
    from deployer.adapters.inventory import load_nodes

    def fleet(leg: str | None) -> Fleet:
        the_env = env if leg is None else leg_environment(env, leg)
        return Fleet(env_name="lab", env=the_env, nodes=load_nodes(env.inventory, the_env.group),
                     runner=runner, lb=lb, journal=journal, backend=the_env.load_balancer.backend,
                     leg=leg)

    if isinstance(env.strategy, RollingStrategy):
        fleets = {"": fleet(None)}
    else:
        fleets = {leg: fleet(leg) for leg in env.strategy.legs}
    verify = release_verifier(env)

    def preview_get(url: str, timeout: float) -> tuple[int, bytes]:
        backend = lb.route(MAP, "preview") or ""
        version = preview_version(backend) if preview_version else "?"
        return 200, f'{{"version": "{version}"}}'.encode()

    the_soaks = soaks(lb) if soaks is not None else None
    strategy_obj = make_strategy(env_name="lab", env=env, fleets=fleets, lb=lb, journal=journal,
                                 verify_release=verify, soaks=the_soaks, preview_get=preview_get)
    recorder = Recorder()
    lifecycle = Lifecycle(
        env_name="lab", app="hello", strategy=strategy_obj, journal=journal,
        lock=lock or state_dir_lock(cfg.state_dir, "lab"), verify_release=verify,
        subscribers=[recorder], checks=checks, soaks=the_soaks, command="test",
    )
    return Deployment(lifecycle, runner, journal, lb, recorder, env, fleets)


@pytest.fixture()
def deployment(world: dict[str, Path]) -> Callable[..., Deployment]:
    """``deployment(scripts, lb=..., strategy={...})``: a rolling deployment on the world."""

    def make(scripts: Sequence[RunScript] | ReplayRunner, **kw: Any) -> Deployment:
        return build(world["config"], scripts, **kw)

    return make


@pytest.fixture()
def bluegreen(world: dict[str, Path]) -> Callable[..., Deployment]:
    """``bluegreen(scripts, ...)``: a blue-green deployment on the world (blue live)."""

    def make(scripts: Sequence[RunScript] | ReplayRunner, **kw: Any) -> Deployment:
        return build(world["bg_config"], scripts, **kw)

    return make


# -- a real HAProxy for the load-balancer clients and module ---------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DummyServer:
    """Accepts TCP connections and answers each HTTP request 200 once ``gate`` is open (it is
    unless a test closes it, to hold requests in flight); ``answered`` counts the answers, each
    counted before it is sent. Health checks (a bare connection) are not answered."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.answered = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not conn.recv(4096):
                    return
                self.gate.wait(30)
                self.answered += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except OSError:
                pass

    def close(self) -> None:
        self.gate.set()
        self.listener.close()


@pytest.fixture()
def lb(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real HAProxy (a daemon, on a temporary socket and a free loopback port) with servers
    node1, node2 and node3 in backend ``app``, all answered by one :class:`DummyServer`."""
    backend_server = DummyServer()
    frontend_port = free_port()
    sock = tmp_path / "admin.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend web
    bind 127.0.0.1:{frontend_port}
    default_backend app
backend app
    server node1 127.0.0.1:{backend_server.port} check inter 200ms rise 1 fall 1
    server node2 127.0.0.1:{backend_server.port}
    server node3 127.0.0.1:{backend_server.port} check inter 60s rise 2 fall 1
"""
    )
    process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield {"socket": str(sock), "backend": "app", "frontend_port": frontend_port,
               "server": backend_server}
    finally:
        process.terminate()
        process.wait(timeout=5)
        backend_server.close()


# -- files older or smaller than the world's --------------------------------------------------

# The journal as the first deployer wrote it (schema 1), with one finished deployment.
JOURNAL_SCHEMA_1 = """
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT, env TEXT NOT NULL, app TEXT NOT NULL, kind TEXT NOT NULL,
    version TEXT NOT NULL, status TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
    actor TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, command TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '', details TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO deployments (env, app, kind, version, status, started_at, ended_at, actor, host, pid,
                         command, summary, details)
VALUES ('lab', 'hello', 'deploy', '1.0.0', 'succeeded', 1700000000, 1700000010, 'ops@runner',
        'runner', 4242, 'deployer deploy --env lab --version 1.0.0', '3 nodes', '{"sha256": "ab"}');
"""

# The smallest valid config (with write_config: its inventory and a key file beside it).
MINIMAL_CONFIG = """
state_dir: state
environments:
  lab:
    inventory: hosts.yml
    app: {name: hello}
    store: {url: "http://127.0.0.1:8081/"}
    trusted_keys: [release.pub]
    load_balancer: {socket: /tmp/x.sock, backend: hello}
"""


def write_config(tmp_path: Path, text: str) -> Path:
    """``text`` as deployer.yml in ``tmp_path``, with the one-node inventory and key it names."""
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    node1: {}\n")
    (tmp_path / "release.pub").write_text("untrusted comment: x\nRWQ=\n")
    cfg = tmp_path / "deployer.yml"
    cfg.write_text(textwrap.dedent(text))
    return cfg
