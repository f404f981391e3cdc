"""A pre-staged rolling deployment runs in one Ansible run: pre-staging, then a gate where the
run waits for the controller's plan, then every batch, each held by the controller's gate. The
replay runner plays the gates' part with the action plugin's own client, against the
controller's real gate server, and reads the plan's file as the play does. Fixtures:
tests/unit/conftest.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import NODES, Deployment

from deployer import DeploymentFailed, Interrupted, LockLostError
from deployer.adapters.batch_gate import GateServer
from deployer.adapters.lock import EnvironmentLock
from deployer.adapters.process import Identity
from deployer.adapters.runner import CancelCheck, EventSink, RunRequest, RunResult, translate
from deployer.engine.events import BatchStarted, NodePhaseChanged, SafePointReached
from deployer.engine.lifecycle import raise_for
from deployer.testing import (
    FakeLoadBalancer,
    FakeLockHost,
    ReplayRunner,
    _gate_client,
    ev,
    good_batch,
    revert_batch,
    survey,
)

Make = Callable[..., Deployment]


def test_every_batch_goes_through_the_gate_in_order_after_its_safe_point(deployment: Make) -> None:
    d = deployment([
        survey(dict.fromkeys(NODES, "1.0.0")),
        good_batch(["node1"]), good_batch(["node2"]), good_batch(["node3"]),
    ])
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    runner = d.runner
    assert [r.playbook for r in runner.requests] == ["rollout.yml"]
    assert list(runner.requests[0].hosts) == NODES  # pre-staging: every node read
    plan = runner.plans[0]
    assert plan["deployer_rollout_hosts"] == NODES
    assert plan["deployer_batch_sizes"] == [1, 1, 1]
    assert plan["deployer_known_releases"]["node2"]["current"] == "1.0.0"
    assert set(plan["deployer_known_releases"]) == set(NODES)
    # The plan's gate, then each batch's.
    assert runner.gate_answers == [("go", NODES), ("go", ["node1"]), ("go", ["node2"]),
                                   ("go", ["node3"])]
    # Each batch's safe point comes before its batch starts, and the batch's nodes are done
    # before the next safe point: as when each batch was a run of its own.
    seen = []
    for p in d.recorder.events:
        e = p.event
        if isinstance(e, SafePointReached) and e.point == "before_batch":
            seen.append(f"point {e.index}")
        elif isinstance(e, BatchStarted):
            seen.append(f"batch {e.index}")
        elif isinstance(e, NodePhaseChanged) and e.phase in ("draining", "done"):
            seen.append(f"{e.node} {e.phase}")
    assert seen == [
        "point 1", "batch 1", "node1 draining", "node1 done",
        "point 2", "batch 2", "node2 draining", "node2 done",
        "point 3", "batch 3", "node3 draining", "node3 done",
    ]
    for node in NODES:
        assert d.phases(outcome, node) == [
            "staging", "staged", "draining", "deploying", "smoke", "rejoining", "done"]


@pytest.mark.parametrize(("hooks", "facts", "imported"), [
    ((), None, False),  # pre-staging heard from every node: no hook anywhere
    (("node2",), None, True),  # one node has a hook: the steps stay in the play for every node
    ((), {"deployer_nodes_with_activation_hooks": "node2"}, True),  # not a list: counts as yes
], ids=["none", "one-node", "unclear"])
def test_the_rollout_leaves_the_hook_steps_out_only_when_no_node_has_a_hook(
    deployment: Make, hooks: tuple[str, ...], facts: dict[str, str] | None, imported: bool,
) -> None:
    script = survey(dict.fromkeys(NODES, "1.0.0"), hooks=hooks)
    if facts:  # the fleet's answer replaced by one the controller cannot read
        script = (script[0], [ev("ok", "node1", facts=facts), *script[1][1:]], script[2])
    d = deployment([
        script,
        good_batch(["node1"]), good_batch(["node2"]), good_batch(["node3"]),
    ])
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert d.runner.plans[0]["deployer_rollout_hooks"] is imported


def test_a_fleet_that_did_not_say_whether_it_has_hooks_keeps_the_hook_steps(deployment: Make) -> None:
    script = survey(dict.fromkeys(NODES, "1.0.0"))
    # The answer lost (an older playbook, a callback that dropped it): counted as hooks.
    events = [e for e in script[1] if "deployer_nodes_with_activation_hooks" not in e.facts]
    d = deployment([(script[0], events, script[2]),
                    good_batch(["node1"]), good_batch(["node2"]), good_batch(["node3"])])
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert d.runner.plans[0]["deployer_rollout_hooks"] is True


def test_an_operators_stop_ends_the_run_at_the_next_gate_without_draining_another_node(
    deployment: Make,
) -> None:
    d = deployment([
        survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
    ])
    d.recorder.after_batch(1, d.lifecycle.request_stop)  # the first Ctrl-C, during batch 1
    outcome = d.deploy("1.1.0")
    assert outcome.status == "cancelled", outcome.summary
    assert d.runner.gate_answers[:2] == [("go", NODES), ("go", ["node1"])]
    assert d.runner.gate_answers[2][0] == "stop" and len(d.runner.gate_answers) == 3
    assert d.runner.batches == [["node1"]]
    assert outcome.nodes["node1"].phase.value == "done"
    for node in ("node2", "node3"):
        assert d.phases(outcome, node) == ["staging", "staged"]  # never drained
    assert [r.playbook for r in d.runner.requests] == ["rollout.yml"]
    with pytest.raises(Interrupted):
        raise_for(outcome)


def test_a_lost_lock_ends_the_run_at_the_next_gate(deployment: Make) -> None:
    host = FakeLockHost()
    intruder = EnvironmentLock(host, "lab", me=Identity("ci@far", "far", 1, "1"))
    d = deployment([
        survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
    ], lock=EnvironmentLock(host, "lab", lease=60))

    def taken_over() -> None:
        intruder.remove(by="ops@far", reason="presumed dead", force=True)
        intruder.acquire()

    d.recorder.after_batch(1, taken_over)
    outcome = d.deploy("1.1.0")
    with pytest.raises(LockLostError):
        raise_for(outcome)
    assert [a[0] for a in d.runner.gate_answers] == ["go", "go", "stop"]
    assert "draining" not in d.phases(outcome, "node2")
    assert d.journal.deployments("lab")[0].status == "stopped"


def test_a_node_left_out_at_the_gate_is_not_touched(deployment: Make) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    d = deployment([
        survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2", "node3"]),
    ], lb=lb, strategy={"batch_size": "2", "canary": "1", "min_healthy": "0",
                        "operator_maintenance": "skip"})
    # An operator takes node3 out while batch 1 rolls: its batch (node2, node3) goes on without it.
    d.recorder.after_batch(1, lambda: lb.admin.update(node3="maint"))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert d.runner.plans[0]["deployer_batch_sizes"] == [1, 2]
    assert d.runner.gate_answers == [("go", NODES), ("go", ["node1"]), ("go", ["node2"])]
    assert d.runner.batches == [["node1"], ["node2"]]
    assert d.phases(outcome, "node3") == ["staging", "staged", "skipped"]
    assert lb.admin["node3"] == "maint" and ("node3", "ready") not in lb.changes


class UnreachableInBatchOne(ReplayRunner):
    """node2 becomes unreachable in the middle of batch 1 (node1, node2). Ansible does not end
    the play for an unreachable host when others of the batch are fine: the run goes on to the
    next batch's gate, where the controller decides."""

    def play_batch(self, request: RunRequest, hosts: Sequence[str], on_event: EventSink,
                   cancelled: CancelCheck) -> RunResult:
        if hosts != ["node1", "node2"]:
            return super().play_batch(request, hosts, on_event, cancelled)
        self.batches[-1:] = [list(hosts)]
        for host in hosts:
            on_event(ev("task_start", host, "deployer_lb_haproxy", "drain"))
            on_event(ev("task_start", host, "deployer_release", "activate"))
        on_event(ev("unreachable", "node2", message="Connection timed out"))
        for role, file in [("deployer_smoke", "main"), ("deployer_lb_haproxy", "enable")]:
            on_event(ev("task_start", "node1", role, file))
        return RunResult(status="failed", rc=4, unreachable_hosts=frozenset({"node2"}))


