"""`deployer deploy|rollback|status|history|plan|recover|unlock`: the daily commands."""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .._config import Config, EnvironmentConfig
from .._errors import DeployerError, LoadBalancerError, LockError, UsageError
from .._versions import validate_version
from ..adapters.journal import ABANDONED_SUMMARY, DeploymentRecord, is_abandoned
from ..adapters.loadbalancer import ServerState
from ..adapters.lock import LockView, held
from ..adapters.process import actor
from ..adapters.runner import close_runner
from ..engine.bluegreen import BlueGreen
from ..engine.engine import (
    Engine,
    NodeFacts,
    NodeStatus,
    Outcome,
    Reporter,
    raise_for,
)
from ..engine.left_out import left_out_by_deployer
from ..engine.plan import Batch
from ..engine.states import NodePhase
from ._common import cell, config_option, console, env_option, get_config, out, print_json
from ._fixes import download_fix, ssh_fix
from ._wiring import build_deployment, build_engine, journal_for, lock_for

_PHASE_STYLE = {
    NodePhase.DONE: "green", NodePhase.REVERTED: "yellow", NodePhase.FAILED: "bold red",
    NodePhase.REVERTING: "yellow", NodePhase.SKIPPED: "dim", NodePhase.DRAINING: "cyan",
    NodePhase.SMOKE: "magenta", NodePhase.REJOINING: "cyan", NodePhase.DEPLOYING: "blue",
}


