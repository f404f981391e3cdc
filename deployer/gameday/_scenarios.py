"""The scenarios: each rehearses one failure path of a release, with its fault, the point of the
lifecycle where the fault goes in, and the outcome that is the safe one.

A scenario says what it does in :meth:`Scenario.rehearse` (through a
:class:`~deployer.gameday._runner.Rehearsal`: deploy with a fault at a point, kill, resume, ...)
and whether what happened was the safe outcome in :meth:`Scenario.judge`; the runner does the
rest for every scenario alike (steady state before and after, load, undoing the faults, the
journal, the report).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from .._clock import iso_utc
from ._faults import AppFault, ClockMoved, CutNode, LbApiGone, PointerMoved, TamperArtefact
from ._faults import DiskFull as FullDisk
from ._governance import open_window, with_approvals
from ._points import Point, reacts

if TYPE_CHECKING:
    from ._runner import Rehearsal

__all__ = ["SCENARIOS", "Context", "Scenario", "scenario_named"]

_CONTROLLER = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, kw_only=True)
class Context:
    """What a scenario knows before it starts: the environment and the releases it moves
    between (the fleet runs ``baseline``; a rehearsal deploys ``target``)."""

    env_name: str
    strategy: str  # rolling | blue-green
    baseline: str
    target: str
    # The application's fault file on the nodes, and where its releases live there.
    fault_file: str
    release_root: str
    live_leg: str | None = None

    @property
    def blue_green(self) -> bool:
        return self.strategy == "blue-green"


def failed_safely(r: Rehearsal, *, codes: Sequence[int] = (10,),
                  statuses: Sequence[str] = ("rolled_back", "failed")) -> list[str]:
    """The deployment failed, as one that cleans up after itself does."""
    if r.exit_code is None:
        return ["the rehearsal deployment did not end (no outcome)"]
    problems = []
    status = r.outcome.status if r.outcome is not None else None
    if r.exit_code not in codes:
        problems.append(f"it ended with exit {r.exit_code}, expected "
                        + " or ".join(str(c) for c in codes))
    if status is not None and status not in statuses:
        problems.append(f"its status is {status}, expected {' or '.join(statuses)}")
    return problems


def succeeded(r: Rehearsal) -> list[str]:
    if r.outcome is None or r.exit_code != 0:
        return [f"the rehearsal deployment did not succeed ({r.actual()})"]
    return []


class Scenario(ABC):
    """One failure path, rehearsed (see the module documentation)."""

    name: ClassVar[str]
    title: ClassVar[str]
    # For which strategies it means something.
    strategies: ClassVar[tuple[str, ...]] = ("rolling", "blue-green")

    @abstractmethod
    def fault(self, ctx: Context) -> str:
        """The fault, in words."""

    @abstractmethod
    def point(self, ctx: Context) -> str:
        """Where it goes in, in words."""

    @abstractmethod
    def expected(self, ctx: Context) -> str:
        """The safe outcome, in words."""

    def applies(self, ctx: Context, r: Rehearsal) -> str:
        """Why the scenario cannot run here ("" when it can)."""
        return ""

    @abstractmethod
    def rehearse(self, r: Rehearsal) -> None:
        """Run the rehearsal: deployments, faults, the fixes an operator would run."""

    @abstractmethod
    def judge(self, r: Rehearsal) -> list[str]:
        """Why what happened is not the safe outcome (empty: it is)."""

    def detects(self, event: Mapping[str, Any]) -> bool:
        """Whether an event of the deployment is it noticing the fault."""
        return reacts(event)


# -- a release that fails on a node ------------------------------------------------------------


class _AppFaultOnFirstNode(Scenario):
    """The application's fault file set for the new release on the first node of the first
    batch, as the batch starts: in place before anything is done to that node (the play waits
    at the batch's gate until the controller lets it go, after this event)."""

    words: ClassVar[str]

    def point(self, ctx: Context) -> str:
        return f"{_first_batch(ctx).describe()}, on its first node"

    def rehearse(self, r: Rehearsal) -> None:
        ctx = r.ctx

        def inject(event: dict[str, Any]) -> None:
            node = str((event.get("nodes") or [""])[0])
            r.hit_nodes = [node]
            r.inject(AppFault(node, ctx.fault_file, f"{self.words} {ctx.target}"))

        r.deploy(ctx.target, point=_first_batch(ctx), at_point=inject)

    def judge(self, r: Rehearsal) -> list[str]:
        problems = failed_safely(r)
        if r.outcome is not None and r.hit_nodes:
            node = r.hit_nodes[0]
            st = r.outcome.nodes.get(node)
            if st is None or st.phase.value != "reverted":
                problems.append(f"{node} ended {st.phase.value if st else 'unknown'}, "
                                f"not reverted to {r.ctx.baseline}")
        return problems

    def expected(self, ctx: Context) -> str:
        back = ("live traffic never moves to the new leg" if ctx.blue_green
                else "the deployment stops and rolls back the nodes it updated")
        return (f"the node fails its smoke check and is reverted to {ctx.baseline} at once; "
                f"{back} (exit 10); every node stays or comes back in service")


class SmokeFail(_AppFaultOnFirstNode):
    name = "smoke-fail"
    title = "A release failing its smoke check"
    words = "unhealthy"

    def fault(self, ctx: Context) -> str:
        return (f"the new release {ctx.target} answers its health check with 503 on the first "
                f"node it reaches (`unhealthy {ctx.target}` in {ctx.fault_file})")


class CrashLoop(_AppFaultOnFirstNode):
    name = "crash-loop"
    title = "The application crash-looping on a node after activation"
    words = "crash"

    def fault(self, ctx: Context) -> str:
        return (f"the new release {ctx.target} exits as soon as it starts on the first node it "
                f"reaches, and its supervisor restarts it again and again (`crash {ctx.target}` "
                f"in {ctx.fault_file})")


# -- a release that degrades under live traffic ------------------------------------------------


class SoakDegrade(Scenario):
    name = "soak-degrade"
    title = "A release degrading during the soak"

    def fault(self, ctx: Context) -> str:
        return (f"the new release {ctx.target} answers 500 on `/` on every node being soaked, "
                f"while its health check stays green (`errors {ctx.target}` in {ctx.fault_file})")

    def point(self, ctx: Context) -> str:
        return "the start of the soak" + (" of the new live leg" if ctx.blue_green
                                          else " after the canary batch")

    def expected(self, ctx: Context) -> str:
        how = ("live traffic goes back to the old leg at once and the new leg is put back on "
               f"{ctx.baseline}" if ctx.blue_green
               else f"the updated nodes are rolled back to {ctx.baseline}")
        return f"the soak's rules see the errors and fail the release; {how} (exit 10)"

    def applies(self, ctx: Context, r: Rehearsal) -> str:
        if r.game.env.analysis is None:
            return "the environment has no soak analysis (an `analysis:` section)"
        return ""

    def rehearse(self, r: Rehearsal) -> None:
        ctx = r.ctx

        def inject(event: dict[str, Any]) -> None:
            r.hit_nodes = [r.reach.by_server(str(s)) for s in event.get("servers") or []]
            for node in r.hit_nodes:
                r.inject(AppFault(node, ctx.fault_file, f"errors {ctx.target}"))

        r.deploy(ctx.target, point=Point.event("soak_started", self.point(ctx)), at_point=inject)

    def judge(self, r: Rehearsal) -> list[str]:
        problems = failed_safely(r)
        if not r.saw(lambda e: e.get("type") == "soak_verdict" and e.get("outcome") == "failed"):
            problems.append("the soak did not fail the release")
        if r.ctx.blue_green and not r.saw(lambda e: e.get("type") == "switch" and bool(e.get("back"))):
            problems.append("live traffic was not switched back")
        return problems

    def detects(self, event: Mapping[str, Any]) -> bool:
        return event.get("type") == "soak_verdict" and event.get("outcome") == "failed"


# -- the infrastructure failing under the deployment -------------------------------------------


def _first_batch(ctx: Context) -> Point:
    """The start of the first batch (rolling), or of the idle leg's release."""
    if ctx.blue_green:
        return Point.event("batch", "the start of the release to the idle leg", index=1,
                           rollback=False)
    return Point.event("batch", "the start of batch 1", index=1, rollback=False)


def _mid_point(ctx: Context) -> Point:
    """The start of the batch after the first (rolling), or of the idle leg's release."""
    if ctx.blue_green:
        return Point.event("batch", "the start of the release to the idle leg", index=1,
                           rollback=False)
    return Point.event("batch", "the start of batch 2", index=2, rollback=False)


def _safe_point(ctx: Context) -> Point:
    """Between the first changes and the next: before batch 2, or before the switch."""
    return Point.safe_point("before_switch") if ctx.blue_green else Point.safe_point("before_batch", 2)


def _restore(r: Rehearsal) -> None:
    """The fixes the outcome names, once the fault is gone: put back what was left out, then
    roll back what was left on the new release."""
    if r.outcome is not None and r.outcome.out_of_service:
        r.recover()
    if r.runs_two_releases():
        r.rollback(r.ctx.baseline)


class NodeUnreachable(Scenario):
    name = "node-unreachable"
    title = "A node becoming unreachable mid-deployment"

    def fault(self, ctx: Context) -> str:
        return ("the next node's network cut from the controller and the load balancer (every "
                "packet to it dropped, an nftables table of the game day's own): SSH, health "
                "checks and traffic to it time out")

    def point(self, ctx: Context) -> str:
        return _mid_point(ctx).describe()

    def expected(self, ctx: Context) -> str:
        return ("the cut node fails as unreachable (within the SSH keepalive, 15 s) and the "
                "deployment stops; the nodes it updated are rolled back; the cut node is named "
                "out of service with the fix (exit 11), or was never taken out (exit 10); once its "
                "network is back it serves again (after `deployer recover`, the named fix)")

    def rehearse(self, r: Rehearsal) -> None:
        def inject(event: dict[str, Any]) -> None:
            r.hit_nodes = [str(n) for n in event.get("nodes") or []]
            for node in r.hit_nodes:
                r.inject(CutNode.of(r.reach.node(node)))

        r.deploy(r.ctx.target, point=_mid_point(r.ctx), at_point=inject)
        r.undo_faults()
        _restore(r)

    def judge(self, r: Rehearsal) -> list[str]:
        problems = failed_safely(r, codes=(10, 11))
        for node in r.hit_nodes:
            st = r.outcome.nodes.get(node) if r.outcome is not None else None
            if st is not None and not st.unreachable:
                problems.append(f"{node} was not reported unreachable ({st.phase.value}: {st.detail})")
        return problems


class LbApiDown(Scenario):
    name = "lb-api-down"
    title = "The load balancer's API unavailable mid-rollout, then back"

    def fault(self, ctx: Context) -> str:
        return ("the load balancer's runtime API gone (its socket moved aside: HAProxy goes on "
                "serving, but nothing can read or change it), back after the deployment ends")

    def point(self, ctx: Context) -> str:
        return _safe_point(ctx).describe()

    def expected(self, ctx: Context) -> str:
        return ("the deployment cannot read the load balancer and changes nothing more; nodes it "
                "cannot drain to roll back stay as they are and are named as possibly out of "
                "service with the fixes (exit 11), or it fails cleanly (exit 10), or, when nothing "
                "had changed yet (the idle leg already held the release), it is refused (exit 9); "
                "once the API is back, the named fixes (`deployer recover`, `deployer rollback`) "
                "restore the fleet")

    def applies(self, ctx: Context, r: Rehearsal) -> str:
        lb = r.game.env.load_balancer
        if lb.socket.startswith("tcp://"):
            return "the load balancer's API is a tcp:// address (only a unix socket is moved aside)"
        return ""

    def rehearse(self, r: Rehearsal) -> None:
        lb = r.game.env.load_balancer
        local = lb.connect == "direct" or (
            lb.connect == "auto" and all(h in _CONTROLLER for h in lb.all_hosts))
        hosts: list[str | None] = [None] if local else list(lb.all_hosts)

        def inject(event: dict[str, Any]) -> None:
            for host in hosts:
                r.inject(LbApiGone(lb.socket, host))

        r.deploy(r.ctx.target, point=_safe_point(r.ctx), at_point=inject)
        r.undo_faults()
        _restore(r)

    def judge(self, r: Rehearsal) -> list[str]:
        return failed_safely(r, codes=(9, 10, 11), statuses=("rolled_back", "failed", "refused"))


class DiskFull(Scenario):
    name = "disk-full"
    title = "The node's disk filling during unpack"

    def fault(self, ctx: Context) -> str:
        return (f"{ctx.release_root}/releases on one node full (a tmpfs holding what was there, "
                "with no room left, mounted over it inside the node)")

    def point(self, ctx: Context) -> str:
        return "the lifecycle's preflight, before the release is pre-staged"

    def expected(self, ctx: Context) -> str:
        return ("unpacking the release fails on that node (no space left); the deployment is "
                "refused before any node leaves the load balancer (exit 9): nothing in service "
                "changed")

    def rehearse(self, r: Rehearsal) -> None:
        ctx = r.ctx
        releases = f"{ctx.release_root}/releases"
        node = r.node_without(ctx.target)
        if node is None:
            r.skip(f"every node already holds {ctx.target} unpacked, so no unpack would run: "
                   "run it where the release is new (it comes first in `gameday run all`)")
            return

        def inject(event: dict[str, Any]) -> None:
            r.hit_nodes = [node]
            r.inject(FullDisk(node, releases))

        r.deploy(ctx.target, point=Point.event("phase", self.point(ctx), phase="preflight"),
                 at_point=inject)

    def judge(self, r: Rehearsal) -> list[str]:
        return failed_safely(r, codes=(9,), statuses=("refused",))


class TamperedArtefact(Scenario):
    name = "artefact-tampered"
    title = "An artefact tampered with in the store after publishing"

    def fault(self, ctx: Context) -> str:
        return f"the tarball of {ctx.target} changed in the store after it was signed (one byte)"

    def point(self, ctx: Context) -> str:
        return "before the deployment starts (the release was published and signed before)"

    def expected(self, ctx: Context) -> str:
        return ("verification refuses the release (its digest no longer matches the signed "
                "manifest) before anything is locked or changed (exit 5); the refusal is on the "
                "record")

    def applies(self, ctx: Context, r: Rehearsal) -> str:
        if r.store_root() is None:
            return ("the store is not a directory this machine writes (a file:// store, or "
                    "gameday.store_dir for an HTTP store)")
        return ""

    def rehearse(self, r: Rehearsal) -> None:
        ctx = r.ctx
        root = r.store_root()
        assert root is not None
        app = r.game.env.app.name
        manifest = json.loads((root / app / ctx.target / "manifest.json").read_text())
        tarball = root / app / ctx.target / str(manifest["tarball"])
        r.inject(TamperArtefact(str(tarball), str(r.game.ledger.dir / f"{tarball.name}.published")))
        r.deploy(ctx.target)

    def judge(self, r: Rehearsal) -> list[str]:
        problems = []
        if r.exit_code != 5:
            problems.append(f"it ended with {r.actual()}, expected a refusal by verification (exit 5)")
        if r.uids:
            problems.append("a deployment ran although the release could not be verified")
        return problems


# -- the deploying process, and a second controller --------------------------------------------


class _Killed(Scenario):
    """The deploying process SIGKILLed at a point (its own process, run as `deployer deploy`
    --events -), then `deployer resume`."""

    kill_point: ClassVar[Point]

    def fault(self, ctx: Context) -> str:
        return ("the deploying process SIGKILLed (`deployer deploy`, a process of its own, and "
                "its playbook runs): no exit path, as when its VM is lost")

    def point(self, ctx: Context) -> str:
        return self.kill_point.describe()

    def expected(self, ctx: Context) -> str:
        return ("the journal shows the deployment abandoned where it stopped; `deployer resume` "
                "finds it, says where it stopped and rolls it back (strategy.on_interrupted: "
                "rollback) or finishes it: every node back in service on one release (exit 0)")

    def rehearse(self, r: Rehearsal) -> None:
        r.deploy_and_kill(r.ctx.target, self.kill_point)
        if r.killed_uid:
            r.resume()

    def judge(self, r: Rehearsal) -> list[str]:
        if not r.killed_uid:
            return ["the deploying process was not killed at the point"]
        if r.resume_found is None:
            return ["`deployer resume` did not find the interrupted deployment"]
        if r.resume_found != r.killed_uid:
            return [f"`deployer resume` resumed {r.resume_found}, not the killed deployment "
                    f"{r.killed_uid}"]
        return succeeded(r)

    def detects(self, event: Mapping[str, Any]) -> bool:
        return False  # the resume says what it found: timed by the runner


class KillMidBatch(_Killed):
    name = "kill-mid-batch"
    title = "The deploying process SIGKILLed mid-batch, then `deployer resume`"
    strategies = ("rolling",)
    kill_point = Point.node_phase("deploying")


class KillDuringSoak(_Killed):
    name = "kill-during-soak"
    title = "The deploying process SIGKILLed during a blue-green soak, then `deployer resume`"
    strategies = ("blue-green",)
    kill_point = Point.event("soak_started", "the start of the new live leg's soak")


class SlowDrain(Scenario):
    name = "slow-drain"
    title = "A slow drain: long-lived connections outlasting drain_timeout"
    strategies = ("rolling",)
    # Long-lived requests held open through the load balancer, and how long each lasts.
    held = 2
    seconds = 20.0
    drain_timeout = 1.0

    def fault(self, ctx: Context) -> str:
        return (f"{self.held} long-lived requests ({self.seconds:g} s each) through the load "
                f"balancer, with load_balancer.drain_timeout lowered to {self.drain_timeout:g} s for "
                "the rehearsal")

    def point(self, ctx: Context) -> str:
        return Point.safe_point("before_batch", 1).describe()

    def expected(self, ctx: Context) -> str:
        return ("the drain of a node holding a long-lived request times out; the node is taken "
                "out anyway and the deployment goes on and succeeds; the outcome says how many "
                "sessions it cut (sessions_cut), no fewer than the long-lived requests that failed")

    def rehearse(self, r: Rehearsal) -> None:
        path = r.game.gameday.slow_path.replace("{ms}", str(int(self.seconds * 1000)))

        def hold(event: dict[str, Any]) -> None:
            r.hold(self.held, path, seconds=self.seconds)

        r.overrides.append(f"load_balancer.drain_timeout: {self.drain_timeout:g} s for the "
                           f"rehearsal (configured: {r.game.env.load_balancer.drain_timeout:g} s)")
        r.deploy(r.ctx.target, point=Point.safe_point("before_batch", 1), at_point=hold,
                 drain_timeout=self.drain_timeout)
        r.wait_held()

    def judge(self, r: Rehearsal) -> list[str]:
        problems = succeeded(r)
        cut = sum(st.sessions_cut for st in r.outcome.nodes.values()) if r.outcome else 0
        long_failed = r.long_lived.failed if r.long_lived else 0
        if cut == 0:
            problems.append("no drain timed out with a session open: the long-lived requests "
                            "did not outlast drain_timeout")
        elif long_failed > cut:
            problems.append(f"{long_failed} long-lived request(s) failed but the outcome reports "
                            f"{cut} session(s) cut")
        return problems

    def detects(self, event: Mapping[str, Any]) -> bool:
        return event.get("type") == "node" and "still open when load_balancer.drain_timeout" in \
            str(event.get("detail") or "")


class SecondController(Scenario):
    name = "second-controller"
    title = "A second controller starting a deployment meanwhile"

    def fault(self, ctx: Context) -> str:
        return (f"`deployer deploy --version {ctx.baseline}` from a second controller (a copy of "
                "the config with a state directory, so a journal, of its own)")

    def point(self, ctx: Context) -> str:
        return _safe_point(ctx).describe()

    def expected(self, ctx: Context) -> str:
        return ("the second controller is refused at once (exit 6, naming the holder) and "
                "records nothing but its refusal; the first deployment goes on and succeeds")

    def rehearse(self, r: Rehearsal) -> None:
        def second(event: dict[str, Any]) -> None:
            r.second_controller(r.ctx.baseline)

        r.deploy(r.ctx.target, point=_safe_point(r.ctx), at_point=second)

    def judge(self, r: Rehearsal) -> list[str]:
        problems = succeeded(r)
        if r.second is None:
            problems.append("the second controller did not run")
        elif r.second.code != 6:
            problems.append(f"the second controller ended with exit {r.second.code}, not 6 "
                            f"(the lock): {r.second.said}")
        elif any(status != "refused" for status in r.second.recorded):
            problems.append("the second controller recorded a deployment in its journal that "
                            f"was not refused ({', '.join(r.second.recorded)})")
        return problems

    def detects(self, event: Mapping[str, Any]) -> bool:
        return False  # the second controller's refusal: timed by the runner


# -- the governance gates ----------------------------------------------------------------------


class _GateTimeRunsOut(Scenario):
    """A gate's time running out while the deployment runs: the clock the gates read moves past
    it as the first batch starts (the idle leg's release, blue-green), so the next safe point
    is the first to see it. What is safe depends on gates.on_window_close: pause (every node in
    service, then `deployer resume` once the gate lets it through), finish, or rollback."""

    gate: ClassVar[str]

    def point(self, ctx: Context) -> str:
        return _first_batch(ctx).describe()

    def policy(self, r: Rehearsal) -> str:
        return (r.gates.config or r.game.env.gates).on_window_close

    def expected(self, ctx: Context) -> str:
        nxt = "the switch" if ctx.blue_green else "batch 2"
        return (f"at the next safe point (before {nxt}) the {self.gate} gate acts as "
                "gates.on_window_close says: pause (exit 15, every node in service, the lock "
                "released; `deployer resume` continues it once the gate lets it through, and it "
                "succeeds), finish (it goes on and succeeds), or rollback (exit 10, rolled back)")

    @abstractmethod
    def set_up(self, r: Rehearsal) -> tuple[float, str]:
        """Set the rehearsal's gates; the time the gate's time runs out, and what it is."""

    def fix(self, r: Rehearsal) -> None:
        """What lets the gate through again, once the clock is back."""

    def rehearse(self, r: Rehearsal) -> None:
        ctx = r.ctx
        if ctx.blue_green:
            idle = [n for n in r.game.observe(None).nodes if n.leg != ctx.live_leg]
            if idle and all(n.version == ctx.target for n in idle):
                r.skip(f"the idle leg already runs {ctx.target}: the deployment would only be the "
                       "switch, with nothing mid-rollout for a gate's time to run out on (run it "
                       "where both legs run one release, e.g. first on a fresh lab)")
        ends, what = self.set_up(r)

        def run_out(event: dict[str, Any]) -> None:
            r.inject(ClockMoved(ends + 1, what, r.gates.clock))

        r.deploy(ctx.target, point=_first_batch(ctx), at_point=run_out)
        r.undo_faults()
        if r.exit_code == 15:
            self.fix(r)
            r.resume()

    def judge(self, r: Rehearsal) -> list[str]:
        policy = self.policy(r)
        stopped = r.saw(lambda e: e.get("type") == "check" and e.get("check") == self.gate
                        and e.get("decision") in ("stop", "fail"))
        if policy == "finish":
            problems = succeeded(r)
            if not r.saw(lambda e: e.get("type") == "check" and e.get("check") == self.gate
                         and "finishing what was started" in str(e.get("reason") or "")):
                problems.append(f"the {self.gate} gate did not say it let the deployment finish")
            return problems
        if policy == "rollback":
            problems = failed_safely(r)
            if not stopped:
                problems.append(f"the {self.gate} gate did not fail the deployment")
            return problems
        first_code, first = r.before_fix if r.before_fix is not None else (r.exit_code, r.outcome)
        problems = []
        if first_code != 15 or (first is not None and first.status != "paused"):
            status = first.status if first is not None else "no outcome"
            problems.append(f"the deployment was not paused: {status} (exit {first_code}), "
                            "expected paused (exit 15)")
        if not stopped:
            problems.append(f"the {self.gate} gate did not stop the deployment at a safe point")
        if r.before_fix is None:
            problems.append("`deployer resume` did not run after the pause")
        else:
            if first is not None and r.resume_found != first.uid:
                problems.append(f"`deployer resume` resumed {r.resume_found or 'nothing'}, not the "
                                f"paused deployment {first.uid}")
            problems += succeeded(r)
        return problems

    def detects(self, event: Mapping[str, Any]) -> bool:
        return event.get("type") == "check" and event.get("check") == self.gate and (
            event.get("decision") in ("stop", "fail")
            or "finishing what was started" in str(event.get("reason") or ""))


class WindowCloses(_GateTimeRunsOut):
    name = "window-closes"
    title = "The release window closing mid-rollout"
    gate = "window"

    def fault(self, ctx: Context) -> str:
        return ("the release window ends while the deployment runs: the rehearsal's own window "
                "(open from the minute before it starts, for an hour, in place of the "
                "environment's windows and freezes), and the clock the gates read moved to its "
                "end as the first batch starts")

    def set_up(self, r: Rehearsal) -> tuple[float, str]:
        config, closes = open_window(r.game.env.gates, time.time())
        r.gates.config = config
        r.overrides.append(f"gates.windows: {config.windows[0].start}-{config.windows[0].end} "
                           "UTC every day, for the rehearsal (the environment's windows and "
                           "calendar freezes set aside)")
        return closes, "the end of the release window"


class ApprovalExpires(_GateTimeRunsOut):
    name = "approval-expires"
    title = "The approval expiring before a batch"
    gate = "approval"
    # How long the rehearsal's approval is valid for, from when it is signed.
    valid_for = 600.0

    def fault(self, ctx: Context) -> str:
        return ("the deployment's approval expires while it runs: one signed approval by the "
                "game day's approver (required for the rehearsal, in place of the environment's "
                "approvals, windows and freezes), and the clock the gates read moved past its "
                "expiry as the first batch starts")

    def set_up(self, r: Rehearsal) -> tuple[float, str]:
        config = with_approvals(r.game.env.gates, r.game.keys)
        r.gates.config = config
        r.overrides.append("gates.approvals: one approval by the game day's approver, requested "
                           "by the game day's requester, for the rehearsal (the environment's "
                           "approvals, windows and calendar freezes set aside)")
        now = time.time()
        expires = now + self.valid_for
        self._approve(r, expires, now)
        return expires, "past the approval's expiry"

    def fix(self, r: Rehearsal) -> None:
        now = time.time()
        self._approve(r, now + self.valid_for, now)
        r.recovery.append("a fresh approval signed by the game day's approver, then "
                          f"`deployer resume --env {r.game.env_name} --approval FILE`")

    @staticmethod
    def _approve(r: Rehearsal, expires: float, now: float) -> None:
        sha256 = r.release_digest(r.ctx.target)
        approval = r.game.keys.approve(app=r.game.env.app.name, version=r.ctx.target,
                                       sha256=sha256, environment=r.game.env_name,
                                       expires=expires, now=now)
        r.gates.request = r.game.keys.request((approval,))
        r.timeline.add(f"approval of {r.ctx.target} signed by the game day's approver, valid "
                       f"until {iso_utc(expires)}")


# -- the environment's runner -------------------------------------------------------------------


class PointerChanged(Scenario):
    name = "pointer-changed"
    title = "The pointer changing during a deployment by the environment's runner"

    def fault(self, ctx: Context) -> str:
        return (f"the environment's pointer set to {ctx.baseline} (as `deployer pointer set` "
                f"does) while its runner deploys {ctx.target}, the version the pointer named "
                "when the runner looked")

    def point(self, ctx: Context) -> str:
        return f"{_safe_point(ctx).describe()} of the runner's deployment"

    def expected(self, ctx: Context) -> str:
        return (f"the runner finishes the deployment it started ({ctx.target}) or stops it at a "
                "safe point, and publishes that it acted on the value it read, not the new one; "
                f"its next look deploys {ctx.baseline}; the look after finds the fleet in sync; "
                "one deployment at a time, every node in service")

    def applies(self, ctx: Context, r: Rehearsal) -> str:
        if r.game.env.pointer is None:
            return "the environment has no pointer (a `pointer:` section): no runner to rehearse"
        return ""

    def rehearse(self, r: Rehearsal) -> None:
        ctx = r.ctx
        r.inject(PointerMoved.of(r.reach, ctx.target, "game day: a release for the runner"),
                 setup=True)

        def move(event: dict[str, Any]) -> None:
            r.inject(PointerMoved.of(r.reach, ctx.baseline,
                                     "game day: the pointer changed during a deployment"))

        # Look 1 deploys the target (the pointer moves meanwhile), look 2 the new value, look 3
        # finds the fleet in sync.
        r.runner_looks(3, point=_safe_point(ctx), at_point=move)
        if r.injected_at is not None:
            for w in r.watches:
                heard = w.first_after(r.injected_at, lambda e: _started(e, ctx.baseline))
                if heard is not None:
                    r.detected(heard.at, f"the runner's next look, deploying {ctx.baseline}")

    def judge(self, r: Rehearsal) -> list[str]:
        ctx = r.ctx
        looks = r.looks
        if len(looks) < 3:
            return [f"the runner looked {len(looks)} time(s), not 3"]
        problems: list[str] = []
        first, second, third = (s.status for s in looks[:3])
        decisions = [s.decision for s in looks[:3]]
        if decisions[0] not in ("deployed", "stopped") or first is None or \
                first.last_deployment is None or first.last_deployment.version != ctx.target:
            problems.append(f"look 1 did not deploy {ctx.target} (or stop it at a safe point): "
                            f"{decisions[0]}")
        elif decisions[0] == "deployed" and (first.acted is None or first.acted.version != ctx.target):
            acted = first.acted.version if first.acted else "nothing"
            problems.append(f"look 1 published that it acted on {acted}, not on the value it "
                            f"read ({ctx.target})")
        if decisions[1] != "deployed" or second is None or second.last_deployment is None or \
                second.last_deployment.version != ctx.baseline:
            problems.append(f"look 2 did not deploy the pointer's new value {ctx.baseline}: "
                            f"{decisions[1]}" + (f" ({second.reason})" if second and second.reason else ""))
        if decisions[2] != "in_sync" or third is None or third.running != ctx.baseline:
            problems.append(f"look 3 did not find the fleet in sync on {ctx.baseline}: "
                            f"{decisions[2]}" + (f" ({third.reason})" if third and third.reason else ""))
        running: set[str] = set()
        for h in (h for w in r.watches for h in w.events()):
            uid = str((h.event.get("deployment") or {}).get("uid") or "")
            if h.event.get("type") == "deployment_started":
                if running - {uid}:
                    problems.append(f"deployment {uid} started while {', '.join(sorted(running))} "
                                    "had not finished")
                running.add(uid)
            elif h.event.get("type") == "deployment_finished":
                running.discard(uid)
        return problems

    def detects(self, event: Mapping[str, Any]) -> bool:
        return False  # the runner's next deployment: timed by the rehearsal


def _started(event: Mapping[str, Any], version: str) -> bool:
    return (event.get("type") == "deployment_started"
            and (event.get("deployment") or {}).get("version") == version)


# In the order `gameday run all` runs them: the two that need a release no node holds yet come
# first (on a fresh lab it is new everywhere).
SCENARIOS: tuple[Scenario, ...] = (
    DiskFull(), TamperedArtefact(), SmokeFail(), CrashLoop(), SoakDegrade(), NodeUnreachable(),
    LbApiDown(), KillMidBatch(), KillDuringSoak(), SlowDrain(), SecondController(),
    WindowCloses(), ApprovalExpires(), PointerChanged(),
)


def scenario_named(name: str) -> Scenario | None:
    return next((s for s in SCENARIOS if s.name == name), None)


def store_root(url: str, store_dir: str | None) -> Path | None:
    """The directory holding the store's files, when this machine writes it."""
    if url.startswith("file://"):
        return Path(urlsplit(url).path)
    return Path(store_dir) if store_dir else None

