"""The rolling strategy through the engine's lifecycle, at the runner seam: the runner replays
scripted events, everything else is real (journal on disk, signed artefacts in a file store, the
planner, the lifecycle, the state machine). Fixtures: tests/unit/conftest.py."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import NODES, Deployment

from deployer import (
    ConfigError,
    DeploymentFailed,
    DeploymentRefused,
    Interrupted,
    LockHeldError,
    LockLostError,
    load_config,
)
from deployer.adapters.lock import EnvironmentLock
from deployer.adapters.process import Identity
from deployer.adapters.runner import EventSink, RunRequest, RunResult
from deployer.engine.events import BatchStarted, DeploymentFinished, DeploymentStarted
from deployer.engine.lifecycle import raise_for
from deployer.testing import (
    FakeLockHost,
    ReplayRunner,
    bad_batch,
    ev,
    good_batch,
    revert_batch,
    stats,
    survey,
)

FIXTURES = Path(__file__).parent / "fixtures"
Make = Callable[..., Deployment]


def test_success_rolls_one_node_at_a_time(deployment: Make) -> None:
    d = deployment([
        survey(dict.fromkeys(NODES, "1.0.0")),
        good_batch(["node1"]), good_batch(["node2"]), good_batch(["node3"]),
    ])
    outcome = d.deploy("1.1.0")
    runner, journal = d.runner, d.journal
    assert outcome.status == "succeeded"
    assert runner.batches == [["node1"], ["node2"], ["node3"]]
    # One run for the deployment, pre-staging on every node at once, then the plan's batches.
    assert [r.playbook for r in runner.requests] == ["rollout.yml"]
    assert runner.requests[0].forks == 3
    assert runner.requests[0].extravars["deployer_version"] == "1.1.0"
    assert len(runner.requests[0].extravars["deployer_release_sha256"]) == 64
    assert runner.plans[0]["deployer_rollout_hosts"] == NODES
    assert runner.plans[0]["deployer_batch_sizes"] == [1, 1, 1]
    assert d.phases(outcome, "node2") == [
        "staging", "staged", "draining", "deploying", "smoke", "rejoining", "done"]
    record = journal.deployments("lab")[0]
    assert record.status == "succeeded" and record.uid == outcome.uid and len(outcome.uid) == 26
    assert d.lifecycle.lock.show().record is None  # released


def test_bad_release_is_reverted_on_the_first_node_and_stops(deployment: Make) -> None:
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), bad_batch("node1")])
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.nodes["node1"].phase.value == "reverted"
    # The node's outcome names the root cause (the smoke check), not the cleanup's echo of it.
    assert outcome.nodes["node1"].cause == "GET /health answered 503"
    assert outcome.nodes["node1"].detail == "GET /health answered 503"
    assert [outcome.nodes[n].phase.value for n in ("node2", "node3")] == ["staged", "staged"]
    assert len(runner.requests) == 1 and runner.batches == [["node1"]]  # nothing to roll back
    assert outcome.status == "rolled_back"
    assert not outcome.out_of_service
    with pytest.raises(DeploymentFailed):
        raise_for(outcome)


def test_failure_on_the_last_node_rolls_back_the_others_in_reverse(deployment: Make) -> None:
    d = deployment([
        survey(dict.fromkeys(NODES, "1.0.0")),
        good_batch(["node1"]), good_batch(["node2"]), bad_batch("node3"),
        revert_batch(["node2"]), revert_batch(["node1"]),
    ])
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.status == "rolled_back"
    reverts = [r for r in runner.requests if r.playbook == "revert.yml"]
    assert [list(r.hosts) for r in reverts] == [["node2"], ["node1"]]
    assert all(r.extravars["deployer_revert_to"] == "1.0.0" for r in reverts)
    assert d.phases(outcome, "node1")[-3:] == ["done", "reverting", "reverted"]
    assert {n: s.phase.value for n, s in outcome.nodes.items()} == dict.fromkeys(NODES, "reverted")


def test_halt_leaves_updated_nodes_alone(deployment: Make) -> None:
    d = deployment([
        survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), bad_batch("node2"),
    ], strategy={"on_failure": "halt"})
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.status == "failed"
    assert outcome.nodes["node1"].phase.value == "done"
    assert not [r for r in runner.requests if r.playbook == "revert.yml"]


def test_rerun_of_a_finished_deployment_is_a_no_op(deployment: Make) -> None:
    d = deployment([survey(dict.fromkeys(NODES, "1.1.0"))])
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert [r.playbook for r in runner.requests] == ["rollout.yml"]
    # Nothing to do: the run was stopped at the plan's gate.
    assert runner.gate_answers == [("stop", "the controller stops the deployment here")]
    assert {s.phase.value for s in outcome.nodes.values()} == {"skipped"}


def test_unhealthy_node_on_the_target_version_is_redeployed(deployment: Make) -> None:
    d = deployment([
        survey(dict.fromkeys(NODES, "1.1.0"), healthy={"node2": False}), good_batch(["node2"]),
    ])
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert runner.batches == [["node2"]]


def test_prestage_failure_changes_nothing(deployment: Make) -> None:
    failing = survey(dict.fromkeys(NODES, "1.0.0"), failed=["node2"], extra=[
        ev("failed", "node2", "deployer_release", "stage", message="sha256 mismatch")])
    d = deployment([failing])
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused"
    assert "sha256 mismatch" in outcome.summary
    assert [r.playbook for r in runner.requests] == ["rollout.yml"]
    assert runner.gate_answers[0][0] == "stop" and runner.batches == []
    assert not outcome.out_of_service
    assert {s.phase.value for s in outcome.nodes.values()} == {"skipped"}


def test_unreachable_node_during_probe_changes_nothing(deployment: Make) -> None:
    dark = ("prestage.yml", [ev("unreachable", "node3", "deployer_release", "facts", message="timed out"),
                             stats(["node1", "node2"], dark=["node3"])], "failed")
    d = deployment([dark])
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused" and "node3" in outcome.summary
    assert len(runner.requests) == 1
    # Nothing was changed: the exit code says "refused", not "reverted" or "out of service".
    with pytest.raises(DeploymentRefused) as refused:
        raise_for(outcome)
    assert refused.value.exit_code == 9


def test_batches_of_a_percentage_with_a_canary(deployment: Make) -> None:
    d = deployment([
        survey(dict.fromkeys(NODES, "1.0.0")),
        good_batch(["node1"]), good_batch(["node2", "node3"]),
    ], strategy={"batch_size": "67%", "canary": "1", "min_healthy": "0"})
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    batches = [e.nodes for e in d.recorder.of(BatchStarted)]
    assert batches == [["node1"], ["node2", "node3"]] and d.recorder.of(BatchStarted)[0].canary
    assert runner.batches == [["node1"], ["node2", "node3"]]
    assert runner.plans[0]["deployer_batch_sizes"] == [1, 2]
    assert runner.requests[0].forks == 3  # pre-staging's: every node at once


def test_without_prestaging_the_batches_read_stage_and_check_the_nodes_themselves(
    deployment: Make,
) -> None:
    probe = survey(dict.fromkeys(NODES, "1.0.0"), playbook="probe.yml")
    batch = good_batch(["node1", "node2", "node3"], playbook="deploy.yml")
    staging = [ev("task_start", h, "deployer_release", "stage") for h in NODES]
    d = deployment([probe, ("deploy.yml", staging + batch[1], batch[2])],
                   strategy={"prestage": False, "batch_size": "100%", "min_healthy": "0"})
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert outcome.summary == "3 node(s) now run 1.1.0"
    assert [r.playbook for r in runner.requests] == ["probe.yml", "deploy.yml"]
    # Nothing was staged beforehand, so the batch does not claim it was.
    known = runner.requests[1].extravars["deployer_known_releases"]
    assert all(k["staged_sha256"] == {} for k in known.values())
    # Every step the batch's own run took, its staging included, is journalled as expected moves.
    for node in NODES:
        assert d.phases(outcome, node) == [
            "staging", "draining", "deploying", "smoke", "rejoining", "done"]
    assert not [m for m in d.recorder.messages if "unexpected" in m]


def test_an_unexpected_phase_change_is_followed_journalled_and_reported(deployment: Make) -> None:
    # node1's drain event is missing: it reports deploying while the engine has it staged.
    batch = [ev("task_start", "node1", role, file) for role, file in [
        ("deployer_release", "activate"), ("deployer_smoke", "main"), ("deployer_lb_haproxy", "enable")]]
    d = deployment([
        survey({"node1": "1.0.0", "node2": "1.1.0", "node3": "1.1.0"}),
        ("deploy_batch.yml", [*batch, stats(["node1"])], "successful"),
    ])
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    events = [e for e in d.journal.node_events(outcome.deployment_id) if e.node == "node1"]
    assert [e.phase for e in events] == ["staging", "staged", "deploying", "smoke", "rejoining", "done"]
    assert events[2].detail == "unexpected move from staged to deploying, recorded as reported"
    assert d.recorder.messages.count(
        "warning: node1: unexpected move from staged to deploying, recorded as reported") == 1
    assert outcome.nodes["node1"].phase.value == "done"


def test_stop_request_finishes_the_batch_and_stops_at_the_next_safe_point(deployment: Make) -> None:
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"])])
    d.recorder.after_batch(1, d.lifecycle.request_stop)
    outcome = d.deploy("1.1.0")
    assert outcome.status == "cancelled"
    assert outcome.summary == "stopped by the operator before batch 2/3"
    assert outcome.nodes["node1"].phase.value == "done"
    assert len(d.runner.requests) == 1 and d.runner.batches == [["node1"]]
    assert d.journal.deployments("lab")[0].status == "cancelled"
    assert "node1 finished before the stop and keep 1.1.0" in " ".join(d.recorder.messages)
    with pytest.raises(Interrupted):
        raise_for(outcome)


def test_unsigned_or_unknown_release_is_refused_before_any_run(deployment: Make) -> None:
    from deployer import ArtefactError

    d = deployment([])
    with pytest.raises(ArtefactError) as refused:
        d.deploy("9.9.9")
    assert d.runner.requests == []
    # On the record all the same (every deployment is), as refused before the lock.
    [record] = d.journal.deployments("lab")
    assert (record.status, record.version, record.details["refused_before_lock"]) == (
        "refused", "9.9.9", True)
    assert record.summary == refused.value.message
    finished = d.recorder.of(DeploymentFinished)
    assert [(f.status, f.exit_code) for f in finished] == [("refused", 4)]
    assert d.recorder.of(DeploymentStarted)[0].locked is False


def test_a_second_deployment_is_refused_by_the_lock(world: dict[str, Path], deployment: Make) -> None:
    cfg = load_config(world["config"])
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from deployer.adapters.lock import state_dir_lock
            state_dir_lock(Path({str(cfg.state_dir)!r}), "lab").acquire()
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        d = deployment([])
        with pytest.raises(LockHeldError, match=f"pid {holder.pid}"):
            d.deploy("1.1.0")
        assert d.runner.requests == []
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (its lease has not expired): its lock is stale and is taken over, and
    # the deployment says so in the journal.
    d = deployment([survey(dict.fromkeys(NODES, "1.1.0"))])
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert d.lifecycle.lock.show().record is None
    taken = [e for e in d.journal.node_events(outcome.deployment_id) if e.node == "lock"]
    assert [e.phase for e in taken] == ["taken_over"] and f"pid {holder.pid}" in taken[0].detail


def test_a_deployment_that_lost_its_lock_stops_at_the_next_safe_point(deployment: Make) -> None:
    """Another controller takes the lock over during batch 1 (`unlock --force`, then its own
    deployment). The lock is confirmed with its host before batch 2 - no background renewal
    needed - so the deployment stops there, before draining another node."""
    host = FakeLockHost()
    intruder = EnvironmentLock(host, "lab", me=Identity("ci@far", "far", 1, "1"))

    class TakenOverDuringTheFirstBatch(ReplayRunner):
        def play_batch(self, request: RunRequest, hosts: Sequence[str], on_event: EventSink,
                       cancelled: Callable[[], bool]) -> RunResult:
            result = super().play_batch(request, hosts, on_event, cancelled)
            intruder.remove(by="ops@far", reason="runner presumed dead", force=True)
            intruder.acquire()
            return result

    runner = TakenOverDuringTheFirstBatch([
        survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
    ])
    d = deployment(runner, lock=EnvironmentLock(host, "lab", lease=60))
    outcome = d.deploy("1.1.0")
    with pytest.raises(LockLostError, match="pid 1") as lost:
        raise_for(outcome)
    assert lost.value.exit_code == 13
    assert [r.playbook for r in runner.requests] == ["rollout.yml"]
    assert runner.batches == [["node1"]] and runner.gate_answers[-1][0] == "stop"
    record = d.journal.deployments("lab")[0]
    assert record.status == "stopped" and "lost the lock" in record.summary
    events = d.journal.node_events(record.id)
    assert [e.phase for e in events if e.node == "lock"] == ["lost"]
    assert [e.phase for e in events if e.node == "node2"] == ["staging", "staged"]  # never drained
    assert host.records["lab"]["owner"] == "ci@far"  # our release left the new holder alone
    # Every safe point before it confirmed the lock with its host (a renewal each).
    renewals = [r for r in host.requests if r["op"] == "renew" and r["identity"]["pid"] != 1]
    assert len(renewals) >= 3  # before the start, before batch 1, before batch 2 (refused)


# -- replays of events recorded from real runs on the lab (DEPLOYER_RECORD_EVENTS=...) ------------


def test_recorded_successful_rollout(deployment: Make) -> None:
    d = deployment(ReplayRunner.from_file(FIXTURES / "rollout_success.json"))
    runner = d.runner
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    for node in NODES:
        assert d.phases(outcome, node) == [
            "staging", "staged", "draining", "deploying", "smoke", "rejoining", "done"]
        assert outcome.nodes[node].from_version == "1.0.0"
        assert outcome.nodes[node].out_seconds is not None
    assert not runner.scripts  # every recorded run was asked for, in order


def test_recorded_bad_release_reverted_on_first_node(deployment: Make) -> None:
    d = deployment(ReplayRunner.from_file(FIXTURES / "rollout_bad_first_node.json"))
    runner = d.runner
    outcome = d.deploy("1.2.0-badhealth")
    assert outcome.status == "rolled_back"
    assert d.phases(outcome, "node1")[-4:] == ["deploying", "smoke", "reverting", "reverted"]
    assert "status 503" in outcome.nodes["node1"].cause
    assert [outcome.nodes[n].phase.value for n in ("node2", "node3")] == ["staged", "staged"]
    assert not runner.scripts


def test_recorded_failure_on_last_node_rolls_back_in_reverse(deployment: Make) -> None:
    d = deployment(ReplayRunner.from_file(FIXTURES / "rollout_fails_on_last_node.json"))
    runner = d.runner
    outcome = d.deploy("1.0.0")
    assert outcome.status == "rolled_back"
    assert [list(r.hosts) for r in runner.requests if r.playbook == "revert.yml"] == [["node2"], ["node1"]]
    assert {n: s.phase.value for n, s in outcome.nodes.items()} == dict.fromkeys(NODES, "reverted")
    assert d.phases(outcome, "node3")[-2:] == ["reverting", "reverted"]
    assert not runner.scripts


def test_a_failed_loop_reports_what_its_failed_items_said() -> None:
    from deployer.adapters.runner import translate

    raw = {
        "event": "runner_on_failed",
        "event_data": {
            "host": "node3",
            "task": "Check the variables",
            "res": {
                "msg": "One or more items failed",
                "results": [
                    {"failed": False, "msg": "The arg spec validation passed"},
                    {
                        "failed": True,
                        "msg": "Validation of arguments failed:\nfirst\nsecond",
                        "argument_errors": ["x is wrong", "y is wrong"],
                    },
                    {
                        "failed": True,
                        "argument_errors": [
                            "argument 'z' is of type str and we were unable to convert to float: "
                            "<class 'ansible.module_utils._internal._datatag._AnsibleTaggedStr'> "
                            "cannot be converted to a float"
                        ],
                    },
                ],
            },
        },
    }
    event = translate(raw)
    assert event is not None
    assert event.message == (
        "x is wrong; y is wrong; argument 'z' is of type str and we were unable to convert to float"
    )


def test_rollback_goes_down_the_successful_history_and_never_forward_again(deployment: Make) -> None:
    d = deployment([])
    journal, engine = d.journal, d.lifecycle

    def record(kind: str, version: str, status: str = "succeeded", frm: str = "") -> None:
        dep = journal.start_deployment(env="lab", app="hello", kind=kind, version=version,
                                       command="test", details={"from_versions": {"node1": frm}})
        journal.finish_deployment(dep, status)

    record("deploy", "1.0.0", frm="0.9.0")
    record("deploy", "1.1.0", frm="1.0.0")
    record("deploy", "1.2.0", status="rolled_back", frm="1.1.0")  # failed: not in the history
    record("deploy", "1.2.1", frm="1.1.0")
    assert engine.rollback_target() == "1.1.0"
    record("rollback", "1.1.0", frm="1.2.1")
    assert engine.rollback_target() == "1.0.0"  # the second rollback goes further back
    record("rollback", "1.0.0", frm="1.1.0")
    assert engine.rollback_target() == "0.9.0"
    record("rollback", "0.9.0", frm="1.0.0")
    with pytest.raises(ConfigError, match=r"no release before 0\.9\.0"):
        engine.rollback_target()


def test_the_journal_keeps_no_signature_or_credentials_of_a_download_url(
    deployment: Make, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A presigned download URL reaches the nodes whole; the journal keeps it without its
    signed query or credentials."""
    d = deployment([survey(dict.fromkeys(NODES, "1.1.0"))])
    verify = d.lifecycle.verify_release
    presigned = ("https://user:secret@releases.s3.example:9000/hello/1.1.0/hello-1.1.0.tar.gz"
                 "?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc123&X-Amz-Expires=900")
    monkeypatch.setattr(d.lifecycle, "verify_release",
                        lambda v: dataclasses.replace(verify(v), url=presigned))
    outcome = d.deploy("1.1.0")
    assert d.runner.requests[0].extravars["deployer_release_url"] == presigned
    record = d.journal.deployment(outcome.deployment_id)
    assert record is not None
    assert record.details["url"] == (
        "https://releases.s3.example:9000/hello/1.1.0/hello-1.1.0.tar.gz?<signed query not recorded>")
    stored = (d.journal.path).read_bytes() + d.journal.path.with_suffix(".sqlite-wal").read_bytes()
    assert b"abc123" not in stored and b"secret" not in stored


