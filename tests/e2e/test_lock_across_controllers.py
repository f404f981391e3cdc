"""The deployment lock across controllers, on the production-like lab: two controllers (two
copies of the config in different directories, each with its own state directory and journal)
meet at one lock on the load balancer's host (lb1, as the deploy user, without sudo).

One lab, one story: A deploys; B is refused (exit 6) and cannot unlock A's live lock without
--force --reason; forced, A stops at its next safe point (exit 13) with every node in service;
B then deploys; finally a stale lock whose PID was reused (this very process, another start
time) is taken over. The lock's rules in detail: tests/unit/test_lock.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.lab import Lab
from deployer.lab._production import LB_HOST, ProductionHosts

pytestmark = pytest.mark.e2e


def controller(lab: Lab, where: Path, **lock_and_strategy: Any) -> Path:
    """A copy of the lab's config in ``where``, with a state directory of its own."""
    data = yaml.safe_load(lab.config_path.read_text())
    env = data["environments"]["lab"]
    env["inventory"] = str(lab.dir / env["inventory"])
    env["trusted_keys"] = [str(lab.dir / k) for k in env["trusted_keys"]]
    env["lock"].update(lock_and_strategy.pop("lock", {}))
    env["strategy"].update(lock_and_strategy)
    data["state_dir"] = str(where / "state")
    where.mkdir(parents=True)
    path = where / "deployer.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--env", "lab", "--config", str(config)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "COLUMNS": "300"},
    )


def wait_for(what: str, ready: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_two_controllers_meet_at_one_lock_on_the_load_balancers_host(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0", topology="production")
    # A pauses between batches (a long rollout) and renews every 2 s; B is as the lab wrote it.
    a = controller(lab, tmp_path / "a", lock={"lease": 6}, pause_between_batches=15)
    b = controller(lab, tmp_path / "b")
    lock_file = ProductionHosts(lab.dir).lock_dir(LB_HOST) / "lab.json"

    def holder() -> dict[str, Any] | None:
        try:
            return dict(json.loads(lock_file.read_text()))
        except (OSError, ValueError):
            return None

    first = subprocess.Popen(
        [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", "1.1.0",
         "--config", str(a)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for("A to hold the lock with its deployment", lambda: bool(
            (h := holder()) and h["pid"] == first.pid and h["deployment"] is not None))
        record = holder()
        assert record is not None and record["host"] == socket.gethostname()
        # B sees the holder, is refused, and cannot remove a live holder's lock.
        status = json.loads(cli(b, "status", "--json").stdout)
        assert status["locked_by"]["pid"] == first.pid
        assert status["locked_by"]["where"] == "lb1:/var/lib/deployer/locks/lab.json"
        assert not status["locked_by"]["stale"]
        refused = cli(b, "deploy", "--version", "1.1.0")
        assert refused.returncode == 6, refused.stderr
        assert f"pid {first.pid}" in refused.stderr and f"deployment {record['deployment']}" in refused.stderr
        unlock = cli(b, "unlock")
        assert unlock.returncode == 6, unlock.stderr
        for part in (f"deployment {record['deployment']}", f"host {record['host']}",
                     f"pid {first.pid}", "since", "has not expired"):
            assert part in unlock.stderr, unlock.stderr
        assert cli(b, "unlock", "--force").returncode == 2
        forced = cli(b, "unlock", "--force", "--reason", "A's runner is being replaced")
        assert forced.returncode == 0, forced.stderr
        # A confirms the lock at its next safe point and stops there, before its next batch.
        _out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 13, err
    assert "lost the lock" in err and "removed" in err
    a_last = json.loads(cli(a, "history", "--json").stdout)[0]
    assert a_last["status"] == "stopped" and "lost the lock" in a_last["summary"]
    nodes = {n["node"]: n for n in json.loads(cli(b, "status", "--json").stdout)["nodes"]}
    assert {n["load_balancer"].split()[0] for n in nodes.values()} == {"UP"}
    assert "1.0.0" in {n["version"] for n in nodes.values()}  # it stopped part-way

    # The forced removal is on the record: in B's journal and beside the lock on lb1.
    b_history = json.loads(cli(b, "history", "--json").stdout)
    assert b_history[0]["kind"] == "unlock"
    assert "forced" in b_history[0]["summary"] and "A's runner is being replaced" in b_history[0]["summary"]
    log = [json.loads(line) for line in lock_file.with_suffix(".log").read_text().splitlines()]
    assert log[-1]["event"] == "forced" and log[-1]["reason"] == "A's runner is being replaced"
    assert log[-1]["record"]["pid"] == first.pid

    # B now deploys the nodes A left on 1.0.0, and releases the lock when done.
    done = cli(b, "deploy", "--version", "1.1.0", "--json")
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    left = {n for n, s in nodes.items() if s["version"] == "1.0.0"}
    assert {n for n, s in outcome["nodes"].items() if s["phase"] == "done"} == left
    assert outcome["out_of_service"] == [] and holder() is None

    # A stale lock: this test's own live PID, with another start time (a reused PID).
    lock_file.write_text(json.dumps({
        "env": "lab", "deployment": 999, "owner": "ci@elsewhere", "host": socket.gethostname(),
        "pid": os.getpid(), "pid_start": "1", "acquired_at": time.time(),
        "expires_at": time.time() + 3600, "renewed_at": time.time(),
    }))
    again = cli(b, "deploy", "--version", "1.1.0")  # nothing to do, under the lock
    assert again.returncode == 0, again.stderr
    assert "took over the lock of deployment 999" in again.stderr
    assert "its process is gone from this host" in again.stderr
    assert holder() is None
    b_last = json.loads(cli(b, "history", "--json").stdout)[0]
    took = json.loads(cli(b, "history", "--json", "--deployment", str(b_last["id"])).stdout)
    assert [e["phase"] for e in took["events"] if e["node"] == "lock"] == ["taken_over"]
