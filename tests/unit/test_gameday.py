"""Game days without a lab: what the steady state and the journal say, which scenarios run and
how each is judged, the verdict, the report, and the refusal of an environment that does not
allow game days. The scenarios themselves run on a lab in tests/e2e/test_gameday_lab.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import MINIMAL_CONFIG, write_config

from deployer import ConfigError, UsageError, load_config
from deployer.adapters.inventory import Node
from deployer.adapters.journal import Journal
from deployer.agent import Acted, AgentStatus, Desired, LastDeployment, Step
from deployer.config import GatesConfig
from deployer.engine.model import NodeStatus, Outcome
from deployer.engine.states import NodePhase
from deployer.gameday import GameDayReport, ScenarioResult, check_allowed, decide, select
from deployer.gameday._load import LoadCount
from deployer.gameday._scenarios import (
    SCENARIOS,
    ApprovalExpires,
    Context,
    KillMidBatch,
    PointerChanged,
    SecondController,
    SlowDrain,
    SmokeFail,
    SoakDegrade,
    WindowCloses,
)
from deployer.gameday._steady import NodeView, Observation, journal_claims, journal_differences
from deployer.gameday._steady import steady_problems as problems

ALLOWED = MINIMAL_CONFIG + "    gameday: {allowed: true, releases: [1.0.0, 1.1.0]}\n"


# -- the steady state and the journal ----------------------------------------------------------


def view(name: str, version: str | None = "1.0.0", *, leg: str | None = None, lb: str = "UP",
         healthy: bool | None = True) -> NodeView:
    return NodeView(name=name, leg=leg, lb=lb, in_service=lb == "UP", version=version,
                    healthy=healthy)


KNOWN = ("1.0.0", "1.1.0")


def test_the_steady_state_holds_only_when_every_node_serves_one_known_release() -> None:
    good = [view("node1"), view("node2")]
    assert problems(good, known=KNOWN, threshold=0.01) == []
    assert problems([view("node1"), view("node2", lb="MAINT")], known=KNOWN, threshold=0.01) == [
        "node2 is out of the load balancer (MAINT)"]
    assert problems([view("node1"), view("node2", "1.1.0")], known=KNOWN, threshold=0.01) == [
        "the fleet runs several releases: node1 1.0.0, node2 1.1.0"]
    assert "node1 runs 1.2.0-x, not a known release" in problems(
        [view("node1", "1.2.0-x")], known=KNOWN, threshold=0.01)[0]
    assert problems([view("node1", None, healthy=False)], known=KNOWN, threshold=0.01) == [
        "node1 is not healthy (no answer)"]
    assert problems(good, known=KNOWN, threshold=0.01, lb_error="no socket") == [
        "the load balancer cannot be read: no socket"]


def test_blue_green_legs_may_run_different_releases_with_live_traffic_on_one() -> None:
    legs = [view("node1", "1.0.0", leg="blue"), view("node2", "1.1.0", leg="green")]
    assert problems(legs, known=KNOWN, threshold=0.01, legs=True, live_leg="blue") == []
    assert problems(legs, known=KNOWN, threshold=0.01, legs=True, live_leg=None) == [
        "live traffic is not on one of the legs"]


def test_the_error_share_through_the_load_balancer_is_judged_on_enough_requests() -> None:
    good = [view("node1")]
    few = LoadCount(sent=3)
    assert "too few requests" in problems(good, known=KNOWN, threshold=0.01, load=few)[0]
    bad = LoadCount(sent=100, failed=5)
    bad.errors["HTTP 503"] = 5
    assert problems(good, known=KNOWN, threshold=0.01, load=bad) == [
        "5 of 100 requests through the load balancer failed (5.0% > 1.0%): HTTP 503 x5"]
    assert problems(good, known=KNOWN, threshold=0.1, load=bad) == []


def journal_with(tmp_path: Path, *deployments: tuple[str, list[tuple[str, str, str, str]]],
                 running: bool = False) -> Journal:
    """A journal of deployments, each (version, [(node, phase, from, to)]), all finished."""
    journal = Journal(tmp_path / "journal.sqlite")
    for version, events in deployments:
        dep = journal.start_deployment(env="lab", app="hello", kind="deploy", version=version,
                                       command="test")
        for node, phase, from_v, to_v in events:
            journal.record_phase(dep, node, phase, from_version=from_v, to_version=to_v)
        if not running:
            journal.finish_deployment(dep, "succeeded")
    return journal


def test_the_journal_agrees_when_its_last_word_on_each_node_is_what_runs(tmp_path: Path) -> None:
    journal = journal_with(
        tmp_path,
        ("1.1.0", [("node1", "done", "1.0.0", "1.1.0"), ("node2", "done", "1.0.0", "1.1.0")]),
        # A deployment of 1.0.0 whose canary was reverted (back to 1.1.0); node2 not touched.
        ("1.0.0", [("node1", "staged", "1.1.0", "1.0.0"), ("node1", "reverted", "1.1.0", "1.0.0"),
                   ("node2", "skipped", "1.1.0", "1.0.0")]),
    )
    claims, live, abandoned = journal_claims(journal, "lab", ["node1", "node2"])
    assert claims["node1"] == ({"1.1.0"}, "reverted in deployment 2")
    assert claims["node2"] == ({"1.1.0"}, "skipped in deployment 2")
    live_now = Observation(at=0, nodes=[view("node1", "1.1.0"), view("node2", "1.1.0")])
    assert journal_differences(claims, live, abandoned, live_now) == []
    wrong = Observation(at=0, nodes=[view("node1", "1.0.0"), view("node2", "1.1.0", lb="MAINT")])
    assert journal_differences(claims, live, abandoned, wrong) == [
        "node1: the journal says 1.1.0 (reverted in deployment 2), the node runs 1.0.0",
        "node2 is out of the load balancer (MAINT) and the journal does not say that deployer "
        "left it out",
    ]
    # A node deployer says it left out is explained.
    assert journal_differences(claims, live, abandoned, wrong, left_out=["node2"])[1:] == []


def test_an_abandoned_deployment_and_the_live_leg_are_compared_too(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, ("1.1.0", [("node3", "done", "1.0.0", "1.1.0")]))
    dep = journal.deployments("lab")[0].id
    journal.record_phase(dep, "live traffic", "switched", to_version="1.1.0",
                         detail="live traffic switched from blue to green in one operation")
    claims, live, _ = journal_claims(journal, "lab", ["node3"])
    assert live == "green"
    on_blue = Observation(at=0, nodes=[view("node3", "1.1.0", leg="green")], live_leg="blue")
    assert journal_differences(claims, live, [], on_blue) == [
        "the journal says live traffic went to green; it is on blue"]
    running = journal.start_deployment(env="lab", app="hello", kind="deploy", version="1.0.0",
                                       command="test")
    with journal._tx() as db:  # its process: one that is gone
        db.execute("UPDATE deployments SET pid = 999999999 WHERE id = ?", (running,))
    _, _, abandoned = journal_claims(journal, "lab", ["node3"])
    assert abandoned == [f"deployment {running} (deploy 1.0.0) is recorded as running, and its "
                         "process is gone"]


def test_a_node_a_resume_skips_because_the_paused_deployment_updated_it_runs_the_target(
    tmp_path: Path,
) -> None:
    from deployer.engine.states import updated_before

    journal = journal_with(
        tmp_path,
        ("1.1.0", [("node1", "done", "1.0.0", "1.1.0"), ("node2", "staged", "1.0.0", "1.1.0")]),
        ("1.1.0", [("node1", "skipped", "1.0.0", "1.1.0"), ("node2", "done", "1.0.0", "1.1.0")]),
    )
    dep = journal.deployments("lab")[0].id
    journal.record_phase(dep, "node1", "skipped", from_version="1.0.0", to_version="1.1.0",
                         detail="already on 1.1.0" + updated_before("1.0.0", 1))
    claims, _, _ = journal_claims(journal, "lab", ["node1", "node2"])
    assert claims["node1"] == ({"1.1.0"}, f"skipped in deployment {dep}")
    assert claims["node2"] == ({"1.1.0"}, f"done in deployment {dep}")


def test_a_node_caught_mid_change_may_run_either_release(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, ("1.1.0", [("node1", "failed", "1.0.0", "1.1.0")]))
    claims, _, _ = journal_claims(journal, "lab", ["node1"])
    assert claims["node1"][0] == {"1.0.0", "1.1.0"}


# -- choosing and judging scenarios ------------------------------------------------------------


def test_all_runs_every_scenario_in_order_and_says_which_do_not_apply() -> None:
    chosen = select(["all"], "rolling")
    assert [s.name for s, _ in chosen] == [s.name for s in SCENARIOS]
    why = {s.name: w for s, w in chosen}
    assert why["smoke-fail"] == "" and why["slow-drain"] == ""
    assert why["kill-during-soak"] == ("for blue-green environments; this one is rolling")
    assert [s.name for s, _ in select(["smoke-fail", "smoke-fail"], "blue-green")] == ["smoke-fail"]
    with pytest.raises(UsageError, match="no scenario named 'nope'"):
        select(["nope"], "rolling")


def node_status(name: str, phase: NodePhase, *, cut: int = 0, unreachable: bool = False) -> NodeStatus:
    node = Node(name=name, address="127.0.0.1", app_host="127.0.0.1", lb_server=name)
    return NodeStatus(node=node, phase=phase, sessions_cut=cut, unreachable=unreachable)


def outcome(status: str, **nodes: NodeStatus) -> Outcome:
    return Outcome(deployment_id=1, kind="deploy", version="1.1.0", status=status, nodes=nodes,
                   summary="s", uid="01TEST")


CTX = Context(env_name="lab", strategy="rolling", baseline="1.0.0", target="1.1.0",
              fault_file="/etc/hello/fault", release_root="/opt/hello")


def rehearsal(**fields: Any) -> Any:
    base: dict[str, Any] = {"ctx": CTX, "outcome": None, "exit_code": None, "hit_nodes": [],
                            "long_lived": None, "second": None, "killed_uid": "",
                            "resume_found": None, "uids": [], "events": [], "before_fix": None}
    base.update(fields)
    r = SimpleNamespace(**base)
    r.saw = lambda test: any(test(e) for e in r.events)
    r.actual = lambda: f"exit {r.exit_code}"
    return r


def test_a_failed_smoke_check_is_safe_only_reverted_and_rolled_back() -> None:
    s = SmokeFail()
    reverted = outcome("rolled_back", node1=node_status("node1", NodePhase.REVERTED))
    assert s.judge(rehearsal(outcome=reverted, exit_code=10, hit_nodes=["node1"])) == []
    left = outcome("failed", node1=node_status("node1", NodePhase.FAILED))
    assert s.judge(rehearsal(outcome=left, exit_code=11, hit_nodes=["node1"])) == [
        "it ended with exit 11, expected 10", "node1 ended failed, not reverted to 1.0.0"]
    assert s.judge(rehearsal(outcome=outcome("succeeded"), exit_code=0)) == [
        "it ended with exit 0, expected 10", "its status is succeeded, expected rolled_back or failed"]


def test_a_degraded_release_must_be_failed_by_the_soak() -> None:
    s = SoakDegrade()
    failed = [{"type": "soak_verdict", "outcome": "failed"}]
    assert s.judge(rehearsal(outcome=outcome("rolled_back"), exit_code=10, events=failed)) == []
    assert s.judge(rehearsal(outcome=outcome("rolled_back"), exit_code=10)) == [
        "the soak did not fail the release"]
    assert s.detects({"type": "soak_verdict", "outcome": "failed"})


def test_a_slow_drain_must_report_at_least_the_sessions_it_cut() -> None:
    s = SlowDrain()
    done = outcome("succeeded", node1=node_status("node1", NodePhase.DONE, cut=1),
                   node2=node_status("node2", NodePhase.DONE))
    assert s.judge(rehearsal(outcome=done, exit_code=0, long_lived=LoadCount(2, 1))) == []
    assert s.judge(rehearsal(outcome=done, exit_code=0, long_lived=LoadCount(2, 2))) == [
        "2 long-lived request(s) failed but the outcome reports 1 session(s) cut"]
    quiet = outcome("succeeded", node1=node_status("node1", NodePhase.DONE))
    assert "no drain timed out" in s.judge(rehearsal(outcome=quiet, exit_code=0))[0]


def test_a_second_controller_must_be_refused_by_the_lock() -> None:
    from deployer.gameday._runner import SecondController as Second

    s = SecondController()
    ok = outcome("succeeded")
    # Its refusal on its own record is fine; a deployment that ran there is not.
    assert s.judge(rehearsal(outcome=ok, exit_code=0, second=Second(6, "locked", []))) == []
    assert s.judge(rehearsal(outcome=ok, exit_code=0, second=Second(6, "locked", ["refused"]))) == []
    assert s.judge(rehearsal(outcome=ok, exit_code=0, second=Second(6, "locked", ["succeeded"]))) == [
        "the second controller recorded a deployment in its journal that was not refused (succeeded)"]
    assert s.judge(rehearsal(outcome=ok, exit_code=0, second=Second(0, "", ["succeeded"]))) == [
        "the second controller ended with exit 0, not 6 (the lock): "]
    assert s.judge(rehearsal(outcome=ok, exit_code=0)) == ["the second controller did not run"]


def gates_set(policy: str) -> Any:
    return SimpleNamespace(config=GatesConfig(on_window_close=policy))  # type: ignore[arg-type]


def test_a_window_closing_must_pause_the_deployment_then_resume_must_finish_it() -> None:
    s = WindowCloses()
    stop = {"type": "check", "check": "window", "decision": "stop", "reason": "outside"}
    paused = outcome("paused")
    done = Outcome(deployment_id=2, kind="resume", version="1.1.0", status="succeeded", nodes={},
                   summary="s", uid="01RESUMED")
    fine = rehearsal(gates=gates_set("pause"), events=[stop], before_fix=(15, paused),
                     resume_found="01TEST", outcome=done, exit_code=0)
    assert s.judge(fine) == []
    assert s.detects(stop) and not s.detects({**stop, "check": "approval"})
    # Went on through the closed window: unsafe, and no resume ran.
    ran_on = rehearsal(gates=gates_set("pause"), outcome=outcome("succeeded"), exit_code=0)
    assert s.judge(ran_on) == [
        "the deployment was not paused: succeeded (exit 0), expected paused (exit 15)",
        "the window gate did not stop the deployment at a safe point",
        "`deployer resume` did not run after the pause"]
    # Resumed something else, which failed.
    wrong = rehearsal(gates=gates_set("pause"), events=[stop], before_fix=(15, paused),
                      resume_found="01OTHER", outcome=outcome("failed"), exit_code=11)
    assert s.judge(wrong) == ["`deployer resume` resumed 01OTHER, not the paused deployment 01TEST",
                              "the rehearsal deployment did not succeed (exit 11)"]


def test_an_expiring_approval_is_judged_by_on_window_close() -> None:
    s = ApprovalExpires()
    fail = {"type": "check", "check": "approval", "decision": "fail", "reason": "expired"}
    finish = {"type": "check", "check": "approval", "decision": "continue",
              "reason": "needs 1 approval(s): finishing what was started (gates.on_window_close: finish)"}
    assert s.judge(rehearsal(gates=gates_set("rollback"), events=[fail],
                             outcome=outcome("rolled_back"), exit_code=10)) == []
    assert s.judge(rehearsal(gates=gates_set("rollback"), outcome=outcome("succeeded"),
                             exit_code=0)) == [
        "it ended with exit 0, expected 10", "its status is succeeded, expected rolled_back or failed",
        "the approval gate did not fail the deployment"]
    assert s.judge(rehearsal(gates=gates_set("finish"), events=[finish], outcome=outcome("succeeded"),
                             exit_code=0)) == []
    assert s.judge(rehearsal(gates=gates_set("finish"), outcome=outcome("succeeded"), exit_code=0)) == [
        "the approval gate did not say it let the deployment finish"]
    assert s.detects(fail) and s.detects(finish)


def test_a_killed_deployment_must_be_the_one_resume_finds_and_finishes() -> None:
    s = KillMidBatch()
    assert s.judge(rehearsal()) == ["the deploying process was not killed at the point"]
    assert s.judge(rehearsal(killed_uid="A", resume_found="B")) == [
        "`deployer resume` resumed B, not the killed deployment A"]
    assert s.judge(rehearsal(killed_uid="A", resume_found="A", outcome=outcome("succeeded"),
                             exit_code=0)) == []


def test_the_verdict() -> None:
    clean: dict[str, Any] = {"crashed": "", "never_injected": "", "wrong": [], "unnamed": [],
                             "undo_failed": [], "after": [], "journal": []}
    assert decide(**clean) == ("safe", [])
    assert decide(**{**clean, "wrong": ["it ended with exit 0, expected 10"]})[0] == "unsafe"
    verdict, reasons = decide(**{**clean, "unnamed": ["node2"]})
    assert verdict == "unsafe" and "without the outcome saying so: node2" in reasons[0]
    assert decide(**{**clean, "after": ["node2 is out of the load balancer (MAINT)"]})[0] == "unsafe"
    assert decide(**{**clean, "journal": ["node1: ..."]})[0] == "unsafe"
    # It could not tell: its fault never went in, or it was stopped.
    assert decide(**{**clean, "never_injected": "the start of batch 2 was not reached"}) == (
        "inconclusive", ["the fault never went in: the start of batch 2 was not reached"])
    verdict, reasons = decide(**{**clean, "crashed": "stopped by the operator",
                                 "after": ["node1 runs two"]})
    assert verdict == "inconclusive" and reasons[1] == "the steady state after it: node1 runs two"
    # A fault left in place is never merely inconclusive.
    assert decide(**{**clean, "crashed": "stopped", "undo_failed": ["cut: nft"]})[0] == "unsafe"


def look(decision: str, *, desired: str, revision: str, deployed: str = "",
         running: str | None = None) -> Step:
    """A runner's look as its published status says it."""
    last = (LastDeployment(uid=f"01{deployed}", id=1, kind="deploy", version=deployed,
                           status="succeeded", exit_code=0, revision=revision) if deployed else None)
    status = AgentStatus(env="lab", app="hello", decision=decision,
                         desired=Desired(desired, revision=revision), running=running,
                         acted=Acted(revision, desired), last_deployment=last,
                         deployment=last.uid if last else "")
    return Step(decision, 0, status)