def test_a_failed_batch_stops_the_run_at_the_next_gate_and_rolls_back(deployment: Make) -> None:
    d = deployment(UnreachableInBatchOne([
        survey(dict.fromkeys(NODES, "1.0.0")), revert_batch(["node1"]),
    ]), strategy={"batch_size": "2", "min_healthy": "0"})
    outcome = d.deploy("1.1.0")
    runner = d.runner
    # The plan's gate, batch 1's; batch 2 (node3) never goes.
    assert [a[0] for a in runner.gate_answers] == ["go", "go", "stop"]
    assert d.phases(outcome, "node3") == ["staging", "staged"]
    assert [(r.playbook, list(r.hosts)) for r in runner.requests] == [
        ("rollout.yml", NODES), ("revert.yml", ["node1"])]
    assert outcome.nodes["node1"].phase.value == "reverted"
    assert outcome.nodes["node2"].phase.value == "failed"
    assert "unreachable" in outcome.nodes["node2"].cause
    assert outcome.status == "failed"
    with pytest.raises(DeploymentFailed):
        raise_for(outcome)


class DiesInBatchTwo(ReplayRunner):
    """ansible-playbook dies (killed) while node2 is being switched: no more events, no stats."""

    def play_batch(self, request: RunRequest, hosts: Sequence[str], on_event: EventSink,
                   cancelled: CancelCheck) -> RunResult:
        if hosts != ["node2"]:
            return super().play_batch(request, hosts, on_event, cancelled)
        on_event(ev("task_start", "node2", "deployer_lb_haproxy", "drain"))
        on_event(ev("task_start", "node2", "deployer_release", "activate"))
        raise RuntimeError("ansible-playbook was killed")


