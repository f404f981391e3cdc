"""`deployer recover` on a blue-green lab: a node of the leg that is not the config's
`load_balancer.backend` (green, the idle leg), left out of the load balancer by a deployment
killed while it released that leg, is put back into service in its own leg's backend."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable

import pytest
from lab_cli import deployer, journal, read_until, start

from deployer.adapters.haproxy import HAProxyRuntime
from deployer.lab import Lab

pytestmark = pytest.mark.e2e


def test_recover_puts_back_a_node_of_the_other_leg_that_deployer_left_out(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=1, seed="1.0.0", legs=True)  # blue: node1 (live), green: node2
    config = lab.config_path
    runtime = HAProxyRuntime(str(lab.haproxy_socket))
    assert set(runtime.servers("hello_blue")) == {"node1"}  # the config's backend
    # Killed once green's node is out of its backend (the deployment's journal says so).
    proc = start(config, "deploy", "--env", "lab", "--version", "1.1.0", start_new_session=True)
    try:
        read_until(proc, "node2", "deploying")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert runtime.servers("hello_green")["node2"].admin == "maint"
    before = journal(lab).deployments("lab", limit=1)[0]
    assert [e.phase for e in journal(lab).node_events(before.id) if e.node == "node2"][-1] in (
        "draining", "deploying")

    r = deployer(config, "recover", "--env", "lab")
    assert r.returncode == 0, r.stderr
    assert "node2: healthy on" in r.stderr and "put back into service" in r.stderr
    green = runtime.servers("hello_green")["node2"]
    assert green.admin == "ready"
    recovered = journal(lab).deployments("lab", limit=1)[0]
    assert recovered.kind == "recover" and recovered.status == "succeeded"
    assert [e.phase for e in journal(lab).node_events(recovered.id)] == ["rejoined"]
    # Live traffic never moved, and status reports nothing left out.
    status = json.loads(deployer(config, "status", "--env", "lab", "--json").stdout)
    assert status["blue_green"]["live"] == "blue"
    assert all(n["left_out_by"] is None for n in status["nodes"])
