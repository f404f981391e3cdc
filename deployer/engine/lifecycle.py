"""One deployment, whatever the strategy: the lifecycle every deployment goes through.

::

    verify the release (signature, digest)      nothing changed yet; bad input stops here
    admission: the checks asked (the gates)     promotion, windows, freezes, approvals; a
                                                refusal (GateRefused) changes nothing
    take the lock, record the deployment        a global id (ULID) besides the local number
    preflight → plan → steps                    the strategy's (see .strategy), with the safe
                                                points between steps (see .safepoints)
    outcome                                     the load balancer read one last time; every
                                                node left out named, with the command to fix it

Everything that happens is an event on the deployment's :class:`~.events.EventStream`: the
journal writes them (synchronously), the console prints them, ``--events`` streams them.
Checks registered at construction (``checks``) are asked at every safe point, after the
operator's stop request and the lock, and first at ``admission``, before the lock is taken;
that is where the gates (the promotion gate, release windows, freezes, approvals) and an
agent's stop request plug in, without touching a strategy.

Every deployment is recorded, a refused one too: an unverified release, a check refusing it
before the lock, or the lock held by another deployment leaves a journal record (status
``refused``, details ``refused_before_lock``) and its events (``deployment_started`` with
``locked`` false, then ``deployment_finished``), and raises. A check that stops a deployment
with :class:`~deployer.DeploymentPaused` leaves it ``paused`` (``deployer resume`` continues
it); one that stops it with :class:`~deployer.GateRefused` before anything changed leaves it
``refused``.

A High Risk deployment (``high_risk``, or a release whose manifest says it has no rollback
path) halts on a failure: no automatic rollback, no automatic switch back (see the
strategies).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack

from .._errors import (
    DeployerError,
    DeploymentFailed,
    DeploymentPaused,
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
from .safepoints import Check, LockCheck, OperatorStop, SafePoint, SafePointContext, SafePoints, Verdict
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
        checks_clock: Callable[[], float] | None = None,
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
        self._checks_clock = checks_clock
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._run: Run | None = None
        # The stream of the deployment under way (or of the last one).
        self.events: EventStream | None = None
        # The lock check of the deployment under way (its timings, for the benchmarks).
        self.lock_check: LockCheck | None = None

    @property
    def checks_clock(self) -> Callable[[], float]:
        """The time the checks at the safe points are told (the gates' windows, an approval's
        expiry): the lifecycle's clock unless set (a game day moves it to a window's end)."""
        return self._checks_clock or self.clock

    @checks_clock.setter
    def checks_clock(self, clock: Callable[[], float] | None) -> None:
        self._checks_clock = clock

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

    def plan(self, version: str, *, kind: str = "deploy", high_risk: str = "") -> DeploymentPlan:
        """What a deployment of ``version`` would do, computed as the deployment computes it,
        changing nothing (the nodes are read, not staged). Refusals the deployment would make
        are in the plan, with the exit code, in the order it would make them (the checks before
        the lock, the lock, the preflight's); one the preflight meets at once (the load balancer
        unreadable) is raised. Every registered check says what it would decide now."""
        validate_version(version)
        release = self.verify_release(version)
        high_risk = _high_risk(release, high_risk)
        events = EventStream(self.subscribers)
        ref = DeploymentRef(id=0, uid="", env=self.env_name, kind=kind, version=version)
        events.deployment = ref
        points = SafePoints(events, list(self.checks), clock=self.checks_clock, release=release,
                            acts_as=kind, high_risk=high_risk)
        run = Run(ref=ref, release=release, events=events, safe_points=SafePoints(events),
                  env_name=self.env_name, config_file=self.config_file, soaks=self.soaks,
                  stop=self._stop, abort=self._abort, high_risk=high_risk)
        try:
            execution = self.strategy.begin(run)
            execution.read(stage=False)
            plan = execution.plan()
        finally:
            events.close()
        verdicts = points.ask(points.context(SafePoint.ADMISSION, ref, planning=True), every=True)
        gated = [_refusal_of(v) for v in verdicts if not v.goes_on]
        locked = self._lock_refusal()
        return dataclasses.replace(
            plan, refusals=(*gated, *([locked] if locked else []), *plan.refusals),
            checks=tuple({"check": v.check, "decision": v.decision.value, "reason": v.reason}
                         for v in verdicts),
            high_risk=high_risk,
        )

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
               resumption: Resumption | None = None, high_risk: str = "",
               record_refused: bool = True, record_lock_held: bool = True) -> Outcome:
        """Deploy ``version`` (``kind``: deploy, rollback or resume; ``resumption``: what a
        resume continues, for the strategy; ``high_risk``: why it is High Risk, if it is). Bad
        input raises before anything is recorded; an unverified release, a check refusing it
        before the lock, or a held lock is recorded as refused, then raised (without
        ``record_refused``, only raised: a request whose refusal is on the record already,
        asked again, e.g. by a runner waiting for a window; without ``record_lock_held``, a
        held lock is only raised: a runner tries again at its next look)."""
        validate_version(version)
        events = EventStream([JournalRecorder(self.journal), *self.subscribers], clock=self.clock)
        self.events = events
        pending: list[str] = []

        def note(text: str) -> None:
            if events.deployment is None:
                pending.append(text)  # said once the deployment is recorded
            else:
                events.publish(Note(text=text))

        details: dict[str, object] = {"strategy": self.kind, **(extra_details or {})}
        resumes = resumes or (resumption.uid if resumption is not None else None)
        if resumes:
            details["resumes"] = resumes
        acts_as = resumption.acts_as if resumption is not None else kind
        refused = _Refusals(self, events, kind=kind, version=version, details=details,
                            resumes=resumes, pending=pending, record=record_refused)
        try:
            # Verify the release before touching anything: signature, identity, digest.
            try:
                release = self.verify_release(version)
            except DeployerError as exc:
                refused.record(exc)
                raise
            high_risk = _high_risk(release, high_risk)
            details.update(sha256=release.sha256, url=redacted_url(release.url))
            if release.key_id:
                details["key_id"] = release.key_id
            if high_risk:
                details["high_risk"] = high_risk
            refused.release, refused.high_risk = release, high_risk
            # Admission: the checks before the lock (the gates); a refusal here changes nothing.
            points = SafePoints(events, list(self.checks), clock=self.checks_clock, release=release,
                                acts_as=acts_as, high_risk=high_risk)
            admission = points.context(SafePoint.ADMISSION, DeploymentRef(
                id=0, uid="", env=self.env_name, kind=kind, version=version))
            verdicts = points.ask(admission)
            refused.admission = (points, admission, verdicts)
            first = next((v for v in verdicts if not v.goes_on), None)
            if first is not None:
                error = first.error or GateRefused(f"{first.check}: {first.reason}; nothing was "
                                                   "changed", hint=first.hint or None,
                                                   gate=first.check)
                refused.record(error)
                raise error
            with ExitStack() as stack:
                try:
                    held = stack.enter_context(locked_deployment(
                        self.journal, self.lock, note, env_name=self.env_name, app=self.app,
                        kind=kind, version=version, command=self.command, details=details,
                    ))
                except (LockHeldError, LockError) as exc:
                    if record_lock_held or not isinstance(exc, LockHeldError):
                        refused.record(exc)
                    raise
                ref = DeploymentRef(id=held.deployment_id, uid=held.uid, env=self.env_name,
                                    kind=kind, version=version)
                events.deployment = ref
                events.publish(self._started(release, resumes, high_risk, locked=True))
                points.publish(dataclasses.replace(admission, deployment=ref), verdicts)
                if high_risk:
                    events.publish(Note(text=f"High Risk: {high_risk}; on a failure this deployment "
                                        "halts (no automatic rollback or switch back)",
                                        level="warning"))
                for text in pending:
                    events.publish(Note(text=text))
                for text in held.notes:  # a lock taken over from a dead holder is on the record
                    if text.startswith("took over"):
                        events.publish(LockChanged(what="taken_over", detail=text))
                self.lock_check = LockCheck(held.lease)
                points.checks = [OperatorStop(self._stop.is_set), self.lock_check, *self.checks]
                run = Run(ref=ref, release=release, events=events, safe_points=points,
                          env_name=self.env_name, config_file=self.config_file, soaks=self.soaks,
                          stop=self._stop, abort=self._abort, resume=resumption,
                          high_risk=high_risk)
                self._run = run
                return self._perform(run, lambda: held.lease.lost)
        finally:
            self._run = None
            events.close()

    def _started(self, release: Release | None, resumes: str | None, high_risk: str, *,
                 locked: bool) -> DeploymentStarted:
        return DeploymentStarted(
            app=self.app, strategy=self.kind, actor=actor(), command=self.command,
            sha256=release.sha256 if release else "", resumes=resumes, locked=locked,
            key_id=release.key_id if release else "", high_risk=high_risk,
        )

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
        if status == "stopped" and isinstance(result.stop_error, DeploymentPaused):
            status = "paused"  # a gate paused it at a safe point: resume continues it
        elif status == "stopped" and isinstance(result.stop_error, GateRefused) and not execution.changed:
            status = "refused"
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


class _Refusals:
    """Records a deployment refused before it took the lock: a journal record (status
    ``refused``), its events (started, the admission's verdicts, finished), so that every
    deployment is on the record, refused ones included."""

    def __init__(self, lifecycle: Lifecycle, events: EventStream, *, kind: str, version: str,
                 details: dict[str, object], resumes: str | None, pending: list[str],
                 record: bool = True) -> None:
        self.lifecycle = lifecycle
        self.enabled = record
        self.events = events
        self.kind = kind
        self.version = version
        self.details = details
        self.resumes = resumes
        self.pending = pending
        self.release: Release | None = None
        self.high_risk = ""
        self.admission: tuple[SafePoints, SafePointContext, list[Verdict]] | None = None

    def record(self, error: DeployerError) -> None:
        if not self.enabled:
            return
        lc = self.lifecycle
        started = time.time()
        deployment_id, uid = lc.journal.start(
            env=lc.env_name, app=lc.app, kind=self.kind, version=self.version, command=lc.command,
            details={**self.details, "refused_before_lock": True},
        )
        lc.journal.finish_deployment(deployment_id, "refused", error.message)
        ref = DeploymentRef(id=deployment_id, uid=uid, env=lc.env_name, kind=self.kind,
                            version=self.version)
        events = self.events
        events.deployment = ref
        events.publish(lc._started(self.release, self.resumes, self.high_risk, locked=False))
        if self.admission is not None:
            points, ctx, verdicts = self.admission
            points.publish(dataclasses.replace(ctx, deployment=ref), verdicts)
        for text in self.pending:
            events.publish(Note(text=text))
        events.publish(DeploymentFinished(
            status="refused", summary=error.message, exit_code=error.exit_code,
            duration_s=round(time.time() - started, 3), hint=error.hint or "",
        ))


def _high_risk(release: Release, declared: str) -> str:
    """Why a deployment of ``release`` is High Risk: as declared, or its manifest's word that
    it has no rollback path ("": it is not)."""
    if declared:
        return declared
    if release.irreversible:
        return f"{release.version} has no rollback path: {release.irreversible}"
    return ""


def _refusal_of(verdict: Verdict) -> Refusal:
    """A check's refusal before the lock, as the plan shows it."""
    when = "before anything is changed (at admission)"
    error = verdict.error
    if error is not None:
        return Refusal(error.message, error.exit_code, verdict.hint, when=when)
    return Refusal(f"{verdict.check}: {verdict.reason}", GateRefused.exit_code, verdict.hint,
                   when=when)


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
