"""Putting a release on a set of nodes, and taking it off again: what both strategies do to
nodes (a rolling batch; a whole blue-green leg).

A :class:`Rollout` is one deployment's work on one :class:`~deployer.engine.fleet.Fleet`: it
pre-stages (or reads) the nodes, runs a batch (drain, switch, restart, smoke, rejoin: the
playbook reverts a node that fails its smoke check), reverts nodes caught mid-change, rolls
back nodes it updated, and at the end says which nodes it left out of the load balancer. Each
node's phase is kept by a :class:`~deployer.engine.tracking.NodeTracker`.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from .._errors import DeploymentFailed, DeploymentRefused, Interrupted, LoadBalancerError
from ..adapters.loadbalancer import ServerState
from ..adapters.runner import Runner, RunRequest, RunResult
from ..config import RollingStrategy
from .events import BatchStarted
from .fleet import Fleet
from .model import NodeFacts, Release
from .plan import Batch, Plan, batch_limits
from .run import Run
from .states import OUT_OF_SERVICE, NodePhase
from .tracking import MID_CHANGE, UNTOUCHED, NodeTracker
from .variables import base_vars, release_vars

__all__ = ["Accounting", "Rollout"]

P = NodePhase


class Accounting:
    """What a deployment left behind on one fleet: nodes out of the load balancer (deployer's
    to fix) and nodes someone else holds (theirs)."""

    def __init__(self) -> None:
        self.out_of_service: list[str] = []
        self.left_alone: list[str] = []


class Rollout:
    """One deployment's work on one fleet (see the module documentation)."""

    def __init__(self, run: Run, fleet: Fleet, release: Release) -> None:
        self.run = run
        self.fleet = fleet
        self.release = release
        self.env = fleet.env
        self.tracker = NodeTracker(fleet.nodes, run.events, to_version=release.version, leg=fleet.leg)
        self.facts: dict[str, NodeFacts] = {}
        # Nodes someone else put in MAINT/DRAIN, with their state: never touched by this run.
        self.held: dict[str, ServerState] = {}
        # A resume that finishes: nodes the interrupted deployment had already updated (skipped
        # here, on the release already). They are rolled back with this run's own on a failure,
        # to the release they had before it (their from_version).
        self.inherited: set[str] = set()
        # Nodes this run put back into service without deploying to them (see put_back).
        self.rejoined: list[str] = []

    @property
    def strategy(self) -> RollingStrategy:
        """How this fleet's nodes are rolled (a blue-green leg's: all at once)."""
        assert isinstance(self.env.strategy, RollingStrategy)
        return self.env.strategy

    def _vars(self, release: Release | None = None) -> dict[str, object]:
        group, backend = self.env.group, self.fleet.backend
        if release is None:
            return base_vars(self.env, group=group, backend=backend)
        return release_vars(self.env, release, group=group, backend=backend)

    # -- reading and pre-staging ----------------------------------------------------------

    def read(self, *, stage: bool, runner: Runner | None = None
             ) -> tuple[dict[str, ServerState], RunResult | None]:
        """Read the load balancer, then every node (pre-staging the release on each when
        ``stage`` and the strategy pre-stages), then the load balancer again; note the nodes an
        operator holds. ``runner``: what pre-stages (the deployment's one run, see :mod:`.gated`;
        by default a run of ``prestage.yml`` of its own). Raises DeploymentRefused when the load
        balancer cannot be read, and Interrupted when the operator stops the pre-staging
        (nothing changed)."""
        # The load balancer is read before any node is: without it there is no capacity floor
        # and no telling an operator's maintenance from ours, so no deployment.
        self.held = self.fleet.held_by_others(
            self.fleet.read_lb("before touching any node", refuse=True), self.tracker.status
        )
        refusal = self.fleet.refusal_for_held(self.held)
        if stage and refusal is not None:
            # Refused before even pre-staging: nothing is touched (a plan reads on, to show
            # everything the deployment would meet).
            raise DeploymentRefused(refusal[0], hint=refusal[1])
        prestage = stage and self.strategy.prestage
        reading = len(self.fleet.nodes) - len(self.held)
        if prestage:
            # One run reads every node and pulls, verifies and unpacks the release on it while
            # it keeps serving (a no-op where it is already staged).
            self.run.note(f"reading {reading} node(s) and pre-staging {self.release.version} "
                          "(they keep serving)")
            facts, result = self.fleet.survey(
                "prestage.yml", self._vars(self.release), self.run.stop.is_set, exclude=self.held,
                on_event=self.tracker.on_event, runner=runner,
            )
            if result.status == "canceled":
                raise Interrupted("stopped by the operator while pre-staging")
        else:
            self.run.note(f"reading the state of {reading} node(s)")
            facts, result = self.fleet.survey(
                "probe.yml", self._vars(), self.run.abort.is_set, exclude=self.held,
                on_event=self.tracker.on_event,
            )
        self.facts = facts
        lb = self.fleet.read_lb("after reading the nodes", refuse=True)
        self.held.update(self.fleet.held_by_others(lb, self.tracker.status))
        for name, f in facts.items():
            self.tracker[name].from_version = f.current
        return lb, result if prestage else None

    def prestage_failure(self, result: RunResult | None) -> str:
        """Why pre-staging failed ("" when it did not)."""
        if result is None or (not result.failed_hosts and result.status == "successful"):
            return ""
        bad = sorted(result.failed_hosts)
        details = "; ".join(f"{n}: {self.tracker[n].cause}" for n in bad)
        return f"pre-staging {self.release.version} failed ({details or result.status})"

    def unreachable(self) -> list[str]:
        return [n for n, f in self.facts.items() if f.unreachable]

    def already_there(self, name: str, lb: Mapping[str, ServerState]) -> bool:
        node = self.fleet.node(name)
        f = self.facts.get(name)
        if f is None:
            return False
        in_service = lb[node.lb_server].in_service if node.lb_server in lb else True
        return f.current == self.release.version and bool(f.healthy) and in_service

    def leave_alone(self, name: str, state: ServerState) -> None:
        """Skip a node someone else took out of the load balancer, saying so."""
        note = f"left as it is: {state.label} on the load balancer, not set by deployer"
        self.tracker.move(name, P.SKIPPED, note)
        self.run.note(f"{name}: {note}")

    # -- a batch --------------------------------------------------------------------------

    def check_batch(self, batch: Batch, plan: Plan) -> Batch:
        """Read the load balancer before a batch: leave out (or refuse) nodes someone else has
        taken out since, and stop if the batch would take the fleet below its capacity floor.
        Returns the batch to run."""
        states = self.fleet.read_lb(f"before batch {batch.index}")
        held = {n: s for n, s in self.fleet.held_by_others(states, self.tracker.status).items()
                if n in batch.nodes}
        if held:
            refusal = self.fleet.refusal_for_held(held)
            if refusal is not None:
                raise DeploymentFailed(refusal[0], hint=refusal[1])
            self.held.update(held)
            for name, s in held.items():
                self.leave_alone(name, s)
            batch = self.fleet.without(batch, held)
        shortfall = self.fleet.capacity_shortfall(batch, plan, states)
        if shortfall is not None:
            raise DeploymentFailed(
                shortfall.text(),
                hint="wait until enough nodes are back in service, or lower strategy.min_healthy "
                f"in {self.fleet.config_file}",
            )
        return batch

    def run_batch(self, batch: Batch, plan: Plan, *, total: int) -> RunResult:
        """Drain, switch, restart, smoke and rejoin the batch's nodes in a run of their own (the
        playbook reverts a node that fails its smoke check). The engine runs every batch of a
        pre-staged rollout in one run instead (:mod:`.gated`); this is the way without
        pre-staging."""
        self.run.publish(BatchStarted(index=batch.index, total=total, nodes=list(batch.nodes),
                                      canary=batch.canary, leg=self.fleet.leg))
        extravars = self._deploy_vars(batch.nodes)
        extravars["deployer_serial"] = len(batch.nodes)
        result = self.fleet.runner.run(
            RunRequest(
                # After pre-staging (nodes read, staged and their variables checked) a batch
                # only deploys; without it, deploy.yml also stages and checks.
                playbook="deploy_batch.yml" if self.strategy.prestage else "deploy.yml",
                inventory=self.env.inventory, hosts=list(batch.nodes),
                extravars=extravars, forks=max(plan.forks, len(batch.nodes)),
            ),
            self.tracker.on_event,
            self.run.abort.is_set,  # a first Ctrl-C lets the batch finish; a second stops it
        )
        self.tracker.settle(batch.nodes, result, success=P.DONE)
        return result

    def rollout_plan(self, plan: Plan) -> dict[str, object]:
        """What the batches' play of the deployment's one run reads of ``plan`` (see
        :mod:`.gated`): the targets in the plan's order, the batch sizes, what each target ran
        before (the way back), and whether any has an activation hook (the play is loaded
        without the hook steps only when pre-staging heard from every target that it has none)."""
        targets = [n for b in plan.batches for n in b.nodes]
        return {
            "deployer_rollout_hosts": targets,
            "deployer_batch_sizes": [len(b.nodes) for b in plan.batches],
            "deployer_rollout_hooks": any(
                self.facts[n].activation_hooks if n in self.facts else True for n in targets
            ),
            "deployer_known_releases": self._known_releases(targets),
        }

    def _deploy_vars(self, nodes: Sequence[str]) -> dict[str, object]:
        extravars = dict(self._vars(self.release))
        # What the pre-stage (or probe) run has just read, so the batch does not read it again.
        extravars["deployer_known_releases"] = self._known_releases(nodes)
        return extravars

    def _known_releases(self, nodes: Sequence[str]) -> dict[str, dict[str, object]]:
        release = self.release
        return {
            name: {
                "current": self.facts[name].current,
                "previous": self.facts[name].previous,
                "staged_sha256": {release.version: release.sha256}
                if self.strategy.prestage else {},
            }
            for name in nodes if name in self.facts
        }

    def failure_text(self, failed: Iterable[str]) -> str:
        parts = []
        for name in failed:
            st = self.tracker[name]
            what = {
                P.REVERTED: f"{name} was reverted to {st.from_version or 'nothing'}",
                P.FAILED: f"{name} FAILED and may be out of service",
            }.get(st.phase, f"{name} is {st.phase.value}")
            parts.append(f"{name}: {st.cause or 'failed'} — {what}")
        return f"{self.release.version} failed on " + "; ".join(parts)

    # -- going back -----------------------------------------------------------------------

    def revert(self, names: Sequence[str], to_version: str, forks: int) -> bool:
        tracker = self.tracker
        tracker.collapse_to = P.REVERTING
        try:
            for n in names:
                tracker.move(n, P.REVERTING, f"rolling back to {to_version}")
            extravars = dict(self._vars())
            extravars["deployer_revert_to"] = to_version
            extravars["deployer_version"] = to_version
            extravars["deployer_serial"] = len(names)
            result = self.fleet.runner.run(
                RunRequest(
                    playbook="revert.yml", inventory=self.env.inventory, hosts=list(names),
                    extravars=extravars, forks=max(forks, len(names)),
                ),
                tracker.on_event,
                self.run.abort.is_set,
            )
            tracker.settle(names, result, success=P.REVERTED)
            return result.succeeded
        finally:
            tracker.collapse_to = None

    def make_caught_safe(self) -> bool:
        """Revert nodes caught mid-change (a stop, a crashed run) so none stays out of service."""
        caught = self.tracker.in_phase(*MID_CHANGE)
        if not caught or self.run.abort.is_set():
            return not caught
        self.run.note("making nodes caught mid-change safe: " + ", ".join(caught))
        ok = True
        for version in sorted({self.tracker[n].from_version for n in caught}):
            group = [n for n in caught if self.tracker[n].from_version == version]
            # Without an earlier release there is nothing to go back to: leave it, report it.
            ok = bool(version) and self.revert(group, version, len(group)) and ok
        return ok

    def _updated(self, name: str) -> bool:
        phase = self.tracker[name].phase
        return phase is P.DONE or (phase is P.SKIPPED and name in self.inherited)

    def updated(self) -> list[str]:
        return [n for n in self.tracker.names() if self._updated(n)]

    def roll_back_updated(self) -> bool:
        """Roll back the nodes this deployment updated, in reverse order, batch by batch."""
        tracker = self.tracker
        updated = [n for n in reversed(tracker.names()) if self._updated(n)]
        updated = [n for n in updated if tracker[n].from_version]
        if updated:
            # Without the load balancer, each revert stops before its node (it cannot drain it).
            with contextlib.suppress(LoadBalancerError):
                self.note_taken_back(self.fleet.lb_states())
            updated = [n for n in updated if n not in self.held]
        if not updated:
            return True
        self.run.note("rolling back " + ", ".join(updated))
        size, _, _ = batch_limits(self.strategy, len(self.fleet.nodes), source=self.fleet.config_file)
        batches = [updated[i : i + size] for i in range(0, len(updated), size)]
        for i, names in enumerate(batches, start=1):
            if self.run.abort.is_set():
                return False
            self.run.publish(BatchStarted(index=i, total=0, nodes=list(names), rollback=True,
                                          leg=self.fleet.leg))
            ok = True
            for from_version in Counter(tracker[n].from_version for n in names):
                group = [n for n in names if tracker[n].from_version == from_version]
                if not self.revert(group, from_version, size):
                    ok = False
            if not ok:
                return False
        return True

    def put_back(self, reasons: Mapping[str, str], states: Mapping[str, ServerState]) -> None:
        """Put back into service nodes this run does not deploy to (each with the reason) that
        an earlier deployment left out of the load balancer (a resume keeps them on what they
        run): each healthy one is enabled (``rejoined`` in the journal); an unhealthy one stays
        out and is this run's to report (``failed``, so the accounting names it and the fix)."""
        for name, why in reasons.items():
            node = self.fleet.node(name)
            s = states.get(node.lb_server)
            if s is None or s.in_service or name in self.held:
                continue
            f = self.facts.get(name)
            running = (f.current if f else "") or "nothing"
            if f is not None and f.healthy:
                self.tracker.move(name, P.SKIPPED, why)
                self.fleet.lb.set_state(self.fleet.backend, node.lb_server, "ready")
                note = f"healthy on {running}; put back into service ({s.label} before)"
                self.tracker.mark(name, "rejoined", note)
                self.rejoined.append(name)
                self.run.note(f"{name}: {note}")
            else:
                health = (f.health_detail if f else "") or "not read"
                self.tracker.move(name, P.FAILED, f"{why}; left out of the load balancer and not "
                                  f"healthy on {running} ({health})")

    def note_taken_back(self, states: Mapping[str, ServerState]) -> None:
        """Nodes this deployment put back into service (updated or reverted) that someone else
        has since put in MAINT or DRAIN are theirs from then on, like a node held before its
        batch: left as they are (not rolled back, not reported as deployer's to recover),
        journalled and reported once."""
        for name, st in self.tracker.status.items():
            s = states.get(st.node.lb_server)
            if name in self.held or st.phase not in (P.DONE, P.REVERTED) or s is None or s.admin == "ready":
                continue
            self.held[name] = s
            running = st.to_version if st.phase is P.DONE else st.from_version
            note = (f"left as it is on {running}: {s.label} on the load balancer, set by someone "
                    "else after deployer had put it back")
            self.tracker.mark(name, "left_alone", note)
            self.run.note(f"{name}: {note}")

    # -- the end --------------------------------------------------------------------------

    def account(self, accounting: Accounting) -> None:
        """Read the load balancer one last time: nodes this deployment took out and that are
        still out (deployer's to fix, journalled as ``out_of_service``), and nodes someone else
        holds (theirs)."""
        states: dict[str, ServerState] = {}
        if not self.tracker.untouched:
            try:
                states = self.fleet.lb_states()
            except Exception as exc:  # the LB itself may be the problem; say so, keep going
                self.run.note(f"could not read the load balancer: {exc}", level="warning")
        self.note_taken_back(states)
        accounting.left_alone += [f"{n} ({s.label})" for n, s in self.held.items()]
        for st in self.tracker.status.values():
            if st.phase in UNTOUCHED or st.name in self.held:
                continue  # not taken out by this deployment, or someone else's now: not its to fix
            s = states.get(st.node.lb_server)
            # The load balancer's word wins; without it, trust the node's last phase.
            out = not s.in_service if s is not None else st.phase in OUT_OF_SERVICE
            if out:
                label = s.label if s is not None else "unknown"
                accounting.out_of_service.append(f"{st.name} ({st.phase.value}, load balancer: {label})")
                self.tracker.mark(st.name, "out_of_service",
                                  f"left out of the load balancer ({label}): {st.detail}")
