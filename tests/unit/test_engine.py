"""Engine unit tests through the runner seam: the runner replays scripted events, everything
else is real (journal on disk, signed artefacts in a file store, the planner, the state machine)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from deployer import (
    ConfigError,
    DeploymentFailed,
    DeploymentRefused,
    LockHeldError,
    LockLostError,
    load_config,
)
from deployer.adapters.inventory import load_nodes
from deployer.adapters.journal import Journal
from deployer.adapters.loadbalancer import FakeLoadBalancer
from deployer.adapters.lock import DeploymentLock, EnvironmentLock, FakeLockHost
from deployer.adapters.process import Identity
from deployer.adapters.runner import EventSink, ReplayRunner, RunnerEvent, RunRequest, RunResult
from deployer.artefacts import build_artefact, generate_keypair, open_store, sign_manifest
from deployer.cli._wiring import release_verifier
from deployer.engine.engine import Engine, Outcome, Reporter, raise_for

NODES = ["node1", "node2", "node3"]
FIXTURES = Path(__file__).parent / "fixtures"


def ev(kind: str, host: str | None, role: str | None = None, file: str | None = None,
       **kw: object) -> RunnerEvent:
    return RunnerEvent(kind=kind, host=host, role=role, task_file=file, **kw)  # type: ignore[arg-type]


def stats(ok: list[str], failed: list[str] = (), dark: list[str] = ()) -> RunnerEvent:  # type: ignore[assignment]
    return RunnerEvent(kind="stats", facts={
        "ok": {h: 3 for h in ok}, "failures": {h: 1 for h in failed}, "dark": {h: 1 for h in dark},
    })


def survey(
    current: dict[str, str], healthy: dict[str, bool] | None = None, *,
    extra: list[RunnerEvent] | None = None, failed: list[str] | None = None,
) -> tuple[str, list[RunnerEvent], str]:
    """A prestage.yml run: each node reports its releases and health, then stages."""
    events: list[RunnerEvent] = []
    for host, version in current.items():
        events.append(ev("ok", host, "deployer_release", "facts",
                         facts={"deployer_release_current": version, "deployer_release_previous": ""}))
        ok = (healthy or {}).get(host, bool(version))
        events.append(ev("ok", host, "deployer_smoke", "probe", result={"healthy": ok}))
        events.append(ev("task_start", host, "deployer_release", "stage"))
    events += extra or []
    bad = failed or []
    events.append(stats([h for h in current if h not in bad], failed=bad))
    return ("prestage.yml", events, "failed" if bad else "successful")


def good_batch(hosts: list[str]) -> tuple[str, list[RunnerEvent], str]:
    events = []
    for role, file in [("deployer_lb_haproxy", "drain"), ("deployer_release", "activate"),
                       ("deployer_smoke", "main"), ("deployer_lb_haproxy", "enable")]:
        events += [ev("task_start", h, role, file) for h in hosts]
    return ("deploy_batch.yml", [*events, stats(hosts)], "successful")


def bad_batch(host: str) -> tuple[str, list[RunnerEvent], str]:
    events = [
        ev("task_start", host, "deployer_lb_haproxy", "drain"),
        ev("task_start", host, "deployer_release", "activate"),
        ev("task_start", host, "deployer_smoke", "main"),
        ev("failed", host, "deployer_smoke", "main", message="GET /health answered 503"),
        ev("ok", host, None, None, facts={"deployer_node_outcome": "reverting"}),
        ev("task_start", host, "deployer_release", "revert"),
        ev("task_start", host, "deployer_smoke", "main"),
        ev("task_start", host, "deployer_lb_haproxy", "enable"),
        ev("ok", host, None, None, facts={"deployer_node_outcome": "reverted"}),
        ev("failed", host, None, None, message="reverted after a failed smoke check"),
    ]
    return ("deploy_batch.yml", [*events, stats([host], failed=[host])], "failed")


def revert_batch(hosts: list[str]) -> tuple[str, list[RunnerEvent], str]:
    events = []
    for role, file in [("deployer_lb_haproxy", "drain"), ("deployer_release", "revert"),
                       ("deployer_smoke", "main"), ("deployer_lb_haproxy", "enable")]:
        events += [ev("task_start", h, role, file) for h in hosts]
    return ("revert.yml", [*events, stats(hosts)], "successful")


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Path]:
    """A config, inventory and signed releases 1.0.0 and 1.1.0 in a real file store."""
    keys = generate_keypair(tmp_path / "keys", "release")
    store = open_store(f"file://{tmp_path / 'store'}")
    for version in ("1.0.0", "1.1.0", "1.2.0-badhealth"):
        src = tmp_path / "src" / version / "bin"
        src.mkdir(parents=True)
        (src / "run").write_text(f"#!/bin/sh\necho {version}\n")
        built = build_artefact(src.parent, app="hello", version=version, out_dir=tmp_path / "out" / version)
        sign_manifest(built.manifest_path, keys.secret_path)
        store.publish(built.dir)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"hello_nodes": {"hosts": {
        n: {"ansible_host": f"127.0.1.{i}"} for i, n in enumerate(NODES, start=1)}}}}}))
    config = tmp_path / "deployer.yml"
    config.write_text(textwrap.dedent(f"""
        state_dir: state
        environments:
          lab:
            inventory: inventory.yml
            group: hello_nodes
            app: {{name: hello}}
            store: {{url: "file://{tmp_path / 'store'}"}}
            trusted_keys: [keys/release.pub]
            load_balancer: {{socket: /nonexistent.sock, backend: hello}}
            strategy: {{min_healthy: "1"}}
    """))
    return {"config": config, "root": tmp_path}


def make_engine(world: dict[str, Path], scripts: list[tuple[str, list[RunnerEvent], str]] | ReplayRunner,
                lb: FakeLoadBalancer | None = None, lock: DeploymentLock | None = None,
                **strategy: object) -> tuple[Engine, ReplayRunner, Journal]:
    cfg = load_config(world["config"])
    env = cfg.environment("lab")
    if strategy:
        env = env.model_copy(update={"strategy": env.strategy.model_copy(update=strategy)})
    runner = scripts if isinstance(scripts, ReplayRunner) else ReplayRunner(scripts)
    journal = Journal(cfg.state_dir / "journal.sqlite")
    engine = Engine(env_name="lab", env=env, nodes=load_nodes(env.inventory, env.group), runner=runner,
                    journal=journal, verify_release=release_verifier(env),
                    lb=lb or FakeLoadBalancer("hello", NODES), lock=lock)
    return engine, runner, journal


def phases(journal: Journal, outcome: Outcome, node: str) -> list[str]:
    return [e.phase for e in journal.node_events(outcome.deployment_id) if e.node == node]


def test_success_rolls_one_node_at_a_time(world: dict[str, Path]) -> None:
    engine, runner, journal = make_engine(world, [
        survey(dict.fromkeys(NODES, "1.0.0")),
        good_batch(["node1"]), good_batch(["node2"]), good_batch(["node3"]),
    ])
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert [list(r.hosts) for r in runner.requests[1:]] == [["node1"], ["node2"], ["node3"]]
    assert runner.requests[0].forks == 3  # pre-staging runs on every node at once
    assert runner.requests[1].extravars["deployer_version"] == "1.1.0"
    assert len(runner.requests[1].extravars["deployer_release_sha256"]) == 64
    assert phases(journal, outcome, "node2") == [
        "staging", "staged", "draining", "deploying", "smoke", "rejoining", "done"]
    assert journal.deployments("lab")[0].status == "succeeded"
    assert engine.lock.show().record is None  # released


def test_bad_release_is_reverted_on_the_first_node_and_stops(world: dict[str, Path]) -> None:
    engine, runner, _journal = make_engine(world, [
        survey(dict.fromkeys(NODES, "1.0.0")), bad_batch("node1"),
    ])
    outcome = engine.deploy("1.1.0")
    assert outcome.nodes["node1"].phase.value == "reverted"
    # The node's outcome names the root cause (the smoke check), not the cleanup's echo of it.
    assert outcome.nodes["node1"].cause == "GET /health answered 503"
    assert outcome.nodes["node1"].detail == "GET /health answered 503"
    assert [outcome.nodes[n].phase.value for n in ("node2", "node3")] == ["staged", "staged"]
    assert len(runner.requests) == 2  # no further batch, nothing to roll back
    assert outcome.status == "rolled_back"
    assert not outcome.out_of_service
    with pytest.raises(DeploymentFailed):
        raise_for(outcome)


def test_failure_on_the_last_node_rolls_back_the_others_in_reverse(world: dict[str, Path]) -> None:
    engine, runner, journal = make_engine(world, [
        survey(dict.fromkeys(NODES, "1.0.0")),
        good_batch(["node1"]), good_batch(["node2"]), bad_batch("node3"),
        revert_batch(["node2"]), revert_batch(["node1"]),
    ])
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "rolled_back"
    reverts = [r for r in runner.requests if r.playbook == "revert.yml"]
    assert [list(r.hosts) for r in reverts] == [["node2"], ["node1"]]
    assert all(r.extravars["deployer_revert_to"] == "1.0.0" for r in reverts)
    assert phases(journal, outcome, "node1")[-3:] == ["done", "reverting", "reverted"]
    assert {n: s.phase.value for n, s in outcome.nodes.items()} == dict.fromkeys(NODES, "reverted")


def test_halt_leaves_updated_nodes_alone(world: dict[str, Path]) -> None:
    engine, runner, _ = make_engine(world, [
        survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), bad_batch("node2"),
    ], on_failure="halt")
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "failed"
    assert outcome.nodes["node1"].phase.value == "done"
    assert not [r for r in runner.requests if r.playbook == "revert.yml"]


def test_rerun_of_a_finished_deployment_is_a_no_op(world: dict[str, Path]) -> None:
    engine, runner, _journal = make_engine(world, [survey(dict.fromkeys(NODES, "1.1.0"))])
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert [r.playbook for r in runner.requests] == ["prestage.yml"]
    assert {s.phase.value for s in outcome.nodes.values()} == {"skipped"}


def test_unhealthy_node_on_the_target_version_is_redeployed(world: dict[str, Path]) -> None:
    engine, runner, _ = make_engine(world, [
        survey(dict.fromkeys(NODES, "1.1.0"), healthy={"node2": False}), good_batch(["node2"]),
    ])
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert [list(r.hosts) for r in runner.requests[1:]] == [["node2"]]


def test_prestage_failure_changes_nothing(world: dict[str, Path]) -> None:
    failing = survey(dict.fromkeys(NODES, "1.0.0"), failed=["node2"], extra=[
        ev("failed", "node2", "deployer_release", "stage", message="sha256 mismatch")])
    engine, runner, _ = make_engine(world, [failing])
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "refused"
    assert "sha256 mismatch" in outcome.summary
    assert [r.playbook for r in runner.requests] == ["prestage.yml"]
    assert not outcome.out_of_service
    assert {s.phase.value for s in outcome.nodes.values()} == {"skipped"}


def test_unreachable_node_during_probe_changes_nothing(world: dict[str, Path]) -> None:
    dark = ("prestage.yml", [ev("unreachable", "node3", "deployer_release", "facts", message="timed out"),
                             stats(["node1", "node2"], dark=["node3"])], "failed")
    engine, runner, _ = make_engine(world, [dark])
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "refused" and "node3" in outcome.summary
    assert len(runner.requests) == 1
    # Nothing was changed: the exit code says "refused", not "reverted" or "out of service".
    with pytest.raises(DeploymentRefused) as refused:
        raise_for(outcome)
    assert refused.value.exit_code == 9


def test_batches_of_a_percentage_with_a_canary(world: dict[str, Path]) -> None:
    engine, runner, _ = make_engine(world, [
        survey(dict.fromkeys(NODES, "1.0.0")),
        good_batch(["node1"]), good_batch(["node2", "node3"]),
    ], batch_size="67%", canary="1", min_healthy="0")
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert outcome.plan is not None and outcome.plan.batches[0].canary
    assert [list(r.hosts) for r in runner.requests[1:]] == [["node1"], ["node2", "node3"]]
    assert runner.requests[2].forks == 2


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)


def test_without_prestaging_the_batches_read_stage_and_check_the_nodes_themselves(
    world: dict[str, Path],
) -> None:
    _, surveyed, status = survey(dict.fromkeys(NODES, "1.0.0"))
    probe = [e for e in surveyed if e.task_file != "stage"]  # probe.yml reads, stages nothing
    batch = good_batch(["node1", "node2", "node3"])
    staging = [ev("task_start", h, "deployer_release", "stage") for h in NODES]
    engine, runner, journal = make_engine(
        world, [("probe.yml", probe, status), ("deploy.yml", staging + batch[1], batch[2])],
        prestage=False, batch_size="100%", min_healthy="0",
    )
    engine.reporter = reporter = RecordingReporter()
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert outcome.summary == "3 node(s) now run 1.1.0"
    assert [r.playbook for r in runner.requests] == ["probe.yml", "deploy.yml"]
    # Every phase of the batch's own run is journalled, its staging included.
    assert phases(journal, outcome, "node2") == [
        "staging", "draining", "deploying", "smoke", "rejoining", "done"]
    # Nothing was staged beforehand, so the batch does not claim it was.
    known = runner.requests[1].extravars["deployer_known_releases"]
    assert all(k["staged_sha256"] == {} for k in known.values())
    # Every step the run took is in the journal, as expected moves.
    for node in NODES:
        assert phases(journal, outcome, node) == [
            "staging", "draining", "deploying", "smoke", "rejoining", "done"]
    assert not [m for m in reporter.messages if "unexpected" in m]


def test_an_unexpected_phase_change_is_followed_journalled_and_reported(world: dict[str, Path]) -> None:
    # node1's drain event is missing: it reports deploying while the engine has it staged.
    batch = [ev("task_start", "node1", role, file) for role, file in [
        ("deployer_release", "activate"), ("deployer_smoke", "main"), ("deployer_lb_haproxy", "enable")]]
    engine, _, journal = make_engine(world, [
        survey({"node1": "1.0.0", "node2": "1.1.0", "node3": "1.1.0"}),
        ("deploy_batch.yml", [*batch, stats(["node1"])], "successful"),
    ])
    engine.reporter = reporter = RecordingReporter()
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded"
    events = [e for e in journal.node_events(outcome.deployment_id) if e.node == "node1"]
    assert [e.phase for e in events] == ["staging", "staged", "deploying", "smoke", "rejoining", "done"]
    assert events[2].detail == "unexpected move from staged to deploying, recorded as reported"
    assert reporter.messages.count(
        "warning: node1: unexpected move from staged to deploying, recorded as reported") == 1
    assert outcome.nodes["node1"].phase.value == "done"


def test_stop_request_finishes_the_batch_and_stops(world: dict[str, Path]) -> None:
    engine, runner, journal = make_engine(world, [
        survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]),
    ])
    original = engine.reporter.batch

    def stop_after_first(batch: object, total: int, *, rollback: bool = False) -> None:
        original(batch, total, rollback=rollback)  # type: ignore[arg-type]
        engine.request_stop()

    engine.reporter.batch = stop_after_first  # type: ignore[method-assign]
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "cancelled"
    assert outcome.nodes["node1"].phase.value == "done"
    assert len(runner.requests) == 2
    assert journal.deployments("lab")[0].status == "cancelled"


def test_unsigned_or_unknown_release_is_refused_before_any_run(world: dict[str, Path]) -> None:
    from deployer import ArtefactError

    engine, runner, journal = make_engine(world, [])
    with pytest.raises(ArtefactError):
        engine.deploy("9.9.9")
    assert runner.requests == []
    assert journal.deployments("lab") == []


def test_a_second_deployment_is_refused_by_the_lock(world: dict[str, Path]) -> None:
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
        engine, runner, _ = make_engine(world, [])
        with pytest.raises(LockHeldError, match=f"pid {holder.pid}"):
            engine.deploy("1.1.0")
        assert runner.requests == []
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (its lease has not expired): its lock is stale and is taken over, and
    # the deployment says so in the journal.
    engine, runner, journal = make_engine(world, [survey(dict.fromkeys(NODES, "1.1.0"))])
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert engine.lock.show().record is None
    taken = [e for e in journal.node_events(outcome.deployment_id) if e.node == "lock"]
    assert [e.phase for e in taken] == ["taken_over"] and f"pid {holder.pid}" in taken[0].detail


def test_a_deployment_that_lost_its_lock_stops_before_the_next_batch(world: dict[str, Path]) -> None:
    """Another controller takes the lock over during batch 1 (forced): the renewal sees it, and
    the deployment stops before draining another node, every node back in service."""
    host = FakeLockHost()
    intruder = EnvironmentLock(host, "lab", me=Identity("ci@far", "far", 1, "1"))

    class TakenOverDuringTheFirstBatch(ReplayRunner):
        def run(self, request: RunRequest, on_event: EventSink, cancelled: Callable[[], bool]) -> RunResult:
            result = super().run(request, on_event, cancelled)
            if request.playbook == "deploy_batch.yml":
                intruder.remove(by="ops@far", reason="runner presumed dead", force=True)
                intruder.acquire()
                assert engine._lease is not None
                engine._lease.renew_once()  # what the background renewal does every lease/3
            return result

    runner = TakenOverDuringTheFirstBatch([
        survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
    ])
    engine, _, journal = make_engine(world, runner, lock=EnvironmentLock(host, "lab", lease=60))
    with pytest.raises(LockLostError, match="pid 1") as lost:
        engine.deploy("1.1.0")
    assert lost.value.exit_code == 13
    assert [r.playbook for r in runner.requests] == ["prestage.yml", "deploy_batch.yml"]
    record = journal.deployments("lab")[0]
    assert record.status == "failed" and "lost the lock" in record.summary
    events = journal.node_events(record.id)
    assert [e.phase for e in events if e.node == "lock"] == ["lost"]
    assert [e.phase for e in events if e.node == "node2"] == ["staging", "staged"]  # never drained
    assert host.records["lab"]["owner"] == "ci@far"  # our release left the new holder alone


# -- replays of events recorded from real runs on the lab (DEPLOYER_RECORD_EVENTS=...) ------------


def test_recorded_successful_rollout(world: dict[str, Path]) -> None:
    engine, runner, journal = make_engine(world, ReplayRunner.from_file(FIXTURES / "rollout_success.json"))
    outcome = engine.deploy("1.1.0")
    assert outcome.status == "succeeded"
    for node in NODES:
        assert phases(journal, outcome, node) == [
            "staging", "staged", "draining", "deploying", "smoke", "rejoining", "done"]
        assert outcome.nodes[node].from_version == "1.0.0"
        assert outcome.nodes[node].out_seconds is not None
    assert not runner.scripts  # every recorded run was asked for, in order


def test_recorded_bad_release_reverted_on_first_node(world: dict[str, Path]) -> None:
    engine, runner, journal = make_engine(
        world, ReplayRunner.from_file(FIXTURES / "rollout_bad_first_node.json"))
    outcome = engine.deploy("1.2.0-badhealth")
    assert outcome.status == "rolled_back"
    assert phases(journal, outcome, "node1")[-4:] == ["deploying", "smoke", "reverting", "reverted"]
    assert "status 503" in outcome.nodes["node1"].cause
    assert [outcome.nodes[n].phase.value for n in ("node2", "node3")] == ["staged", "staged"]
    assert not runner.scripts


def test_recorded_failure_on_last_node_rolls_back_in_reverse(world: dict[str, Path]) -> None:
    engine, runner, journal = make_engine(
        world, ReplayRunner.from_file(FIXTURES / "rollout_fails_on_last_node.json"))
    outcome = engine.deploy("1.0.0")
    assert outcome.status == "rolled_back"
    assert [list(r.hosts) for r in runner.requests if r.playbook == "revert.yml"] == [["node2"], ["node1"]]
    assert {n: s.phase.value for n, s in outcome.nodes.items()} == dict.fromkeys(NODES, "reverted")
    assert phases(journal, outcome, "node3")[-2:] == ["reverting", "reverted"]
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


def test_rollback_goes_down_the_successful_history_and_never_forward_again(
    world: dict[str, Path],
) -> None:
    engine, _, journal = make_engine(world, [])

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


def test_the_journal_keeps_no_signature_or_credentials_of_a_download_url() -> None:
    from deployer.adapters.redaction import redacted_url

    presigned = ("https://releases.s3.example:9000/hello/1.1.0/hello-1.1.0.tar.gz"
                 "?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc123&X-Amz-Expires=900")
    assert redacted_url(presigned) == (
        "https://releases.s3.example:9000/hello/1.1.0/hello-1.1.0.tar.gz?<signed query not recorded>")
    assert redacted_url("http://user:secret@127.0.0.1:8081/hello/1.0.0/x.tar.gz") == (
        "http://127.0.0.1:8081/hello/1.0.0/x.tar.gz")
