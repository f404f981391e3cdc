"""The load balancer reached only through its own host, end to end on the lab: deployer reads and
changes HAProxy over SSH on a lab node (as on a fleet whose runtime socket is on the load-balancer
host), respects an operator's maintenance, and drives an HA pair."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.adapters.haproxy import HAProxyRuntime
from deployer.lab import Lab

pytestmark = pytest.mark.e2e

Ssh = Callable[..., subprocess.CompletedProcess[str]]
NODES = ("node1", "node2", "node3")


def remote_lb(the_lab: Lab, hosts: list[str], **strategy: str) -> tuple[Path, Path]:
    """A config whose load balancer is reached over SSH on ``hosts`` (lab nodes, which see the
    lab's HAProxy socket), never from here; and the log of every ssh command deployer ran itself."""
    log = the_lab.dir / "ssh-commands.log"
    wrapper = the_lab.dir / "ssh-logged"
    wrapper.write_text(
        f"#!/bin/sh\n{{ printf '%s' \"$*\" | tr '\\n' ' '; echo; }} >> {log}\nexec ssh \"$@\"\n"
    )
    wrapper.chmod(0o755)
    inventory = yaml.safe_load(the_lab.inventory_path.read_text())
    for host in inventory["all"]["children"]["hello_nodes"]["hosts"].values():
        host["ansible_ssh_executable"] = str(wrapper)
    the_lab.inventory_path.write_text(yaml.safe_dump(inventory))
    config = yaml.safe_load(the_lab.config_path.read_text())
    env = config["environments"]["lab"]
    lb = env["load_balancer"]
    lb.pop("host", None)
    if len(hosts) == 1:
        lb["host"] = hosts[0]
    else:
        lb["hosts"] = hosts
    lb["connect"] = "ssh"  # the socket is visible here too: make sure it is not used from here
    env["strategy"].update(strategy)
    path = the_lab.config_path.with_name("remote-lb.yml")
    path.write_text(yaml.safe_dump(config))
    return path, log


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"}, check=False,
    )


def fleet(config: Path, *, exit_code: int = 0) -> dict[str, dict[str, Any]]:
    r = cli(config, "status", "--env", "lab", "--json")
    assert r.returncode == exit_code, r.stderr
    status = json.loads(r.stdout)
    assert status["load_balancer_error"] is None
    return {n["node"]: n for n in status["nodes"]}


def word(label: str | None) -> str | None:
    return label.split(" ")[0] if label else label


def pids(the_lab: Lab, lab_ssh: Ssh) -> dict[str, str]:
    return {n: lab_ssh(the_lab, n, "supervisorctl pid hello").stdout.strip() for n in NODES}


def runtime_reads(log: Path, address: str) -> int:
    """How many times deployer itself ran the runtime API program on ``address`` over SSH."""
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for ln in lines if f" {address} " in f" {ln} " and "show servers state" in ln)


def test_an_operators_maintenance_is_respected_through_a_remote_load_balancer(
    make_lab: Callable[..., Lab], lab_ssh: Ssh,
) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0")
    status = the_lab.status()
    address = {n.name: n.address for n in status.nodes}
    config, log = remote_lb(the_lab, ["node1"])
    before = pids(the_lab, lab_ssh)
    operator = HAProxyRuntime(str(the_lab.haproxy_socket))
    for node in ("node2", "node3"):
        operator.set_state("hello", node, "maint")

    # plan reads the same load balancer, names each server, and says what deploy will do (and
    # exits as it would: refused).
    r = cli(config, "plan", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 9, r.stderr
    assert "set server hello/node1 state drain" in r.stdout and "{server}" not in r.stdout
    assert "deploy will refuse: node2 (MAINT), node3 (MAINT)" in r.stdout, r.stdout

    # Refused by default, before any node is touched, naming the servers; nothing to "recover".
    r = cli(config, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 9, r.stderr
    assert "node2 (MAINT)" in r.stderr and "node3 (MAINT)" in r.stderr, r.stderr
    assert "recover" not in r.stderr and "Traceback" not in r.stderr
    assert runtime_reads(log, address["node1"]) >= 1  # read over SSH on node1
    nodes = fleet(config)
    assert {n: (s["version"], word(s["load_balancer"])) for n, s in nodes.items()} == {
        "node1": ("1.0.0", "UP"), "node2": ("1.0.0", "MAINT"), "node3": ("1.0.0", "MAINT")}

    # Skipping them instead leaves node1 alone too: it would take the fleet below its floor.
    config, log = remote_lb(the_lab, ["node1"], operator_maintenance="skip")
    r = cli(config, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 9, r.stderr
    assert "capacity floor" in r.stderr and "recover" not in r.stderr, r.stderr
    assert pids(the_lab, lab_ssh) == before
    nodes = fleet(config)
    assert {n: (s["version"], word(s["load_balancer"])) for n, s in nodes.items()} == {
        "node1": ("1.0.0", "UP"), "node2": ("1.0.0", "MAINT"), "node3": ("1.0.0", "MAINT")}
    history = json.loads(cli(config, "history", "--env", "lab", "--json").stdout)
    assert [h["status"] for h in history] == ["refused", "refused"]

    # The operator ends node2's maintenance; node3 stays in it. With an HA pair (node1 and node2
    # both reach the same HAProxy here), the deployment goes to node1 and node2 only.
    operator.set_state("hello", "node2", "ready")
    config, log = remote_lb(the_lab, ["node1", "node2"], operator_maintenance="skip")
    r = cli(config, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 0, r.stderr
    assert "node3" in r.stderr and "left as it is" in r.stderr
    assert runtime_reads(log, address["node1"]) >= 1 and runtime_reads(log, address["node2"]) >= 1
    nodes = fleet(config)
    assert {n: (s["version"], word(s["load_balancer"])) for n, s in nodes.items()} == {
        "node1": ("1.1.0", "UP"), "node2": ("1.1.0", "UP"), "node3": ("1.0.0", "MAINT")}
    assert pids(the_lab, lab_ssh)["node3"] == before["node3"]


def test_status_and_recover_through_a_remote_load_balancer(make_lab: Callable[..., Lab]) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0")
    config, log = remote_lb(the_lab, ["node3"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", "1.1.0",
         "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "node1" in line and "deploying" in line:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its ansible-playbook
            break
    proc.wait(timeout=30)
    # deployer left node1 out; then an operator puts node2 in maintenance. status says which
    # is deployer's to put back, and fails until it is.
    HAProxyRuntime(str(the_lab.haproxy_socket)).set_state("hello", "node2", "maint")
    nodes = fleet(config, exit_code=1)
    assert {n: word(s["load_balancer"]) for n, s in nodes.items()} == {
        "node1": "MAINT", "node2": "MAINT", "node3": "UP"}
    assert nodes["node1"]["left_out_by"] is not None and nodes["node2"]["left_out_by"] is None

    r = cli(config, "recover", "--env", "lab")
    assert r.returncode == 0, r.stderr
    assert "node1: healthy" in r.stderr and "put back into service" in r.stderr
    assert "node2: MAINT" in r.stderr and "left as it is" in r.stderr
    deadline = time.monotonic() + 30
    while word(fleet(config)["node1"]["load_balancer"]) != "UP" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {n: word(s["load_balancer"]) for n, s in fleet(config).items()} == {
        "node1": "UP", "node2": "MAINT", "node3": "UP"}
    address = {n.name: n.address for n in the_lab.status().nodes}
    assert runtime_reads(log, address["node3"]) >= 1
