"""The fakes deployer's unit tests use, one per seam, and the scripts they replay.

Each stands in for the real thing at one boundary and applies the real rules where there are
any (the lock's fake decides with the lock program's own function):

- :class:`ReplayRunner` — the runner seam: replays recorded ansible-runner events, one script
  per expected run (like an HTTP client's mock transport); :func:`survey`,
  :func:`good_batch`, :func:`bad_batch`, :func:`revert_batch` write such scripts;
- :class:`FakeLoadBalancer` — the load-balancer seam: servers and routing maps in memory, every
  change recorded, and HAProxy's ``show stat`` counters for a soak's metric source;
- :class:`FakeLockHost` — where a deployment lock (and the environment's freeze) lives, in
  memory, with a clock moved by hand;
- :class:`FakeChangeProvider` — change records of a change-management system, in memory, every
  update recorded (the real client is tested against an HTTP server on loopback);
- :class:`FakePointer` — an environment's desired-version pointer and the status beside it;
- :class:`FakeSource` — a metric source of the soak analysis, with scripted measurements;
- :class:`FakeClock` — the analysis clock, which moves only when something waits.

The real things are tested on the lab (tests/e2e).
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import _errors
from ._resources import content_dir
from .adapters import _lock_program
from .adapters.loadbalancer import ADMIN_STATES, ServerState
from .adapters.runner import CancelCheck, EventSink, RunnerEvent, RunRequest, RunResult, hosts_with
from .agent._pointer import Desired, PointerValue
from .analysis._model import Measurement
from .gates.changes import ChangeRecord

__all__ = [
    "FakeChangeProvider",
    "FakeClock",
    "FakeLoadBalancer",
    "FakeLockHost",
    "FakePointer",
    "FakeSource",
    "ReplayRunner",
    "bad_batch",
    "ev",
    "good_batch",
    "revert_batch",
    "stats",
    "survey",
]

# A scripted value: a constant Measurement, or a function of (time since the first collect,
# group, window) returning one.
Script = Measurement | Callable[[float, str, float], Measurement]


class ReplayRunner:
    """A fake :class:`Runner` that replays recorded events, one script per expected run.

    Each script is ``(playbook, events, status)``; hosts in the request filter the events so one
    recording can serve several batches. Requests are kept in ``self.requests`` for assertions.
    With ``lb``, the load-balancer role's drains and enables are applied to that fake load
    balancer as the events replay (as the real role does on HAProxy), so a run cut short leaves
    it as a real one would be.

    A run of ``rollout.yml`` (a deployment's one run) plays the gates' part as the play does:
    it replays the next script (a ``prestage.yml`` one) for its pre-staging, then, with the hosts
    left, connects to the controller's gate named in the request's variables, with the gate's
    own client (``ask`` of the ``deployer_batch_gate`` action plugin), and waits for the plan's
    go; it reads the plan's file (kept in ``self.plans``) and, at each batch of the plan, asks
    the gate again; each batch the gate lets go replays the next script (a
    ``deploy_batch.yml`` one: the same tasks) on the hosts it was given
    (:meth:`play_batch`, which tests override to act in the middle of a batch). The hosts of
    every batch let go are kept in ``self.batches``. As Ansible does, the play ends after a batch
    in which a host failed, or every host was unreachable.
    """

    def __init__(
        self, scripts: Iterable[tuple[str, Sequence[RunnerEvent], str]], *,
        lb: FakeLoadBalancer | None = None,
    ) -> None:
        self.scripts = list(scripts)
        self.requests: list[RunRequest] = []
        self.lb = lb
        # Set by kill(): the deploying process died; nothing more happens on the nodes.
        self.killed = threading.Event()
        # Dies (kill()) right after replaying the first event this says yes to.
        self.die_after: Callable[[RunnerEvent], bool] | None = None
        self.batches: list[list[str]] = []
        # What each gate was answered: ("go", hosts) or ("stop", reason); the plan's gate first.
        self.gate_answers: list[tuple[str, Any]] = []
        # The plans a rollout's run read (its plan's file, once its plan's gate said go), in
        # order, and by the run's place in ``self.requests``.
        self.plans: list[dict[str, Any]] = []
        self.plan_of: dict[int, dict[str, Any]] = {}

    @classmethod
    def from_file(cls, path: Path) -> ReplayRunner:
        data = json.loads(path.read_text())
        return cls(
            (s["playbook"], [RunnerEvent.from_dict(e) for e in s["events"]], s["status"])
            for s in data
        )

    def run(self, request: RunRequest, on_event: EventSink, cancelled: CancelCheck) -> RunResult:
        self.requests.append(request)
        if request.playbook == "rollout.yml":
            return self._rollout(request, on_event, cancelled)
        return self._replay(self._next(request.playbook, list(request.hosts)), request.hosts,
                            on_event, cancelled,
                            backend=str(request.extravars.get("deployer_lb_backend", "")))

    def _next(self, playbook: str | tuple[str, ...], hosts: Sequence[str]) -> RunScript:
        expected = (playbook,) if isinstance(playbook, str) else playbook
        if not self.scripts:
            raise AssertionError(f"unexpected run of {expected[0]} on {list(hosts)}")
        script = self.scripts.pop(0)
        if script[0] not in expected:
            raise AssertionError(f"expected a run of {script[0]}, got {expected[0]} on {list(hosts)}")
        return (script[0], list(script[1]), script[2])

    def _replay(self, script: RunScript, hosts: Sequence[str], on_event: EventSink,
                cancelled: CancelCheck, *, within: bool = False, backend: str = "",
                counted: bool = False) -> RunResult:
        _, events, status = script
        wanted = set(hosts)
        failed: set[str] = set()
        dark: set[str] = set()
        for ev in events:
            if self.killed.is_set():
                return RunResult(status="failed", rc=-9, error="killed")
            if cancelled():
                return RunResult(status="canceled", rc=-1)
            if ev.host is not None and wanted and ev.host not in wanted:
                continue
            state = {"drain": "maint", "enable": "ready"}.get(ev.task_file or "")
            if self.lb is not None and ev.host and ev.role == "deployer_lb_haproxy" and state \
                    and ev.kind == "task_start" and backend:
                self.lb.set_state(backend, ev.host, state)
            if self.die_after is not None and self.die_after(ev):
                on_event(ev)
                self.kill()
                return RunResult(status="failed", rc=-9, error="killed")
            if ev.kind == "stats":
                if within and not counted:  # a batch of a longer run: its stats come at its end
                    continue
                if not within:
                    on_event(ev)
                stats = {k: {h: n for h, n in v.items() if not wanted or h in wanted}
                         for k, v in ev.facts.items()}
                failed, dark = (set(hosts_with(stats, k)) for k in ("failures", "dark"))
                break
            on_event(ev)
            if ev.host is None:
                continue
            if ev.kind == "failed" and not ev.ignore_errors:
                failed.add(ev.host)
            elif ev.kind == "unreachable":
                dark.add(ev.host)
        return RunResult(
            status=status, rc=0 if status == "successful" else 2,
            failed_hosts=frozenset(failed), unreachable_hosts=frozenset(dark),
        )

    def kill(self) -> None:
        """The deploying process and its playbook runs die now (SIGKILL): the runs stop where
        they are, nothing more reaches the nodes or the load balancer."""
        self.killed.set()

    def play_batch(self, request: RunRequest, hosts: Sequence[str], on_event: EventSink,
                   cancelled: CancelCheck) -> RunResult:
        """One batch of a ``rollout.yml`` run, let go on ``hosts``: the next script's events."""
        return self._replay(self._next(("deploy_batch.yml", "rollout.yml"), hosts), hosts,
                            on_event, cancelled, within=True,
                            backend=str(request.extravars.get("deployer_lb_backend", "")))

    def _rollout(self, request: RunRequest, on_event: EventSink, cancelled: CancelCheck) -> RunResult:
        ask, closed = _gate_client()
        place = len(self.requests) - 1
        gate = str(request.extravars["deployer_gate_socket"])
        everyone = [str(h) for h in request.hosts]
        backend = str(request.extravars.get("deployer_lb_backend", ""))
        # Pre-staging: the next script (a prestage.yml one), its own count of failed hosts too;
        # the run goes on with the hosts left.
        staged = self._replay(self._next("prestage.yml", everyone), everyone, on_event, cancelled,
                              within=True, counted=True, backend=backend)
        if staged.status == "canceled" or self.killed.is_set():
            return staged
        failed, dark = set(staged.failed_hosts), set(staged.unreachable_hosts)
        alive = [h for h in everyone if h not in failed | dark]

        def end() -> RunResult:
            on_event(stats([h for h in everyone if h not in failed | dark], failed=sorted(failed),
                           dark=sorted(dark)))
            ok = not failed and not dark
            return RunResult(status="successful" if ok else "failed", rc=0 if ok else 2,
                             failed_hosts=frozenset(failed - dark), unreachable_hosts=frozenset(dark))

        def go(batch: list[str], task: str) -> list[str] | None:
            """Ask the gate for ``batch``: the hosts it lets go, or None when the play ends (told
            to stop, or the gate failed: run_once, on every host of the batch)."""
            on_event(RunnerEvent(kind="gate", task=task))
            try:
                answer = ask(gate, {"batch": batch, "failed": sorted(failed | dark)})
            except closed as exc:
                on_event(ev("failed", batch[0], message=f"no go from the controller: {exc}"))
                failed.update(batch)
                return None
            if answer["decision"] != "go":
                self.gate_answers.append(("stop", answer.get("reason", "")))
                return None
            hosts = [str(h) for h in answer["hosts"]]
            self.gate_answers.append(("go", hosts))
            return hosts

        # The plan's gate, then the plan's file, as the play reads it.
        if not alive or go(alive, "Wait for the controller's plan") is None:
            return end()
        plan = json.loads(Path(str(request.extravars["deployer_rollout_plan"])).read_text())
        self.plans.append(plan)
        self.plan_of[place] = plan
        order = [str(h) for h in plan["deployer_rollout_hosts"]]
        for size in [int(n) for n in plan["deployer_batch_sizes"]] if order else []:
            batch, order = order[:size], order[size:]
            hosts = go(batch, "Wait for the controller's go")
            if hosts is None:
                break
            if not hosts:
                continue
            self.batches.append(hosts)
            result = self.play_batch(request, hosts, on_event, cancelled)
            if result.status == "canceled" or self.killed.is_set():
                return result
            failed |= result.failed_hosts
            dark |= result.unreachable_hosts
            if result.failed_hosts or set(hosts) <= result.unreachable_hosts:
                break  # max_fail_percentage: 0, or the whole batch unreachable
        return end()


def _gate_client() -> tuple[Callable[[str, Mapping[str, Any]], dict[str, Any]], type[Exception]]:
    """The gate's own client, from the action plugin the play runs."""
    global _GATE_MODULE
    if _GATE_MODULE is None:
        path = content_dir() / "playbooks" / "action_plugins" / "deployer_batch_gate.py"
        spec = importlib.util.spec_from_file_location("_deployer_batch_gate", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _GATE_MODULE = module
    return _GATE_MODULE.ask, _GATE_MODULE.GateClosed


_GATE_MODULE: ModuleType | None = None


class FakeLoadBalancer:
    """A load balancer in memory, for tests at the seam: servers UP unless told otherwise,
    every change recorded in ``changes``; ``unreadable`` makes every read fail."""

    def __init__(
        self, backend: str, servers: Iterable[str] = (), *, where: str = "fake", unreadable: str = ""
    ) -> None:
        self.backend = backend
        self.admin = dict.fromkeys(servers, "ready")
        self.status = dict.fromkeys(self.admin, "UP")
        self.changes: list[tuple[str, str]] = []
        self.unreadable = unreadable
        self._where = where
        self.maps: dict[str, dict[str, str]] = {}
        self.backends: dict[str, dict[str, str]] = {}
        # HAProxy's answer counters per server, as `show stat` reports them: each read of
        # `show stat` first adds `traffic[server]` = (answers, of which 5xx) to them, as if
        # that much traffic had arrived since the last read.
        self.traffic: dict[str, tuple[int, int]] = {}
        self._answers: dict[str, list[int]] = {}

    @property
    def where(self) -> str:
        return self._where

    def add_backend(self, backend: str, servers: Iterable[str]) -> None:
        """Another backend (e.g. a second leg), its servers UP and ready."""
        self.backends[backend] = dict.fromkeys(servers, "ready")

    def servers(self, backend: str) -> dict[str, ServerState]:
        if self.unreadable:
            raise _errors.LoadBalancerError(
                f"cannot reach the load balancer at {self.where}: {self.unreadable}")
        if backend in self.backends:
            return {
                name: ServerState(backend=backend, server=name, status="MAINT" if a == "maint" else "UP",
                                  admin=a, sessions=0)
                for name, a in self.backends[backend].items()
            }
        if backend != self.backend:
            raise _errors.LoadBalancerError(f"{self.where} has no backend named {backend!r}")
        return {
            name: ServerState(
                backend=backend, server=name,
                status="MAINT" if admin == "maint" else self.status[name], admin=admin, sessions=0,
            )
            for name, admin in self.admin.items()
        }

    def set_state(self, backend: str, server: str, state: str) -> None:
        if state not in ADMIN_STATES:
            raise ValueError(state)
        if backend in self.backends:
            self.backends[backend][server] = state
        else:
            self.admin[server] = state
        self.changes.append((server, state))

    def route(self, map_file: str, key: str) -> str | None:
        return self.maps.get(map_file, {}).get(key)

    def command(self, line: str) -> str:
        """The runtime API, as far as a soak's HAProxy source asks it: ``show stat``."""
        if self.unreadable:
            raise _errors.LoadBalancerError(
                f"cannot reach the load balancer at {self.where}: {self.unreadable}")
        if line.strip() != "show stat":
            raise _errors.LoadBalancerError(f"{self.where}: unknown command {line!r}")
        rows = ["# pxname,svname,scur,stot,econ,eresp,status,check_status,hrsp_1xx,hrsp_2xx,"
                "hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,rtime,"]
        backends = {self.backend: self.admin, **self.backends}
        for backend, servers in backends.items():
            for server, admin in servers.items():
                added, errors = self.traffic.get(server, (0, 0))
                counts = self._answers.setdefault(server, [0, 0])
                counts[0] += added - errors
                counts[1] += errors
                status = "MAINT" if admin == "maint" else self.status.get(server, "UP")
                rows.append(f"{backend},{server},0,{sum(counts)},0,0,{status},L7OK,0,{counts[0]},"
                            f"0,0,{counts[1]},0,5,")
        return "\n".join(rows) + "\n"

    def set_route(self, map_file: str, key: str, backend: str) -> None:
        self.maps.setdefault(map_file, {})[key] = backend
        self.changes.append((f"{map_file}:{key}", backend))


class FakeLockHost:
    """A lock host in memory, with the lock program's own rules (:func:`decide`) and a clock
    tests move by hand; ``unreachable = True`` makes every call fail as an unreachable host."""

    def __init__(self, *, now: float = 1_000_000.0, where: str = "fake:/locks") -> None:
        self.now = now
        self.records: dict[str, dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.unreachable = False
        self._where = where
        self._mutex = threading.Lock()

    @property
    def where(self) -> str:
        return self._where

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._mutex:
            self.requests.append(request)
            if self.unreachable:
                raise _errors.LockError(f"cannot reach the lock at {self.where}: connection timed out")
            env = request["env"]
            if request.get("op") in _lock_program.FREEZE_OPS:  # the freeze, beside the lock
                env = f"{env}.freeze"
                decide = _lock_program.decide_freeze
            else:
                decide = _lock_program.decide
            changed, record, answer, log = decide(self.records.get(env), request, self.now)
            if request.get("op") == "renew":  # as the lock program: the freeze, in the same answer
                answer["freeze"] = self.records.get(f"{env}.freeze")
            if changed:
                if record is None:
                    self.records.pop(env, None)
                else:
                    self.records[env] = record
            if log is not None:
                self.log.append(log)
            copied: dict[str, Any] = json.loads(json.dumps(answer))  # as if it crossed a wire
            return copied


class FakeChangeProvider:
    """Change records in memory, by number; ``updates`` keeps every write (sys_id, fields);
    ``unreachable`` makes every call fail as an unreachable API does."""

    where = "fake change API"

    def __init__(self, records: Iterable[ChangeRecord] = ()) -> None:
        self.records = {r.number: r for r in records}
        self.updates: list[tuple[str, dict[str, str]]] = []
        self.unreachable = False

    def _reach(self) -> None:
        if self.unreachable:
            raise _errors.GateRefused("cannot reach the change API (GET fake): timed out",
                                      gate="change")

    def read(self, number: str) -> ChangeRecord | None:
        self._reach()
        return self.records.get(number)

    def update(self, sys_id: str, fields: Mapping[str, str]) -> None:
        self._reach()
        self.updates.append((sys_id, dict(fields)))


class FakePointer:
    """The pointer seam in memory: each write gives a new revision (as SSM's parameter
    versions do); every write is kept (``writes``, ``status_writes``); ``unreadable`` makes
    every read fail as an unreachable pointer would."""

    def __init__(self, text: str | None = None) -> None:
        self.text = text
        self.revision = 1 if text is not None else 0
        self.status: str | None = None
        self.writes: list[str] = []
        self.status_writes: list[str] = []
        self.unreadable = ""

    @property
    def where(self) -> str:
        return "fake:pointer"

    @property
    def status_where(self) -> str:
        return "fake:status"

    def _check(self) -> None:
        if self.unreadable:
            raise _errors.PointerError(f"pointer {self.where}: cannot read it: {self.unreadable}")

    def read(self) -> PointerValue | None:
        self._check()
        return None if self.text is None else PointerValue(self.text, str(self.revision))

    def write(self, text: str) -> str:
        self.text = text
        self.revision += 1
        self.writes.append(text)
        return str(self.revision)

    def read_status(self) -> str | None:
        self._check()
        return self.status

    def write_status(self, text: str) -> None:
        self.status = text
        self.status_writes.append(text)

    def set(self, version: str, *, reason: str = "", requester: str = "test") -> str:
        """Write ``version`` as ``deployer pointer set`` does; its revision."""
        return self.write(Desired(version=version, reason=reason, requester=requester).to_text())


class FakeSource:
    """A metric source whose measurements are scripted: ``FakeSource({"errors": script})``.

    ``fail_collect`` makes :meth:`collect` raise (to test unreachable sources). ``collects``
    counts the calls; ``t`` is the time since the first one.
    """

    def __init__(
        self,
        scripts: Mapping[str, Script],
        *,
        name: str = "fake",
        fail_collect: Exception | None = None,
    ) -> None:
        self._name = name
        self._scripts = dict(scripts)
        self.fail_collect = fail_collect
        self.collects = 0
        self.t = 0.0
        self._t0: float | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def indicators(self) -> frozenset[str]:
        return frozenset(self._scripts)

    def collect(self, now: float) -> None:
        with self._lock:
            if self.fail_collect is not None:
                raise self.fail_collect
            if self._t0 is None:
                self._t0 = now
            self.t = now - self._t0
            self.collects += 1

    def measure(self, indicator: str, *, group: str = "all", window: float) -> Measurement:
        script = self._scripts[indicator]
        if isinstance(script, Measurement):
            return script
        with self._lock:
            t = self.t
        return script(t, group, window)


class FakeClock:
    """A clock for tests: time moves only when someone waits (instantly), or on :meth:`advance`."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._t = start
        self._offset = wall - start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def wall(self) -> float:
        with self._lock:
            return self._t + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += max(0.0, seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.advance(seconds)
        time.sleep(0.0005)  # let the other threads of a soak run
        return event.is_set()


# -- scripts for the ReplayRunner ---------------------------------------------------------------


def ev(kind: str, host: str | None, role: str | None = None, file: str | None = None, *,
       message: str = "", facts: Mapping[str, Any] | None = None,
       result: Mapping[str, Any] | None = None, task: str = "") -> RunnerEvent:
    """One runner event: ``ev("task_start", "node1", "deployer_release", "activate")``."""
    return RunnerEvent(kind=kind, host=host, role=role, task_file=file, message=message,
                       facts=dict(facts or {}), result=dict(result or {}), task=task)


def stats(ok: Sequence[str], failed: Sequence[str] = (), dark: Sequence[str] = ()) -> RunnerEvent:
    """The end of a run: which hosts were fine, failed, or could not be reached."""
    return RunnerEvent(kind="stats", facts={
        "ok": {h: 3 for h in ok}, "failures": {h: 1 for h in failed}, "dark": {h: 1 for h in dark},
    })


RunScript = tuple[str, list[RunnerEvent], str]


def survey(
    current: Mapping[str, str], healthy: Mapping[str, bool] | None = None, *,
    extra: Sequence[RunnerEvent] = (), failed: Sequence[str] = (), playbook: str = "prestage.yml",
    hooks: Sequence[str] = (),
) -> RunScript:
    """A prestage.yml run (or probe.yml, which stages nothing): prestage.yml first names the nodes
    with an activation hook (``hooks``), once for the fleet; each node reports its releases and
    health, then stages."""
    events: list[RunnerEvent] = []
    if playbook == "prestage.yml" and current:
        events.append(ev("ok", next(iter(current)),
                         facts={"deployer_nodes_with_activation_hooks": list(hooks)}))
    for host, version in current.items():
        events.append(ev("ok", host, "deployer_release", "facts",
                         facts={"deployer_release_current": version, "deployer_release_previous": ""}))
        ok = (healthy or {}).get(host, bool(version))
        events.append(ev("ok", host, "deployer_smoke", "probe", result={"healthy": ok}))
        if playbook == "prestage.yml":
            events.append(ev("task_start", host, "deployer_release", "stage"))
    events += list(extra)
    events.append(stats([h for h in current if h not in failed], failed=failed))
    return (playbook, events, "failed" if failed else "successful")


def good_batch(hosts: Sequence[str], playbook: str = "deploy_batch.yml") -> RunScript:
    """A batch whose every node is drained, switched, smoked and put back."""
    events = []
    for role, file in [("deployer_lb_haproxy", "drain"), ("deployer_release", "activate"),
                       ("deployer_smoke", "main"), ("deployer_lb_haproxy", "enable")]:
        events += [ev("task_start", h, role, file) for h in hosts]
    return (playbook, [*events, stats(hosts)], "successful")


def bad_batch(host: str) -> RunScript:
    """A batch of one node that fails its smoke check and is reverted by the playbook."""
    events = [
        ev("task_start", host, "deployer_lb_haproxy", "drain"),
        ev("task_start", host, "deployer_release", "activate"),
        ev("task_start", host, "deployer_smoke", "main"),
        ev("failed", host, "deployer_smoke", "main", message="GET /health answered 503"),
        ev("ok", host, facts={"deployer_node_outcome": "reverting"}),
        ev("task_start", host, "deployer_release", "revert"),
        ev("task_start", host, "deployer_smoke", "main"),
        ev("task_start", host, "deployer_lb_haproxy", "enable"),
        ev("ok", host, facts={"deployer_node_outcome": "reverted"}),
        ev("failed", host, message="reverted after a failed smoke check"),
    ]
    return ("deploy_batch.yml", [*events, stats([host], failed=[host])], "failed")


def revert_batch(hosts: Sequence[str]) -> RunScript:
    """A revert.yml run putting ``hosts`` back on their earlier release."""
    events = []
    for role, file in [("deployer_lb_haproxy", "drain"), ("deployer_release", "revert"),
                       ("deployer_smoke", "main"), ("deployer_lb_haproxy", "enable")]:
        events += [ev("task_start", h, role, file) for h in hosts]
    return ("revert.yml", [*events, stats(hosts)], "successful")
