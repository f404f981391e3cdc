"""The engine and the load balancer, through both seams: the runner replays scripted events and a
fake load balancer stands in for HAProxy. Someone else's maintenance is respected, an unreadable
load balancer stops everything before any node is touched, and the exit codes say what happened."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import NODES, Deployment

from deployer import (
    DeploymentFailed,
    DeploymentRefused,
    FleetAtRiskError,
    LoadBalancerError,
    LockHeldError,
)
from deployer.adapters.haproxy import LoadBalancerGroup
from deployer.adapters.lock import EnvironmentLock
from deployer.adapters.process import Identity
from deployer.engine.events import NodePhaseChanged
from deployer.engine.left_out import left_out_by_deployer
from deployer.engine.lifecycle import exit_code_for, raise_for
from deployer.testing import (
    FakeLoadBalancer,
    FakeLockHost,
    RunScript,
    ev,
    good_batch,
    revert_batch,
    stats,
    survey,
)

Make = Callable[..., Deployment]


def maint(lb: FakeLoadBalancer, *servers: str, state: str = "maint") -> FakeLoadBalancer:
    for server in servers:
        lb.admin[server] = state
    return lb


def test_an_unreadable_load_balancer_refuses_before_any_node_is_touched(deployment: Make) -> None:
    lb = FakeLoadBalancer("hello", NODES, where="lb1 over SSH", unreadable="connection refused")
    d = deployment([], lb=lb)
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused"
    assert d.runner.requests == []  # not even a pre-stage
    assert "cannot read the load balancer before touching any node" in outcome.summary
    assert "connection refused" in outcome.summary and "lb1 over SSH" in outcome.summary
    assert not outcome.out_of_service and not outcome.fix_commands
    with pytest.raises(DeploymentRefused):
        raise_for(outcome)
    assert d.journal.deployments("lab")[0].status == "refused"


def test_a_node_missing_from_the_backend_refuses(deployment: Make) -> None:
    lb = FakeLoadBalancer("hello", ["node1", "node2"])
    d = deployment([], lb=lb)
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused" and "node3 (server 'node3')" in outcome.summary
    assert d.runner.requests == []


def test_an_operators_maintenance_refuses_by_default_naming_the_servers(deployment: Make) -> None:
    lb = maint(FakeLoadBalancer("hello", NODES), "node2")
    maint(lb, "node3", state="drain")
    d = deployment([], lb=lb)
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused"
    assert "node2 (MAINT)" in outcome.summary and "node3 (DRAIN)" in outcome.summary
    assert d.runner.requests == [] and lb.changes == []
    assert "operator_maintenance: skip" in outcome.hint and "recover" not in outcome.hint
    assert not outcome.out_of_service and not outcome.fix_commands
    with pytest.raises(DeploymentRefused) as refused:
        raise_for(outcome)
    assert refused.value.exit_code == 9 and "recover" not in (refused.value.hint or "")
    assert {e.phase for e in d.journal.node_events(outcome.deployment_id)} == {"skipped"}


def test_skip_leaves_the_operators_nodes_alone_and_counts_them_out(deployment: Make) -> None:
    lb = maint(FakeLoadBalancer("hello", NODES), "node3")
    d = deployment(
        [survey({"node1": "1.0.0", "node2": "1.0.0"}), good_batch(["node1"]), good_batch(["node2"])],
        lb=lb, strategy={"operator_maintenance": "skip"},
    )
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert d.runner.requests[0].hosts == ["node1", "node2"]  # not even pre-staged
    assert d.runner.batches == [["node1"], ["node2"]]
    assert outcome.nodes["node3"].phase.value == "skipped"
    assert "not set by deployer" in outcome.nodes["node3"].detail
    assert outcome.left_alone == ["node3 (MAINT)"]
    assert "left as they are: node3" in outcome.summary
    assert d.phases(outcome, "node3") == ["skipped"]
    assert lb.admin["node3"] == "maint"


def test_with_every_node_held_by_an_operator_no_node_is_even_read(deployment: Make) -> None:
    lb = maint(FakeLoadBalancer("hello", NODES), *NODES)
    # No script: the replay runner fails any run (one without hosts would reach every node).
    d = deployment([], lb=lb, strategy={"operator_maintenance": "skip", "min_healthy": "0"})
    outcome = d.deploy("1.1.0")
    assert d.runner.requests == []
    assert outcome.left_alone == [f"{n} (MAINT)" for n in NODES]
    assert all(lb.admin[n] == "maint" for n in NODES) and lb.changes == []


def test_the_capacity_floor_counts_an_operators_maintenance(deployment: Make) -> None:
    lb = maint(FakeLoadBalancer("hello", NODES), "node2", "node3")
    d = deployment([survey({"node1": "1.0.0"})], lb=lb, strategy={"operator_maintenance": "skip"},
    )
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused"
    assert "capacity floor" in outcome.summary and "node2 (MAINT)" in outcome.summary
    assert [r.playbook for r in d.runner.requests] == ["rollout.yml"] and d.runner.batches == []
    assert "recover" not in outcome.hint and "min_healthy" in outcome.hint
    assert not outcome.out_of_service  # the operator's nodes are not this deployment's to fix
    with pytest.raises(DeploymentRefused):
        raise_for(outcome)


def test_a_node_put_in_maintenance_during_the_rollout_is_never_put_back(deployment: Make) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"])],
        lb=lb, strategy={"operator_maintenance": "skip"},
    )
    d.recorder.after_batch(1, lambda: lb.admin.update(node3="maint"))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert d.runner.batches == [["node1"], ["node2"]]
    assert outcome.nodes["node3"].phase.value == "skipped" and lb.admin["node3"] == "maint"


def test_a_load_balancer_lost_between_batches_fails_the_rollout(deployment: Make) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), revert_batch(["node1"])],
        lb=lb,
    )
    d.recorder.after_batch(1, lambda: setattr(lb, "unreadable", "timed out"))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "rolled_back"
    assert "cannot read the load balancer before batch 2" in outcome.summary
    with pytest.raises(DeploymentFailed) as failed:
        raise_for(outcome)
    assert not isinstance(failed.value, (DeploymentRefused, FleetAtRiskError))


def test_a_node_an_earlier_deployment_left_out_is_deployers_to_put_back(deployment: Make) -> None:
    """`deployer rollback` is one of the fixes printed for a node a deployment left out: it must
    not take that node for an operator's maintenance, even after a refused run skipped it."""
    lb = maint(FakeLoadBalancer("hello", NODES), "node2")
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
                good_batch(["node3"])],
        lb=lb,
    )
    aborted = d.journal.start_deployment(env="lab", app="hello", kind="deploy", version="1.1.0", command="")
    d.journal.record_phase(aborted, "node2", "smoke")
    d.journal.record_phase(aborted, "node2", "out_of_service", detail="left out of the load balancer (MAINT)")
    d.journal.finish_deployment(aborted, "cancelled", "aborted")
    refused = d.journal.start_deployment(env="lab", app="hello", kind="rollback", version="1.0.0", command="")
    d.journal.record_phase(refused, "node2", "skipped", detail="not deployed")
    d.journal.finish_deployment(refused, "refused", "refused")
    assert set(left_out_by_deployer(d.journal, "lab", NODES)) == {"node2"}
    def enabled_on_rejoin(ev: NodePhaseChanged) -> None:  # what the enable step does to HAProxy
        lb.admin[ev.node] = "ready"

    d.recorder.at_phase("rejoining", enabled_on_rejoin)
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert d.runner.batches == [["node1"], ["node2"], ["node3"]]
    assert outcome.left_alone == [] and d.phases(outcome, "node2")[-1] == "done"
    assert left_out_by_deployer(d.journal, "lab", NODES) == {}
    # Someone else's maintenance is still theirs.
    maint(lb, "node3")
    d = deployment([], lb=lb)
    assert d.deploy("1.0.0").status == "refused" and d.runner.requests == []


