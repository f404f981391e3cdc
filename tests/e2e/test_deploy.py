"""The rolling deployer end to end on the lab, through the real CLI: real sshd nodes,
supervisord, HAProxy's runtime API, signed releases pulled from the lab's store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from deployer.lab import Lab

pytestmark = pytest.mark.e2e

Ssh = Callable[..., subprocess.CompletedProcess[str]]


def cli(the_lab: Lab, *args: str, check: bool | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--config", str(the_lab.config_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    if check is not None and (r.returncode == 0) != check:
        raise AssertionError(f"deployer {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def start_deploy(the_lab: Lab, version: str, **popen: Any) -> subprocess.Popen[str]:
    """A deployment running in the background, its live progress readable from stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", version,
         "--config", str(the_lab.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )


def fleet(the_lab: Lab) -> dict[str, dict[str, Any]]:
    r = cli(the_lab, "status", "--env", "lab", "--json", check=True)
    return {n["node"]: n for n in json.loads(r.stdout)["nodes"]}


def app_pids(the_lab: Lab, lab_ssh: Ssh) -> dict[str, str]:
    """Each node's app PID as its supervisord reports it (a restart changes it)."""
    pids = {}
    for node in ("node1", "node2", "node3"):
        r = lab_ssh(the_lab, node, "supervisorctl pid hello")
        assert r.returncode == 0, r.stderr
        pids[node] = r.stdout.strip()
    return pids


def history(the_lab: Lab) -> list[dict[str, Any]]:
    return list(json.loads(cli(the_lab, "history", "--env", "lab", "--json", check=True).stdout))


def events(the_lab: Lab, deployment: int) -> list[tuple[str, str]]:
    r = cli(the_lab, "history", "--env", "lab", "--json", "--deployment", str(deployment), check=True)
    return [(e["node"], e["phase"]) for e in json.loads(r.stdout)["events"]]


def journal_files(the_lab: Lab) -> dict[str, bytes]:
    """The journal's file, and its write-ahead log when there is one."""
    config = yaml.safe_load(the_lab.config_path.read_text())
    journal = (the_lab.config_path.parent / config["state_dir"] / "journal.sqlite").resolve()
    return {p.name: p.read_bytes() for p in (journal, journal.with_name(journal.name + "-wal"))
            if p.exists()}


def lb_word(status: str | None) -> str | None:
    """HAProxy's status without its transition suffix: 'UP 1/2' (in service, one good check short
    of full health, as a node is right after a restart) is UP."""
    return status.split(" ")[0] if status else status


def assert_all_serving(the_lab: Lab, version: str) -> None:
    nodes = fleet(the_lab)
    assert {n: (s["version"], lb_word(s["load_balancer"]), s["healthy"]) for n, s in nodes.items()} == {
        n: (version, "UP", True) for n in ("node1", "node2", "node3")
    }


# The core tests run on both lab topologies: everything as root beside HAProxy, and the
# production-like one (a deploy user with limited sudo, HAProxy on its own host over SSH).
BOTH_TOPOLOGIES = pytest.mark.parametrize("topology", ["lab", "production"])


