"""Labs side by side on one machine: what one lab does never reaches another lab's processes.

The kernel gives a dead node's mount-namespace number to the next namespace made on the
machine, often another lab's node; these tests make that happen on purpose, then stop, repair
and restart the first lab and check that the second one did not lose a single process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.adapters.haproxy import HAProxyRuntime
from deployer.lab import Lab, LabSpec
from deployer.lab._cgroup import cgroup2_root
from deployer.lab._load import LoadGenerator
from deployer.lab._procs import ProcessRef

pytestmark = pytest.mark.e2e


def _state(the_lab: Lab) -> dict[str, object]:
    data: dict[str, object] = json.loads((the_lab.dir / "lab.json").read_text())
    return data


def _spec(the_lab: Lab) -> LabSpec:
    spec = _state(the_lab)["spec"]
    assert isinstance(spec, dict)
    return LabSpec.from_dict(spec)


def _sshd_namespaces(the_lab: Lab) -> dict[str, str]:
    nodes = _state(the_lab)["nodes"]
    assert isinstance(nodes, list)
    return {n["name"]: os.readlink(f"/proc/{n['sshd']['pid']}/ns/mnt") for n in nodes}


def _processes(the_lab: Lab) -> set[ProcessRef]:
    """Every process of the lab: each node's sshd, sessions, supervisord and app, HAProxy and
    nginx (everything in the lab's cgroup), by PID and start time."""
    name = _state(the_lab)["cgroup"]
    assert isinstance(name, str)
    refs = set()
    for procs in (cgroup2_root() / name).rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            ref = ProcessRef.of(int(pid))
            if ref is not None and ref.alive():
                refs.add(ref)
    return refs


def _lb_words(the_lab: Lab) -> dict[str, str]:
    servers = HAProxyRuntime(str(the_lab.haproxy_socket), timeout=2.0).servers("hello")
    return {name: server.label.split()[0] for name, server in servers.items()}


def _assert_untouched(the_lab: Lab, before: set[ProcessRef]) -> None:
    dead = sorted(ref.pid for ref in before if not ref.alive())
    assert dead == [], f"processes of {the_lab.dir} were stopped: {dead}"
    assert set(_lb_words(the_lab).values()) == {"UP"}, _lb_words(the_lab)
    status = the_lab.status()
    assert status.healthy and all(n.app_healthy and n.supervisord_up for n in status.nodes)


def _inum(namespace: str) -> int:
    return int(namespace.strip("mnt:[]"))


def _hold_lower_numbers(freed: str, fillers: list[subprocess.Popen[bytes]]) -> None:
    """Start placeholder processes in new mount namespaces until one gets ``freed``; keep those
    that got lower numbers, and end that one, so ``freed`` is the lowest free number again."""
    for _ in range(3000):
        filler = subprocess.Popen(["unshare", "--mount", "sleep", "600"])
        namespace = ""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                namespace = os.readlink(f"/proc/{filler.pid}/ns/mnt")
                if namespace != os.readlink("/proc/self/ns/mnt"):
                    break
            time.sleep(0.005)
        if namespace == freed:
            filler.kill()
            filler.wait()
            return
        fillers.append(filler)
        if namespace and _inum(namespace) > _inum(freed):
            return  # the number went elsewhere meanwhile; the caller tries again


def _supervisord_logs(the_lab: Lab) -> str:
    return "".join(
        log.read_text(errors="replace")
        for log in sorted((the_lab.dir / "nodes").glob("*/supervisor-log/supervisord.log"))
    )


def test_a_lab_that_took_another_labs_namespace_number_survives_that_labs_repair_and_down(
    make_lab: Callable[..., Lab],
) -> None:
    lab_a = make_lab(nodes=2, seed="1.0.0")
    spec_a = _spec(lab_a)
    freed = _sshd_namespaces(lab_a)["node2"]
    lab_a.crash_node("node2")  # the VM dies: every process of node2, its namespace gone

    # The kernel gives a new namespace the lowest free number, and earlier tests have freed
    # lower ones: hold those with placeholder namespaces, so that lab B's first node is the
    # one that takes node2's old number.
    lab_b = None
    fillers: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(3):
            _hold_lower_numbers(freed, fillers)
            lab_b = make_lab(nodes=3, seed="1.0.0")
            if freed in _sshd_namespaces(lab_b).values():
                break
            lab_b.down()
            lab_b = None
    finally:
        for filler in fillers:
            filler.kill()
            filler.wait()
    if lab_b is None:
        pytest.fail(f"no node of another lab got {freed}: nothing was tested")
    before = _processes(lab_b)
    assert len(before) >= 3 * 3 + 2  # per node sshd, supervisord, app; HAProxy; nginx

    lab_a.up(spec_a)  # the repair path: node2's sshd is dead, its leftovers are stopped
    assert lab_a.status().healthy
    lab_a.down()
    lab_a.up(spec_a)
    lab_a.down()

    _assert_untouched(lab_b, before)
    assert "received SIGTERM" not in _supervisord_logs(lab_b)


def test_up_adopts_a_supervisord_that_an_interrupted_up_left_unrecorded(
    make_lab: Callable[..., Lab],
) -> None:
    the_lab = make_lab(nodes=2, seed="1.0.0")
    state = _state(the_lab)
    nodes = state["nodes"]
    assert isinstance(nodes, list)
    running = ProcessRef.from_dict(nodes[0]["supervisord"])
    # As if `up` had stopped after starting node1's supervisord, before recording it, and the
    # pidfile had not been written yet.
    nodes[0]["supervisord"] = None
    (the_lab.dir / "lab.json").write_text(json.dumps(state))
    Path(f"/proc/{nodes[0]['sshd']['pid']}/root/run/supervisord.pid").unlink()

    the_lab.up(_spec(the_lab))

    after = _state(the_lab)["nodes"]
    assert isinstance(after, list)
    assert ProcessRef.from_dict(after[0]["supervisord"]) == running and running.alive()
    cgroup = cgroup2_root() / after[0]["cgroup"]
    supervisords = [
        pid for pid in (cgroup / "cgroup.procs").read_text().split()
        if b"supervisord" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert supervisords == [str(running.pid)]
    assert "Another program is already listening" not in _supervisord_logs(the_lab)
    assert the_lab.status().healthy


def test_labs_cycling_up_and_down_beside_a_deploy_under_load_change_nothing_of_it(
    make_lab: Callable[..., Lab],
) -> None:
    # Two labs lose every node; a third comes up in their old namespace numbers and serves a
    # deploy under load while the first two are repaired, stopped and started again.
    cycling = [make_lab(nodes=2, seed="1.0.0") for _ in range(2)]
    specs = [_spec(c) for c in cycling]
    freed = set()
    for c in cycling:
        freed |= set(_sshd_namespaces(c).values())
        c.crash_node("node1")
        c.crash_node("node2")
    served = make_lab(nodes=3, seed="1.0.0")
    assert freed & set(_sshd_namespaces(served).values()), "no namespace number was reused"
    before = {ref for ref in _processes(served) if b"/bin/run" not in _cmdline(ref.pid)}
    errors: list[BaseException] = []
    stop = threading.Event()
    deadline = time.monotonic() + 150

    def cycle(the_lab: Lab, spec: LabSpec) -> None:
        try:
            for _ in range(3):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                the_lab.up(spec)  # repairs the nodes that died
                the_lab.crash_node("node1")  # its namespace number goes back to the kernel
                the_lab.down()
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=cycle, args=pair) for pair in zip(cycling, specs, strict=True)]
    load = LoadGenerator(
        served.frontend_url, concurrency=6, max_requests=100_000, max_seconds=150,
        slow_share=0.2, slow_ms=200,
    ).start()
    try:
        for t in threads:
            t.start()
        deploy = subprocess.run(
            [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", "1.1.0",
             "--config", str(served.config_path)],
            capture_output=True, text=True, timeout=300, check=False,
        )
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic() + 30))
    finally:
        stop.set()
        report = load.stop()
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert deploy.returncode == 0, deploy.stderr
    assert report.failed == 0, report.line()
    assert report.sent > 100, report.line()
    # The deploy restarted the apps; everything else of the served lab is the same process.
    _assert_untouched(served, before)
    assert "received SIGTERM" not in _supervisord_logs(served)
    assert {n.app_version for n in served.status().nodes} == {"1.1.0"}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