def started(uid: str) -> dict[str, Any]:
    return {"type": "deployment_started", "deployment": {"uid": uid, "version": "x"}}


def finished(uid: str) -> dict[str, Any]:
    return {"type": "deployment_finished", "deployment": {"uid": uid}, "status": "succeeded"}


def test_a_pointer_changed_mid_deployment_is_deployed_at_the_next_look_never_lost() -> None:
    s = PointerChanged()
    looks = [look("deployed", desired="1.1.0", revision="r1", deployed="1.1.0", running="1.1.0"),
             look("deployed", desired="1.0.0", revision="r2", deployed="1.0.0", running="1.0.0"),
             look("in_sync", desired="1.0.0", revision="r2", running="1.0.0")]
    one_at_a_time = [started("A"), finished("A"), started("B"), finished("B")]

    def judged(steps: list[Step], events: list[dict[str, Any]]) -> list[str]:
        r = rehearsal(looks=steps)
        r.watches = [SimpleNamespace(events=lambda: [SimpleNamespace(event=e) for e in events])]
        return list(s.judge(r))

    assert judged(looks, one_at_a_time) == []
    # The new value taken for the one the runner read: it would never be deployed.
    claimed = [look("deployed", desired="1.0.0", revision="r2", deployed="1.1.0", running="1.1.0"),
               look("in_sync", desired="1.0.0", revision="r2", running="1.1.0"), looks[2]]
    assert judged(claimed, one_at_a_time) == [
        "look 1 published that it acted on 1.0.0, not on the value it read (1.1.0)",
        "look 2 did not deploy the pointer's new value 1.0.0: in_sync",
    ]
    assert judged(looks, [started("A"), started("B"), finished("A"), finished("B")]) == [
        "deployment B started while A had not finished"]
    assert judged(looks[:2], one_at_a_time) == ["the runner looked 2 time(s), not 3"]


