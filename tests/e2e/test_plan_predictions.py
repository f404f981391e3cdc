"""`deployer plan` on the lab with node2 in an operator's MAINT: each node with why it is or is
not a target, every refusal with the exit code the deployment then really has.

Two cases a new user met: `plan` listed node2 (MAINT, on 1.0.0) as "already on" the release;
and with `operator_maintenance: skip` and `min_healthy: "2"` on 3 nodes `plan` exited 0 where
the deployment was then refused by the capacity floor (exit 9)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lab_cli import configured, deployer, fleet

from deployer.adapters.haproxy import HAProxyRuntime
from deployer.lab import Lab

pytestmark = pytest.mark.e2e


def plan(config: Path, version: str) -> tuple[int, dict[str, Any], str]:
    """plan --json (exit code and the plan), and the text plan (which exits the same)."""
    as_json = deployer(config, "plan", "--env", "lab", "--version", version, "--json")
    text = deployer(config, "plan", "--env", "lab", "--version", version)
    assert text.returncode == as_json.returncode, text.stderr
    return as_json.returncode, json.loads(as_json.stdout), text.stdout + text.stderr


def test_plan_says_why_and_predicts_the_exit_code_of_the_deployment(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=3, seed="1.0.0")
    HAProxyRuntime(str(lab.haproxy_socket)).set_state("hello", "node2", "maint")
    before = fleet(lab)
    assert before["node2"] == ("1.0.0", "MAINT")

    # By default an operator's maintenance refuses the deployment.
    code, the_plan, text = plan(lab.config_path, "1.1.0")
    assert code == 9 and the_plan["exit_code"] == 9, text
    nodes = {n["node"]: n for n in the_plan["nodes"]}
    assert not nodes["node2"]["target"] and nodes["node2"]["load_balancer"] == "MAINT"
    assert nodes["node2"]["reason"].startswith("MAINT, put there by someone else"), nodes["node2"]
    assert not any(n["reason"].startswith("already on") for n in nodes.values()), nodes
    assert [nodes[n]["reason"] for n in ("node1", "node3")] == ["1.0.0 -> 1.1.0"] * 2
    assert "node2 (MAINT) is out of the load balancer" in the_plan["refusals"][0]["reason"]
    node2_row = next(line for line in text.splitlines() if line.startswith("node2"))
    assert "already on" not in node2_row and "put there by someone else" in node2_row, text
    assert "deploy will refuse" in text and "(exit 9)" in text
    deployed = deployer(lab.config_path, "deploy", "--env", "lab", "--version", "1.1.0")
    assert deployed.returncode == code, deployed.stderr
    assert fleet(lab) == before

    # skip + min_healthy "2": only node3 would serve while node1 is out.
    skip = configured(lab, "skip.yml", strategy={"operator_maintenance": "skip", "min_healthy": "2"})
    code, the_plan, text = plan(skip, "1.1.0")
    assert code == 9 and the_plan["exit_code"] == 9, text
    nodes = {n["node"]: n for n in the_plan["nodes"]}
    assert nodes["node2"]["reason"] == ("MAINT, put there by someone else: left as it is "
                                        "(strategy.operator_maintenance: skip)")
    (refusal,) = the_plan["refusals"]
    assert refusal["exit_code"] == 9 and refusal["reason"].startswith(
        "capacity floor: only 1 node(s) would stay in service during batch 1 (floor 2"), refusal
    assert "min_healthy" in refusal["hint"]
    deployed = deployer(skip, "deploy", "--env", "lab", "--version", "1.1.0")
    assert deployed.returncode == code, deployed.stderr
    assert "capacity floor" in deployed.stderr and "nothing was changed" in deployed.stderr
    assert fleet(lab) == before
