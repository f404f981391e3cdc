"""The gates, as checks at the lifecycle's safe points (:class:`~deployer.engine.Check`).

Each gate is one check with its own name, so that every verdict — at admission
(``admission``) and at every safe point after it — is its own event, journalled when it is
not ``continue``, and kept in the evidence record:

========================  ==================================================================
``freeze``                the environment's emergency freeze (``deployer freeze``)
``decision_record``       a strategy without zero downtime references a decision record
``requester``             who asks, by key (``--requester-key``): signs the request
``break_glass``           an emergency deployment (``--break-glass --reason``) is approved so
``high_risk``             a High Risk deployment is approved as such, by each role
``window``                inside a release window (or exempt: a known-good rollback, …)
``calendar_freeze``       outside every calendar freeze
``change``                the change record: approved, implementable, in its planned window
``approval``              enough signed approvals, none by the requester's own key
========================  ==================================================================

Before anything changed a gate that says no refuses (:class:`~deployer.GateRefused`, exit
14, naming the gate and the reason; the deployment is recorded as refused). Once nodes have
changed, a gate whose time ran out — a window closed, a calendar freeze began, the change's
planned window ended, an approval expired — does what ``gates.on_window_close`` says:
``finish`` (go on, recorded), ``pause`` (stop here, every node in service:
:class:`~deployer.DeploymentPaused`, status ``paused``, resumed by ``deployer resume``) or
``rollback`` (fail here, rolled back as ``strategy.on_failure`` says). The emergency freeze
always pauses; a gate that cannot tell (the change API unreachable) pauses too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._clock import iso_utc
from .._errors import DeploymentPaused, GateRefused, VerificationError
from ..adapters.freeze import FreezeBoard
from ..adapters.journal import Journal
from ..artefacts import PublicKey, SecretKey
from ..config import DecisionRecordConfig, GatesConfig
from ..engine.history import ran_successfully
from ..engine.safepoints import Decision, SafePoint, SafePointContext, Verdict
from .approvals import (
    Approval,
    Approvers,
    Requester,
    sign_request,
    valid_approvals,
    verify_pointer_request,
)
from .calendar import Calendar, iso_local
from .changes import ChangeProvider, ChangeRecord

__all__ = [
    "ApprovalGate",
    "BreakGlassGate",
    "CalendarFreezeGate",
    "ChangeGate",
    "DecisionRecordGate",
    "FreezeGate",
    "GateRequest",
    "GateState",
    "HighRiskGate",
    "RequesterGate",
    "WindowGate",
]


@dataclass(frozen=True)
class GateRequest:
    """What the person (or pipeline, or agent) asking for a deployment brings to the gates."""

    approvals: tuple[Approval, ...] = ()
    # Who asks, by key (None: not known by key), with their secret key to sign the request.
    requester: Requester | None = None
    requester_secret: SecretKey | None = None
    change: str | None = None
    # An emergency: windows, calendar freezes and the change requirement do not apply; a
    # break-glass approval is needed, and the reason is recorded.
    break_glass: bool = False
    reason: str = ""
    # A request read from the environment's pointer (its runner asks): the requester's signed
    # request, verified by the requester gate; and whether one is required
    # (pointer.require_signed).
    signed: dict[str, Any] | None = None
    require_signed: bool = False
    # What the pointer asked (where, its revision, version, reason, requester, when), for the
    # evidence.
    pointer: dict[str, Any] | None = None


@dataclass
class GateState:
    """What the gates found, for the evidence record and the change's outcome."""

    env_name: str
    config: GatesConfig
    request: GateRequest
    requester: Requester | None = None
    approvals: list[dict[str, Any]] = field(default_factory=list)
    change: ChangeRecord | None = None
    window: str = ""
    decision_record: dict[str, Any] | None = None
    zero_downtime_gaps: list[str] = field(default_factory=list)
    break_glass: dict[str, Any] | None = None

    def note_approvals(self, kind: str, found: Sequence[tuple[Approval, Any]]) -> None:
        self.approvals = [a for a in self.approvals if a["kind"] != kind]
        for approval, approver in found:
            self.approvals.append({
                "kind": kind, "approver": approver.name, "key_id": approver.key.key_id_hex,
                "roles": list(approver.roles), "change": approval.payload.get("change"),
                "expires": approval.payload.get("expires"), "file": approval.source,
                "approval": approval.payload, "signature": approval.signature.decode(),
            })