def test_a_run_that_dies_mid_batch_is_handled_as_a_batch_run_killed_mid_way(deployment: Make) -> None:
    d = deployment(DiesInBatchTwo([
        survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]),
        revert_batch(["node2"]), revert_batch(["node1"]),
    ]))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "rolled_back", outcome.summary
    assert "ansible-playbook was killed" in outcome.summary
    # node2, caught mid-change, is reverted; node1 rolled back; node3 never touched.
    assert [(r.playbook, list(r.hosts)) for r in d.runner.requests[1:]] == [
        ("revert.yml", ["node2"]), ("revert.yml", ["node1"])]
    assert d.phases(outcome, "node2")[-3:] == ["deploying", "reverting", "reverted"]
    assert d.phases(outcome, "node3") == ["staging", "staged"]
    assert not outcome.out_of_service


def test_a_refusal_before_the_first_batch_ends_the_run_before_anything_is_drained(
    deployment: Make,
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0"))], lb=lb)
    # The load balancer is lost after the plan: the check before batch 1 fails.
    d.recorder.on[SafePointReached] = (
        lambda e: setattr(lb, "unreadable", "timed out") if e.point == "before_batch" else None)
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused", outcome.summary
    assert d.runner.batches == [] and lb.changes == []
    assert [r.playbook for r in d.runner.requests] == ["rollout.yml"]
    # The plan's gate said go; batch 1's was told to stop, or closed if it had not asked yet.
    assert d.runner.gate_answers[0][0] == "go" and "go" not in [a[0] for a in d.runner.gate_answers[1:]]


# -- the gate itself -------------------------------------------------------------------------


def test_the_gate_event_is_read_from_the_plays_announcement_of_the_gate_task() -> None:
    raw = {"event": "playbook_on_task_start",
           "event_data": {"task": "Wait for the controller's go", "task_action": "deployer_batch_gate"}}
    gate = translate(raw)
    assert gate is not None and gate.kind == "gate"
    meta = {"event": "playbook_on_task_start", "event_data": {"task_action": "ansible.builtin.meta"}}
    assert translate(meta) is None


def test_a_gate_left_without_an_answer_fails_when_the_server_closes() -> None:
    ask, closed = _gate_client()
    got: list[object] = []
    server = GateServer(got.append)
    errors: list[BaseException] = []

    def gate() -> None:
        try:
            ask(str(server.path), {"batch": ["node1"], "failed": []})
        except closed as exc:
            errors.append(exc)

    waiting = threading.Thread(target=gate)
    waiting.start()
    while not got:
        waiting.join(0.01)
    server.close()
    waiting.join(5)
    assert not waiting.is_alive() and errors
    assert not server.path.parent.exists()  # the socket's private directory is gone


def test_a_gate_waiting_on_a_controller_that_dies_fails() -> None:
    """The controller killed (SIGKILL: no clean-up of its own) while a gate waits: the kernel
    closes its sockets, and the gate fails instead of waiting for ever."""
    program = textwrap.dedent("""
        import sys, threading, time
        from deployer.adapters.batch_gate import GateServer
        server = GateServer(lambda gate: print("asked", flush=True))
        print(server.path, flush=True)
        time.sleep(60)
    """)
    controller = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert controller.stdout is not None
        path = controller.stdout.readline().strip()
        ask, closed = _gate_client()
        errors: list[BaseException] = []

        def gate() -> None:
            try:
                ask(path, {"batch": ["node1"], "failed": []})
            except closed as exc:
                errors.append(exc)

        waiting = threading.Thread(target=gate)
        waiting.start()
        assert controller.stdout.readline().strip() == "asked"
        os.kill(controller.pid, signal.SIGKILL)
        waiting.join(10)
        assert not waiting.is_alive() and errors
        assert "without an answer" in str(errors[0])
        controller.wait()
        # Killed outright, it removed nothing of its own: the next server removes it.
        left = Path(path).parent
        assert left.exists()
        server = GateServer(lambda gate: None)
        try:
            assert not left.exists() and server.directory.exists()
        finally:
            server.close()
    finally:
        controller.kill()
        controller.wait()


def test_a_new_gate_server_leaves_live_and_unfinished_directories_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    unfinished = tmp_path / "deployer-gate-unfinished"  # its server not listening yet
    unfinished.mkdir()
    live = GateServer(lambda gate: None)
    try:
        GateServer(lambda gate: None).close()
        assert live.directory.exists() and unfinished.exists()
    finally:
        live.close()


def test_a_run_that_ends_while_pre_staging_is_refused_with_no_gate_asked(deployment: Make) -> None:
    """Every node unreachable: the play has no host left for the plan's gate, the run ends
    there, and the deployment is refused as a pre-staging that failed."""
    dark = ("prestage.yml", [ev("unreachable", n, "deployer_release", "facts", message="timed out")
                             for n in NODES], "failed")
    d = deployment([dark])
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused", outcome.summary
    assert "cannot reach node1, node2, node3" in outcome.summary
    assert d.runner.gate_answers == [] and d.runner.batches == []
    assert [r.playbook for r in d.runner.requests] == ["rollout.yml"]
