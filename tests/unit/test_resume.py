"""`deployer resume` decided from the journal a killed deployment left, and carried out, with
fakes at the seams only. The killed deployment is a real one run through the lifecycle up to
the event it dies at: the journal is kept as it was written at that moment (as after a SIGKILL,
nothing after it), its process is one that is gone, and it still holds the lock. The fake load
balancer is left as the playbook's drains and enables had made it. The real thing, on the lab:
tests/e2e/test_resume_lab.py."""

from __future__ import annotations

import itertools
import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import LEGS, MAP, NODES, Deployment

from deployer import ConfigError, LockHeldError
from deployer.adapters.journal import ABANDONED_SUMMARY, DeploymentRecord, Journal
from deployer.adapters.lock import EnvironmentLock
from deployer.adapters.process import Identity
from deployer.adapters.runner import RunnerEvent
from deployer.analysis import parse_analysis_config
from deployer.engine.events import NodePhaseChanged, Note, Published, Subscriber, TrafficSwitched
from deployer.engine.left_out import left_out_by_deployer
from deployer.engine.lifecycle import exit_code_for
from deployer.engine.resume import ResumeResult, find_interrupted, resume
from deployer.engine.soaking import Soaks
from deployer.engine.tracking import PHASE_BY_TASK_FILE
from deployer.testing import (
    FakeClock,
    FakeLoadBalancer,
    FakeLockHost,
    ReplayRunner,
    RunScript,
    bad_batch,
    good_batch,
    revert_batch,
    survey,
)

Make = Callable[..., Deployment]
BLUE, GREEN = LEGS["blue"], LEGS["green"]


class Killed(BaseException):
    """The deploying process dies here."""