@BOTH_TOPOLOGIES
def test_deploy_plan_rerun_and_rollback(
    make_lab: Callable[..., Lab], lab_ssh: Ssh, topology: str
) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0", topology=topology)
    assert_all_serving(the_lab, "1.0.0")

    # plan changes nothing: same PIDs, same versions, no deployment recorded.
    before = app_pids(the_lab, lab_ssh)
    r = cli(the_lab, "plan", "--env", "lab", "--version", "1.1.0", check=True)
    assert "batch 1: node1" in r.stdout and "batch 3: node3" in r.stdout
    assert "capacity floor: 1" in r.stdout
    assert app_pids(the_lab, lab_ssh) == before
    assert_all_serving(the_lab, "1.0.0")
    assert history(the_lab) == []

    r = cli(the_lab, "deploy", "--env", "lab", "--version", "1.1.0", check=True)
    assert "succeeded" in r.stderr
    journal = journal_files(the_lab)
    assert_all_serving(the_lab, "1.1.0")
    first = history(the_lab)[0]
    assert (first["version"], first["status"]) == ("1.1.0", "succeeded")
    assert [p for n, p in events(the_lab, first["id"]) if n == "node2"] == [
        "staging", "staged", "draining", "deploying", "smoke", "rejoining", "done"]
    cli(the_lab, "plan", "--env", "lab", "--version", "1.0.0", check=True)
    # status, history and plan only read: the journal is byte for byte what the deploy left.
    assert {k: v for k, v in journal_files(the_lab).items() if v} == {
        k: v for k, v in journal.items() if v}

    # A rerun of a finished deployment changes nothing on any node.
    after = app_pids(the_lab, lab_ssh)
    assert after != before
    r = cli(the_lab, "deploy", "--env", "lab", "--version", "1.1.0", check=True)
    assert "nothing to do" in r.stderr
    assert app_pids(the_lab, lab_ssh) == after

    # Rollback goes back to what ran before the last deployment.
    r = cli(the_lab, "rollback", "--env", "lab", check=True)
    assert "back to 1.0.0" in r.stderr
    assert_all_serving(the_lab, "1.0.0")
    assert history(the_lab)[0]["kind"] == "rollback"


@BOTH_TOPOLOGIES
def test_bad_release_is_reverted_on_the_first_node_only(
    make_lab: Callable[..., Lab], lab_ssh: Ssh, topology: str
) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0", topology=topology)
    before = app_pids(the_lab, lab_ssh)
    r = cli(the_lab, "deploy", "--env", "lab", "--version", "1.2.0-badhealth")
    assert r.returncode == 10, r.stderr
    assert "Traceback" not in r.stderr
    assert_all_serving(the_lab, "1.0.0")
    pids = app_pids(the_lab, lab_ssh)
    assert pids["node1"] != before["node1"]  # switched, failed, reverted, restarted
    assert {n: pids[n] for n in ("node2", "node3")} == {n: before[n] for n in ("node2", "node3")}
    last = history(the_lab)[0]
    assert last["status"] == "rolled_back"
    node1 = [p for n, p in events(the_lab, last["id"]) if n == "node1"]
    assert node1[-2:] == ["reverting", "reverted"]
    assert "draining" not in [p for n, p in events(the_lab, last["id"]) if n != "node1"]


@BOTH_TOPOLOGIES
def test_failure_on_the_last_node_rolls_the_others_back(
    make_lab: Callable[..., Lab], topology: str
) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0", topology=topology)
    # Game-day fault: only node3 fails its health check, and only on 1.1.0.
    (the_lab.dir / "nodes" / "node3" / "etc" / "fault").write_text("unhealthy 1.1.0\n")
    r = cli(the_lab, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 10, r.stderr
    assert_all_serving(the_lab, "1.0.0")
    last = history(the_lab)[0]
    assert last["status"] == "rolled_back"
    ev = events(the_lab, last["id"])
    for node in ("node1", "node2"):
        assert [p for n, p in ev if n == node][-3:] == ["done", "reverting", "reverted"]
    # Rolled back in reverse order: node2 before node1.
    order = [n for n, p in ev if p == "reverting" and n in ("node1", "node2")]
    assert order == ["node2", "node1"]


def test_a_second_deployment_is_refused_while_one_runs(make_lab: Callable[..., Lab]) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0")
    first = start_deploy(the_lab, "1.1.0")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(cli(the_lab, "status", "--env", "lab", "--json", check=True).stdout)
            if status["locked_by"]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first deployment never took the lock")
        r = cli(the_lab, "deploy", "--env", "lab", "--version", "1.1.0")
        assert r.returncode == 6 and "is locked by" in r.stderr
    finally:
        _out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert_all_serving(the_lab, "1.1.0")
    assert [h["status"] for h in history(the_lab)] == ["refused", "succeeded"]


def test_ctrl_c_finishes_the_batch_and_leaves_every_node_in_service(
    make_lab: Callable[..., Lab],
) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0")
    proc = start_deploy(the_lab, "1.1.0")
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if "node1" in line and "draining" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=600)[1]
    assert proc.returncode == 130, seen + rest
    assert "cancelled" in rest
    nodes = fleet(the_lab)
    assert {n: lb_word(s["load_balancer"]) for n, s in nodes.items()} == dict.fromkeys(nodes, "UP")
    assert nodes["node1"]["version"] == "1.1.0"  # the batch under way was finished
    assert {nodes[n]["version"] for n in ("node2", "node3")} == {"1.0.0"}
    assert history(the_lab)[0]["status"] == "cancelled"


