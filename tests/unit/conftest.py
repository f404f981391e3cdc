"""What the engine's unit tests share: a world (a config, an inventory and signed releases in a
real file store) and deployments built on it with fakes at the seams only (the runner replays
scripted events; the load balancer and the lock host live in memory). Everything else is real:
the journal on disk, the store and its signatures, the planner, the lifecycle, the strategies.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
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
