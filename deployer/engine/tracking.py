"""Where each node of a deployment is: its phase, moved by what the playbook runs report.

The :class:`NodeTracker` turns the runner's events into node phases (which task file of which
role puts a node in which phase) and publishes every change as a
:class:`~deployer.engine.events.NodePhaseChanged` event, which the journal writes before the
node moves on: after a crash the journal still says which nodes were out of the load balancer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from ..adapters.inventory import Node
from ..adapters.runner import RunnerEvent, RunResult
from .events import EventStream, NodePhaseChanged, Note
from .model import NodeStatus
from .states import OUT_OF_SERVICE, NodePhase, can_move

__all__ = ["PHASE_BY_TASK_FILE", "UNTOUCHED", "NodeTracker"]

P = NodePhase

# Which task file of which role puts a node in which phase (see playbooks/tasks/roll_node.yml).
PHASE_BY_TASK_FILE: Mapping[tuple[str, str], NodePhase] = {
    ("deployer_release", "stage"): P.STAGING,
    ("deployer_lb_haproxy", "drain"): P.DRAINING,
    ("deployer_release", "activate"): P.DEPLOYING,
    ("deployer_smoke", "main"): P.SMOKE,
    ("deployer_lb_haproxy", "enable"): P.REJOINING,
    ("deployer_release", "revert"): P.REVERTING,
}

# Phases of a node this deployment has not taken out of the load balancer (yet).
UNTOUCHED = frozenset({P.PENDING, P.STAGING, P.STAGED, P.SKIPPED})

# Phases in which a node is caught mid-change when a run stops.
MID_CHANGE = frozenset({P.DRAINING, P.DEPLOYING, P.SMOKE, P.REJOINING})


class NodeTracker:
    """The phases of one deployment's nodes (or of one leg's, in blue-green)."""

    def __init__(
        self, nodes: Sequence[Node], events: EventStream, *, to_version: str, leg: str | None = None
    ) -> None:
        self.events = events
        self.status: dict[str, NodeStatus] = {
            n.name: NodeStatus(node=n, to_version=to_version, leg=leg) for n in nodes
        }
        # While set, every phase a run reports is this one (a revert's smoke and rejoin are
        # steps of reverting).
        self.collapse_to: NodePhase | None = None
        # Nodes whose drain timed out with sessions open, not said in an event yet.
        self._cut_unsaid: set[str] = set()

    def __getitem__(self, name: str) -> NodeStatus:
        return self.status[name]

    def __contains__(self, name: object) -> bool:
        return name in self.status

    def names(self) -> list[str]:
        return list(self.status)

    def in_phase(self, *phases: NodePhase) -> list[str]:
        return [n for n, st in self.status.items() if st.phase in phases]

    @property
    def untouched(self) -> bool:
        """No node has left the load balancer in this deployment."""
        return all(st.phase in UNTOUCHED for st in self.status.values())

    # -- runner events --------------------------------------------------------------------

    def on_event(self, ev: RunnerEvent) -> None:
        st = self.status.get(ev.host or "")
        if st is None:
            return
        if ev.facts.get("deployer_node_outcome"):
            st.outcome_fact = str(ev.facts["deployer_node_outcome"])
        if ev.kind == "item_ok" and (ev.role, ev.task_file) == ("deployer_lb_haproxy", "drain"):
            if ev.result.get("drain_timed_out"):
                # Taken out with sessions still open: the restart that follows cuts them. Said
                # with the node's next phase, so the journal keeps it.
                st.sessions_cut += int(ev.result.get("sessions") or 0)
                self._cut_unsaid.add(st.name)
            return
        if ev.kind == "failed" and not ev.ignore_errors:
            st.cause = st.cause or ev.message or f"task failed: {ev.task}"
        elif ev.kind == "unreachable":
            st.unreachable = True
            st.cause = st.cause or f"unreachable: {ev.message}"
        if ev.kind != "task_start" or ev.role is None or ev.task_file is None:
            return
        phase = PHASE_BY_TASK_FILE.get((ev.role, ev.task_file))
        if phase is None:
            return
        if self.collapse_to is not None:
            phase = self.collapse_to
        elif st.phase is P.REVERTING:
            return  # smoke/rejoin after a revert are steps of reverting
        self.move(st.name, phase)

    def settle(self, names: Iterable[str], result: RunResult, *, success: NodePhase) -> None:
        """Turn a finished run's per-host results into final phases."""
        for name in names:
            st = self.status[name]
            if name in result.unreachable_hosts:
                st.unreachable = True
                self.move(name, P.FAILED, st.cause or "unreachable")
            elif name in result.failed_hosts:
                if st.outcome_fact == "reverted" and st.phase is P.REVERTING:
                    self.move(name, P.REVERTED, st.cause)
                else:
                    self.move(name, P.FAILED, st.cause or "failed")
            elif result.status == "successful" and st.phase in OUT_OF_SERVICE | {P.STAGED, P.DONE}:
                self.move(name, success)

    # -- moves ----------------------------------------------------------------------------

    def move(self, name: str, phase: NodePhase, detail: str = "") -> None:
        st = self.status[name]
        if st.phase is phase:
            return
        if not can_move(st.phase, phase):
            # The node did something the state machine does not expect (an event missing or out
            # of order). Follow what it reported rather than drop it: the engine then acts on
            # where the node really is (checked against the load balancer at the end), and the
            # journal, which `recover` reads, keeps the change, with a note.
            note = f"unexpected move from {st.phase.value} to {phase.value}, recorded as reported"
            detail = f"{detail}; {note}" if detail else note
            self.events.publish(Note(text=f"warning: {name}: {note}", level="warning"))
        if name in self._cut_unsaid:
            self._cut_unsaid.discard(name)
            cut = (f"{st.sessions_cut} session(s) still open when load_balancer.drain_timeout ran "
                   "out: taken out anyway, cut by the restart")
            detail = f"{detail}; {cut}" if detail else cut
        now = time.time()
        if phase is P.DRAINING:
            st.out_since = now
        if phase in (P.DONE, P.REVERTED) and st.out_since is not None:
            st.out_seconds = now - st.out_since
            st.out_since = None
        st.phase = phase
        if detail:
            st.detail = detail
        self.events.publish(NodePhaseChanged(
            node=name, phase=phase.value, from_version=st.from_version, to_version=st.to_version,
            detail=detail, out_of_lb_s=None if st.out_seconds is None or phase not in (
                P.DONE, P.REVERTED) else round(st.out_seconds, 3),
            leg=st.leg,
        ))

    def mark(self, name: str, label: str, detail: str) -> None:
        """Record something about a node that is not a move of its phase (``left_alone``,
        ``out_of_service``): journalled with the node's versions, its phase unchanged."""
        st = self.status[name]
        self.events.publish(NodePhaseChanged(
            node=name, phase=label, from_version=st.from_version, to_version=st.to_version,
            detail=detail, leg=st.leg,
        ))

    def close_untouched(self, why: str) -> None:
        """Close every node of a deployment that stopped before any drain: skipped, saying why
        (with the node's own cause when it has one)."""
        for name, st in self.status.items():
            if st.phase is P.SKIPPED:
                continue
            detail = f"{why}: {st.cause}" if st.cause else why
            self.move(name, P.SKIPPED, detail)
