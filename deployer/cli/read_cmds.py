"""`deployer status|history|plan`: commands that read and change nothing.

They open the journal read-only (SQLite's ``mode=ro``), so they can run beside a deployment or
on a copy of a journal kept as evidence.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .._errors import DeployerError, LoadBalancerError, LockError
from .._versions import validate_version
from ..adapters.journal import ABANDONED_SUMMARY, DeploymentRecord, is_abandoned
from ..adapters.loadbalancer import ServerState
from ..adapters.lock import LockView
from ..engine.bluegreen import BlueGreen
from ..engine.left_out import left_out_by_deployer
from ..engine.model import NodeFacts
from ..engine.rolling import operations
from ..engine.variables import base_vars
from ._common import cell, config_option, console, env_option, get_config, out, print_json
from ._fixes import ssh_fix
from ._wiring import Environment, journal_for
from .deploy_cmds import wired
from .gate_cmds import GateOptions, gate_options

__all__ = ["history", "plan", "status"]


def _read_fleet(environment: Environment) -> tuple[dict[str, NodeFacts], dict[str, Any], str]:
    """Every node's facts and every backend's servers (an error reading the load balancer is
    returned, not raised: what the nodes said is still shown)."""
    facts: dict[str, NodeFacts] = {}
    lb: dict[str, Any] = {}
    lb_error = ""
    for fleet in environment.fleets.values():
        read, _ = fleet.survey("probe.yml", base_vars(fleet.env, backend=fleet.backend), lambda: False)
        facts.update(read)
        try:
            lb.update(fleet.lb_states())
        except LoadBalancerError as exc:
            lb_error = lb_error or str(exc)
    return facts, lb, lb_error


@click.command()
@env_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@config_option
def status(env_name: str, as_json: bool, config_path: Path | None) -> None:
    """Each node: version, load-balancer state, health."""
    with wired(config_path, env_name, quiet=True, read_only=True) as environment:
        facts, lb, lb_error = _read_fleet(environment)
        legs = _legs(environment) if isinstance(environment.strategy, BlueGreen) else None
        lock: LockView | None = None
        lock_error = ""
        try:
            lock = environment.lock.show()
        except LockError as exc:
            lock_error = str(exc)
    leg_of = {n.name: leg for leg, fleet in environment.fleets.items() if leg for n in fleet.nodes}
    rows = []
    nodes = [n for fleet in environment.fleets.values() for n in fleet.nodes]
    left, running = _out_by_deployments(environment, lb)
    notes = {
        **{n: f"out of the load balancer for deployment {d}, still running" for n, d in running.items()},
        **{n: f"left out by deployment {d}; run `deployer recover --env {env_name}`"
           for n, d in left.items()},
    }
    for node in nodes:
        f = facts.get(node.name, NodeFacts())
        s = lb.get(node.lb_server)
        detail = f.health_detail
        note = notes.get(node.name)
        if note and not f.unreachable:
            detail = f"{note}; {detail}" if f.healthy is False and detail else note
        rows.append({
            **({"leg": leg_of.get(node.name)} if legs else {}),
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
    unread = [n for n in nodes if facts.get(n.name, NodeFacts()).unreachable]
    if as_json:
        print_json({
            "env": env_name, "nodes": rows, "load_balancer_error": lb_error or None,
            **({"blue_green": legs} if legs else {}),
            "locked_by": lock.to_dict() if lock is not None else None,
            "lock": {"where": environment.lock.where, "error": lock_error or None},
        })
    else:
        _print_status_table(environment, rows, facts, notes)
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
    if lb_error:
        raise LoadBalancerError(lb_error)  # shown above with what could be read; exit 7


def _legs(environment: Environment) -> dict[str, Any]:
    """A blue-green environment's legs: which is live, each one's backend and nodes."""
    bg = environment.strategy
    assert isinstance(bg, BlueGreen)
    try:
        live: str | None = bg.live_leg()
        error = ""
    except DeployerError as exc:
        live, error = None, str(exc)
    legs: dict[str, dict[str, Any]] = {}
    for name, fleet in bg.legs.items():
        leg = bg.config.legs[name]
        legs[name] = {"backend": leg.backend, "group": leg.group, "live": name == live,
                      "nodes": fleet.names()}
    return {"live": live, "preview_url": bg.config.preview_url, "legs": legs, "error": error}


def _out_by_deployments(
    environment: Environment, lb: dict[str, ServerState]
) -> tuple[dict[str, int], dict[str, int]]:
    """The nodes out of the load balancer that a deployment took out, by the journal: those it
    left out (deployer's to put back: ``recover``), and those a deployment still running has
    out now; each with that deployment's id. An operator's MAINT or DRAIN is in neither."""
    out = [n.name for fleet in environment.fleets.values() for n in fleet.nodes
           if (s := lb.get(n.lb_server)) is not None and s.admin != "ready"]
    if not out:
        return {}, {}
    left: dict[str, int] = {}
    running: dict[str, int] = {}
    journal = environment.journal
    for name, event in left_out_by_deployer(journal, environment.name, out).items():
        record = journal.deployment(event.deployment_id)
        if record is not None and record.status == "running" and not is_abandoned(record):
            running[name] = event.deployment_id
        else:
            left[name] = event.deployment_id
    return left, running


def _gist(reason: str) -> str:
    """The gist of an SSH failure: on one line, without Ansible's preamble."""
    return " ".join(reason.replace("Failed to connect to the host via ssh:", "").split())


def _short(reason: str, limit: int = 80) -> str:
    """The gist of an SSH failure, for a table cell of the status table (cut in a terminal)."""
    return cell(_gist(reason), limit)


def _print_status_table(
    environment: Environment, rows: list[dict[str, Any]], facts: dict[str, NodeFacts],
    notes: dict[str, str],
) -> None:
    table = Table(title=f"{environment.name}: {environment.env.app.name}")
    with_legs = any("leg" in r for r in rows)
    for col in ("node", *(("leg",) if with_legs else ()), "address", "version", "load balancer",
                "healthy", "detail"):
        table.add_column(col)
    for r in rows:
        h = r["healthy"]
        healthy = "[green]yes[/]" if h is True else "[red]no[/]" if h is False else "[dim]unknown[/]"
        lbs = str(r["load_balancer"])
        lbs = f"[green]{lbs}[/]" if lbs.startswith("UP") else f"[yellow]{lbs}[/]"
        f = facts.get(str(r["node"]), NodeFacts())
        if f.unreachable:
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
@click.option("--deployment", "deployment_ref", default=None, metavar="ID",
              help="Show every node event of one deployment (its number or its global id).")
@config_option
def history(
    env_name: str, as_json: bool, limit: int, deployment_ref: str | None, config_path: Path | None
) -> None:
    """Past deployments: id, version, status, start, end (newest first). Reads the journal
    only: a deployment whose process ended without finishing is shown as abandoned."""
    config = get_config(config_path)
    config.environment(env_name)
    journal = journal_for(config, read_only=True)
    if deployment_ref is not None:
        found = journal.find(deployment_ref, env_name)
        if found is None:
            raise DeployerError(f"no deployment {deployment_ref} in environment {env_name!r}",
                                hint=f"deployer history --env {env_name} lists them")
        rec = _as_shown(found)
        events = journal.node_events(found.id)
        if as_json:
            print_json({**rec.to_dict(), "events": [e.to_dict() for e in events]})
            return
        table = Table(title=f"deployment {rec.id} ({rec.uid}): {rec.kind} {rec.version} ({rec.status})")
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
               "cancelled": "yellow", "running": "cyan", "refused": "yellow", "abandoned": "red",
               "stopped": "yellow", "paused": "cyan"}
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
@click.option("--rollback", "as_rollback", is_flag=True,
              help="Plan it as a rollback (soak and failure handling as for `rollback`).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@gate_options
@config_option
def plan(env_name: str, version: str, as_rollback: bool, as_json: bool, config_path: Path | None,
         **gate: Any) -> None:
    """Show what a deployment of VERSION would do: each node and why it is or is not a target,
    the steps and safe points, the capacity floor, each gate and whether it would let the
    deployment through now (and when the next window opens), and every refusal it would make
    (exiting with the code the deployment would have). Changes nothing."""
    validate_version(version, where="--version")
    gates = GateOptions(**gate)
    with wired(config_path, env_name, quiet=True, read_only=True, gates=gates) as environment:
        lifecycle = environment.lifecycle
        release = lifecycle.verify_release(version)
        the_plan = lifecycle.plan(version, kind="rollback" if as_rollback else "deploy",
                                  high_risk=gates.high_risk)
    env = environment.env
    fleet = next(iter(environment.fleets.values()))
    example = the_plan.targets[0] if the_plan.targets else fleet.nodes[0].name
    example_ops: tuple[str, ...] = ()
    with contextlib.suppress(StopIteration):
        node = next(n for f in environment.fleets.values() for n in f.nodes if n.name == example)
        owner = next(f for f in environment.fleets.values() if node in f.nodes)
        example_ops = operations(owner, version, node.lb_server)
    if as_json:
        print_json({
            "env": env_name, "sha256": release.sha256, **the_plan.to_dict(),
            "per_node_operations": list(operations(fleet, version, "<server>")),
            "prestage": env.strategy.prestage, "on_failure": env.strategy.on_failure,
        })
    else:
        from .render import print_plan

        print_plan(the_plan, env_name=env_name, sha256=release.sha256,
                   on_failure=env.strategy.on_failure, example_operations=example_ops,
                   example_node=example)
    first = the_plan.refusals[0] if the_plan.refusals else None
    if first is not None:
        what = "be refused" if first.exit_code != 10 else f"fail {first.when}"
        error = DeployerError(f"deploy would {what}: {first.reason}", hint=first.hint or None)
        error.exit_code = first.exit_code
        raise error
