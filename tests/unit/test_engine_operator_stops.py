"""What the operator does while a deployment runs, through the runner and load-balancer seams: a
first Ctrl-C during pre-staging, a node put in maintenance before its batch or after deployer put
it back, and `status` when the load balancer cannot be read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import test_engine
from test_engine import NODES, bad_batch, ev, good_batch, make_engine, phases, revert_batch, survey

from deployer import DeploymentFailed, FleetAtRiskError, Interrupted
from deployer.adapters.loadbalancer import FakeLoadBalancer
from deployer.adapters.runner import CancelCheck, EventSink, ReplayRunner, RunRequest, RunResult
from deployer.cli import deploy_cmd
from deployer.cli._wiring import build_engine
from deployer.cli.main import main
from deployer.engine.engine import Engine, raise_for
from deployer.engine.left_out import left_out_by_deployer

world = test_engine.world  # the same config, inventory and signed releases


class CtrlCWhilePreStaging(ReplayRunner):
    """The first Ctrl-C arrives during the pre-stage run. ansible-runner cancels the run and,
    since no host failed, hands back the tail of its output as the run's error (as the real
    adapter does)."""

    engine: Engine | None = None

    def run(self, request: RunRequest, on_event: EventSink, cancelled: CancelCheck) -> RunResult:
        if request.playbook != "prestage.yml":
            return super().run(request, on_event, cancelled)
        self.requests.append(request)
        for host in request.hosts:
            on_event(ev("task_start", host, "deployer_release", "stage"))
        assert self.engine is not None
        self.engine.request_stop()
        assert cancelled()
        return RunResult(status="canceled", rc=-1, error="PLAY RECAP | node1 : ok=4 changed=0")


def test_a_first_ctrl_c_while_pre_staging_stops_at_once_and_changes_nothing(
    world: dict[str, Path],
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    runner = CtrlCWhilePreStaging([])
    engine, _, journal = make_engine(world, runner, lb=lb)
    runner.engine = engine
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "cancelled", outcome.summary
    assert "while pre-staging" in outcome.summary and "no node was changed" in outcome.summary
    assert [r.playbook for r in runner.requests] == ["prestage.yml"]
    assert not outcome.out_of_service and not outcome.fix_commands and lb.changes == []
    for node in NODES:
        assert phases(journal, outcome, node) == ["staging", "skipped"]
    assert journal.deployments("lab")[0].status == "cancelled"
    with pytest.raises(Interrupted) as stopped:
        raise_for(outcome)
    assert stopped.value.exit_code == 130


def operator_maint_before_batch(engine: Engine, lb: FakeLoadBalancer, index: int, server: str) -> None:
    """The operator puts ``server`` in MAINT as batch ``index`` starts."""
    original: Callable[..., None] = engine.reporter.batch

    def step_in(batch: object, total: int, *, rollback: bool = False) -> None:
        original(batch, total, rollback=rollback)
        if getattr(batch, "index", 0) == index and not rollback:
            lb.admin[server] = "maint"

    engine.reporter.batch = step_in  # type: ignore[method-assign]


def test_by_default_a_node_put_in_maintenance_before_its_batch_stops_the_rollout_there(
    world: dict[str, Path],
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    engine, runner, journal = make_engine(
        world, [survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
                revert_batch(["node2"]), revert_batch(["node1"])],
        lb=lb,
    )
    operator_maint_before_batch(engine, lb, 2, "node3")
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "rolled_back", outcome.summary
    assert "node3 (MAINT) is out of the load balancer, put there by someone else" in outcome.summary
    assert [(r.playbook, list(r.hosts)) for r in runner.requests[3:]] == [
        ("revert.yml", ["node2"]), ("revert.yml", ["node1"])]
    assert "draining" not in phases(journal, outcome, "node3") and lb.admin["node3"] == "maint"
    with pytest.raises(DeploymentFailed) as failed:
        raise_for(outcome)
    assert failed.value.exit_code == 10


def test_an_updated_node_put_in_maintenance_is_not_rolled_back_or_put_back(
    world: dict[str, Path],
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    # No revert.yml run for node1: the replay runner fails on any run it was not given.
    engine, runner, journal = make_engine(
        world, [survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), bad_batch("node2")], lb=lb,
    )
    operator_maint_before_batch(engine, lb, 2, "node1")
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "rolled_back", outcome.summary
    assert [r.playbook for r in runner.requests] == ["prestage.yml", "deploy_batch.yml", "deploy_batch.yml"]
    assert "left as they are, taken out by someone else: node1" in outcome.summary
    assert "rolled back node1" not in outcome.summary
    assert outcome.left_alone == ["node1 (MAINT)"]
    assert not outcome.out_of_service and not outcome.fix_commands
    assert lb.admin["node1"] == "maint" and lb.changes == []
    assert phases(journal, outcome, "node1")[-2:] == ["done", "left_alone"]
    assert left_out_by_deployer(journal, "lab", NODES) == {}  # recover leaves it alone too
    with pytest.raises(DeploymentFailed) as failed:
        raise_for(outcome)
    assert not isinstance(failed.value, FleetAtRiskError)


def test_an_updated_node_put_in_maintenance_is_not_reported_as_deployers_to_recover(
    world: dict[str, Path],
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    engine, _, journal = make_engine(
        world, [survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
                good_batch(["node3"])],
        lb=lb,
    )
    operator_maint_before_batch(engine, lb, 3, "node1")
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert outcome.left_alone == ["node1 (MAINT)"]
    assert not outcome.out_of_service and not outcome.fix_commands
    assert "out_of_service" not in phases(journal, outcome, "node1")
    assert left_out_by_deployer(journal, "lab", NODES) == {}


def test_status_exits_7_when_the_load_balancer_cannot_be_read(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # The nodes answer (replayed); the config's socket does not exist.
    probe = ("probe.yml", *survey(dict.fromkeys(NODES, "1.0.0"))[1:])
    monkeypatch.setattr(
        deploy_cmd, "build_engine", lambda config, env_name, reporter=None, **kw: build_engine(
            config, env_name, reporter=reporter, runner=ReplayRunner([probe]), **kw))
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exited:
        main(["status", "--env", "lab", "--config", str(world["config"])])
    assert exited.value.code == 7
    err = capsys.readouterr().err
    assert "deployer: error: cannot reach the HAProxy runtime API at /nonexistent.sock" in err
    assert "Traceback" not in err
