"""Running a game day: for each scenario, the steady state checked, the rehearsal under load
with its fault at its point, the faults undone, the fixes the outcome names run, the steady
state checked again, the journal compared with what is live; then the verdict.

:class:`GameDay` runs the scenarios one after the other on one environment; a
:class:`Rehearsal` is one scenario's run, through which a scenario deploys, injects, kills,
resumes and recovers (see :mod:`._scenarios`). Deployments run through the engine's lifecycle
in this process (a :class:`~._points.Watch` among their subscribers puts the fault in at its
point), except a deployment the scenario kills, which runs as ``deployer deploy --events -`` in a
process of its own, and a second controller's, which runs as ``deployer deploy`` with a config
of its own. An agent cycle runs the environment's runner (:class:`~deployer.agent.Agent`) in
this process, its looks one after the other, on the environment's pointer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from .._errors import ConfigError, DeployerError, UsageError
from ..adapters.journal import Journal
from ..adapters.process import actor
from ..agent import Agent, Step, pointer_from
from ..config import BlueGreenStrategy, Config, GameDayConfig, GatesConfig
from ..engine.events import Subscriber
from ..engine.left_out import left_out_by_deployer
from ..engine.lifecycle import exit_code_for
from ..engine.model import Outcome
from ..engine.recovery import recover
from ..engine.resume import find_interrupted, resume
from ..gates import GateRequest
from ._faults import Fault, Reach
from ._governance import GameDayKeys, RehearsalGates
from ._ledger import Entry, FaultLedger
from ._load import Load, LoadCount
from ._points import Point, Timeline, Watch
from ._report import GameDayReport, ScenarioResult, describe_event
from ._scenarios import SCENARIOS, Context, Scenario, store_root
from ._steady import Observation, hypothesis, journal_claims, journal_differences, observe
from ._wired import Wired, Wiring

__all__ = ["GameDay", "Rehearsal", "check_allowed", "cleanup", "decide", "select"]

# How the environment's runner names itself in a rehearsal (its deployments' details say so).
RUNNER_IDENTITY = "deployer gameday"


def check_allowed(config: Config, env_name: str) -> GameDayConfig:
    """The environment's game-day settings; refused (naming the setting) unless it allows game
    days and names the releases they may deploy."""
    env = config.environment(env_name)
    game = env.gameday
    file = str(config.source) if config.source else None
    if not game.allowed:
        raise ConfigError(
            f"game days are not allowed on environment {env_name!r}: they inject real faults "
            "(cut networks, full disks, killed deployments)", file=file,
            field=f"environments.{env_name}.gameday.allowed",
            hint=f"set environments.{env_name}.gameday.allowed: true, for a lab or a staging "
            "environment only",
        )
    if len(game.releases) < 2:
        raise ConfigError(
            "a game day needs two known good releases to deploy back and forth", file=file,
            field=f"environments.{env_name}.gameday.releases", value=game.releases or None,
            hint="list them, e.g. releases: [1.4.1, 1.4.2] (both published in the store)",
        )
    return game


def decide(*, crashed: str, never_injected: str, wrong: Sequence[str], unnamed: Sequence[str],
           undo_failed: Sequence[str], after: Sequence[str], journal: Sequence[str],
           restore_timeout: float = 60.0) -> tuple[str, list[str]]:
    """A scenario's verdict and its reasons.

    ``crashed``: why the rehearsal did not finish (stopped, broken); ``never_injected``: why its
    fault never went in; ``wrong``: how the outcome differs from the safe one (the scenario's
    judgement); ``unnamed``: nodes out of the load balancer when the deployment ended that the
    outcome did not name; ``undo_failed``: faults still in place; ``after``: why the steady
    state does not hold after it; ``journal``: where the journal differs from the live state.
    The scenario could not tell (inconclusive) when it did not finish or its fault never went
    in; anything else wrong makes it unsafe."""
    reasons: list[str] = []
    inconclusive = bool(crashed or never_injected)
    if crashed:
        reasons.append(f"the rehearsal did not finish: {crashed}")
    elif never_injected:
        reasons.append(f"the fault never went in: {never_injected}")
    reasons += wrong
    if unnamed:
        reasons.append("out of the load balancer when the deployment ended without the outcome "
                       f"saying so: {', '.join(unnamed)}")
    if undo_failed:
        reasons.append("faults could not be undone: " + "; ".join(undo_failed))
    if after and inconclusive:
        reasons.append("the steady state after it: " + "; ".join(after))
    elif after:
        reasons.append(f"the steady state did not come back within {restore_timeout:g} s: "
                       + "; ".join(after))
    if journal:
        reasons.append("the journal does not match the live state: " + "; ".join(journal))
    if inconclusive and not undo_failed:
        return "inconclusive", reasons
    return ("unsafe" if reasons else "safe"), reasons


def cleanup(config: Config, env_name: str, wire: Wiring,
            say: Callable[[str], None] = print) -> tuple[list[str], list[str]]:
    """Put right what a game day that was killed left: its faults undone, then its own
    rehearsal deployment, if that was interrupted, resumed. What was done, and what could not
    be (with why)."""
    ledger = FaultLedger(Path(config.state_dir))
    reach = Reach(config.environment(env_name))
    with ledger.lock():
        try:
            done, failed = ledger.undo_all(reach, env_name)
        finally:
            reach.close()
        if not failed:
            resumed = _resume_own(config, env_name, wire, say)
            done += [resumed] if resumed else []
    return done, failed


def _resume_own(config: Config, env_name: str, wire: Wiring, say: Callable[[str], None]) -> str:
    """Resume the game day's own rehearsal deployment if its process died with it ("" when
    there is none): the environment's other interrupted deployments are its operators'."""
    wired = wire(config, env_name, gates=GateRequest())
    try:
        found, _ = find_interrupted(wired.journal, env_name, lock=wired.lock)
        details = found.root.details if found is not None else {}
        own = "gameday" in details or str(details.get("agent", "")).startswith(RUNNER_IDENTITY)
        if found is None or not own:
            return ""
        result = resume(wired.lifecycle, on_interrupted=wired.env.strategy.on_interrupted, say=say)
    except DeployerError as exc:
        return f"could not resume the interrupted rehearsal deployment: {exc.message}"
    finally:
        wired.close()
    status = result.outcome.status if result.outcome is not None else "nothing to do"
    return (f"resumed the rehearsal deployment {found.root.id} ({found.root.uid}) that an "
            f"interrupted game day left: {status}")


def select(names: Sequence[str], strategy: str) -> list[tuple[Scenario, str]]:
    """The scenarios ``names`` asks for (``all``: every one), each with why it does not apply
    to this strategy ("" when it does)."""
    known = {s.name: s for s in SCENARIOS}
    wanted: list[Scenario] = []
    for name in names:
        if name == "all":
            wanted += [s for s in SCENARIOS if s not in wanted]
        elif name in known:
            if known[name] not in wanted:
                wanted.append(known[name])
        else:
            raise UsageError(f"no scenario named {name!r} (known: {', '.join(known)}, or all)",
                             hint="deployer gameday list")
    return [(s, "" if strategy in s.strategies else
             f"for {' and '.join(s.strategies)} environments; this one is {strategy}")
            for s in wanted]


class Stoppable(Protocol):
    """What a stop asks: a deployment's lifecycle, or the environment's runner deploying."""

    def request_stop(self) -> bool: ...


@dataclass
class SecondController:
    """How a second controller's deployment ended."""

    code: int
    said: str
    # The status of each deployment its journal recorded (a refusal is on the record).
    recorded: list[str]