def dead_pid() -> int:
    """The PID of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def kill(d: Deployment, version: str, at: Callable[[Published], bool], tmp: Path,
         **deploy: Any) -> DeploymentRecord:
    """Run a deployment of ``version`` and kill it at the first event ``at`` picks, once the
    journal has written it: the journal is then as it was at that moment, its deployment's
    process is gone, and the lock still names that process as its holder."""
    path = d.journal.path
    snapshot = sqlite3.connect(tmp / "journal-at-kill.sqlite")

    class Kill(Subscriber):
        synchronous: ClassVar[bool] = True

        def on_event(self, published: Published) -> None:
            if at(published):
                d.runner.kill()  # the playbook runs die with the process
                with sqlite3.connect(path) as db:
                    db.backup(snapshot)
                raise Killed

    if isinstance(at, node_at):
        d.runner.die_after = at.on_nodes
    d.lifecycle.subscribers.append(Kill())
    with pytest.raises(Killed):
        d.deploy(version, **deploy)
    d.journal.close()
    pid = dead_pid()
    with sqlite3.connect(path) as db:
        snapshot.backup(db)
        row = db.execute("SELECT id FROM deployments ORDER BY id DESC LIMIT 1").fetchone()
        db.execute("UPDATE deployments SET pid = ?, pid_start = '1' WHERE id = ?", (pid, row[0]))
    snapshot.close()
    lock = d.lifecycle.lock
    assert isinstance(lock, EnvironmentLock)
    gone = Identity(owner=f"ci@{socket.gethostname()}", host=socket.gethostname(), pid=pid, pid_start="1")
    EnvironmentLock(lock.host, "lab", me=gone).acquire()
    record = Journal(path).deployment(row[0])
    assert record is not None and record.status == "running"
    return record


class node_at:
    """At ``node`` moving to ``phase``. On the nodes (the runner's side) the process dies as the
    task that moves it starts: a rollout's one run replays on a thread of its own, ahead of the
    engine hearing it, and must not go on past the moment of death."""

    def __init__(self, node: str, phase: str) -> None:
        self.node, self.phase = node, phase

    def __call__(self, p: Published) -> bool:
        return isinstance(p.event, NodePhaseChanged) and (p.event.node, p.event.phase) == (
            self.node, self.phase)

    def on_nodes(self, ev: RunnerEvent) -> bool:
        return (ev.kind == "task_start" and ev.host == self.node
                and PHASE_BY_TASK_FILE.get((ev.role or "", ev.task_file or "")) == self.phase)


def note_at(start: str) -> Callable[[Published], bool]:
    return lambda p: isinstance(p.event, Note) and p.event.text.startswith(start)


def run_resume(d: Deployment, mode: str = "rollback") -> tuple[ResumeResult, list[str]]:
    said: list[str] = []
    return resume(d.lifecycle, on_interrupted=mode, say=said.append), said


def records(d: Deployment) -> list[DeploymentRecord]:
    return d.journal.deployments("lab")


def resume_events(d: Deployment, result: ResumeResult) -> list[tuple[str, str]]:
    dep = result.outcome.deployment_id if result.outcome else result.deployment
    assert dep is not None
    return [(e.node, e.phase) for e in d.journal.node_events(dep)]


def admin(lb: FakeLoadBalancer) -> dict[str, str]:
    return dict(lb.admin)


def played(d: Deployment) -> list[tuple[str, list[str], str]]:
    """Each run (a deployment's one run as the runs it replaces: its pre-staging, then each
    batch it let go)."""
    runs: list[tuple[str, list[str], str]] = []
    batches = iter(d.runner.batches)
    for place, r in enumerate(d.runner.requests):
        version = str(r.extravars.get("deployer_version", ""))
        if r.playbook == "rollout.yml":
            planned = len(d.runner.plan_of.get(place, {}).get("deployer_batch_sizes", []))
            runs.append(("prestage.yml", list(r.hosts), version))
            runs += [("deploy_batch.yml", batch, version)
                     for batch in itertools.islice(batches, planned)]
        else:
            runs.append((r.playbook, list(r.hosts), version))
    return runs


def rolling(tmp_path: Path, deployment: Make, scripts: list[RunScript], version: str,
            at: Callable[[Published], bool], **kw: Any) -> tuple[DeploymentRecord, FakeLoadBalancer]:
    """A rolling deployment killed at ``at``; the fake load balancer it leaves."""
    lb = FakeLoadBalancer("hello", NODES)
    d = deployment(ReplayRunner(scripts, lb=lb), lb=lb, **kw)
    return kill(d, version, at, tmp_path), lb


def then(deployment: Make, lb: FakeLoadBalancer, scripts: list[RunScript], **kw: Any) -> Deployment:
    """The next command's deployment on the same world and load balancer."""
    return deployment(ReplayRunner(scripts, lb=lb), lb=lb, **kw)


FROM_1_0 = [survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]), good_batch(["node2"]),
            good_batch(["node3"])]


# -- rolling --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rollback", "finish"])
def test_killed_while_pre_staging_there_is_nothing_to_do_and_that_is_recorded(
    tmp_path: Path, deployment: Make, mode: str,
) -> None:
    killed, lb = rolling(tmp_path, deployment, FROM_1_0, "1.1.0", node_at("node2", "staging"))
    d = then(deployment, lb, [])
    result, said = run_resume(d, mode)
    assert result.outcome is None and result.deployment is not None
    assert d.runner.requests == []  # no node read, none touched
    assert admin(lb) == dict.fromkeys(NODES, "ready")
    assert f"found: deployment {killed.id} (deploy 1.1.0, rolling" in said[0]
    assert "before any node left the load balancer (while pre-staging)" in said[0]
    assert "nothing to do: no node had left the load balancer" in said[1]
    latest, root = records(d)[:2]
    assert (latest.kind, latest.version, latest.status) == ("resume", "-", "succeeded")
    assert latest.details["resumes"] == killed.uid and latest.details["acts_as"] == "nothing"
    assert (root.id, root.status, root.summary) == (killed.id, "failed", ABANDONED_SUMMARY)
    # The dead holder's lock was taken over at once (it ran on this host), and is free now.
    assert [p for n, p in resume_events(d, result) if n == "lock"] == ["taken_over"]
    assert d.lifecycle.lock.show().record is None
    # Idempotent: a second resume finds the interrupted deployment resolved, records nothing.
    again, said = run_resume(d, mode)
    assert again.interruption is None and again.outcome is None and again.deployment is None
    assert f"resumed deployment {killed.uid}" in said[0]
    assert len(records(d)) == 2