def test_a_second_controllers_config_keeps_every_path_as_loaded(tmp_path: Path) -> None:
    from deployer.gameday import GameDay

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "preprod.pub").write_text("untrusted comment: x\nRWQ=\n")
    config = load_config(write_config(tmp_path, ALLOWED + (
        "    pointer: {kind: file, path: pointer/lab.json}\n"
        "    promotion: {after: preprod, trusted_keys: [keys/preprod.pub], store: file:///tmp/p}\n")))
    game = GameDay(config, "lab", wire=lambda *a, **k: None,  # type: ignore[arg-type,return-value]
                   load_url="http://127.0.0.1:9/", say=lambda text: None)
    second = load_config(game.second_config())
    env, other = config.environment("lab"), second.environment("lab")
    assert other.pointer == env.pointer and other.promotion == env.promotion
    assert other.inventory == env.inventory and other.trusted_keys == env.trusted_keys
    assert second.state_dir != config.state_dir


# -- the environment must allow game days ------------------------------------------------------


def test_an_environment_that_does_not_allow_game_days_is_refused_naming_the_setting(
    tmp_path: Path,
) -> None:
    config = load_config(write_config(tmp_path, MINIMAL_CONFIG))
    with pytest.raises(ConfigError) as err:
        check_allowed(config, "lab")
    assert "field 'environments.lab.gameday.allowed'" in str(err.value)
    assert "game days are not allowed on environment 'lab'" in str(err.value)
    few = load_config(write_config(tmp_path, MINIMAL_CONFIG + "    gameday: {allowed: true}\n"))
    with pytest.raises(ConfigError, match=r"gameday\.releases"):
        check_allowed(few, "lab")
    assert check_allowed(load_config(write_config(tmp_path, ALLOWED)), "lab").allowed


