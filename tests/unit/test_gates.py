"""The gates through the engine's lifecycle, with fakes at the seams only (the runner, the load
balancer) and a clock moved by hand: a window closing mid-rollout in each mode, a refusal
outside a window, a known-good rollback, the emergency freeze, approvals (expired, self-signed,
valid, expiring mid-rollout), High Risk, break-glass and decision records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import LEGS, MAP, NODES
from gates_world import DAY_WINDOW, HOUR, TUESDAY_1550, Clock, Gated, People, at_batch, gated, with_approvals

from deployer import DeploymentPaused, GateRefused
from deployer.adapters.lock import EnvironmentLock
from deployer.engine.events import CheckVerdictEvent, DeploymentStarted, TrafficSwitched
from deployer.engine.lifecycle import exit_code_for, raise_for
from deployer.engine.resume import resume
from deployer.testing import (
    FakeLoadBalancer,
    FakeLockHost,
    ReplayRunner,
    bad_batch,
    good_batch,
    revert_batch,
    survey,
)

FROM_1_0 = dict.fromkeys(NODES, "1.0.0")
BLUE, GREEN = LEGS["blue"], LEGS["green"]


def verdicts(g: Gated, gate: str) -> list[tuple[str, str, str]]:
    return [(e.point, e.decision, e.reason) for e in g.d.recorder.of(CheckVerdictEvent) if e.check == gate]


def statuses(g: Gated) -> list[tuple[str, str]]:
    return [(r.kind, r.status) for r in g.d.journal.deployments("lab")]


def close_window_at_batch(g: Gated, index: int) -> None:
    """The window closes as batch ``index`` runs: the next safe point is outside it."""
    at_batch(g.d, index, lambda: setattr(g.clock, "t", TUESDAY_1550 + 11 * 60))


# -- release windows ---------------------------------------------------------------------------


def test_outside_a_window_deploy_refuses_names_the_gate_and_when_the_next_opens(
    world: dict[str, Path],
) -> None:
    g = gated(world["config"], [], gates=DAY_WINDOW, clock=Clock(TUESDAY_1550 + HOUR))  # 16:50
    with pytest.raises(GateRefused) as refused:
        g.deploy("1.1.0")
    error = refused.value
    assert error.exit_code == 14 and error.gate == "window"
    assert error.message.startswith("refused by the window gate: outside every release window of 'lab'")
    assert "the next opens wed 2026-12-09 09:00 UTC (2026-12-09T09:00:00Z)" in error.message
    assert error.message.endswith("nothing was changed")
    assert error.opens_at == TUESDAY_1550 + 17 * HOUR + 10 * 60  # Wednesday 09:00
    assert g.d.runner.requests == []  # nothing touched, not even pre-staging
    assert statuses(g) == [("deploy", "refused")]
    assert g.d.recorder.of(DeploymentStarted)[0].locked is False


def test_in_a_window_the_deployment_goes_through_and_records_the_window(world: dict[str, Path]) -> None:
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES]]
    g = gated(world["config"], scripts, gates=DAY_WINDOW, clock=Clock(TUESDAY_1550 - HOUR))
    outcome = g.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert g.gates.state.window.startswith("in the window every day 09:00-16:00 UTC, open from "
                                           "tue 2026-12-08 09:00 UTC to tue 2026-12-08 16:00 UTC")
    points = {p for p, _, _ in verdicts(g, "window")}
    assert points == {"admission", "before_start", "before_batch"}


def test_a_window_closing_mid_rollout_pauses_it_and_resume_continues_in_the_next(
    world: dict[str, Path],
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    scripts = [survey(FROM_1_0), good_batch(["node1"])]
    g = gated(world["config"], ReplayRunner(scripts, lb=lb), lb=lb,
              gates={**DAY_WINDOW, "on_window_close": "pause"})
    close_window_at_batch(g, 1)
    outcome = g.deploy("1.1.0")
    assert outcome.status == "paused", outcome.summary
    assert exit_code_for(outcome) == 15
    with pytest.raises(DeploymentPaused) as paused:
        raise_for(outcome)
    assert paused.value.message.startswith("paused by the window gate before batch 2/3: outside every "
                                           "release window")
    assert "every node is in service" in paused.value.message
    # One run for the rollout: batch 1 went, the gate of batch 2 was told to stop.
    assert [r.playbook for r in g.d.runner.requests] == ["rollout.yml"]
    assert g.d.runner.batches == [["node1"]] and g.d.runner.gate_answers[-1][0] == "stop"
    assert lb.admin == dict.fromkeys(NODES, "ready")
    assert statuses(g) == [("deploy", "paused")]
    assert g.d.lifecycle.lock.show().record is None  # the lock is released
    # The sweep of abandoned deployments leaves a paused one alone.
    assert g.d.journal.mark_abandoned("lab") == []

    # Still outside the window: resume is refused like a deployment, changing nothing.
    g.clock.t = TUESDAY_1550 + 2 * HOUR
    with pytest.raises(GateRefused, match="refused by the window gate"):
        resume(g.d.lifecycle, on_interrupted="rollback", say=lambda _: None)
    # The next morning it continues where it stopped (a pause is finished, not rolled back).
    g.d.recorder.on.clear()
    g.clock.t = TUESDAY_1550 + 17 * HOUR + 15 * 60  # Wednesday 09:05
    g.d.runner.scripts += [survey({"node1": "1.1.0", "node2": "1.0.0", "node3": "1.0.0"}),
                           good_batch(["node2"]), good_batch(["node3"])]
    said: list[str] = []
    result = resume(g.d.lifecycle, on_interrupted="rollback", say=said.append)
    assert "was paused" in said[0] and "finish it: deploy 1.1.0" in said[1]
    assert result.outcome is not None and result.outcome.status == "succeeded"
    assert g.d.runner.batches[-2:] == [["node2"], ["node3"]]
    assert statuses(g) == [("resume", "succeeded"), ("resume", "refused"), ("deploy", "paused")]


def test_a_window_closing_mid_rollout_with_finish_goes_on_and_says_so(world: dict[str, Path]) -> None:
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES]]
    g = gated(world["config"], scripts, gates={**DAY_WINDOW, "on_window_close": "finish"})
    close_window_at_batch(g, 1)
    outcome = g.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    later = [v for v in verdicts(g, "window") if v[0] == "before_batch"][1:]
    assert later and all(d == "continue" and "finishing what was started (gates.on_window_close: "
                         "finish)" in r for _, d, r in later)


def test_a_window_closing_mid_rollout_with_rollback_fails_it_there_and_rolls_back(
    world: dict[str, Path],
) -> None:
    scripts = [survey(FROM_1_0), good_batch(["node1"]), revert_batch(["node1"])]
    g = gated(world["config"], scripts, gates={**DAY_WINDOW, "on_window_close": "rollback"})
    close_window_at_batch(g, 1)
    outcome = g.deploy("1.1.0")
    assert outcome.status == "rolled_back", outcome.summary
    assert outcome.summary.startswith("window: outside every release window")
    assert "(gates.on_window_close: rollback); rolled back node1" in outcome.summary
    assert g.d.runner.requests[-1].playbook == "revert.yml"
    assert exit_code_for(outcome) == 10


def test_in_blue_green_the_soak_finishes_and_the_pause_falls_before_the_uplift(
    world: dict[str, Path],
) -> None:
    scripts = [survey(dict.fromkeys(GREEN, "1.0.0")), good_batch(GREEN)]
    g = gated(world["bg_config"], scripts, gates={**DAY_WINDOW, "on_window_close": "pause"},
              strategy={"after_soak": "uplift"},
              preview_version=lambda backend: "1.1.0")
    # The window closes as live traffic moves to green: the soak runs on, the uplift waits.
    g.d.recorder.on[TrafficSwitched] = lambda ev: setattr(g.clock, "t", TUESDAY_1550 + HOUR)
    outcome = g.deploy("1.1.0")
    assert outcome.status == "paused", outcome.summary
    assert "paused by the window gate before releasing 1.1.0 to blue too" in outcome.summary
    assert g.d.lb.route(MAP, "live") == "hello_green"  # green is live on 1.1.0, blue untouched
    assert [list(r.hosts) for r in g.d.runner.requests] == [GREEN, GREEN]
    # Resumed in the next window: the uplift.
    g.clock.t = TUESDAY_1550 + 18 * HOUR
    g.d.runner.scripts += [survey(dict.fromkeys(BLUE, "1.0.0")), good_batch(BLUE)]
    result = resume(g.d.lifecycle, on_interrupted="rollback", say=lambda _: None)
    assert result.outcome is not None and result.outcome.status == "succeeded", result.outcome.summary
    assert g.d.lb.route(MAP, "live") == "hello_blue"


def test_a_rollback_to_a_release_that_ran_here_is_allowed_outside_windows_and_recorded(
    world: dict[str, Path],
) -> None:
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES],
               survey(dict.fromkeys(NODES, "1.1.0")), *[good_batch([n]) for n in NODES]]
    g = gated(world["config"], scripts, gates=DAY_WINDOW, clock=Clock(TUESDAY_1550 - HOUR))
    assert g.deploy("1.1.0").status == "succeeded"
    g.clock.t = TUESDAY_1550 + 5 * HOUR  # night
    with pytest.raises(GateRefused):
        g.deploy("1.2.0-badhealth")
    outcome = g.deploy("1.0.0", kind="rollback")
    assert outcome.status == "succeeded", outcome.summary
    assert g.gates.state.window == ("outside windows: a rollback to 1.0.0, which ran successfully "
                                    "here: allowed outside windows and calendar freezes")


def test_a_calendar_freeze_refuses_a_deployment(world: dict[str, Path]) -> None:
    g = gated(world["config"], [], gates={"freezes": [
        {"from": "2026-12-08", "to": "2026-12-09", "reason": "year-end trading"}]})
    with pytest.raises(GateRefused) as refused:
        g.deploy("1.1.0")
    assert refused.value.gate == "calendar_freeze"
    assert "in the calendar freeze 2026-12-08 to 2026-12-09 UTC (year-end trading)" in refused.value.message
    assert "allowed again from 2026-12-10T00:00:00Z" in refused.value.message


# -- the emergency freeze ----------------------------------------------------------------------


def test_a_frozen_environment_refuses_naming_who_when_and_why(world: dict[str, Path]) -> None:
    g = gated(world["config"], [], gates={})
    g.freeze.freeze(by="oncall@ops", reason="incident INC-42: database failover")
    with pytest.raises(GateRefused) as refused:
        g.deploy("1.1.0")
    message = refused.value.message
    assert message.startswith("refused by the freeze gate: environment 'lab' is frozen by oncall@ops at ")
    assert message.endswith(": incident INC-42: database failover; nothing was changed")
    assert "deployer unfreeze --env lab" in (refused.value.hint or "")
    assert g.d.runner.requests == []


def test_a_freeze_set_while_a_deployment_runs_pauses_it_and_unfreeze_lets_it_continue(
    world: dict[str, Path],
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    g = gated(world["config"], ReplayRunner([survey(FROM_1_0), good_batch(["node1"])], lb=lb), lb=lb,
              gates={"on_window_close": "finish"})  # a freeze pauses whatever windows do
    at_batch(g.d, 1, lambda: g.freeze.freeze(by="oncall@ops", reason="patching"))
    outcome = g.deploy("1.1.0")
    assert outcome.status == "paused", outcome.summary
    assert ("paused by the freeze gate before batch 2/3: environment 'lab' is frozen by oncall@ops"
            in outcome.summary)
    assert lb.admin == dict.fromkeys(NODES, "ready")
    with pytest.raises(GateRefused, match="freeze gate"):
        resume(g.d.lifecycle, on_interrupted="rollback", say=lambda _: None)
    assert g.freeze.unfreeze(by="oncall@ops", reason="done") is not None
    g.d.recorder.on.clear()
    g.d.runner.scripts += [survey({"node1": "1.1.0", "node2": "1.0.0", "node3": "1.0.0"}),
                           good_batch(["node2"]), good_batch(["node3"])]
    result = resume(g.d.lifecycle, on_interrupted="rollback", say=lambda _: None)
    assert result.outcome is not None and result.outcome.status == "succeeded"


def test_the_freeze_is_read_with_the_lock_at_each_safe_point_not_asked_for_again(
    world: dict[str, Path],
) -> None:
    """Over SSH each read of the lock's host is a new connection: at a safe point the lock's
    confirmation brings the freeze along; only admission (before the lock) asks for it."""
    host = FakeLockHost()
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES]]
    g = gated(world["config"], scripts, gates={}, lock=EnvironmentLock(host, "lab"))
    assert g.deploy("1.1.0").status == "succeeded"
    ops = [r["op"] for r in host.requests]
    assert ops.count("freeze_show") == 1 and ops.index("freeze_show") < ops.index("acquire")
    assert ops.count("renew") >= 4  # before_start and before each batch (and the lease)
    # And a freeze made between two safe points is seen at the next one, by the renewal.
    g.d.runner.scripts += [survey(dict.fromkeys(NODES, "1.1.0")), good_batch(["node1"])]
    at_batch(g.d, 1, lambda: g.freeze.freeze(by="oncall@ops", reason="now"))
    outcome = g.deploy("1.2.0-badhealth")
    assert outcome.status == "paused" and "frozen by oncall@ops" in outcome.summary, outcome.summary


# -- approvals ----------------------------------------------------------------------------------

APPROVALS: Callable[[People], dict[str, Any]] = lambda people: {  # noqa: E731
    "approvals": {"provider": "signed", "approvers": people.approvers()}}


def test_an_approved_deployment_goes_through_and_keeps_who_approved(world: dict[str, Path]) -> None:
    people = People.make(world["root"])
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES]]
    g = gated(world["config"], scripts, gates=APPROVALS(people))
    sam = people.approve("sam", g.d.env, "1.1.0", now=TUESDAY_1550)
    g.gates.state.request = with_approvals(people.requester(), sam)
    outcome = g.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert [(a["approver"], a["kind"]) for a in g.gates.state.approvals] == [("sam", "approval")]
    assert g.gates.state.requester is not None and g.gates.state.requester.name.startswith("key ")


@pytest.mark.parametrize(("case", "says"), [
    ("none", "needs 1 approval(s) by approvers with the role change, not the requester; 0 valid"),
    ("expired", "sam.approval by sam: it expired at 2026-12-08T15:49:00Z"),
    ("self", "it is signed by the requester's own key"),
    ("other release", "it approves version '1.2.0-badhealth', not '1.1.0'"),
    ("no requester", "the requester is not known by key, so four eyes cannot be checked"),
])
def test_an_approval_that_does_not_hold_is_refused(world: dict[str, Path], case: str, says: str) -> None:
    people = People.make(world["root"])
    g = gated(world["config"], [], gates=APPROVALS(people))
    env = g.d.env
    request = people.requester("sam" if case == "self" else "ci")
    approvals = {
        "none": (),
        "expired": (people.approve("sam", env, "1.1.0", now=TUESDAY_1550 - HOUR, expires_in=59 * 60),),
        "self": (people.approve("sam", env, "1.1.0", now=TUESDAY_1550),),
        "other release": (people.approve("sam", env, "1.2.0-badhealth", now=TUESDAY_1550),),
        "no requester": (people.approve("sam", env, "1.1.0", now=TUESDAY_1550),),
    }[case]
    if case == "no requester":
        request = with_approvals(request, requester=None, requester_secret=None)
    g.gates.state.request = with_approvals(request, *approvals)
    with pytest.raises(GateRefused) as refused:
        g.deploy("1.1.0")
    assert refused.value.gate == "approval" and says in refused.value.message, refused.value.message
    assert g.d.runner.requests == []


def test_an_approval_expiring_mid_rollout_pauses_it(world: dict[str, Path]) -> None:
    people = People.make(world["root"])
    g = gated(world["config"], [survey(FROM_1_0), good_batch(["node1"])], gates=APPROVALS(people))
    sam = people.approve("sam", g.d.env, "1.1.0", now=TUESDAY_1550, expires_in=60)
    g.gates.state.request = with_approvals(people.requester(), sam)
    at_batch(g.d, 1, lambda: setattr(g.clock, "t", TUESDAY_1550 + 120))
    outcome = g.deploy("1.1.0")
    assert outcome.status == "paused", outcome.summary
    assert "paused by the approval gate before batch 2/3" in outcome.summary
    assert "it expired at 2026-12-08T15:51:00Z" in outcome.summary


# -- High Risk ----------------------------------------------------------------------------------


def test_high_risk_without_both_approvals_is_refused(world: dict[str, Path]) -> None:
    people = People.make(world["root"])
    g = gated(world["config"], [], gates=APPROVALS(people))
    sam = people.approve("sam", g.d.env, "1.1.0", now=TUESDAY_1550)
    sam_hr = people.approve("sam", g.d.env, "1.1.0", now=TUESDAY_1550, high_risk=True)
    g.gates.state.request = with_approvals(people.requester(), sam, sam_hr)
    with pytest.raises(GateRefused) as refused:
        g.deploy("1.1.0", high_risk="drops a column")
    assert refused.value.gate == "high_risk"
    assert ("High Risk (drops a column) needs an approval as High Risk from each of "
            "service_management, engineering_management, by different approvers; missing: "
            "engineering_management") in refused.value.message
    [record] = g.d.journal.deployments("lab")
    assert record.details["high_risk"] == "drops a column"


def high_risk_request(people: People, g: Gated, version: str) -> None:
    env = g.d.env
    g.gates.state.request = with_approvals(
        people.requester(), people.approve("sam", env, version, now=TUESDAY_1550),
        people.approve("sam", env, version, now=TUESDAY_1550, high_risk=True),
        people.approve("eve", env, version, now=TUESDAY_1550, high_risk=True))


def test_high_risk_with_both_approvals_goes_through_and_halts_on_failure_rolling(
    world: dict[str, Path],
) -> None:
    people = People.make(world["root"])
    # node2 fails its smoke check; no rollback of node1 follows (no revert.yml is scripted).
    g = gated(world["config"], [survey(FROM_1_0), good_batch(["node1"]), bad_batch("node2")],
              gates=APPROVALS(people))
    high_risk_request(people, g, "1.1.0")
    outcome = g.deploy("1.1.0", high_risk="rewrites the orders table")
    assert outcome.status == "failed", outcome.summary
    assert [r.playbook for r in g.d.runner.requests] == ["rollout.yml"]
    assert g.d.runner.batches == [["node1"], ["node2"]]
    assert "High Risk, halted with nothing rolled back: on 1.1.0: node1" in outcome.summary
    assert "not changed, on 1.0.0: node3" in outcome.summary
    reason = next(r for p, d, r in verdicts(g, "high_risk") if p == "admission")
    assert reason.startswith("High Risk (rewrites the orders table): approved by sam "
                             "(service_management), eve (engineering_management)")
    assert g.d.recorder.of(DeploymentStarted)[0].high_risk == "rewrites the orders table"
    decide = next(t for t in g.said if t.startswith("High Risk"))
    assert "service_management (sam) and engineering_management (eve)" in decide


def test_high_risk_blue_green_does_not_switch_back_on_a_failed_soak(world: dict[str, Path]) -> None:
    from test_bluegreen import soaks

    people = People.make(world["root"])
    g = gated(world["bg_config"], [survey(dict.fromkeys(GREEN, "1.0.0")), good_batch(GREEN)],
              gates=APPROVALS(people), preview_version=lambda backend: "1.1.0",
              soaks=lambda lb: soaks(lb, errors={n: (100, 50) for n in GREEN}))
    high_risk_request(people, g, "1.1.0")
    outcome = g.deploy("1.1.0", high_risk="one-way schema change")
    assert outcome.status == "failed", outcome.summary
    assert ("High Risk, halted: live traffic stays on green (not switched back automatically)"
            in outcome.summary)
    assert g.d.lb.route(MAP, "live") == "hello_green"
    assert len(g.d.runner.requests) == 2  # green was not put back either


def test_a_release_without_a_rollback_path_is_high_risk_by_its_manifest(world: dict[str, Path]) -> None:
    people = People.make(world["root"])
    g = gated(world["config"], [], gates=APPROVALS(people))
    verify = g.d.lifecycle.verify_release

    def irreversible(version: str) -> Any:
        import dataclasses

        return dataclasses.replace(verify(version), irreversible="drops legacy_orders")

    g.d.lifecycle.verify_release = irreversible
    g.gates.state.request = people.requester()
    with pytest.raises(GateRefused, match=r"High Risk \(1\.1\.0 has no rollback path: drops legacy_orders\)"):
        g.deploy("1.1.0")


# -- break-glass --------------------------------------------------------------------------------


def test_break_glass_needs_its_approval_and_passes_a_closed_window(world: dict[str, Path]) -> None:
    people = People.make(world["root"])
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES]]
    g = gated(world["config"], scripts, gates={**DAY_WINDOW, **APPROVALS(people)},
              clock=Clock(TUESDAY_1550 + 6 * HOUR))
    g.gates.state.request = with_approvals(people.requester(), break_glass=True, reason="INC-7 fix")
    with pytest.raises(GateRefused, match="refused by the break_glass gate: a break-glass deployment "
                       "needs a break-glass approval by an approver with the role break_glass"):
        g.deploy("1.1.0")
    olu = people.approve("olu", g.d.env, "1.1.0", now=g.clock.t, break_glass=True)
    g.gates.state.request = with_approvals(g.gates.state.request, olu)
    outcome = g.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert g.gates.state.break_glass == {"reason": "INC-7 fix", "approved_by": "olu",
                                         "key_id": people.keys["olu"].key_id_hex}
    assert g.gates.state.window.startswith("outside windows: break-glass")


# -- decision records ---------------------------------------------------------------------------


def test_a_strategy_without_zero_downtime_needs_a_decision_record(world: dict[str, Path]) -> None:
    g = gated(world["config"], [], gates={}, strategy={"batch_size": "100%", "min_healthy": "0"})
    with pytest.raises(GateRefused) as refused:
        g.deploy("1.1.0")
    assert refused.value.gate == "decision_record"
    assert ("cannot deploy with zero downtime (batches of the whole fleet (strategy.batch_size: 100% "
            "of 3 nodes); a capacity floor of 0 (strategy.min_healthy: 0))") in refused.value.message
    scripts = [survey(FROM_1_0), good_batch(NODES)]
    g = gated(world["config"], scripts, strategy={"batch_size": "100%", "min_healthy": "0"},
              gates={"decision_record": {"id": "DR-0007", "ref": "docs/decisions/0007.md"}})
    assert g.deploy("1.1.0").status == "succeeded"
    assert g.gates.state.decision_record == {"id": "DR-0007", "ref": "docs/decisions/0007.md"}


def test_a_single_node_group_needs_one_and_blue_green_legs_are_judged_as_blue_green(
    world: dict[str, Path],
) -> None:
    g = gated(world["config"], [], gates={}, group_sizes={"": 1})
    with pytest.raises(GateRefused, match="a single node in group hello_nodes"):
        g.deploy("1.1.0")
    # Each leg is released all at once (its derived batch is 100%): not a gap.
    bg = gated(world["bg_config"], [survey(dict.fromkeys(GREEN, "1.0.0")), good_batch(GREEN)],
               gates={}, preview_version=lambda backend: "1.1.0")
    assert bg.deploy("1.1.0").status == "succeeded"


def test_a_single_node_lab_references_its_decision_record_and_passes_the_gate(tmp_path: Path) -> None:
    import yaml

    from deployer.config import EnvironmentConfig
    from deployer.gates.decisions import zero_downtime_gaps
    from deployer.lab import LabSpec
    from deployer.lab._render import deployer_config

    def lab_env(**fields: Any) -> EnvironmentConfig:
        text = deployer_config(
            LabSpec(**fields).with_ports(defaults=True, pick=lambda n, taken: []),
            inventory_path=Path("inventory.yml"), store_url="http://127.0.0.1:8081/",
            trusted_key=Path("keys/release.pub"), haproxy_socket="/run/lab/admin.sock",
            legs_map_path="/run/lab/legs.map")
        return EnvironmentConfig.model_validate(yaml.safe_load(text)["environments"]["lab"])

    single = lab_env(nodes=1)
    assert zero_downtime_gaps(single, {"": 1})  # one node: no zero downtime...
    assert single.gates.decision_record is not None  # ...accepted by the lab's decision record
    assert single.gates.decision_record.id == "LAB-1"
    assert lab_env(nodes=3).gates.decision_record is None  # three nodes need none
    assert lab_env(nodes=1, legs=True).gates.decision_record is None  # blue-green: zero downtime
