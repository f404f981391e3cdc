"""Safe points: the moments of a deployment where every node is in service or deliberately idle
and none is half-done, and the checks that decide there whether it goes on.

The same named points in every strategy::

    admission         the release verified, before the lock is taken: nothing changed yet
                      (gates decide here: a stop refuses the deployment, and only its record
                      is written)
    before_start      after the plan, before anything leaves the load balancer
    before_batch      rolling: before each batch (and so before each node leaves the LB)
    before_idle_leg   blue-green: before releasing to the idle leg
    before_switch     blue-green: before live traffic moves to the new leg
    before_uplift     blue-green: before releasing to the old leg after a good soak
    after_outcome     the deployment has ended (checks are told; they cannot change it)

A :class:`Check` registered on a :class:`SafePoints` answers each point it is asked about with
a :class:`Verdict`: ``continue``, ``stop`` (end safely here: nothing more is changed, nodes
already done keep the release; the verdict names the error, and so the exit code, the
deployment ends with) or ``fail`` (the deployment fails here and rolls back per
``on_failure``). The first verdict that is not ``continue`` wins. A check that raises a
:class:`~deployer.DeployerError` stops the deployment with that error: when a check cannot
tell, nothing more is changed.

Checks today: the operator's stop request (Ctrl-C, SIGTERM) and the deployment lock,
confirmed with its host at every point before anything leaves the load balancer; and the
checks registered with the lifecycle, asked at every point including ``admission``: the gates
— the promotion gate (:mod:`deployer.promotion`), release windows, freezes, approvals and
change records (:mod:`deployer.gates`). A stop at ``admission`` refuses the deployment with its
error (``GateRefused``, exit 14) before the lock is taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from .._errors import DeployerError, Interrupted, LockError, LockLostError
from ..adapters.lock import Lease
from .events import CheckVerdictEvent, EventStream, SafePointReached
from .model import DeploymentRef, Release

__all__ = [
    "Check",
    "Decision",
    "LockCheck",
    "OperatorStop",
    "SafePoint",
    "SafePointContext",
    "SafePoints",
    "Verdict",
]


class SafePoint(StrEnum):
    ADMISSION = "admission"
    BEFORE_START = "before_start"
    BEFORE_BATCH = "before_batch"
    BEFORE_IDLE_LEG = "before_idle_leg"
    BEFORE_SWITCH = "before_switch"
    BEFORE_UPLIFT = "before_uplift"
    AFTER_OUTCOME = "after_outcome"


class Decision(StrEnum):
    CONTINUE = "continue"
    STOP = "stop"
    FAIL = "fail"


@dataclass(frozen=True)
class Verdict:
    """A check's answer at one safe point."""

    decision: Decision
    reason: str = ""
    # What a stopped deployment ends with (its class gives the exit code); a failing verdict's
    # hint goes to the operator.
    error: DeployerError | None = None
    hint: str = ""
    check: str = ""

    @classmethod
    def go(cls) -> Verdict:
        return cls(Decision.CONTINUE)

    @classmethod
    def stop(cls, error: DeployerError) -> Verdict:
        return cls(Decision.STOP, reason=error.message, error=error, hint=error.hint or "")

    @classmethod
    def fail(cls, reason: str, *, hint: str = "") -> Verdict:
        return cls(Decision.FAIL, reason=reason, hint=hint)

    @property
    def goes_on(self) -> bool:
        return self.decision is Decision.CONTINUE


@dataclass(frozen=True)
class SafePointContext:
    """What a check is told about the safe point it is asked about."""

    point: SafePoint
    deployment: DeploymentRef
    # The lifecycle's wall clock at this point (injectable: tests move it by hand).
    now: float
    # The step that follows (e.g. "batch 2 of 3: node2"); the batch's number for before_batch.
    label: str = ""
    index: int | None = None
    # Whether any node has been changed so far by this deployment.
    changed: bool = False
    # Every node is back in service at this point (False only at after_outcome when some are not).
    all_in_service: bool = True
    # The verified release being deployed, and what the deployment is for its policies (a
    # resume acts as a rollback or as what it finishes; see Run.acts_as).
    release: Release | None = None
    acts_as: str = ""
    # Why the deployment is High Risk (no automatic rollback); "" when it is not.
    high_risk: str = ""
    # Asked by `deployer plan`: say what would be decided, change nothing.
    planning: bool = False


class Check(Protocol):
    """A check that runs at safe points."""

    name: str

    def check(self, ctx: SafePointContext) -> Verdict:
        """Decide at ``ctx.point``; raise a DeployerError when it cannot tell (stops safely)."""
        ...


