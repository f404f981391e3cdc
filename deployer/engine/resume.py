"""Resuming an environment whose deployment was interrupted (``deployer resume``).

A deployment whose process died (SIGKILL, a lost VM) leaves the fleet as it was at that moment:
some nodes on the new release, one perhaps out of the load balancer mid-change, live traffic
perhaps on a leg whose soak never ended. The journal says how far it got (every node phase,
switch and soak verdict was written as it happened); the load balancer and the nodes say where
things are now. ``resume`` reads both and brings the environment to a safe, consistent state,
as ``strategy.on_interrupted`` says: ``rollback`` (the default) goes back to what the
interrupted deployment found, ``finish`` goes on to the release it was putting on. An
interrupted *rollback* is always finished: undoing it would bring back the release it escaped.

**Which deployment.** The newest deploy, rollback or resume of the environment in this
controller's journal, when it was interrupted: its process is gone (still ``running``, or
already marked failed as abandoned by a later command), it was stopped at a safe point by a
check (but not by losing its lock to another controller, whose doings this journal does not
know), or it is ``paused``. A deployment that was refused changed nothing, so it neither
resolves nor hides an interruption before it: it is passed over. A resume that did not
succeed is followed back to the deployment it resumed; one that succeeded resolved it, so a
second ``resume`` finds nothing to do. A deployment still running refuses (its lock says so:
exit 6).

**Paused.** A deployment a gate paused (a release window closed with ``on_window_close:
pause``, a freeze) is continued, whatever ``on_interrupted`` says: it was stopped on purpose,
at a safe point, to go on later. A resume that was paused goes on as it was going (rolling
back or finishing). Its gates are asked again (a resume outside the window is refused).

**What it decides, from which journal facts.**

Rolling — the interrupted deployment's node events and its ``from_versions``:

- no node left the load balancer (only pending, staging, staged, skipped): nothing to do;
- ``rollback``: deploy the release the nodes had (the one most of them had, if they differed)
  to the nodes that had it, as a rollback is deployed (soaked only as ``analysis.on_rollback``
  says, a breach tolerated, a failure stops there). A node that had nothing (its first release)
  or another release is kept on what it runs, and put back into service if deployer left it out
  and it is healthy;
- ``finish``: deploy the interrupted release, as the interrupted deployment would have (soaked;
  on a failure ``on_failure: rollback`` also rolls back the nodes it had updated).

Either way nodes caught mid-change or left in MAINT by the dead deployment are deployer's
(:mod:`.left_out`): they are deployed to like any other and end in service.

Blue-green — its ``legs`` at its start, the node events of each leg, ``live traffic``
switched/switched_back and ``<leg> leg`` soaked/soak_failed, and the live map now. The
*candidate* is the leg the release was going to: the idle leg, or the old live leg once the
uplift had begun; the *fallback* is the other one.

- nothing of the candidate touched and no switch: nothing to do;
- live traffic on the candidate, its soak passed: nothing left to do (with ``after_soak:
  uplift`` and ``finish``: the uplift);
- live traffic on the candidate, its soak not passed: ``rollback`` switches live traffic back
  to the fallback (one switch, if that leg is healthy on its release) and puts the candidate back
  on its release; ``finish`` soaks the candidate again and goes on (switching back on a breach);
- live traffic on the fallback: ``rollback`` puts the candidate back on its release;
  ``finish`` releases to it again from the start (nodes already released are skipped), or the
  uplift.

The resume is a deployment of kind ``resume`` (journal details: ``resumes`` the interrupted
deployment's uid, ``acts_as`` what it was for the history), under the environment's lock,
taken over from a dead holder. A resume that finds nothing to do but an interrupted
deployment is recorded too (version ``-``), so that it is resolved.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._clock import iso_utc
from .._errors import ConfigError, DeploymentRefused, LoadBalancerError, LockHeldError
from ..adapters.journal import ABANDONED_SUMMARY, DeploymentRecord, Journal, NodeEvent, is_abandoned
from ..adapters.lock import DeploymentLock
from .bluegreen import BlueGreen
from .fleet import Fleet
from .left_out import left_out_by_deployer
from .lifecycle import Lifecycle
from .locking import locked_deployment
from .model import Outcome, Resumption
from .rolling import Rolling
from .states import NodePhase
from .strategy import Strategy
from .tracking import MID_CHANGE

__all__ = ["Decision", "Interruption", "ResumeResult", "decide", "find_interrupted", "resume"]

P = NodePhase

# The kinds of deployment a resume continues (recover and unlock change no release).
RESUMABLE_KINDS = ("deploy", "rollback", "resume")

# How many of the environment's latest deployments are read, at most.
LOOKBACK = 500

# Events of a node that say it never left the load balancer in that deployment.
_UNTOUCHED = frozenset({P.PENDING.value, P.STAGING.value, P.STAGED.value, P.SKIPPED.value})


@dataclass(frozen=True)
class Interruption:
    """The deployment to resume and what the journal says of it."""

    # The interrupted deployment (never a resume), and the resumes of it that did not finish
    # it, oldest first: ``chain[0]`` is ``root``, ``chain[-1]`` the one interrupted last.
    chain: tuple[DeploymentRecord, ...]
    # Their node events, in order.
    events: tuple[NodeEvent, ...]
    # How the last of them ended ("its process is gone", "was paused", ...).
    how: str

    @property
    def root(self) -> DeploymentRecord:
        return self.chain[0]

    @property
    def last(self) -> DeploymentRecord:
        return self.chain[-1]

    @property
    def from_versions(self) -> dict[str, str]:
        """What each node ran before the interrupted deployment: as it recorded them, else as
        the node's first event that touched it says (an uplifted leg's nodes)."""
        versions = {str(n): str(v or "") for n, v in
                    (self.root.details.get("from_versions") or {}).items()}
        for ev in self.events:
            if ev.node not in versions and ev.phase not in _UNTOUCHED and ev.from_version is not None:
                versions[ev.node] = ev.from_version
        return versions

    def touched(self, nodes: Iterable[str]) -> list[str]:
        """Those of ``nodes`` that left the load balancer in the interrupted deployment (or a
        resume of it)."""
        wanted = set(nodes)
        seen = {ev.node for ev in self.events if ev.node in wanted and ev.phase not in _UNTOUCHED}
        return [n for n in nodes if n in seen]

    def last_phases(self, nodes: Iterable[str]) -> dict[str, str]:
        last: dict[str, str] = {}
        wanted = set(nodes)
        for ev in self.events:
            if ev.node in wanted:
                last[ev.node] = ev.phase
        return last

    def describe(self) -> str:
        root = self.root
        text = (f"deployment {root.id} ({root.kind} {root.version}, "
                f"{root.details.get('strategy', 'rolling')}; started {iso_utc(root.started_at)} by "
                f"{root.actor}, pid {root.pid})")
        if self.last is root:
            return f"{text} {self.how}"
        return f"{text} was interrupted; resume {self.last.id} of it {self.how}"


@dataclass(frozen=True)
class Decision:
    """What resume does: its release (``-``: nothing), and the resumption the strategy gets
    (None: nothing to do), said in words for the operator."""

    found: str
    action: str
    mode: str
    version: str = "-"
    resumption: Resumption | None = None
    # What the resume is for the history (rollback, deploy; nothing).
    acts_as: str = "nothing"

    @property
    def nothing(self) -> bool:
        return self.resumption is None

    def to_dict(self) -> dict[str, Any]:
        r = self.resumption
        return {"found": self.found, "action": self.action, "mode": self.mode,
                "version": self.version, "acts_as": self.acts_as,
                **({"entry": r.entry, "candidate": r.candidate, "fallback": r.fallback}
                   if r is not None and r.entry else {})}


@dataclass
class ResumeResult:
    """How a resume ended: nothing to resume (``nothing``, why), nothing to do (recorded as
    ``deployment``), or the outcome of the resume's deployment."""

    interruption: Interruption | None = None
    decision: Decision | None = None
    outcome: Outcome | None = None
    deployment: int | None = None
    uid: str = ""
    nothing: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        interrupted = self.interruption
        return {
            "resumes": None if interrupted is None else {
                "deployment": interrupted.root.id, "uid": interrupted.root.uid,
                "kind": interrupted.root.kind, "version": interrupted.root.version,
                "last": interrupted.last.id, "how": interrupted.how},
            "decision": self.decision.to_dict() if self.decision else None,
            "nothing_to_resume": self.nothing or None,
        }