def _where(ctx: SafePointContext) -> str:
    return f"before {ctx.label}" if ctx.label else f"at {ctx.point.value}"


class _Gate:
    """What every gate shares: its state, and what to do once its time has run out."""

    name = "gate"

    def __init__(self, state: GateState) -> None:
        self.state = state

    @property
    def env(self) -> str:
        return self.state.env_name

    def refuse(self, reason: str, *, hint: str = "", opens_at: float | None = None) -> Verdict:
        return Verdict.stop(GateRefused(f"refused by the {self.name} gate: {reason}; nothing was "
                                        "changed", hint=hint or None, gate=self.name,
                                        opens_at=opens_at))

    def pause(self, ctx: SafePointContext, reason: str, *, opens_at: float | None = None,
              hint: str = "") -> Verdict:
        when = f" (allowed again from {iso_utc(opens_at)})" if opens_at else ""
        return Verdict.stop(DeploymentPaused(
            f"paused by the {self.name} gate {_where(ctx)}: {reason}; every node is in service",
            hint=hint or f"`deployer resume --env {self.env}` continues it once the gate lets it "
            f"through{when}", gate=self.name, opens_at=opens_at))

    def closed(self, ctx: SafePointContext, reason: str, *, hint: str = "",
               opens_at: float | None = None) -> Verdict:
        """The gate's time ran out (or never began): refuse before anything changed, else as
        gates.on_window_close says."""
        if ctx.point is SafePoint.AFTER_OUTCOME:
            return Verdict.go()
        if ctx.point is SafePoint.ADMISSION or not ctx.changed:
            return self.refuse(reason, hint=hint, opens_at=opens_at)
        policy = self.state.config.on_window_close
        if policy == "finish":
            return Verdict(Decision.CONTINUE, reason=f"{reason}: finishing what was started "
                           "(gates.on_window_close: finish)")
        if policy == "pause":
            return self.pause(ctx, reason, opens_at=opens_at)
        return Verdict.fail(f"{reason} (gates.on_window_close: rollback)",
                            hint=f"deploy again once the {self.name} gate lets it through")

    def bound(self, ctx: SafePointContext, kinds: Sequence[str]) -> bool:
        """Whether this deployment is of a kind the gate binds (a resume: what it acts as)."""
        return (ctx.acts_as or ctx.deployment.kind) in kinds


class FreezeGate(_Gate):
    """The emergency freeze: nothing moves while it is on (break-glass included: lift it with
    ``deployer unfreeze``)."""

    name = "freeze"

    def __init__(self, state: GateState, board: FreezeBoard) -> None:
        super().__init__(state)
        self.board = board

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point is SafePoint.AFTER_OUTCOME:
            return Verdict.go()
        # Before the lock, ask the host; after, the lock's confirmation here brought it along.
        frozen = self.board.show(fresh=ctx.point is SafePoint.ADMISSION)
        if frozen is None:
            return Verdict(Decision.CONTINUE, reason="not frozen")
        reason = f"environment {self.env!r} is {frozen.describe()}"
        hint = (f"when the line may move again: `deployer unfreeze --env {self.env} --reason "
                "'...'`")
        if ctx.point is SafePoint.ADMISSION or not ctx.changed:
            return self.refuse(reason, hint=hint)
        return self.pause(ctx, reason, hint=f"{hint}, then `deployer resume --env {self.env}`")


