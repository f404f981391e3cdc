"""More of what the README promises, on a real lab fleet through the CLI: a soak after every
batch (`analysis.when: after_each_batch`) catching a release that starts failing late; blue-green
`after_soak: uplift`; and, on one lab, what an operator does while deployer runs: a first Ctrl-C
during pre-staging, `rollback --to` a release the store does not hold, nodes put in maintenance
during a rollout, the load balancer lost between batches (and exit 7 for `status`, `plan` and
`recover` while it is), then the printed fixes. Outcomes and orders only, no durations."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable, Iterator

import pytest
from lab_cli import (
    all_serving,
    configured,
    deployer,
    fleet,
    journal,
    last_deployment,
    node_phases,
    read_until,
    start,
)

from deployer.adapters.haproxy import HAProxyRuntime
from deployer.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def address_of(lab: Lab, node: str) -> str:
    return next(n.address for n in lab.status().nodes if n.name == node)


# -- analysis.when: after_each_batch ----------------------------------------------------------


def test_after_each_batch_soaks_every_batch_and_a_late_failure_is_rolled_back(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=2, seed="1.0.0", soak=3)
    # 1.3.0-errors answers 500 on `/` ERRORS_AFTER seconds after it starts: 8 s here, so node1
    # passes the soak after its own batch (3 s) and fails the one after node2's batch, which
    # starts at least the pause (3 s) and node2's batch later. The further smoke test asks node1
    # itself, once a second, so the first 500 it gives fails the release.
    node1 = address_of(lab, "node1")
    config = configured(
        lab, "deployer-each-batch.yml",
        analysis={"when": "after_each_batch", "smoke": {"interval": 1, "failure_limit": 1, "http": [
            {"url": f"http://{node1}:8000/", "expect_status": 200}]}},
        strategy={"pause_between_batches": 3},
        extra_vars={"deployer_release_environment": {"ERRORS_AFTER": "8"}},
    )
    r = deployer(config, "deploy", "--env", "lab", "--version", "1.3.0-errors")
    assert r.returncode == 10, r.stderr
    assert r.stderr.count("soaking 1.3.0-errors on") == 2, r.stderr  # one soak per batch
    assert "after batch 1: analysis passed" in r.stderr
    assert "1.3.0-errors failed its soak after batch 2" in r.stderr and "500 != 200" in r.stderr
    assert "rolled back node1, node2" in r.stderr
    assert fleet(lab) == all_serving(lab, "1.0.0")
    status, events = last_deployment(lab)
    assert status == "rolled_back"
    soaks = [(e.phase, e.detail.split(":")[0]) for e in events if e.node == "analysis"]
    assert soaks == [("soaked", "after batch 1"), ("soak_failed", "after batch 2")]
    for node in ("node1", "node2"):
        assert node_phases(events, node)[-3:] == ["done", "reverting", "reverted"]


# -- blue-green after_soak: uplift --------------------------------------------------------------


def test_blue_green_uplift_brings_the_old_leg_to_the_release_after_a_good_soak(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=1, seed="1.0.0", legs=True, soak=2)  # blue: node1, green: node2
    config = configured(lab, "deployer-uplift.yml", strategy={"after_soak": "uplift"})
    r = deployer(config, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 0, r.stderr
    assert "uplift: releasing 1.1.0 to blue too" in r.stderr
    assert "green is live on 1.1.0 (was blue); blue uplifted to 1.1.0, smoked, soaked and live again" \
        in r.stderr
    # After the uplift live traffic is back on blue, smoked through the preview route and soaked
    # again; green (proven first) is the idle leg.
    status = json.loads(deployer(config, "status", "--env", "lab", "--json").stdout)
    assert status["blue_green"]["live"] == "blue"
    assert {n["node"]: (n["version"], n["load_balancer"].split()[0]) for n in status["nodes"]} == {
        "node1": ("1.1.0", "UP"), "node2": ("1.1.0", "UP")}
    # green was released, smoke-tested through the preview route, switched to and soaked; only
    # then was blue, the old leg, touched.
    _, events = last_deployment(lab)
    steps = [(e.node, e.phase) for e in events if not e.node.startswith("node")]
    assert steps == [("green leg", "smoke"), ("live traffic", "switched"), ("green leg", "soaked"),
                     ("blue leg", "smoke"), ("live traffic", "switched"), ("blue leg", "soaked")]
    soaked = next(e.at for e in events if e.phase == "soaked")
    assert max(e.at for e in events if e.node == "node2") < soaked
    assert min(e.at for e in events if e.node == "node1") > soaked
    assert node_phases(events, "node1")[-1] == node_phases(events, "node2")[-1] == "done"


# -- the operator: Ctrl-C, rollback --to, maintenance, the load balancer lost ------------------


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An HTTP address on 127.0.0.1 that accepts connections and never answers: a download from
    it hangs until its timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"


def test_what_the_operator_does_while_deployer_runs(make_lab: Callable[..., Lab], black_hole: str) -> None:
    lab = make_lab(nodes=3, seed="1.0.0")
    before = fleet(lab)
    assert before == all_serving(lab, "1.0.0")

    # A first Ctrl-C during pre-staging stops it at once (the nodes' downloads hang here, so the
    # stop is sure to come while they pre-stage): no node left the load balancer, none changed,
    # exit 130, and no rollback is suggested since there is nothing to go back from.
    hanging = configured(lab, "deployer-hanging-store.yml",
                         store={"url": f"file://{lab.store_dir}", "node_url": black_hole})
    proc = start(hanging, "deploy", "--env", "lab", "--version", "1.1.0", start_new_session=True)
    seen = read_until(proc, "pre-staging 1.1.0")
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    out = seen + rest
    assert proc.returncode == 130, out
    assert "stopped by the operator while pre-staging; nothing was changed" in out
    assert "rollback" not in out and "fix:" not in out and "Traceback" not in out
    assert fleet(lab) == before
    status, events = last_deployment(lab)
    assert status == "cancelled"
    assert {node_phases(events, n)[-1] for n in before} == {"skipped"}
    assert "draining" not in {e.phase for e in events}

    # rollback --to a release the store does not hold: exit 4, one line, nothing changed; on
    # the record all the same, as a refused rollback.
    deployments = len(journal(lab).deployments("lab"))
    r = deployer(lab.config_path, "rollback", "--env", "lab", "--to", "0.9.0")
    assert r.returncode == 4, r.stderr
    assert "deployer: error: hello 0.9.0 is not in store" in r.stderr and "Traceback" not in r.stderr
    records = journal(lab).deployments("lab")
    assert len(records) == deployments + 1 and fleet(lab) == before
    assert (records[0].kind, records[0].version, records[0].status) == ("rollback", "0.9.0", "refused")

    # During the pause after node1's batch an operator puts node1 (just updated) and node2 (next)
    # in maintenance. node2 is left as it is; node3 cannot go, since the capacity floor counts
    # the operator's nodes as out; and the stop rolls back nothing the operator holds: node1
    # stays on 1.1.0 in MAINT. recover puts neither back.
    operator = HAProxyRuntime(str(lab.haproxy_socket))
    paused = configured(lab, "deployer-paused.yml",
                        strategy={"pause_between_batches": 3, "operator_maintenance": "skip"})
    proc = start(paused, "deploy", "--env", "lab", "--version", "1.1.0")
    seen = read_until(proc, "pausing")
    operator.set_state("hello", "node1", "maint")
    operator.set_state("hello", "node2", "maint")
    out = seen + proc.communicate(timeout=120)[1]
    assert proc.returncode == 10, out
    assert "node2: left as it is: MAINT on the load balancer, not set by deployer" in out
    assert "node1: left as it is on 1.1.0: MAINT on the load balancer, set by someone else" in out
    assert "capacity floor: only 0 node(s) would stay in service during batch 3" in out
    assert "left as they are, taken out by someone else: node1" in out
    assert "rolling back" not in out and "fix:" not in out
    after = {"node1": ("1.1.0", "MAINT"), "node2": ("1.0.0", "MAINT"), "node3": ("1.0.0", "UP")}
    assert fleet(lab) == after
    status, events = last_deployment(lab)
    assert status == "rolled_back"
    assert node_phases(events, "node1")[-2:] == ["done", "left_alone"]
    assert node_phases(events, "node2")[-1] == "skipped" and "draining" not in node_phases(events, "node3")
    r = deployer(lab.config_path, "recover", "--env", "lab")
    assert r.returncode == 0, r.stderr
    for node in ("node1", "node2"):
        assert f"{node}: MAINT on the load balancer, not set by deployer; left as it is" in r.stderr
    assert fleet(lab) == after
    operator.set_state("hello", "node1", "ready")
    operator.set_state("hello", "node2", "ready")

    # The load balancer's runtime API is lost after node2's batch (node1 is already on 1.1.0):
    # the deployment stops before the next batch, cannot drain node2 to roll it back, and says
    # it may be out (exit 11) with the fixes.
    proc = start(paused, "deploy", "--env", "lab", "--version", "1.1.0")
    seen = read_until(proc, "pausing")
    away = lab.haproxy_socket.with_name("admin.sock.away")
    lab.haproxy_socket.rename(away)
    try:
        out = seen + proc.communicate(timeout=120)[1]
        assert proc.returncode == 11, out
        assert "cannot read the load balancer before batch 2" in out
        assert "Out of service: node2 (failed, load balancer: unknown)" in out
        assert "fix with: deployer recover --env lab or deployer rollback --env lab" in out
        status, events = last_deployment(lab)
        assert status == "failed" and node_phases(events, "node2")[-1] == "out_of_service"
        assert "draining" not in node_phases(events, "node3")

        # Outside a deployment, a load balancer that cannot be read is exit 7, in one line; plan
        # says the deployment would be refused (exit 9, as the deployment would end).
        for command in (["status"], ["recover"]):
            r = deployer(lab.config_path, *command, "--env", "lab")
            assert r.returncode == 7, (command, r.stderr)
            assert r.stderr.count("deployer: error: cannot reach the HAProxy runtime API") == 1, r.stderr
            assert "Traceback" not in r.stderr
        r = deployer(lab.config_path, "plan", "--version", "1.1.0", "--env", "lab")
        assert r.returncode == 9, r.stderr
        assert r.stderr.count("deployer: error: cannot read the load balancer before touching any node: "
                              "cannot reach the HAProxy runtime API") == 1, r.stderr
        assert "Traceback" not in r.stderr
    finally:
        away.rename(lab.haproxy_socket)
    # node2 never left the load balancer (its drain was what failed); with the load balancer
    # back, the fixes printed work: recover finds nothing of deployer's out, rollback goes back.
    assert fleet(lab) == {"node1": ("1.1.0", "UP"), "node2": ("1.1.0", "UP"), "node3": ("1.0.0", "UP")}
    r = deployer(lab.config_path, "recover", "--env", "lab")
    assert r.returncode == 0, r.stderr
    assert "nothing to recover" in r.stderr
    r = deployer(lab.config_path, "rollback", "--env", "lab")
    assert r.returncode == 0, r.stderr
    assert "back to 1.0.0" in r.stderr
    assert fleet(lab) == all_serving(lab, "1.0.0")