def test_killed_mid_batch_rollback_puts_every_node_back_on_its_release(
    tmp_path: Path, deployment: Make,
) -> None:
    killed, lb = rolling(tmp_path, deployment, FROM_1_0, "1.1.0", node_at("node2", "deploying"))
    assert admin(lb) == {"node1": "ready", "node2": "maint", "node3": "ready"}
    d = then(deployment, lb, [
        survey({"node1": "1.1.0", "node2": "1.1.0", "node3": "1.0.0"}),
        good_batch(["node1"]), good_batch(["node2"]),
    ])
    result, said = run_resume(d)
    assert "while node2 was deploying; done: node1; not started: node3" in said[0]
    assert "roll it back: 1.0.0 to node1, node2, node3" in said[1]
    outcome = result.outcome
    assert outcome is not None and outcome.status == "succeeded", outcome
    assert exit_code_for(outcome) == 0
    assert played(d) == [("prestage.yml", NODES, "1.0.0"), ("deploy_batch.yml", ["node1"], "1.0.0"),
                         ("deploy_batch.yml", ["node2"], "1.0.0")]
    assert admin(lb) == dict.fromkeys(NODES, "ready")
    assert {n: s.phase.value for n, s in outcome.nodes.items()} == {
        "node1": "done", "node2": "done", "node3": "skipped"}
    record = records(d)[0]
    assert (record.kind, record.version, record.status) == ("resume", "1.0.0", "succeeded")
    assert record.details["resumes"] == killed.uid and record.details["acts_as"] == "rollback"
    assert left_out_by_deployer(d.journal, "lab", NODES) == {}
    # Idempotent: nothing more to resume, nothing run, nothing recorded.
    count, runs = len(records(d)), len(d.runner.requests)
    again, _ = run_resume(d)
    assert again.interruption is None and len(records(d)) == count and len(d.runner.requests) == runs


def test_killed_mid_batch_finish_deploys_the_rest_and_the_node_caught_rejoins(
    tmp_path: Path, deployment: Make,
) -> None:
    killed, lb = rolling(tmp_path, deployment, FROM_1_0, "1.1.0", node_at("node2", "deploying"))
    d = then(deployment, lb, [
        survey({"node1": "1.1.0", "node2": "1.1.0", "node3": "1.0.0"}),
        good_batch(["node2"]), good_batch(["node3"]),
    ])
    result, said = run_resume(d, "finish")
    assert "finish it: deploy 1.1.0 to every node not on it yet" in said[1]
    outcome = result.outcome
    assert outcome is not None and outcome.status == "succeeded", outcome
    assert played(d)[1:] == [("deploy_batch.yml", ["node2"], "1.1.0"),
                             ("deploy_batch.yml", ["node3"], "1.1.0")]
    assert admin(lb) == dict.fromkeys(NODES, "ready")
    # node1, updated by the killed deployment, is skipped, its release before that kept.
    node1 = [e for e in d.journal.node_events(outcome.deployment_id) if e.node == "node1"]
    assert [(e.phase, e.from_version) for e in node1] == [("staging", ""), ("skipped", "1.0.0")]
    assert f"updated from 1.0.0 by deployment {killed.id}" in node1[-1].detail
    assert records(d)[0].details["acts_as"] == "deploy"


def test_killed_after_batch_one_of_three(tmp_path: Path, deployment: Make) -> None:
    """Rollback takes node1 alone back; finish deploys node2 and node3."""
    _, lb = rolling(tmp_path, deployment, FROM_1_0, "1.1.0", node_at("node1", "done"))
    assert admin(lb) == dict.fromkeys(NODES, "ready")
    now = {"node1": "1.1.0", "node2": "1.0.0", "node3": "1.0.0"}
    d = then(deployment, lb, [survey(now), good_batch(["node1"])])
    result, said = run_resume(d)
    assert "between batches; done: node1; not started: node2, node3" in said[0]
    assert result.outcome is not None and result.outcome.status == "succeeded"
    assert played(d)[1:] == [("deploy_batch.yml", ["node1"], "1.0.0")]


