"""The engine and the load balancer, through both seams: the runner replays scripted events and a
fake load balancer stands in for HAProxy. Someone else's maintenance is respected, an unreadable
load balancer stops everything before any node is touched, and the exit codes say what happened."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_engine
from test_engine import NODES, good_batch, make_engine, phases, revert_batch, survey

from deployer import DeploymentFailed, DeploymentRefused, FleetAtRiskError, LoadBalancerError
from deployer.adapters.haproxy import LoadBalancerGroup
from deployer.adapters.loadbalancer import FakeLoadBalancer
from deployer.engine.engine import NodeStatus, raise_for
from deployer.engine.left_out import left_out_by_deployer
from deployer.engine.states import NodePhase

world = test_engine.world  # the same config, inventory and signed releases


def maint(lb: FakeLoadBalancer, *servers: str, state: str = "maint") -> FakeLoadBalancer:
    for server in servers:
        lb.admin[server] = state
    return lb


def test_an_unreadable_load_balancer_refuses_before_any_node_is_touched(world: dict[str, Path]) -> None:
    lb = FakeLoadBalancer("hello", NODES, where="lb1 over SSH", unreadable="connection refused")
    engine, runner, journal = make_engine(world, [], lb=lb)
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "refused"
    assert runner.requests == []  # not even a pre-stage
    assert "cannot read the load balancer before touching any node" in outcome.summary
    assert "connection refused" in outcome.summary and "lb1 over SSH" in outcome.summary
    assert not outcome.out_of_service and not outcome.fix_commands
    with pytest.raises(DeploymentRefused):
        raise_for(outcome)
    assert journal.deployments("lab")[0].status == "refused"


def test_a_node_missing_from_the_backend_refuses(world: dict[str, Path]) -> None:
    lb = FakeLoadBalancer("hello", ["node1", "node2"])
    engine, runner, _ = make_engine(world, [], lb=lb)
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "refused" and "node3 (server 'node3')" in outcome.summary
    assert runner.requests == []


def test_an_operators_maintenance_refuses_by_default_naming_the_servers(world: dict[str, Path]) -> None:
    lb = maint(FakeLoadBalancer("hello", NODES), "node2")
    maint(lb, "node3", state="drain")
    engine, runner, journal = make_engine(world, [], lb=lb)
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "refused"
    assert "node2 (MAINT)" in outcome.summary and "node3 (DRAIN)" in outcome.summary
    assert runner.requests == [] and lb.changes == []
    assert "operator_maintenance: skip" in outcome.hint and "recover" not in outcome.hint
    assert not outcome.out_of_service and not outcome.fix_commands
    with pytest.raises(DeploymentRefused) as refused:
        raise_for(outcome)
    assert refused.value.exit_code == 9 and "recover" not in (refused.value.hint or "")
    assert {e.phase for e in journal.node_events(outcome.deployment_id)} == {"skipped"}


def test_skip_leaves_the_operators_nodes_alone_and_counts_them_out(world: dict[str, Path]) -> None:
    lb = maint(FakeLoadBalancer("hello", NODES), "node3")
    engine, runner, journal = make_engine(
        world, [survey({"node1": "1.0.0", "node2": "1.0.0"}), good_batch(["node1"]), good_batch(["node2"])],
        lb=lb, operator_maintenance="skip",
    )
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert runner.requests[0].hosts == ["node1", "node2"]  # not even pre-staged
    assert [list(r.hosts) for r in runner.requests[1:]] == [["node1"], ["node2"]]
    assert outcome.nodes["node3"].phase.value == "skipped"
    assert "not set by deployer" in outcome.nodes["node3"].detail
    assert outcome.left_alone == ["node3 (MAINT)"]
    assert "left as they are: node3" in outcome.summary
    assert phases(journal, outcome, "node3") == ["skipped"]
    assert lb.admin["node3"] == "maint"


def test_the_capacity_floor_counts_an_operators_maintenance(world: dict[str, Path]) -> None:
    lb = maint(FakeLoadBalancer("hello", NODES), "node2", "node3")
    engine, runner, _ = make_engine(
        world, [survey({"node1": "1.0.0"})], lb=lb, operator_maintenance="skip",
    )
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "refused"
    assert "capacity floor" in outcome.summary and "node2 (MAINT)" in outcome.summary
    assert [r.playbook for r in runner.requests] == ["prestage.yml"]
    assert "recover" not in outcome.hint and "min_healthy" in outcome.hint
    assert not outcome.out_of_service  # the operator's nodes are not this deployment's to fix
    with pytest.raises(DeploymentRefused):
        raise_for(outcome)


def test_a_node_put_in_maintenance_during_the_rollout_is_never_put_back(world: dict[str, Path]) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    engine, runner, _ = make_engine(
        world, [survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"])],
        lb=lb, operator_maintenance="skip",
    )
    original = engine.reporter.batch

    def operator_steps_in(batch: object, total: int, *, rollback: bool = False) -> None:
        original(batch, total, rollback=rollback)  # type: ignore[arg-type]
        lb.admin["node3"] = "maint"

    engine.reporter.batch = operator_steps_in  # type: ignore[method-assign]
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert [list(r.hosts) for r in runner.requests[1:]] == [["node1"], ["node2"]]
    assert outcome.nodes["node3"].phase.value == "skipped" and lb.admin["node3"] == "maint"


def test_a_load_balancer_lost_between_batches_fails_the_rollout(world: dict[str, Path]) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    engine, _runner, _ = make_engine(
        world, [survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), revert_batch(["node1"])],
        lb=lb,
    )
    original = engine.reporter.batch

    def lose_the_lb(batch: object, total: int, *, rollback: bool = False) -> None:
        original(batch, total, rollback=rollback)  # type: ignore[arg-type]
        lb.unreadable = "timed out"

    engine.reporter.batch = lose_the_lb  # type: ignore[method-assign]
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "rolled_back"
    assert "cannot read the load balancer before batch 2" in outcome.summary
    with pytest.raises(DeploymentFailed) as failed:
        raise_for(outcome)
    assert not isinstance(failed.value, (DeploymentRefused, FleetAtRiskError))


def test_a_node_an_earlier_deployment_left_out_is_deployers_to_put_back(world: dict[str, Path]) -> None:
    """`deployer rollback` is one of the fixes printed for a node a deployment left out: it must
    not take that node for an operator's maintenance, even after a refused run skipped it."""
    lb = maint(FakeLoadBalancer("hello", NODES), "node2")
    engine, runner, journal = make_engine(
        world, [survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
                good_batch(["node3"])],
        lb=lb,
    )
    aborted = journal.start_deployment(env="lab", app="hello", kind="deploy", version="1.1.0", command="")
    journal.record_phase(aborted, "node2", "smoke")
    journal.record_phase(aborted, "node2", "out_of_service", detail="left out of the load balancer (MAINT)")
    journal.finish_deployment(aborted, "cancelled", "aborted")
    refused = journal.start_deployment(env="lab", app="hello", kind="rollback", version="1.0.0", command="")
    journal.record_phase(refused, "node2", "skipped", detail="not deployed")
    journal.finish_deployment(refused, "refused", "refused")
    assert set(left_out_by_deployer(journal, "lab", NODES)) == {"node2"}
    original = engine.reporter.phase

    def enabled_on_rejoin(status: NodeStatus) -> None:  # what the enable step does to HAProxy
        original(status)
        if status.phase is NodePhase.REJOINING:
            lb.admin[status.node.lb_server] = "ready"

    engine.reporter.phase = enabled_on_rejoin  # type: ignore[method-assign]
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert [list(r.hosts) for r in runner.requests[1:]] == [["node1"], ["node2"], ["node3"]]
    assert outcome.left_alone == [] and phases(journal, outcome, "node2")[-1] == "done"
    assert left_out_by_deployer(journal, "lab", NODES) == {}
    # Someone else's maintenance is still theirs.
    maint(lb, "node3")
    engine, runner, journal = make_engine(world, [], lb=lb)
    assert engine.deploy("1.0.0").status == "refused" and runner.requests == []


