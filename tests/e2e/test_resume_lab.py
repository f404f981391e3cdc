"""`deployer resume` on the lab, through the CLI: a deploying process is killed (SIGKILL, with
its ansible-playbook) at several points of a rolling and of a blue-green deployment, then
`resume` brings the fleet back to every node in service on one release per leg, as
`deployer status` and HAProxy show it, with the journal saying what happened and the dead
holder's lock taken over. One lab per strategy; each kill point starts from the state the
previous resume left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lab_cli import configured, deployer, fleet, journal, read_until, start

from deployer.adapters.journal import ABANDONED_SUMMARY
from deployer.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def killed_at(config: Path, *words: str, version: str = "1.1.0") -> str:
    """Deploy ``version`` and SIGKILL the deploying process (and its playbook runs) as soon as
    its progress shows a line with every word; what it had printed."""
    proc = start(config, "deploy", "--env", "lab", "--version", version, start_new_session=True)
    try:
        seen = read_until(proc, *words)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return seen


def resumed(config: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    r = deployer(config, "resume", "--env", "lab", "--json")
    start_at = r.stdout.find("{")
    assert start_at >= 0, r.stdout + r.stderr
    return r, json.loads(r.stdout[start_at:])


def status(config: Path) -> dict[str, Any]:
    """`deployer status --json`; exit 0 means every node read and none left out by deployer."""
    r = deployer(config, "status", "--env", "lab", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def serving(lab: Lab, config: Path) -> dict[str, tuple[str, str]]:
    """Each node's release and HAProxy state, from `deployer status` and from HAProxy's own
    runtime API (through the lab); they must agree."""
    reported = {n["node"]: (n["version"] or "", str(n["load_balancer"] or "").split(" ")[0])
                for n in status(config)["nodes"]}
    assert {n: (v or "", s or "") for n, (v, s) in fleet(lab).items()} == reported
    return reported


def last_two(lab: Lab) -> tuple[Any, Any]:
    """The newest deployment (the resume) and the one before it (the one killed)."""
    newest, before = journal(lab).deployments("lab", limit=2)
    return newest, before


def lock_rows(lab: Lab, deployment: int) -> list[str]:
    return [e.phase for e in journal(lab).node_events(deployment) if e.node == "lock"]


def test_a_killed_rolling_deployment_is_resumed_before_pre_staging_mid_batch_and_in_its_soak(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0", soak=4.0)
    config = lab.config_path
    finish = configured(lab, "deployer-finish.yml", strategy={"on_interrupted": "finish"})
    on_1_0 = dict.fromkeys(("node1", "node2", "node3"), ("1.0.0", "UP"))

    # Killed while pre-staging: no node left the load balancer, nothing to do (recorded).
    killed_at(config, "pre-staging 1.1.0")
    r, out = resumed(config)
    assert r.returncode == 0, r.stderr
    assert "before any node left the load balancer" in r.stderr and "nothing to do" in r.stderr
    assert out["status"] == "nothing_to_do"
    assert serving(lab, config) == on_1_0
    resume, dead = last_two(lab)
    assert (resume.kind, resume.version, resume.status) == ("resume", "-", "succeeded")
    assert resume.details["resumes"] == dead.uid
    assert (dead.status, dead.summary) == ("failed", ABANDONED_SUMMARY)
    assert lock_rows(lab, resume.id) == ["taken_over"]

    # Killed mid-batch (node2 out of the load balancer, being switched): rolled back.
    killed_at(config, "node2", "deploying")
    assert fleet(lab)["node2"][1] == "MAINT"
    r, out = resumed(config)
    assert r.returncode == 0, r.stderr
    assert "while node2 was deploying; done: node1; not started: node3" in r.stderr
    assert "roll it back: 1.0.0 to node1, node2, node3" in r.stderr
    assert (out["kind"], out["version"], out["status"]) == ("resume", "1.0.0", "succeeded")
    assert out["resume"]["resumes"]["version"] == "1.1.0"
    assert serving(lab, config) == on_1_0
    resume, dead = last_two(lab)
    assert resume.details["resumes"] == dead.uid and resume.details["acts_as"] == "rollback"
    assert lock_rows(lab, resume.id) == ["taken_over"]
    assert [e.phase for e in journal(lab).node_events(resume.id) if e.node == "node2"][-1] == "done"
    # A second resume finds nothing to do, and changes nothing.
    again = deployer(config, "resume", "--env", "lab")
    assert again.returncode == 0 and "nothing to resume" in again.stderr, again.stderr
    assert journal(lab).deployments("lab", limit=1)[0].id == resume.id

    # Killed during the soak after the canary batch; finished (on_interrupted: finish).
    killed_at(finish, "soaking 1.1.0 on")
    r, out = resumed(finish)
    assert r.returncode == 0, r.stderr
    assert "finish it: deploy 1.1.0" in r.stderr
    assert out["status"] == "succeeded" and out["resume"]["decision"]["mode"] == "finish"
    assert serving(lab, config) == dict.fromkeys(on_1_0, ("1.1.0", "UP"))
    history = json.loads(deployer(config, "history", "--env", "lab", "--json").stdout)
    assert [(h["kind"], h["status"]) for h in history[:2]] == [("resume", "succeeded"), ("deploy", "failed")]
    assert history[0]["resumes"] == history[1]["uid"]


def legs(lab: Lab, config: Path) -> dict[str, Any]:
    """Which leg is live and each leg's releases, by `deployer status`; HAProxy (its runtime
    API, and the map file it starts from) agrees on the live leg."""
    data = status(config)
    live = data["blue_green"]["live"]
    assert lab.status().live_leg == live
    assert f"live {data['blue_green']['legs'][live]['backend']}\n" in lab.legs_map.read_text()
    versions = {n["node"]: n["version"] for n in data["nodes"]}
    return {"live": data["blue_green"]["live"],
            **{leg: {versions[n] for n in info["nodes"]} for leg, info in data["blue_green"]["legs"].items()}}


def test_a_killed_blue_green_deployment_is_resumed_after_the_switch_and_during_its_soak(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=1, seed="1.0.0", legs=True, soak=6.0)
    config = lab.config_path
    finish = configured(lab, "deployer-finish.yml", strategy={"on_interrupted": "finish"})

    # Killed just after live traffic moved to green: switched back in one operation, green
    # put back on its release.
    killed_at(config, "live traffic switched from blue to green")
    assert legs(lab, config)["live"] == "green"
    r, out = resumed(config)
    assert r.returncode == 0, r.stderr
    assert "before its soak passed" in r.stderr and "move live traffic back to blue" in r.stderr
    assert out["status"] == "succeeded", out
    assert [(s["from"], s["to"], s["back"]) for s in out["blue_green"]["switches"]] == [
        ("green", "blue", True)]
    assert legs(lab, config) == {"live": "blue", "blue": {"1.0.0"}, "green": {"1.0.0"}}
    assert {s for _, s in serving(lab, config).values()} == {"UP"}
    resume, dead = last_two(lab)
    assert resume.details["resumes"] == dead.uid and lock_rows(lab, resume.id) == ["taken_over"]

    # Killed during the soak of green: soaked again, and green stays live (finish).
    killed_at(finish, "soaking 1.1.0 on green")
    r, out = resumed(finish)
    assert r.returncode == 0, r.stderr
    assert "finish it: soak green again" in r.stderr
    assert out["status"] == "succeeded" and out["blue_green"]["switches"] == []
    assert out["blue_green"]["soak"]["outcome"] == "passed"
    assert legs(lab, config) == {"live": "green", "blue": {"1.0.0"}, "green": {"1.1.0"}}
    assert {s for _, s in serving(lab, config).values()} == {"UP"}
    events = [(e.node, e.phase) for e in journal(lab).node_events(last_two(lab)[0].id)]
    assert ("green leg", "soaked") in events