# -- which deployment ------------------------------------------------------------------------


def _interrupted_how(record: DeploymentRecord, journal: Journal,
                     lock: DeploymentLock | None) -> str:
    """How ``record`` was interrupted, or "" when it ended (or runs) on its own. Raises
    LockHeldError when it is still running."""
    if record.status == "running":
        if is_abandoned(record):
            return "ended without finishing: its process is gone"
        if record.host == socket.gethostname():
            raise LockHeldError(
                f"deployment {record.id} ({record.kind} {record.version}) is still running (pid "
                f"{record.pid} on this host): nothing to resume",
                hint="wait for it to end, or stop it (Ctrl-C or SIGTERM: it stops at its next safe point)",
            )
        # Run from another host (a shared state directory): the lock says whether it lives.
        view = lock.show() if lock is not None else None
        holder = view.record if view is not None and not view.stale else None
        if holder is not None and holder.deployment == record.id:
            raise LockHeldError(
                f"deployment {record.id} ({record.kind} {record.version}) is still running on "
                f"{record.host}: it holds the lock ({holder.describe()})",
                hint="wait for it to end; a holder that died frees the lock when its lease expires",
            )
        return f"ended without finishing: its host ({record.host}) no longer holds the lock"
    if record.status == "failed" and record.summary == ABANDONED_SUMMARY:
        return "ended without finishing: its process is gone"
    if record.status == "paused":
        return "was paused"
    if record.status == "stopped":
        events = journal.node_events(record.id)
        if any(e.node == "lock" and e.phase == "lost" for e in events):
            return ""  # another controller took over: what it did since is not in this journal
        return f"was stopped at a safe point ({record.summary})"
    return ""


