"""The production-like lab (`lab up --topology production`): what it promises about itself, and
what deployer does there that the plain lab would hide. The core deploy, rollback, lost-node and
zero-downtime tests run on this topology too (tests/e2e/test_deploy.py, test_zero_downtime.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from deployer.adapters.haproxy import HAProxyRuntime
from deployer.lab import Lab

pytestmark = pytest.mark.e2e


def as_deploy(lab: Lab, host_address: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(lab.private_key), "-o", f"UserKnownHostsFile={lab.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
         f"deploy@{host_address}", command],
        capture_output=True, text=True, timeout=60, check=False,
    )


def cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--env", "lab", "--config", str(lab.config_path)],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture
def prod_lab(make_lab: Callable[..., Lab]) -> Lab:
    return make_lab(nodes=3, seed="1.0.0", topology="production")


def test_the_deploy_user_has_only_the_sudo_deployer_needs(prod_lab: Lab) -> None:
    status = prod_lab.status()
    node1 = status.nodes[0].address
    assert status.lb_host is not None and status.topology == "production"
    identity = as_deploy(prod_lab, node1, "id -un; sudo -n true && echo root-ok; "
                         "sudo -n -u nobody true || echo nobody-refused; ls -A ~")
    assert identity.returncode == 0, identity.stderr
    words = identity.stdout.split()
    assert words[:3] == ["deploy", "root-ok", "nobody-refused"], identity.stdout
    assert ".bashrc" in words and ".profile" in words  # the shell's start-up files are there
    # No sudo at all on the load balancer's host, yet its runtime socket is the deploy user's.
    lb = as_deploy(prod_lab, status.lb_host, "sudo -n true; echo sudo=$?; "
                   "echo 'show info' | python3 -c \"import socket,sys; s=socket.socket(socket.AF_UNIX);"
                   " s.connect('/run/haproxy/admin.sock'); s.sendall(b'show info\\n');"
                   " print(s.recv(200).decode().splitlines()[0])\"")
    assert "sudo=1" in lb.stdout and "Name: HAProxy" in lb.stdout, lb.stdout + lb.stderr
    # The runtime socket exists only on that host; the nodes cannot read the controller's store.
    config = yaml.safe_load(prod_lab.config_path.read_text())["environments"]["lab"]
    assert config["load_balancer"]["host"] == "lb1" and config["load_balancer"]["connect"] == "ssh"
    assert not Path(config["load_balancer"]["socket"]).exists()
    listing = as_deploy(prod_lab, node1, f"ls -A {prod_lab.store_dir}")
    assert listing.stdout.strip() == "", listing.stdout
    assert any(prod_lab.store_dir.iterdir())  # while the controller holds the releases


def test_an_operators_maintenance_on_the_lb_host_is_refused_and_left_alone(prod_lab: Lab) -> None:
    operator = HAProxyRuntime(str(prod_lab.admin_socket()))
    for node in ("node2", "node3"):
        operator.set_state("hello", node, "maint")
    proc = cli(prod_lab, "deploy", "--version", "1.1.0")
    assert proc.returncode == 9, proc.stderr  # refused before any node left the load balancer
    assert "node2" in proc.stderr and "MAINT" in proc.stderr and "recover" not in proc.stderr
    status = json.loads(cli(prod_lab, "status", "--json").stdout)
    nodes = {n["node"]: n for n in status["nodes"]}
    assert {n: (s["version"], s["load_balancer"].split()[0]) for n, s in nodes.items()} == {
        "node1": ("1.0.0", "UP"), "node2": ("1.0.0", "MAINT"), "node3": ("1.0.0", "MAINT")}
    recover = cli(prod_lab, "recover")
    assert recover.returncode == 0, recover.stderr
    servers = operator.servers("hello")
    assert servers["node2"].admin == "maint" and servers["node3"].admin == "maint"
