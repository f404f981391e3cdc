"""The environment's runner and the governance gates on a lab, through the CLI: a runner waits
for a release window (its request refused and on the record once) and deploys as the window
opens; a freeze set while the runner's deployment runs pauses it at the next safe point, the
runner waits while the environment is frozen, and after `unfreeze` its next look resumes the
deployment to the end."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from lab_cli import all_serving, configured, deployer, fleet, journal, start

from deployer.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LONDON = ZoneInfo("Europe/London")


def lines_until(proc: subprocess.Popen[str], done: Callable[[dict[str, Any]], bool],
                seen: list[dict[str, Any]]) -> dict[str, Any]:
    """Read the runner's JSON lines (into ``seen``) up to the first that is ``done``."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if not line.strip():
            continue
        event: dict[str, Any] = json.loads(line)
        seen.append(event)
        if done(event):
            return event
    raise AssertionError(f"the runner ended first: {[e['type'] for e in seen]}")


def decided(decision: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "agent_decision" and e["decision"] == decision


def agent_once(config: Path) -> tuple[int, list[str], str]:
    r = deployer(config, "agent", "--env", "lab", "--once")
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return r.returncode, [e["decision"] for e in lines if e["type"] == "agent_decision"], r.stderr


def test_the_runner_waits_for_a_release_window_then_deploys(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=2, seed="1.0.0")
    # A window opening at the next whole minute (at least 20 s away), for two minutes; the
    # runner's own interval is far longer, so it deploys in time only by looking again as the
    # window opens.
    while time.time() % 60 > 40:
        time.sleep(1)
    opens = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    window = {"from": opens.astimezone(LONDON).strftime("%H:%M"),
              "to": (opens + dt.timedelta(minutes=2)).astimezone(LONDON).strftime("%H:%M")}
    config = configured(lab, "windows.yml", agent={"interval": 600, "jitter": 0},
                        gates={"timezone": "Europe/London", "windows": [window]})
    r = deployer(config, "pointer", "set", "--env", "lab", "--version", "1.1.0", "--reason", "train 50")
    assert r.returncode == 0, r.stderr

    proc = start(config, "agent", "--env", "lab")
    seen: list[dict[str, Any]] = []
    try:
        refused = lines_until(proc, decided("refused"), seen)
        assert refused["exit_code"] == 14
        assert "refused by the window gate: outside every release window" in refused["reason"]
        assert f"({opens:%Y-%m-%dT%H:%M:%SZ})" in refused["reason"]  # when the next opens
        assert fleet(lab)["node1"] == ("1.0.0", "UP")
        lines_until(proc, decided("deployed"), seen)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert fleet(lab) == all_serving(lab, "1.1.0")
    deployed, refusal = journal(lab).deployments("lab")
    assert (deployed.status, refusal.status) == ("succeeded", "refused")  # refused once, on record
    assert deployed.started_at >= opens.timestamp()
    evidence = deployer(config, "evidence", "show", "--env", "lab", "--deployment", deployed.uid,
                        "--json")
    assert evidence.returncode == 0, evidence.stderr
    record = json.loads(evidence.stdout)
    assert record["window"].startswith("in the window every day")
    assert record["requested_by"]["pointer"]["reason"] == "train 50"


def test_a_freeze_pauses_the_runners_deployment_and_after_unfreeze_the_runner_finishes_it(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0")
    # The freeze is set by a command of its own, started once batch 1 has: the pause after the
    # batch gives it time to land before batch 2's safe point even on a loaded machine.
    config = configured(lab, "freeze.yml", strategy={"pause_between_batches": 8})
    r = deployer(config, "pointer", "set", "--env", "lab", "--version", "1.1.0", "--reason", "train 51")
    assert r.returncode == 0, r.stderr

    proc = start(config, "agent", "--env", "lab", "--once")
    seen: list[dict[str, Any]] = []
    lines_until(proc, lambda e: e["type"] == "batch" and e["index"] == 1, seen)
    frozen = deployer(config, "freeze", "--env", "lab", "--reason", "incident INC-11")
    assert frozen.returncode == 0, frozen.stderr
    paused = lines_until(proc, decided("paused"), seen)
    proc.communicate(timeout=60)
    assert proc.returncode == 15
    assert "paused by the freeze gate before batch 2/3" in paused["reason"]
    assert fleet(lab) == {"node1": ("1.1.0", "UP"), "node2": ("1.0.0", "UP"), "node3": ("1.0.0", "UP")}

    # Frozen: the runner's next looks wait, naming the freeze; nothing moves.
    for _ in range(2):
        code, decisions, _ = agent_once(config)
        assert (code, decisions) == (15, ["paused"])
    status = json.loads(deployer(config, "pointer", "get", "--env", "lab", "--json").stdout)["status"]
    assert "refused by the freeze gate" in status["reason"] and "INC-11" in status["reason"]
    assert fleet(lab)["node2"] == ("1.0.0", "UP")

    # Unfrozen: the next look resumes the deployment to the end.
    lifted = deployer(config, "unfreeze", "--env", "lab", "--reason", "incident over")
    assert lifted.returncode == 0, lifted.stderr
    code, decisions, err = agent_once(config)
    assert code == 0, err
    assert decisions == ["resumed", "in_sync"]
    assert fleet(lab) == all_serving(lab, "1.1.0")
    # On the record: the paused deployment and its resume (the looks that waited add nothing).
    assert [(d.kind, d.status) for d in journal(lab).deployments("lab")
            if d.kind in ("deploy", "resume")] == [("resume", "succeeded"), ("deploy", "paused")]