class ConsoleReporter(Reporter):
    """Live progress, one line per node phase change (works in a terminal and in CI logs)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def _stamp(self) -> str:
        return f"[dim]{time.monotonic() - self.t0:7.2f}s[/]"

    def phase(self, status: NodeStatus) -> None:
        if self.quiet or status.phase in (NodePhase.STAGING, NodePhase.STAGED):
            return
        style = _PHASE_STYLE.get(status.phase, "white")
        extra = ""
        if status.out_seconds is not None:
            extra = f" [dim](out of the load balancer {status.out_seconds:.2f}s)[/]"
        detail = f" [dim]{escape(status.detail)}[/]" if status.detail and status.phase in (
            NodePhase.FAILED, NodePhase.REVERTED, NodePhase.SKIPPED, NodePhase.REVERTING) else ""
        console.print(f"{self._stamp()} {status.name:<12} [{style}]{status.phase.value}[/]{extra}{detail}")

    def batch(self, batch: Batch, total: int, *, rollback: bool = False) -> None:
        if self.quiet:
            return
        what = "rollback batch" if rollback else ("canary batch" if batch.canary else "batch")
        count = f"{batch.index}/{total}" if total else str(batch.index)
        console.print(f"{self._stamp()} [bold]{what} {count}[/]: {', '.join(batch.nodes)}")

    def message(self, text: str) -> None:
        if not self.quiet:
            console.print(f"{self._stamp()} {escape(text)}")


@contextmanager
def _stop_on_signals(engine: Engine | BlueGreen) -> Iterator[None]:
    """Ctrl-C/SIGTERM once: finish the batch safely and stop. Twice: abort at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if engine.request_stop():
            console.print("[bold red]aborting now[/]: nodes caught mid-change stay as the journal says")
        else:
            console.print(
                "[yellow]stopping[/]: the current batch is finished safely, then the run stops "
                "(press Ctrl-C again to abort at once)"
            )

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _print_outcome(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print_json(outcome.to_dict())
        return
    table = Table(title=f"deployment {outcome.deployment_id}: {outcome.kind} {outcome.version}")
    for col in ("node", "from", "to", "result", "out of LB"):
        table.add_column(col, no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for st in outcome.nodes.values():
        style = _PHASE_STYLE.get(st.phase, "white")
        table.add_row(
            st.name, st.from_version or "-", st.to_version or "-", f"[{style}]{st.phase.value}[/]",
            f"{st.out_seconds:.2f}s" if st.out_seconds is not None else "-",
            escape(cell(st.detail, 200, on=console)),
        )
    console.print(table)
    colour = {"succeeded": "green", "rolled_back": "yellow", "cancelled": "yellow"}.get(
        outcome.status, "red"
    )
    console.print(
        f"[bold {colour}]{outcome.status}[/] in {outcome.ended - outcome.started:.1f}s: "
        f"{escape(outcome.summary)}"
    )
    for line in outcome.left_alone:
        console.print(f"  left as it was (not deployer's to change): {escape(line)}")
    for fix in outcome.fix_commands:
        console.print(f"  fix: [bold]{fix}[/]")


@contextmanager
def _engine(
    config: Config, env_name: str, *, reporter: Reporter | None = None, read_only: bool = False
) -> Iterator[Engine]:
    """The environment's engine for one command; its SSH masters are closed when it ends.
    ``read_only`` for a command that only reads (the journal is opened read-only)."""
    engine = build_engine(config, env_name, reporter=reporter, read_only=read_only)
    try:
        yield engine
    finally:
        close_runner(engine.runner)


@contextmanager
def _deployment(
    config: Config, env_name: str, *, reporter: Reporter | None = None, read_only: bool = False
) -> Iterator[Engine | BlueGreen]:
    """What deploys to the environment (rolling engine or blue-green), for one command."""
    deployment = build_deployment(config, env_name, reporter=reporter, read_only=read_only)
    try:
        yield deployment
    finally:
        close_runner(deployment.runner)


def _raise_for(outcome: Outcome, env: EnvironmentConfig) -> None:
    """raise_for, with the fix when nodes could not be reached (their SSH host key, or their
    SSH key refused) or could not download the release."""
    try:
        raise_for(outcome)
    except DeployerError as exc:
        reasons = [(st.node, st.cause or st.detail) for st in outcome.nodes.values()]
        fixes = [f for f in (ssh_fix(reasons), download_fix(env, reasons)) if f]
        if fixes:
            exc.hint = "; ".join([exc.hint, *fixes] if exc.hint else fixes)
        raise


def _run_with_signals(engine: Engine | BlueGreen, action: str, version: str) -> Outcome:
    with _stop_on_signals(engine):
        if action == "deploy":
            return engine.deploy(version)
        return engine.deploy(version, kind="rollback")


@click.command()
@env_option
@click.option("--version", "version", required=True, help="Release to deploy.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No live progress.")
@config_option
def deploy(env_name: str, version: str, as_json: bool, quiet: bool, config_path: Path | None) -> None:
    """Roll VERSION through the environment, batch by batch, reverting on failure."""
    validate_version(version, where="--version")
    config = get_config(config_path)
    with _deployment(config, env_name, reporter=ConsoleReporter(quiet=quiet)) as engine:
        outcome = _run_with_signals(engine, "deploy", version)
    _print_outcome(outcome, as_json)
    _raise_for(outcome, config.environment(env_name))


@click.command()
@env_option
@click.option("--to", "to_version", default=None, help="Release to go back to (default: the one before).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No live progress.")
@config_option
def rollback(
    env_name: str, to_version: str | None, as_json: bool, quiet: bool, config_path: Path | None
) -> None:
    """Go back to the previous release (or --to VERSION), batch by batch."""
    if to_version is not None:
        validate_version(to_version, where="--to")
    config = get_config(config_path)
    with _deployment(config, env_name, reporter=ConsoleReporter(quiet=quiet)) as engine:
        target = to_version or engine.rollback_target()
        if not quiet:
            console.print(f"rolling {env_name} back to {target}")
        outcome = _run_with_signals(engine, "rollback", target)
    _print_outcome(outcome, as_json)
    _raise_for(outcome, config.environment(env_name))


@click.command()
@env_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@config_option
def status(env_name: str, as_json: bool, config_path: Path | None) -> None:
    """Each node: version, load-balancer state, health."""
    config = get_config(config_path)
    with _engine(config, env_name, read_only=True) as engine:
        facts = engine.probe()
        lb_exc: LoadBalancerError | None = None
        try:
            lb = engine.lb_states()
        except LoadBalancerError as exc:
            lb, lb_exc = {}, exc
        lb_error = str(lb_exc or "")
    blue_green = config.environment(env_name).strategy.kind == "blue-green"
    legs = _legs_of(config, env_name, lb) if blue_green else None
    left, running = _out_by_deployments(engine, env_name, lb)
    notes = {
        **{n: f"out of the load balancer for deployment {d}, still running" for n, d in running.items()},
        **{n: f"left out by deployment {d}; run `deployer recover --env {env_name}`"
           for n, d in left.items()},
    }
    rows = []
    for node in engine.nodes:
        f = facts[node.name]
        s = lb.get(node.lb_server)
        detail = f.health_detail
        note = notes.get(node.name)
        if note and detail != "unreachable":
            detail = f"{note}; {detail}" if f.healthy is False and detail else note
        rows.append({
            **({"leg": legs["leg_of"].get(node.name)} if legs else {}),
            "node": node.name,
            "address": node.address,
            "version": f.current or None,
            "previous": f.previous or None,
            "load_balancer": s.label if s else ("unknown" if lb_error or lb else "not found"),
            "sessions": s.sessions if s else None,
            "healthy": f.healthy,
            "detail": detail,
            "left_out_by": left.get(node.name),
        })
    unread = [n for n in engine.nodes if facts[n.name].health_detail == "unreachable"]
    lock: LockView | None = None
    lock_error = ""
    try:
        lock = engine.lock.show()
    except LockError as exc:
        lock_error = str(exc)
    if as_json:
        print_json({
            "env": env_name, "nodes": rows, "load_balancer_error": lb_error or None,
            **({"blue_green": {k: v for k, v in legs.items() if k != "leg_of"}} if legs else {}),
            "locked_by": lock.to_dict() if lock is not None else None,
            "lock": {"where": engine.lock.where, "error": lock_error or None},
        })
    else:
        _print_status_table(config, env_name, rows, facts, notes)
        if legs:
            out.print(f"live leg: {legs['live'] or 'unknown'}; preview (the idle leg): "
                      f"{legs['preview_url']}" + (f"; {legs['error']}" if legs["error"] else ""))
        if lock_error:
            console.print(f"[yellow]lock:[/] {escape(lock_error)}", soft_wrap=True)
        elif lock is not None and lock.record is not None:
            state = " [yellow](stale: its holder is gone)[/]" if lock.stale else ""
            console.print(f"locked by {escape(lock.record.describe())}{state}; the lock is kept "
                          f"at {escape(lock.where)}", soft_wrap=True)
    problems: list[str] = []
    fixes: list[str] = []
    if unread:
        problems.append(
            f"could not read {', '.join(n.name for n in unread)}: "
            + "; ".join(f"{n.name}: {_gist(facts[n.name].unreachable_reason) or 'unreachable'}"
                        for n in unread)
        )
        fixes.append(ssh_fix((n, facts[n.name].unreachable_reason) for n in unread)
                     or "check that the nodes are up and that this user reaches them over SSH")
    if left:
        problems.append(
            "left out of the load balancer by a deployment that did not put "
            f"{'it' if len(left) == 1 else 'them'} back: "
            + ", ".join(f"{n} (deployment {d})" for n, d in left.items())
        )
        fixes.append(f"run `deployer recover --env {env_name}`: it puts back the nodes a "
                     "deployment left out, once they are healthy")
    if problems:
        raise DeployerError("; ".join(problems), hint="; ".join(fixes))
    if lb_exc is not None:
        raise lb_exc  # shown above with what could be read; exit 7


def _out_by_deployments(
    engine: Engine, env_name: str, lb: dict[str, ServerState]
) -> tuple[dict[str, int], dict[str, int]]:
    """The nodes out of the load balancer that a deployment took out, by the journal: those it
    left out (deployer's to put back: ``recover``), and those a deployment still running has
    out now; each with that deployment's id. An operator's MAINT or DRAIN is in neither."""
    out = [n.name for n in engine.nodes
           if (s := lb.get(n.lb_server)) is not None and s.admin != "ready"]
    if not out:
        return {}, {}
    left: dict[str, int] = {}
    running: dict[str, int] = {}
    for name, event in left_out_by_deployer(engine.journal, env_name, out).items():
        record = engine.journal.deployment(event.deployment_id)
        if record is not None and record.status == "running" and not is_abandoned(record):
            running[name] = event.deployment_id
        else:
            left[name] = event.deployment_id
    return left, running


def _legs_of(config: Config, env_name: str, lb: dict[str, Any]) -> dict[str, Any]:
    """A blue-green environment's legs: which is live, each one's backend and nodes; adds the
    servers of every leg's backend to ``lb`` (changes nothing)."""
    bg = build_deployment(config, env_name, read_only=True)
    assert isinstance(bg, BlueGreen)
    try:
        live: str | None = bg.live_leg()
        error = ""
    except DeployerError as exc:
        live, error = None, str(exc)
    leg_of: dict[str, str] = {}
    legs: dict[str, dict[str, Any]] = {}
    for name, leg_engine in bg.leg_engines.items():
        with contextlib.suppress(LoadBalancerError):
            lb.update(leg_engine.lb_states())
        leg = bg.legs[name]
        members = [n.name for n in leg_engine.nodes]
        legs[name] = {"backend": leg.backend, "group": leg.group, "live": name == live,
                      "nodes": members}
        leg_of.update(dict.fromkeys(members, name))
    close_runner(bg.runner)
    return {"live": live, "preview_url": bg.env.strategy.preview_url, "legs": legs,
            "error": error, "leg_of": leg_of}


def _gist(reason: str) -> str:
    """The gist of an SSH failure: on one line, without Ansible's preamble."""
    return " ".join(reason.replace("Failed to connect to the host via ssh:", "").split())


def _short(reason: str, limit: int = 80) -> str:
    """The gist of an SSH failure, for a table cell of the status table (cut in a terminal)."""
    return cell(_gist(reason), limit)


def _print_status_table(
    config: Config, env_name: str, rows: list[dict[str, Any]], facts: dict[str, NodeFacts],
    notes: dict[str, str],
) -> None:
    table = Table(title=f"{env_name}: {config.environment(env_name).app.name}")
    with_legs = any("leg" in r for r in rows)
    for col in ("node", *(("leg",) if with_legs else ()), "address", "version", "load balancer",
                "healthy", "detail"):
        table.add_column(col)
    for r in rows:
        h = r["healthy"]
        healthy = "[green]yes[/]" if h is True else "[red]no[/]" if h is False else "[dim]unknown[/]"
        lbs = str(r["load_balancer"])
        lbs = f"[green]{lbs}[/]" if lbs.startswith("UP") else f"[yellow]{lbs}[/]"
        f = facts[str(r["node"])]
        if f.health_detail == "unreachable":
            detail = f"[red]unreachable[/]: {escape(_short(f.unreachable_reason))}"
        elif str(r["node"]) in notes:  # out of the load balancer because of a deployment
            detail = f"[yellow]{escape(notes[str(r['node'])])}[/]"
            if h is False:
                detail += f"; {escape(_short(f.health_detail))}"
        else:
            detail = "" if h is True else escape(_short(f.health_detail))
        leg = [str(r.get("leg") or "-")] if with_legs else []
        table.add_row(str(r["node"]), *leg, str(r["address"]), str(r["version"] or "-"), lbs,
                      healthy, detail)
    out.print(table)


@click.command()
@env_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@click.option("--limit", default=20, show_default=True, help="How many deployments to show.")
@click.option("--deployment", "deployment_id", type=int, default=None,
              help="Show every node event of one deployment.")
@config_option
def history(
    env_name: str, as_json: bool, limit: int, deployment_id: int | None, config_path: Path | None
) -> None:
    """Past deployments: id, version, status, start, end (newest first). Reads the journal
    only: a deployment whose process ended without finishing is shown as abandoned."""
    config = get_config(config_path)
    config.environment(env_name)
    journal = journal_for(config, read_only=True)
    if deployment_id is not None:
        found = journal.deployment(deployment_id)
        if found is None or found.env != env_name:
            raise DeployerError(f"no deployment {deployment_id} in environment {env_name!r}")
        rec = _as_shown(found)
        events = journal.node_events(deployment_id)
        if as_json:
            print_json({**rec.to_dict(), "events": [e.to_dict() for e in events]})
            return
        table = Table(title=f"deployment {rec.id}: {rec.kind} {rec.version} ({rec.status})")
        for col in ("at", "node", "phase", "from", "to", "detail"):
            table.add_column(col)
        for e in events:
            table.add_row(e.to_dict()["at"], e.node, e.phase, e.from_version or "-",
                          e.to_version or "-", escape(cell(e.detail, 120)))
        out.print(table)
        return
    records = [_as_shown(r) for r in journal.deployments(env_name, limit=limit)]
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    table = Table(title=f"{env_name}: deployments")
    for col in ("id", "kind", "version", "status", "start (UTC)", "took", "by"):
        table.add_column(col)
    table.add_column("summary", overflow="fold", ratio=1)
    colours = {"succeeded": "green", "failed": "red", "rolled_back": "yellow",
               "cancelled": "yellow", "running": "cyan", "refused": "yellow", "abandoned": "red"}
    for r in records:
        d = r.to_dict()
        took = f"{r.ended_at - r.started_at:.0f}s" if r.ended_at else "-"
        table.add_row(str(r.id), r.kind, r.version, f"[{colours.get(r.status, 'white')}]{r.status}[/]",
                      d["start"][5:16].replace("T", " "), took, r.actor.split("@")[0],
                      escape(cell(r.summary, 160)))
    out.print(table)


def _as_shown(record: DeploymentRecord) -> DeploymentRecord:
    """A deployment as `history` shows it: one still recorded as running whose process is gone
    is abandoned (the next deployment or `recover` records it as failed)."""
    if not is_abandoned(record):
        return record
    return dataclasses.replace(record, status="abandoned", summary=ABANDONED_SUMMARY)


@click.command()
@env_option
@click.option("--version", "version", required=True, help="Release to plan for.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@config_option
def plan(env_name: str, version: str, as_json: bool, config_path: Path | None) -> None:
    """Show the batches, load-balancer operations and capacity floor; changes nothing."""
    validate_version(version, where="--version")
    config = get_config(config_path)
    if config.environment(env_name).strategy.kind == "blue-green":
        _plan_blue_green(config, env_name, version, as_json)
        return
    with _engine(config, env_name, read_only=True) as engine:
        release = engine.verify_release(version)
        the_plan, facts, lb = engine.plan(version)
    env = config.environment(env_name)
    backend = env.load_balancer.backend
    servers = {n.name: n.lb_server for n in engine.nodes}
    on = ", ".join(env.load_balancer.all_hosts)

    def operations(server: str) -> list[str]:
        return [
            f"on {on}: set server {backend}/{server} state drain; wait for 0 sessions "
            f"(<= {env.load_balancer.drain_timeout:g}s); state maint",
            f"switch to {version}, restart ({env.app.supervisor}), smoke {env.app.health.path} "
            f"(<= {env.app.health.deadline:g}s)",
            f"on {on}: set server {backend}/{server} state ready; wait until UP",
        ]

    ops = operations("<server>")
    data = {
        "env": env_name, "version": version, "sha256": release.sha256, **the_plan.to_dict(),
        "current": {n: f.current or None for n, f in facts.items()},
        "load_balancer": {n: (lb[s].label if s in lb else None) for n, s in servers.items()},
        "per_node_operations": ops,
        "lb_servers": servers,
        "prestage": env.strategy.prestage,
        "on_failure": env.strategy.on_failure,
    }
    if as_json:
        print_json(data)
        return
    out.print(f"[bold]plan[/]: deploy {version} to {env_name} (signature verified, sha256 "
              f"{release.sha256[:16]}...)")
    out.print(f"fleet: {len(the_plan.fleet)} node(s); capacity floor: {the_plan.min_healthy} in "
              f"service at all times; on failure: {env.strategy.on_failure}")
    if the_plan.skipped:
        out.print(f"already on {version}: {', '.join(the_plan.skipped)}")
    if env.strategy.prestage and the_plan.targets:
        out.print(f"pre-stage: pull + verify + unpack on {', '.join(the_plan.targets)} in parallel")
    for b in the_plan.batches:
        label = "canary batch" if b.canary else "batch"
        out.print(f"{label} {b.index}: {', '.join(b.nodes)}")
    example = the_plan.targets[0] if the_plan.targets else engine.nodes[0].name
    out.print(f"per node, e.g. {example} (likewise for each node, with its own server):")
    for op in operations(servers[example]):
        out.print(f"  - {escape(op)}")
    for note in the_plan.notes:
        out.print(f"note: {note}")
    if not the_plan.targets:
        out.print("nothing to do")


def _plan_blue_green(config: Config, env_name: str, version: str, as_json: bool) -> None:
    env = config.environment(env_name)
    lb = env.load_balancer
    with _deployment(config, env_name, read_only=True) as bg:
        assert isinstance(bg, BlueGreen)
        release = bg.verify_release(version)
        live = bg.live_leg()
        idle = bg.idle_of(live)
        facts = {leg: bg.leg_engines[leg].probe() for leg in bg.legs}
    on = ", ".join(lb.all_hosts)
    idle_nodes = list(facts[idle])
    steps = [
        f"release {version} to the idle leg {idle} ({', '.join(idle_nodes)}), all nodes at once "
        f"(pre-stage, switch, restart, smoke {env.app.health.path} on each; they take no live traffic)",
        f"smoke the leg through the preview route {env.strategy.preview_url}",
        f"on {on}: set map {lb.legs_map} {lb.live_key} {bg.legs[idle].backend}  "
        f"(one operation: live traffic moves from {live} to {idle})",
        "soak under analysis; on a breach: set map back to "
        f"{bg.legs[live].backend} at once" if bg.soaks else "no soak configured (no analysis)",
        f"after the soak: {env.strategy.after_soak}"
        + (f" ({live} receives {version} too)" if env.strategy.after_soak == "uplift"
           else f" ({live} stays on its release as the fallback)"),
    ]
    data = {
        "env": env_name, "version": version, "sha256": release.sha256, "strategy": "blue-green",
        "live": live, "idle": idle,
        "legs": {leg: {n: f.current or None for n, f in fs.items()} for leg, fs in facts.items()},
        "steps": steps,
    }
    if as_json:
        print_json(data)
        return
    out.print(f"[bold]plan[/]: blue-green deploy of {version} to {env_name} (signature verified, "
              f"sha256 {release.sha256[:16]}...)")
    for leg, fs in facts.items():
        versions = ", ".join(sorted({f.current or "-" for f in fs.values()}))
        out.print(f"leg {leg}{' (live)' if leg == live else ''}: {', '.join(fs)} on {versions}")
    for i, step in enumerate(steps, 1):
        out.print(f"{i}. {escape(step)}")


@click.command()
@env_option
@config_option
def recover(env_name: str, config_path: Path | None) -> None:
    """Put healthy nodes that deployer left out of the load balancer back into service.

    Only nodes the journal says a deployment took out; a node someone else put in maintenance
    is left as it is."""
    config = get_config(config_path)
    with _engine(config, env_name, reporter=ConsoleReporter()) as engine:
        _recover(config, env_name, engine)


def _recover(config: Config, env_name: str, engine: Engine) -> None:
    backend = config.environment(env_name).load_balancer.backend
    states = engine.lb_states()
    journal = journal_for(config)
    journal.mark_abandoned(env_name)
    ours = left_out_by_deployer(journal, env_name, [n.name for n in engine.nodes])
    out_nodes = []
    for n in engine.nodes:
        s = states.get(n.lb_server)
        if s is None or s.admin == "ready":
            continue
        if n.name in ours:
            out_nodes.append(n)
        else:
            console.print(
                f"{n.name}: {escape(s.label)} on the load balancer, not set by deployer; left as it is"
            )
    if not out_nodes:
        console.print("no node that deployer took out of the load balancer is out; nothing to recover")
        return
    facts = engine.probe()
    with held(engine.lock, on_note=lambda text: console.print(escape(text))):
        dep = journal.start_deployment(env=env_name, app=engine.env.app.name, kind="recover",
                                       version="-", command=engine.command)
        left = []
        for node in out_nodes:
            f = facts[node.name]
            if f.healthy:
                engine.lb.set_state(backend, node.lb_server, "ready")
                journal.record_phase(dep, node.name, "rejoined", from_version=f.current,
                                     to_version=f.current, detail="healthy; put back into service")
                console.print(f"{node.name}: healthy on {f.current}; put back into service")
            else:
                left.append(node.name)
                journal.record_phase(dep, node.name, "out_of_service", from_version=f.current,
                                     detail=f"unhealthy: {f.health_detail}")
                console.print(f"[red]{node.name}[/]: unhealthy ({f.health_detail}); left out")
        status_ = "failed" if left else "succeeded"
        journal.finish_deployment(dep, status_, f"left out: {', '.join(left)}" if left else "recovered")
    if left:
        raise DeployerError(
            f"{', '.join(left)} still unhealthy and out of service",
            hint=f"deployer rollback --env {env_name}",
        )


@click.command()
@env_option
@click.option("--force", is_flag=True,
              help="Remove the lock even if its holder's lease has not expired (needs --reason).")
@click.option("--reason", default=None, help="Why (kept in the journal and on the lock's host).")
@config_option
def unlock(env_name: str, force: bool, reason: str | None, config_path: Path | None) -> None:
    """Remove an environment's lock whose holder is gone (its lease expired, or its process
    is gone from this host); --force --reason removes a live holder's lock too."""
    reason = (reason or "").strip()
    if force and not reason:
        raise UsageError(
            "--force needs --reason: removing a live deployment's lock is recorded with why",
            hint=f"deployer unlock --env {env_name} --force --reason 'the runner died with the VM'",
        )
    config = get_config(config_path)
    env = config.environment(env_name)
    lock = lock_for(config, env_name)
    removed = lock.remove(by=actor(), reason=reason, force=force)
    if removed is None:
        console.print(f"environment {env_name!r} is not locked ({escape(lock.where)})")
        return
    how = "forced" if force else "removed a stale lock"
    summary = f"{how}: the lock of {removed.describe()} at {lock.where}"
    if reason:
        summary += f"; reason: {reason}"
    journal = journal_for(config)
    dep = journal.start_deployment(
        env=env_name, app=env.app.name, kind="unlock", version="-",
        command=shlex.join(["deployer", *sys.argv[1:]]),
        details={"removed": removed.to_dict(), "where": lock.where, "force": force,
                 "reason": reason},
    )
    journal.finish_deployment(dep, "succeeded", summary)
    console.print(f"removed the lock of {escape(removed.describe())} ({escape(lock.where)}); "
                  f"recorded as deployment {dep} in the journal")


def register(cli: click.Group) -> None:
    for cmd in (deploy, rollback, status, history, plan, recover, unlock):
        cli.add_command(cmd)
