"""A deployment's one Ansible run: ``playbooks/rollout.yml`` pre-stages every node, then waits at
a gate for the controller's plan, then runs the plan's batches, each held at its own gate (see
:mod:`deployer.adapters.batch_gate`).

An ``ansible-playbook`` start-up costs more than a node's whole deployment on a small controller:
a deployment pays for one. :class:`GatedRollout` is started by the preflight's reading, as the
runner :meth:`Fleet.survey <deployer.engine.fleet.Fleet.survey>` reads the nodes with: the run
pre-stages every node, and its part up to the plan's gate is the survey's run (its events, and
how it went). The run then waits at that gate while the controller makes its plan and passes its
safe point before the first step; :meth:`GatedRollout.start` writes the plan to the run's plan
file (a vars file of the batches' play: the targets in order, the batch sizes, what each target
ran before) and lets it go. For each batch, the strategy reaches its safe point and reads the load
balancer as before (:meth:`Rollout.check_batch`), then :meth:`GatedRollout.run_batch` answers the
batch's gate with the nodes to run and waits until the run reaches the next gate (or ends): the
events heard meanwhile are the batch's, and make its :class:`RunResult`, which settles the
batch's nodes exactly as a batch's own run would.

Every event of the run is handed to the engine in the caller's thread (the journal, the tracker
and the soak are not shared with the runner's thread), and a gate counts as reached only once
the run's events have caught up with it (the play announces the gate's task before the task
asks): the part before it is then fully heard. While it pre-stages, the operator's first stop
cancels the run (nothing has left the load balancer); from the plan's gate on, only an abort does:
a stop is the safe points' to make.

Leaving the ``with`` block ends the run: a gate waiting for an answer is told to stop (the play
ends, nothing more leaves the load balancer; at the plan's gate, before anything did); a run not
at a gate — pre-staging, or in the middle of a batch after a crash here — is cancelled, as a
batch's own run would be. Either way the events it sent until then are heard before the block is
left.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .._errors import DeploymentFailed
from ..adapters.batch_gate import GateRequest, GateServer
from ..adapters.runner import CancelCheck, EventSink, Runner, RunnerEvent, RunRequest, RunResult
from .events import BatchStarted
from .plan import Batch, Plan
from .rollout import Rollout
from .states import NodePhase

__all__ = ["GatedRollout", "GatedRun"]

_EVENT, _GATE, _END = "event", "gate", "end"


class GatedRun:
    """One run with batch gates, in a background thread; what it reports is handed over in the
    thread that calls :meth:`wait_gate`, :meth:`batch_result` and :meth:`finish`."""

    def __init__(self, runner: Runner, request: Callable[[GateServer], RunRequest],
                 on_event: EventSink, cancelled: CancelCheck) -> None:
        self._runner = runner
        # Who hears the events, and what cancels the run: the caller may change them between
        # gates (pre-staging's, then the rollout's).
        self.on_event = on_event
        self.cancelled = cancelled
        self._cancel = threading.Event()
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._server = GateServer(lambda gate: self._queue.put((_GATE, gate)))
        self.request = request(self._server)
        self.gates: list[GateRequest] = []
        self._announced = 0  # gates the run's events have announced
        self.result: RunResult | None = None
        # Hosts that failed or were unreachable since the last gate was answered.
        self._failed: set[str] = set()
        self._dark: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="rollout-run", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            result = self._runner.run(self.request, lambda ev: self._queue.put((_EVENT, ev)),
                                      lambda: self._cancel.is_set() or self.cancelled())
        except Exception as exc:  # the engine hears of it as the run's end
            result = RunResult(status="error", rc=-1, error=f"the rollout's run crashed: {exc}")
        self._queue.put((_END, result))

    # -- what the run reports, heard in the caller's thread -------------------------------

    def _pump(self, done: Callable[[], bool]) -> None:
        while not done():
            self._take(*self._queue.get())

    def _take(self, kind: str, item: Any) -> None:
        if kind == _EVENT:
            self._heard(item)
        elif kind == _GATE:
            self.gates.append(item)
        else:
            self.result = item

    def catch_up(self) -> None:
        """Hear what the run has reported so far, without waiting for more."""
        while True:
            try:
                self._take(*self._queue.get_nowait())
            except queue.Empty:
                return

    def _heard(self, ev: RunnerEvent) -> None:
        if ev.kind == "gate":
            self._announced += 1
            return
        if ev.host is not None:
            if ev.kind == "failed" and not ev.ignore_errors:
                self._failed.add(ev.host)
            elif ev.kind == "unreachable":
                self._dark.add(ev.host)
        self.on_event(ev)

    def _reached(self, index: int) -> bool:
        return self.result is not None or (len(self.gates) >= index and self._announced >= index)

    def wait_gate(self, index: int) -> GateRequest | None:
        """The gate of batch ``index`` (1-based) once reached and every event before it heard;
        None when the run ended before it."""
        self._pump(lambda: self._reached(index))
        if len(self.gates) >= index and self._announced >= index:
            return self.gates[index - 1]
        return None

    def result_before(self, gate: GateRequest) -> RunResult:
        """How the run went before its first gate (``gate``, reached): the hosts that failed or
        were unreachable on the way (Ansible's own count of failed hosts too)."""
        dark = set(self._dark)
        told = set(gate.failed)
        if self.request.hosts:  # the gate's play names its hosts by group: only the run's count
            told &= set(self.request.hosts)
        failed = (self._failed | told) - dark
        ok = not failed and not dark
        return RunResult(status="successful" if ok else "failed", rc=0 if ok else 2,
                         failed_hosts=frozenset(failed), unreachable_hosts=frozenset(dark))

    def batch_result(self, index: int, hosts: Sequence[str]) -> RunResult:
        """After batch ``index``'s gate said go to ``hosts``: wait for the next gate (or the
        run's end) and say how the batch went."""
        self._failed.clear()
        self._dark.clear()
        self._pump(lambda: self._reached(index + 1))
        batch = set(hosts)
        failed, dark = self._failed & batch, self._dark & batch
        if self.result is not None and not self._reached_gate(index + 1):
            # The run ended with this batch: its own stats have the last word. A cancelled run
            # has none, and what its events said last of the hosts in flight is the cancel's
            # doing (a task cut short reports a failure): they stay in the phase it found them
            # in, as a batch's own run left them.
            end = self.result
            if end.status in ("canceled", "timeout"):
                failed, dark = set(), set()
            failed |= end.failed_hosts & batch
            dark |= end.unreachable_hosts & batch
            return RunResult(status=end.status, rc=end.rc, failed_hosts=frozenset(failed - dark),
                             unreachable_hosts=frozenset(dark), error=end.error)
        gate = self.gates[index]
        # Hosts Ansible counts as failed that no event named (it has the last word too).
        failed |= (set(gate.failed) & batch) - dark
        ok = not failed and not dark
        return RunResult(status="successful" if ok else "failed", rc=0 if ok else 2,
                         failed_hosts=frozenset(failed), unreachable_hosts=frozenset(dark))

    def _reached_gate(self, index: int) -> bool:
        return len(self.gates) >= index and self._announced >= index

    def finish(self, *, cancel: bool) -> RunResult:
        """End the run (cancelled when ``cancel``; gates still waiting are closed, which fails
        them), hear the rest of its events and return how it ended."""
        if cancel:
            self._cancel.set()
        if cancel or self.result is not None:
            self._server.close()
        self._pump(lambda: self.result is not None)
        self._server.close()
        self._thread.join(timeout=10)
        assert self.result is not None
        return self.result


class GatedRollout:
    """A deployment's one run (see the module documentation): the runner its preflight reads
    the nodes with (:meth:`run`, pre-staging up to the plan's gate), then the plan's batches
    (:meth:`start`, then :meth:`run_batch` for each, which is
    :meth:`Rollout.run_batch <deployer.engine.rollout.Rollout.run_batch>`'s counterpart). A
    context manager: leaving it ends the run."""

    def __init__(self, rollout: Rollout) -> None:
        self.rollout = rollout
        self.plan: Plan | None = None
        self.total = 0
        self._run: GatedRun | None = None
        self._plan_file: Path | None = None
        # How the run ended before the plan's gate, when it did.
        self._ended: RunResult | None = None

    def __enter__(self) -> GatedRollout:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        run.catch_up()  # a gate that has asked already is told to stop, not closed
        pending = [g for g in run.gates if not g.answered]
        for gate in pending:
            gate.stop("the controller stops the deployment here")
        # Nothing was drained since the last gate unless a batch is running: a run between its
        # gates is cancelled only when it is not stopped at one (pre-staging, or mid-batch after
        # a crash here).
        run.finish(cancel=not pending and run.result is None)

    # -- pre-staging: the survey's runner -------------------------------------------------

    def run(self, request: RunRequest, on_event: EventSink, cancelled: CancelCheck) -> RunResult:
        """Start the run with pre-staging's ``request`` (prestage.yml's, on the nodes read) and
        return how pre-staging went once the run waits at the plan's gate (or has ended)."""
        rollout = self.rollout

        def whole(server: GateServer) -> RunRequest:
            self._plan_file = server.directory / "plan.json"
            _write_plan(self._plan_file, _NO_PLAN)
            return dataclasses.replace(
                request, playbook="rollout.yml",
                extravars={**request.extravars, "deployer_gate_socket": str(server.path),
                           "deployer_rollout_plan": str(self._plan_file)},
                forks=max(request.forks, rollout.strategy.forks or 1),
            )

        run = self._run = GatedRun(rollout.fleet.runner, whole, on_event, cancelled)
        gate = run.wait_gate(1)
        if gate is None:  # ended before it: there is nothing to go on with
            self._ended = run.finish(cancel=False)
            self._run = None
            return self._ended
        # From here on a stop is the safe points' to make; the rollout's tracker hears the rest.
        run.cancelled = rollout.run.abort.is_set
        run.on_event = rollout.tracker.on_event
        return run.result_before(gate)

    # -- the plan's batches ---------------------------------------------------------------

    def start(self, plan: Plan, *, total: int) -> None:
        """Let the run go on to ``plan``'s batches: the plan written where the batches' play
        reads it, the plan's gate told go with its targets."""
        self.plan, self.total = plan, total
        run = self._run
        if run is None or self._plan_file is None:
            return  # the run has ended: each batch says so
        targets = [n for b in plan.batches for n in b.nodes]
        _write_plan(self._plan_file, self.rollout.rollout_plan(plan))
        gate = run.wait_gate(1)
        if gate is not None:
            gate.go(targets)

    def run_batch(self, batch: Batch) -> RunResult:
        """Drain, switch, restart, smoke and rejoin the batch's nodes: the gate of its batch told
        to go with them; returns once the run has reached the next gate or ended."""
        run = self._run
        if run is None:
            return self._ended_early(self._ended)
        gate = self._gate(batch)
        if gate is None:
            return self._ended_early(run.finish(cancel=False))
        rollout = self.rollout
        rollout.run.publish(BatchStarted(index=batch.index, total=self.total, nodes=list(batch.nodes),
                                         canary=batch.canary, leg=rollout.fleet.leg))
        if not gate.go(batch.nodes):
            return self._ended_early(run.finish(cancel=False))
        result = run.batch_result(batch.index + 1, batch.nodes)
        rollout.tracker.settle(batch.nodes, result, success=NodePhase.DONE)
        return result

    def skip(self, batch: Batch) -> None:
        """Let the run pass a batch none of whose nodes is deployed to any more."""
        run = self._run
        if run is None:
            return
        gate = self._gate(batch)
        if gate is not None and gate.go([]):
            run.batch_result(batch.index + 1, ())

    def _gate(self, batch: Batch) -> GateRequest | None:
        """Batch ``batch.index``'s gate (the run's first gate is the plan's)."""
        run = self._run
        assert run is not None and self.plan is not None
        gate = run.wait_gate(batch.index + 1)
        if gate is None:
            return None
        planned = self.plan.batches[batch.index - 1].nodes
        if gate.batch != planned:  # never expected: the play cut the targets as it was told
            gate.stop("not the plan's batch")
            raise DeploymentFailed(
                f"the rollout's run reached batch {batch.index} with {', '.join(gate.batch) or 'no node'}; "
                f"the plan's batch {batch.index} is {', '.join(planned)}: stopped before it"
            )
        return gate

    @staticmethod
    def _ended_early(end: RunResult | None) -> RunResult:
        if end is None:
            return RunResult(status="failed", rc=-1, error="the rollout's run was not started")
        error = end.error or f"the rollout's run ended ({end.status}) before the batch's gate"
        return RunResult(status="failed" if end.status == "successful" else end.status, rc=end.rc,
                         failed_hosts=end.failed_hosts, unreachable_hosts=end.unreachable_hosts,
                         error=error)


# The plan's file until the controller has made its plan: no target, so no batch runs.
_NO_PLAN: dict[str, Any] = {"deployer_rollout_hosts": [], "deployer_batch_sizes": [1],
                            "deployer_rollout_hooks": True, "deployer_known_releases": {}}


def _write_plan(path: Path, plan: Mapping[str, Any]) -> None:
    """Write the plan's file whole (the play never reads half a file): in the run's private
    directory, 0600 (what each node ran is no secret, but is nobody else's business)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(dict(plan), fh)
    os.replace(tmp, path)