def test_killed_after_batch_one_finish_deploys_the_rest(tmp_path: Path, deployment: Make) -> None:
    _, lb = rolling(tmp_path, deployment, FROM_1_0, "1.1.0", node_at("node1", "done"))
    now = {"node1": "1.1.0", "node2": "1.0.0", "node3": "1.0.0"}
    d = then(deployment, lb, [survey(now), good_batch(["node2"]), good_batch(["node3"])])
    result, _ = run_resume(d, "finish")
    assert result.outcome is not None and result.outcome.status == "succeeded"
    assert played(d)[1:] == [("deploy_batch.yml", ["node2"], "1.1.0"),
                             ("deploy_batch.yml", ["node3"], "1.1.0")]


def test_a_failing_finish_rolls_back_the_nodes_the_killed_deployment_updated_too(
    tmp_path: Path, deployment: Make,
) -> None:
    """Finishing is the interrupted deployment going on: on a failure ``on_failure: rollback``
    takes back every node it updated, before the kill as after."""
    _, lb = rolling(tmp_path, deployment, FROM_1_0, "1.1.0", node_at("node1", "done"))
    now = {"node1": "1.1.0", "node2": "1.0.0", "node3": "1.0.0"}
    d = then(deployment, lb, [survey(now), bad_batch("node2"), revert_batch(["node1"])])
    result, _ = run_resume(d, "finish")
    outcome = result.outcome
    assert outcome is not None and outcome.status == "rolled_back", outcome.summary
    assert "rolled back node1" in outcome.summary
    revert = d.runner.requests[-1]
    assert (revert.playbook, list(revert.hosts), revert.extravars["deployer_revert_to"]) == (
        "revert.yml", ["node1"], "1.0.0")
    assert exit_code_for(outcome) == 10 and not outcome.out_of_service


def test_a_first_deployment_cannot_be_rolled_back_its_nodes_stay_in_service_on_what_they_run(
    tmp_path: Path, deployment: Make,
) -> None:
    """Killed during the first deployment ever (the nodes ran nothing): nothing to roll back
    to. node2, caught out of the load balancer, is healthy on 1.1.0: put back as it is."""
    first = [survey(dict.fromkeys(NODES, "")), good_batch(["node1"]), good_batch(["node2"])]
    _, lb = rolling(tmp_path, deployment, first, "1.1.0", node_at("node2", "smoke"))
    assert lb.admin["node2"] == "maint"
    d = then(deployment, lb, [survey({"node1": "1.1.0", "node2": "1.1.0", "node3": ""},
                                     healthy={"node3": False})])
    result, said = run_resume(d)
    assert "roll it back: nothing to roll back to; node1, node2, node3 kept on what they run (they " \
        "had nothing before)" in said[1]
    outcome = result.outcome
    assert outcome is not None and outcome.status == "succeeded", outcome.summary
    assert admin(lb) == dict.fromkeys(NODES, "ready")
    assert "node2 put back into service" in outcome.summary
    assert ("node2", "rejoined") in resume_events(d, result)
    assert [r.playbook for r in d.runner.requests] == ["rollout.yml"] and d.runner.batches == []
    assert left_out_by_deployer(d.journal, "lab", NODES) == {}


def test_a_node_that_cannot_be_rolled_back_nor_put_back_is_reported_with_the_fix(
    tmp_path: Path, deployment: Make,
) -> None:
    first = [survey(dict.fromkeys(NODES, "")), good_batch(["node1"])]
    _, lb = rolling(tmp_path, deployment, first, "1.1.0", node_at("node1", "deploying"))
    d = then(deployment, lb, [survey({"node1": "", "node2": "", "node3": ""}, healthy={})])
    result, _ = run_resume(d)
    outcome = result.outcome
    assert outcome is not None and outcome.status == "failed"
    assert [line.split(" ")[0] for line in outcome.out_of_service] == ["node1"]
    assert exit_code_for(outcome) == 11 and "deployer recover --env lab" in outcome.fix_commands
    assert lb.admin["node1"] == "maint"