def find_interrupted(
    journal: Journal, env: str, *, lock: DeploymentLock | None = None,
) -> tuple[Interruption | None, str]:
    """The interrupted deployment of ``env`` (see the module documentation), or None and why
    there is nothing to resume. Raises LockHeldError when a deployment is still running."""
    records = [r for r in journal.deployments(env, limit=LOOKBACK)
               if r.kind in RESUMABLE_KINDS and r.status != "refused"]
    if not records:
        return None, f"no deployment of environment {env!r} in the journal"
    last = records[0]
    how = _interrupted_how(last, journal, lock)
    if last.kind == "resume" and last.status == "succeeded":
        return None, (f"the last deployment, {last.id}, resumed deployment "
                      f"{last.details.get('resumes', '?')} and succeeded ({last.summary})")
    if last.kind != "resume" and not how:
        return None, (f"the last deployment, {last.id} ({last.kind} {last.version}), ended "
                      f"{last.status}" + (f": {last.summary}" if last.summary else ""))
    if not how:
        how = f"ended {last.status}" + (f": {last.summary}" if last.summary else "")
    chain = [last]
    while chain[0].kind == "resume":
        earlier = journal.find(str(chain[0].details.get("resumes") or ""), env)
        if earlier is None or earlier in chain:
            return None, (f"the last deployment, {last.id}, is a resume of a deployment that is "
                          "not in this journal")
        chain.insert(0, earlier)
    events = tuple(ev for record in chain for ev in journal.node_events(record.id))
    return Interruption(tuple(chain), events, how), ""


# -- what to do ------------------------------------------------------------------------------


def decide(found: Interruption, strategy: Strategy, *, on_interrupted: str) -> Decision:
    """What resuming ``found`` does with the environment's strategy (see the module
    documentation). Blue-green reads the live map (and the fallback leg's release)."""
    root = found.root
    mode = "finish" if root.kind == "rollback" else on_interrupted
    if found.last.status == "paused":
        # Paused on purpose, to go on: as it was going (a paused resume keeps its mode).
        mode = str(found.last.details.get("on_interrupted") or "finish") if (
            found.last.kind == "resume") else "finish"
    ran = str(root.details.get("strategy") or "rolling")
    if ran != strategy.kind:
        raise ConfigError(
            f"deployment {root.id} ran with strategy {ran}; the config now says {strategy.kind}",
            hint="resume it with the config it ran with",
        )
    if isinstance(strategy, BlueGreen):
        return _decide_blue_green(found, strategy, mode)
    assert isinstance(strategy, Rolling)
    return _decide_rolling(found, strategy.fleet.names(), mode)


