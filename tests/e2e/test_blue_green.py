"""Blue-green on the lab (`lab up --legs`): two legs of two nodes behind one HAProxy, live
traffic following one map entry, a preview frontend on the idle leg. Under load from the
bench's load generator, through a strict HAProxy (no retries, no redispatch): counts, never
timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.lab import Lab
from deployer.lab._load import LoadGenerator, LoadReport

pytestmark = pytest.mark.e2e


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--env", "lab", "--config", str(config)],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "COLUMNS": "200"},
    )


def outcome(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    start = proc.stdout.find("{")
    assert start >= 0, proc.stdout + proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout[start:])
    return data


def under_load(lab: Lab, action: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[
    LoadReport, subprocess.CompletedProcess[str]
]:
    load = LoadGenerator(
        lab.frontend_url, concurrency=8, max_requests=100_000, max_seconds=120,
        slow_share=0.2, slow_ms=300,
    ).start()
    try:
        time.sleep(0.3)
        result = action()
        time.sleep(0.3)  # requests that start after the switch
    finally:
        report = load.stop()
    return report, result


def legs(config: Path) -> dict[str, Any]:
    proc = cli(config, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    versions = {n["node"]: n["version"] for n in data["nodes"]}
    return {
        "live": data["blue_green"]["live"],
        **{leg: {versions[n] for n in info["nodes"]} for leg, info in data["blue_green"]["legs"].items()},
    }


@pytest.fixture
def bg_lab(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab(nodes=2, seed="1.0.0", legs=True)


def test_a_release_goes_live_in_one_switch_and_rollback_is_one_switch_back(bg_lab: Lab) -> None:
    config = bg_lab.config_path
    deployed, proc = under_load(bg_lab, lambda: cli(config, "deploy", "--version", "1.1.0", "--json"))
    assert proc.returncode == 0, proc.stderr
    result = outcome(proc)
    assert result["status"] == "succeeded", result
    assert set(result["nodes"]) == {"node3", "node4"}  # only the idle leg was touched
    assert [(s["from"], s["to"], s["back"]) for s in result["blue_green"]["switches"]] == [
        ("blue", "green", False)]
    assert deployed.failed == 0, deployed.line()
    assert set(deployed.versions) == {"1.0.0", "1.1.0"}, deployed.line()
    assert legs(config) == {"live": "green", "blue": {"1.0.0"}, "green": {"1.1.0"}}

    rolled, proc = under_load(bg_lab, lambda: cli(config, "rollback", "--json"))
    assert proc.returncode == 0, proc.stderr
    result = outcome(proc)
    assert (result["version"], result["status"]) == ("1.0.0", "succeeded")
    assert result["nodes"] == {}  # no node was touched: one switch
    assert rolled.failed == 0, rolled.line()
    assert legs(config) == {"live": "blue", "blue": {"1.0.0"}, "green": {"1.1.0"}}
    history = json.loads(cli(config, "history", "--json", "--deployment",
                             str(result["deployment"])).stdout)
    assert [(e["node"], e["phase"]) for e in history["events"]] == [
        ("blue leg", "smoke"), ("live traffic", "switched")]


def test_a_release_failing_on_the_idle_leg_never_takes_live_traffic(bg_lab: Lab) -> None:
    config = bg_lab.config_path
    report, proc = under_load(
        bg_lab, lambda: cli(config, "deploy", "--version", "1.2.0-badhealth", "--json"))
    assert proc.returncode == 10, proc.stderr  # failed, every node it touched back in service
    result = outcome(proc)
    assert result["status"] == "rolled_back"
    assert result["blue_green"]["switches"] == []
    assert "live traffic stayed on blue" in result["summary"]
    assert report.failed == 0, report.line()
    assert set(report.versions) == {"1.0.0"}, report.line()
    assert legs(config) == {"live": "blue", "blue": {"1.0.0"}, "green": {"1.0.0"}}


def _edited(lab: Lab, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(lab.config_path.read_text())
    edit(data["environments"]["lab"])
    path = lab.dir / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_bad_blue_green_settings_are_refused_and_change_nothing(bg_lab: Lab) -> None:
    def overlapping(env: dict[str, Any]) -> None:
        env["strategy"]["legs"]["green"]["group"] = "hello_nodes"

    def one_leg(env: dict[str, Any]) -> None:
        del env["strategy"]["legs"]["green"]

    def no_map(env: dict[str, Any]) -> None:
        del env["load_balancer"]["legs_map"]

    def empty_leg(env: dict[str, Any]) -> None:
        env["strategy"]["legs"]["green"]["group"] = "nobody_here"

    inventory = yaml.safe_load(bg_lab.inventory_path.read_text())
    inventory["all"]["children"]["nobody_here"] = {"hosts": {}}
    (bg_lab.dir / "inventory.yml").write_text(yaml.safe_dump(inventory))
    cases = {
        "overlapping": (overlapping, "in both legs"),
        "one_leg": (one_leg, "exactly two legs"),
        "no_map": (no_map, "legs_map"),
        "empty_leg": (empty_leg, "nobody_here"),
    }
    for name, (edit, words) in cases.items():
        proc = cli(_edited(bg_lab, f"{name}.yml", edit), "deploy", "--version", "1.1.0")
        assert proc.returncode == 2, (name, proc.stderr)
        assert words in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
    assert legs(bg_lab.config_path) == {"live": "blue", "blue": {"1.0.0"}, "green": {"1.0.0"}}