def test_a_killed_deployer_leaves_a_trail_and_recover_fixes_it(make_lab: Callable[..., Lab]) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0")
    proc = start_deploy(the_lab, "1.1.0", start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "node1" in line and "deploying" in line:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its ansible-playbook
            break
    proc.wait(timeout=30)
    # The journal says what happened (history shows the deployment as abandoned, and only
    # reads); status shows node1 out of the load balancer.
    last = history(the_lab)[0]
    assert last["status"] == "abandoned" and "ended unexpectedly" in last["summary"]
    assert ("node1", "deploying") in events(the_lab, last["id"])
    r = cli(the_lab, "status", "--env", "lab", "--json")
    assert r.returncode == 1, r.stderr  # a node deployer left out: status fails until it is back
    node1 = {n["node"]: n for n in json.loads(r.stdout)["nodes"]}["node1"]
    assert node1["load_balancer"] == "MAINT"  # drained, then put in maintenance
    assert node1["detail"] == f"left out by deployment {last['id']}; run `deployer recover --env lab`"
    assert f"node1 (deployment {last['id']})" in r.stderr and "deployer recover --env lab" in r.stderr
    r = cli(the_lab, "recover", "--env", "lab", check=True)
    assert "put back into service" in r.stderr
    # recover writes: the abandoned deployment is now recorded as failed.
    assert {h["id"]: h["status"] for h in history(the_lab)}[last["id"]] == "failed"
    deadline = time.monotonic() + 30
    while lb_word(fleet(the_lab)["node1"]["load_balancer"]) != "UP" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {lb_word(s["load_balancer"]) for s in fleet(the_lab).values()} == {"UP"}


def test_bad_input_is_refused_and_changes_nothing(make_lab: Callable[..., Lab], lab_ssh: Ssh) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0")
    before = app_pids(the_lab, lab_ssh)
    cases = [
        (("deploy", "--env", "lab", "--version", "9.9.9"), 4, "9.9.9"),
        (("deploy", "--env", "lab", "--version", "1.0;reboot"), 2, "not a valid version"),
        (("deploy", "--env", "nope", "--version", "1.1.0"), 2, "no environment named 'nope'"),
    ]
    for args, code, text in cases:
        r = cli(the_lab, *args)
        assert (r.returncode, text in r.stderr, "Traceback" in r.stderr) == (code, True, False), r.stderr
    # A tampered tarball in the store is refused before any node is touched: one byte changed
    # (caught by its digest), or bytes added (caught by its size).
    tarball = next((the_lab.store_dir / "hello" / "1.1.0").glob("*.tar.gz"))
    good = tarball.read_bytes()
    for tampered, caught in ((good[:-1] + bytes([good[-1] ^ 0xFF]), "differs from the signed"),
                             (good + b"tampered", "the signed manifest says")):
        tarball.write_bytes(tampered)
        r = cli(the_lab, "deploy", "--env", "lab", "--version", "1.1.0")
        assert r.returncode == 5 and caught in " ".join(r.stderr.split()), r.stderr
        assert "Traceback" not in r.stderr
    assert app_pids(the_lab, lab_ssh) == before
    # Bad input (a version string, an environment) is not a deployment; a release refused by
    # its verification is one, on the record as refused.
    assert [(h["version"], h["status"]) for h in history(the_lab)] == [
        ("1.1.0", "refused"), ("1.1.0", "refused"), ("9.9.9", "refused")]
    assert_all_serving(the_lab, "1.0.0")
    # A bad value on the last node only stops the deployment before the first node is drained:
    # the pre-stage run checks every node's variables for every step of the deploy.
    inventory = yaml.safe_load(the_lab.inventory_path.read_text())
    hosts = inventory["all"]["children"]["hello_nodes"]["hosts"]
    hosts["node3"]["deployer_lb_haproxy_poll_interval"] = "soon"
    the_lab.inventory_path.write_text(yaml.safe_dump(inventory))
    r = cli(the_lab, "deploy", "--env", "lab", "--version", "1.3.0-errors")
    assert r.returncode == 9 and "Traceback" not in r.stderr, r.stderr  # refused, nothing changed
    assert "node3" in r.stderr and "deployer_lb_haproxy_poll_interval" in r.stderr, r.stderr
    assert app_pids(the_lab, lab_ssh) == before
    assert_all_serving(the_lab, "1.0.0")
    phases = {phase for _, phase in events(the_lab, history(the_lab)[0]["id"])}
    assert phases <= {"pending", "staging", "staged", "skipped"}, phases


@BOTH_TOPOLOGIES
def test_a_node_lost_mid_rollout_stays_out_and_the_rest_is_rolled_back(
    make_lab: Callable[..., Lab], topology: str,
) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0", topology=topology)
    proc = start_deploy(the_lab, "1.1.0")
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if "node2" in line and "draining" in line:
            # The VM dies once drained: sshd, supervisord, the app, every session.
            the_lab.crash_node("node2")
            break
    rest = proc.communicate(timeout=600)[1]
    assert proc.returncode == 11, seen + rest  # failed, and a node may be out of service
    assert "deployer recover --env lab" in rest
    last = history(the_lab)[0]
    assert last["status"] == "failed"
    ev = events(the_lab, last["id"])
    assert ("node2", "failed") in ev and ("node2", "out_of_service") in ev
    assert [p for n, p in ev if n == "node1"][-2:] == ["reverting", "reverted"]
    r = cli(the_lab, "status", "--env", "lab", "--json")
    assert r.returncode == 1 and "could not read node2" in r.stderr, r.stderr  # node2 is gone
    nodes = {n["node"]: n for n in json.loads(r.stdout)["nodes"]}
    assert nodes["node2"]["load_balancer"] == "MAINT"  # never put back while unreachable
    assert {n: (nodes[n]["version"], lb_word(nodes[n]["load_balancer"])) for n in ("node1", "node3")} == {
        "node1": ("1.0.0", "UP"), "node3": ("1.0.0", "UP")}


def test_without_prestaging_every_phase_is_journalled_and_canary_0_is_no_canary(
    make_lab: Callable[..., Lab],
) -> None:
    the_lab = make_lab(nodes=2, seed="1.0.0")
    config = yaml.safe_load(the_lab.config_path.read_text())
    config["environments"]["lab"]["strategy"].update(prestage=False, canary="0", batch_size="1")
    path = the_lab.config_path.with_name("no-prestage.yml")
    path.write_text(yaml.safe_dump(config))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deployer", *args, "--env", "lab", "--config", str(path)],
            capture_output=True, text=True, timeout=600, check=False,
        )

    plan = run("plan", "--version", "1.1.0", "--json")
    assert plan.returncode == 0, plan.stderr
    assert [(b["nodes"], b["canary"]) for b in json.loads(plan.stdout)["batches"]] == [
        (["node1"], False), (["node2"], False)]
    r = run("deploy", "--version", "1.1.0")
    assert r.returncode == 0, r.stderr
    assert "unexpected move" not in r.stderr, r.stderr
    deployment = json.loads(run("history", "--json").stdout)[0]["id"]
    ev = json.loads(run("history", "--json", "--deployment", str(deployment)).stdout)["events"]
    for node in ("node1", "node2"):  # staged by the batch's own run, then every step recorded
        assert [e["phase"] for e in ev if e["node"] == node] == [
            "staging", "draining", "deploying", "smoke", "rejoining", "done"]