def test_sessions_a_timed_out_drain_left_open_are_reported_in_the_outcome_and_journal(
    deployment: Make,
) -> None:
    playbook, events, status = good_batch(["node1"])
    # The drain's loop item: the one load balancer's answer, sessions still open at the timeout.
    cut = ev("item_ok", "node1", "deployer_lb_haproxy", "drain",
             result={"drain_timed_out": True, "sessions": 2, "item": "localhost"})
    events.insert(1, cut)
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), (playbook, events, status),
                    good_batch(["node2"]), good_batch(["node3"])])
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert outcome.nodes["node1"].sessions_cut == 2 and outcome.nodes["node2"].sessions_cut == 0
    assert outcome.to_dict()["nodes"]["node1"]["sessions_cut"] == 2
    assert "sessions_cut" not in outcome.to_dict()["nodes"]["node2"]
    assert outcome.to_dict()["sessions_cut"] == {"node1": 2}
    assert any(w.startswith("node1: 2 session(s) were still open when load_balancer.drain_timeout")
               for w in outcome.warnings)
    record = d.journal.deployments("lab")[0]
    assert record.details["sessions_cut"] == {"node1": 2}
    deploying = next(e for e in d.journal.node_events(record.id)
                     if e.node == "node1" and e.phase == "deploying")
    assert "2 session(s) still open when load_balancer.drain_timeout ran out" in deploying.detail


def test_a_drain_that_emptied_the_node_in_time_reports_no_cut(deployment: Make) -> None:
    playbook, events, status = good_batch(["node1"])
    events.insert(1, ev("item_ok", "node1", "deployer_lb_haproxy", "drain",
                        result={"drain_timed_out": False, "sessions": 0}))
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), (playbook, events, status),
                    good_batch(["node2"]), good_batch(["node3"])])
    outcome = d.deploy("1.1.0")
    assert "sessions_cut" not in outcome.to_dict() and not outcome.warnings
