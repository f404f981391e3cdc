"""SSH on the lab, through the real CLI: a deployment's SSH masters are its own and gone when it
ends, and a node whose host key is unknown is reported with the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deployer.lab import Lab

pytestmark = pytest.mark.e2e


def deployer(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "DEPLOYER_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )


def mux_processes(directory: Path) -> list[str]:
    """SSH masters ("ssh: <control path> [mux]") whose control socket is under ``directory``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("ssh: ") and str(directory) in cmdline:
            found.append(cmdline.strip())
    return found


def test_a_deployments_ssh_masters_end_with_it(lab: Lab) -> None:
    state = yaml.safe_load(lab.config_path.read_text())["state_dir"]
    control_root = (lab.config_path.parent / state / "ssh").resolve()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", "1.0.0",
         "--config", str(lab.config_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    sockets: set[Path] = set()
    while proc.poll() is None:  # the masters this deployment opens, while it runs
        if control_root.is_dir():
            sockets.update(p for p in control_root.glob("*/*") if p.is_socket())
        time.sleep(0.02)
    stderr = proc.communicate()[1]
    assert proc.returncode == 0, stderr
    # One master per node, in a directory of this deployment's own under the state directory.
    assert len(sockets) == 3, sockets
    assert len({s.parent for s in sockets}) == 1
    # Gone when the deployment ends: no socket, no master process, `ssh -O check` finds nothing.
    assert not any(p.is_socket() for p in control_root.glob("*/*"))
    assert not list(control_root.iterdir())
    assert mux_processes(control_root) == []
    for sock in sockets:
        check = subprocess.run(["ssh", "-O", "check", "-o", f"ControlPath={sock}", "x"],
                               capture_output=True, text=True, timeout=10, check=False)
        assert check.returncode != 0, check.stderr


def test_an_unknown_host_key_is_reported_with_the_fix(lab: Lab, tmp_path: Path) -> None:
    # The lab's config and inventory, with an empty copy of its known_hosts.
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    group_vars = inventory["all"]["children"]["hello_nodes"]["vars"]
    group_vars["ansible_ssh_common_args"] = (
        f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
    )
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    config = yaml.safe_load(lab.config_path.read_text())
    env = config["environments"]["lab"]
    env["inventory"] = str(tmp_path / "inventory.yml")
    env["trusted_keys"] = [str((lab.config_path.parent / k).resolve()) for k in env["trusted_keys"]]
    config["state_dir"] = str(tmp_path / "state")
    cfg = tmp_path / "deployer.yml"
    cfg.write_text(yaml.safe_dump(config))
    node1 = next(n for n in lab.status().nodes if n.name == "node1")
    port = f"-p {node1.ssh_port} " if node1.ssh_port != 22 else ""
    fix = f"ssh-keyscan {port}{node1.address} >> {known_hosts}"

    # status: the reason in the table, the fix in the hint, and a failing exit code.
    r = deployer(cfg, "status", "--env", "lab")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    rows = [line for line in r.stdout.splitlines() if "node1" in line]
    assert len(rows) == 1 and "Host key verification failed" in rows[0], r.stdout
    assert "deployer: error: could not read node1, node2, node3" in r.stderr
    assert "deployer: hint: node1: the node's SSH host key is not in" in r.stderr
    assert fix in r.stderr, r.stderr
    # --json keeps its shape (and the exit code says the same).
    r = deployer(cfg, "status", "--env", "lab", "--json")
    assert r.returncode == 1
    assert {n["detail"] for n in json.loads(r.stdout)["nodes"]} == {"unreachable"}

    # deploy: refused before anything changed, with the same fix.
    r = deployer(cfg, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 9 and "Traceback" not in r.stderr, r.stderr  # refused
    assert "nothing was changed" in r.stderr and fix in r.stderr, r.stderr

    # Recording the keys as the hint says makes the nodes readable again.
    for node in lab.status().nodes:
        scan = subprocess.run(["ssh-keyscan", "-p", str(node.ssh_port), node.address],
                              capture_output=True, text=True, timeout=30, check=True)
        with known_hosts.open("a") as f:
            f.write(scan.stdout)
    r = deployer(cfg, "status", "--env", "lab")
    assert r.returncode == 0, r.stdout + r.stderr
