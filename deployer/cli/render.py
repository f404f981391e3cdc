"""How the commands show things: a deployment's events as live lines, its outcome, its plan.

The live view is a subscriber of the deployment's event stream (:class:`ConsoleView`), like the
journal and ``--events``: one line per node phase change, batch and message, stamped with the
seconds since the command started; it works in a terminal and in CI logs. Tables are not cut
when the output is not a terminal (see ``_common``).
"""

from __future__ import annotations

import time

from rich.markup import escape
from rich.table import Table

from ..engine.events import (
    BatchStarted,
    CheckVerdictEvent,
    NodePhaseChanged,
    Note,
    Published,
    Subscriber,
)
from ..engine.model import Outcome
from ..engine.plan import DeploymentPlan
from ..engine.states import NodePhase
from ._common import cell, console, out

__all__ = ["PHASE_STYLE", "ConsoleView", "print_outcome", "print_plan"]

PHASE_STYLE = {
    NodePhase.DONE: "green", NodePhase.REVERTED: "yellow", NodePhase.FAILED: "bold red",
    NodePhase.REVERTING: "yellow", NodePhase.SKIPPED: "dim", NodePhase.DRAINING: "cyan",
    NodePhase.SMOKE: "magenta", NodePhase.REJOINING: "cyan", NodePhase.DEPLOYING: "blue",
}
_PHASES = {p.value: p for p in NodePhase}
_WITH_DETAIL = (NodePhase.FAILED, NodePhase.REVERTED, NodePhase.SKIPPED, NodePhase.REVERTING)


class ConsoleView(Subscriber):
    """Live progress on stderr, one line per node phase change, batch and message."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def _stamp(self) -> str:
        return f"[dim]{time.monotonic() - self.t0:7.2f}s[/]"

    def on_event(self, published: Published) -> None:
        if self.quiet:
            return
        ev = published.event
        if isinstance(ev, NodePhaseChanged):
            self._node(ev)
        elif isinstance(ev, BatchStarted):
            what = "rollback batch" if ev.rollback else ("canary batch" if ev.canary else "batch")
            count = f"{ev.index}/{ev.total}" if ev.total else str(ev.index)
            leg = f" (leg {ev.leg})" if ev.leg else ""
            console.print(f"{self._stamp()} [bold]{what} {count}[/]{leg}: {', '.join(ev.nodes)}")
        elif isinstance(ev, Note) and ev.text:
            style = "yellow" if ev.level == "warning" else ""
            text = escape(ev.text)
            console.print(f"{self._stamp()} {f'[{style}]{text}[/]' if style else text}")
        elif isinstance(ev, CheckVerdictEvent) and ev.decision != "continue":
            console.print(f"{self._stamp()} [yellow]check {escape(ev.check)}: {ev.decision}[/] "
                          f"at {ev.point}: {escape(ev.reason)}")

    def _node(self, ev: NodePhaseChanged) -> None:
        phase = _PHASES.get(ev.phase)
        if phase is None or phase in (NodePhase.STAGING, NodePhase.STAGED):
            return  # staging is quiet; marks (left alone, out of service) come with a message
        style = PHASE_STYLE.get(phase, "white")
        extra = ""
        if ev.out_of_lb_s is not None:
            extra = f" [dim](out of the load balancer {ev.out_of_lb_s:.2f}s)[/]"
        detail = f" [dim]{escape(ev.detail)}[/]" if ev.detail and phase in _WITH_DETAIL else ""
        console.print(f"{self._stamp()} {ev.node:<12} [{style}]{phase.value}[/]{extra}{detail}")


def print_outcome(outcome: Outcome) -> None:
    table = Table(title=f"deployment {outcome.deployment_id}: {outcome.kind} {outcome.version}")
    for col in ("node", "from", "to", "result", "out of LB"):
        table.add_column(col, no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for st in outcome.nodes.values():
        style = PHASE_STYLE.get(st.phase, "white")
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
    if outcome.uid:
        console.print(f"  deployment id: {outcome.uid}", highlight=False)
    for line in outcome.warnings:
        console.print(f"  [yellow]warning:[/] {escape(line)}")
    for line in outcome.left_alone:
        console.print(f"  left as it was (not deployer's to change): {escape(line)}")
    for fix in outcome.fix_commands:
        console.print(f"  fix: [bold]{fix}[/]")


def print_plan(plan: DeploymentPlan, *, env_name: str, sha256: str, on_failure: str,
               example_operations: tuple[str, ...], example_node: str) -> None:
    """The plan as text (``--json`` prints ``plan.to_dict()``)."""
    what = "blue-green deploy" if plan.strategy == "blue-green" else plan.kind
    out.print(f"[bold]plan[/]: {what} {plan.version} to {env_name} (signature verified, sha256 "
              f"{sha256[:16]}...)")
    batches = plan.batches
    if plan.strategy == "rolling" and batches is not None:
        out.print(f"fleet: {len(batches.fleet)} node(s); capacity floor: {batches.min_healthy} in "
                  f"service at all times; on failure: {on_failure}")
    elif plan.legs:
        out.print(f"live leg: {plan.legs['live']}; idle leg (receives {plan.version}): "
                  f"{plan.legs['idle']}; after the soak: {plan.legs['after_soak']}")
    table = Table(show_header=True, box=None, pad_edge=False)
    for col in ("node", *(("leg",) if plan.legs else ()), "runs", "load balancer", "target",
                "why"):
        table.add_column(col)
    for n in plan.nodes:
        leg = [n.leg or "-"] if plan.legs else []
        table.add_row(n.name, *leg, n.current or "-", n.load_balancer or "-",
                      "[green]yes[/]" if n.target else "no", escape(n.reason))
    out.print(table)
    if plan.strategy == "rolling" and batches is not None:
        for step in plan.steps:
            if step.kind == "prestage":
                out.print(step.label)
        for b in batches.batches:
            out.print(f"{'canary batch' if b.canary else 'batch'} {b.index}: {', '.join(b.nodes)}")
        if example_operations:
            out.print(f"per node, e.g. {example_node} (likewise for each node, with its own server):")
            for op in example_operations:
                out.print(f"  - {escape(op)}")
        for step in plan.steps:
            if step.kind == "soak":
                out.print(escape(step.label))
    else:
        for i, step in enumerate(plan.steps, 1):
            at = f" [dim](after the safe point {step.safe_point})[/]" if step.safe_point else ""
            out.print(f"{i}. {escape(step.label)}{at}")
    if plan.high_risk:
        out.print(f"[bold yellow]High Risk[/]: {escape(plan.high_risk)} (on a failure it halts: no "
                  "automatic rollback or switch back)")
    if plan.checks:
        out.print("gates (would they let it through now?):")
        for c in plan.checks:
            mark = "[green]pass[/]" if c["decision"] == "continue" else f"[bold red]{c['decision']}[/]"
            out.print(f"  {c['check']}: {mark}: {escape(c['reason'])}")
    for note in plan.notes:
        out.print(f"note: {escape(note)}")
    for warning in plan.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")
    for refusal in plan.refusals:
        when = "" if refusal.when.startswith("before any node") else f" {refusal.when}"
        out.print(f"[bold red]deploy will refuse{escape(when)}[/]: {escape(refusal.reason)} "
                  f"(exit {refusal.exit_code})")
        if refusal.hint:
            out.print(f"  hint: {escape(refusal.hint)}")
    if not plan.targets and not plan.refusals and plan.strategy == "rolling":
        out.print("nothing to do")