def test_plan_notes_an_operators_maintenance(deployment: Make) -> None:
    lb = maint(FakeLoadBalancer("hello", NODES), "node2")
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0"), playbook="probe.yml")], lb=lb)
    plan = d.lifecycle.plan("1.1.0")
    assert plan.targets == ("node1", "node3")
    assert plan.exit_code == 9 and "node2 (MAINT) is out of the load balancer" in plan.refusals[0].reason
    reasons = {n.name: n.reason for n in plan.nodes}
    assert reasons["node2"].startswith("MAINT, put there by someone else")
    assert reasons["node1"] == "1.0.0 -> 1.1.0"


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


# -- what `plan` predicts, and the deployment then does -------------------------------------------


def test_plan_names_why_a_node_in_maintenance_is_not_a_target(deployment: Make) -> None:
    """node2, in an operator's MAINT on 1.0.0, was listed as "already on 1.3.0"."""
    lb = maint(FakeLoadBalancer("hello", NODES), "node2")
    d = deployment([survey({"node1": "1.0.0", "node3": "1.0.0"}, playbook="probe.yml")], lb=lb,
                   strategy={"operator_maintenance": "skip"})
    plan = d.lifecycle.plan("1.1.0")
    node2 = next(n for n in plan.nodes if n.name == "node2")
    assert not node2.target and node2.load_balancer == "MAINT"
    assert node2.reason == ("MAINT, put there by someone else: left as it is "
                            "(strategy.operator_maintenance: skip)")
    assert not any(n.reason.startswith("already on") for n in plan.nodes)
    assert plan.targets == ("node1", "node3")


