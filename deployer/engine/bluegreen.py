"""The blue-green strategy: two legs behind one load balancer, live traffic on one of them.

A deployment releases to the idle leg (all its nodes at once: they take no live traffic), checks
each node as it comes back, then the leg as a whole through the preview route, moves live
traffic to it with ONE load-balancer operation (an HAProxy map entry that ``use_backend``
follows), soaks it under analysis, and moves traffic back at once on any breach. In-flight
requests on the old leg finish on it: a switch cuts no request.

After a good soak the old leg either stays on the previous release as the fallback
(``after_soak: keep``, so that ``rollback`` is one switch) or receives the release too
(``uplift``). Each leg's nodes are rolled by an ordinary :class:`~deployer.engine.engine.Engine`
bound to that leg (its group and backend), as one step of this deployment.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from .._config import EnvironmentConfig
from .._errors import (
    ConfigError,
    DeployerError,
    DeploymentFailed,
    DeploymentRefused,
    Interrupted,
    LoadBalancerError,
)
from .._versions import validate_version
from ..adapters.journal import Journal
from ..adapters.loadbalancer import LoadBalancer
from ..adapters.lock import DeploymentLock, Lease
from ..adapters.redaction import redacted_url
from ..analysis import Verdict
from .engine import (
    Engine,
    NodeFacts,
    Outcome,
    Release,
    Reporter,
    StoreVerifier,
)
from .locking import default_lock, locked_deployment
from .soaking import Soaks

__all__ = ["BlueGreen"]


class BlueGreen:
    """Blue-green deployments of one environment (``strategy.kind: blue-green``)."""

    def __init__(
        self,
        *,
        env_name: str,
        env: EnvironmentConfig,
        leg_engines: Mapping[str, Engine],
        journal: Journal,
        verify_release: StoreVerifier,
        lb: LoadBalancer,
        reporter: Reporter | None = None,
        command: str = "",
        config_file: str = "config",
        soaks: Soaks | None = None,
        preview_get: Callable[[str, float], tuple[int, bytes]] | None = None,
        lock: DeploymentLock | None = None,
    ) -> None:
        if env.strategy.legs is None or env.load_balancer.legs_map is None:
            raise ConfigError("blue-green needs strategy.legs and load_balancer.legs_map", file=config_file)
        self.env_name = env_name
        self.env = env
        self.legs = env.strategy.legs
        self.leg_engines = dict(leg_engines)
        self.journal = journal
        self.verify_release = verify_release
        self.lb = lb
        self.reporter = reporter or Reporter()
        self.command = command
        self.config_file = config_file
        self.soaks = soaks
        self._preview_get = preview_get or _http_get
        self._map = env.load_balancer.legs_map
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._running: Engine | None = None
        self._deployment_id = 0
        self.lock = lock or default_lock(journal, env_name)
        self._lease: Lease | None = None
        self._check_legs()

    @property
    def nodes(self) -> list[Any]:
        return [n for e in self.leg_engines.values() for n in e.nodes]

    @property
    def runner(self) -> Any:
        """The runner the legs share (to close its SSH masters when the command ends)."""
        return next(iter(self.leg_engines.values())).runner

    def _check_legs(self) -> None:
        seen: dict[str, str] = {}
        for leg, engine in self.leg_engines.items():
            if not engine.nodes:
                raise ConfigError(
                    f"leg {leg!r} has no nodes", file=self.config_file,
                    field=f"strategy.legs.{leg}.group", value=self.legs[leg].group,
                )
            for node in engine.nodes:
                if node.name in seen:
                    raise ConfigError(
                        f"{node.name} is in both legs ({seen[node.name]} and {leg}): the legs "
                        "must not overlap", file=self.config_file, field=f"strategy.legs.{leg}.group",
                        value=self.legs[leg].group,
                    )
                seen[node.name] = leg

    # -- operator control -----------------------------------------------------------------

    def request_stop(self) -> bool:
        """First call: stop after making the current step safe. Second: abort now."""
        escalated = self._stop.is_set()
        if escalated:
            self._abort.set()
        self._stop.set()
        if self._running is not None:
            self._running.request_stop()
            if escalated:
                self._running.request_stop()
        return escalated

    # -- reading ----------------------------------------------------------------------------

    def live_leg(self) -> str:
        """The leg taking live traffic; refuses when live traffic is not on exactly one leg."""
        key = self.env.load_balancer.live_key
        backend = self.lb.route(self._map, key)
        by_backend = {leg.backend: name for name, leg in self.legs.items()}
        if backend not in by_backend:
            raise DeploymentRefused(
                f"live traffic is not on one of the legs: {self._map} sends {key!r} to "
                f"{backend or 'nothing'} (legs: "
                + ", ".join(f"{n} = {leg.backend}" for n, leg in self.legs.items()) + ")",
                hint=f"point it at one leg first, e.g. `set map {self._map} {key} "
                f"{next(iter(by_backend))}` on the load balancer",
            )
        return by_backend[backend]

    def idle_of(self, live: str) -> str:
        return next(name for name in self.legs if name != live)

    def rollback_target(self) -> str:
        """The release before the current one in the environment's successful history (so a
        second rollback goes further back, never forward); without history, the release the
        idle leg holds when it differs from the live one. When the idle leg holds the target,
        the rollback is a single switch."""
        live = self.live_leg()
        try:
            return self.leg_engines[live].rollback_target()
        except ConfigError:
            idle = {f.current for f in self.leg_engines[self.idle_of(live)].probe().values()}
            live_versions = {f.current for f in self.leg_engines[live].probe().values()}
            if len(idle) == 1 and idle != live_versions and "" not in idle:
                return idle.pop()
            raise

    # -- deploying --------------------------------------------------------------------------

    def deploy(self, version: str, *, kind: str = "deploy") -> Outcome:
        validate_version(version)
        release = self.verify_release(version)
        with locked_deployment(
            self.journal, self.lock, self.reporter, env_name=self.env_name,
            app=self.env.app.name, kind=kind, version=version, command=self.command,
            details={"sha256": release.sha256, "url": redacted_url(release.url),
                     "strategy": "blue-green"},
        ) as held:
            self._deployment_id, self._lease = held.deployment_id, held.lease
            return self._run(release, kind)

    def _run(self, release: Release, kind: str) -> Outcome:
        started = time.time()
        dep = self._deployment_id
        outcomes: list[Outcome] = []
        details: dict[str, Any] = {"switches": []}
        try:
            live = self.live_leg()
            idle = self.idle_of(live)
            details.update(live_before=live, idle=idle)
            self._check_live_serves(live)
            if self.soaks is not None:
                self.soaks.preflight(self.legs[idle].backend, self.config_file)
            idle_engine = self.leg_engines[idle]
            self.journal.update_details(dep, legs={"live": live, "idle": idle})
            # A rollback to what the idle leg still holds is a switch alone; a deployment reads
            # the idle leg in its own pre-stage run.
            facts = idle_engine.probe() if kind == "rollback" else {}
            ready = bool(facts) and all(
                f.current == release.version and f.healthy for f in facts.values()
            )
            if ready:
                self.reporter.message(
                    f"leg {idle} already runs {release.version} and is healthy: one switch"
                )
            else:
                self.reporter.message(
                    f"live traffic is on {live}; releasing {release.version} to the idle leg "
                    f"{idle} ({', '.join(n.name for n in idle_engine.nodes)})"
                )
                step = self._step(idle_engine, release, kind)
                outcomes.append(step)
                if step.status != "succeeded":
                    return self._finish(
                        kind, release, step.status,
                        f"leg {idle}: {step.summary}; live traffic stayed on {live}",
                        outcomes, details, started, hint=step.hint,
                    )
                facts = {n: NodeFacts(current=st.from_version) for n, st in step.nodes.items()}
            try:
                self._preview_smoke(idle, release)
            except DeploymentFailed as exc:
                self._revert_leg(idle, facts, release, outcomes)
                return self._finish(kind, release, "rolled_back", str(exc), outcomes, details, started)
            if self._stop.is_set():
                raise Interrupted(f"stopped by the operator before the switch; live traffic stayed on {live}")
            self._keep_lock()
            self._switch(live, idle, release, details, back=False)
            verdict = self._soak(idle, live, release)
            if verdict is not None:
                details["soak"] = verdict.to_dict()
            if verdict is not None and verdict.failed:
                self._switch(idle, live, release, details, back=True)
                self.journal.record_phase(
                    dep, f"{idle} leg", "failed", to_version=release.version,
                    detail=f"soak breached: {verdict.line()}",
                )
                self._revert_leg(idle, facts, release, outcomes)
                return self._finish(
                    kind, release, "rolled_back",
                    f"{release.version} failed its soak on {idle}: {verdict.line()}; "
                    f"live traffic switched back to {live}",
                    outcomes, details, started,
                )
            summary = f"{idle} is live on {release.version} (was {live})"
            if self.env.strategy.after_soak == "uplift":
                self._keep_lock()
                self.reporter.message(f"uplift: releasing {release.version} to {live} too")
                step = self._step(self.leg_engines[live], release, kind)
                outcomes.append(step)
                if step.status != "succeeded":
                    summary += f"; the uplift of {live} failed: {step.summary}"
                    return self._finish(kind, release, "failed", summary, outcomes, details, started)
                summary += f"; {live} uplifted to {release.version}"
            else:
                summary += f"; {live} kept on its release as the fallback (rollback = one switch)"
            return self._finish(kind, release, "succeeded", summary, outcomes, details, started)
        except Interrupted as exc:
            if details["switches"] and not details["switches"][-1]["back"]:
                last = details["switches"][-1]
                self._switch(last["to"], last["from"], release, details, back=True)
            return self._finish(kind, release, "cancelled", str(exc), outcomes, details, started)
        except (DeploymentRefused, LoadBalancerError) as exc:
            status = "refused" if not details["switches"] and not outcomes else "failed"
            return self._finish(kind, release, status, str(exc), outcomes, details, started,
                                hint=exc.hint or "")
        except DeploymentFailed as exc:
            return self._finish(kind, release, "failed", str(exc), outcomes, details, started,
                                hint=exc.hint or "")
        except BaseException as exc:
            self.journal.finish_deployment(dep, "failed", f"aborted: {exc}")
            raise

    def _keep_lock(self) -> None:
        """Before a step that changes live traffic or another leg: stop if the lock was lost."""
        if self._lease is not None:
            self._lease.check()

    def _check_live_serves(self, live: str) -> None:
        engine = self.leg_engines[live]
        states = engine.lb_states()
        serving = [n.name for n in engine.nodes if (s := states.get(n.lb_server)) and s.in_service]
        if not serving:
            raise DeploymentRefused(
                f"the live leg {live} has no node in service on the load balancer",
                hint="repair the live leg before deploying",
            )

    def _step(self, engine: Engine, release: Release, kind: str) -> Outcome:
        self._running = engine
        try:
            if self._abort.is_set():
                engine.request_stop()
                engine.request_stop()
            elif self._stop.is_set():
                engine.request_stop()
            return engine.deploy_step(self._deployment_id, release, kind, self._lease)
        finally:
            self._running = None

    def _preview_smoke(self, leg: str, release: Release) -> None:
        """The leg as a whole, through the preview route: every answer healthy and on the new
        release (enough requests for each node to answer a few times)."""
        preview_key = self.env.load_balancer.preview_key
        if preview_key:
            self.lb.set_route(self._map, preview_key, self.legs[leg].backend)
        assert self.env.strategy.preview_url is not None
        health = self.env.app.health
        url = self.env.strategy.preview_url.rstrip("/") + health.path
        count = max(5, 3 * len(self.leg_engines[leg].nodes))
        for i in range(count):
            status, body = self._preview_get(url, health.request_timeout)
            problem = ""
            if status != health.expect_status:
                problem = f"answered {status or 'nothing'} (expected {health.expect_status})"
            elif health.version_field:
                try:
                    seen = json.loads(body).get(health.version_field)
                except (ValueError, AttributeError):
                    seen = None
                if seen != release.version:
                    problem = f"reports version {seen!r}, not {release.version}"
            if problem:
                self.journal.record_phase(
                    self._deployment_id, f"{leg} leg", "failed", to_version=release.version,
                    detail=f"preview smoke {url}: {problem}",
                )
                raise DeploymentFailed(
                    f"the leg {leg} failed its smoke test through the preview route: {url} "
                    f"{problem} (request {i + 1} of {count}); live traffic was not moved"
                )
        self.journal.record_phase(
            self._deployment_id, f"{leg} leg", "smoke", to_version=release.version,
            detail=f"{count} requests through the preview route {url}: all healthy",
        )
        self.reporter.message(f"leg {leg}: {count} requests through the preview route, all healthy")

    def _switch(
        self, from_leg: str, to_leg: str, release: Release, details: dict[str, Any], *, back: bool
    ) -> None:
        lb = self.env.load_balancer
        at = time.time()
        t0 = time.monotonic()
        self.lb.set_route(self._map, lb.live_key, self.legs[to_leg].backend)
        took = time.monotonic() - t0
        if lb.preview_key:
            try:
                self.lb.set_route(self._map, lb.preview_key, self.legs[from_leg].backend)
            except LoadBalancerError as exc:  # the preview is not live traffic: say so, go on
                self.reporter.message(f"could not point the preview route at {from_leg}: {exc}")
        what = "switched back" if back else "switched"
        text = f"live traffic {what} from {from_leg} to {to_leg} in one operation on {self.lb.where}"
        # `at`: when the operation was sent (every request routed after it goes to `to`).
        details["switches"].append({"from": from_leg, "to": to_leg, "back": back, "at": at,
                                    "seconds": round(took, 4)})
        self.journal.record_phase(
            self._deployment_id, "live traffic", "switched_back" if back else "switched",
            to_version=release.version, detail=text,
        )
        self.reporter.message(text)

    def _soak(self, new_leg: str, old_leg: str, release: Release) -> Verdict | None:
        """Soak the new live leg; its servers are the ones watched (the old leg, idle now,
        takes no live traffic to compare with)."""
        if self.soaks is None:
            return None
        new = [n.lb_server for n in self.leg_engines[new_leg].nodes]
        self.reporter.message(
            f"soaking {release.version} on {new_leg} under live traffic for up to "
            f"{self.soaks.config.duration:g}s"
        )
        verdict = self.soaks.run(
            version=release.version, backend=self.legs[new_leg].backend, new=new, old=(),
            stopped=self._stop,
        )
        if self._stop.is_set() and not verdict.failed:
            raise Interrupted("stopped by the operator during the soak; live traffic switched back")
        self.journal.record_phase(
            self._deployment_id, f"{new_leg} leg", "soak_failed" if verdict.failed else "soaked",
            to_version=release.version, detail=verdict.line(),
        )
        self.reporter.message(f"soak: {verdict.line()}")
        return verdict

    def _revert_leg(
        self, leg: str, before: Mapping[str, NodeFacts], release: Release, outcomes: list[Outcome]
    ) -> None:
        """Put the failed (now idle) leg back on the release it had, so it is a fallback again."""
        previous = {f.current for f in before.values() if f.current and f.current != release.version}
        if len(previous) != 1:
            self.reporter.message(f"leg {leg} stays on {release.version} (idle; no single earlier release)")
            return
        target = previous.pop()
        try:
            old = self.verify_release(target)
        except DeployerError as exc:
            self.reporter.message(f"leg {leg} stays on {release.version}: cannot verify {target}: {exc}")
            return
        self.reporter.message(f"putting the idle leg {leg} back on {target}")
        outcomes.append(self._step(self.leg_engines[leg], old, "rollback"))

    def _finish(
        self, kind: str, release: Release, status: str, summary: str, outcomes: list[Outcome],
        details: dict[str, Any], started: float, *, hint: str = "",
    ) -> Outcome:
        nodes = {}
        out_of_service: list[str] = []
        fix: list[str] = []
        left_alone: list[str] = []
        for o in outcomes:
            nodes.update(o.nodes)
            out_of_service += o.out_of_service
            left_alone += o.left_alone
            fix += [f for f in o.fix_commands if f not in fix]
        if out_of_service and status in ("refused", "succeeded"):
            status = "failed"
        self.journal.update_details(self._deployment_id, blue_green=details)
        self.journal.finish_deployment(self._deployment_id, status, summary)
        return Outcome(
            deployment_id=self._deployment_id, kind=kind, version=release.version, status=status,
            nodes=nodes, summary=summary, out_of_service=out_of_service, fix_commands=fix,
            started=started, ended=time.time(), left_alone=left_alone, hint=hint,
            details={"blue_green": details},
        )


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError):
        return 0, b""
