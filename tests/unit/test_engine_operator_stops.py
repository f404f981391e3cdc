"""What the operator does while a deployment runs, through the runner and load-balancer seams: a
first Ctrl-C during pre-staging, a node put in maintenance before its batch or after deployer put
it back, and `status` when the load balancer cannot be read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import NODES, Deployment

from deployer import DeploymentFailed, FleetAtRiskError, Interrupted
from deployer.adapters.runner import CancelCheck, EventSink, RunRequest, RunResult
from deployer.cli import _wiring
from deployer.cli.main import main
from deployer.engine.left_out import left_out_by_deployer
from deployer.engine.lifecycle import Lifecycle, raise_for
from deployer.testing import (
    FakeLoadBalancer,
    ReplayRunner,
    bad_batch,
    ev,
    good_batch,
    revert_batch,
    survey,
)

Make = Callable[..., Deployment]


class CtrlCWhilePreStaging(ReplayRunner):
    """The first Ctrl-C arrives while the deployment's run pre-stages. ansible-runner cancels
    the run and, since no host failed, hands back the tail of its output as the run's error (as
    the real adapter does)."""

    lifecycle: Lifecycle | None = None

    def run(self, request: RunRequest, on_event: EventSink, cancelled: CancelCheck) -> RunResult:
        if request.playbook != "rollout.yml":
            return super().run(request, on_event, cancelled)
        self.requests.append(request)
        for host in request.hosts:
            on_event(ev("task_start", host, "deployer_release", "stage"))
        assert self.lifecycle is not None
        self.lifecycle.request_stop()
        assert cancelled()
        return RunResult(status="canceled", rc=-1, error="PLAY RECAP | node1 : ok=4 changed=0")


def test_a_first_ctrl_c_while_pre_staging_stops_at_once_and_changes_nothing(deployment: Make) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    runner = CtrlCWhilePreStaging([])
    d = deployment(runner, lb=lb)
    journal = d.journal
    runner.lifecycle = d.lifecycle
    outcome = d.deploy("1.1.0")
    assert outcome.status == "cancelled", outcome.summary
    assert outcome.summary == "stopped by the operator while pre-staging; nothing was changed"
    assert [r.playbook for r in d.runner.requests] == ["rollout.yml"]
    assert not outcome.out_of_service and not outcome.fix_commands and lb.changes == []
    for node in NODES:
        assert d.phases(outcome, node) == ["staging", "skipped"]
    assert journal.deployments("lab")[0].status == "cancelled"
    with pytest.raises(Interrupted) as stopped:
        raise_for(outcome)
    assert stopped.value.exit_code == 130


def operator_maint_before_batch(d: Deployment, index: int, server: str) -> None:
    """The operator puts ``server`` in MAINT as batch ``index`` starts."""
    d.recorder.after_batch(index, lambda: d.lb.admin.update({server: "maint"}))


def test_by_default_a_node_put_in_maintenance_before_its_batch_stops_the_rollout_there(
    deployment: Make,
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
                revert_batch(["node2"]), revert_batch(["node1"])],
        lb=lb,
    )
    operator_maint_before_batch(d, 2, "node3")
    outcome = d.deploy("1.1.0")
    assert outcome.status == "rolled_back", outcome.summary
    assert "node3 (MAINT) is out of the load balancer, put there by someone else" in outcome.summary
    assert [(r.playbook, list(r.hosts)) for r in d.runner.requests[1:]] == [
        ("revert.yml", ["node2"]), ("revert.yml", ["node1"])]
    assert "draining" not in d.phases(outcome, "node3") and lb.admin["node3"] == "maint"
    with pytest.raises(DeploymentFailed) as failed:
        raise_for(outcome)
    assert failed.value.exit_code == 10


def test_an_updated_node_put_in_maintenance_is_not_rolled_back_or_put_back(
    deployment: Make,
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    # No revert.yml run for node1: the replay runner fails on any run it was not given.
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), bad_batch("node2")], lb=lb,
    )
    operator_maint_before_batch(d, 2, "node1")
    outcome = d.deploy("1.1.0")
    assert outcome.status == "rolled_back", outcome.summary
    assert [r.playbook for r in d.runner.requests] == ["rollout.yml"]
    assert d.runner.batches == [["node1"], ["node2"]]
    assert "left as they are, taken out by someone else: node1" in outcome.summary
    assert "rolled back node1" not in outcome.summary
    assert outcome.left_alone == ["node1 (MAINT)"]
    assert not outcome.out_of_service and not outcome.fix_commands
    assert lb.admin["node1"] == "maint" and lb.changes == []
    assert d.phases(outcome, "node1")[-2:] == ["done", "left_alone"]
    assert left_out_by_deployer(d.journal, "lab", NODES) == {}  # recover leaves it alone too
    with pytest.raises(DeploymentFailed) as failed:
        raise_for(outcome)
    assert not isinstance(failed.value, FleetAtRiskError)


def test_an_updated_node_put_in_maintenance_is_not_reported_as_deployers_to_recover(
    deployment: Make,
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
                good_batch(["node3"])],
        lb=lb,
    )
    operator_maint_before_batch(d, 3, "node1")
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert outcome.left_alone == ["node1 (MAINT)"]
    assert not outcome.out_of_service and not outcome.fix_commands
    assert "out_of_service" not in d.phases(outcome, "node1")
    assert left_out_by_deployer(d.journal, "lab", NODES) == {}


def test_status_exits_7_when_the_load_balancer_cannot_be_read(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # The nodes answer (replayed); the config's socket does not exist.
    probe = survey(dict.fromkeys(NODES, "1.0.0"), playbook="probe.yml")
    monkeypatch.setattr(_wiring, "AnsibleRunner", lambda **kw: ReplayRunner([probe]))
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exited:
        main(["status", "--env", "lab", "--config", str(world["config"])])
    assert exited.value.code == 7
    err = capsys.readouterr().err
    assert "deployer: error: cannot reach the HAProxy runtime API at /nonexistent.sock" in err
    assert "Traceback" not in err


class TwoCtrlCsDuringTheFirstBatch(ReplayRunner):
    """Both Ctrl-Cs arrive while the first batch runs: the first lets it go on, the second
    aborts it (ansible-runner cancels the run) before node1 is back."""

    lifecycle: Lifecycle | None = None

    def play_batch(self, request: RunRequest, hosts: Sequence[str], on_event: EventSink,
                   cancelled: CancelCheck) -> RunResult:
        on_event(ev("task_start", "node1", "deployer_lb_haproxy", "drain"))
        assert self.lifecycle is not None
        assert not self.lifecycle.request_stop()
        assert not cancelled()  # the first one lets the batch finish
        assert self.lifecycle.request_stop()
        assert cancelled()
        return RunResult(status="canceled", rc=-1)


def test_after_a_double_ctrl_c_no_node_is_said_to_have_finished(deployment: Make) -> None:
    """A second Ctrl-C in the first batch: node1 had not finished, and the messages must not
    say it (or any node) keeps the new release."""
    runner = TwoCtrlCsDuringTheFirstBatch([survey(dict.fromkeys(NODES, "1.0.0"))])
    d = deployment(runner)
    runner.lifecycle = d.lifecycle
    outcome = d.deploy("1.1.0")
    assert outcome.status == "cancelled", outcome.summary
    assert outcome.nodes["node1"].phase.value != "done"
    messages = d.recorder.messages
    assert "no node had finished before the stop: none runs the new release" in messages, messages
    assert not any("finished before the stop and keep" in m for m in messages), messages
    assert "rollback" not in " ".join(messages)


class TwoCtrlCsDuringTheSmokeCheck(ReplayRunner):
    """The second Ctrl-C cuts node1's smoke check short: the cancelled run reports the task it
    cut as failed (its worker interrupted), then ends without stats."""

    lifecycle: Lifecycle | None = None
    lb: FakeLoadBalancer | None = None

    def play_batch(self, request: RunRequest, hosts: Sequence[str], on_event: EventSink,
                   cancelled: CancelCheck) -> RunResult:
        on_event(ev("task_start", "node1", "deployer_lb_haproxy", "drain"))
        assert self.lb is not None
        self.lb.set_state("app", "node1", "maint")
        on_event(ev("task_start", "node1", "deployer_release", "activate"))
        on_event(ev("task_start", "node1", "deployer_smoke", "main"))
        assert self.lifecycle is not None
        self.lifecycle.request_stop()
        self.lifecycle.request_stop()
        assert cancelled()
        on_event(ev("failed", "node1", "deployer_smoke", "main", message="interrupted"))
        return RunResult(status="canceled", rc=-1)


def test_a_check_the_abort_cuts_short_is_not_the_nodes_failure(deployment: Make) -> None:
    """As a batch's own run (no stats when cancelled): node1 stays where the abort found it,
    in its smoke check, and is out of service, rather than failed by the abort's doing."""
    lb = FakeLoadBalancer("hello", NODES)
    runner = TwoCtrlCsDuringTheSmokeCheck([survey(dict.fromkeys(NODES, "1.0.0"))])
    d = deployment(runner, lb=lb)
    runner.lifecycle, runner.lb = d.lifecycle, lb
    outcome = d.deploy("1.1.0")
    assert outcome.status == "cancelled", outcome.summary
    assert d.phases(outcome, "node1")[-2:] == ["smoke", "out_of_service"]
