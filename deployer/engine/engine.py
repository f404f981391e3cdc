"""The engine: rolls a release through a fleet, batch by batch, and reverts on failure.

It talks to the world only through the adapters' protocols: a :class:`Runner` for playbooks, a
load balancer (read-only checks and the safety net), the :class:`Journal`, and an artefact
store opener. Every node phase change is journalled as it happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._config import EnvironmentConfig
from .._errors import (
    ConfigError,
    DeploymentFailed,
    DeploymentRefused,
    FleetAtRiskError,
    Interrupted,
    LoadBalancerError,
)
from .._versions import validate_version
from ..adapters.inventory import Node
from ..adapters.journal import Journal
from ..adapters.loadbalancer import LoadBalancer, ServerState
from ..adapters.lock import DeploymentLock, Lease
from ..adapters.redaction import redacted_url
from ..adapters.runner import Runner, RunnerEvent, RunRequest, RunResult
from ..analysis import Soak, Verdict
from .left_out import left_out_by_deployer
from .locking import default_lock, locked_deployment
from .plan import Batch, Plan, batch_limits, make_plan
from .soaking import Soaks
from .states import OUT_OF_SERVICE, NodePhase, can_move

__all__ = [
    "Engine",
    "LoadBalancer",
    "NodeFacts",
    "NodeStatus",
    "Outcome",
    "Release",
    "Reporter",
]

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


@dataclass(frozen=True)
class Release:
    """A verified release: what nodes download and the digest they check."""

    app: str
    version: str
    url: str
    sha256: str
    size: int


@dataclass
class NodeFacts:
    current: str = ""
    previous: str = ""
    healthy: bool | None = None
    health_detail: str = ""
    # Why the node could not be reached (ssh's own words), when it could not.
    unreachable_reason: str = ""


@dataclass
class NodeStatus:
    node: Node
    phase: NodePhase = P.PENDING
    from_version: str = ""
    to_version: str = ""
    detail: str = ""
    unreachable: bool = False
    out_since: float | None = None
    out_seconds: float | None = None
    outcome_fact: str = ""
    # The first failure reported for this node: the root cause, not the cleanup's echo of it.
    cause: str = ""

    @property
    def name(self) -> str:
        return self.node.name


@dataclass
class Outcome:
    deployment_id: int
    kind: str
    version: str
    status: str  # succeeded | failed | rolled_back | cancelled | refused
    nodes: dict[str, NodeStatus]
    summary: str
    plan: Plan | None = None
    out_of_service: list[str] = field(default_factory=list)
    fix_commands: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    # Nodes someone else took out of the load balancer, left as they were (one line each).
    left_alone: list[str] = field(default_factory=list)
    # What to do next when the deployment was refused or failed.
    hint: str = ""
    # What a strategy adds (blue-green: the legs, the switches, the soak's verdict).
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.details,
            "deployment": self.deployment_id,
            "kind": self.kind,
            "version": self.version,
            "status": self.status,
            "summary": self.summary,
            "duration_s": round(self.ended - self.started, 3),
            "out_of_service": self.out_of_service,
            "fix": self.fix_commands,
            "left_alone": self.left_alone,
            "hint": self.hint or None,
            "nodes": {
                n: {
                    "phase": s.phase.value, "from": s.from_version, "to": s.to_version,
                    "detail": s.detail,
                    "out_of_lb_s": None if s.out_seconds is None else round(s.out_seconds, 3),
                }
                for n, s in self.nodes.items()
            },
        }


class Reporter:
    """Progress hooks; the default does nothing (the CLI prints, tests record)."""

    def phase(self, status: NodeStatus) -> None:
        pass

    def batch(self, batch: Batch, total: int, *, rollback: bool = False) -> None:
        pass

    def message(self, text: str) -> None:
        pass


StoreVerifier = Callable[[str], Release]


class Engine:
    def __init__(
        self,
        *,
        env_name: str,
        env: EnvironmentConfig,
        nodes: Sequence[Node],
        runner: Runner,
        journal: Journal,
        verify_release: StoreVerifier,
        lb: LoadBalancer,
        reporter: Reporter | None = None,
        command: str = "",
        config_file: str = "config",
        soaks: Soaks | None = None,
        lock: DeploymentLock | None = None,
    ) -> None:
        self.env_name = env_name
        self.env = env
        self.nodes = list(nodes)
        self.runner = runner
        self.journal = journal
        self.verify_release = verify_release
        self.lb = lb
        self.reporter = reporter or Reporter()
        self.command = command
        self.config_file = config_file
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._status: dict[str, NodeStatus] = {}
        self._facts: dict[str, NodeFacts] = {}
        self._deployment_id = 0
        self._collapse_to: NodePhase | None = None
        # Nodes someone else put in MAINT/DRAIN, with their state: never touched by this run.
        self._held: dict[str, ServerState] = {}
        self._hint = ""
        # False while this engine rolls one step of a larger deployment (a blue-green leg):
        # the caller finishes that deployment in the journal.
        self._owns_deployment = True
        # Soak analysis (the environment's analysis: section), and the soak left watching
        # while later batches roll.
        self.soaks = soaks
        self._watch: Soak | None = None
        # The environment's deployment lock, and the lease of it held while deploying.
        self.lock = lock or default_lock(journal, env_name)
        self._lease: Lease | None = None

    # -- operator control -----------------------------------------------------------------

    def request_stop(self) -> bool:
        """First call: stop after making the current batch safe. Second: abort now.

        Returns True if this call escalated to an immediate abort."""
        if self._stop.is_set():
            self._abort.set()
            return True
        self._stop.set()
        return False

    # -- read-only views ------------------------------------------------------------------

    def probe(self) -> dict[str, NodeFacts]:
        """Read each node's current/previous release and health (changes nothing)."""
        facts, _ = self._survey("probe.yml", self._base_vars(), lambda: self._abort.is_set())
        return facts

    def _survey(
        self, playbook: str, extravars: Mapping[str, Any], cancelled: Callable[[], bool],
        *, exclude: Iterable[str] = (),
    ) -> tuple[dict[str, NodeFacts], RunResult]:
        """Run a playbook on every node (but ``exclude``) that reports releases and health
        (probe.yml, or prestage.yml, which also stages the release) and collect what each node
        said."""
        left_out = set(exclude)
        nodes = [n for n in self.nodes if n.name not in left_out]
        facts = {n.name: NodeFacts() for n in nodes}

        def on_event(ev: RunnerEvent) -> None:
            self._on_event(ev)  # phases and causes, when a deployment is under way
            if ev.kind == "unreachable" and ev.host in facts:
                facts[ev.host].unreachable_reason = ev.message
            if ev.host not in facts or ev.kind not in ("ok", "failed"):
                return
            f = facts[ev.host]
            if "deployer_release_current" in ev.facts:
                f.current = str(ev.facts.get("deployer_release_current") or "")
                f.previous = str(ev.facts.get("deployer_release_previous") or "")
            if ev.role == "deployer_smoke":
                f.healthy = ev.kind == "ok" and bool(ev.result.get("healthy", ev.kind == "ok"))
                f.health_detail = str(ev.result.get("msg") or ev.message or "")

        result = self.runner.run(
            RunRequest(
                playbook=playbook,
                inventory=self.env.inventory,
                hosts=[n.name for n in nodes],
                extravars=extravars,
                forks=max(1, len(nodes)),
            ),
            on_event,
            cancelled,
        )
        # A run the operator stopped is not a failure to read: the caller sees it canceled.
        if result.error and result.status != "canceled":
            raise DeploymentFailed(f"could not read the nodes' state: {result.error}")
        for host in result.unreachable_hosts:
            if host in facts:
                facts[host].healthy = None
                facts[host].health_detail = "unreachable"
        return facts, result

    def lb_states(self) -> dict[str, ServerState]:
        """Every server of the backend; raises LoadBalancerError when it cannot be read."""
        return self.lb.servers(self.env.load_balancer.backend)

    def plan(self, version: str) -> tuple[Plan, dict[str, NodeFacts], dict[str, ServerState]]:
        """What a deploy of ``version`` would do, changing nothing."""
        validate_version(version)
        lb = self.lb_states()
        facts = self.probe()
        held = self.held_by_others(lb)
        targets = [
            n.name for n in self.nodes
            if n.name not in held and not self._already_there(n, version, facts, lb)
        ]
        plan = make_plan(
            [n.name for n in self.nodes], targets, self.env.strategy, source=self.config_file,
            unavailable=len(held),
        )
        notes = list(plan.notes)
        missing = self._missing_servers(lb)
        if missing:
            notes.append(f"deploy will refuse: {missing}")
        if held:
            what = _held_text(held)
            if self.env.strategy.operator_maintenance == "refuse":
                notes.append(
                    f"deploy will refuse: {what} (strategy.operator_maintenance: refuse)"
                )
            else:
                notes.append(f"left as they are and not deployed to: {what}")
        return dataclasses.replace(plan, notes=tuple(notes)), facts, lb

    def held_by_others(self, states: Mapping[str, ServerState]) -> dict[str, ServerState]:
        """Nodes in MAINT or DRAIN on the load balancer that deployer did not put there: neither
        this deployment nor an earlier one that left them out (the journal says which)."""
        held = {}
        for node in self.nodes:
            s = states.get(node.lb_server)
            st = self._status.get(node.name)
            if s is not None and s.admin != "ready" and (st is None or st.phase in UNTOUCHED):
                held[node.name] = s
        if held:
            for name in left_out_by_deployer(self.journal, self.env_name, held):
                del held[name]
        return held

    def _missing_servers(self, states: Mapping[str, ServerState]) -> str:
        missing = [f"{n.name} (server {n.lb_server!r})" for n in self.nodes if n.lb_server not in states]
        if not missing:
            return ""
        return (
            f"the load balancer ({self.lb.where}) has no server for "
            f"{', '.join(missing)} in backend {self.env.load_balancer.backend!r}"
        )

    def _read_lb(self, when: str) -> dict[str, ServerState]:
        """The load balancer's view of every node, or a DeploymentFailed saying why not."""
        try:
            states = self.lb_states()
        except LoadBalancerError as exc:
            raise DeploymentFailed(
                f"cannot read the load balancer {when}: {exc}",
                hint=exc.hint or "check load_balancer in the config",
            ) from None
        missing = self._missing_servers(states)
        if missing:
            raise DeploymentFailed(
                missing,
                hint=f"fix load_balancer.backend in {self.config_file}, or set deployer_lb_server "
                "for the node in the inventory",
            )
        return states

    def _refuse_if_held(self, held: Mapping[str, ServerState]) -> None:
        if held and self.env.strategy.operator_maintenance == "refuse":
            raise DeploymentFailed(
                f"not deployed: {_held_text(held)}; deployer does not touch a node someone else "
                "took out of the load balancer",
                hint="wait until they are back in service, or set strategy.operator_maintenance: "
                f"skip in {self.config_file} to deploy to the other nodes and leave them as they are",
            )

    def _already_there(
        self, node: Node, version: str, facts: Mapping[str, NodeFacts],
        lb: Mapping[str, ServerState],
    ) -> bool:
        f = facts[node.name]
        in_service = lb[node.lb_server].in_service if node.lb_server in lb else True
        return f.current == version and bool(f.healthy) and in_service

    # -- deploy ---------------------------------------------------------------------------

    def deploy(self, version: str, *, kind: str = "deploy") -> Outcome:
        validate_version(version)
        # Verify the release before touching anything: signature, identity, digest.
        release = self.verify_release(version)
        with locked_deployment(
            self.journal, self.lock, self.reporter, env_name=self.env_name,
            app=self.env.app.name, kind=kind, version=version, command=self.command,
            details={"sha256": release.sha256, "url": redacted_url(release.url)},
        ) as held:
            self._deployment_id, self._lease = held.deployment_id, held.lease
            return self._run_deploy(release, kind)

    def deploy_step(
        self, deployment_id: int, release: Release, kind: str, lease: Lease | None = None
    ) -> Outcome:
        """Roll ``release`` (already verified) through this engine's nodes as one step of a
        larger deployment, such as a blue-green leg: node phases are journalled under
        ``deployment_id``, which the caller holds the lock (``lease``) for and finishes."""
        self._deployment_id = deployment_id
        self._lease = lease
        self._owns_deployment = False
        return self._run_deploy(release, kind)

    def _run_deploy(self, release: Release, kind: str) -> Outcome:
        started = time.time()
        dep = self._deployment_id
        self._status = {n.name: NodeStatus(node=n, to_version=release.version) for n in self.nodes}
        self._held = {}
        self._hint = ""
        outcome_status = "succeeded"
        summary = ""
        plan: Plan | None = None
        try:
            # The load balancer is read before any node is: without it there is no capacity
            # floor and no telling an operator's maintenance from ours, so no deployment.
            self._held = self.held_by_others(self._read_lb("before touching any node"))
            self._refuse_if_held(self._held)
            if self.soaks is not None:
                self.soaks.preflight(self.env.load_balancer.backend, self.config_file)
            prestage = self.env.strategy.prestage
            if prestage:
                # One run reads every node and pulls, verifies and unpacks the release on it
                # while it keeps serving (a no-op where it is already staged).
                self.reporter.message(
                    f"reading {len(self.nodes) - len(self._held)} node(s) and pre-staging {release.version} "
                    "(they keep serving)"
                )
                facts, result = self._survey(
                    "prestage.yml", self._release_vars(release), self._stop.is_set,
                    exclude=self._held,
                )
                if result.status == "canceled":
                    raise Interrupted("stopped by the operator while pre-staging (no node was drained)")
            else:
                self.reporter.message(
                    f"reading the state of {len(self.nodes) - len(self._held)} node(s)"
                )
                facts, result = self._survey(
                    "probe.yml", self._base_vars(), self._abort.is_set, exclude=self._held
                )
            self._facts = facts
            lb = self._read_lb("after reading the nodes")
            self._held.update(self.held_by_others(lb))
            self._refuse_if_held(self._held)
            for name, f in facts.items():
                self._status[name].from_version = f.current
            unreachable = [n for n, f in facts.items() if f.health_detail == "unreachable"]
            if unreachable:
                self._nothing_changed("not deployed: a node is unreachable")
                raise DeploymentFailed(
                    f"cannot reach {', '.join(unreachable)}; nothing was changed",
                    hint="check the nodes' SSH access, then run the deployment again",
                )
            if prestage and (result.failed_hosts or result.status != "successful"):
                bad = sorted(result.failed_hosts)
                details = "; ".join(f"{n}: {self._status[n].cause}" for n in bad)
                self._nothing_changed("not deployed: pre-staging failed")
                raise DeploymentFailed(
                    f"pre-staging {release.version} failed ({details or result.status})"
                )
            for name, s in self._held.items():
                self._leave_alone(name, s)
            targets = [
                n.name for n in self.nodes
                if n.name not in self._held
                and not self._already_there(n, release.version, facts, lb)
            ]
            plan = make_plan(
                [n.name for n in self.nodes], targets, self.env.strategy, source=self.config_file,
                unavailable=len(self._held),
            )
            self.journal.update_details(
                dep, plan=plan.to_dict(),
                from_versions={n: s.from_version for n, s in self._status.items()},
            )
            for name in plan.skipped:
                if name not in self._held:
                    self._move(name, P.SKIPPED, f"already on {release.version}")
            for name in plan.targets:
                self._move(name, P.STAGED if prestage else P.PENDING)
            if not plan.targets:
                summary = f"every node already runs {release.version}; nothing to do"
                return self._finish(kind, release.version, "succeeded", summary, plan, started)

            done: list[str] = []
            for batch in plan.batches:
                if self._stop.is_set():
                    raise Interrupted("stopped by the operator before the next batch")
                if self._lease is not None:
                    # A safe point: every node of the last batch is back. Without the lock,
                    # touch nothing more (LockLostError ends the deployment, recorded).
                    self._lease.check()
                batch = self._check_capacity(batch, plan)
                if not batch.nodes:
                    continue
                self.reporter.batch(batch, len(plan.batches))
                result = self._run_batch(release, batch, plan)
                done.extend(n for n in batch.nodes if self._status[n].phase is P.DONE)
                if self._stop.is_set() and result.status == "canceled":
                    raise Interrupted("stopped by the operator during a batch")
                if not result.succeeded:
                    failed = [n for n in batch.nodes if self._status[n].phase is not P.DONE]
                    why = f" ({result.error})" if result.error else ""
                    raise DeploymentFailed(self._failure_text(failed, release.version) + why)
                self._analyse(batch, plan, release)
                if self.env.strategy.pause_between_batches and batch is not plan.batches[-1]:
                    self._pause(self.env.strategy.pause_between_batches)
            updated = [n for n in plan.targets if self._status[n].phase is P.DONE]
            summary = f"{len(updated)} node(s) now run {release.version}"
            if self._held:
                summary += f"; left as they are: {', '.join(self._held)}"
        except Interrupted as exc:
            outcome_status = "cancelled"
            summary = str(exc)
            if all(st.phase in UNTOUCHED for st in self._status.values()):
                # Stopped before any node left the load balancer: nothing to go back from.
                self._nothing_changed("not deployed: stopped by the operator")
                summary += "; no node was changed"
            else:
                self._make_interrupted_batch_safe()
                self.reporter.message(
                    "nodes finished before the stop keep the new release; "
                    f"run 'deployer rollback --env {self.env_name}' to go back"
                )
        except DeploymentFailed as exc:
            summary = str(exc)
            outcome_status = "failed"
            self._hint = exc.hint or ""
            if all(st.phase in UNTOUCHED for st in self._status.values()):
                outcome_status = "refused"
                summary += "; no node was changed"
                for name, st in self._status.items():
                    if st.phase is not P.SKIPPED:
                        self._move(name, P.SKIPPED, f"not deployed: {exc}")
            elif self._abort.is_set():
                outcome_status = "cancelled"
            elif not self._make_interrupted_batch_safe():
                summary += "; reverting the nodes caught mid-change failed"
            elif self.env.strategy.on_failure == "rollback" and kind != "rollback":
                updated = [n for n, st in self._status.items() if st.phase is P.DONE]
                if self._roll_back_updated_nodes():
                    outcome_status = "rolled_back"
                    kept = [n for n in updated if n in self._held]
                    updated = [n for n in updated if n not in self._held]
                    if updated:
                        summary += f"; rolled back {', '.join(updated)}"
                    if kept:
                        summary += f"; left as they are, taken out by someone else: {', '.join(kept)}"
                else:
                    summary += "; rolling back the updated nodes failed"
            if outcome_status == "rolled_back" and any(
                st.phase is P.FAILED for st in self._status.values()
            ):
                outcome_status = "failed"
        except BaseException as exc:  # crash or second Ctrl-C: record, never hide
            self._end_watch()
            outcome_status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            outcome = self._finish(kind, release.version, outcome_status, f"aborted: {exc}", plan, started)
            for line in outcome.out_of_service:
                self.reporter.message(f"out of service: {line}")
            for fix in outcome.fix_commands:
                self.reporter.message(f"fix: {fix}")
            raise
        return self._finish(kind, release.version, outcome_status, summary, plan, started)

    # -- soak analysis --------------------------------------------------------------------

    def _groups(self, version: str) -> tuple[list[str], list[str]]:
        """Load-balancer servers on the new release (updated here, or already on it) and on the
        old one (the baseline), leaving out nodes someone else took out."""
        new: list[str] = []
        old: list[str] = []
        for name, st in self._status.items():
            if name in self._held:
                continue
            on_new = st.phase is P.DONE or (st.phase is P.SKIPPED and st.from_version == version)
            (new if on_new else old).append(st.node.lb_server)
        return new, old

    def _analyse(self, batch: Batch, plan: Plan, release: Release) -> None:
        """After a batch: soak (after the canary batch, or every batch), or look at the soak
        watching while batches roll; a breach fails the deployment like a failed smoke check."""
        if self.soaks is None:
            return
        new, old = self._groups(release.version)
        first, last = batch is plan.batches[0], batch is plan.batches[-1]
        backend = self.env.load_balancer.backend
        if first or self.soaks.when == "after_each_batch":
            self._end_watch()
            self.reporter.message(
                f"soaking {release.version} on {', '.join(new)} for up to "
                f"{self.soaks.config.duration:g}s (baseline: {', '.join(old) or 'none'})"
            )
            verdict = self.soaks.run(
                version=release.version, backend=backend, new=new, old=old, stopped=self._abort
            )
            self._judged(verdict, release, f"after batch {batch.index}")
            if not last:
                self._watch = self.soaks.watch(version=release.version, backend=backend, new=new, old=old)
            return
        if self._watch is not None:
            if self._watch.breached():
                watch, self._watch = self._watch, None
                self._judged(watch.stop(), release, f"while batch {batch.index} rolled")
            elif self._watch.haproxy is not None:
                self._watch.haproxy.set_groups({"new": new, "old": old})
        if last:
            self._end_watch(release)

    def _end_watch(self, release: Release | None = None) -> None:
        watch, self._watch = self._watch, None
        if watch is None:
            return
        verdict = watch.stop()
        if release is not None:
            self._judged(verdict, release, "while the later batches rolled")

    def _judged(self, verdict: Verdict, release: Release, when: str) -> None:
        """Record a soak's verdict; raise DeploymentFailed when it failed."""
        line = verdict.line()
        self.journal.record_phase(
            self._deployment_id, "analysis", "soak_failed" if verdict.failed else "soaked",
            to_version=release.version, detail=f"{when}: {line}",
        )
        self.journal.update_details(self._deployment_id, analysis=verdict.to_dict())
        self.reporter.message(f"{when}: {line}")
        if verdict.failed:
            self._end_watch()
            raise DeploymentFailed(f"{release.version} failed its soak {when}: {line}")

    def _failure_text(self, failed: Iterable[str], version: str) -> str:
        parts = []
        for name in failed:
            st = self._status[name]
            what = {
                P.REVERTED: f"{name} was reverted to {st.from_version or 'nothing'}",
                P.FAILED: f"{name} FAILED and may be out of service",
            }.get(st.phase, f"{name} is {st.phase.value}")
            parts.append(f"{name}: {st.cause or 'failed'} — {what}")
        return f"{version} failed on " + "; ".join(parts)

    def _note_taken_back(self, states: Mapping[str, ServerState]) -> None:
        """Nodes this deployment put back into service (updated or reverted) that someone else
        has since put in MAINT or DRAIN are theirs from then on, like a node held before its
        batch: left as they are (not rolled back, not reported as deployer's to recover),
        journalled and reported once."""
        for name, st in self._status.items():
            s = states.get(st.node.lb_server)
            if name in self._held or st.phase not in (P.DONE, P.REVERTED) or s is None or s.admin == "ready":
                continue
            self._held[name] = s
            running = st.to_version if st.phase is P.DONE else st.from_version
            note = (f"left as it is on {running}: {s.label} on the load balancer, set by someone "
                    "else after deployer had put it back")
            self.journal.record_phase(
                self._deployment_id, name, "left_alone", from_version=st.from_version,
                to_version=st.to_version, detail=note,
            )
            self.reporter.message(f"{name}: {note}")

    def _leave_alone(self, name: str, state: ServerState) -> None:
        """Skip a node someone else took out of the load balancer, saying so."""
        note = f"left as it is: {state.label} on the load balancer, not set by deployer"
        self._move(name, P.SKIPPED, note)
        self.reporter.message(f"{name}: {note}")

    def _nothing_changed(self, why: str) -> None:
        """Close every node of a deployment that stopped before any drain."""
        for name, st in self._status.items():
            detail = f"{why}: {st.cause}" if st.cause else why
            self._move(name, P.SKIPPED, detail)

    def _check_capacity(self, batch: Batch, plan: Plan) -> Batch:
        """Read the load balancer before a batch: leave out (or refuse) nodes someone else has
        taken out since, and stop if the batch would take the fleet below its capacity floor.
        Returns the batch to run."""
        states = self._read_lb(f"before batch {batch.index}")
        held = {n: s for n, s in self.held_by_others(states).items() if n in batch.nodes}
        if held:
            self._refuse_if_held(held)
            self._held.update(held)
            for name, s in held.items():
                self._leave_alone(name, s)
            batch = dataclasses.replace(batch, nodes=tuple(n for n in batch.nodes if n not in held))
        by_server = {n.name: states[n.lb_server] for n in self.nodes}
        outside = [n for n, s in by_server.items() if n not in batch.nodes and s.in_service]
        removes_capacity = any(by_server[n].in_service for n in batch.nodes)
        if removes_capacity and len(outside) < plan.min_healthy:
            out = [f"{n} ({s.label})" for n, s in by_server.items() if not s.in_service]
            raise DeploymentFailed(
                f"capacity floor: only {len(outside)} node(s) would stay in service during batch "
                f"{batch.index} (floor {plan.min_healthy}; out of service now: "
                f"{', '.join(out) or 'none'}); stopped before touching " + ", ".join(batch.nodes),
                hint="wait until enough nodes are back in service, or lower strategy.min_healthy "
                f"in {self.config_file}",
            )
        return batch

    def _run_batch(self, release: Release, batch: Batch, plan: Plan) -> RunResult:
        extravars = dict(self._release_vars(release))
        extravars["deployer_serial"] = len(batch.nodes)
        # What the pre-stage (or probe) run has just read, so the batch does not read it again.
        extravars["deployer_known_releases"] = {
            name: {
                "current": self._facts[name].current,
                "previous": self._facts[name].previous,
                "staged_sha256": {release.version: release.sha256}
                if self.env.strategy.prestage else {},
            }
            for name in batch.nodes if name in self._facts
        }
        result = self.runner.run(
            RunRequest(
                # After pre-staging (nodes read, staged and their variables checked) a batch
                # only deploys; without it, deploy.yml also stages and checks.
                playbook="deploy_batch.yml" if self.env.strategy.prestage else "deploy.yml",
                inventory=self.env.inventory, hosts=list(batch.nodes),
                extravars=extravars, forks=max(plan.forks, len(batch.nodes)),
            ),
            self._on_event,
            self._abort.is_set,  # a first Ctrl-C lets the batch finish; a second stops it
        )
        self._settle(batch.nodes, result, success=P.DONE)
        return result

    def _settle(self, names: Iterable[str], result: RunResult, *, success: NodePhase) -> None:
        """Turn a finished run's per-host results into final phases."""
        for name in names:
            st = self._status[name]
            if name in result.unreachable_hosts:
                st.unreachable = True
                self._move(name, P.FAILED, st.cause or "unreachable")
            elif name in result.failed_hosts:
                if st.outcome_fact == "reverted" and st.phase is P.REVERTING:
                    self._move(name, P.REVERTED, st.cause)
                else:
                    self._move(name, P.FAILED, st.cause or "failed")
            elif result.status == "successful" and st.phase in OUT_OF_SERVICE | {P.STAGED, P.DONE}:
                self._move(name, success)

    def _roll_back_updated_nodes(self) -> bool:
        """Roll back the nodes this deployment updated, in reverse order, batch by batch."""
        updated = [n for n in reversed(list(self._status)) if self._status[n].phase is P.DONE]
        updated = [n for n in updated if self._status[n].from_version]
        if updated:
            # Without the load balancer, each revert stops before its node (it cannot drain it).
            with contextlib.suppress(LoadBalancerError):
                self._note_taken_back(self.lb_states())
            updated = [n for n in updated if n not in self._held]
        if not updated:
            return True
        self.reporter.message("rolling back " + ", ".join(updated))
        size, _, _ = batch_limits(self.env.strategy, len(self.nodes), source=self.config_file)
        batches = [updated[i : i + size] for i in range(0, len(updated), size)]
        ok = True
        for i, names in enumerate(batches, start=1):
            if self._abort.is_set():
                return False
            by_version = Counter(self._status[n].from_version for n in names)
            self.reporter.batch(Batch(index=i, nodes=tuple(names)), 0, rollback=True)
            for from_version in by_version:
                group = [n for n in names if self._status[n].from_version == from_version]
                if not self._revert(group, from_version, size):
                    ok = False
            if not ok:
                break
        return ok

    def _revert(self, names: Sequence[str], to_version: str, forks: int) -> bool:
        self._collapse_to = P.REVERTING
        try:
            for n in names:
                self._move(n, P.REVERTING, f"rolling back to {to_version}")
            extravars = dict(self._base_vars())
            extravars["deployer_revert_to"] = to_version
            extravars["deployer_version"] = to_version
            extravars["deployer_serial"] = len(names)
            result = self.runner.run(
                RunRequest(
                    playbook="revert.yml", inventory=self.env.inventory, hosts=list(names),
                    extravars=extravars, forks=max(forks, len(names)),
                ),
                self._on_event,
                self._abort.is_set,
            )
            self._settle(names, result, success=P.REVERTED)
            return result.succeeded
        finally:
            self._collapse_to = None

    def _make_interrupted_batch_safe(self) -> bool:
        """Revert nodes caught mid-change (a stop, a crashed run) so none stays out of service."""
        caught = [
            n for n, st in self._status.items()
            if st.phase in (P.DRAINING, P.DEPLOYING, P.SMOKE, P.REJOINING)
        ]
        if not caught or self._abort.is_set():
            return not caught
        self.reporter.message("making nodes caught mid-change safe: " + ", ".join(caught))
        ok = True
        for version in sorted({self._status[n].from_version for n in caught}):
            group = [n for n in caught if self._status[n].from_version == version]
            # Without an earlier release there is nothing to go back to: leave it, report it.
            ok = bool(version) and self._revert(group, version, len(group)) and ok
        return ok

    def _pause(self, seconds: float) -> None:
        self.reporter.message(f"pausing {seconds:g}s before the next batch")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stop.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                return
            if self._lease is not None and self._lease.lost:
                return  # the check before the next batch stops the deployment

    # -- events and phases ----------------------------------------------------------------

    def _on_event(self, ev: RunnerEvent) -> None:
        st = self._status.get(ev.host or "")
        if st is None:
            return
        if ev.facts.get("deployer_node_outcome"):
            st.outcome_fact = str(ev.facts["deployer_node_outcome"])
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
        if self._collapse_to is not None:
            phase = self._collapse_to
        elif st.phase is P.REVERTING:
            return  # smoke/rejoin after a revert are steps of reverting
        self._move(st.name, phase)

    def _move(self, name: str, phase: NodePhase, detail: str = "") -> None:
        st = self._status[name]
        if st.phase is phase:
            return
        if not can_move(st.phase, phase):
            # The node did something the state machine does not expect (an event missing or out
            # of order). Follow what it reported rather than drop it: the engine then acts on
            # where the node really is (checked against the load balancer at the end), and the
            # journal, which `recover` reads, keeps the change, with a note.
            note = f"unexpected move from {st.phase.value} to {phase.value}, recorded as reported"
            detail = f"{detail}; {note}" if detail else note
            self.reporter.message(f"warning: {name}: {note}")
        now = time.time()
        if phase is P.DRAINING:
            st.out_since = now
        if phase in (P.DONE, P.REVERTED) and st.out_since is not None:
            st.out_seconds = now - st.out_since
            st.out_since = None
        st.phase = phase
        if detail:
            st.detail = detail
        self.journal.record_phase(
            self._deployment_id, name, phase.value,
            from_version=st.from_version, to_version=st.to_version, detail=detail,
        )
        self.reporter.phase(st)

    # -- the end --------------------------------------------------------------------------

    def _finish(
        self, kind: str, version: str, status: str, summary: str, plan: Plan | None, started: float
    ) -> Outcome:
        self._end_watch()  # a soak still watching ends with the deployment
        out_of_service: list[str] = []
        fix: list[str] = []
        states: dict[str, ServerState] = {}
        if any(st.phase not in UNTOUCHED for st in self._status.values()):
            try:
                states = self.lb_states()
            except Exception as exc:  # the LB itself may be the problem; say so, keep going
                self.reporter.message(f"could not read the load balancer: {exc}")
        self._note_taken_back(states)
        left_alone = [f"{n} ({s.label})" for n, s in self._held.items()]
        for st in self._status.values():
            if st.phase in UNTOUCHED or st.name in self._held:
                continue  # not taken out by this deployment, or someone else's now: not its to fix
            s = states.get(st.node.lb_server)
            # The load balancer's word wins; without it, trust the node's last phase.
            out = not s.in_service if s is not None else st.phase in OUT_OF_SERVICE
            if out:
                label = s.label if s is not None else "unknown"
                out_of_service.append(f"{st.name} ({st.phase.value}, load balancer: {label})")
                self.journal.record_phase(
                    self._deployment_id, st.name, "out_of_service",
                    from_version=st.from_version, to_version=st.to_version,
                    detail=f"left out of the load balancer ({label}): {st.detail}",
                )
        if out_of_service:
            fix.append(f"deployer recover --env {self.env_name}")
            fix.append(f"deployer rollback --env {self.env_name}")
        if self._owns_deployment:
            self.journal.finish_deployment(self._deployment_id, status, summary)
        outcome = Outcome(
            deployment_id=self._deployment_id, kind=kind, version=version, status=status,
            nodes=dict(self._status), summary=summary, plan=plan,
            out_of_service=out_of_service, fix_commands=fix, started=started, ended=time.time(),
            left_alone=left_alone, hint=self._hint,
        )
        return outcome

    # -- variables ------------------------------------------------------------------------

    def _base_vars(self) -> dict[str, Any]:
        env = self.env
        h = env.app.health
        lb = env.load_balancer
        v: dict[str, Any] = {
            "deployer_hosts": env.group,
            "deployer_app": env.app.name,
            "deployer_base_dir": env.app.release_root,
            "deployer_entry_point": env.app.entry_point,
            "deployer_app_port": env.app.port,
            "deployer_supervisor": env.app.supervisor,
            "deployer_keep_releases": env.app.keep_releases,
            "deployer_max_artefact_size": env.app.max_artefact_size,
            "deployer_health_path": h.path,
            "deployer_health_status": h.expect_status,
            "deployer_health_version_field": h.version_field or "",
            "deployer_health_request_timeout": h.request_timeout,
            "deployer_health_deadline": h.deadline,
            "deployer_health_interval": h.interval,
            "deployer_health_max_latency_ms": h.max_latency_ms,
            "deployer_health_run_from": h.run_from,
            "deployer_lb_socket": lb.socket,
            "deployer_lb_backend": lb.backend,
            "deployer_lb_host": lb.all_hosts[0],
            "deployer_lb_hosts": lb.all_hosts,
            "deployer_lb_drain_timeout": lb.drain_timeout,
            "deployer_lb_up_timeout": lb.up_timeout,
            "deployer_version": "",
            "deployer_revert_to": "",
        }
        v.update(env.extra_vars)
        return v

    def _release_vars(self, release: Release) -> dict[str, Any]:
        v = self._base_vars()
        v.update(
            deployer_version=release.version,
            deployer_release_url=release.url,
            deployer_release_sha256=release.sha256,
            deployer_release_size=release.size,
        )
        return v

    # -- rollback -------------------------------------------------------------------------

    def rollback_target(self) -> str:
        """The release before the current one in this environment's successful history.

        Each successful deployment puts its release on top of that history and each successful
        rollback goes back down to its release, so rolling back twice goes further back, never
        forward again. With no history yet, the nodes' own `previous` release."""
        records = [
            r for r in reversed(self.journal.deployments(self.env_name, limit=500))
            if r.status == "succeeded" and r.kind in ("deploy", "rollback")
        ]
        if records:
            stack: list[str] = []
            first = records[0]
            froms = [v for v in (first.details.get("from_versions") or {}).values()
                     if v and v != first.version]
            if froms:
                stack.append(str(Counter(froms).most_common(1)[0][0]))
            for rec in records:
                if rec.kind == "deploy":
                    if not stack or stack[-1] != rec.version:
                        stack.append(rec.version)
                    continue
                while stack and stack[-1] != rec.version:
                    stack.pop()
                if not stack:
                    stack.append(rec.version)
            if len(stack) >= 2:
                return stack[-2]
            raise ConfigError(
                f"no release before {stack[-1]} in the successful history of environment "
                f"{self.env_name!r}",
                hint="name one with --to VERSION",
            )
        facts = self.probe()
        previous = [f.previous for f in facts.values() if f.previous]
        if previous:
            return Counter(previous).most_common(1)[0][0]
        raise ConfigError(
            f"no earlier release is known for environment {self.env_name!r}",
            hint="name one with --to VERSION",
        )


def raise_for(outcome: Outcome) -> None:
    """Raise the error matching a finished deployment's outcome (nothing for success)."""
    if outcome.status == "succeeded":
        return
    if outcome.out_of_service:
        raise FleetAtRiskError(
            f"{outcome.summary}. Out of service: " + "; ".join(outcome.out_of_service),
            hint="fix with: " + " or ".join(outcome.fix_commands),
        )
    if outcome.status == "cancelled":
        raise Interrupted(outcome.summary)
    if outcome.status == "refused":
        raise DeploymentRefused(outcome.summary, hint=outcome.hint or None)
    raise DeploymentFailed(outcome.summary, hint=outcome.hint or None)


def _held_text(held: Mapping[str, ServerState]) -> str:
    names = ", ".join(f"{n} ({s.label})" for n, s in held.items())
    return f"{names} {'is' if len(held) == 1 else 'are'} out of the load balancer, put there by someone else"