class DecisionRecordGate(_Gate):
    """An environment that cannot deploy with zero downtime references the decision record
    that accepts it (judged once, at admission: config and inventory do not change after)."""

    name = "decision_record"

    def __init__(self, state: GateState, gaps: Sequence[str], record: DecisionRecordConfig | None,
                 config_file: str) -> None:
        super().__init__(state)
        self.gaps = list(gaps)
        self.record = record
        self.config_file = config_file
        state.zero_downtime_gaps = self.gaps
        state.decision_record = record.model_dump() if record is not None else None

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point is not SafePoint.ADMISSION:
            return Verdict.go()
        if not self.gaps:
            text = "zero downtime: no decision record needed"
            if self.record is not None:
                text += f" (references {self.record.id})"
            return Verdict(Decision.CONTINUE, reason=text)
        gaps = "; ".join(self.gaps)
        if self.record is None:
            return self.refuse(
                f"environment {self.env!r} cannot deploy with zero downtime ({gaps}) and its config "
                "references no decision record accepting it",
                hint=f"record the decision and reference it in {self.config_file}: "
                f"environments.{self.env}.gates.decision_record: {{id: ..., ref: PATH-OR-URL}}; or "
                "change the strategy so that it keeps nodes in service",
            )
        return Verdict(Decision.CONTINUE, reason=f"no zero downtime ({gaps}): accepted by decision "
                       f"record {self.record.id} ({self.record.ref})")


class RequesterGate(_Gate):
    """Who asks, by key: the request (app, version, digest, environment, change, time) signed
    with the requester's key, once, at admission. A request the environment's runner read from
    its pointer was signed when it was written there: its signature is verified against the
    config's requesters' keys and must be for this release and environment (and is required
    with ``pointer.require_signed``)."""

    name = "requester"

    def __init__(self, state: GateState, actor: str, clock: Callable[[], float] = time.time,
                 requesters: Sequence[tuple[str, PublicKey]] = ()) -> None:
        super().__init__(state)
        self.actor = actor
        self.clock = clock
        self.requesters = list(requesters)

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point is not SafePoint.ADMISSION:
            return Verdict.go()
        request = self.state.request
        if request.requester is None and request.signed is not None:
            return self._from_pointer(ctx, request.signed)
        if request.requester is None and request.require_signed:
            return self.refuse(
                "the pointer's request is not signed by a requester's key "
                "(pointer.require_signed)",
                hint=f"write it with `deployer pointer set --env {self.env} --requester-key KEY "
                "...` (KEY: the secret half of a key in gates.approvals.requesters)")
        if request.requester is None or request.requester_secret is None:
            return Verdict(Decision.CONTINUE, reason=f"requested by {self.actor} (not known by key)")
        release = ctx.release
        signed = sign_request(request.requester, request.requester_secret, {
            "app": release.app if release else "", "version": ctx.deployment.version,
            "sha256": release.sha256 if release else "", "environment": self.env,
            "change": request.change, "kind": ctx.deployment.kind, "actor": self.actor,
            "at": iso_utc(ctx.now),
        })
        self.state.requester = signed
        return Verdict(Decision.CONTINUE, reason=f"requested by {signed.describe()}, signed")

    def _from_pointer(self, ctx: SafePointContext, signed: dict[str, Any]) -> Verdict:
        try:
            requester = verify_pointer_request(signed, self.requesters)
        except VerificationError as exc:
            return self.refuse(exc.message, hint="write the pointer again with `deployer pointer "
                               "set --requester-key KEY` (a key in gates.approvals.requesters)")
        release = ctx.release
        asked = requester.request
        wrong = [f"{name} {asked.get(name)!r}, not {want!r}" for name, want in (
            ("environment", self.env), ("app", release.app if release else ""),
            ("version", ctx.deployment.version), ("sha256", release.sha256 if release else ""),
        ) if asked.get(name) != want]
        if wrong:
            return self.refuse(f"the pointer's request signed by {requester.describe()} is for "
                               f"{'; '.join(wrong)}")
        self.state.requester = requester
        self.state.request = dataclasses.replace(self.state.request, requester=requester)
        return Verdict(Decision.CONTINUE, reason=f"requested by {requester.describe()}, signed in "
                       f"the pointer at {asked.get('set_at') or '?'}")


