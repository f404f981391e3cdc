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


QUERIES = """
- hosts: node1
  gather_facts: false
  tasks:
    - name: Read node1 on the load balancer's host
      deployer_haproxy: {socket: /run/haproxy/admin.sock, backend: hello, server: node1}
      delegate_to: lb1
      register: found
    - name: Drain node1 in check mode
      deployer_haproxy: {socket: /run/haproxy/admin.sock, backend: hello, server: node1, state: maint}
      delegate_to: lb1
      check_mode: true
      register: checked
    - name: Read a server the backend does not have
      deployer_haproxy: {socket: /run/haproxy/admin.sock, backend: hello, server: node9}
      delegate_to: lb1
      register: missing
      ignore_errors: true
    - name: Keep the results
      ansible.builtin.copy:
        content: "{{ {'found': found, 'checked': checked, 'missing': missing} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      delegate_to: localhost
"""


def test_the_load_balancer_module_runs_alike_directly_and_through_ansibles_wrapper(
    prod_lab: Lab,
) -> None:
    """On the load balancer's host the module's code runs on a bare interpreter when pipelining
    is on (a drain and an enable cost no wrapper there); the results are those of the standard
    way, failures and check mode included."""
    root = Path(__file__).resolve().parents[2]
    role = root / "roles" / "deployer_lb_haproxy"
    playbook = prod_lab.dir / "lb-queries.yml"
    playbook.write_text(QUERIES)
    results, logs = {}, {}
    for pipelining in ("True", "False"):
        out = prod_lab.dir / f"lb-queries-{pipelining}.json"
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-vvv", "-i",
             str(prod_lab.inventory_path), str(playbook), "-e", f"out={out}",
             "-e", f"ansible_ssh_pipelining={pipelining}"],  # over the inventory's setting
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                 "ANSIBLE_CONFIG": str(root / "playbooks" / "ansible.cfg"),
                 "ANSIBLE_LIBRARY": str(role / "library"),
                 "ANSIBLE_ACTION_PLUGINS": str(role / "action_plugins"),
                 "ANSIBLE_NOCOLOR": "1"},
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        results[pipelining] = json.loads(out.read_text())
        logs[pipelining] = done.stdout
    # Which way each took: the direct loader's module name is in the command Ansible ran.
    wrapped = "AnsiballZ_deployer_haproxy.py"
    assert "deployer_haproxy_direct" in logs["True"] and wrapped not in logs["True"]
    assert "deployer_haproxy_direct" not in logs["False"] and wrapped in logs["False"]

    def comparable(result: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in result.items() if k not in ("waited",) and not k.startswith("_ansible")}

    direct, standard = results["True"], results["False"]
    assert comparable(direct["found"]) == comparable(standard["found"])
    assert direct["found"]["status"] == "UP" and direct["found"]["backend"] == "hello"
    assert comparable(direct["checked"]) == comparable(standard["checked"])
    assert direct["checked"]["changed"] is True  # would drain; check mode changed nothing
    assert direct["missing"]["failed"] and standard["missing"]["failed"]
    assert direct["missing"]["msg"] == standard["missing"]["msg"] and "node9" in direct["missing"]["msg"]
    after = HAProxyRuntime(str(prod_lab.admin_socket())).servers("hello")
    assert after["node1"].label == "UP"


def test_lab_down_removes_everything_a_production_lab_wrote(make_lab: Callable[..., Lab]) -> None:
    the_lab = make_lab(nodes=2, topology="production")
    # Each host's private user database and sudo rules live in the lab's directory.
    for host in ("node1", "node2", "lb1"):
        assert (the_lab.dir / "production" / host / "shadow").is_file(), host
    the_lab.down()
    assert not the_lab.dir.exists(), sorted(str(p) for p in the_lab.dir.rglob("*"))