# -- the report --------------------------------------------------------------------------------


def report() -> GameDayReport:
    rep = GameDayReport(env="staging", strategy="rolling", releases=["1.0.0", "1.1.0"],
                        load_url="https://staging.example.com/", rate=20, config="/etc/d.yml",
                        hypothesis="every node ...", started=1_800_000_000, ended=1_800_000_200)
    rep.results = [
        ScenarioResult(name="smoke-fail", title="A release failing its smoke check",
                       strategy="rolling", verdict="safe", fault="`unhealthy 1.1.0` on node1",
                       point="the first node entering `draining`", expected="reverted (exit 10)",
                       actual="rolled_back (exit 10): 1.1.0 failed on node1", exit_code=10,
                       detected_s=10.4, detected_by="node1 reverting", restored_s=12.1,
                       requests={"sent": 320, "failed": 0, "errors": {}},
                       journal_consistent=True, evidence={"journal": ["01ABC"], "events": "x.jsonl"},
                       timeline=[{"t": 0.5, "what": "deploy 1.1.0: started"}]),
        ScenarioResult(name="lb-api-down", title="The load balancer's API unavailable",
                       strategy="rolling", verdict="unsafe", fault="socket moved aside",
                       point="before_batch 2", expected="exit 11", actual="succeeded (exit 0): x",
                       reasons=["it ended with exit 0, expected 10 or 11"],
                       requests={"sent": 100, "failed": 3, "errors": {"HTTP 503": 3}},
                       left_out_after=["node2"], journal_consistent=False,
                       journal_differences=["node2: the journal says 1.1.0"]),
        ScenarioResult(name="kill-during-soak", title="Killed during a soak", strategy="rolling",
                       verdict="skipped", reasons=["for blue-green environments"]),
    ]
    return rep


