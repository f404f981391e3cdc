"""One deployment, whatever the strategy: the lifecycle every deployment goes through.

::

    verify the release (signature, digest)      nothing changed yet; bad input stops here
    admission: the checks asked (gates)         a stop refuses the deployment (GateRefused)
    take the lock, record the deployment        a global id (ULID) besides the local number
    preflight → plan → steps                    the strategy's (see .strategy), with the safe
                                                points between steps (see .safepoints)
    outcome                                     the load balancer read one last time; every
                                                node left out named, with the command to fix it

Everything that happens is an event on the deployment's :class:`~.events.EventStream`: the
journal writes them (synchronously), the console prints them, ``--events`` streams them.
Checks registered at construction (``checks``) are asked at every safe point, after the
operator's stop request and the lock, and first at ``admission``, before the lock is taken:
that is where gates (the promotion gate; release windows and approvals) plug in, without
touching a strategy.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from .._errors import (
    DeployerError,
    DeploymentFailed,
    DeploymentRefused,
    FleetAtRiskError,
    GateRefused,
    Interrupted,
    LockError,
    LockHeldError,
    LockLostError,
)
from .._versions import validate_version
from ..adapters.journal import Journal
from ..adapters.lock import DeploymentLock
from ..adapters.process import actor
from ..adapters.redaction import redacted_url
from .events import (
    DeploymentFinished,
    DeploymentStarted,
    EventStream,
    LockChanged,
    Note,
    PhaseEntered,
    PlanMade,
    Subscriber,
)
from .locking import locked_deployment
from .model import DeploymentRef, Outcome, Release, Resumption, StoreVerifier
from .plan import DeploymentPlan, Refusal
from .recording import JournalRecorder
from .run import Run
from .safepoints import Check, Decision, LockCheck, OperatorStop, SafePoint, SafePoints, Verdict
from .soaking import Soaks
from .strategy import Execution, StepsResult, Strategy

__all__ = ["Lifecycle", "exit_code_for", "raise_for"]


class Lifecycle:
    """Deployments of one environment by one strategy (see the module documentation)."""

    def __init__(
        self,
        *,
        env_name: str,
        app: str,
        strategy: Strategy,
        journal: Journal,
        lock: DeploymentLock,
        verify_release: StoreVerifier,
        subscribers: Sequence[Subscriber] = (),
        checks: Sequence[Check] = (),
        soaks: Soaks | None = None,
        command: str = "",
        config_file: str = "config",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.env_name = env_name
        self.app = app
        self.strategy = strategy
        self.journal = journal
        self.lock = lock
        self.verify_release = verify_release
        self.subscribers = list(subscribers)
        self.checks = list(checks)
        self.soaks = soaks
        self.command = command
        self.config_file = config_file
        self.clock = clock
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._run: Run | None = None
        # The stream of the deployment under way (or of the last one).
        self.events: EventStream | None = None
        # The lock check of the deployment under way (its timings, for the benchmarks).
        self.lock_check: LockCheck | None = None

    @property
    def kind(self) -> str:
        return self.strategy.kind

    @property
    def nodes(self) -> list[object]:
        return list(self.strategy.nodes)

    # -- operator control -----------------------------------------------------------------

    def request_stop(self) -> bool:
        """First call: stop at the next safe point, every node back in service. Second: abort
        now. Returns True if this call escalated to an immediate abort."""
        if self._stop.is_set():
            self._abort.set()
            return True
        self._stop.set()
        run = self._run
        if run is not None:
            waiting = run.waiting_for
            run.note(
                f"stopping: waiting for {waiting}, then stopping before the next step; press "
                "Ctrl-C again to abort at once" if waiting else
                "stopping: the current step is finished safely, then the deployment stops "
                "(press Ctrl-C again to abort at once)"
            )
        return False

    # -- reading ----------------------------------------------------------------------------

    def plan(self, version: str, *, kind: str = "deploy") -> DeploymentPlan:
        """What a deployment of ``version`` would do, computed as the deployment computes it,
        changing nothing (the nodes are read, not staged). Refusals the deployment would make
        are in the plan, with the exit code; one the preflight meets at once (the load balancer
        unreadable) is raised."""
        validate_version(version)
        release = self.verify_release(version)
        events = EventStream(self.subscribers)
        ref = DeploymentRef(id=0, uid="", env=self.env_name, kind=kind, version=version)
        events.deployment = ref
        run = Run(ref=ref, release=release, events=events, safe_points=SafePoints(events),
                  env_name=self.env_name, config_file=self.config_file, soaks=self.soaks,
                  stop=self._stop, abort=self._abort)
        try:
            execution = self.strategy.begin(run)
            execution.read(stage=False)
            plan = execution.plan()
            admitted = self._admission(events, release, kind)
        finally:
            events.close()
        refusals = list(plan.refusals)
        locked = self._lock_refusal()
        if locked is not None:
            refusals.insert(0, locked)
        if not admitted.goes_on:
            error = _refusal_error(admitted)
            refusals.insert(0, Refusal(error.message, error.exit_code, error.hint or "",
                                       when="before anything is changed (at admission)"))
        if tuple(refusals) != plan.refusals:
            plan = dataclasses.replace(plan, refusals=tuple(refusals))
        return plan

    def _admission(self, events: EventStream, release: Release, kind: str) -> Verdict:
        """Ask the checks at ``admission`` (the gates): the release is verified, nothing is
        locked, recorded or changed yet."""
        if not self.checks:
            return Verdict.go()
        ref = DeploymentRef(id=0, uid="", env=self.env_name, kind=kind, version=release.version)
        before, events.deployment = events.deployment, ref
        try:
            points = SafePoints(events, list(self.checks), clock=self.clock)
            return points.reach(SafePoint.ADMISSION, ref, release=release)
        finally:
            events.deployment = before

    def _lock_refusal(self) -> Refusal | None:
        try:
            view = self.lock.show()
        except LockError as exc:
            return Refusal(str(exc), LockError.exit_code, exc.hint or "")
        record = view.record
        if record is None or view.stale or record.identity == self.lock.me:
            return None
        return Refusal(f"environment {self.env_name!r} is locked by {record.describe()}",
                       LockHeldError.exit_code, "wait for that deployment to finish")

    def rollback_target(self) -> str:
        return self.strategy.rollback_target()

    # -- deploying --------------------------------------------------------------------------

    def deploy(self, version: str, *, kind: str = "deploy", resumes: str | None = None,
               extra_details: Mapping[str, object] | None = None,
               resumption: Resumption | None = None) -> Outcome:
        """Deploy ``version`` (``kind``: deploy, rollback or resume; ``resumption``: what a
        resume continues, for the strategy). Bad input, an unverified release or a held lock
        changes nothing (raised before anything is recorded)."""
        validate_version(version)
        # Verify the release before touching anything: signature, identity, digest.
        release = self.verify_release(version)
        events = EventStream([JournalRecorder(self.journal), *self.subscribers], clock=self.clock)
        self.events = events
        pending: list[str] = []

        def note(text: str) -> None:
            if events.deployment is None:
                pending.append(text)  # said once the deployment is recorded
            else:
                events.publish(Note(text=text))

        details: dict[str, object] = {"sha256": release.sha256, "url": redacted_url(release.url),
                                      "strategy": self.kind, **(extra_details or {})}
        resumes = resumes or (resumption.uid if resumption is not None else None)
        if resumes:
            details["resumes"] = resumes
        try:
            admitted = self._admission(events, release, kind)
            if not admitted.goes_on:
                raise _refusal_error(admitted)
            with locked_deployment(
                self.journal, self.lock, note, env_name=self.env_name, app=self.app, kind=kind,
                version=version, command=self.command, details=details,
            ) as held:
                ref = DeploymentRef(id=held.deployment_id, uid=held.uid, env=self.env_name, kind=kind,
                                    version=version)
                events.deployment = ref
                events.publish(DeploymentStarted(app=self.app, strategy=self.kind, actor=actor(),
                                                 command=self.command, sha256=release.sha256,
                                                 resumes=resumes))
                for text in pending:
                    events.publish(Note(text=text))
                for text in held.notes:  # a lock taken over from a dead holder is on the record
                    if text.startswith("took over"):
                        events.publish(LockChanged(what="taken_over", detail=text))
                self.lock_check = LockCheck(held.lease)
                points = SafePoints(events, [OperatorStop(self._stop.is_set), self.lock_check,
                                             *self.checks], clock=self.clock)
                run = Run(ref=ref, release=release, events=events, safe_points=points,
                          env_name=self.env_name, config_file=self.config_file, soaks=self.soaks,
                          stop=self._stop, abort=self._abort, resume=resumption)
                self._run = run
                return self._perform(run, lambda: held.lease.lost)
        finally:
            self._run = None
            events.close()

    def _perform(self, run: Run, lost: Callable[[], str]) -> Outcome:
        started = time.time()
        execution = self.strategy.begin(run)

        def planned(plan: DeploymentPlan, from_versions: Mapping[str, str]) -> None:
            run.publish(PlanMade(plan=plan.to_dict()))
            self.journal.update_details(run.ref.id, from_versions=dict(from_versions))

        execution.on_plan = planned
        try:
            result = execution.perform()
        except BaseException as exc:  # a crash or a second Ctrl-C: record, never hide
            status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            outcome = self._finish(run, execution, StepsResult(status, f"aborted: {exc}"), started, lost)
            for line in outcome.out_of_service:
                run.note(f"out of service: {line}", level="warning")
            for fix in outcome.fix_commands:
                run.note(f"fix: {fix}", level="warning")
            raise
        return self._finish(run, execution, result, started, lost)

    def _finish(
        self, run: Run, execution: Execution, result: StepsResult, started: float,
        lost: Callable[[], str],
    ) -> Outcome:
        run.publish(PhaseEntered(phase="outcome"))
        accounting = execution.account()
        status = result.status
        fix: list[str] = []
        if accounting.out_of_service:
            fix = [f"deployer recover --env {self.env_name}", f"deployer rollback --env {self.env_name}"]
            if status in ("refused", "succeeded"):
                status = "failed"
        if isinstance(result.stop_error, LockLostError) or lost():
            run.publish(LockChanged(what="lost", detail=lost() or (result.stop_error.message
                                                                    if result.stop_error else "")))
        details: dict[str, object] = execution.outcome_details()
        nodes = dict(execution.node_status())
        cut = {n: st.sessions_cut for n, st in nodes.items() if st.sessions_cut}
        warnings = list(result.warnings)
        if cut:
            details["sessions_cut"] = cut
            warnings += [f"{n}: {count} session(s) were still open when load_balancer.drain_timeout "
                         "ran out; the node was taken out anyway and its restart cut them"
                         for n, count in cut.items()]
        if details:
            self.journal.update_details(run.ref.id, **details)
        self.journal.finish_deployment(run.ref.id, status, result.summary)
        outcome = Outcome(
            deployment_id=run.ref.id, kind=run.kind, version=run.release.version, status=status,
            nodes=nodes, summary=result.summary,
            out_of_service=accounting.out_of_service, fix_commands=fix, started=started,
            ended=time.time(), left_alone=accounting.left_alone, hint=result.hint, details=details,
            uid=run.ref.uid, warnings=warnings, stop_error=result.stop_error,
        )
        run.safe_points.reach(SafePoint.AFTER_OUTCOME, run.ref, label=status,
                              changed=execution.changed, all_in_service=not accounting.out_of_service,
                              release=run.release)
        run.publish(DeploymentFinished(
            status=status, summary=result.summary, exit_code=exit_code_for(outcome),
            duration_s=round(outcome.ended - started, 3), out_of_service=accounting.out_of_service,
            fix=fix, hint=result.hint, warnings=warnings,
            nodes={n: st.to_dict() for n, st in outcome.nodes.items()},
        ))
        return outcome


def _refusal_error(verdict: Verdict) -> DeployerError:
    """What a deployment refused at admission raises: the stopping check's error, or a gate
    refusal for a check that failed it (nothing was changed either way)."""
    if verdict.decision is Decision.STOP and verdict.error is not None:
        return verdict.error
    return GateRefused(f"{verdict.check}: {verdict.reason}", hint=verdict.hint or None)


def _error_for(outcome: Outcome) -> DeployerError | None:
    if outcome.status == "succeeded":
        return None
    if outcome.out_of_service:
        return FleetAtRiskError(
            f"{outcome.summary}. Out of service: " + "; ".join(outcome.out_of_service),
            hint="fix with: " + " or ".join(outcome.fix_commands),
        )
    if outcome.stop_error is not None:
        error = outcome.stop_error
        error.message = outcome.summary
        return error
    if outcome.status == "cancelled":
        return Interrupted(outcome.summary)
    if outcome.status == "refused":
        return DeploymentRefused(outcome.summary, hint=outcome.hint or None)
    return DeploymentFailed(outcome.summary, hint=outcome.hint or None)


def exit_code_for(outcome: Outcome) -> int:
    """The exit code a deployment ends with (0 for success)."""
    error = _error_for(outcome)
    return 0 if error is None else error.exit_code


def raise_for(outcome: Outcome) -> None:
    """Raise the error matching a finished deployment's outcome (nothing for success)."""
    error = _error_for(outcome)
    if error is not None:
        raise error
