"""The playbooks run with plain ansible-playbook against a real lab (sshd nodes, supervisord,
HAProxy, the artefact store). Slow: one lab for the whole module."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lab_specs import next_lab_spec

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RECAP_LINE = re.compile(r"^(\S+)\s+:\s+(ok=.*)$", re.MULTILINE)
RECAP_FIELD = re.compile(r"(\w+)=(\d+)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("haproxy") is None or shutil.which("sshd") is None:
        pytest.skip("the lab needs root, haproxy and openssh-server")
    lab_dir = tmp_path_factory.mktemp("lab")
    deployer = str(BIN / "deployer")
    # Its own directory and network: the lab picks its ports (see lab_status for them).
    net = next_lab_spec().net
    subprocess.run([deployer, "lab", "up", "--dir", str(lab_dir), "--net", net, "--nodes", "3"],
                   check=True, timeout=180)
    try:
        yield lab_dir
    finally:
        subprocess.run([deployer, "lab", "down", "--dir", str(lab_dir)], check=False, timeout=120)


def lab_status(lab_dir: Path) -> dict[str, Any]:
    """`deployer lab status --json`: the lab's store URL, its nodes' addresses, ..."""
    done = subprocess.run([str(BIN / "deployer"), "lab", "status", "--json", "--dir", str(lab_dir)],
                          capture_output=True, text=True, timeout=60, check=True)
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def extra_vars(lab_dir: Path, version: str) -> dict[str, Any]:
    manifest = json.loads((lab_dir / "store" / "hello" / version / "manifest.json").read_text())
    store_url = lab_status(lab_dir)["store_url"]
    return {
        "deployer_hosts": "hello_nodes",
        "deployer_app": "hello",
        "deployer_version": version,
        "deployer_release_url": f"{store_url}hello/{version}/{manifest['tarball']}",
        "deployer_release_sha256": manifest["sha256"],
        "deployer_release_size": manifest["size"],
        "deployer_base_dir": "/opt/hello",
        "deployer_entry_point": "bin/run",
        "deployer_app_port": 8000,
        "deployer_supervisor": "supervisord",
        "deployer_keep_releases": 5,
        "deployer_max_artefact_size": 536870912,
        "deployer_health_path": "/health",
        "deployer_health_status": 200,
        "deployer_health_version_field": "version",
        "deployer_health_request_timeout": 2.0,
        "deployer_health_deadline": 8,
        "deployer_health_interval": 0.2,
        "deployer_health_max_latency_ms": 2000,
        "deployer_lb_socket": str(lab_dir / "haproxy" / "admin.sock"),
        "deployer_lb_backend": "hello",
        "deployer_lb_host": "localhost",
        "deployer_lb_drain_timeout": 30,
        "deployer_lb_up_timeout": 30,
        "deployer_revert_to": "",
        "deployer_serial": 1,
    }


def play(
    lab_dir: Path, playbook: str, version: str, overrides: dict[str, Any] | None = None
) -> tuple[int, dict[str, dict[str, int]]]:
    """Run a playbook; returns (exit code, per-host counts from the play recap)."""
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "playbooks" / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_NOCOLOR": "1",
    }
    vars_file = lab_dir / f"vars-{version}.json"
    vars_file.write_text(json.dumps({**extra_vars(lab_dir, version), **(overrides or {})}))
    done = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(lab_dir / "inventory.yml"),
            str(ROOT / "playbooks" / playbook),
            "-e",
            f"@{vars_file}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    stats = {
        host: {key: int(value) for key, value in RECAP_FIELD.findall(fields)}
        for host, fields in RECAP_LINE.findall(done.stdout)
    }
    assert stats, f"no play recap in the output:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.returncode, stats


def served_version(lab_dir: Path, node: int) -> str:
    inventory = yaml.safe_load((lab_dir / "inventory.yml").read_text())
    address = inventory["all"]["children"]["hello_nodes"]["hosts"][f"node{node}"]["ansible_host"]
    with urllib.request.urlopen(f"http://{address}:8000/health", timeout=3) as answer:
        return str(json.load(answer)["version"])


def haproxy_status(lab_dir: Path) -> dict[str, str]:
    """Each node's HAProxy status word: UP, MAINT, DRAIN, DOWN. A transition suffix is dropped:
    'UP 1/2' (in service, one good check short of full health, as a node is right after a
    restart) is UP."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(lab_dir / "haproxy" / "admin.sock"))
        sock.sendall(b"show stat\n")
        text = b""
        while chunk := sock.recv(65536):
            text += chunk
    lines = text.decode().splitlines()
    header = lines[0][2:].split(",")
    status: dict[str, str] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "hello" and row.get("svname", "").startswith("node"):
            status[row["svname"]] = row["status"].split(" ")[0]
    return status


