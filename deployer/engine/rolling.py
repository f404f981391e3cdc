"""The rolling strategy: batches through one fleet, never below the capacity floor.

Before each batch (a safe point: every node of the last batch is back in service) the checks
decide whether to go on, the load balancer is read again (an operator's new maintenance, the
capacity floor), and then the batch runs: drain, switch, restart, smoke, rejoin. A node failing
its smoke check is reverted by the playbook; the deployment then stops and rolls back the nodes
it updated (``on_failure: rollback``) or leaves them (``halt``). Soak analysis runs after the
canary batch and watches while the later batches roll (or soaks after each batch).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from .._errors import (
    DeployerError,
    DeploymentFailed,
    DeploymentRefused,
    Interrupted,
    LoadBalancerError,
)
from ..adapters.inventory import Node
from ..adapters.loadbalancer import ServerState
from ..adapters.runner import RunResult
from ..analysis import Soak, Verdict
from ..config import RollingStrategy
from .events import SoakJudged
from .fleet import Fleet, held_text
from .gated import GatedRollout
from .history import ran_successfully, rollback_target
from .model import NodeStatus
from .plan import Batch, DeploymentPlan, NodePlan, Plan, Refusal, Step, make_plan
from .rollout import Accounting, Rollout
from .run import Run, Stopped
from .safepoints import SafePoint
from .soaking import Soaks
from .states import NodePhase, updated_before
from .strategy import Execution, StepsResult
from .variables import base_vars

__all__ = ["Rolling", "RollingExecution", "operations"]

P = NodePhase


def operations(fleet: Fleet, version: str, server: str) -> tuple[str, ...]:
    """What happens to one node of a batch, on the load balancer and on the node."""
    env = fleet.env
    lb = env.load_balancer
    on = ", ".join(lb.all_hosts)
    return (
        f"on {on}: set server {fleet.backend}/{server} state drain; wait for 0 sessions "
        f"(<= {lb.drain_timeout:g}s); state maint",
        f"switch to {version}, restart ({env.app.supervisor}), smoke {env.app.health.path} "
        f"(<= {env.app.health.deadline:g}s)",
        f"on {on}: set server {fleet.backend}/{server} state ready; wait until UP",
    )


class Rolling:
    """``strategy.kind: rolling``."""

    kind = "rolling"

    def __init__(self, fleet: Fleet, *, soaks: Soaks | None = None) -> None:
        self.fleet = fleet
        self.soaks = soaks

    @property
    def nodes(self) -> list[Node]:
        return list(self.fleet.nodes)

    def begin(self, run: Run) -> RollingExecution:
        return RollingExecution(self, run)

    def previous_on_nodes(self) -> list[str]:
        """Each node's ``previous`` release, read from the nodes."""
        facts, _ = self.fleet.survey("probe.yml", base_vars(self.fleet.env), lambda: False)
        return [f.previous for f in facts.values()]

    def rollback_target(self) -> str:
        return rollback_target(self.fleet.journal, self.fleet.env_name,
                               previous_on_nodes=self.previous_on_nodes)


