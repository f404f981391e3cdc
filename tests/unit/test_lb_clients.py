"""The load-balancer clients against a real HAProxy on a tmp socket: from here, and through the
program that runs on the load-balancer host (run locally here, as it would over SSH); the SSH
command line built from the inventory; which client the config picks."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer import LoadBalancerError, load_config
from deployer.adapters.haproxy import HAProxyOverSSH, HAProxyRuntime, LoadBalancerGroup
from deployer.adapters.inventory import ssh_target
from deployer.adapters.ssh import SshTarget
from deployer.cli._wiring import load_balancer_for

pytestmark = pytest.mark.daemons  # a real HAProxy


def test_the_remote_program_reads_and_changes_haproxy_like_the_local_client(lb: dict[str, Any]) -> None:
    local = HAProxyRuntime(lb["socket"])
    remote = HAProxyOverSSH("lb1", lb["socket"], lambda: SshTarget(host="lb1", address="lb1", local=True))
    assert {n: s.admin for n, s in remote.servers("app").items()} == dict.fromkeys(
        ("node1", "node2", "node3"), "ready")
    remote.set_state("app", "node2", "maint")
    assert local.servers("app")["node2"].label == "MAINT"
    assert remote.servers("app")["node2"].admin == "maint"
    group = LoadBalancerGroup([local, remote])
    group.set_state("app", "node2", "ready")
    assert group.servers("app")["node2"].admin == "ready"
    with pytest.raises(LoadBalancerError, match="no backend named 'nope'"):
        remote.servers("nope")
    here = SshTarget(host="lb1", address="lb1", local=True)
    gone = HAProxyOverSSH("lb1", lb["socket"] + ".gone", lambda: here)
    with pytest.raises(LoadBalancerError, match=r"\.gone on lb1 \(over SSH\)"):
        gone.servers("app")


def test_an_unreachable_load_balancer_host_says_what_to_check(tmp_path: Path) -> None:
    ssh = tmp_path / "ssh"
    ssh.write_text("#!/bin/sh\necho 'Host key verification failed.' >&2\nexit 255\n")
    ssh.chmod(0o755)
    client = HAProxyOverSSH("lb1", "/run/haproxy/admin.sock",
                            lambda: SshTarget(host="lb1", address="10.0.0.9", ssh=str(ssh)))
    with pytest.raises(LoadBalancerError, match="Host key verification failed") as exc:
        client.servers("app")
    assert exc.value.hint is not None and "known_hosts" in exc.value.hint


def test_the_ssh_command_line_follows_the_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local"}},
        "children": {"lbs": {
            "hosts": {"lb1": {"ansible_host": "127.0.9.1", "ansible_port": 2222},
                      "lb2": {"ansible_connection": "local"}},
            "vars": {"ansible_user": "deploy", "ansible_ssh_private_key_file": "/keys/id",
                     "ansible_ssh_common_args": "-o StrictHostKeyChecking=yes",
                     "ansible_become": True, "ansible_python_interpreter": "/usr/bin/python3.11"},
        }}}}))
    target = ssh_target(inventory, "lb1")
    assert target is not None
    argv = target.argv(["python3", "-c", "print(1)"])
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    assert argv[5:] == [
        "-p", "2222", "-l", "deploy", "-i", "/keys/id", "-o", "StrictHostKeyChecking=yes",
        "127.0.9.1", "sudo -n -u root -- python3 -c 'print(1)'",
    ]
    assert target.python == "/usr/bin/python3.11"
    assert ssh_target(inventory, "lb2") is None and ssh_target(inventory, "localhost") is None
    plain = SshTarget(host="lb9.example.com", address="lb9.example.com")
    assert ssh_target(inventory, "lb9.example.com") == plain


def _env(tmp_path: Path, lb_yaml: str) -> Any:
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    node1: {}\n")
    (tmp_path / "release.pub").write_text("untrusted comment: not read here\n")
    config = tmp_path / "deployer.yml"
    config.write_text(textwrap.dedent("""
        environments:
          prod:
            inventory: hosts.yml
            app: {name: hello}
            store: {url: "file:///srv/store"}
            trusted_keys: [release.pub]
            load_balancer: %s
    """) % lb_yaml)
    return load_config(config).environment("prod")


def test_the_config_picks_the_client(tmp_path: Path) -> None:
    sock = "{socket: /run/haproxy/admin.sock, backend: hello"
    local = load_balancer_for(_env(tmp_path, sock + "}"))
    assert isinstance(local, HAProxyRuntime) and local.where == "/run/haproxy/admin.sock"
    remote = load_balancer_for(_env(tmp_path, sock + ", host: lb1}"))
    assert isinstance(remote, HAProxyOverSSH)
    assert remote.where == "/run/haproxy/admin.sock on lb1 (over SSH)"
    direct = load_balancer_for(_env(tmp_path, sock + ", host: lb1, connect: direct}"))
    assert isinstance(direct, HAProxyRuntime) and direct.where == "/run/haproxy/admin.sock"
    tcp = load_balancer_for(_env(tmp_path, "{socket: 'tcp://127.0.0.1:9', backend: hello, host: lb1}"))
    assert isinstance(tcp, HAProxyRuntime) and tcp.where == "tcp://127.0.0.1:9"
    pair = load_balancer_for(_env(tmp_path, sock + ", hosts: [lb1, lb2]}"))
    assert isinstance(pair, LoadBalancerGroup) and [m.where for m in pair.members] == [
        "/run/haproxy/admin.sock on lb1 (over SSH)", "/run/haproxy/admin.sock on lb2 (over SSH)"]
    from deployer import ConfigError

    with pytest.raises(ConfigError, match="either host or hosts"):
        _env(tmp_path, sock + ", host: lb1, hosts: [lb1, lb2]}")


def test_the_commands_own_calls_over_ssh_share_one_connection(tmp_path: Path) -> None:
    """A deployment reads the load balancer and confirms its lock at every safe point: over SSH,
    every call goes through one master, its socket in the command's own directory of masters
    (closed with them), after the inventory's own arguments (which win)."""
    from deployer.adapters.ssh_masters import SshMasters

    masters = SshMasters(tmp_path / "state")
    env = _env(tmp_path, "{socket: /run/haproxy/admin.sock, backend: hello, host: lb1}")
    remote = load_balancer_for(env, masters=masters)
    assert isinstance(remote, HAProxyOverSSH)
    argv = remote.target.argv(["true"])
    paths = [a.removeprefix("ControlPath=") for a in argv if a.startswith("ControlPath=")]
    assert len(paths) == 1 and "ControlMaster=auto" in argv and argv[-2:] == ["lb1", "true"]
    control = Path(paths[0])
    assert control.parent == masters.directory and len(control.name) == 10
    # The same host: the same connection, for the lock's calls too.
    again = load_balancer_for(env, masters=masters)
    assert isinstance(again, HAProxyOverSSH) and again.target.control_path == str(control)
    # Without masters (a command that makes one call), no connection is kept.
    assert load_balancer_for(env).target.control_path is None  # type: ignore[union-attr]
    masters.close()
    assert not control.parent.exists()
