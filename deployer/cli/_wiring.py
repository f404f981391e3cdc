"""Build what a command needs for one environment from the config: the only place that picks
concrete adapters (ansible-runner, HAProxy, the SQLite journal, the deployment lock, the
artefact store, the promotion store, the change API) and hands them to the engine's lifecycle
and strategy, with the environment's gates (the governance gates of the command's request, then
the promotion gate) as checks."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..adapters.freeze import EnvironmentFreeze
from ..adapters.haproxy import HAProxyOverSSH, HAProxyRuntime, LoadBalancerGroup
from ..adapters.inventory import load_nodes, ssh_target
from ..adapters.journal import Journal
from ..adapters.loadbalancer import LoadBalancer
from ..adapters.lock import EnvironmentLock, ProgramHost, state_dir_lock
from ..adapters.process import actor
from ..adapters.runner import AnsibleRunner, RecordingRunner, Runner, close_runner
from ..adapters.ssh import SshTarget
from ..adapters.ssh_masters import SshMasters
from ..artefacts import ArtefactStore
from ..config import BlueGreenStrategy, Config, EnvironmentConfig
from ..engine.events import Note, Subscriber
from ..engine.fleet import Fleet
from ..engine.lifecycle import Lifecycle
from ..engine.model import Release
from ..engine.safepoints import Check
from ..engine.soaking import Soaks
from ..engine.strategies import leg_environment, make_strategy
from ..engine.strategy import Strategy
from ..gates import GateRequest, Gates, build_gates
from ..gates.changes import ChangeApi
from ..gates.evidence import EvidenceSigner
from ..promotion import PromotionGate

__all__ = [
    "Environment",
    "build_environment",
    "freeze_for",
    "gates_for",
    "journal_for",
    "load_balancer_for",
    "lock_for",
    "release_verifier",
]

_CONTROLLER = frozenset({"localhost", "127.0.0.1", "::1"})


def journal_for(config: Config, *, read_only: bool = False) -> Journal:
    """The environment's journal; ``read_only`` for commands that only read (status, history,
    plan): opened read-only and never created or migrated by them."""
    return Journal(Path(config.state_dir) / "journal.sqlite", read_only=read_only)


def lock_for(config: Config, env_name: str, *, masters: SshMasters | None = None) -> EnvironmentLock:
    """The environment's deployment lock: on the load balancer's host (``lock.host``, default
    the first load balancer; over SSH as the inventory says, or here for a local one), or in
    the state directory. With ``masters``, the calls over SSH share one connection."""
    env = config.environment(env_name)
    if env.lock_at == "state_dir":
        return state_dir_lock(Path(config.state_dir), env_name, lease=env.lock.lease)
    host = env.lock_host
    target = (
        SshTarget(host=host, address=host, local=True) if host in _CONTROLLER
        else _target_of(env, host, masters)
    )
    return EnvironmentLock(
        ProgramHost(env.lock.dir, target=target, name=host), env_name, lease=env.lock.lease
    )


def freeze_for(config: Config, env_name: str) -> EnvironmentFreeze:
    """The environment's emergency freeze, kept beside its lock (the same host and directory)."""
    lock = lock_for(config, env_name)
    return EnvironmentFreeze(lock.host, env_name, lock=lock)


def load_balancer_for(env: EnvironmentConfig, *, masters: SshMasters | None = None) -> LoadBalancer:
    """The runtime API client for the environment's load balancer(s): the socket (or tcp://
    address) dialled from here, or reached on each load-balancer host over SSH (see
    ``load_balancer.connect``; with ``masters``, one connection shared by every call); several
    hosts act as one."""
    lb = env.load_balancer
    members: list[LoadBalancer] = []
    for host in lb.all_hosts:
        direct = lb.connect == "direct" or (
            lb.connect == "auto" and (host in _CONTROLLER or lb.socket.startswith("tcp://"))
        )
        if direct:
            members.append(HAProxyRuntime(lb.socket))
        else:
            members.append(HAProxyOverSSH(host, lb.socket, _target_of(env, host, masters)))
    return members[0] if len(members) == 1 else LoadBalancerGroup(members)