def test_plan_notes_an_operators_maintenance(world: dict[str, Path]) -> None:
    lb = maint(FakeLoadBalancer("hello", NODES), "node2")
    engine, _, _ = make_engine(world, [("probe.yml", *survey(dict.fromkeys(NODES, "1.0.0"))[1:])], lb=lb)
    plan, _facts, _lb = engine.plan("1.1.0")
    assert plan.targets == ("node1", "node3")
    assert any("deploy will refuse: node2 (MAINT)" in note for note in plan.notes)


def test_a_group_of_load_balancers_counts_a_server_in_service_only_on_all() -> None:
    lb1 = FakeLoadBalancer("hello", NODES, where="lb1")
    lb2 = maint(FakeLoadBalancer("hello", NODES, where="lb2"), "node2")
    lb2.status["node3"] = "DOWN"
    group = LoadBalancerGroup([lb1, lb2])
    states = group.servers("hello")
    assert states["node1"].in_service and states["node1"].label == "UP"
    assert (states["node2"].admin, states["node2"].label) == ("maint", "MAINT on lb2")
    assert not states["node3"].in_service and states["node3"].label == "DOWN on lb2"
    group.set_state("hello", "node2", "ready")
    assert lb1.changes == lb2.changes == [("node2", "ready")]
    lb2.unreadable = "no route"
    with pytest.raises(LoadBalancerError, match="no route"):
        group.servers("hello")
    assert group.where == "lb1 and lb2"
