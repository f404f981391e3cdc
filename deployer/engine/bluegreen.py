"""The blue-green strategy: two legs behind one load balancer, live traffic on one of them.

A deployment releases to the idle leg (all its nodes at once: they take no live traffic), checks
each node as it comes back, then the leg as a whole through the preview route, moves live
traffic to it with ONE load-balancer operation (an HAProxy map entry that ``use_backend``
follows), soaks it under analysis, and moves traffic back at once on any breach. In-flight
requests on the old leg finish on it: a switch cuts no request.

After a good soak the old leg either stays on the previous release as the fallback
(``after_soak: keep``, so that ``rollback`` is one switch) or is uplifted (``uplift``): it
receives the release too, is smoke-tested through the preview route, takes live traffic back
and is soaked again; on a breach live traffic goes back to the first (already proven) leg, and
only then is the release marked successful.

Safe points: ``before_start``, ``before_idle_leg``, ``before_switch``, ``before_uplift``. Each
leg's nodes are released by a nested rolling execution over that leg (its group and backend,
one batch, no capacity floor: an idle leg takes no live traffic).
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from .._errors import (
    ConfigError,
    DeployerError,
    DeploymentFailed,
    DeploymentRefused,
    Interrupted,
    LoadBalancerError,
)
from ..adapters.inventory import Node
from ..adapters.journal import Journal
from ..adapters.loadbalancer import LoadBalancer
from ..analysis import Verdict
from ..config import BlueGreenStrategy, EnvironmentConfig
from .events import LegSmoked, SoakJudged, TrafficSwitched
from .fleet import Fleet
from .history import ran_successfully, rollback_target
from .model import NodeFacts, NodeStatus, Release, StoreVerifier
from .plan import DeploymentPlan, NodePlan, Refusal, Step
from .rolling import Rolling, RollingExecution
from .rollout import Accounting
from .run import Run, Stopped
from .safepoints import SafePoint
from .soaking import Soaks
from .strategy import Execution, StepsResult
from .variables import base_vars

__all__ = ["BlueGreen", "BlueGreenExecution", "PreviewGet"]

PreviewGet = Callable[[str, float], tuple[int, bytes]]


class BlueGreen:
    """``strategy.kind: blue-green``."""

    kind = "blue-green"

    def __init__(
        self, *, env_name: str, env: EnvironmentConfig, legs: Mapping[str, Fleet], lb: LoadBalancer,
        journal: Journal, verify_release: StoreVerifier, soaks: Soaks | None = None,
        preview_get: PreviewGet | None = None, config_file: str = "config",
    ) -> None:
        if not isinstance(env.strategy, BlueGreenStrategy) or env.load_balancer.legs_map is None:
            raise ConfigError("blue-green needs strategy.legs and load_balancer.legs_map", file=config_file)
        self.env_name = env_name
        self.env = env
        self.config: BlueGreenStrategy = env.strategy
        self.legs = dict(legs)
        self.lb = lb
        self.journal = journal
        self.verify_release = verify_release
        self.soaks = soaks
        self.preview_get = preview_get or http_get
        self.config_file = config_file
        self.map_file: str = env.load_balancer.legs_map
        self._check_legs()

    @property
    def nodes(self) -> list[Node]:
        return [n for fleet in self.legs.values() for n in fleet.nodes]

    def _check_legs(self) -> None:
        seen: dict[str, str] = {}
        for leg, fleet in self.legs.items():
            group = self.config.legs[leg].group
            if not fleet.nodes:
                raise ConfigError(f"leg {leg!r} has no nodes", file=self.config_file,
                                  field=f"strategy.legs.{leg}.group", value=group)
            for node in fleet.nodes:
                if node.name in seen:
                    raise ConfigError(
                        f"{node.name} is in both legs ({seen[node.name]} and {leg}): the legs "
                        "must not overlap", file=self.config_file, field=f"strategy.legs.{leg}.group",
                        value=group,
                    )
                seen[node.name] = leg

    def begin(self, run: Run) -> BlueGreenExecution:
        return BlueGreenExecution(self, run)

    # -- reading --------------------------------------------------------------------------

    def live_leg(self) -> str:
        """The leg taking live traffic; refuses when live traffic is not on exactly one leg."""
        key = self.env.load_balancer.live_key
        backend = self.lb.route(self.map_file, key)
        by_backend = {leg.backend: name for name, leg in self.config.legs.items()}
        if backend not in by_backend:
            raise DeploymentRefused(
                f"live traffic is not on one of the legs: {self.map_file} sends {key!r} to "
                f"{backend or 'nothing'} (legs: "
                + ", ".join(f"{n} = {leg.backend}" for n, leg in self.config.legs.items()) + ")",
                hint=f"point it at one leg first, e.g. `set map {self.map_file} {key} "
                f"{next(iter(by_backend))}` on the load balancer",
            )
        return by_backend[backend]

    def idle_of(self, live: str) -> str:
        return next(name for name in self.legs if name != live)

    def leg_facts(self, leg: str) -> dict[str, NodeFacts]:
        fleet = self.legs[leg]
        facts, _ = fleet.survey("probe.yml", base_vars(fleet.env), lambda: False)
        return facts

    def rollback_target(self) -> str:
        """The release before the current one in the environment's successful history (so a
        second rollback goes further back, never forward); without history, the release the
        idle leg holds when it differs from the live one. When the idle leg holds the target,
        the rollback is a single switch."""
        live = self.live_leg()
        try:
            return rollback_target(self.journal, self.env_name, previous_on_nodes=list)
        except ConfigError:
            idle = {f.current for f in self.leg_facts(self.idle_of(live)).values()}
            live_versions = {f.current for f in self.leg_facts(live).values()}
            if len(idle) == 1 and idle != live_versions and "" not in idle:
                return idle.pop()
            raise


class BlueGreenExecution(Execution):
    """One blue-green deployment (see the module documentation)."""

    def __init__(self, strategy: BlueGreen, run: Run) -> None:
        super().__init__(run)
        self.bg = strategy
        self.live = ""
        self.idle = ""
        # Nested rolling executions of the legs, in the order they ran (the idle leg's release,
        # a leg put back on its earlier release, the uplift).
        self.steps_run: list[RollingExecution] = []
        self.idle_exec: RollingExecution | None = None
        self.idle_plan: DeploymentPlan | None = None
        # The idle leg already holds the target, healthy (a rollback): one switch.
        self.ready = False
        self.idle_before: dict[str, NodeFacts] = {}
        self.details: dict[str, Any] = {"switches": []}
        self.warnings: list[str] = []
        self.soaks = strategy.soaks if self._soaked() else None
        # A resume soaking a leg that was already live: (that leg, the other), for a stop to
        # switch live traffic back as a stop during any soak does.
        self.resumed_soak: tuple[str, str] | None = None
        # A resume switching back: why the other leg cannot take live traffic ("" when it can).
        self.fallback_problem = ""

    def _soaked(self) -> bool:
        soaks = self.bg.soaks
        if soaks is None:
            return False
        if self.run.acts_as != "rollback" or soaks.config.on_rollback == "soak":
            return True
        return not ran_successfully(self.bg.journal, self.bg.env_name, self.run.release.version)

    def _leg_exec(self, leg: str, release: Release, *, kind: str | None = None) -> RollingExecution:
        run = self.run
        if release is not run.release or (kind and kind != run.kind):
            # A leg put back (kind "rollback") is a plain rollback of that leg, resume or not.
            run = dataclasses.replace(run, release=release,
                                      ref=dataclasses.replace(run.ref, kind=kind or run.kind),
                                      resume=None if kind else run.resume)
        execution = Rolling(self.bg.legs[leg]).begin(run)
        execution.nested = True
        self.steps_run.append(execution)
        return execution

    def node_status(self) -> dict[str, NodeStatus]:
        merged: dict[str, NodeStatus] = {}
        for execution in self.steps_run:
            merged.update(execution.node_status())
        return merged

    def from_versions(self) -> dict[str, str]:
        versions = {n: f.current for n, f in self.idle_before.items()}
        if self.idle_exec is not None:
            versions.update(self.idle_exec.from_versions())
        return versions

    # -- preflight and plan ---------------------------------------------------------------

    def read(self, *, stage: bool) -> None:
        run, bg = self.run, self.bg
        self.live = bg.live_leg()
        self.idle = bg.idle_of(self.live)
        self.details.update(live_before=self.live, idle=self.idle)
        if self._resuming():
            self._read_resumed()
            return
        self._check_live_serves()
        if bg.soaks is not None and self.soaks is None:
            run.note(f"not soaking: a rollback to {run.release.version}, which ran here before "
                     "(analysis.on_rollback: skip)")
        if self.soaks is not None:
            self.soaks.preflight(bg.config.legs[self.idle].backend, bg.config_file)
        if run.recorded:
            bg.journal.update_details(run.ref.id, legs={"live": self.live, "idle": self.idle})
        if run.acts_as == "rollback":
            # A rollback to what the idle leg still holds is a switch alone.
            self.idle_before = bg.leg_facts(self.idle)
            self.ready = bool(self.idle_before) and all(
                f.current == run.release.version and f.healthy for f in self.idle_before.values()
            )
        if not self.ready:
            self.idle_exec = self._leg_exec(self.idle, run.release)
            self.idle_exec.read(stage=stage)
            self.idle_plan = self.idle_exec.plan()

    def _check_live_serves(self) -> None:
        fleet = self.bg.legs[self.live]
        try:
            states = fleet.lb_states()
        except LoadBalancerError as exc:
            raise DeploymentRefused(f"cannot read the load balancer before touching any node: {exc}",
                                    hint=exc.hint or "check load_balancer in the config") from None
        serving = [n.name for n in fleet.nodes if (s := states.get(n.lb_server)) and s.in_service]
        if not serving:
            raise DeploymentRefused(
                f"the live leg {self.live} has no node in service on the load balancer",
                hint="repair the live leg before deploying",
            )

    def plan(self) -> DeploymentPlan:
        if self._resuming():
            return self._plan_resumed()
        bg, run = self.bg, self.run
        version = run.release.version
        lb = bg.env.load_balancer
        on = ", ".join(lb.all_hosts)
        nodes: list[NodePlan] = []
        refusals: list[Refusal] = []
        notes: list[str] = []
        live_fleet = bg.legs[self.live]
        for node in live_fleet.nodes:
            nodes.append(NodePlan(node.name, "", False, f"live leg {self.live}: keeps serving until "
                                  "the switch" + (" (then uplifted)" if bg.config.after_soak == "uplift"
                                                  else " (then kept as the fallback)"),
                                  leg=self.live))
        if self.idle_plan is not None:
            for n in self.idle_plan.nodes:
                nodes.append(dataclasses.replace(n, leg=self.idle))
            refusals += list(self.idle_plan.refusals)
            notes += list(self.idle_plan.notes)
        else:
            for name, f in self.idle_before.items():
                nodes.append(NodePlan(name, f.current, False, f"idle leg {self.idle} already runs "
                                      f"{version}, healthy: one switch", leg=self.idle))
        idle_names = [n.name for n in bg.legs[self.idle].nodes]
        live_backend, idle_backend = bg.config.legs[self.live].backend, bg.config.legs[self.idle].backend
        steps: list[Step] = []
        if not self.ready:
            steps.append(Step(
                "release_leg", f"release {version} to the idle leg {self.idle} "
                f"({', '.join(idle_names)}), all nodes at once (pre-stage, switch, restart, smoke "
                f"{bg.env.app.health.path} on each; they take no live traffic)",
                tuple(idle_names), SafePoint.BEFORE_IDLE_LEG.value,
            ))
        steps.append(Step("preview_smoke", f"smoke the leg {self.idle} through the preview route "
                          f"{bg.config.preview_url}", tuple(idle_names)))
        steps.append(Step(
            "switch", f"on {on}: set map {lb.legs_map} {lb.live_key} {idle_backend}  (one operation: "
            f"live traffic moves from {self.live} to {self.idle})", (), SafePoint.BEFORE_SWITCH.value,
        ))
        steps.append(Step("soak", f"soak {self.idle} under analysis; on a breach: set map back to "
                          f"{live_backend} at once" if self.soaks else "no soak (no analysis)"))
        if bg.config.after_soak == "uplift":
            live_names = tuple(n.name for n in live_fleet.nodes)
            steps += [
                Step("release_leg", f"uplift: release {version} to {self.live} "
                     f"({', '.join(live_names)})", live_names, SafePoint.BEFORE_UPLIFT.value),
                Step("preview_smoke", f"smoke the leg {self.live} through the preview route", live_names),
                Step("switch", f"on {on}: set map {lb.legs_map} {lb.live_key} {live_backend}  (live "
                     f"traffic moves back to {self.live}, now on {version})"),
                Step("soak", f"soak {self.live}; on a breach live traffic goes back to {self.idle} "
                     "(already proven)" if self.soaks else "no soak (no analysis)"),
            ]
        else:
            steps.append(Step("keep", f"after the soak: {self.live} stays on its release as the "
                              "fallback (rollback = one switch)"))
        # The live leg's traffic is what the new leg gets after the switch.
        warning = self.soaks.sample_warning(live_backend) if self.soaks is not None else ""
        return DeploymentPlan(
            strategy="blue-green", version=version, kind=run.kind, nodes=tuple(nodes),
            steps=tuple(steps), refusals=tuple(refusals), notes=tuple(notes),
            warnings=(warning,) if warning else (),
            batches=self.idle_plan.batches if self.idle_plan else None,
            legs={"live": self.live, "idle": self.idle, "after_soak": bg.config.after_soak,
                  "one_switch": self.ready},
        )

    # -- steps ----------------------------------------------------------------------------

    def steps(self, plan: DeploymentPlan) -> StepsResult:
        run, bg = self.run, self.bg
        release = run.release
        first = plan.refused
        if first is not None:
            raise DeploymentRefused(first.reason, hint=first.hint or None)
        self.start(plan)
        for warning in plan.warnings:
            run.note(warning, level="warning")

        if self._resuming():
            return self._resumed_steps()
        live, idle = self.live, self.idle
        if self.ready:
            run.note(f"leg {idle} already runs {release.version} and is healthy: one switch")
        else:
            assert self.idle_exec is not None and self.idle_plan is not None
            run.safe_point(SafePoint.BEFORE_IDLE_LEG, label=f"releasing to the idle leg {idle}")
            run.note(f"live traffic is on {live}; releasing {release.version} to the idle leg "
                     f"{idle} ({', '.join(n.name for n in bg.legs[idle].nodes)})")
            step = self.idle_exec.perform_nested(self.idle_plan)
            if step.status != "succeeded":
                return StepsResult(step.status if step.status != "refused" or self.changed else "refused",
                                   f"leg {idle}: {step.summary}; live traffic stayed on {live}",
                                   step.hint, stop_error=step.stop_error)
            self.idle_before = {n: NodeFacts(current=st.from_version)
                                for n, st in self.idle_exec.node_status().items()}
        try:
            self._preview_smoke(idle)
        except DeploymentFailed as exc:
            if run.high_risk:
                return StepsResult("failed", f"{exc}; High Risk, halted: {idle} is left as it is "
                                   f"(it takes no live traffic), live traffic stays on {live}")
            self._revert_leg(idle)
            return StepsResult("rolled_back", str(exc))
        run.safe_point(SafePoint.BEFORE_SWITCH, label=f"moving live traffic from {live} to {idle}",
                       changed=True)
        self._switch(live, idle, back=False)
        verdict = self._soak(idle)
        if verdict is not None and verdict.failed and not self._tolerated(verdict) and run.high_risk:
            return StepsResult(
                "failed", f"{release.version} failed its soak on {idle}: {verdict.line()}; High "
                f"Risk, halted: live traffic stays on {idle} (not switched back automatically), "
                f"{live} keeps its release as the fallback", hint=self._no_data_hint(verdict),
            )
        if verdict is not None and verdict.failed and not self._tolerated(verdict):
            self._switch(idle, live, back=True)
            self._revert_leg(idle)
            return StepsResult(
                "rolled_back", f"{release.version} failed its soak on {idle}: {verdict.line()}; "
                f"live traffic switched back to {live}", hint=self._no_data_hint(verdict),
            )
        summary = f"{idle} is live on {release.version} (was {live})"
        if bg.config.after_soak != "uplift":
            summary += f"; {live} kept on its release as the fallback (rollback = one switch)"
            return StepsResult("succeeded", summary, warnings=self.warnings)
        return self._uplift(summary)

    def _uplift(self, summary: str) -> StepsResult:
        """Release to the old leg too, smoke it, move live traffic to it and soak it; on a
        breach, live traffic goes back to the leg already proven."""
        run = self.run
        release = run.release
        proven, old = self.idle, self.live
        run.safe_point(SafePoint.BEFORE_UPLIFT, label=f"releasing {release.version} to {old} too",
                       changed=True)
        run.note(f"uplift: releasing {release.version} to {old} too")
        execution = self._leg_exec(old, release)
        execution.read(stage=True)
        step = execution.perform_nested(execution.plan())
        if step.status != "succeeded":
            return StepsResult("failed", f"{summary}; the uplift of {old} failed: {step.summary}",
                               step.hint, stop_error=step.stop_error)
        before = {n: NodeFacts(current=st.from_version) for n, st in execution.node_status().items()}
        try:
            self._preview_smoke(old)
        except DeploymentFailed as exc:
            if run.high_risk:
                return StepsResult("failed", f"{summary}; the uplift of {old} failed: {exc}; High "
                                   f"Risk, halted: {old} is left as it is (no live traffic), "
                                   f"{proven} stays live")
            self._revert_leg(old, before)
            return StepsResult("failed", f"{summary}; the uplift of {old} failed: {exc}; {old} put "
                               f"back as the fallback")
        run.safe_point(SafePoint.BEFORE_SWITCH, label=f"moving live traffic from {proven} to the "
                       f"uplifted {old}", changed=True)
        self._switch(proven, old, back=False)
        verdict = self._soak(old)
        if verdict is not None and verdict.failed and not self._tolerated(verdict) and run.high_risk:
            return StepsResult(
                "failed", f"{summary}; the uplifted {old} failed its soak: {verdict.line()}; High "
                f"Risk, halted: live traffic stays on {old} (not switched back automatically), "
                f"{proven} runs {release.version} too", hint=self._no_data_hint(verdict),
            )
        if verdict is not None and verdict.failed and not self._tolerated(verdict):
            self._switch(old, proven, back=True)
            self._revert_leg(old, before)
            return StepsResult(
                "failed", f"{summary}; the uplifted {old} failed its soak: {verdict.line()}; live "
                f"traffic switched back to {proven}, which stays live on {release.version}",
                hint=self._no_data_hint(verdict),
            )
        return StepsResult("succeeded", f"{summary}; {old} uplifted to {release.version}, smoked, "
                           f"soaked and live again", warnings=self.warnings)

    def _tolerated(self, verdict: Verdict) -> bool:
        return verdict.failed and self.run.acts_as == "rollback"

    def _no_data_hint(self, verdict: Verdict) -> str:
        if verdict.breach is not None and verdict.breach.value is None:
            return ("no data: the rules saw too few requests (analysis.min_samples over "
                    "analysis.window); for an environment without traffic set analysis.no_data: pass, "
                    "or add further smoke tests (analysis.smoke) that send traffic")
        return ""

    def _preview_smoke(self, leg: str) -> None:
        """The leg as a whole, through the preview route: every answer healthy and on the new
        release (enough requests for each node to answer a few times)."""
        bg, run = self.bg, self.run
        preview_key = bg.env.load_balancer.preview_key
        if preview_key:
            bg.lb.set_route(bg.map_file, preview_key, bg.config.legs[leg].backend)
        health = bg.env.app.health
        url = bg.config.preview_url.rstrip("/") + health.path
        count = max(5, 3 * len(bg.legs[leg].nodes))
        version = run.release.version
        for i in range(count):
            status, body = bg.preview_get(url, health.request_timeout)
            problem = ""
            if status != health.expect_status:
                problem = f"answered {status or 'nothing'} (expected {health.expect_status})"
            elif health.version_field:
                try:
                    seen = json.loads(body).get(health.version_field)
                except (ValueError, AttributeError):
                    seen = None
                if seen != version:
                    problem = f"reports version {seen!r}, not {version}"
            if problem:
                run.publish(LegSmoked(leg=leg, url=url, requests=i + 1, ok=False, problem=problem))
                raise DeploymentFailed(
                    f"the leg {leg} failed its smoke test through the preview route: {url} "
                    f"{problem} (request {i + 1} of {count}); live traffic was not moved"
                )
        run.publish(LegSmoked(leg=leg, url=url, requests=count, ok=True))
        run.note(f"leg {leg}: {count} requests through the preview route, all healthy")

    def _switch(self, from_leg: str, to_leg: str, *, back: bool) -> None:
        bg, run = self.bg, self.run
        lb = bg.env.load_balancer
        at = time.time()
        t0 = time.monotonic()
        bg.lb.set_route(bg.map_file, lb.live_key, bg.config.legs[to_leg].backend)
        took = time.monotonic() - t0
        if lb.preview_key:
            try:
                bg.lb.set_route(bg.map_file, lb.preview_key, bg.config.legs[from_leg].backend)
            except LoadBalancerError as exc:  # the preview is not live traffic: say so, go on
                run.note(f"could not point the preview route at {from_leg}: {exc}", level="warning")
        # `at`: when the operation was sent (every request routed after it goes to `to`).
        self.details["switches"].append({"from": from_leg, "to": to_leg, "back": back, "at": at,
                                         "seconds": round(took, 4)})
        run.publish(TrafficSwitched(from_leg=from_leg, to_leg=to_leg, back=back,
                                    seconds=round(took, 4), where=bg.lb.where))
        what = "switched back" if back else "switched"
        run.note(f"live traffic {what} from {from_leg} to {to_leg} in one operation on {bg.lb.where}")

    def _soak(self, leg: str) -> Verdict | None:
        """Soak the new live leg; its servers are the ones watched (the other leg, idle now,
        takes no live traffic to compare with). A first Ctrl-C ends the soak: live traffic goes
        back (the release is not proven)."""
        soaks, run = self.soaks, self.run
        if soaks is None:
            return None
        new = [n.lb_server for n in self.bg.legs[leg].nodes]
        version = run.release.version
        run.note(f"soaking {version} on {leg} under live traffic for up to {soaks.duration:g}s")
        run.waiting_for = f"the soak of {leg} (a stop switches live traffic back)"
        try:
            verdict = soaks.run(events=run.events, scope=f"{leg} leg", version=version,
                                backend=self.bg.config.legs[leg].backend, new=new, old=(),
                                stopped=run.stop)
        finally:
            run.waiting_for = ""
        if run.stop.is_set() and not verdict.failed:
            raise Interrupted("stopped by the operator during the soak; live traffic switched back")
        tolerated = self._tolerated(verdict)
        run.publish(SoakJudged(scope="", subject=f"{leg} leg", outcome=str(verdict.outcome),
                               line=verdict.line(), verdict=verdict.to_dict(), tolerated=tolerated))
        self.details.setdefault("soaks", []).append({"leg": leg, **verdict.to_dict()})
        self.details["soak"] = verdict.to_dict()
        run.note(f"soak: {verdict.line()}", level="warning" if verdict.failed else "info")
        if tolerated:
            self.warnings.append(f"the rollback's soak of {leg} breached: {verdict.line()}; live "
                                 "traffic stays on it (the release it left is the one being escaped)")
        return verdict

    def _revert_leg(self, leg: str, before: Mapping[str, NodeFacts] | None = None) -> None:
        """Put a failed (now idle) leg back on the release it had, so it is a fallback again."""
        run = self.run
        version = run.release.version
        facts = before if before is not None else self.idle_before
        previous = {f.current for f in facts.values() if f.current and f.current != version}
        if len(previous) != 1:
            run.note(f"leg {leg} stays on {version} (idle; no single earlier release)", level="warning")
            return
        target = previous.pop()
        try:
            old = self.bg.verify_release(target)
        except DeployerError as exc:
            run.note(f"leg {leg} stays on {version}: cannot verify {target}: {exc}", level="warning")
            return
        run.note(f"putting the idle leg {leg} back on {target}")
        execution = self._leg_exec(leg, old, kind="rollback")
        execution.read(stage=True)
        execution.perform_nested(execution.plan())

    # -- resuming an interrupted deployment -------------------------------------------------
    #
    # A resume (engine/resume.py) says where the interrupted deployment's path picks up: from
    # the start ("release": the normal path above, nodes already released being skipped), the
    # soak of a leg already live ("soak"), the uplift ("uplift"), switching live traffic back
    # and putting the leg back ("switch_back"), putting the idle leg back ("revert"), or
    # nothing left to do ("done"). ``candidate`` is the leg the release was going to;
    # ``fallback`` the other (for "uplift": the leg to uplift, and the proven live one).

    def _resuming(self) -> bool:
        resume = self.run.resume
        return resume is not None and resume.entry not in ("", "release")

    def _read_resumed(self) -> None:
        run, bg = self.run, self.bg
        resume = run.resume
        assert resume is not None
        candidate, fallback = resume.candidate, resume.fallback
        live_on = {"soak": candidate, "switch_back": candidate, "done": candidate,
                   "uplift": fallback, "revert": fallback}.get(resume.entry)
        if live_on is not None and self.live != live_on:
            raise DeploymentRefused(
                f"live traffic moved to {self.live} since the resume looked (it expected it on "
                f"{live_on}); nothing was changed",
                hint=f"run `deployer resume --env {bg.env_name}` again",
            )
        if run.recorded:
            bg.journal.update_details(run.ref.id, legs={"live": self.live, "idle": self.idle})
        if resume.entry in ("soak", "uplift") and self.soaks is not None:
            self.soaks.preflight(bg.config.legs[candidate].backend, bg.config_file)
        if resume.entry == "switch_back":
            self.fallback_problem = self._cannot_take_traffic(fallback)

    def _cannot_take_traffic(self, leg: str) -> str:
        """Why ``leg`` cannot take live traffic back on this run's release ("" when it can):
        every node healthy on it, and one at least in service on the load balancer."""
        version = self.run.release.version
        fleet = self.bg.legs[leg]
        facts = self.bg.leg_facts(leg)
        bad = [f"{n} ({f.current or 'nothing'}, {'healthy' if f.healthy else 'unhealthy'})"
               for n, f in facts.items() if f.current != version or not f.healthy]
        if bad:
            return f"not every node of {leg} is healthy on {version}: {', '.join(bad)}"
        try:
            states = fleet.lb_states()
        except LoadBalancerError as exc:
            return f"cannot read the load balancer: {exc}"
        if not any((s := states.get(n.lb_server)) is not None and s.in_service for n in fleet.nodes):
            return f"no node of {leg} is in service on the load balancer"
        return ""

    def _plan_resumed(self) -> DeploymentPlan:
        bg, run = self.bg, self.run
        resume = run.resume
        assert resume is not None
        candidate, fallback, version = resume.candidate, resume.fallback, run.release.version
        lb = bg.env.load_balancer
        backends = {leg: spec.backend for leg, spec in bg.config.legs.items()}
        back = (f"on {', '.join(lb.all_hosts)}: set map {lb.legs_map} {lb.live_key} "
                f"{backends[fallback]}")
        restore = Step("release_leg", f"put the leg {candidate} back on the release it had before "
                       f"deployment {resume.deployment} (it takes no live traffic)",
                       tuple(bg.legs[candidate].names()))
        steps: list[Step] = []
        refusals: list[Refusal] = []
        if resume.entry == "soak":
            steps.append(Step("soak", f"soak {candidate} again under analysis (live on "
                              f"{resume.version}, its soak interrupted); on a breach: {back} and "
                              f"put {candidate} back" if self.soaks else "no soak (no analysis)"))
            if not resume.uplift and bg.config.after_soak == "uplift":
                steps.append(Step("release_leg", f"then uplift {fallback} to {resume.version}",
                                  tuple(bg.legs[fallback].names()), SafePoint.BEFORE_UPLIFT.value))
        elif resume.entry == "uplift":
            steps.append(Step("release_leg", f"uplift: release {version} to {candidate}, smoke it, "
                              f"move live traffic to it and soak it", tuple(bg.legs[candidate].names()),
                              SafePoint.BEFORE_UPLIFT.value))
        elif resume.entry == "switch_back":
            steps += [Step("switch", f"{back}  (one operation: live traffic moves back from "
                           f"{candidate} to {fallback}, on {version})", (),
                           SafePoint.BEFORE_SWITCH.value), restore]
            if self.fallback_problem:
                refusals.append(Refusal(
                    f"cannot move live traffic back to {fallback}: {self.fallback_problem}; live "
                    f"traffic stays on {candidate} ({resume.version}, its soak not passed)", 9,
                    f"repair {fallback}, then run `deployer resume --env {bg.env_name}` again; or "
                    "set strategy.on_interrupted: finish to soak it again"))
        elif resume.entry == "revert":
            steps.append(dataclasses.replace(restore, safe_point=SafePoint.BEFORE_IDLE_LEG.value))
        else:
            steps.append(Step("keep", f"nothing to do: {self.live} is live on {resume.version} "
                              "and its soak passed"))
        return DeploymentPlan(
            strategy="blue-green", version=version, kind=run.kind, nodes=(), steps=tuple(steps),
            refusals=tuple(refusals), legs={"live": self.live, "idle": self.idle,
                                            "after_soak": bg.config.after_soak, "one_switch": False},
        )

    def _resumed_steps(self) -> StepsResult:
        run, bg = self.run, self.bg
        resume = run.resume
        assert resume is not None
        candidate, fallback, version = resume.candidate, resume.fallback, resume.version
        if resume.entry == "soak":
            self.resumed_soak = (candidate, fallback)
            verdict = self._soak(candidate)
            self.resumed_soak = None
            if verdict is not None and verdict.failed and not self._tolerated(verdict):
                self._switch(candidate, fallback, back=True)
                restored = self._restore_leg(candidate)
                return StepsResult(
                    "rolled_back" if restored else "failed",
                    f"{version} failed its soak on {candidate} again: {verdict.line()}; live "
                    f"traffic switched back to {fallback}" + ("" if restored else
                                                              f"; putting {candidate} back failed"),
                    hint=self._no_data_hint(verdict),
                )
            summary = f"{candidate} is live on {version}, soaked again after the interruption"
            if not resume.uplift and bg.config.after_soak == "uplift":
                self.live, self.idle = fallback, candidate  # as _uplift names them
                return self._uplift(summary)
            if not resume.uplift:
                summary += f"; {fallback} kept on its release as the fallback"
            return StepsResult("succeeded", summary, warnings=self.warnings)
        if resume.entry == "uplift":
            self.live, self.idle = candidate, fallback  # _uplift: the old leg, the proven one
            return self._uplift(f"{fallback} is live on {version}, its soak passed")
        if resume.entry == "switch_back":
            run.safe_point(SafePoint.BEFORE_SWITCH, label=f"moving live traffic back from "
                           f"{candidate} to {fallback}", changed=True)
            self._switch(candidate, fallback, back=True)
            restored = self._restore_leg(candidate)
            summary = (f"live traffic switched back from {candidate} ({version}, its soak not "
                       f"passed) to {fallback} ({run.release.version})")
            return StepsResult("succeeded" if restored else "failed", summary + (
                f"; {candidate} put back" if restored else f"; putting {candidate} back failed"))
        if resume.entry == "revert":
            run.safe_point(SafePoint.BEFORE_IDLE_LEG, label=f"putting the idle leg {candidate} back")
            restored = self._restore_leg(candidate)
            summary = f"live traffic stayed on {fallback}"
            return StepsResult("succeeded" if restored else "failed", summary + (
                f"; the idle leg {candidate} put back" if restored
                else f"; putting the idle leg {candidate} back failed"))
        return StepsResult("succeeded", f"{self.live} is live on {version} and its soak passed; "
                           "nothing to do")

    def _restore_leg(self, leg: str) -> bool:
        """Put a leg that takes no live traffic back on the release its nodes had before the
        interrupted deployment; with no single one (a first release), on that deployment's own
        release, so that no node of it stays out of service. Whether it worked."""
        run = self.run
        resume = run.resume
        assert resume is not None
        before = {resume.from_versions.get(n, "") for n in self.bg.legs[leg].names()}
        earlier = {v for v in before if v and v != resume.version}
        target = earlier.pop() if len(earlier) == 1 else resume.version
        if target != resume.version:
            run.note(f"putting the leg {leg} back on {target}")
        else:
            run.note(f"leg {leg}: no single earlier release to go back to; it keeps {target} "
                     "(it takes no live traffic), every node back in service", level="warning")
        try:
            release = run.release if target == run.release.version else self.bg.verify_release(target)
        except DeployerError as exc:
            run.note(f"cannot put the leg {leg} back on {target}: {exc}", level="warning")
            return False
        execution = self._leg_exec(leg, release, kind="rollback")
        execution.read(stage=True)
        return execution.perform_nested(execution.plan()).status == "succeeded"

    # -- the end --------------------------------------------------------------------------

    def handle(self, exc: Stopped | Interrupted | DeploymentFailed | LoadBalancerError) -> StepsResult:
        switches = self.details["switches"]
        if isinstance(exc, Stopped | Interrupted):
            error = exc.error if isinstance(exc, Stopped) else exc
            if switches and not switches[-1]["back"] and isinstance(exc, Interrupted):
                last = switches[-1]
                self._switch(last["to"], last["from"], back=True)
            elif self.resumed_soak is not None and isinstance(exc, Interrupted):
                self._switch(*self.resumed_soak, back=True)
            status = "cancelled" if isinstance(error, Interrupted) else "stopped"
            if not self.changed and not switches:
                for execution in self.steps_run:
                    execution.rollout.tracker.close_untouched(f"not deployed: {error.message}")
            return StepsResult(status, error.message, error.hint or "", stop_error=error)
        refused = not switches and not self.changed
        if isinstance(exc, DeploymentRefused | LoadBalancerError) or refused:
            if refused:
                for execution in self.steps_run:
                    execution.rollout.tracker.close_untouched(f"not deployed: {exc.message}")
            return StepsResult("refused" if refused else "failed", exc.message, exc.hint or "")
        return StepsResult("failed", exc.message, exc.hint or "")

    def account(self) -> Accounting:
        accounting = Accounting()
        for execution in self.steps_run:
            execution.rollout.account(accounting)
        return accounting

    def outcome_details(self) -> dict[str, Any]:
        return {"blue_green": self.details}


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError):
        return 0, b""