def _target_of(
    env: EnvironmentConfig, host: str, masters: SshMasters | None = None,
) -> Callable[[], SshTarget]:
    """How to reach ``host`` over SSH, read from the inventory when first needed; with
    ``masters``, through a connection shared by every call of the command."""

    def resolve() -> SshTarget:
        target = ssh_target(env.inventory, host)
        # A host Ansible runs locally: the same command, without SSH.
        if target is None:
            return SshTarget(host=host, address=host, local=True)
        if masters is None:
            return target
        return dataclasses.replace(target, control_path=masters.control_path(target.connection_key()))

    return resolve


def soaks_for(env_name: str, env: EnvironmentConfig, lb: LoadBalancer) -> Soaks | None:
    """Soak analysis for the environment (its analysis: section), or None when it has none.
    HAProxy's counters are read through the same client as the rest of the load balancer
    (with several load balancers, the first one's)."""
    if env.analysis is None:
        return None
    first = lb.members[0] if isinstance(lb, LoadBalancerGroup) else lb
    runtime = first if isinstance(first, HAProxyRuntime | HAProxyOverSSH) else None
    return Soaks(env.analysis, runtime=runtime, env_name=env_name)


def release_verifier(env: EnvironmentConfig) -> Callable[[str], Release]:
    def verify(version: str) -> Release:
        from ..artefacts import open_store, verified_release

        store = open_store(env.store.url)
        verified = verified_release(
            store, env.app.name, version, env.trusted_keys, check_tarball=True
        )
        manifest = verified.manifest
        if env.store.node_url:
            url = f"{env.store.node_url.rstrip('/')}/{env.app.name}/{version}/{manifest.tarball}"
        else:
            url = store.node_url(env.app.name, version, ttl=env.store.presign_ttl)
        return Release(
            app=manifest.app, version=manifest.version, url=url,
            sha256=manifest.sha256, size=manifest.size, key_id=verified.key_id,
            irreversible=manifest.irreversible or "",
        )

    return verify


def gates_for(env_name: str, env: EnvironmentConfig, journal: Journal) -> list[Check]:
    """The environment's gates, asked at admission by every deployment (by hand or by its
    agent) and predicted by ``plan``: the promotion gate, when it has an environment before it."""
    if env.promotion is None or env.promotion.after is None:
        return []
    return [PromotionGate(env_name=env_name, app=env.app.name, config=env.promotion, journal=journal)]


@dataclass
class Environment:
    """Everything one command needs of one environment, wired."""

    name: str
    config: Config
    env: EnvironmentConfig
    runner: Runner
    lb: LoadBalancer
    journal: Journal
    lock: EnvironmentLock
    fleets: dict[str, Fleet]
    strategy: Strategy
    lifecycle: Lifecycle
    # The gates of the command's request (None: a command that does not deploy or plan).
    gates: Gates | None = None
    # The SSH masters of the command's own calls, when not the runner's.
    ssh: SshMasters | None = None

    def close(self) -> None:
        """Close what the command opened (the SSH masters of its playbook runs and of its own
        calls to the load balancer's and the lock's host)."""
        close_runner(self.runner)
        if self.ssh is not None:
            self.ssh.close()

    @property
    def nodes(self) -> list[object]:
        return [n for fleet in self.fleets.values() for n in fleet.nodes]