class _ApprovalsGate(_Gate):
    """A gate judging signed approvals of one kind."""

    kind = "approval"

    def __init__(self, state: GateState, approvers: Approvers) -> None:
        super().__init__(state)
        self.approvers = approvers

    def valid(self, ctx: SafePointContext, *, high_risk: bool = False,
              break_glass: bool = False) -> tuple[list[tuple[Approval, Any]], list[str]]:
        release = ctx.release
        request = self.state.request
        found, rejected = valid_approvals(
            request.approvals, self.approvers, request.requester,
            app=release.app if release else "", version=ctx.deployment.version,
            sha256=release.sha256 if release else "", environment=self.env,
            change=request.change, now=ctx.now, high_risk=high_risk, break_glass=break_glass,
        )
        if ctx.point is SafePoint.ADMISSION:
            self.state.note_approvals(self.kind, found)
        return found, rejected

    def four_eyes_ready(self) -> str:
        """Why four eyes cannot be checked ("" when it can): the requester must be known by
        key."""
        if self.state.request.requester is None:
            return ("the requester is not known by key, so four eyes cannot be checked: give "
                    "--requester-key KEY (the requester's minisign secret key)")
        return ""

    @staticmethod
    def expiry(found: Sequence[tuple[Approval, Any]]) -> str:
        first = min((a.expires for a, _ in found), default=0.0)
        return f"until {iso_utc(first)}" if first else ""


class BreakGlassGate(_ApprovalsGate):
    name = "break_glass"
    kind = "break_glass"

    def check(self, ctx: SafePointContext) -> Verdict:
        request = self.state.request
        if ctx.point is SafePoint.AFTER_OUTCOME or not request.break_glass:
            return Verdict.go() if ctx.point is not SafePoint.ADMISSION else Verdict(
                Decision.CONTINUE, reason="not a break-glass deployment")
        role = self.state.config.break_glass_role
        if not request.reason.strip():
            return self.refuse("a break-glass deployment needs its reason (--reason TEXT)")
        missing = self.four_eyes_ready()
        if missing:
            return self.refuse(missing)
        found, rejected = self.valid(ctx, break_glass=True)
        found = [(a, who) for a, who in found if role in who.roles]
        if not found:
            why = f" ({'; '.join(rejected)})" if rejected else ""
            return self.closed(ctx, f"a break-glass deployment needs a break-glass approval by an "
                               f"approver with the role {role}; none valid{why}",
                               hint="have one made with `deployer approval sign --break-glass ...`"
                               " and pass it with --approval FILE")
        approver = found[0][1]
        self.state.break_glass = {"reason": request.reason, "approved_by": approver.name,
                                  "key_id": approver.key.key_id_hex}
        return Verdict(Decision.CONTINUE, reason=f"break-glass ({request.reason}): approved by "
                       f"{approver.describe()} {self.expiry(found)}")


class HighRiskGate(_ApprovalsGate):
    """A High Risk deployment needs an approval *as High Risk* from each configured role (by
    different approvers, none the requester)."""

    name = "high_risk"
    kind = "high_risk"

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point is SafePoint.AFTER_OUTCOME:
            return Verdict.go()
        if not ctx.high_risk:
            return Verdict(Decision.CONTINUE, reason="not High Risk")
        roles = list(self.state.config.high_risk.roles)
        missing = self.four_eyes_ready()
        if missing:
            return self.refuse(f"High Risk ({ctx.high_risk}): {missing}")
        found, rejected = self.valid(ctx, high_risk=True)
        chosen: dict[str, Any] = {}
        for role in roles:  # one approver per role, each approver used once
            for approval, approver in found:
                if role in approver.roles and approver.name not in {a.name for _, a in chosen.values()}:
                    chosen[role] = (approval, approver)
                    break
        lacking = [r for r in roles if r not in chosen]
        if lacking:
            why = f" ({'; '.join(rejected)})" if rejected else ""
            return self.closed(
                ctx, f"High Risk ({ctx.high_risk}) needs an approval as High Risk from each of "
                f"{', '.join(roles)}, by different approvers; missing: {', '.join(lacking)}{why}",
                hint="have them made with `deployer approval sign --high-risk ...` and pass each "
                "with --approval FILE")
        by = ", ".join(f"{a.name} ({role})" for role, (_, a) in chosen.items())
        return Verdict(Decision.CONTINUE, reason=f"High Risk ({ctx.high_risk}): approved by {by} "
                       f"{self.expiry(list(chosen.values()))}")