def _where_rolling(found: Interruption, nodes: Sequence[str]) -> str:
    last = found.last_phases(nodes)
    touched = found.touched(nodes)
    if not touched:
        staging = any(p in (P.STAGING.value, P.STAGED.value) for p in last.values())
        return "before any node left the load balancer" + (" (while pre-staging)" if staging else "")
    caught = [f"{n} was {p}" for n, p in last.items() if p in {m.value for m in MID_CHANGE}
              or p in (P.REVERTING.value, P.FAILED.value, "out_of_service")]
    done = [n for n in nodes if last.get(n) in (P.DONE.value, P.REVERTED.value)]
    waiting = [n for n in nodes if n not in touched]
    parts = [f"while {' and '.join(caught)}" if caught else "between batches"]
    if done:
        parts.append(f"done: {', '.join(done)}")
    if waiting:
        parts.append(f"not started: {', '.join(waiting)}")
    plan = found.root.details.get("plan") or {}
    soaked = any(s.get("kind") == "soak" for s in plan.get("steps", []) if isinstance(s, dict))
    if soaked and not any(ev.node == "analysis" for ev in found.events) and not caught:
        parts.append("its soak not judged yet")
    return "; ".join(parts)


def _decide_rolling(found: Interruption, nodes: Sequence[str], mode: str) -> Decision:
    root = found.root
    where = _where_rolling(found, nodes)
    text = f"{found.describe()}, {where}"
    if not found.touched(nodes):
        return Decision(text, "nothing to do: no node had left the load balancer, none was "
                        f"changed (to deploy {root.version}: `deployer deploy --env {root.env} "
                        f"--version {root.version}`)", mode)
    if mode == "finish":
        resumption = Resumption(uid=found.last.uid, deployment=root.id, kind=root.kind,
                                version=root.version, mode=mode, from_versions=found.from_versions)
        return Decision(text, f"finish it: deploy {root.version} to every node not on it yet "
                        "(as the deployment would have), every node back in service", mode,
                        root.version, resumption, resumption.acts_as)
    froms = {n: found.from_versions.get(n, "") for n in nodes}
    counts = Counter(v for v in froms.values() if v)
    if counts:
        target = counts.most_common(1)[0][0]
        scope = frozenset(n for n, v in froms.items() if v == target)
    else:
        target, scope = root.version, frozenset()
    kept = [n for n in nodes if n not in scope]
    action = (f"roll it back: {target} to {', '.join(n for n in nodes if n in scope)} (the nodes "
              "not on it yet)" if scope else "roll it back: nothing to roll back to")
    if kept:
        action += (f"; {', '.join(kept)} kept on what they run (they had "
                   + ", ".join(sorted({froms[n] or 'nothing' for n in kept})) + " before)")
    action += "; every node back in service"
    resumption = Resumption(uid=found.last.uid, deployment=root.id, kind=root.kind,
                            version=root.version, mode=mode, from_versions=found.from_versions,
                            scope=scope)
    return Decision(text, action, mode, target, resumption, resumption.acts_as)