def build_environment(
    config: Config,
    env_name: str,
    *,
    subscribers: Sequence[Subscriber] = (),
    checks: Sequence[Check] = (),
    runner: Runner | None = None,
    read_only: bool = False,
    gates: GateRequest | None = None,
) -> Environment:
    """The environment wired for one command: its fleets (one, or one per blue-green leg),
    strategy and lifecycle. ``read_only`` for a command that only reads (the journal is opened
    read-only, so it cannot deploy). ``gates``: what the command's request brings to the
    environment's gates (a command that deploys or plans); their checks are registered with
    the lifecycle and, unless ``read_only``, their subscribers (the evidence record, the
    change's outcome) with its events."""
    env = config.environment(env_name)
    state = Path(config.state_dir)
    own_masters: SshMasters | None = None
    masters: SshMasters | None = None
    if runner is None:
        runner = AnsibleRunner(
            artifacts_root=state / "runs", keep_runs=config.runner.keep_runs,
            secret_vars=config.runner.secret_vars,
        )
        # The command's own SSH calls share the runner's directory of masters (closed with it).
        masters = getattr(runner, "ssh", None)
        record = os.environ.get("DEPLOYER_RECORD_EVENTS")
        if record:  # keep every run's events, e.g. to make replay fixtures for engine tests
            runner = RecordingRunner(runner, Path(record))
    if not isinstance(masters, SshMasters):
        masters = own_masters = SshMasters(state)
    lb = load_balancer_for(env, masters=masters)
    journal = journal_for(config, read_only=read_only)
    config_file = str(config.source or "config")
    verify = release_verifier(env)
    soaks = soaks_for(env_name, env, lb)

    def fleet(leg: str | None) -> Fleet:
        the_env = env if leg is None else leg_environment(env, leg)
        return Fleet(env_name=env_name, env=the_env, nodes=load_nodes(env.inventory, the_env.group),
                     runner=runner, lb=lb, journal=journal,
                     backend=the_env.load_balancer.backend, config_file=config_file, leg=leg)

    if isinstance(env.strategy, BlueGreenStrategy):
        fleets = {leg: fleet(leg) for leg in env.strategy.legs}
    else:
        fleets = {"": fleet(None)}
    strategy = make_strategy(env_name=env_name, env=env, fleets=fleets, lb=lb, journal=journal,
                             verify_release=verify, soaks=soaks, config_file=config_file)
    lock = lock_for(config, env_name, masters=masters)
    gate_set: Gates | None = None
    lifecycles: list[Lifecycle] = []

    def say(text: str) -> None:
        """A word from the gates' subscribers, on the deployment's stream (as a warning)."""
        stream = lifecycles[0].events if lifecycles else None
        if stream is not None:
            stream.publish(Note(text=text, level="warning"))

    if gates is not None:
        api = env.gates.change_api
        # Beside the promotion records by default (else in the artefact store).
        store_url = env.gates.evidence.store or (
            env.promotion.store if env.promotion is not None else env.store.url)

        def evidence_store() -> ArtefactStore:
            from ..artefacts import open_store

            return open_store(store_url)

        gate_set = build_gates(
            env_name=env_name, env=env, journal=journal,
            freeze=EnvironmentFreeze(lock.host, env_name, lock=lock),
            request=gates, nodes={n.name: leg or None for leg, f in fleets.items() for n in f.nodes},
            group_sizes={leg: len(f.nodes) for leg, f in fleets.items()}, actor=actor(),
            config_file=config_file, change_provider=ChangeApi(api) if api is not None else None,
            store=evidence_store, signer=None if read_only else EvidenceSigner.of(env), say=say,
            deploying=not read_only,
        )
        subscribers = [*subscribers, *gate_set.subscribers]
    lifecycle = Lifecycle(
        env_name=env_name, app=env.app.name, strategy=strategy, journal=journal, lock=lock,
        verify_release=verify, subscribers=subscribers,
        checks=[*(gate_set.checks if gate_set is not None else []),
                *gates_for(env_name, env, journal), *checks], soaks=soaks,
        command=shlex.join(["deployer", *sys.argv[1:]]), config_file=config_file,
    )
    lifecycles.append(lifecycle)
    return Environment(name=env_name, config=config, env=env, runner=runner, lb=lb, journal=journal,
                       lock=lock, fleets=fleets, strategy=strategy, lifecycle=lifecycle,
                       gates=gate_set, ssh=own_masters)