class WindowGate(_Gate):
    """Release windows."""

    name = "window"

    def __init__(self, state: GateState, calendar: Calendar, journal: Journal) -> None:
        super().__init__(state)
        self.calendar = calendar
        self.journal = journal

    def exempt(self, ctx: SafePointContext) -> str:
        """Why the calendar does not bind this deployment ("": it does)."""
        applies = self.state.config.windows_apply_to
        if self.state.request.break_glass:
            return "break-glass: windows and calendar freezes do not apply"
        kind = ctx.acts_as or ctx.deployment.kind
        if kind not in ("deploy", "rollback"):
            kind = "deploy"
        if kind not in applies:
            return f"a {kind} is not bound to windows (gates.windows_apply_to)"
        version = ctx.deployment.version
        if kind == "rollback" and "known_good_rollback" not in applies and ran_successfully(
                self.journal, self.env, version):
            return (f"a rollback to {version}, which ran successfully here: allowed outside "
                    "windows and calendar freezes")
        return ""

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point is SafePoint.AFTER_OUTCOME:
            return Verdict.go()
        cal = self.calendar
        if not cal.has_windows:
            return Verdict(Decision.CONTINUE, reason="no release windows")
        exempt = self.exempt(ctx)
        if exempt:
            if ctx.point is SafePoint.ADMISSION:
                self.state.window = f"outside windows: {exempt}" if cal.window_at(ctx.now) is None \
                    else f"in a window; {exempt}"
            return Verdict(Decision.CONTINUE, reason=exempt)
        occurrence = cal.window_at(ctx.now)
        if occurrence is not None:
            text = f"in the window {occurrence.describe()}"
            if ctx.point is SafePoint.ADMISSION:
                self.state.window = text
            return Verdict(Decision.CONTINUE, reason=text)
        opens = cal.next_opening(ctx.now)
        tz = cal.windows[0].tz
        when = (f"the next opens {iso_local(opens, tz)} ({iso_utc(opens)})" if opens is not None
                else "no window opens in the next year")
        if ctx.point is SafePoint.ADMISSION:
            self.state.window = f"outside every release window ({cal.describe_windows()}); {when}"
        return self.closed(ctx, f"outside every release window of {self.env!r} "
                           f"({cal.describe_windows()}); {when}", opens_at=opens,
                           hint="deploy in a window, or for an emergency: --break-glass --reason "
                           "TEXT with a break-glass approval")


class CalendarFreezeGate(WindowGate):
    """Calendar freezes (the same exemptions as windows)."""

    name = "calendar_freeze"

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point is SafePoint.AFTER_OUTCOME:
            return Verdict.go()
        freeze = self.calendar.freeze_at(ctx.now)
        if freeze is None:
            return Verdict(Decision.CONTINUE, reason="no calendar freeze now" if self.calendar.freezes
                           else "no calendar freezes")
        exempt = self.exempt(ctx)
        if exempt:
            return Verdict(Decision.CONTINUE, reason=f"in the freeze {freeze.label}: {exempt}")
        opens = self.calendar.next_opening(ctx.now)
        return self.closed(ctx, f"in the calendar freeze {freeze.label} ({freeze.reason}); "
                           + (f"deployments are allowed again from {iso_utc(opens)}" if opens else
                              "no opening in the next year"), opens_at=opens,
                           hint="wait for the freeze to end, or for an emergency: --break-glass "
                           "--reason TEXT with a break-glass approval")


