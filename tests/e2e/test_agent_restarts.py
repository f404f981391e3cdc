"""The runner under the signals and crashes of a real host, on a lab: SIGKILLed mid-deployment
and started again, it resumes the interrupted deployment and then does what its pointer says,
leaving every node in service on one release and the journal consistent; SIGTERM stops it at
the next safe point with every node in service; two runners of one environment (two state
directories, as on two hosts) never deploy at once."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from lab_cli import all_serving, deployer, fleet, journal

from deployer.adapters.journal import ABANDONED_SUMMARY, Journal
from deployer.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def start_agent(config: Path, *args: str) -> subprocess.Popen[str]:
    """The runner in the background, in a session of its own (with its playbook runs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "deployer", "agent", "--env", "lab", "--quiet", *args,
         "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def events(stream: IO[str]) -> Iterator[dict[str, Any]]:
    for line in stream:
        if line.strip():
            yield json.loads(line)


def until(proc: subprocess.Popen[str], match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The runner's JSON lines up to the first that matches."""
    assert proc.stdout is not None
    seen = []
    for event in events(proc.stdout):
        seen.append(event)
        if match(event):
            return seen
    raise AssertionError(f"the runner ended before that: {seen[-5:]}")


def set_pointer(config: Path, version: str) -> None:
    r = deployer(config, "pointer", "set", "--env", "lab", "--version", version, "--reason", "e2e")
    assert r.returncode == 0, r.stderr


def fast(lab: Lab) -> Path:
    """The lab's config with the runner polling every second."""
    data = yaml.safe_load(lab.config_path.read_text())
    data["environments"]["lab"]["agent"] = {"interval": 1, "jitter": 0.1}
    lab.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return lab.config_path


def test_a_runner_killed_mid_deployment_resumes_when_started_again(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=3, seed="1.0.0")
    config = fast(lab)
    set_pointer(config, "1.1.0")
    proc = start_agent(config)
    try:
        until(proc, lambda e: e["type"] == "node" and e["node"] == "node2" and e["phase"] == "deploying")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    killed = journal(lab).deployments("lab")[0]
    assert killed.status == "running"  # as it was left: its process is gone

    # Started again (a timer's next run): the interrupted deployment is resumed first (rolled
    # back, strategy.on_interrupted), then the pointer's version deployed, in the same look.
    r = deployer(config, "agent", "--env", "lab", "--once")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert [e["decision"] for e in lines if e["type"] == "agent_decision"] == ["resumed", "deployed"]
    assert fleet(lab) == all_serving(lab, "1.1.0")
    rows = journal(lab).deployments("lab")
    assert [(d.kind, d.status) for d in rows] == [
        ("deploy", "succeeded"), ("resume", "succeeded"), ("deploy", "failed")]
    assert rows[2].id == killed.id and rows[2].summary == ABANDONED_SUMMARY
    assert rows[1].details["resumes"] == killed.uid
    assert deployer(config, "status", "--env", "lab").returncode == 0  # none left out
    status = json.loads((lab.dir / "pointer" / "lab.status.json").read_text())
    assert (status["decision"], status["running"]) == ("deployed", "1.1.0")


def test_sigterm_stops_at_the_next_safe_point_and_a_restart_carries_on(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0")
    config = fast(lab)
    set_pointer(config, "1.1.0")
    proc = start_agent(config)
    try:
        # While node1 is out of the load balancer: it is finished, then nothing more.
        until(proc, lambda e: e["type"] == "node" and e["node"] == "node1" and e["phase"] == "deploying")
        proc.send_signal(signal.SIGTERM)  # to the runner alone, as systemd's KillMode=mixed does
        assert proc.stdout is not None
        rest = list(events(proc.stdout))
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finished = next(e for e in rest if e["type"] == "deployment_finished")
    assert finished["status"] == "cancelled" and finished["exit_code"] == 130
    assert not [e for e in rest if e["type"] == "node" and e["node"] != "node1"
                and e["phase"] == "draining"]  # no other node left the load balancer
    assert rest[-1]["type"] == "agent_stopped"
    # Every node in service, node1 on the new release, the others on the old one.
    assert fleet(lab) == {"node1": ("1.1.0", "UP"), "node2": ("1.0.0", "UP"), "node3": ("1.0.0", "UP")}
    status = json.loads((lab.dir / "pointer" / "lab.status.json").read_text())
    assert status["decision"] == "stopped" and status["acted"] is None
    # Started again, it carries on with what the pointer asks.
    r = deployer(config, "agent", "--env", "lab", "--once")
    assert r.returncode == 0, r.stderr
    assert fleet(lab) == all_serving(lab, "1.1.0")


def _second_controller(lab: Lab) -> Path:
    """The lab's config as a second runner host has it: the same environment, pointer and lock,
    its own state directory (its own journal)."""
    data = yaml.safe_load(lab.config_path.read_text())
    env = data["environments"]["lab"]
    data["state_dir"] = str(lab.dir / "second-state")
    env["inventory"] = str(lab.dir / env["inventory"])
    env["trusted_keys"] = [str(lab.dir / k) for k in env["trusted_keys"]]
    env["pointer"]["path"] = str(lab.dir / env["pointer"]["path"])
    second = lab.dir / "second" / "deployer.yml"
    second.parent.mkdir()
    second.write_text(yaml.safe_dump(data, sort_keys=False))
    return second


def test_two_runners_of_one_environment_never_deploy_at_once(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=2, seed="1.0.0")
    configs = [lab.config_path, _second_controller(lab)]
    set_pointer(configs[0], "1.1.0")
    procs = [start_agent(c, "--once") for c in configs]
    outputs = [p.communicate(timeout=240) for p in procs]
    decided = [[e["decision"] for e in map(json.loads, out.splitlines()) if e["type"] == "agent_decision"]
               for out, _ in outputs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert sorted(d for ds in decided for d in ds) in (
        ["busy", "deployed"], ["deployed", "in_sync"], ["deployed", "deployed"]), decided
    journals = [journal(lab), Journal(lab.dir / "second-state" / "journal.sqlite")]
    rows = [r for j in journals for r in j.deployments("lab")]
    spans = sorted((r.started_at, r.ended_at or time.time()) for r in rows)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert fleet(lab) == all_serving(lab, "1.1.0")
    # The second runner learns what runs from the fleet and the published status, not from
    # its own journal (which may hold nothing): in sync, nothing deployed.
    r = deployer(configs[1], "agent", "--env", "lab", "--once")
    assert r.returncode == 0 and '"decision": "in_sync"' in r.stdout
    assert len([r for j in journals for r in j.deployments("lab")]) == len(rows)