def test_an_interrupted_rollback_is_finished_and_counts_as_a_rollback(
    tmp_path: Path, deployment: Make,
) -> None:
    """Undoing a rollback would bring back the release it was escaping: it is finished, and
    the history then goes back from where the rollback went (never forward again)."""
    lb = FakeLoadBalancer("hello", NODES)
    d = deployment(ReplayRunner([
        survey(dict.fromkeys(NODES, "")), *[good_batch([n]) for n in NODES],
        survey(dict.fromkeys(NODES, "1.0.0")), *[good_batch([n]) for n in NODES],
        survey(dict.fromkeys(NODES, "1.1.0")), good_batch(["node1"]),
    ], lb=lb), lb=lb)
    assert d.deploy("1.0.0").status == "succeeded" and d.deploy("1.1.0").status == "succeeded"
    kill(d, "1.0.0", node_at("node1", "done"), tmp_path, kind="rollback")
    now = {"node1": "1.0.0", "node2": "1.1.0", "node3": "1.1.0"}
    d = then(deployment, lb, [survey(now), good_batch(["node2"]), good_batch(["node3"])])
    result, said = run_resume(d, "rollback")
    assert "on_interrupted: finish: finish it: deploy 1.0.0" in said[1]
    assert result.outcome is not None and result.outcome.status == "succeeded"
    assert records(d)[0].details["acts_as"] == "rollback"
    with pytest.raises(ConfigError, match=r"no release before 1\.0\.0"):
        d.lifecycle.rollback_target()


def test_a_paused_deployment_is_continued_whatever_on_interrupted_says(
    tmp_path: Path, deployment: Make,
) -> None:
    """A gate paused it on purpose, to go on later: resume finishes it, even with
    on_interrupted: rollback."""
    killed, lb = rolling(tmp_path, deployment, FROM_1_0, "1.1.0", node_at("node1", "done"))
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as db:
        db.execute("UPDATE deployments SET status = 'paused' WHERE id = ?", (killed.id,))
    now = {"node1": "1.1.0", "node2": "1.0.0", "node3": "1.0.0"}
    d = then(deployment, lb, [survey(now), good_batch(["node2"]), good_batch(["node3"])])
    result, said = run_resume(d, "rollback")
    assert f"deployment {killed.id} (deploy 1.1.0, rolling" in said[0] and "was paused" in said[0]
    assert "finish it: deploy 1.1.0" in said[1]
    assert result.outcome is not None and result.outcome.status == "succeeded"
    assert played(d)[1:] == [("deploy_batch.yml", ["node2"], "1.1.0"),
                             ("deploy_batch.yml", ["node3"], "1.1.0")]


def test_a_refused_deployment_neither_resolves_nor_hides_an_interruption(
    tmp_path: Path, deployment: Make,
) -> None:
    killed, lb = rolling(tmp_path, deployment, FROM_1_0, "1.1.0", node_at("node1", "done"))
    d = then(deployment, lb, [])
    refused = d.journal.start(env="lab", app="hello", kind="deploy", version="1.1.0", command="test")
    d.journal.finish_deployment(refused[0], "refused", "window: outside every release window")
    found, _ = find_interrupted(d.journal, "lab")
    assert found is not None and found.root.id == killed.id


def test_the_command_with_nothing_to_resume_exits_0_and_says_why(world: dict[str, Path]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "deployer", "resume", "--env", "lab", "--json", "--config",
         str(world["config"])], capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    assert "nothing to resume: no deployment of environment 'lab' in the journal" in r.stderr
    assert json.loads(r.stdout)["status"] == "nothing_to_resume"


def test_a_deployment_still_running_is_not_resumed(deployment: Make) -> None:
    d = deployment([])
    d.journal.start(env="lab", app="hello", kind="deploy", version="1.1.0", command="test")
    with pytest.raises(LockHeldError, match="still running"):
        run_resume(d)
    assert d.runner.requests == []


