"""End-to-end tests of the local lab: real sshd, supervisord, HAProxy, nginx and Ansible."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.adapters.haproxy import HAProxyRuntime
from deployer.lab import SAMPLE_RELEASES, Lab, LabSpec
from deployer.lab._procs import ProcessRef

VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e

SshRunner = Callable[[Lab, str, str], subprocess.CompletedProcess[str]]


def _lab_state(the_lab: Lab) -> dict[str, object]:
    data: dict[str, object] = json.loads((the_lab.dir / "lab.json").read_text())
    return data


def _recorded_pids(the_lab: Lab) -> dict[str, int]:
    state = json.loads((the_lab.dir / "lab.json").read_text())
    pids = {"haproxy": state["haproxy"]["pid"], "nginx": state["nginx"]["pid"]}
    for node in state["nodes"]:
        pids[f"{node['name']}/sshd"] = node["sshd"]["pid"]
        pids[f"{node['name']}/supervisord"] = node["supervisord"]["pid"]
    return pids


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and _running(int(entry)):
            found.append(int(entry))
    return found


def _listening(prefix: str) -> list[str]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if line.split()[3].startswith(prefix)]


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: dict[str, object] = json.loads(resp.read())
    return data


def test_ansible_reaches_every_node_over_ssh(lab: Lab, ansible_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "ansible"), "-i", str(lab.inventory_path), "hello_nodes",
         "-m", "command", "-a", "hostname", "-o"],
        capture_output=True, text=True, timeout=120, env=ansible_env, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Each node answers with its own hostname: its own UTS namespace, reached on its own address.
    for name in ("node1", "node2", "node3"):
        assert f"{name} | CHANGED | rc=0 | (stdout) {name}" in proc.stdout


def test_each_node_sees_only_its_own_files(lab: Lab, lab_ssh: SshRunner) -> None:
    marker = f"/opt/hello/marker-{uuid.uuid4().hex}"
    wrote = lab_ssh(lab, "node1", f"echo node1 > {marker} && cat {marker}")
    assert wrote.returncode == 0 and wrote.stdout.strip() == "node1", wrote.stderr
    on_node2 = lab_ssh(lab, "node2", f"test -e {marker} && echo present || echo absent")
    assert on_node2.stdout.strip() == "absent"
    assert not os.path.exists(marker)  # nor on the machine itself
    again = lab_ssh(lab, "node1", f"cat {marker}; rm {marker}")
    assert again.stdout.strip() == "node1"
    # /run is private too (a tmpfs per node): each node has its own supervisord socket.
    devices = {lab_ssh(lab, n, "stat -c %d /run/supervisor.sock").stdout for n in ("node1", "node2")}
    assert len(devices) == 2


def test_seeded_fleet_serves_through_haproxy(lab: Lab) -> None:
    servers = HAProxyRuntime(str(lab.haproxy_socket)).servers("hello")
    assert sorted(servers) == ["node1", "node2", "node3"]
    assert all(s.status == "UP" for s in servers.values()), servers
    seen = set()
    for _ in range(12):
        health = _get_json(lab.frontend_url + "health")
        assert health["version"] == "1.0.0"
        seen.add(health["node"])
    assert seen == {"node1", "node2", "node3"}


def test_status_reports_nodes_services_and_files(lab: Lab) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "deployer"), "lab", "status", "--dir", str(lab.dir), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["healthy"] is True
    assert [n["name"] for n in status["nodes"]] == ["node1", "node2", "node3"]
    for node in status["nodes"]:
        assert node["sshd_up"] and node["supervisord_up"] and node["app_healthy"]
        assert node["app_version"] == "1.0.0" and node["lb_state"] == "UP"
    assert status["store_url"] == lab.store_url
    assert status["config"] == str(lab.config_path)
    assert sorted(status["published"]) == sorted(v for v, _ in SAMPLE_RELEASES)
    # The store really serves what was published, signature included.
    for version, _ in SAMPLE_RELEASES:
        url = f"{lab.store_url}hello/{version}/manifest.json.minisig"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200


def test_the_lab_config_is_used_by_lab_commands_only_never_silently(lab: Lab) -> None:
    env = dict(os.environ, DEPLOYER_LAB_DIR=str(lab.dir))
    env.pop("DEPLOYER_CONFIG", None)
    code = (
        "from deployer.cli._common import get_config; "
        "c = get_config(None, lab_fallback=True); e = c.environment('lab'); "
        "print(c.source, e.group, e.load_balancer.socket, e.store.url)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/",
        timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        str(lab.config_path), "hello_nodes", str(lab.haproxy_socket), lab.store_url,
    ]
    assert str(lab.config_path) in proc.stderr  # says which config it used
    # Any other command, with no config named and none here: refused, never the lab's.
    refused = subprocess.run(
        [sys.executable, "-m", "deployer", "status", "--env", "lab"], capture_output=True,
        text=True, env=env, cwd="/", timeout=60, check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "deployer: error:" in refused.stderr and "Traceback" not in refused.stderr


def test_up_twice_leaves_one_lab(make_lab: Callable[..., Lab]) -> None:
    the_lab = make_lab(nodes=2)
    before = _recorded_pids(the_lab)
    spec_state = _lab_state(the_lab)["spec"]
    assert isinstance(spec_state, dict)
    the_lab.up(LabSpec.from_dict(spec_state))
    assert _recorded_pids(the_lab) == before
    assert all(_running(pid) for pid in before.values())
    assert len(_processes_mentioning(str(the_lab.dir / "haproxy" / "haproxy.cfg"))) == 1
    assert len(_processes_mentioning(str(the_lab.dir / "nodes" / "node1" / "sshd_config"))) == 1


def test_up_restarts_what_died(make_lab: Callable[..., Lab]) -> None:
    the_lab = make_lab(nodes=2)
    before = _recorded_pids(the_lab)
    os.kill(before["node2/sshd"], signal.SIGKILL)
    os.kill(before["nginx"], signal.SIGTERM)
    os.kill(before["node1/supervisord"], signal.SIGTERM)
    deadline = time.monotonic() + 10
    while any(_running(before[k]) for k in ("node2/sshd", "nginx", "node1/supervisord")):
        assert time.monotonic() < deadline, "the killed processes did not die"
        time.sleep(0.05)
    assert not the_lab.status().healthy
    spec_state = _lab_state(the_lab)["spec"]
    assert isinstance(spec_state, dict)
    the_lab.up(LabSpec.from_dict(spec_state))
    after = _recorded_pids(the_lab)
    assert after["haproxy"] == before["haproxy"] and after["node1/sshd"] == before["node1/sshd"]
    assert after["node2/sshd"] != before["node2/sshd"]
    assert after["nginx"] != before["nginx"]
    assert after["node1/supervisord"] != before["node1/supervisord"]
    status = the_lab.status()
    assert status.healthy and all(n.supervisord_up for n in status.nodes)


def test_down_leaves_no_process_mount_or_socket(
    make_lab: Callable[..., Lab], lab_ssh_argv: Callable[[Lab, str, str], list[str]]
) -> None:
    the_lab = make_lab(nodes=2, seed="1.0.0")
    pids = _recorded_pids(the_lab)
    state = _lab_state(the_lab)
    nodes = state["nodes"]
    assert isinstance(nodes, list)
    net = nodes[0]["address"].rsplit(".", 1)[0] + "."
    # An SSH master kept open by ControlPersist holds a session (and so the node) alive.
    control_path = the_lab.dir.parent / f"cp-{uuid.uuid4().hex[:8]}"
    argv = lab_ssh_argv(the_lab, "node1", "true")
    master = subprocess.run(
        [argv[0], "-o", "ControlMaster=auto", "-o", f"ControlPath={control_path}",
         "-o", "ControlPersist=120", *argv[1:]],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert master.returncode == 0, master.stderr
    assert _listening(net), "the lab should listen before it is torn down"
    lab_cgroup = _cgroup_dir(the_lab)
    in_lab = _cgroup_processes(lab_cgroup)  # sshd, sessions, supervisord, apps, HAProxy, nginx
    assert len(in_lab) >= 2 * 4 + 2, in_lab

    the_lab.down()

    assert not [name for name, pid in pids.items() if _running(pid)]
    assert not [ref for ref in in_lab if ref.alive()]
    assert not lab_cgroup.exists()
    assert _listening(net) == []
    for address in (state["spec"]["frontend"], state["spec"]["store"]):  # type: ignore[index]
        assert _listening(address) == []
    assert str(the_lab.dir) not in Path("/proc/self/mountinfo").read_text()
    assert not the_lab.dir.exists()
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(control_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(control_path)) == []


def _cgroup_dir(the_lab: Lab) -> Path:
    from deployer.lab._cgroup import cgroup2_root

    name = _lab_state(the_lab)["cgroup"]
    assert isinstance(name, str) and name.startswith("deployer-lab/"), name
    return cgroup2_root() / name


def _cgroup_processes(directory: Path) -> list[ProcessRef]:
    """Every process in a cgroup and the cgroups below it (PID and start time)."""
    refs = []
    for procs in directory.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            ref = ProcessRef.of(int(pid))
            if ref is not None:
                refs.append(ref)
    return refs


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_up_without_root_fails_with_a_clear_message(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    proc = subprocess.run(
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
         str(VENV_BIN / "deployer"), "lab", "up", "--dir", str(lab_dir)],
        capture_output=True, text=True, timeout=60, cwd="/", check=False,
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert "needs root" in message
    assert "Traceback" not in proc.stderr
    assert not lab_dir.exists()


@pytest.mark.slow
def test_forty_eight_nodes(make_lab: Callable[..., Lab], ansible_env: dict[str, str]) -> None:
    # How long they take to come up is measured by `python -m bench scale` (lab_up_seconds).
    the_lab = make_lab(nodes=48)
    proc = subprocess.run(
        [str(VENV_BIN / "ansible"), "-i", str(the_lab.inventory_path), "hello_nodes",
         "-m", "ping", "-o", "--forks", "48"],
        capture_output=True, text=True, timeout=300, env=ansible_env, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("SUCCESS") == 48
    status = the_lab.status()
    assert status.healthy and len(status.nodes) == 48


def test_seeding_a_running_lab_starts_the_app(make_lab: Callable[..., Lab]) -> None:
    the_lab = make_lab(nodes=2)
    assert all(n.app_version is None and not n.app_healthy for n in the_lab.status().nodes)
    spec = LabSpec.from_dict({**_lab_state(the_lab)["spec"], "seed": "1.1.0"})  # type: ignore[dict-item]
    the_lab.up(spec)
    for node in the_lab.status().nodes:
        assert (node.app_version, node.app_healthy, node.lb_state) == ("1.1.0", True, "UP")
        health = _get_json(f"http://{node.address}:8000/health")
        assert (health["node"], health["version"]) == (node.name, "1.1.0")


def test_a_lab_under_the_home_directory_works(
    lab_ssh: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """The default lab lives in ~/.local/share: nodes must still see their own config there."""
    import tempfile

    from lab_specs import next_lab_spec

    the_lab = Lab(Path(tempfile.mkdtemp(prefix="deployer-lab-test-", dir=Path.home())))
    try:
        the_lab.up(next_lab_spec(nodes=1))
        r = lab_ssh(the_lab, "node1", "hostname; wc -c < ~/.bashrc 2>/dev/null || echo none")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.split()
        assert lines[0] == "node1" and lines[1] in ("0", "none")  # no controller dotfiles run
    finally:
        the_lab.down()
        shutil.rmtree(the_lab.dir, ignore_errors=True)


def test_a_blue_green_lab_moves_live_traffic_in_one_command_and_prometheus_scrapes_haproxy(
    make_lab: Callable[..., Lab],
) -> None:
    the_lab = make_lab(nodes=2, seed="1.0.0", legs=True, prometheus=True)
    status = the_lab.status()
    assert [(n.name, n.leg) for n in status.nodes] == [
        ("node1", "blue"), ("node2", "blue"), ("node3", "green"), ("node4", "green")]
    assert status.live_leg == "blue" and status.prometheus_up and status.preview_url

    def served_by(url: str) -> set[str]:
        seen = set()
        for _ in range(8):
            with urllib.request.urlopen(url, timeout=5) as resp:
                seen.add(resp.read().decode().split()[2])
        return seen

    assert served_by(status.frontend_url or "") == {"node1", "node2"}
    assert served_by(status.preview_url or "") == {"node3", "node4"}
    runtime = HAProxyRuntime(str(the_lab.haproxy_socket))
    runtime.command(f"set map {the_lab.legs_map} live hello_green")
    assert served_by(status.frontend_url or "") == {"node3", "node4"}
    assert the_lab.status().live_leg == "green"

    query = f"{status.prometheus_url}api/v1/query?query=haproxy_server_http_responses_total"
    deadline = time.monotonic() + 30
    servers: set[str] = set()
    while time.monotonic() < deadline and servers != {"node1", "node2", "node3", "node4"}:
        result = _get_json(query)["data"]["result"]  # type: ignore[index]
        servers = {r["metric"]["server"] for r in result}  # type: ignore[index]
        time.sleep(0.5)
    assert servers == {"node1", "node2", "node3", "node4"}