def _decide_blue_green(found: Interruption, bg: BlueGreen, mode: str) -> Decision:
    root = found.root
    version = root.version
    legs = root.details.get("legs") or {}
    live_was, idle_was = str(legs.get("live") or ""), str(legs.get("idle") or "")
    text = found.describe()
    if live_was not in bg.legs or idle_was not in bg.legs:
        return Decision(f"{text}, before it read the legs", "nothing to do: nothing was changed",
                        mode)
    names = {leg: fleet.names() for leg, fleet in bg.legs.items()}
    uplift = bool(found.touched(names[live_was]))
    candidate, fallback = (live_was, idle_was) if uplift else (idle_was, live_was)
    touched = found.touched(names[candidate])
    switches = [ev for ev in found.events if ev.node == "live traffic"]
    verdicts = [ev for ev in found.events if ev.node == f"{candidate} leg"
                and ev.phase in ("soaked", "soak_failed")]
    # A rollback's breach was tolerated (its soak failed, it went on): it ended there too.
    proven = bool(verdicts) and (verdicts[-1].phase == "soaked" or root.kind == "rollback")
    if not touched and not switches:
        return Decision(f"{text}, before any node of the idle leg {idle_was} left the load "
                        "balancer and before any switch", "nothing to do: nothing was changed "
                        f"(to deploy {version}: `deployer deploy --env {root.env} --version "
                        f"{version}`)", mode)
    live = bg.live_leg()
    if uplift:
        where = f"while uplifting {candidate} to {version} ({fallback} proven)"
    elif switches and live == candidate:
        where = (f"after live traffic moved to {candidate} at {iso_utc(switches[-1].at)}"
                 + (", its soak passed" if proven else ", before its soak passed"))
    else:
        where = f"while releasing {version} to the idle leg {candidate}"
    mid = [f"{n} {p}" for n, p in found.last_phases(touched).items()
           if p in {m.value for m in MID_CHANGE} or p == P.REVERTING.value]
    if mid:
        where += f" ({', '.join(mid)})"
    text = f"{text}, {where}; live traffic is on {live} now"

    def resuming(entry: str, cand: str, fall: str) -> Resumption:
        return Resumption(uid=found.last.uid, deployment=root.id, kind=root.kind, version=version,
                          mode=mode, from_versions=found.from_versions, entry=entry,
                          candidate=cand, fallback=fall, uplift=uplift)

    def decision(action: str, release: str, r: Resumption, acts_as: str = "") -> Decision:
        return Decision(text, action, mode, release, r, acts_as or r.acts_as)

    after_soak = bg.config.after_soak
    if live == candidate and proven:
        if not uplift and after_soak == "uplift" and mode == "finish":
            return decision(f"finish it: uplift {fallback} to {version}, then move live traffic "
                            "to it and soak it", version, resuming("uplift", fallback, candidate))
        return decision(f"nothing left to do: {candidate} is live on {version} and passed its soak"
                        + ("" if uplift or after_soak == "keep" else
                           f"; {fallback} stays on its release as the fallback (no uplift: "
                           "on_interrupted: rollback)"),
                        version, resuming("done", candidate, fallback), root.kind)
    if mode == "finish":
        if live == candidate:
            return decision(f"finish it: soak {candidate} again (its soak was interrupted); on a "
                            f"breach switch back to {fallback}", version,
                            resuming("soak", candidate, fallback))
        if uplift:
            return decision(f"finish it: uplift {candidate} to {version} again (nodes already on "
                            "it skipped)", version, resuming("uplift", candidate, fallback))
        return decision(f"finish it: release {version} to {candidate} (nodes already on it "
                        "skipped), smoke it, move live traffic to it and soak it", version,
                        resuming("release", candidate, fallback))
    # Rollback: live traffic ends on the fallback, on its own release; the candidate goes back.
    # During an uplift the fallback is the proven leg, on the new release: for the history the
    # environment went forward (what the interrupted deployment was), not back.
    fallback_release = version if uplift else _leg_release(bg, fallback)
    went = root.kind if uplift else "rollback"
    if live == candidate:
        return decision(f"roll it back: move live traffic back to {fallback} ({fallback_release}) "
                        f"in one switch, then put {candidate} back on its release",
                        fallback_release, resuming("switch_back", candidate, fallback), went)
    if not touched:
        return Decision(text, f"nothing to do: live traffic is on {fallback} and no node of "
                        f"{candidate} was changed", mode)
    return decision(f"roll it back: put the idle leg {candidate} back on its release (live "
                    f"traffic stays on {fallback})", fallback_release,
                    resuming("revert", candidate, fallback), went)


def _leg_release(bg: BlueGreen, leg: str) -> str:
    """The release a leg's nodes run (the one most of them run)."""
    versions = Counter(f.current for f in bg.leg_facts(leg).values() if f.current)
    if not versions:
        raise DeploymentRefused(f"cannot tell which release the leg {leg} runs (no node of it "
                                "answered with one); nothing was changed",
                                hint=f"check the nodes of {leg} (`deployer status`)")
    return versions.most_common(1)[0][0]


# -- doing it --------------------------------------------------------------------------------