def test_nothing_to_resume_after_a_deployment_that_ended(deployment: Make) -> None:
    d = deployment(FROM_1_0)
    assert d.deploy("1.1.0").status == "succeeded"
    result, said = run_resume(d)
    assert result.interruption is None and "ended succeeded" in said[0]
    assert [r.kind for r in records(d)] == ["deploy"]


def test_the_lock_of_a_holder_on_another_host_is_taken_over_only_after_its_lease(
    tmp_path: Path, deployment: Make,
) -> None:
    host = FakeLockHost()
    lb = FakeLoadBalancer("hello", NODES)
    d = deployment(ReplayRunner(FROM_1_0, lb=lb), lb=lb, lock=EnvironmentLock(host, "lab", lease=60))
    killed = kill(d, "1.1.0", node_at("node1", "draining"), tmp_path)
    # Another controller holds the lock now (it took the dead holder's over), its lease running.
    far = EnvironmentLock(host, "lab", lease=60, me=Identity("ci@far", "far", 7, "1"))
    host.now += 61
    far.acquire()
    scripts = [survey({"node1": "1.0.0", "node2": "1.0.0", "node3": "1.0.0"}), good_batch(["node1"])]
    d = then(deployment, lb, scripts, lock=EnvironmentLock(host, "lab", lease=60))
    with pytest.raises(LockHeldError, match="pid 7"):
        run_resume(d)
    # The refused resume is on the record (nothing changed); the interrupted one still waits.
    assert [(r.kind, r.status) for r in records(d)][:1] == [("resume", "refused")]
    assert records(d)[1].id == killed.id and d.runner.requests == []
    host.now += 61  # its lease ends: it is taken over
    result, _ = run_resume(d)
    assert result.outcome is not None and result.outcome.status == "succeeded"
    assert [p for n, p in resume_events(d, result) if n == "lock"] == ["taken_over"]
    assert host.log[-1]["record"]["host"] == "far"
    assert admin(lb) == dict.fromkeys(NODES, "ready")


# -- blue-green -----------------------------------------------------------------------------------


def soaks(lb: Any, *, errors: dict[str, tuple[int, int]] | None = None) -> Soaks:
    """The real soak analysis over the fake load balancer's counters (see test_bluegreen)."""
    lb.traffic = {n: (100, 0) for n in BLUE + GREEN} | (errors or {})
    config = parse_analysis_config({
        "duration": 6, "interval": 1, "window": 3, "failure_limit": 2, "min_samples": 10,
        "rules": [{"indicator": "http_5xx_share", "max": "1%"}],
    })
    return Soaks(config, runtime=lb, env_name="lab", clock=FakeClock())


def preview(**legs: str) -> Callable[[str], str]:
    return lambda backend: legs.get(backend.removeprefix("hello_"), "?")


def release(leg: list[str], frm: str = "1.0.0") -> list[RunScript]:
    return [survey(dict.fromkeys(leg, frm)), good_batch(leg)]


def probe(leg: list[str], on: str) -> RunScript:
    return survey(dict.fromkeys(leg, on), playbook="probe.yml")


def blue_green(tmp_path: Path, bluegreen: Make, at: Callable[[Published], bool], **kw: Any,
               ) -> tuple[DeploymentRecord, FakeLoadBalancer]:
    """1.1.0 released to green (blue live on 1.0.0), killed at ``at``."""
    d = bluegreen(release(GREEN), preview_version=preview(green="1.1.0"), **kw)
    d.runner.lb = d.lb
    return kill(d, "1.1.0", at, tmp_path), d.lb


def then_bg(bluegreen: Make, lb: FakeLoadBalancer, scripts: list[RunScript], **kw: Any) -> Deployment:
    return bluegreen(ReplayRunner(scripts, lb=lb), lb=lb, **kw)


def live(lb: FakeLoadBalancer) -> str | None:
    return lb.route(MAP, "live")


def switches(lb: FakeLoadBalancer) -> list[str]:
    return [backend for key, backend in lb.changes if key == f"{MAP}:live"]