class RollingExecution(Execution):
    """One rolling deployment."""

    def __init__(self, strategy: Rolling, run: Run) -> None:
        super().__init__(run)
        self.strategy = strategy
        self.fleet = strategy.fleet
        self.config: RollingStrategy = _rolling(self.fleet)
        self.rollout = Rollout(run, self.fleet, run.release)
        self.lb: dict[str, ServerState] = {}
        self.prestage_failure = ""
        self.watching: Soak | None = None
        self.hint = ""
        self.warnings: list[str] = []
        # Soak this deployment? (A rollback to a release that ran here before is not soaked
        # unless analysis.on_rollback says so; a resume acts as a rollback or as what it
        # finishes: see Run.acts_as.)
        self.soaks = strategy.soaks if self._soaked() else None
        # A step of a larger deployment (a blue-green leg): the caller reaches the safe points.
        self.nested = False
        # The deployment's one Ansible run, from pre-staging to the last batch (see .gated):
        # set for the session of a pre-staged deployment of its own.
        self.one_run: GatedRollout | None = None

    def _soaked(self) -> bool:
        soaks = self.strategy.soaks
        if soaks is None:
            return False
        if self.run.acts_as != "rollback" or soaks.config.on_rollback == "soak":
            return True
        return not ran_successfully(self.fleet.journal, self.fleet.env_name, self.run.release.version)

    def node_status(self) -> dict[str, NodeStatus]:
        return self.rollout.tracker.status

    def session(self) -> AbstractContextManager[object]:
        """A pre-staged deployment of its own runs in one Ansible run (see :mod:`.gated`),
        ended on the way out of the session, before a stop or a failure is handled. Without
        pre-staging each batch is a run of its own, and so is a blue-green leg (one batch, with
        no safe point of its own)."""
        if not self.config.prestage:
            return super().session()
        self.one_run = GatedRollout(self.rollout)
        return self.one_run

    def perform_nested(self, plan: DeploymentPlan) -> StepsResult:
        """The steps of an already read and planned execution, as one step of a larger
        deployment (a blue-green leg): no safe point of its own, the caller's around it."""
        self.nested = True
        try:
            return self.steps(plan)
        except (Stopped, Interrupted, DeploymentFailed) as exc:
            return self.handle(exc)

    # -- preflight and plan ---------------------------------------------------------------

    def read(self, *, stage: bool) -> None:
        if self.strategy.soaks is not None and self.soaks is None:
            self.run.note(
                f"not soaking: a rollback to {self.run.release.version}, which ran here before "
                "(analysis.on_rollback: skip)"
            )
        if self.soaks is not None:
            self.soaks.preflight(self.fleet.backend, self.fleet.config_file)
        self.lb, result = self.rollout.read(stage=stage, runner=self.one_run)
        self.prestage_failure = self.rollout.prestage_failure(result)

    def plan(self) -> DeploymentPlan:
        rollout, fleet, version = self.rollout, self.fleet, self.run.release.version
        held = rollout.held
        nodes: list[NodePlan] = []
        targets: list[str] = []
        for node in fleet.nodes:
            f = rollout.facts.get(node.name)
            s = self.lb.get(node.lb_server)
            label = s.label if s is not None else ""
            current = f.current if f else ""
            if node.name in held:
                how = ("the deployment is refused for it (strategy.operator_maintenance: refuse)"
                       if self.config.operator_maintenance == "refuse"
                       else "left as it is (strategy.operator_maintenance: skip)")
                reason = f"{held[node.name].label}, put there by someone else: {how}"
                nodes.append(NodePlan(node.name, current, False, reason, label))
            elif f is not None and f.unreachable:
                nodes.append(NodePlan(node.name, "", False, "unreachable: "
                                      + (f.unreachable_reason or "no answer"), label))
            elif not self._in_scope(node.name):
                out = s is not None and not s.in_service
                nodes.append(NodePlan(node.name, current, False, self._kept(node.name) + (
                    "; put back into service if healthy" if out else ""), label))
            elif rollout.already_there(node.name, self.lb):
                nodes.append(NodePlan(node.name, current, False,
                                      f"already on {version}, healthy and in service", label))
            else:
                why = f"{current or 'nothing'} -> {version}"
                if f is not None and f.current == version:
                    why = (f"on {version} but not healthy: redeployed" if not f.healthy
                           else f"on {version} but out of service ({label}): redeployed")
                nodes.append(NodePlan(node.name, current, True, why, label))
                targets.append(node.name)
        batches = make_plan(fleet.names(), targets, self.config, source=fleet.config_file,
                            unavailable=len(held))
        refusals, notes = self._predict(batches)
        steps: list[Step] = []
        if self.config.prestage and targets:
            steps.append(Step("prestage", "pre-stage: pull + verify + unpack on "
                              f"{', '.join(targets)} in parallel (they keep serving)", tuple(targets)))
        servers = {n.name: n.lb_server for n in fleet.nodes}
        total = len(batches.batches)
        for b in batches.batches:
            what = "canary batch" if b.canary else "batch"
            steps.append(Step(
                "batch", f"{what} {b.index}/{total}: {', '.join(b.nodes)}", b.nodes,
                SafePoint.BEFORE_BATCH.value,
                tuple(op for n in b.nodes for op in operations(fleet, version, servers[n])),
            ))
            if self.soaks is not None and b is not batches.batches[-1] and (
                    b.index == 1 or self.soaks.when == "after_each_batch"):
                steps.append(Step("soak", f"soak {version} on the updated nodes for up to "
                                  f"{self.soaks.duration:g}s", b.nodes))
        warnings: list[str] = []
        if self.soaks is not None and batches.batches:
            steps.append(Step("soak", "soak watch ends with the last batch" if total > 1 else
                              f"soak {version} for up to {self.soaks.duration:g}s"))
            warnings.append(self._traffic_warning(batches.batches[0]))
        return DeploymentPlan(
            strategy="rolling", version=version, kind=self.run.kind, nodes=tuple(nodes),
            steps=tuple(steps), refusals=tuple(refusals), notes=tuple([*batches.notes, *notes]),
            warnings=tuple(w for w in warnings if w), batches=batches,
        )

    def _traffic_warning(self, first: Batch) -> str:
        """Whether the soak after the first batch can get enough requests at today's traffic
        (its servers get their share of the backend's)."""
        assert self.soaks is not None
        serving = [n.name for n in self.fleet.nodes
                   if n.lb_server in self.lb and self.lb[n.lb_server].in_service]
        soaked = [n for n in serving if n in first.nodes]
        share = len(soaked) / len(serving) if serving else 1.0
        return self.soaks.sample_warning(self.fleet.backend, new_share=share)

    def _in_scope(self, name: str) -> bool:
        resume = self.run.resume
        return resume is None or resume.scope is None or name in resume.scope

    def _kept(self, name: str) -> str:
        """Why a resume rolling back leaves a node on what it runs."""
        resume = self.run.resume
        assert resume is not None
        before = resume.from_versions.get(name, "")
        f = self.rollout.facts.get(name)
        running = (f.current if f else "") or "nothing"
        if not before:
            return (f"kept on {running}: it ran nothing before deployment {resume.deployment} "
                    "(its first release), so there is nothing to roll it back to")
        return (f"kept on {running}: it ran {before} before deployment {resume.deployment}, not "
                f"{self.run.release.version} (a resume rolls back to one release)")

    def _inherit(self, name: str) -> str:
        """A resume that finishes: a node the interrupted deployment already updated (skipped
        here) is this run's to roll back on a failure, to what it had before; said in its
        reason ("" for any other node)."""
        resume, version = self.run.resume, self.run.release.version
        f = self.rollout.facts.get(name)
        if (resume is None or resume.mode != "finish" or f is None or f.current != version
                or not self.rollout.already_there(name, self.lb)):
            return ""
        before = resume.from_versions.get(name, "")
        if not before or before == version:
            return ""
        self.rollout.tracker[name].from_version = before
        self.rollout.inherited.add(name)
        return updated_before(before, resume.deployment)

    def _predict(self, batches: Plan) -> tuple[list[Refusal], list[str]]:
        """Every refusal the deployment would make, in the order it would make them."""
        refusals: list[Refusal] = []
        notes: list[str] = []
        fleet, rollout = self.fleet, self.rollout
        refusal = fleet.refusal_for_held(rollout.held)
        if refusal is not None:
            refusals.append(Refusal(refusal[0], 9, refusal[1]))
        elif rollout.held:
            notes.append(f"left as they are and not deployed to: {held_text(rollout.held)}")
        unreachable = rollout.unreachable()
        if unreachable:
            reasons = "; ".join(f"{n}: {rollout.facts[n].unreachable_reason or 'no answer'}"
                                for n in unreachable)
            refusals.append(Refusal(f"cannot reach {', '.join(unreachable)} ({reasons})", 9,
                                    "check the nodes' SSH access, then run the deployment again"))
        if self.prestage_failure:
            refusals.append(Refusal(self.prestage_failure, 9))
        in_service = [n for n in fleet.nodes
                      if n.lb_server in self.lb and self.lb[n.lb_server].in_service]
        if batches.batches and not in_service:
            notes.append(
                f"no node is in service on the load balancer now (a first deployment?): the "
                f"capacity floor ({batches.min_healthy}) cannot be kept while none serves, so "
                "it applies once nodes are in service"
            )
        done: list[str] = []
        for i, batch in enumerate(batches.batches):
            shortfall = fleet.capacity_shortfall(batch, batches, self.lb, back_in_service=done)
            if shortfall is not None:
                refusals.append(Refusal(
                    shortfall.text(), 9 if i == 0 else 10,
                    "wait until enough nodes are back in service, or lower strategy.min_healthy "
                    f"in {fleet.config_file}",
                    when="before any node leaves the load balancer" if i == 0
                    else f"before batch {batch.index}, after changing the earlier batches",
                ))
                break
            done += batch.nodes
        return refusals, notes

    # -- steps ----------------------------------------------------------------------------

    def steps(self, plan: DeploymentPlan) -> StepsResult:
        run, rollout, tracker = self.run, self.rollout, self.rollout.tracker
        version = run.release.version
        first = plan.refused
        if first is not None:
            raise DeploymentRefused(first.reason, hint=first.hint or None)
        for name, s in rollout.held.items():
            rollout.leave_alone(name, s)
        reasons = {n.name: n.reason for n in plan.nodes}
        kept = [n for n in tracker.names() if not self._in_scope(n) and n not in rollout.held]
        for name in tracker.names():
            if name not in plan.targets and name not in rollout.held and name not in kept:
                tracker.move(name, P.SKIPPED, reasons.get(name, f"already on {version}")
                             + self._inherit(name))
        for name in plan.targets:
            tracker.move(name, P.STAGED if self.config.prestage else P.PENDING)
        assert plan.batches is not None
        batches = plan.batches
        for note in plan.notes:
            if note.startswith("no node is in service"):
                run.note(note)
        if not self.nested:
            for warning in plan.warnings:
                run.note(warning, level="warning")
        def begin() -> None:
            """The before_start safe point, then (a resume rolling back) nodes it cannot roll
            back keep what they run, in service."""
            if not self.nested:
                self.start(plan)
            if kept:
                out = [n for n in kept if (state := self.lb.get(tracker[n].node.lb_server)) is not None
                       and not state.in_service]
                for name in kept:
                    if name not in out:
                        tracker.move(name, P.SKIPPED, self._kept(name))
                rollout.put_back({n: self._kept(n) for n in out}, self.lb)

        if not plan.targets:
            begin()
            summary = f"every node already runs {version}; nothing to do"
            if kept:
                summary = f"no node to roll back to {version}{self._kept_summary(kept)}"
            return StepsResult("succeeded", summary)
        total = len(batches.batches)
        # Pre-staged, the batches go on in the deployment's one run, waiting at the plan's gate
        # since pre-staging (see session). Otherwise each batch is a run of its own.
        runs: GatedRollout | _BatchRuns = (self.one_run if self.one_run is not None
                                           else _BatchRuns(rollout, batches, total=total))
        begin()
        runs.start(batches, total=total)
        for batch in batches.batches:
            label = f"{'canary batch' if batch.canary else 'batch'} {batch.index}/{total}"
            if not self.nested:
                run.safe_point(SafePoint.BEFORE_BATCH, label=label, index=batch.index,
                               changed=self.changed)
            batch = rollout.check_batch(batch, batches)
            if not batch.nodes:
                runs.skip(batch)
                continue
            result = runs.run_batch(batch)
            if run.stop.is_set() and result.status == "canceled":
                raise Interrupted("stopped by the operator during a batch")
            if not result.succeeded:
                failed = [n for n in batch.nodes if tracker[n].phase is not P.DONE]
                why = f" ({result.error})" if result.error else ""
                raise DeploymentFailed(rollout.failure_text(failed) + why)
            self._analyse(batch, batches)
            if self.config.pause_between_batches and batch is not batches.batches[-1]:
                self._pause(self.config.pause_between_batches)
        updated = [n for n in plan.targets if tracker[n].phase is P.DONE]
        summary = f"{len(updated)} node(s) now run {version}" + self._kept_summary(kept)
        if rollout.held:
            summary += f"; left as they are: {', '.join(rollout.held)}"
        return StepsResult("succeeded", summary, warnings=self.warnings)

    def _kept_summary(self, kept: list[str]) -> str:
        if not kept:
            return ""
        back = self.rollout.rejoined
        text = f"; kept on what they run: {', '.join(kept)}"
        return text + (f" ({', '.join(back)} put back into service)" if back else "")

    def _pause(self, seconds: float) -> None:
        self.run.note(f"pausing {seconds:g}s before the next batch")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.run.stop.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                return  # the safe point before the next batch stops the deployment

    # -- soak analysis --------------------------------------------------------------------

    def _groups(self) -> tuple[list[str], list[str]]:
        """Load-balancer servers on the new release (updated here, or already on it) and on the
        old one (the baseline), leaving out nodes someone else took out."""
        new: list[str] = []
        old: list[str] = []
        version = self.run.release.version
        for name, st in self.rollout.tracker.status.items():
            if name in self.rollout.held:
                continue
            on_new = (st.phase is P.DONE or name in self.rollout.inherited
                      or (st.phase is P.SKIPPED and st.from_version == version))
            (new if on_new else old).append(st.node.lb_server)
        return new, old

    def _analyse(self, batch: Batch, batches: Plan) -> None:
        """After a batch: soak (after the canary batch, or every batch), or look at the soak
        watching while batches roll; a breach fails the deployment like a failed smoke check."""
        soaks = self.soaks
        if soaks is None:
            return
        run = self.run
        version = run.release.version
        new, old = self._groups()
        first, last = batch is batches.batches[0], batch is batches.batches[-1]
        backend = self.fleet.backend
        if first or soaks.when == "after_each_batch":
            self._end_watch()
            run.note(f"soaking {version} on {', '.join(new)} for up to {soaks.duration:g}s "
                     f"(baseline: {', '.join(old) or 'none'})")
            scope = f"after batch {batch.index}"
            run.waiting_for = f"the soak {scope} (up to {soaks.duration:g}s)"
            try:
                verdict = soaks.run(events=run.events, scope=scope, version=version,
                                    backend=backend, new=new, old=old, stopped=run.abort)
            finally:
                run.waiting_for = ""
            self._judged(verdict, scope)
            if not last:
                self.watching = soaks.watch(events=run.events, scope="while the later batches roll",
                                            version=version, backend=backend, new=new, old=old)
            return
        if self.watching is not None:
            if self.watching.breached():
                watch, self.watching = self.watching, None
                self._judged(watch.stop(), f"while batch {batch.index} rolled")
            elif self.watching.haproxy is not None:
                self.watching.haproxy.set_groups({"new": new, "old": old})
        if last:
            self._end_watch(judge=True)

    def _end_watch(self, *, judge: bool = False) -> None:
        watch, self.watching = self.watching, None
        if watch is None:
            return
        verdict = watch.stop()
        if judge:
            self._judged(verdict, "while the later batches rolled")

    def _judged(self, verdict: Verdict, when: str) -> None:
        """Publish a soak's verdict; raise DeploymentFailed when it failed (a rollback goes on:
        its release is what the environment is escaping to)."""
        line = verdict.line()
        tolerated = verdict.failed and self.run.acts_as == "rollback"
        self.run.publish(SoakJudged(scope=when, subject="analysis", outcome=str(verdict.outcome),
                                    line=line, verdict=verdict.to_dict(), tolerated=tolerated))
        self.run.note(f"{when}: {line}", level="warning" if verdict.failed else "info")
        if tolerated:
            self.warnings.append(
                f"the rollback's soak {when} breached: {line}; the rollback went on to every node "
                "(the release it left is the one being escaped)"
            )
            return
        if verdict.failed:
            self._end_watch()
            version = self.run.release.version
            hint = ""
            if verdict.breach is not None and verdict.breach.value is None:
                hint = ("no data: the rules saw too few requests (analysis.min_samples over "
                        "analysis.window); for an environment without traffic set analysis.no_data: "
                        "pass, or add further smoke tests (analysis.smoke) that send traffic")
            raise DeploymentFailed(f"{version} failed its soak {when}: {line}", hint=hint or None)

    # -- the end --------------------------------------------------------------------------

    def handle(self, exc: Stopped | Interrupted | DeploymentFailed | LoadBalancerError) -> StepsResult:
        self._end_watch()
        run, rollout, tracker = self.run, self.rollout, self.rollout.tracker
        if isinstance(exc, Stopped):
            return self._stopped(exc.error, status="cancelled" if isinstance(exc.error, Interrupted)
                                 else "stopped")
        if isinstance(exc, Interrupted):
            return self._stopped(exc, status="cancelled")
        summary = str(exc)
        hint = exc.hint or ""
        if tracker.untouched:
            why = _without_prefix(summary)
            tracker.close_untouched(f"not deployed: {why}")
            return StepsResult("refused", _nothing_changed(summary), hint)
        status = "failed"
        if run.abort.is_set():
            status = "cancelled"
        elif not rollout.make_caught_safe():
            summary += "; reverting the nodes caught mid-change failed"
        elif run.high_risk:
            summary += f"; High Risk, halted with nothing rolled back: {self.states()}"
        elif self.config.on_failure == "rollback" and run.acts_as != "rollback":
            updated = rollout.updated()
            if rollout.roll_back_updated():
                status = "rolled_back"
                kept = [n for n in updated if n in rollout.held]
                updated = [n for n in updated if n not in rollout.held]
                if updated:
                    summary += f"; rolled back {', '.join(updated)}"
                if kept:
                    summary += f"; left as they are, taken out by someone else: {', '.join(kept)}"
            else:
                summary += "; rolling back the updated nodes failed"
        if status == "rolled_back" and tracker.in_phase(P.FAILED):
            status = "failed"
        return StepsResult(status, summary, hint, warnings=self.warnings)

    def _stopped(self, error: DeployerError, *, status: str) -> StepsResult:
        rollout, tracker = self.rollout, self.rollout.tracker
        summary = error.message
        if tracker.untouched:
            # Stopped before any node left the load balancer: nothing to go back from.
            tracker.close_untouched(f"not deployed: {_without_prefix(summary)}")
            summary = _nothing_changed(summary)
            return StepsResult(status, summary, error.hint or "", stop_error=error)
        rollout.make_caught_safe()
        done = rollout.updated()
        if done:
            self.run.note(
                f"{', '.join(done)} finished before the stop and keep {self.run.release.version}; "
                f"run 'deployer rollback --env {self.fleet.env_name}' to go back"
            )
        else:
            self.run.note("no node had finished before the stop: none runs the new release")
        return StepsResult(status, summary, error.hint or "", stop_error=error)

    def account(self) -> Accounting:
        self._end_watch()
        accounting = Accounting()
        self.rollout.account(accounting)
        return accounting


class _BatchRuns:
    """Each batch in an Ansible run of its own (:meth:`Rollout.run_batch`): the way without
    pre-staging, where a batch also reads, stages and checks its nodes (``deploy.yml``)."""

    def __init__(self, rollout: Rollout, plan: Plan, *, total: int) -> None:
        self.rollout = rollout
        self.plan = plan
        self.total = total

    def start(self, plan: Plan, *, total: int) -> None:
        """Nothing to start: each batch starts a run of its own."""

    def run_batch(self, batch: Batch) -> RunResult:
        return self.rollout.run_batch(batch, self.plan, total=self.total)

    def skip(self, batch: Batch) -> None:
        return None


def _rolling(fleet: Fleet) -> RollingStrategy:
    strategy = fleet.env.strategy
    assert isinstance(strategy, RollingStrategy)
    return strategy


def _without_prefix(text: str) -> str:
    return text.removeprefix("not deployed: ")


def _nothing_changed(summary: str) -> str:
    """The summary of a deployment that changed no node, saying so once."""
    if "nothing was changed" in summary or "no node was" in summary:
        return summary
    return f"{summary}; nothing was changed"