class ChangeGate(_Gate):
    """The change record, in a change-management system: approved, in a state it may be
    implemented in, and now inside its planned window (which bounds the deployment)."""

    name = "change"

    def __init__(self, state: GateState, provider: ChangeProvider) -> None:
        super().__init__(state)
        self.provider = provider

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point is SafePoint.AFTER_OUTCOME:
            return Verdict.go()
        approvals = self.state.config.approvals
        assert approvals is not None and self.state.config.change_api is not None
        number = self.state.request.change
        if self.state.request.break_glass:
            return Verdict(Decision.CONTINUE, reason="break-glass: no change needed"
                           + (f" (change {number} recorded)" if number else ""))
        if not self.bound(ctx, approvals.required_for):
            return Verdict(Decision.CONTINUE, reason=f"a {ctx.acts_as} needs no change "
                           "(gates.approvals.required_for)")
        if not number:
            return self.refuse(f"environment {self.env!r} needs an approved change: give its "
                               "number with --change")
        try:
            record = self.provider.read(number)
        except GateRefused as exc:
            if ctx.point is SafePoint.ADMISSION or not ctx.changed:
                return self.refuse(f"cannot read change {number}: {exc.message}", hint=exc.hint or "")
            return self.pause(ctx, f"cannot read change {number}: {exc.message}")
        if record is None:
            return self.refuse(f"there is no change {number} in {self.provider.where}")
        self.state.change = record
        api = self.state.config.change_api
        if record.approval != api.approved:
            return self.closed(ctx, f"change {number} is not approved (approval: "
                               f"{record.approval or 'none'})")
        if record.state not in api.states:
            return self.closed(ctx, f"change {number} is in state {record.state or 'none'}, not one "
                               f"it may be implemented in ({', '.join(api.states)})")
        start, end = record.start, record.end
        if start is not None and ctx.now < start:
            return self.closed(ctx, f"change {number}'s planned window opens at {iso_utc(start)}",
                               opens_at=start)
        if end is not None and ctx.now >= end:
            return self.closed(ctx, f"change {number}'s planned window ended at {iso_utc(end)}")
        planned = f", planned {iso_utc(start) or '?'} to {iso_utc(end) or '?'}"
        return Verdict(Decision.CONTINUE, reason=f"change {number} approved, state {record.state}"
                       f"{planned}")


class ApprovalGate(_ApprovalsGate):
    """Enough signed approvals by approvers holding the approval role, none the requester."""

    name = "approval"

    def check(self, ctx: SafePointContext) -> Verdict:
        if ctx.point is SafePoint.AFTER_OUTCOME:
            return Verdict.go()
        approvals = self.state.config.approvals
        assert approvals is not None
        if self.state.request.break_glass:
            return Verdict(Decision.CONTINUE, reason="break-glass: the break_glass gate's approval "
                           "stands for it")
        if not self.bound(ctx, approvals.required_for):
            return Verdict(Decision.CONTINUE, reason=f"a {ctx.acts_as} needs no approval "
                           "(gates.approvals.required_for)")
        missing = self.four_eyes_ready()
        if missing:
            return self.refuse(missing)
        found, rejected = self.valid(ctx)
        found = [(a, who) for a, who in found if approvals.role in who.roles]
        if len(found) < approvals.min_approvals:
            why = f" ({'; '.join(rejected)})" if rejected else ""
            return self.closed(
                ctx, f"needs {approvals.min_approvals} approval(s) by approvers with the role "
                f"{approvals.role}, not the requester; {len(found)} valid{why}",
                hint="have them made with `deployer approval sign ...` and pass each with "
                "--approval FILE")
        by = ", ".join(a.name for _, a in found)
        return Verdict(Decision.CONTINUE, reason=f"approved by {by} {self.expiry(found)}")