def test_blue_green_killed_after_the_switch_rollback_switches_back_once_and_restores_green(
    tmp_path: Path, bluegreen: Make,
) -> None:
    _, lb = blue_green(tmp_path, bluegreen, lambda p: isinstance(p.event, TrafficSwitched),
                       soaks=soaks)
    assert live(lb) == "hello_green"
    d = then_bg(bluegreen, lb, [probe(BLUE, "1.0.0"), probe(BLUE, "1.0.0"), *release(GREEN, "1.1.0")],
                preview_version=preview(green="1.1.0", blue="1.0.0"), soaks=soaks)
    result, said = run_resume(d)
    assert "after live traffic moved to green" in said[0] and "before its soak passed" in said[0]
    assert "move live traffic back to blue (1.0.0) in one switch, then put green back" in said[1]
    outcome = result.outcome
    assert outcome is not None and outcome.status == "succeeded", outcome.summary
    assert switches(lb) == ["hello_green", "hello_blue"]  # the killed one's, then one back
    assert live(lb) == "hello_blue"
    assert played(d)[2:] == [("prestage.yml", GREEN, "1.0.0"), ("deploy_batch.yml", GREEN, "1.0.0")]
    assert ("live traffic", "switched_back") in resume_events(d, result)
    assert records(d)[0].version == "1.0.0" and records(d)[0].details["acts_as"] == "rollback"
    assert lb.backends["hello_green"] == dict.fromkeys(GREEN, "ready")
    again, _ = run_resume(d)
    assert again.interruption is None


def test_blue_green_killed_during_the_soak_finish_soaks_the_live_leg_again(
    tmp_path: Path, bluegreen: Make,
) -> None:
    _, lb = blue_green(tmp_path, bluegreen, note_at("soaking 1.1.0 on green"), soaks=soaks)
    d = then_bg(bluegreen, lb, [], soaks=soaks)
    result, said = run_resume(d, "finish")
    assert "finish it: soak green again" in said[1]
    outcome = result.outcome
    assert outcome is not None and outcome.status == "succeeded", outcome.summary
    assert "green is live on 1.1.0, soaked again" in outcome.summary
    assert d.runner.requests == [] and switches(lb) == ["hello_green"]
    assert ("green leg", "soaked") in resume_events(d, result)
    assert records(d)[0].details["acts_as"] == "deploy"


def test_blue_green_a_breach_in_the_soak_run_again_switches_back_and_restores_green(
    tmp_path: Path, bluegreen: Make,
) -> None:
    _, lb = blue_green(tmp_path, bluegreen, note_at("soaking 1.1.0 on green"), soaks=soaks)
    d = then_bg(bluegreen, lb, release(GREEN, "1.1.0"),
                soaks=lambda fake: soaks(fake, errors={n: (100, 50) for n in GREEN}))
    result, _ = run_resume(d, "finish")
    outcome = result.outcome
    assert outcome is not None and outcome.status == "rolled_back", outcome.summary
    assert switches(lb) == ["hello_green", "hello_blue"] and live(lb) == "hello_blue"
    assert played(d) == [("prestage.yml", GREEN, "1.0.0"), ("deploy_batch.yml", GREEN, "1.0.0")]


def test_blue_green_a_passed_soak_is_not_run_again(tmp_path: Path, bluegreen: Make) -> None:
    _, lb = blue_green(tmp_path, bluegreen, note_at("soak: "), soaks=soaks)
    for mode in ("rollback", "finish"):
        d = then_bg(bluegreen, lb, [], soaks=soaks)
        result, said = run_resume(d, mode)
        if mode == "finish":  # the first resume resolved it
            assert result.interruption is None
            continue
        assert "nothing left to do: green is live on 1.1.0 and passed its soak" in said[1]
        assert result.outcome is not None and result.outcome.status == "succeeded"
        assert d.runner.requests == [] and switches(lb) == ["hello_green"]
        assert (records(d)[0].version, records(d)[0].details["acts_as"]) == ("1.1.0", "deploy")


