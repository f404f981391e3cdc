"""An environment's runner: ``deployer agent --env E`` (long-running) and ``--once`` (a timer).

At each look it reads its pointer, the fleet and its own last published status, decides
(:mod:`._decide`), deploys when asked through the environment's lifecycle (the gates at
admission, the lock only for the deployment, the strategy with its soak), records a signed
promotion record after a success that left every serving node on the release, and publishes
its status beside the pointer. It polls with jitter and never takes the lock to poll; a lock
held by another controller is "busy: try again at the next look".

Restart-safe: on start (and until it could), a deployment of this controller that was
interrupted (its process killed) is resumed (:func:`deployer.engine.resume.resume`) before
anything else. SIGTERM (:meth:`Agent.request_stop`): a deployment under way stops at its next
safe point with every node in service; an idle runner stops at once. A second SIGTERM aborts
the deployment now.

The governance gates (:mod:`deployer.gates`) are asked with what the pointer's request brings
(its change, approvals, High Risk, the requester's signature). A request they refuse is on the
record once (the journal, its evidence); the runner asks again at each look without adding a
record, and looks again when the gate said it may let it through (the next window opening). A
deployment a gate paused (a window closed, an emergency freeze) is resumed at the first look
its gates allow, before the pointer is acted on — unless the pointer now names another
version, which is deployed instead; the looks that wait add no record (the paused deployment
is the record). Both are read from the status it published, so a runner run by a timer
(``--once``) behaves the same.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Protocol

from .._clock import iso_utc
from .._errors import DeployerError, DeploymentPaused, GateRefused, LockHeldError, PointerError
from ..adapters.process import actor
from ..config import AgentConfig, EnvironmentConfig
from ..engine.events import (
    CheckVerdictEvent,
    DeploymentStarted,
    Event,
    EventStream,
    LegSmoked,
    NodePhaseChanged,
    Published,
    SoakJudged,
    Subscriber,
)
from ..engine.fleet import Fleet
from ..engine.history import successful_history
from ..engine.lifecycle import Lifecycle, exit_code_for
from ..engine.model import DeploymentRef, Outcome
from ..engine.resume import resume
from ..engine.strategy import Strategy
from ..gates import GateRequest, Gates
from ..gates.approvals import approval_of
from ..promotion import PromotionRecorder
from ._decide import Plan, decide
from ._events import AgentDecided, AgentStarted, AgentStopped, PromotionRecorded, StatusPublished
from ._observe import Observed, observe
from ._pointer import Desired, Pointer, desired_from
from ._status import Acted, AgentStatus, LastDeployment

__all__ = ["Agent", "OpenEnvironment", "Step", "Wired"]

# Exit codes of a look that are not a deployment's (see the README's table for --once).
DRIFT_EXIT = 1
ERROR_EXIT = 1


class Wired(Protocol):
    """What a runner needs of its environment for one look, wired from the config (read
    only)."""

    @property
    def env(self) -> EnvironmentConfig: ...

    @property
    def lifecycle(self) -> Lifecycle: ...

    @property
    def fleets(self) -> dict[str, Fleet]: ...

    @property
    def strategy(self) -> Strategy: ...

    # The environment's governance gates (None: not wired), told each request before it is
    # deployed.
    @property
    def gates(self) -> Gates | None: ...

    def close(self) -> None: ...


# Wires the environment for one look, with these subscribers on its deployments' events.
OpenEnvironment = Callable[[Sequence[Subscriber]], Wired]


@dataclass(frozen=True)
class Step:
    """How one look ended: the decision published and the exit code it stands for."""

    decision: str
    exit_code: int
    status: AgentStatus | None = None
    # When a gate may let the request through (a window opening): look again then.
    retry_at: float | None = None


class _Witness(Subscriber):
    """Hears one deployment: its digest and the checks it passed, for its promotion record."""

    synchronous: ClassVar[bool] = True

    def __init__(self) -> None:
        self.sha256 = ""
        self.gates: list[str] = []
        self.smoked = False
        self.soaks: list[str] = []

    def on_event(self, published: Published) -> None:
        ev = published.event
        if isinstance(ev, DeploymentStarted):
            self.sha256 = ev.sha256
        elif isinstance(ev, CheckVerdictEvent) and ev.point == "admission" and ev.decision == "continue":
            self.gates.append(ev.check)
        elif (isinstance(ev, NodePhaseChanged) and ev.phase == "done") or (
                isinstance(ev, LegSmoked) and ev.ok):
            self.smoked = True
        elif isinstance(ev, SoakJudged):
            self.soaks.append(ev.outcome)

    def checks(self) -> list[str]:
        passed = ["signature", *self.gates]
        if self.smoked:
            passed.append("smoke")
        if self.soaks and all(o == "passed" for o in self.soaks):
            passed.append("soak")
        return passed


@dataclass
class Agent:
    """One environment's runner; see the module documentation."""

    env_name: str
    app: str
    config: AgentConfig
    pointer: Pointer
    open_environment: OpenEnvironment
    # Fresh subscribers for each stream (the runner's own and each deployment's).
    subscribers: Callable[[], Sequence[Subscriber]] = lambda: ()
    recorder: PromotionRecorder | None = None
    # pointer.require_signed: deploy only a request signed by a requester's key.
    require_signed: bool = False
    clock: Callable[[], float] = time.time
    rng: Callable[[], float] = random.random
    identity: str = field(default_factory=lambda: f"{actor()} pid {os.getpid()}")

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._current: Lifecycle | None = None
        self._resume_pending = True
        self._published: AgentStatus | None = None
        self._last_decided: AgentDecided | None = None
        self.events = EventStream(self.subscribers(), clock=self.clock)

    # -- control ----------------------------------------------------------------------------

    def request_stop(self) -> bool:
        """First call: stop (a deployment at its next safe point). Second: abort the deployment
        now. True when this call aborted."""
        again = self._stop.is_set()
        self._stop.set()
        current = self._current
        if current is None:
            return False
        escalated = current.request_stop()
        if again and not escalated:
            escalated = current.request_stop()
        return escalated

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_time(self) -> float:
        """The interval, times a random factor in [1 - jitter, 1 + jitter]."""
        jitter = self.config.jitter
        return self.config.interval * (1 - jitter + 2 * jitter * self.rng())

    def run(self, *, once: bool = False) -> int:
        """Look until stopped (or once). ``--once`` exits with the code of the status its look
        left (0 in sync or deployed, 14 refused by a gate, a failed deployment's code, ...); a
        long-running runner stopped by SIGTERM exits 0."""
        self._publish_event(AgentStarted(
            env=self.env_name, app=self.app, agent=self.identity, pointer=self.pointer.where,
            status=self.pointer.status_where, interval_s=self.config.interval,
            jitter=self.config.jitter, correct_drift=self.config.correct_drift, once=once))
        code = 0
        reason = "stopped"
        try:
            while True:
                step = self.step()
                code = step.exit_code
                if once:
                    reason = f"one look: {step.decision}"
                    break
                if self.stopping or self._stop.wait(self._wait_after(step)):
                    code = 0
                    break
        finally:
            self._publish_event(AgentStopped(reason=reason, exit_code=code))
            self.events.close()
        return code

    def _wait_after(self, step: Step) -> float:
        """Until the next look: the interval (with jitter), or less when a gate said when it
        may let the request through (a window opening: looked at just after it opens)."""
        wait = self.wait_time()
        if step.retry_at is not None:
            wait = min(wait, max(1.0, step.retry_at - self.clock() + 1.0))
        return wait

    # -- one look ---------------------------------------------------------------------------

    def step(self) -> Step:
        """One look: resume what was interrupted, read, decide, act, publish."""
        if self.stopping:
            return Step("stopped", 0)
        witness = _Witness()
        try:
            wired = self.open_environment([*self.subscribers(), witness])
        except DeployerError as exc:  # e.g. its inventory gone: said, and looked at again
            return self._error(f"cannot wire the environment: {exc.message}", None)
        try:
            if self._resume_pending:
                resumed = self._resume(wired)
                if resumed is not None:
                    return resumed
            return self._look(wired, witness)
        finally:
            self._current = None
            wired.close()

    def _look(self, wired: Wired, witness: _Witness) -> Step:
        try:
            value = self.pointer.read()
        except PointerError as exc:
            return self._error(f"cannot read the pointer: {exc.message}", None)
        try:
            desired = desired_from(value, where=self.pointer.where)
        except PointerError as exc:  # a value that is not a version: refused, nothing changed
            return self._publish(self._status("refused", _with_hint(exc), None, None,
                                              exit_code=exc.exit_code), kind="")
        try:
            last = AgentStatus.from_text(self.pointer.read_status())
        except PointerError as exc:
            return self._error(f"cannot read the published status: {exc.message}", desired)
        if self._published is None:
            self._published = last  # what is published already need not be written again
        try:
            observed = observe(wired.strategy, wired.fleets)
        except DeployerError as exc:
            return self._error(f"cannot read the fleet: {exc.message}", desired)
        plan = decide(desired, observed, last, correct_drift=self.config.correct_drift)
        if plan.action == "nothing":
            assert last is not None
            step = Step(plan.decision, last.exit_code, last)
            self._decided(plan.decision, plan.reason, desired, observed, last.exit_code)
            return step
        if plan.action == "publish":
            assert desired is not None or plan.decision == "waiting"
            acted = Acted(desired.revision, desired.version) if desired and plan.acts else (
                last.acted if last is not None else None)
            status = self._status(plan.decision, plan.reason, desired, observed, acted=acted,
                                  last=last, exit_code=DRIFT_EXIT if plan.decision == "drift" else 0)
            if plan.decision == "in_sync" and not status.same_as(self._published):
                promotion = self._catch_up(wired, observed)
                if promotion is not None:
                    status = replace(status, promotion=promotion)
            return self._publish(status, kind="")
        assert desired is not None
        return self._deploy(wired, witness, desired, plan, observed, last)

    def _deploy(self, wired: Wired, witness: _Witness, desired: Desired, plan: Plan,
                observed: Observed, last: AgentStatus | None) -> Step:
        lifecycle = wired.lifecycle
        self._current = lifecycle
        if self.stopping:
            return Step("stopped", 0)
        previous = last.acted if last is not None else None
        # A request refused before (the last status says so) is on the record already.
        again = (last is not None and last.decision == "refused"
                 and last.desired is not None and last.desired.revision == desired.revision)
        try:
            self._ask_gates(wired, desired)
            outcome = lifecycle.deploy(desired.version, kind=plan.kind, extra_details={
                "pointer": desired.to_dict(), "agent": self.identity},
                high_risk=desired.high_risk, record_refused=not again, record_lock_held=False)
        except GateRefused as exc:
            step = self._publish(self._status("refused", _with_hint(exc), desired, observed,
                                              acted=previous, last=last, exit_code=exc.exit_code),
                                 kind=plan.kind)
            return replace(step, retry_at=exc.opens_at)
        except LockHeldError as exc:
            return self._publish(self._status(
                "busy", f"another controller deploys: {exc.message}; trying again at the next look",
                desired, observed, acted=previous, last=last, exit_code=0), kind=plan.kind)
        except DeployerError as exc:
            return self._publish(self._status("refused", _with_hint(exc), desired, observed,
                                              acted=previous, last=last, exit_code=exc.exit_code),
                                 kind=plan.kind)
        return self._after(wired, witness, desired, plan, outcome, observed, last)

    def _after(self, wired: Wired, witness: _Witness, desired: Desired, plan: Plan,
               outcome: Outcome, before: Observed, last: AgentStatus | None) -> Step:
        code = exit_code_for(outcome)
        decision = {"succeeded": "deployed", "cancelled": "stopped", "stopped": "stopped",
                    "refused": "refused", "paused": "paused"}.get(outcome.status, "failed")
        finished = outcome.status in ("succeeded", "failed", "rolled_back")
        if outcome.status == "paused":
            self._resume_pending = True  # resumed at the first look its gates allow
        acted = Acted(desired.revision, desired.version) if finished else (
            last.acted if last is not None else None)
        try:
            after: Observed | None = observe(wired.strategy, wired.fleets)
        except DeployerError:
            after = None
        reason = f"{plan.kind} {desired.version}: {outcome.status}: {outcome.summary}"
        if plan.decision == "drift":
            reason = f"{plan.reason}: {reason}"
        promotion = None
        if outcome.status == "succeeded":
            promotion, note = self._promote(outcome, witness, after)
            if note:
                reason += f"; {note}"
        record = LastDeployment(uid=outcome.uid, id=outcome.deployment_id, kind=outcome.kind,
                                version=outcome.version, status=outcome.status, exit_code=code,
                                summary=outcome.summary, at=iso_utc(outcome.ended),
                                revision=desired.revision)
        status = self._status(decision, reason, desired, after or before, acted=acted, last=last,
                              exit_code=code, deployment=record, promotion=promotion)
        return self._publish(status, kind=plan.kind, ref=DeploymentRef(
            outcome.deployment_id, outcome.uid, self.env_name, outcome.kind, outcome.version))

    def _promote(self, outcome: Outcome, witness: _Witness,
                 after: Observed | None) -> tuple[dict[str, str] | None, str]:
        """Sign and publish the promotion record of a successful deployment when every serving
        node is on its release; (what was recorded, why nothing was)."""
        if self.recorder is None:
            return None, ""
        ref = DeploymentRef(outcome.deployment_id, outcome.uid, self.env_name, outcome.kind,
                            outcome.version)
        version = outcome.version
        why_not = ""
        if outcome.left_alone:
            why_not = "nodes an operator holds were left as they were"
        elif after is None:
            why_not = "the fleet could not be read after it"
        elif after.running != version:
            why_not = after.describe()
        checks = witness.checks()
        if why_not:
            self._publish_event(PromotionRecorded(
                version=version, sha256=witness.sha256, where="", key_id="", checks=checks,
                ok=False, error=f"no promotion record: {why_not}"), ref=ref)
            return None, f"no promotion record: {why_not}"
        assert after is not None
        try:
            recorded = self.recorder.record(version=version, sha256=witness.sha256,
                                            deployment=outcome.uid, at=outcome.ended,
                                            checks=checks, nodes=sorted(after.nodes))
        except DeployerError as exc:
            self._publish_event(PromotionRecorded(
                version=version, sha256=witness.sha256, where="", key_id="", checks=checks,
                ok=False, error=exc.message), ref=ref)
            return None, f"the promotion record could not be published: {exc.message}"
        self._publish_event(PromotionRecorded(version=version, sha256=witness.sha256,
                                              where=recorded.where, key_id=recorded.key_id,
                                              checks=checks), ref=ref)
        return {"where": recorded.where, "key_id": recorded.key_id}, ""

    def _catch_up(self, wired: Wired, observed: Observed) -> dict[str, str] | None:
        """The record of a successful deployment of what runs now, published if a runner was
        killed before it could publish it (restart-safe at any moment): from the journal's
        deployment of that release, every serving node being on it."""
        version = observed.running
        if self.recorder is None or version is None:
            return None
        found = next((r for r in reversed(successful_history(wired.lifecycle.journal, self.env_name))
                      if r.version == version and r.uid and r.details.get("sha256")), None)
        if found is None or self.recorder.recorded(version, found.uid):
            return None
        verdict = found.details.get("analysis")
        soaked = isinstance(verdict, dict) and verdict.get("outcome") == "passed"
        checks = ["signature", *(c.name for c in wired.lifecycle.checks), "smoke",
                  *(["soak"] if soaked else [])]
        ref = DeploymentRef(found.id, found.uid, self.env_name, found.kind, version)
        try:
            recorded = self.recorder.record(version=version, sha256=str(found.details["sha256"]),
                                            deployment=found.uid, at=found.ended_at or self.clock(),
                                            checks=checks, nodes=sorted(observed.nodes))
        except DeployerError as exc:
            self._publish_event(PromotionRecorded(
                version=version, sha256=str(found.details["sha256"]), where="", key_id="",
                checks=checks, ok=False, error=exc.message), ref=ref)
            return None
        self._publish_event(PromotionRecorded(version=version, sha256=recorded.record.sha256,
                                              where=recorded.where, key_id=recorded.key_id,
                                              checks=checks), ref=ref)
        return {"where": recorded.where, "key_id": recorded.key_id}

    def _ask_gates(self, wired: Wired, desired: Desired | None) -> None:
        """Tell the environment's gates what the pointer's request brings."""
        if wired.gates is None:
            return
        request = GateRequest(require_signed=self.require_signed)
        if desired is not None:
            try:
                approvals = tuple(approval_of(a, f"the pointer's approval {i}")
                                  for i, a in enumerate(desired.approvals, 1))
            except DeployerError as exc:
                raise GateRefused(f"refused by the approval gate: {exc.message}", gate="approval") \
                    from None
            request = GateRequest(approvals=approvals, change=desired.change or None,
                                  signed=desired.signed, require_signed=self.require_signed,
                                  pointer={"where": self.pointer.where, **desired.to_dict()})
        wired.gates.state.request = request

    def _pointer_now(self) -> Desired | None:
        """What the pointer asks for now, if it can be read (for a resume's gates)."""
        try:
            return desired_from(self.pointer.read(), where=self.pointer.where)
        except PointerError:
            return None

    def _resume(self, wired: Wired) -> Step | None:
        """Resume this controller's interrupted deployment, if any (once it could)."""
        self._current = wired.lifecycle
        said: list[str] = []
        desired = self._pointer_now()
        published = None
        with contextlib.suppress(PointerError):
            published = AgentStatus.from_text(self.pointer.read_status())
        try:
            self._ask_gates(wired, desired)
            # A paused deployment waiting for its gates is on the record (paused) already.
            result = resume(wired.lifecycle, on_interrupted=wired.env.strategy.on_interrupted,
                            say=said.append, high_risk=desired.high_risk if desired else "",
                            record_refused=published is None or published.decision != "paused")
        except GateRefused as exc:  # a paused deployment waits for its gates
            paused = _paused_version(wired, self.env_name)
            if desired is not None and paused is not None and desired.version != paused:
                return None  # the pointer asks for another release: that one goes out instead
            step = self._publish(self._status(
                "paused", f"a paused deployment waits for its gates: {_with_hint(exc)}",
                desired, None, acted=published.acted if published else None, last=published,
                exit_code=DeploymentPaused.exit_code), kind="resume")
            return replace(step, retry_at=exc.opens_at)
        except LockHeldError as exc:
            return self._publish(self._status(
                "busy", f"an interrupted deployment is to be resumed, but {exc.message}; trying "
                "again at the next look", None, None, exit_code=0), kind="")
        except DeployerError as exc:  # nothing acted on before what was left is put right
            return self._error(f"cannot resume the interrupted deployment: {_with_hint(exc)}", None)
        finally:
            self._current = None
        self._resume_pending = False
        outcome = result.outcome
        if outcome is None:
            return None
        code = exit_code_for(outcome)
        if outcome.status == "paused":  # paused again (its window closed): resumed again later
            self._resume_pending = True
        last = AgentStatus.from_text(self.pointer.read_status())
        record = LastDeployment(uid=outcome.uid, id=outcome.deployment_id, kind=outcome.kind,
                                version=outcome.version, status=outcome.status, exit_code=code,
                                summary=outcome.summary, at=iso_utc(outcome.ended))
        status = self._status("resumed", "; ".join([*said, f"{outcome.status}: {outcome.summary}"]),
                              last.desired if last else None, None,
                              acted=last.acted if last else None, last=last, exit_code=code,
                              deployment=record)
        step = self._publish(status, kind="resume", ref=DeploymentRef(
            outcome.deployment_id, outcome.uid, self.env_name, outcome.kind, outcome.version))
        # Resumed safely: go on to the pointer at this look; a failed resume is the news.
        return None if code == 0 and not self.stopping else step

    # -- status and events ------------------------------------------------------------------

    def _status(self, decision: str, reason: str, desired: Desired | None,
                observed: Observed | None, *, acted: Acted | None = None,
                last: AgentStatus | None = None, exit_code: int = 0,
                deployment: LastDeployment | None = None,
                promotion: dict[str, str] | None = None) -> AgentStatus:
        if observed is None and last is not None:
            running, versions = last.running, last.versions
        else:
            running = observed.running if observed else None
            versions = observed.versions if observed else {}
        last_deployment = deployment or (last.last_deployment if last is not None else None)
        if deployment is None and promotion is None and last is not None:
            promotion = last.promotion  # the last deployment's record, as its other facts
        return AgentStatus(
            env=self.env_name, app=self.app, decision=decision, reason=reason, desired=desired,
            running=running, versions=versions, acted=acted, last_deployment=last_deployment,
            deployment=deployment.uid if deployment else "",
            promotion=promotion, exit_code=exit_code, at=iso_utc(self.clock()), agent=self.identity,
        )

    def _error(self, reason: str, desired: Desired | None) -> Step:
        """A look that could not read what it needs: said on the event stream, and in the
        status when the status can be written."""
        last = None
        with contextlib.suppress(PointerError):
            last = AgentStatus.from_text(self.pointer.read_status())
        status = self._status("error", reason, desired, None,
                              acted=last.acted if last else None, last=last, exit_code=ERROR_EXIT)
        return self._publish(status, kind="")

    def _publish(self, status: AgentStatus, *, kind: str, ref: DeploymentRef | None = None) -> Step:
        """Say the decision, and publish the status beside the pointer when it is news."""
        desired = status.desired
        self._decided(status.decision, status.reason, desired, None, status.exit_code, kind=kind,
                      ref=ref, running=status.running, versions=status.versions)
        if not status.same_as(self._published):
            try:
                self.pointer.write_status(status.to_text())
                self._published = status
                self._publish_event(StatusPublished(where=self.pointer.status_where,
                                                    decision=status.decision), ref=ref)
            except PointerError as exc:
                self._publish_event(StatusPublished(where=self.pointer.status_where,
                                                    decision=status.decision, ok=False,
                                                    error=exc.message), ref=ref)
        return Step(status.decision, status.exit_code, status)

    def _decided(self, decision: str, reason: str, desired: Desired | None,
                 observed: Observed | None, exit_code: int, *, kind: str = "",
                 ref: DeploymentRef | None = None, running: str | None = None,
                 versions: dict[str, int] | None = None) -> None:
        if observed is not None:
            running, versions = observed.running, observed.versions
        event = AgentDecided(
            decision=decision, reason=reason, desired=desired.version if desired else None,
            revision=desired.revision if desired else "", running=running,
            versions=dict(versions or {}), kind=kind, exit_code=exit_code)
        if event == self._last_decided and ref is None:
            return  # a look that changed nothing is not news: one line per change
        self._last_decided = event
        self._publish_event(event, ref=ref)

    def _publish_event(self, event: Event, *, ref: DeploymentRef | None = None) -> None:
        self.events.deployment = ref
        try:
            self.events.publish(event)
        finally:
            self.events.deployment = None


def _paused_version(wired: Wired, env_name: str) -> str | None:
    """The release the newest deployment of the journal (refusals aside) was paused on."""
    for record in wired.lifecycle.journal.deployments(env_name, limit=10):
        if record.status != "refused":
            return record.version if record.status == "paused" else None
    return None


def _with_hint(exc: DeployerError) -> str:
    return f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