def test_plan_predicts_the_capacity_floor_refusal_the_deployment_then_makes(deployment: Make) -> None:
    """Skip mode, min_healthy "2", one of 3 nodes in MAINT: `plan` exited 0, and the deployment
    was then refused by the capacity floor. Both now say exit 9."""
    lb = maint(FakeLoadBalancer("hello", NODES), "node2")
    setup = {"operator_maintenance": "skip", "min_healthy": "2"}
    d = deployment([survey({"node1": "1.0.0", "node3": "1.0.0"}, playbook="probe.yml")], lb=lb,
                   strategy=setup)
    plan = d.lifecycle.plan("1.1.0")
    assert plan.exit_code == 9
    (refusal,) = plan.refusals
    assert refusal.reason.startswith("capacity floor: only 1 node(s) would stay in service during "
                                     "batch 1 (floor 2; out of service now: node2 (MAINT))")
    assert refusal.when == "before any node leaves the load balancer" and "min_healthy" in refusal.hint
    d = deployment([survey({"node1": "1.0.0", "node3": "1.0.0"})], lb=lb, strategy=setup)
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused" and outcome.summary.startswith(refusal.reason)
    assert exit_code_for(outcome) == plan.exit_code
    assert lb.changes == []


def test_plan_predicts_a_held_lock(deployment: Make) -> None:
    host = FakeLockHost()
    other = EnvironmentLock(host, "lab", me=Identity("ci@far", "far", 1, "1"))
    other.acquire()
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0"), playbook="probe.yml")],
                   lock=EnvironmentLock(host, "lab"))
    plan = d.lifecycle.plan("1.1.0")
    assert plan.exit_code == 6 and [r.exit_code for r in plan.refusals] == [6]
    assert "locked by" in plan.refusals[0].reason and "ci@far" in plan.refusals[0].reason
    with pytest.raises(LockHeldError) as held:
        d.deploy("1.1.0")
    assert held.value.exit_code == plan.exit_code


def test_plan_predicts_an_unreachable_node(deployment: Make) -> None:
    def scripts(playbook: str) -> list[RunScript]:
        _, events, _ = survey({"node1": "1.0.0", "node2": "1.0.0"}, playbook=playbook)
        dark = ev("unreachable", "node3", "deployer_release", "facts",
                  message="ssh: connect to host 127.0.1.3 port 22: Connection timed out")
        return [(playbook, [*events[:-1], dark, stats(["node1", "node2"], dark=["node3"])], "failed")]

    d = deployment(scripts("probe.yml"))
    plan = d.lifecycle.plan("1.1.0")
    assert plan.exit_code == 9 and "cannot reach node3" in plan.refusals[0].reason
    assert next(n for n in plan.nodes if n.name == "node3").reason.startswith("unreachable: ")
    d = deployment(scripts("prestage.yml"))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused" and "cannot reach node3" in outcome.summary
    assert exit_code_for(outcome) == plan.exit_code


def test_a_first_deployment_onto_a_fleet_with_no_node_in_service_goes_ahead(deployment: Make) -> None:
    """min_healthy "2" cannot hold while no node serves (a fleet that never ran the app): the
    deployment goes ahead, and both the plan and the deployment say why the floor does not
    apply yet."""
    lb = FakeLoadBalancer("hello", NODES)
    lb.status.update(dict.fromkeys(NODES, "DOWN"))
    why = ("no node is in service on the load balancer now (a first deployment?): the capacity "
           "floor (2) cannot be kept while none serves, so it applies once nodes are in service")
    d = deployment([survey(dict.fromkeys(NODES, ""), playbook="probe.yml")], lb=lb,
                   strategy={"min_healthy": "2"})
    plan = d.lifecycle.plan("1.0.0")
    assert plan.refusals == () and plan.exit_code == 0 and why in plan.notes
    assert plan.targets == tuple(NODES)
    d = deployment([survey(dict.fromkeys(NODES, "")), good_batch(["node1"]), good_batch(["node2"]),
                    good_batch(["node3"])], lb=lb, strategy={"min_healthy": "2"})
    d.recorder.at_phase("rejoining", lambda ev: lb.status.update({ev.node: "UP"}))  # healthy now
    outcome = d.deploy("1.0.0")
    assert outcome.status == "succeeded", outcome.summary
    assert why in d.recorder.messages