@dataclass
class SafePoints:
    """The checks of one deployment, and reaching a point: every check asked in order, every
    verdict published, the first that is not ``continue`` returned."""

    events: EventStream
    checks: list[Check] = field(default_factory=list)
    clock: Callable[[], float] = time.time
    # What every context carries for this deployment (its release, what it acts as, High Risk).
    release: Release | None = None
    acts_as: str = ""
    high_risk: str = ""

    def register(self, check: Check) -> None:
        self.checks.append(check)

    def context(
        self, point: SafePoint, deployment: DeploymentRef, *, label: str = "",
        index: int | None = None, changed: bool = False, all_in_service: bool = True,
        planning: bool = False, release: Release | None = None,
    ) -> SafePointContext:
        """The context of ``point`` for ``deployment`` (``release``: the deployment's, when
        these safe points were not given it)."""
        return SafePointContext(point=point, deployment=deployment, now=self.clock(), label=label,
                                index=index, changed=changed, all_in_service=all_in_service,
                                release=release or self.release,
                                acts_as=self.acts_as or deployment.kind,
                                high_risk=self.high_risk, planning=planning)

    def ask(self, ctx: SafePointContext, *, every: bool = False) -> list[Verdict]:
        """Every check's verdict at ``ctx.point``, in order, up to the first that is not
        ``continue`` (after the outcome, or with ``every``: every check). Nothing is
        published."""
        verdicts: list[Verdict] = []
        for check in self.checks:
            try:
                verdict = check.check(ctx)
            except DeployerError as exc:
                verdict = Verdict.stop(exc)
            verdict = Verdict(verdict.decision, verdict.reason, verdict.error, verdict.hint, check.name)
            verdicts.append(verdict)
            if not verdict.goes_on and ctx.point is not SafePoint.AFTER_OUTCOME and not every:
                break  # nothing more to ask: the deployment does not go on from here
        return verdicts

    def publish(self, ctx: SafePointContext, verdicts: list[Verdict]) -> Verdict:
        """Publish the point and its verdicts; the decision (the first that is not continue)."""
        point = ctx.point
        self.events.publish(SafePointReached(point=point.value, label=ctx.label, index=ctx.index))
        decided = Verdict.go()
        for verdict in verdicts:
            if not verdict.goes_on or point is not SafePoint.AFTER_OUTCOME:
                self.events.publish(CheckVerdictEvent(
                    point=point.value, check=verdict.check, decision=verdict.decision.value,
                    reason=verdict.reason,
                ))
            if decided.goes_on and not verdict.goes_on:
                decided = verdict
        # After the outcome there is nothing left to stop: every check is told, none decides.
        return Verdict.go() if point is SafePoint.AFTER_OUTCOME else decided

    def reach(
        self, point: SafePoint, deployment: DeploymentRef, *, label: str = "", index: int | None = None,
        changed: bool = False, all_in_service: bool = True, release: Release | None = None,
    ) -> Verdict:
        ctx = self.context(point, deployment, label=label, index=index, changed=changed,
                           all_in_service=all_in_service, release=release)
        return self.publish(ctx, self.ask(ctx))


class OperatorStop:
    """The operator's first Ctrl-C (or SIGTERM): stop at the next safe point."""

    name = "operator"

    def __init__(self, requested: Callable[[], bool]) -> None:
        self._requested = requested

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point in (SafePoint.ADMISSION, SafePoint.AFTER_OUTCOME) or not self._requested():
            return Verdict.go()
        what = ctx.label or ctx.point.value.replace("_", " ")
        return Verdict.stop(Interrupted(f"stopped by the operator before {what}"))


# Before anything leaves the load balancer the lock is confirmed; a host that does not answer
# is asked again this many times, this long apart, before the deployment stops.
_CONFIRM_TRIES = 3
_CONFIRM_PAUSE = 1.0


class LockCheck:
    """The deployment lock, confirmed with its host at every safe point but the last: a
    deployment whose lock was taken over or removed (``unlock --force``) stops there, before
    its next node leaves the load balancer. One renewal of the lease is the confirmation: the
    lock program answers it only for the holder recorded now, so it reads and extends at once.
    """

    name = "lock"

    def __init__(self, lease: Lease, *, pause: Callable[[float], None] = time.sleep,
                 tries: int = _CONFIRM_TRIES) -> None:
        self.lease = lease
        self._pause = pause
        self._tries = tries
        # Seconds the confirmations took, for the benchmarks.
        self.timings: list[float] = []

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point in (SafePoint.ADMISSION, SafePoint.AFTER_OUTCOME):
            return Verdict.go()
        started = time.monotonic()
        try:
            self._confirm()
        except LockLostError as exc:
            return Verdict.stop(exc)
        finally:
            self.timings.append(time.monotonic() - started)
        return Verdict.go()

    def _confirm(self) -> None:
        last: LockError | None = None
        for attempt in range(self._tries):
            try:
                self.lease.confirm()
                return
            except LockLostError:
                raise
            except LockError as exc:
                last = exc
                if attempt + 1 < self._tries:
                    self._pause(_CONFIRM_PAUSE)
        assert last is not None
        raise LockError(
            f"cannot confirm the deployment lock with its host ({last.message}); stopped here, "
            "before changing anything more",
            hint=f"check that this machine reaches {self.lease.lock.where}; then `deployer "
            f"resume --env {self.lease.lock.env}` (or deploy again)",
        )


def register_all(points: SafePoints, checks: Iterable[Check]) -> None:
    for check in checks:
        points.register(check)