class Skipped(Exception):
    """A scenario found it cannot run here (said why)."""


class Rehearsal:
    """One scenario's run (see the module documentation)."""

    def __init__(self, game: GameDay, scenario: Scenario, ctx: Context, timeline: Timeline) -> None:
        self.game = game
        self.scenario = scenario
        self.ctx = ctx
        self.timeline = timeline
        self.reach = game.reach
        self.watches: list[Watch] = []
        self.faults: list[tuple[Fault, Entry]] = []
        self.undone: list[str] = []
        self.undo_failed: list[str] = []
        self.outcome: Outcome | None = None
        self.error: DeployerError | None = None
        self.exit_code: int | None = None
        self.ended_at: float | None = None
        self.injected_at: float | None = None
        self.detected_at: float | None = None
        self.detected_by = ""
        self.inject_errors: list[str] = []
        self.uids: list[str] = []
        self.recovery: list[str] = []
        self.overrides: list[str] = []
        self.hit_nodes: list[str] = []
        self.left_out_at_outcome: list[str] | None = None
        self.killed_uid = ""
        self.resume_found: str | None = None
        self.second: SecondController | None = None
        self.long_lived: LoadCount | None = None
        self.held: list[threading.Thread] = []
        # The environment's runner's looks (a rehearsal of an agent cycle), each as it ended.
        self.looks: list[Step] = []
        # The governance gates as this rehearsal meets them (settings, request, their clock).
        self.gates = RehearsalGates()
        # The rehearsal deployment's exit code and outcome before the fix the scenario ran
        # (a resume), when it ran one.
        self.before_fix: tuple[int | None, Outcome | None] | None = None
        self._wired: Wired | None = None

    # -- what scenarios use ---------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic()

    def skip(self, why: str) -> None:
        raise Skipped(why)

    def store_root(self) -> Path | None:
        env = self.game.env
        return store_root(env.store.url, env.gameday.store_dir)

    def saw(self, test: Callable[[Mapping[str, Any]], bool]) -> bool:
        return any(test(h.event) for w in self.watches for h in w.events())

    def inject(self, fault: Fault, *, setup: bool = False) -> None:
        """Record the fault in the ledger, put it in place, say so. ``setup``: a change the
        rehearsal makes to set itself up (recorded and undone like a fault, but not the fault
        whose time to detect is measured)."""
        entry = self.game.ledger.add(self.game.env_name, fault, self.scenario.name)
        self.faults.append((fault, entry))
        fault.inject(self.reach)
        self.faults[-1] = (fault, self.game.ledger.update(entry, fault))
        at = self.now()
        if setup:
            self.timeline.add(f"set up: {fault.describe()}", at)
            self.game.say(f"  set up: {fault.describe()}")
            return
        if self.injected_at is None:
            self.injected_at = at
        self.timeline.add(f"fault in place: {fault.describe()}", at)
        self.game.say(f"  fault: {fault.describe()}")

    def undo_faults(self) -> None:
        """Undo every fault of this scenario (newest first), keeping what could not be."""
        while self.faults:
            fault, entry = self.faults.pop()
            try:
                fault.undo(self.reach)
            except (DeployerError, OSError) as exc:
                self.undo_failed.append(f"{fault.describe()}: {exc}")
                self.timeline.add(f"could not undo: {fault.describe()}: {exc}")
                continue
            self.game.ledger.remove(entry)
            self.undone.append(fault.describe())
            self.timeline.add(f"fault undone: {fault.describe()}")
        if self.left_out_at_outcome is None and self.ended_at is not None:
            self.left_out_at_outcome = self._out_of_lb()

    def _out_of_lb(self) -> list[str] | None:
        """The nodes out of the load balancer now (None: it cannot be read)."""
        out: list[str] = []
        try:
            for fleet in self.game.reader().fleets.values():
                states = fleet.lb_states()
                out += [n.name for n in fleet.nodes
                        if (s := states.get(n.lb_server)) is None or not s.in_service]
        except DeployerError:
            return None
        return out

    def _deployment(self, version: str, *, kind: str, point: Point | None = None,
                    at_point: Callable[[dict[str, Any]], None] | None = None,
                    drain_timeout: float | None = None) -> tuple[Outcome | None, DeployerError | None]:
        watch = Watch(point, at_point)
        self.watches.append(watch)
        wired = self._wire(watch, drain_timeout=drain_timeout)
        self._wired = wired
        self.game.running = wired.lifecycle
        self.timeline.add(f"{kind} {version}: started")
        outcome: Outcome | None = None
        error: DeployerError | None = None
        try:
            outcome = wired.lifecycle.deploy(version, kind=kind,
                                             extra_details={"gameday": self.scenario.name})
        except DeployerError as exc:
            error = exc
        finally:
            self.game.running = None
            self._wired = None
            wired.close()
        if watch.inject_error:
            self.inject_errors.append(watch.inject_error)
            self.timeline.add(f"the fault could not be injected: {watch.inject_error}")
        if outcome is not None:
            self.uids.append(outcome.uid)
            self.timeline.add(f"{kind} {version}: {outcome.status} (exit {exit_code_for(outcome)}, "
                              f"deployment {outcome.deployment_id}, {outcome.uid}): {outcome.summary}")
        elif error is not None:
            self.timeline.add(f"{kind} {version}: {error.message} (exit {error.exit_code})")
        return outcome, error

    def _wire(self, watch: Watch, *, drain_timeout: float | None = None) -> Wired:
        """The environment wired for one of the rehearsal's deployments: its settings, and the
        environment's governance gates as the rehearsal meets them."""
        wired = self.game.wire(self.game.config_with(drain_timeout=drain_timeout,
                                                     gates=self.gates.config),
                               self.game.env_name, subscribers=[watch], gates=self.gates.request)
        wired.lifecycle.checks_clock = self.gates.clock
        return wired

    def deploy(self, version: str, *, point: Point | None = None,
               at_point: Callable[[dict[str, Any]], None] | None = None,
               drain_timeout: float | None = None) -> None:
        """The rehearsal deployment (its outcome is what the scenario judges)."""
        self.outcome, self.error = self._deployment(version, kind="deploy", point=point,
                                                    at_point=at_point, drain_timeout=drain_timeout)
        self.ended_at = self.now()
        self.exit_code = (exit_code_for(self.outcome) if self.outcome is not None
                          else self.error.exit_code if self.error is not None else None)
        if self.injected_at is not None and self.exit_code not in (0, None):
            self.detected(self.ended_at, f"the deployment's outcome (exit {self.exit_code})")
        self.left_out_at_outcome = self._out_of_lb()

    def detected(self, at: float, by: str) -> None:
        """The fault was noticed at ``at`` (the earliest sign wins), by ``by``."""
        if self.detected_at is None or at < self.detected_at:
            self.detected_at, self.detected_by = at, by

    def rollback(self, version: str) -> None:
        """A fix: ``deployer rollback --to version``."""
        outcome, error = self._deployment(version, kind="rollback")
        what = (f"{outcome.status} (exit {exit_code_for(outcome)})" if outcome is not None
                else f"{error.message if error else 'no outcome'}")
        self.recovery.append(f"deployer rollback --env {self.game.env_name} --to {version}: {what}")

    def recover(self) -> None:
        """A fix: ``deployer recover``."""
        wired = self.game.wired()
        said: list[str] = []
        try:
            result = recover(list(wired.fleets.values()), wired.journal, wired.lock,
                             env_name=self.game.env_name, app=self.game.env.app.name,
                             command=f"deployer gameday ({self.scenario.name}): recover",
                             say=said.append)
            what = (f"put back {', '.join(result.put_back)}" if result.put_back
                    else "nothing to put back")
        except DeployerError as exc:
            what = f"failed: {exc.message}"
        finally:
            wired.close()
        self.recovery.append(f"deployer recover --env {self.game.env_name}: {what}")
        self.timeline.add(f"recover: {what}")

    def resume(self) -> None:
        """``deployer resume``: its outcome is the one judged."""
        watch = Watch()
        self.watches.append(watch)
        if self.exit_code is not None:
            self.before_fix = (self.exit_code, self.outcome)
        wired = self._wire(watch)
        self.game.running = wired.lifecycle

        def say(text: str) -> None:
            if text.startswith("found:") and self.injected_at is not None:
                self.detected(self.now(), "`deployer resume`, run at once after the kill")
            self.timeline.add(f"resume: {text}")

        try:
            result = resume(wired.lifecycle, on_interrupted=self.game.env.strategy.on_interrupted,
                            say=say)
        except DeployerError as exc:
            self.error, self.exit_code = exc, exc.exit_code
            self.timeline.add(f"resume: {exc.message} (exit {exc.exit_code})")
            return
        finally:
            self.game.running = None
            wired.close()
        self.ended_at = self.now()
        self.resume_found = result.interruption.root.uid if result.interruption else None
        self.outcome = result.outcome
        self.exit_code = exit_code_for(result.outcome) if result.outcome is not None else 0
        if result.outcome is not None:
            self.uids.append(result.outcome.uid)
            self.timeline.add(f"resume: {result.outcome.status} (exit {self.exit_code}, deployment "
                              f"{result.outcome.deployment_id}, {result.outcome.uid}): "
                              f"{result.outcome.summary}")
        elif result.uid:
            self.uids.append(result.uid)
        self.left_out_at_outcome = self._out_of_lb()

    def release_digest(self, version: str) -> str:
        """The digest of ``version`` as the store's signed manifest gives it (verified)."""
        return self.game.reader().lifecycle.verify_release(version).sha256

    def runs_two_releases(self) -> bool:
        """Whether the fleet (or a leg) runs more than one release now."""
        obs = self.game.observe(None)
        groups = {n.leg for n in obs.nodes}
        return any(len({n.version for n in obs.nodes if n.leg == g and n.version}) > 1 for g in groups)

    def node_without(self, version: str) -> str | None:
        """The first node that would get ``version`` first and does not hold it unpacked."""
        fleets = self.game.reader().fleets
        if self.ctx.blue_green and self.ctx.live_leg is not None:
            nodes = [n for leg, f in fleets.items() if leg != self.ctx.live_leg for n in f.nodes]
        else:
            nodes = [n for f in fleets.values() for n in f.nodes]
        marker = f"{self.ctx.release_root}/releases/{version}/.deployer-release.json"
        for node in nodes:
            held = self.reach.run(node.name, f"if [ -e '{marker}' ]; then echo yes; else echo no; fi",
                                  what="looking for the release")
            if held.strip() == "no":
                return node.name
        return None

    def deploy_and_kill(self, version: str, point: Point) -> None:
        """``deployer deploy`` in a process of its own, SIGKILLed (with every process it
        started) at ``point`` of its events."""
        argv = [self.game.python, "-m", "deployer", "deploy", "--config", str(self.game.config_path),
                "--env", self.game.env_name, "--version", version, "--events", "-", "--quiet"]
        log = self.game.work_dir / f"{self.scenario.name}.deploy.log"
        with open(log, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                                    start_new_session=True)
        self.game.child = proc

        def kill(event: dict[str, Any]) -> None:
            family = _descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in family:  # its playbook runs, in sessions of their own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.killed_uid = str((event.get("deployment") or {}).get("uid") or "")
            self.injected_at = self.now()
            self.timeline.add(f"SIGKILL to the deploying process (pid {proc.pid}) and "
                              f"{len(family)} process(es) it started", self.injected_at)
            self.game.say(f"  fault: SIGKILL to the deploying process (pid {proc.pid})")

        watch = Watch(point, kill)
        self.watches.append(watch)
        self.timeline.add(f"deploy {version}: started as a process of its own (pid {proc.pid})")
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    if watch.feed(json.loads(line)):
                        break
            proc.wait(timeout=120)
        finally:
            self.game.child = None
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not self.killed_uid:
            self.exit_code = proc.returncode
            self.timeline.add(f"deploy {version}: ended by itself (exit {proc.returncode}) before "
                              f"{point.describe()}")
        else:
            self.uids.append(self.killed_uid)

    def second_controller(self, version: str) -> None:
        """``deployer deploy`` from a second controller (a config of its own state directory)."""
        config = self.game.second_config()
        argv = [self.game.python, "-m", "deployer", "deploy", "--config", str(config), "--env",
                self.game.env_name, "--version", version, "--quiet"]
        self.injected_at = self.now()
        self.timeline.add(f"a second controller runs `deployer deploy --version {version}`",
                          self.injected_at)
        self.game.say(f"  fault: a second controller deploys {version}")
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
        said = next((line for line in reversed(proc.stderr.splitlines())
                     if line.startswith("deployer: error:")), proc.stderr.strip()[-300:])
        journal_path = config.parent / "state" / "journal.sqlite"
        recorded = ([d.status for d in Journal(journal_path, read_only=True).deployments(
            self.game.env_name)] if journal_path.exists() else [])
        self.second = SecondController(proc.returncode, said, recorded)
        self.timeline.add(f"second controller: exit {proc.returncode}: {said}")
        if proc.returncode == 6:
            self.detected(self.now(), "the deployment lock (the second controller was refused)")

    def runner_looks(self, looks: int, *, point: Point,
                     at_point: Callable[[dict[str, Any]], None]) -> None:
        """The environment's runner (``deployer agent``, in this process, with the
        environment's pointer and agent settings, recording no promotion) looking ``looks``
        times; ``at_point`` runs at ``point`` of what it does. Each look is kept in
        :attr:`looks`; the exit code is the last look's."""
        env = self.game.env
        if env.pointer is None:
            raise DeployerError("the environment has no pointer")
        watch = Watch(point, at_point)
        self.watches.append(watch)
        game = self.game

        def open_environment(subscribers: Sequence[Subscriber]) -> Wired:
            # As the environment's runner: the gates are told each request from the pointer.
            return game.wire(game.config, game.env_name, subscribers=subscribers,
                             gates=GateRequest())

        agent = Agent(env_name=game.env_name, app=env.app.name, config=env.agent,
                      pointer=pointer_from(env.pointer), open_environment=open_environment,
                      subscribers=lambda: [watch], recorder=None,
                      require_signed=env.pointer.require_signed,
                      identity=f"{RUNNER_IDENTITY} {self.scenario.name} ({actor()} pid {os.getpid()})")
        game.running = agent
        try:
            for n in range(1, looks + 1):
                if game.stopping:
                    break
                step = agent.step()
                self.looks.append(step)
                status = step.status
                if status is not None and status.deployment:
                    self.uids.append(status.deployment)
                self.exit_code = step.exit_code
                reason = status.reason if status is not None else ""
                self.timeline.add(f"runner look {n}: {step.decision} (exit {step.exit_code})"
                                  + (f": {reason}" if reason else ""))
        finally:
            game.running = None
            agent.events.close()
        if watch.inject_error:
            self.inject_errors.append(watch.inject_error)
            self.timeline.add(f"the fault could not be injected: {watch.inject_error}")
        self.ended_at = self.now()
        self.left_out_at_outcome = self._out_of_lb()

    def hold(self, count: int, path: str, *, seconds: float) -> None:
        """Long-lived requests through the load balancer (the load's), open before this returns."""
        load = self.game.load
        if load is None:
            raise DeployerError("no load to hold requests with")
        base = sum(s.sessions for s in self._sessions().values())
        self.held = load.hold(count, path, seconds=seconds)
        self.injected_at = self.now()
        self.timeline.add(f"{count} long-lived request(s) to {path} opened", self.injected_at)
        self.game.say(f"  fault: {count} long-lived request(s) to {path}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the load balancer counts them
            if sum(s.sessions for s in self._sessions().values()) >= base + count:
                break
            time.sleep(0.05)

    def _sessions(self) -> dict[str, Any]:
        wired = self._wired
        if wired is None:
            return {}
        states: dict[str, Any] = {}
        with contextlib.suppress(DeployerError):
            for fleet in wired.fleets.values():
                states.update(fleet.lb_states())
        return states

    def wait_held(self) -> None:
        for thread in self.held:
            thread.join(timeout=60)
        if self.game.load is not None and self.injected_at is not None:
            self.long_lived = self.game.load.count(self.injected_at - 1, long_lived=True)

    def actual(self) -> str:
        if self.looks:
            return "; ".join(
                f"look {n}: {s.decision} (exit {s.exit_code})"
                + (f": {s.status.last_deployment.kind} {s.status.last_deployment.version} "
                   f"{s.status.last_deployment.status}"
                   if s.status is not None and s.status.deployment and s.status.last_deployment
                   else "")
                for n, s in enumerate(self.looks, 1))
        if self.outcome is not None:
            first = ""
            code, before = self.before_fix or (None, None)
            if before is not None:
                first = f"{before.status} (exit {code}): {before.summary}; then `deployer resume`: "
            return (f"{first}{self.outcome.status} (exit {self.exit_code}): {self.outcome.summary}"
                    + (f"; out of service: {'; '.join(self.outcome.out_of_service)}"
                       if self.outcome.out_of_service else ""))
        if self.error is not None:
            return f"refused (exit {self.error.exit_code}): {self.error.message}"
        if self.exit_code is not None:
            return f"exit {self.exit_code}"
        return "no outcome"


def _descendants(pid: int) -> list[int]:
    """Every process whose parent chain leads to ``pid``."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, pp in parents.items() if pp == current]
        found += children
        frontier += children
    return found


class GameDay:
    """Scenarios rehearsed on one environment (see the module documentation)."""

    def __init__(
        self, config: Config, env_name: str, *, wire: Wiring, load_url: str | None = None,
        rate: float | None = None, report_dir: Path | None = None,
        say: Callable[[str], None] = print, python: str = sys.executable,
    ) -> None:
        self.config = config
        self.env_name = env_name
        self.env = config.environment(env_name)
        self.gameday = check_allowed(config, env_name)
        if config.source is None:
            raise UsageError("a game day needs its config from a file (its kills run `deployer`)")
        self.config_path = config.source
        self.wire = wire
        self.say = say
        self.python = python
        self.ledger = FaultLedger(Path(config.state_dir))
        self.work_dir = self.ledger.dir
        # The game day's own requester and approver, for rehearsals that need approvals.
        self.keys = GameDayKeys(self.work_dir / "keys")
        self.reach = Reach(self.env)
        url = load_url or self.gameday.load_url or (self.env.analysis.target_url
                                                    if self.env.analysis else None)
        if not url:
            raise UsageError(
                "no URL to send load to: pass --load URL (the service through its load balancer)",
                hint=f"or set environments.{env_name}.gameday.load_url")
        self.load_url = url
        self.rate = rate or self.gameday.rate
        self.report_dir = report_dir
        self.load: Load | None = None
        # The lifecycle of the deployment under way (or the runner running it), and a
        # deployment's process, for a stop.
        self.running: Stoppable | None = None
        self.child: subprocess.Popen[str] | None = None
        self.stopping = False
        self._reader: Wired | None = None
        self.strategy = ("blue-green" if isinstance(self.env.strategy, BlueGreenStrategy)
                         else "rolling")

    # -- wiring ---------------------------------------------------------------------------

    def config_with(self, *, drain_timeout: float | None = None,
                    gates: GatesConfig | None = None) -> Config:
        """The config with the environment's settings a rehearsal sets for itself."""
        update: dict[str, Any] = {}
        if drain_timeout is not None:
            update["load_balancer"] = self.env.load_balancer.model_copy(
                update={"drain_timeout": drain_timeout})
        if gates is not None:
            update["gates"] = gates
        if not update:
            return self.config
        env = self.env.model_copy(update=update)
        return self.config.model_copy(update={"environments": {**self.config.environments,
                                                               self.env_name: env}})

    def wired(self) -> Wired:
        """The environment wired afresh (for a command that takes the lock: recover, resume),
        through its governance gates."""
        return self.wire(self.config, self.env_name, gates=GateRequest())

    def reader(self) -> Wired:
        """The environment wired once for reading it (the load balancer, the nodes' health, the
        journal), between deployments and while they run."""
        if self._reader is None:
            self._reader = self.wire(self.config, self.env_name)
        return self._reader

    def second_config(self) -> Path:
        """A copy of the config whose state directory (so journal) is its own: a second
        controller of the same environment, meeting the first at the lock."""
        raw = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        where = self.work_dir / "second-controller"
        where.mkdir(parents=True, exist_ok=True)
        raw["state_dir"] = str(where / "state")
        for name, env in raw.get("environments", {}).items():
            loaded = self.config.environment(name)
            env["inventory"] = str(loaded.inventory)
            env["trusted_keys"] = [str(k) for k in loaded.trusted_keys]
            if isinstance(env.get("gameday"), dict) and loaded.gameday.store_dir:
                env["gameday"]["store_dir"] = loaded.gameday.store_dir
            # The runner's sections with their paths as loaded (absolute).
            for section, model in (("pointer", loaded.pointer), ("promotion", loaded.promotion)):
                if model is not None and isinstance(env.get(section), dict):
                    env[section] = model.model_dump(mode="json", exclude_none=True)
        path = where / "deployer.yml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        return path

    def observe(self, since: float | None) -> Observation:
        """The environment now; the load judged on the requests started since ``since`` (and
        in the last window), when given."""
        count = None
        if since is not None and self.load is not None:
            start = max(since, self.load.now() - self.load.window())
            count = self.load.count(start, long_lived=False)
        return observe(self.reader(), known=self.gameday.releases,
                       threshold=self.gameday.error_threshold, load=count)

    # -- control --------------------------------------------------------------------------

    def request_stop(self) -> bool:
        """Ctrl-C: the scenario under way stops at its deployment's next safe point (its faults
        are undone), and no other starts. A second one aborts the deployment at once. Returns
        True on the second."""
        again = self.stopping
        self.stopping = True
        if self.running is not None:
            self.running.request_stop()
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signal.SIGTERM)
        return again

    # -- running --------------------------------------------------------------------------

    def run(self, names: Sequence[str]) -> GameDayReport:
        chosen = select(names, self.strategy)
        report = GameDayReport(
            env=self.env_name, strategy=self.strategy, releases=list(self.gameday.releases),
            load_url=self.load_url, rate=self.rate, config=str(self.config_path),
            hypothesis=hypothesis(self.env_name, self.gameday.releases,
                                  self.gameday.error_threshold,
                                  legs=self.strategy == "blue-green"),
            started=time.time(),
        )
        with self.ledger.lock():
            undone, failed = self.ledger.undo_all(self.reach, self.env_name)
            if failed:
                raise DeployerError(
                    "faults left by an earlier game day could not be undone: " + "; ".join(failed),
                    hint=f"undo them by hand, then run `deployer gameday cleanup --env {self.env_name}`")
            resumed = _resume_own(self.config, self.env_name, self.wire, lambda text: None)
            report.cleanup = undone + ([resumed] if resumed else [])
            for line in report.cleanup:
                self.say(f"left by an earlier game day: {line}")
            # Load for the whole game day, bounded all the same (a scenario takes minutes).
            self.load = Load(self.load_url, rate=self.rate,
                             max_seconds=60 + 600 * len(chosen)).start()
            try:
                for scenario, why_not in chosen:
                    if self.stopping:
                        report.results.append(self._not_run(scenario, "the game day was stopped"))
                        continue
                    report.results.append(self._scenario(scenario, why_not))
            finally:
                self.load.stop()
                self.reach.close()
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None
        report.ended = time.time()
        report.interrupted = self.stopping
        return report

    def _not_run(self, scenario: Scenario, why: str, verdict: str = "skipped") -> ScenarioResult:
        return ScenarioResult(name=scenario.name, title=scenario.title, strategy=self.strategy,
                              verdict=verdict, reasons=[why])

    def _scenario(self, scenario: Scenario, why_not: str) -> ScenarioResult:
        if why_not:
            self.say(f"{scenario.name}: skipped ({why_not})")
            return self._not_run(scenario, why_not)
        self.say(f"{scenario.name}: {scenario.title}")
        timeline = Timeline()
        assert self.load is not None
        start = self.load.now()
        before = self.observe(start - self.load.window())
        if not before.holds:
            # Give load a moment to count (the first scenario starts with the load).
            before = self._await_steady(start, timeout=10.0)
        result = ScenarioResult(name=scenario.name, title=scenario.title, strategy=self.strategy,
                                steady_before=before.to_dict())
        if not before.holds:
            result.verdict = "inconclusive"
            result.reasons = ["the steady state did not hold before the scenario: "
                              + "; ".join(before.problems)]
            self.say(f"  not run: {result.reasons[0]}")
            return result
        baseline = before.release(before.live_leg) if before.live_leg else before.release()
        assert baseline is not None
        target = next(v for v in self.gameday.releases if v != baseline)
        ctx = Context(env_name=self.env_name, strategy=self.strategy, baseline=baseline,
                      target=target, live_leg=before.live_leg,
                      fault_file=self.gameday.fault_file or f"/etc/{self.env.app.name}/fault",
                      release_root=self.env.app.release_root)
        r = Rehearsal(self, scenario, ctx, timeline)
        result.fault = scenario.fault(ctx)
        result.point = scenario.point(ctx)
        result.expected = scenario.expected(ctx)
        result.baseline, result.target = baseline, target
        crashed = ""
        skipped = scenario.applies(ctx, r)
        try:
            if not skipped:
                scenario.rehearse(r)
        except Skipped as why:
            skipped = str(why)
        except KeyboardInterrupt:
            self.stopping = True
            crashed = "interrupted"
        except Exception as exc:  # a bug or an unexpected failure: reported, faults undone
            crashed = f"{type(exc).__name__}: {exc}"
            timeline.add(f"the rehearsal failed: {crashed}")
            result.notes.append(traceback.format_exc(limit=6))
        finally:
            r.undo_faults()
            self._finish_held(r)
        if skipped:
            self.say(f"  skipped: {skipped}")
            result.verdict, result.reasons = "skipped", [skipped]
            return result
        if self.stopping:
            # Stopped by the operator: its faults are undone; it is not judged, nor waited for.
            crashed = crashed or "stopped by the operator"
            restored = self.observe(r.ended_at or self.load.now())
        else:
            restored = self._await_steady(r.ended_at or self.load.now(),
                                          timeout=self.gameday.restore_timeout)
        result.steady_after = restored.to_dict()
        self._judge(r, result, restored, crashed, start)
        if result.verdict == "unsafe" and not restored.holds:
            result.reset = self._reset(baseline)
        self.say(f"  {result.verdict}: {result.actual}"
                 + (f" — {'; '.join(result.reasons)}" if result.reasons else ""))
        return result

    def _finish_held(self, r: Rehearsal) -> None:
        if r.held:
            r.wait_held()

    def _await_steady(self, since: float, *, timeout: float) -> Observation:
        """The first observation where the steady state holds again (or the last one)."""
        assert self.load is not None
        deadline = time.monotonic() + timeout
        while True:
            obs = self.observe(since)
            if obs.holds or time.monotonic() >= deadline or self.stopping:
                return obs
            time.sleep(0.5)

    def _judge(self, r: Rehearsal, result: ScenarioResult, after: Observation, crashed: str,
               start: float) -> None:
        assert self.load is not None
        scenario = r.scenario
        result.actual = r.actual()
        result.exit_code = r.exit_code
        result.recovery = r.recovery
        result.overrides = r.overrides
        result.faults = [f"{d} (undone)" for d in r.undone] + [f"{d} (NOT undone)" for d in r.undo_failed]
        result.deployments = list(dict.fromkeys(r.uids))
        named = {line.split(" ", 1)[0] for line in (r.outcome.out_of_service if r.outcome else [])}
        unnamed = ([n for n in (r.left_out_at_outcome or []) if n not in named]
                   if r.outcome is not None else [])
        result.left_out_named = sorted(named)
        result.left_out_after = after.out_of_service
        journal = self._journal_check(after)
        result.journal_consistent = not journal
        result.journal_differences = journal
        never = ""
        if r.injected_at is None:
            never = f"{result.point} was not reached" + (
                f" ({'; '.join(r.inject_errors)})" if r.inject_errors else "")
        result.verdict, result.reasons = decide(
            crashed=crashed, never_injected=never,
            wrong=scenario.judge(r) if not crashed and not never else [],
            unnamed=unnamed, undo_failed=r.undo_failed, after=after.problems, journal=journal,
            restore_timeout=self.gameday.restore_timeout)
        # Times, from the fault going in.
        if r.injected_at is not None:
            for w in r.watches:
                heard = w.first_after(r.injected_at, scenario.detects)
                if heard is not None:
                    r.detected(heard.at, describe_event(heard.event))
            if r.detected_at is not None:
                result.detected_s = round(r.detected_at - r.injected_at, 2)
                result.detected_by = r.detected_by
            if after.holds:
                result.restored_s = round(after.monotonic - r.injected_at, 2)
        end = after.monotonic
        result.requests = self.load.count(start, end, long_lived=False).to_dict()
        if r.long_lived is not None:
            result.long_lived = r.long_lived.to_dict()
        result.timeline = self._timeline(r)
        result.evidence = self._evidence(r)

    def _journal_check(self, after: Observation) -> list[str]:
        journal = self.reader().journal
        names = [n.name for n in after.nodes]
        claims, live, abandoned = journal_claims(journal, self.env_name, names)
        left = left_out_by_deployer(journal, self.env_name, names)
        return journal_differences(claims, live, abandoned, after, left_out=left)

    def _timeline(self, r: Rehearsal) -> list[dict[str, Any]]:
        for w in r.watches:
            for heard in w.events():
                line = describe_event(heard.event)
                if line:
                    r.timeline.add(line, heard.at)
        return r.timeline.to_list()

    def _evidence(self, r: Rehearsal) -> dict[str, Any]:
        """What is left to show what happened: the deployments in the journal, and every event
        heard (JSON lines beside the report)."""
        journal = self.reader().journal
        found = [d for uid in dict.fromkeys(r.uids) if (d := journal.find(uid, self.env_name))]
        recorded = [d.uid for d in found]
        events = [h.event for w in r.watches for h in w.events()]
        records: dict[str, str] = {}
        for d in found:
            row = journal.evidence(d.id)
            records[d.uid] = ("missing" if row is None else
                              f"signed (key {row.key_id})" if row.signature else "unsigned")
        evidence: dict[str, Any] = {"journal": recorded, "records": records, "events": None}
        if self.report_dir is not None and events:
            self.report_dir.mkdir(parents=True, exist_ok=True)
            path = self.report_dir / f"{r.scenario.name}.events.jsonl"
            path.write_text("".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in events))
            evidence["events"] = path.name
        return evidence

    def _reset(self, baseline: str) -> list[str]:
        """After an unsafe scenario, put the environment back for the next one (best effort,
        outside what is measured): recover, then roll back to ``baseline``."""
        done: list[str] = []
        wired = self.wired()
        try:
            with contextlib.suppress(DeployerError):
                recover(list(wired.fleets.values()), wired.journal, wired.lock,
                        env_name=self.env_name, app=self.env.app.name,
                        command="deployer gameday: reset", say=done.append)
        finally:
            wired.close()
        wired = self.wired()
        try:
            outcome = wired.lifecycle.deploy(baseline, kind="rollback",
                                             extra_details={"gameday": "reset"})
            done.append(f"rolled back to {baseline}: {outcome.status}")
        except DeployerError as exc:
            done.append(f"rolling back to {baseline} failed: {exc.message}")
        finally:
            wired.close()
        self.say("  reset: " + "; ".join(done))
        return done
