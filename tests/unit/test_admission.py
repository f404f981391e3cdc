"""The admission safe point: gates are asked after the release is verified and before the lock is
taken, so a refusal changes nothing and holds no lock (exit 14), only its record is written, and
``plan`` predicts it. Fixtures: tests/unit/conftest.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import NODES, Deployment

from deployer import GateRefused
from deployer.engine.events import CheckVerdictEvent, SafePointReached
from deployer.engine.safepoints import SafePoint, SafePointContext, Verdict
from deployer.testing import good_batch, survey

Make = Callable[..., Deployment]


class Gate:
    """Refuses one version at admission; remembers what it was asked."""

    name = "gate"

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse
        self.asked: list[SafePointContext] = []

    def check(self, ctx: SafePointContext) -> Verdict:
        self.asked.append(ctx)
        if ctx.point is SafePoint.ADMISSION and ctx.deployment.version == self.refuse:
            return Verdict.stop(GateRefused(f"{self.refuse} has not passed", hint="promote it"))
        return Verdict.go()


def test_a_refusal_at_admission_changes_nothing_and_is_on_the_record(deployment: Make) -> None:
    gate = Gate(refuse="1.1.0")
    d = deployment([], checks=[gate])
    with pytest.raises(GateRefused) as refused:
        d.deploy("1.1.0")
    assert refused.value.exit_code == 14
    assert "1.1.0 has not passed" in refused.value.message
    assert d.runner.requests == []  # not even pre-staged
    [record] = d.journal.deployments("lab")  # the refusal is on the record, nothing else
    assert record.status == "refused" and record.details["refused_before_lock"] is True
    assert "1.1.0 has not passed" in record.summary
    # Its journal rows: the gate's verdict, no node's.
    assert [(e.node, e.phase) for e in d.journal.node_events(record.id)] == [("check gate", "stop")]
    assert d.lifecycle.lock.show().record is None  # the lock was never taken
    ctx = gate.asked[0]
    assert ctx.point is SafePoint.ADMISSION and ctx.deployment.id == 0
    assert ctx.release is not None and len(ctx.release.sha256) == 64
    verdicts = d.recorder.of(CheckVerdictEvent)
    assert [(v.point, v.check, v.decision) for v in verdicts] == [("admission", "gate", "stop")]


def test_a_gate_that_lets_a_release_in_is_asked_again_at_every_safe_point(deployment: Make) -> None:
    gate = Gate(refuse="9.9.9")
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")),
                    good_batch(["node1"]), good_batch(["node2"]), good_batch(["node3"])],
                   checks=[gate])
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    points = [ctx.point.value for ctx in gate.asked]
    assert points[0] == "admission" and points.count("before_batch") == 3
    assert all(ctx.release is not None and ctx.release.version == "1.1.0" for ctx in gate.asked)
    reached = [p.event.point for p in d.recorder.events if isinstance(p.event, SafePointReached)]
    assert reached[0] == "admission"


def test_plan_predicts_a_gate_refusal_with_its_exit_code(deployment: Make) -> None:
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0"), playbook="probe.yml")],
                   checks=[Gate(refuse="1.1.0")])
    plan = d.lifecycle.plan("1.1.0")
    assert plan.refusals[0].exit_code == 14
    assert "1.1.0 has not passed" in plan.refusals[0].reason
    assert d.journal.deployments("lab") == []