def test_the_report_says_what_happened_for_someone_who_was_not_there(tmp_path: Path) -> None:
    rep = report()
    assert not rep.safe and rep.counts() == {"safe": 1, "unsafe": 1, "inconclusive": 0, "skipped": 1}
    md_path, json_path = rep.write(tmp_path)
    md = md_path.read_text()
    assert md.startswith("# Game day on `staging`")
    assert "**Result: NOT SAFE: 1 unsafe.**" in md
    assert ("| smoke-fail | safe | rolled_back (exit 10) | 10.4 s | 12.1 s | 320 / 0 | 0 | yes |"
            in md)
    assert "| lb-api-down | unsafe | succeeded (exit 0) | - | - | 100 / 3 | 1 | no |" in md
    assert "| kill-during-soak | skipped | for blue-green environments | - | - | - | - | - |" in md
    assert "### How to read this report" in md
    section = md.split("## 2. `lb-api-down`")[1]
    assert "**Verdict: unsafe.** It ended with exit 0, expected 10 or 11." in section
    assert "- **Requests through the load balancer:** 100 sent, 3 failed (HTTP 503: 3)" in section
    assert "- **Nodes left out of the load balancer:** 1 (node2)" in section
    assert "- **Journal consistent with the live state:** no: node2: the journal says 1.1.0" in section
    assert "- **Time to detect:** 10.4 s (node1 reverting)" in md
    assert "in the journal: `01ABC`; events: `x.jsonl`" in md
    data = json.loads(json_path.read_text())
    assert data["safe"] is False and data["duration_s"] == 200.0
    assert [s["verdict"] for s in data["scenarios"]] == ["safe", "unsafe", "skipped"]
    assert data["scenarios"][0]["requests"] == {"sent": 320, "failed": 0, "errors": {}}


def test_a_game_day_is_safe_when_every_scenario_that_ran_was() -> None:
    rep = report()
    rep.results = [r for r in rep.results if r.verdict != "unsafe"]
    assert rep.safe
    rep.interrupted = True
    assert not rep.safe


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_scenario_says_its_fault_point_and_safe_outcome(scenario: Any) -> None:
    for ctx in (CTX, Context(env_name="lab", strategy="blue-green", baseline="1.0.0",
                             target="1.1.0", fault_file="/etc/hello/fault",
                             release_root="/opt/hello", live_leg="blue")):
        assert scenario.fault(ctx) and scenario.point(ctx) and scenario.expected(ctx)
    assert scenario.title and set(scenario.strategies) <= {"rolling", "blue-green"}