def test_deploy_then_upgrade_serves_the_new_release(lab: Path) -> None:
    code, _ = play(lab, "deploy.yml", "1.0.0")
    assert code == 0
    assert [served_version(lab, n) for n in (1, 2, 3)] == ["1.0.0"] * 3
    code, stats = play(lab, "deploy.yml", "1.1.0")
    assert code == 0
    assert all(stats[f"node{n}"]["changed"] > 0 for n in (1, 2, 3))
    assert [served_version(lab, n) for n in (1, 2, 3)] == ["1.1.0"] * 3
    assert set(haproxy_status(lab).values()) == {"UP"}


def on_node(lab_dir: Path, node: str, command: str) -> str:
    """The output of a shell command run on a lab node over SSH (ad-hoc ``ansible``)."""
    done = subprocess.run(
        [str(BIN / "ansible"), "-i", str(lab_dir / "inventory.yml"), node, "-o",
         "-m", "ansible.builtin.shell", "-a", command],
        env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
             "ANSIBLE_CONFIG": str(ROOT / "playbooks" / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split("(stdout)", 1)[1].strip() if "(stdout)" in done.stdout else ""


def test_the_application_runs_as_an_unprivileged_user(lab: Path) -> None:
    # The lab's inventory runs the app as nobody:nogroup (the nodes share the host's /etc/passwd).
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    for node in ("node1", "node2", "node3"):
        pid = int(on_node(lab, node, "supervisorctl pid hello"))
        # The node is a mount namespace, not a PID namespace: its processes are the host's.
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        assert [int(uid) for uid in status["Uid"].split()] == [nobody] * 4, node
        assert [int(gid) for gid in status["Gid"].split()] == [nogroup] * 4, node
        # Started through setpriv --no-new-privs: setuid binaries give it nothing.
        assert status["NoNewPrivs"].strip() == "1", node
        assert status["Umask"].strip() == "0027", node
        assert "/opt/hello/current/bin/run" in Path(f"/proc/{pid}/cmdline").read_text()
        # It owns its log and state directories, not its releases.
        owners = on_node(lab, node, "stat -c '%U:%G %a %n' /var/log/hello /opt/hello/state "
                         "/opt/hello/releases/1.1.0 /opt/hello/releases/1.1.0/bin/run")
        lines = owners.split("\\n") if "\\n" in owners else owners.splitlines()
        assert [line.split()[0] for line in lines] == ["nobody:nogroup"] * 2 + ["root:root"] * 2, owners
        assert all(int(line.split()[1], 8) & 0o022 == 0 for line in lines[2:]), owners


def test_second_identical_deploy_changes_nothing(lab: Path) -> None:
    code, stats = play(lab, "deploy.yml", "1.1.0")
    assert code == 0
    assert {host: s["changed"] for host, s in stats.items()} == {"node1": 0, "node2": 0, "node3": 0}


def test_a_switch_that_cannot_be_made_fails_before_the_drain(lab: Path) -> None:
    # The program file cannot be rendered: the preflight fails while node1 still serves.
    broken = {"deployer_release_environment": {"BROKEN": "{{ no_such_variable }}"}}
    code, stats = play(lab, "deploy.yml", "1.0.0", broken)
    assert code != 0
    assert stats["node1"]["failed"] == 1 and stats["node1"]["rescued"] == 0
    assert "node2" not in stats and "node3" not in stats
    assert [served_version(lab, n) for n in (1, 2, 3)] == ["1.1.0"] * 3
    assert set(haproxy_status(lab).values()) == {"UP"}


def test_a_failing_after_activate_hook_sends_the_node_back(lab: Path) -> None:
    hook = lab / "failing-hook.yml"
    hook.write_text("- name: Fail as a broken hook would\n  ansible.builtin.fail:\n    msg: hook failed\n")
    code, stats = play(lab, "deploy.yml", "1.0.0", {"deployer_release_after_activate_hook": str(hook)})
    assert code != 0
    # Both rescues ran: the role's (switch back) and the playbook's (smoke, back into the LB).
    assert stats["node1"]["failed"] == 1 and stats["node1"]["rescued"] == 2
    assert "node2" not in stats and "node3" not in stats
    assert [served_version(lab, n) for n in (1, 2, 3)] == ["1.1.0"] * 3
    assert set(haproxy_status(lab).values()) == {"UP"}


def test_bad_release_is_reverted_on_the_first_node_only(lab: Path) -> None:
    code, stats = play(lab, "deploy.yml", "1.2.0-badhealth")
    assert code != 0
    assert stats["node1"]["failed"] == 1 and stats["node1"]["rescued"] == 1
    assert "node2" not in stats and "node3" not in stats
    assert [served_version(lab, n) for n in (1, 2, 3)] == ["1.1.0"] * 3
    assert set(haproxy_status(lab).values()) == {"UP"}
    code, _ = play(lab, "probe.yml", "1.1.0")
    assert code == 0


def run_module(
    lab_dir: Path, module: str, args: dict[str, Any], *, pipelining: bool
) -> tuple[dict[str, Any], str]:
    """One module run on node1 with ad-hoc ``ansible``: its result, and the verbose log."""
    role = ROOT / "roles" / "deployer_release"
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "playbooks" / "ansible.cfg"),
        "ANSIBLE_LIBRARY": str(role / "library"),
        "ANSIBLE_ACTION_PLUGINS": str(role / "action_plugins"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_NOCOLOR": "1",
    }
    done = subprocess.run(
        [str(BIN / "ansible"), "-i", str(lab_dir / "inventory.yml"), "node1", "-vvv",
         "-m", module, "-a", json.dumps(args),
         # The lab's inventory turns pipelining on for its nodes.
         "-e", json.dumps({"ansible_ssh_pipelining": pipelining})],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    # The ad-hoc line: "node1 | SUCCESS => {...}" (CHANGED, FAILED!); the callback drops "failed".
    line = done.stdout.find("node1 | ")
    start = done.stdout.find("{", line) if line >= 0 else -1
    assert start >= 0, f"no result:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.JSONDecoder().raw_decode(done.stdout[start:])[0]
    result["failed"] = done.stdout[line:start].startswith("node1 | FAILED")
    return result, done.stdout + done.stderr


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("invocation", "_ansible_no_log", "action")}


def test_the_release_modules_give_the_same_results_run_directly_or_the_standard_way(lab: Path) -> None:
    # Over pipelining the role's action plugin runs the module on the node's plain interpreter
    # (its loader names the code deployer_direct_module); without, Ansible's module wrapper.
    cases = [
        ("deployer_release_info", {"base_dir": "/opt/hello"}),
        ("deployer_release_switch", {"base_dir": "/opt/hello", "version": "0.0.0-never-staged"}),
        ("deployer_release_unpack", {"url": "http://127.0.0.1:9/x.tar.gz", "sha256": "0" * 64,
                                     "dest": "/opt/hello/releases/9.9.9", "version": "bad version"}),
    ]
    results = {}
    for module, args in cases:
        direct, direct_log = run_module(lab, module, args, pipelining=True)
        standard, standard_log = run_module(lab, module, args, pipelining=False)
        assert "deployer_direct_module" in direct_log
        assert "deployer_direct_module" not in standard_log
        assert comparable(direct) == comparable(standard), module
        results[module] = direct
    assert direct["failed"] and "version" in direct["msg"]
    # A path only the node can expand goes the standard way, to the same releases.
    expanded, log = run_module(lab, "deployer_release_info", {"base_dir": "~/../opt/hello"}, pipelining=True)
    assert "deployer_direct_module" not in log
    read = results["deployer_release_info"]
    assert expanded["base_dir"] == "/opt/hello" and read["current"]
    assert (expanded["current"], expanded["staged"]) == (read["current"], read["staged"])


# Every successful path of the release modules, and check mode, on a directory of node1's own.
EQUIVALENCE_PLAYBOOK = """
- name: Run the release modules through every successful path
  hosts: node1
  gather_facts: false
  vars:
    base: /opt/hello/equivalence
    results: {}
  tasks:
    - name: Start from nothing
      ansible.builtin.file:
        path: "{{ base }}"
        state: absent

    - name: Unpack in check mode
      deployer_release_unpack: &unpack_100
        url: "{{ url_100 }}"
        sha256: "{{ sha_100 }}"
        size: "{{ size_100 }}"
        dest: "{{ base }}/releases/1.0.0"
        version: 1.0.0
      check_mode: true
      register: unpack_check

    - name: Unpack
      deployer_release_unpack: *unpack_100
      register: unpack

    - name: Unpack again, a no-op
      deployer_release_unpack: *unpack_100
      register: unpack_again

    - name: Unpack another release, with directories for the application's user
      deployer_release_unpack:
        url: "{{ url_110 }}"
        sha256: "{{ sha_110 }}"
        dest: "{{ base }}/releases/1.1.0"
        version: 1.1.0
        make_dirs: ["{{ base }}/log", "{{ base }}/state"]
        run_user: nobody
        run_group: nogroup
      register: unpack_owned

    - name: Switch in check mode
      deployer_release_switch: &switch_100
        base_dir: "{{ base }}"
        version: 1.0.0
        program_file: "{{ base }}/equivalence.service"
        program_content: "[Service]\\nEnvironmentFile={{ base }}/equivalence.env\\n"
        environment_file: "{{ base }}/equivalence.env"
        environment_content: "TOKEN=\\"PLANTED-SECRET-7f3a\\"\\n"
        supervisor: systemd
        run_user: nobody
      check_mode: true
      register: switch_check

    - name: Switch
      deployer_release_switch: *switch_100
      register: switch

    - name: Switch to the other release, keeping one
      deployer_release_switch:
        base_dir: "{{ base }}"
        version: 1.1.0
        keep_releases: 1
      register: switch_next

    - name: Read the releases
      deployer_release_info:
        base_dir: "{{ base }}"
      register: info

    - name: Unpack for root, with a warning
      deployer_release_unpack:
        <<: *unpack_100
        run_user: root
      register: unpack_root

    - name: Fail to download from a URL holding a secret
      deployer_release_unpack:
        url: "http://127.0.0.1:9/hello.tar.gz?X-Token=PLANTED-SECRET-7f3a"
        sha256: "{{ sha_100 }}"
        dest: "{{ base }}/releases/9.9.9"
        version: 9.9.9
      register: unpack_secret
      ignore_errors: true

    - name: Fail to download from a plain URL (a store's, no secret in it)
      deployer_release_unpack:
        url: "http://127.0.0.1:9/hello/9.9.9/hello-9.9.9.tar.gz"
        sha256: "{{ sha_100 }}"
        dest: "{{ base }}/releases/9.9.9"
        version: 9.9.9
      register: unpack_refused
      ignore_errors: true

    - name: Read the releases through a variable only the node knows
      deployer_release_info:
        base_dir: "$DEPLOYER_EQUIVALENCE_ROOT/hello/equivalence"
      environment:
        DEPLOYER_EQUIVALENCE_ROOT: /opt
      register: info_expanded

    - name: Keep the results
      ansible.builtin.copy:
        content: >-
          {{ {'unpack_check': unpack_check, 'unpack': unpack, 'unpack_again': unpack_again,
              'unpack_owned': unpack_owned, 'switch_check': switch_check, 'switch': switch,
              'switch_next': switch_next, 'info': info, 'unpack_root': unpack_root,
              'unpack_secret': unpack_secret, 'unpack_refused': unpack_refused,
              'info_expanded': info_expanded} | to_json }}
        dest: "{{ out }}"
        mode: "0600"
      delegate_to: localhost
"""
MODULE_STEPS = 11


def run_equivalence_playbook(lab_dir: Path, *, pipelining: bool) -> tuple[dict[str, Any], str]:
    role = ROOT / "roles" / "deployer_release"
    playbook = lab_dir / "equivalence.yml"
    playbook.write_text(EQUIVALENCE_PLAYBOOK)
    out = lab_dir / f"equivalence-{pipelining}.json"
    variables: dict[str, Any] = {"out": str(out), "ansible_ssh_pipelining": pipelining}
    for version, suffix in (("1.0.0", "100"), ("1.1.0", "110")):
        release = extra_vars(lab_dir, version)
        variables |= {f"url_{suffix}": release["deployer_release_url"],
                      f"sha_{suffix}": release["deployer_release_sha256"],
                      f"size_{suffix}": release["deployer_release_size"]}
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(lab_dir / "inventory.yml"), "-vvv", str(playbook),
         "-e", json.dumps(variables)],
        env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
             "ANSIBLE_CONFIG": str(ROOT / "playbooks" / "ansible.cfg"),
             "ANSIBLE_LIBRARY": str(role / "library"),
             "ANSIBLE_ACTION_PLUGINS": str(role / "action_plugins"),
             "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default", "ANSIBLE_NOCOLOR": "1"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    return json.loads(out.read_text()), log


