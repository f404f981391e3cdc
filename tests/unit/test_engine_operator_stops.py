"""What the operator does while a deployment runs, through the runner and load-balancer seams: a
first Ctrl-C during pre-staging."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_engine
from test_engine import NODES, ev, make_engine, phases

from deployer import Interrupted
from deployer.adapters.loadbalancer import FakeLoadBalancer
from deployer.adapters.runner import CancelCheck, EventSink, ReplayRunner, RunRequest, RunResult
from deployer.engine.engine import Engine, raise_for

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