@pytest.mark.parametrize("mode", ["rollback", "finish"])
def test_blue_green_killed_while_releasing_the_idle_leg(
    tmp_path: Path, bluegreen: Make, mode: str,
) -> None:
    """Rollback puts green back on 1.0.0 (live traffic never moved); finish releases it again
    and goes on: smoke, one switch."""
    _, lb = blue_green(tmp_path, bluegreen, node_at("node3", "deploying"))
    assert lb.backends["hello_green"] == dict.fromkeys(GREEN, "maint") and live(lb) == "hello_blue"
    on_green = {"node3": "1.1.0", "node4": "1.0.0"}
    if mode == "rollback":
        scripts = [probe(BLUE, "1.0.0"), survey(on_green), good_batch(GREEN)]
    else:
        scripts = [survey(on_green), good_batch(GREEN)]
    d = then_bg(bluegreen, lb, scripts, preview_version=preview(green="1.1.0"))
    result, said = run_resume(d, mode)
    assert "while releasing 1.1.0 to the idle leg green (node3 deploying, node4 draining)" in said[0]
    outcome = result.outcome
    assert outcome is not None and outcome.status == "succeeded", outcome.summary
    assert lb.backends["hello_green"] == dict.fromkeys(GREEN, "ready")
    if mode == "rollback":
        assert "put the idle leg green back on its release (live traffic stays on blue)" in said[1]
        assert played(d)[1:] == [("prestage.yml", GREEN, "1.0.0"), ("deploy_batch.yml", GREEN, "1.0.0")]
        assert switches(lb) == [] and live(lb) == "hello_blue"
    else:
        assert played(d) == [("prestage.yml", GREEN, "1.1.0"), ("deploy_batch.yml", GREEN, "1.1.0")]
        assert switches(lb) == ["hello_green"] and live(lb) == "hello_green"


@pytest.mark.parametrize("mode", ["rollback", "finish"])
def test_blue_green_killed_while_uplifting_the_old_leg(tmp_path: Path, bluegreen: Make, mode: str) -> None:
    """Green passed (live on 1.1.0); blue was being uplifted. Rollback puts blue back on 1.0.0
    as the fallback (live traffic stays on the proven green); finish uplifts it: release,
    smoke, one switch to it."""
    d = bluegreen([*release(GREEN), *release(BLUE)], preview_version=preview(green="1.1.0", blue="1.1.0"),
                  strategy={"after_soak": "uplift"})
    d.runner.lb = d.lb
    kill(d, "1.1.0", node_at("node1", "deploying"), tmp_path)
    lb = d.lb
    assert live(lb) == "hello_green" and lb.backends["hello_blue"] == dict.fromkeys(BLUE, "maint")
    on_blue = {"node1": "1.1.0", "node2": "1.0.0"}
    d = then_bg(bluegreen, lb, [survey(on_blue), good_batch(BLUE)],
                preview_version=preview(green="1.1.0", blue="1.1.0"), strategy={"after_soak": "uplift"})
    result, said = run_resume(d, mode)
    assert "while uplifting blue to 1.1.0 (green proven)" in said[0]
    outcome = result.outcome
    assert outcome is not None and outcome.status == "succeeded", outcome.summary
    assert lb.backends["hello_blue"] == dict.fromkeys(BLUE, "ready")
    if mode == "rollback":
        assert played(d) == [("prestage.yml", BLUE, "1.0.0"), ("deploy_batch.yml", BLUE, "1.0.0")]
        assert switches(lb) == ["hello_green"] and live(lb) == "hello_green"
        # 1.1.0 stays live: for the history the environment went forward.
        assert (records(d)[0].version, records(d)[0].details["acts_as"]) == ("1.1.0", "deploy")
    else:
        assert played(d) == [("prestage.yml", BLUE, "1.1.0"), ("deploy_batch.yml", BLUE, "1.1.0")]
        assert switches(lb) == ["hello_green", "hello_blue"] and live(lb) == "hello_blue"
        assert "blue uplifted to 1.1.0" in outcome.summary
