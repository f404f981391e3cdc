"""A rollout's batches in one Ansible run: ``playbooks/rollout.yml``, held at each batch by a gate
the controller answers (see :mod:`deployer.adapters.batch_gate`).

Running each batch as a run of its own starts a new ``ansible-playbook`` per batch (its start-up
costs more than a node's whole deployment on a small controller). Here one run is started in a
background thread as the steps begin (its start-up overlaps the first safe point) and every
batch of the plan waits at its gate. For each batch, the strategy reaches its safe point and reads
the load balancer as before (:meth:`Rollout.check_batch`), then :meth:`GatedRollout.run_batch`
answers the gate with the nodes to run and waits until the run reaches the next gate (or ends):
the events heard meanwhile are the batch's, and make its :class:`RunResult`, which settles the
batch's nodes exactly as a batch's own run would.

Every event of the run is handed to the engine in the caller's thread (the journal, the tracker
and the soak are not shared with the runner's thread), and a gate counts as reached only once
the run's events have caught up with it (the play announces the gate's task before the task
asks): the batch before it is then fully heard.

Leaving the ``with`` block ends the run: a gate waiting for an answer is told to stop (the play
ends, nothing more leaves the load balancer); a run not at a gate — before its first, or in the
middle of a batch after a crash here — is cancelled, as a batch's own run would be. Either way
the events it sent until then are heard before the block is left.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
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

    def __init__(self, runner: Runner, request: Callable[[str], RunRequest], on_event: EventSink,
                 cancelled: CancelCheck) -> None:
        self._runner = runner
        self._on_event = on_event
        self._cancelled = cancelled
        self._cancel = threading.Event()
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._server = GateServer(lambda gate: self._queue.put((_GATE, gate)))
        self.request = request(str(self._server.path))
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
                                      lambda: self._cancel.is_set() or self._cancelled())
        except Exception as exc:  # the engine hears of it as the run's end
            result = RunResult(status="error", rc=-1, error=f"the rollout's run crashed: {exc}")
        self._queue.put((_END, result))

    # -- what the run reports, heard in the caller's thread -------------------------------

    def _pump(self, done: Callable[[], bool]) -> None:
        while not done():
            kind, item = self._queue.get()
            if kind == _EVENT:
                self._heard(item)
            elif kind == _GATE:
                self.gates.append(item)
            else:
                self.result = item

    def _heard(self, ev: RunnerEvent) -> None:
        if ev.kind == "gate":
            self._announced += 1
            return
        if ev.host is not None:
            if ev.kind == "failed" and not ev.ignore_errors:
                self._failed.add(ev.host)
            elif ev.kind == "unreachable":
                self._dark.add(ev.host)
        self._on_event(ev)

    def _reached(self, index: int) -> bool:
        return self.result is not None or (len(self.gates) >= index and self._announced >= index)

    def wait_gate(self, index: int) -> GateRequest | None:
        """The gate of batch ``index`` (1-based) once reached and every event before it heard;
        None when the run ended before it."""
        self._pump(lambda: self._reached(index))
        if len(self.gates) >= index and self._announced >= index:
            return self.gates[index - 1]
        return None

    def batch_result(self, index: int, hosts: Sequence[str]) -> RunResult:
        """After batch ``index``'s gate said go to ``hosts``: wait for the next gate (or the
        run's end) and say how the batch went."""
        self._failed.clear()
        self._dark.clear()
        self._pump(lambda: self._reached(index + 1))
        batch = set(hosts)
        failed, dark = self._failed & batch, self._dark & batch
        if self.result is not None and not self._reached_gate(index + 1):
            # The run ended with this batch: its own stats have the last word.
            end = self.result
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
    """The batches of one rolling plan through one gated run; a context manager (leaving it ends
    the run, see the module documentation). :meth:`run_batch` is
    :meth:`Rollout.run_batch <deployer.engine.rollout.Rollout.run_batch>`'s counterpart."""

    def __init__(self, rollout: Rollout, plan: Plan, *, total: int) -> None:
        self.rollout = rollout
        self.plan = plan
        self.total = total
        self._run: GatedRun | None = None

    def __enter__(self) -> GatedRollout:
        rollout = self.rollout
        self._run = GatedRun(rollout.fleet.runner, rollout.gated_request(self.plan),
                             rollout.tracker.on_event, rollout.run.abort.is_set)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        pending = [g for g in run.gates if not g.answered]
        for gate in pending:
            gate.stop("the controller stops the rollout here")
        # Nothing was drained since the last gate unless a batch is running: a run between its
        # gates is cancelled only when it is not stopped at one (before its first gate, or mid-
        # batch after a crash here).
        run.finish(cancel=not pending and run.result is None)

    def run_batch(self, batch: Batch) -> RunResult:
        """Drain, switch, restart, smoke and rejoin the batch's nodes: the gate of its batch told
        to go with them; returns once the run has reached the next gate or ended."""
        run = self._run
        assert run is not None
        gate = self._gate(batch)
        if gate is None:
            return self._ended_early(run)
        rollout = self.rollout
        rollout.run.publish(BatchStarted(index=batch.index, total=self.total, nodes=list(batch.nodes),
                                         canary=batch.canary, leg=rollout.fleet.leg))
        if not gate.go(batch.nodes):
            return self._ended_early(run)
        result = run.batch_result(batch.index, batch.nodes)
        rollout.tracker.settle(batch.nodes, result, success=NodePhase.DONE)
        return result

    def skip(self, batch: Batch) -> None:
        """Let the run pass a batch none of whose nodes is deployed to any more."""
        run = self._run
        assert run is not None
        gate = self._gate(batch)
        if gate is not None and gate.go([]):
            run.batch_result(batch.index, ())

    def _gate(self, batch: Batch) -> GateRequest | None:
        run = self._run
        assert run is not None
        gate = run.wait_gate(batch.index)
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
    def _ended_early(run: GatedRun) -> RunResult:
        end = run.finish(cancel=False)
        error = end.error or f"the rollout's run ended ({end.status}) before the batch's gate"
        return RunResult(status="failed" if end.status == "successful" else end.status, rc=end.rc,
                         failed_hosts=end.failed_hosts, unreachable_hosts=end.unreachable_hosts,
                         error=error)