def test_successful_runs_and_check_mode_give_the_same_results_directly_or_the_standard_way(
    lab: Path,
) -> None:
    direct, direct_log = run_equivalence_playbook(lab, pipelining=True)
    standard, standard_log = run_equivalence_playbook(lab, pipelining=False)
    assert direct_log.count("deployer_direct_module") >= MODULE_STEPS
    assert "deployer_direct_module" not in standard_log
    for step in direct:
        assert direct[step] == standard[step], step
    # The results say what happened, the same both ways.
    assert direct["unpack_check"]["changed"] and not direct["unpack_check"]["files"]
    assert direct["unpack"]["changed"] and direct["unpack"]["files"] > 0
    assert not direct["unpack_again"]["changed"]
    base = "/opt/hello/equivalence"
    assert direct["unpack_owned"]["owned_dirs"] == [f"{base}/log", f"{base}/state"]
    assert direct["switch_check"]["changed"] and "ansible_facts" not in direct["switch_check"]
    assert direct["switch"]["current"] == "1.0.0" and direct["switch"]["program_changed"]
    assert direct["switch_check"]["environment_changed"] and direct["switch"]["environment_changed"]
    assert direct["switch_next"]["previous"] == "1.0.0" and direct["switch_next"]["pruned"] == []
    assert (direct["info"]["current"], direct["info"]["previous"]) == ("1.1.0", "1.0.0")
    # A $VAR the controller does not know is expanded on the node (the standard way).
    assert "DEPLOYER_EQUIVALENCE_ROOT" not in os.environ
    assert direct["info_expanded"]["base_dir"] == "/opt/hello/equivalence"
    assert direct["info_expanded"]["current"] == "1.1.0"
    # Warnings are kept (Ansible shows them), and the no_log URL is censored everywhere.
    assert any("runs as root" in w for w in direct["unpack_root"].get("warnings", []))
    for log in (direct_log, standard_log):
        assert log.count("[WARNING]: the application runs as root") == 1
    # A failed download names the URL: without its query when it has one, else whole.
    assert direct["unpack_secret"]["failed"], direct["unpack_secret"]
    assert "cannot download http://127.0.0.1:9/hello.tar.gz?<query hidden>: " in (
        direct["unpack_secret"]["msg"])
    assert direct["unpack_refused"]["failed"], direct["unpack_refused"]
    assert "cannot download http://127.0.0.1:9/hello/9.9.9/hello-9.9.9.tar.gz: " in (
        direct["unpack_refused"]["msg"])
    for text in (json.dumps(direct), json.dumps(standard), direct_log, standard_log):
        assert "PLANTED-SECRET-7f3a" not in text
