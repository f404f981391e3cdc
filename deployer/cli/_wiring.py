"""Build an engine for one environment from the config: the only place that picks concrete
adapters (ansible-runner, HAProxy, the SQLite journal, the deployment lock, the artefact
store)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from .._config import Config, EnvironmentConfig
from ..adapters.haproxy import HAProxyOverSSH, HAProxyRuntime, LoadBalancerGroup
from ..adapters.inventory import load_nodes, ssh_target
from ..adapters.journal import Journal
from ..adapters.loadbalancer import LoadBalancer
from ..adapters.lock import EnvironmentLock, ProgramHost, state_dir_lock
from ..adapters.runner import AnsibleRunner, RecordingRunner, Runner
from ..adapters.ssh import SshTarget
from ..engine.bluegreen import BlueGreen
from ..engine.engine import Engine, Release, Reporter
from ..engine.soaking import Soaks

_CONTROLLER = frozenset({"localhost", "127.0.0.1", "::1"})


def journal_for(config: Config, *, read_only: bool = False) -> Journal:
    """The environment's journal; ``read_only`` for commands that only read (status, history,
    plan): opened read-only and never created or migrated by them."""
    return Journal(Path(config.state_dir) / "journal.sqlite", read_only=read_only)


def lock_for(config: Config, env_name: str) -> EnvironmentLock:
    """The environment's deployment lock: on the load balancer's host (``lock.host``, default
    the first load balancer; over SSH as the inventory says, or here for a local one), or in
    the state directory."""
    env = config.environment(env_name)
    if env.lock_at == "state_dir":
        return state_dir_lock(Path(config.state_dir), env_name, lease=env.lock.lease)
    host = env.lock_host
    target = (
        SshTarget(host=host, address=host, local=True) if host in _CONTROLLER
        else _target_of(env, host)
    )
    return EnvironmentLock(
        ProgramHost(env.lock.dir, target=target, name=host), env_name, lease=env.lock.lease
    )


def load_balancer_for(env: EnvironmentConfig) -> LoadBalancer:
    """The runtime API client for the environment's load balancer(s): the socket (or tcp://
    address) dialled from here, or reached on each load-balancer host over SSH (see
    ``load_balancer.connect``); several hosts act as one."""
    lb = env.load_balancer
    members: list[LoadBalancer] = []
    for host in lb.all_hosts:
        direct = lb.connect == "direct" or (
            lb.connect == "auto" and (host in _CONTROLLER or lb.socket.startswith("tcp://"))
        )
        if direct:
            members.append(HAProxyRuntime(lb.socket))
        else:
            members.append(HAProxyOverSSH(host, lb.socket, _target_of(env, host)))
    return members[0] if len(members) == 1 else LoadBalancerGroup(members)


def _target_of(env: EnvironmentConfig, host: str) -> Callable[[], SshTarget]:
    """How to reach ``host`` over SSH, read from the inventory when first needed."""

    def resolve() -> SshTarget:
        target = ssh_target(env.inventory, host)
        # A host Ansible runs locally: the same command, without SSH.
        return target or SshTarget(host=host, address=host, local=True)

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
        from ..artefacts import open_store, verify_release

        store = open_store(env.store.url)
        manifest = verify_release(
            store, env.app.name, version, env.trusted_keys, check_tarball=True
        )
        if env.store.node_url:
            url = f"{env.store.node_url.rstrip('/')}/{env.app.name}/{version}/{manifest.tarball}"
        else:
            url = store.node_url(env.app.name, version, ttl=env.store.presign_ttl)
        return Release(
            app=manifest.app, version=manifest.version, url=url,
            sha256=manifest.sha256, size=manifest.size,
        )

    return verify


def build_engine(
    config: Config,
    env_name: str,
    *,
    reporter: Reporter | None = None,
    runner: Runner | None = None,
    read_only: bool = False,
) -> Engine:
    """The rolling engine; ``read_only`` for a command that only reads (its journal is opened
    read-only, so it cannot deploy)."""
    env = config.environment(env_name)
    nodes = load_nodes(env.inventory, env.group)
    lb = load_balancer_for(env)
    state = Path(config.state_dir)
    if runner is None:
        runner = AnsibleRunner(
            artifacts_root=state / "runs", keep_runs=config.runner.keep_runs,
            secret_vars=config.runner.secret_vars,
        )
        record = os.environ.get("DEPLOYER_RECORD_EVENTS")
        if record:  # keep every run's events, e.g. to make replay fixtures for engine tests
            runner = RecordingRunner(runner, Path(record))
    return Engine(
        env_name=env_name,
        env=env,
        nodes=nodes,
        runner=runner,
        journal=journal_for(config, read_only=read_only),
        verify_release=release_verifier(env),
        lb=lb,
        reporter=reporter,
        command=shlex.join(["deployer", *sys.argv[1:]]),
        config_file=str(config.source or "config"),
        soaks=soaks_for(env_name, env, lb),
        lock=lock_for(config, env_name),
    )


def build_deployment(
    config: Config,
    env_name: str,
    *,
    reporter: Reporter | None = None,
    runner: Runner | None = None,
    read_only: bool = False,
) -> Engine | BlueGreen:
    """What deploys to the environment: the rolling engine, or blue-green over two legs (each
    leg rolled by an engine of its own, all its nodes at once: an idle leg takes no live
    traffic)."""
    env = config.environment(env_name)
    if env.strategy.kind != "blue-green":
        return build_engine(config, env_name, reporter=reporter, runner=runner, read_only=read_only)
    assert env.strategy.legs is not None
    whole = build_engine(config, env_name, reporter=reporter, runner=runner, read_only=read_only)
    leg_strategy = env.strategy.model_copy(update={
        "kind": "rolling", "legs": None, "batch_size": "100%", "canary": None, "min_healthy": "0",
    })
    legs = {}
    for name, leg in env.strategy.legs.items():
        leg_env = env.model_copy(update={
            "group": leg.group,
            "load_balancer": env.load_balancer.model_copy(update={"backend": leg.backend}),
            "strategy": leg_strategy,
        })
        legs[name] = Engine(
            env_name=env_name, env=leg_env, nodes=load_nodes(env.inventory, leg.group),
            runner=whole.runner, journal=whole.journal, verify_release=whole.verify_release,
            lb=whole.lb, reporter=whole.reporter, command=whole.command,
            config_file=whole.config_file, lock=whole.lock,
        )  # no soak inside a leg: the leg is soaked once it is live
    return BlueGreen(
        env_name=env_name, env=env, leg_engines=legs, journal=whole.journal,
        verify_release=whole.verify_release, lb=whole.lb, reporter=whole.reporter,
        command=whole.command, config_file=whole.config_file, soaks=whole.soaks,
        lock=whole.lock,
    )