def _high_risk_of(found: Interruption) -> str:
    """A resume of a High Risk deployment is High Risk too (it continues its change)."""
    why = found.root.details.get("high_risk") or found.last.details.get("high_risk")
    return f"resumes deployment {found.root.id}, which is High Risk: {why}" if why else ""


def resume(lifecycle: Lifecycle, *, on_interrupted: str, say: Callable[[str], None],
           high_risk: str = "", record_refused: bool = True) -> ResumeResult:
    """Resume the environment's interrupted deployment (see the module documentation): say
    what was found and what will be done, then do it. Nothing to resume, or nothing to do:
    no outcome (the latter recorded in the journal). ``record_refused``: as for
    :meth:`Lifecycle.deploy`."""
    journal, env = lifecycle.journal, lifecycle.env_name
    found, why = find_interrupted(journal, env, lock=lifecycle.lock)
    if found is None:
        say(f"nothing to resume: {why}")
        return ResumeResult(nothing=why)
    decision = decide(found, lifecycle.strategy, on_interrupted=on_interrupted)
    say(f"found: {decision.found}")
    say(f"on_interrupted: {decision.mode}: {decision.action}")
    result = ResumeResult(interruption=found, decision=decision)
    details = {"acts_as": decision.acts_as, "on_interrupted": decision.mode,
               "found": decision.found, "action": decision.action}
    if decision.nothing:
        result.deployment, result.uid = _record_nothing(lifecycle, found, decision, details, say)
        return result
    outcome = lifecycle.deploy(decision.version, kind="resume", resumption=decision.resumption,
                               extra_details=details, high_risk=high_risk or _high_risk_of(found),
                               record_refused=record_refused)
    result.outcome = outcome
    if outcome.status != "succeeded":
        _name_left_out(lifecycle, outcome)
    return result


def _record_nothing(
    lifecycle: Lifecycle, found: Interruption, decision: Decision, details: dict[str, Any],
    say: Callable[[str], None],
) -> tuple[int, str]:
    """Record a resume that has nothing to do, under the lock: the interrupted deployment is
    resolved by it."""
    journal, root = lifecycle.journal, found.root
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        say(text)

    with locked_deployment(journal, lifecycle.lock, note, env_name=lifecycle.env_name,
                           app=lifecycle.app, kind="resume", version="-",
                           command=lifecycle.command,
                           details={**details, "resumes": found.last.uid,
                                    "strategy": lifecycle.kind}) as held:
        for text in notes:
            if text.startswith("took over"):
                journal.record_phase(held.deployment_id, "lock", "taken_over", detail=text)
        if found.last.status == "running":  # run from another host: it is not coming back
            journal.finish_deployment(found.last.id, "failed", ABANDONED_SUMMARY)
        summary = f"resumed deployment {root.id}: {decision.action}"
        journal.finish_deployment(held.deployment_id, "succeeded", summary)
    say(f"recorded as deployment {held.deployment_id} ({held.uid})")
    return held.deployment_id, held.uid


def _fleets(strategy: Strategy) -> list[Fleet]:
    if isinstance(strategy, BlueGreen):
        return list(strategy.legs.values())
    assert isinstance(strategy, Rolling)
    return [strategy.fleet]


def _name_left_out(lifecycle: Lifecycle, outcome: Outcome) -> None:
    """After a resume that did not succeed: nodes the journal says deployer left out of the
    load balancer that are still out (the interrupted deployment's, which the resume did not
    reach) are named in the outcome with the fixes, as its own are."""
    named = {line.split(" ", 1)[0] for line in outcome.out_of_service}
    for fleet in _fleets(lifecycle.strategy):
        try:
            states = fleet.lb_states()
        except LoadBalancerError:
            return  # the outcome says why already; the journal keeps who left which node out
        ours = left_out_by_deployer(lifecycle.journal, lifecycle.env_name, fleet.names())
        for name, event in ours.items():
            s = states.get(fleet.node(name).lb_server)
            if name in named or s is None or s.in_service:
                continue
            outcome.out_of_service.append(f"{name} ({event.phase} in deployment "
                                          f"{event.deployment_id}, load balancer: {s.label})")
    if outcome.out_of_service and not outcome.fix_commands:
        env = lifecycle.env_name
        outcome.fix_commands = [f"deployer recover --env {env}", f"deployer resume --env {env}"]
