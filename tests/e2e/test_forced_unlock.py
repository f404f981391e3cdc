"""A forced unlock stops the deployment that held the lock, on the lab and on the production
topology (where the lock lives on the load balancer's host, lb1, reached over SSH).

The sequence a new user ran: ``deployer deploy --env lab --version 1.1.0 &`` soaking after
batch 1; during the soak ``deployer unlock --env lab --force --reason ...``; then a second
``deployer deploy --env lab --version 1.0.0``. The README promises that the deployment that held
the lock stops at its next batch (exit 13).

It did not: the holder only learned of the removal at its next background renewal, every
third of the lease (120 s by default: every 40 s). Its 20 s soak ended before that, so it went
on to drain node2 while the second deployment ran: two deployments at once, their drains
interleaved. Now every safe point confirms the lock with its host (one renewal) before
anything more leaves the load balancer, so the first stops right after its soak, before
node2 is drained, and the second runs alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab_cli import configured, deployer, fleet, journal, node_phases, read_until, start

from deployer.lab import Lab

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("topology", ["lab", "production"])
def test_a_forced_unlock_stops_the_holder_before_its_next_node_leaves(
    make_lab: Callable[..., Lab], topology: str,
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0", soak=20, topology=topology)
    # A second controller of the same environment (same journal), without a soak.
    other = configured(lab, "other.yml", analysis=None)
    first = start(lab.config_path, "deploy", "--env", "lab", "--version", "1.1.0")
    try:
        read_until(first, "soaking 1.1.0")  # batch 1 (node1) is done; soaking for 20 s
        unlocked = deployer(other, "unlock", "--env", "lab", "--force", "--reason", "runner replaced")
        assert unlocked.returncode == 0, unlocked.stderr
        second = deployer(other, "deploy", "--env", "lab", "--version", "1.0.0")
        assert second.returncode == 0, second.stderr
        assert first.poll() is None, "the first deployment should still be soaking"
        _out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 13, err
    assert "lost the lock" in err, err

    j = journal(lab)
    records = {r.kind: r for r in j.deployments("lab", limit=10)}
    assert set(records) >= {"deploy", "unlock"}
    deploys = sorted((r for r in j.deployments("lab", limit=10) if r.kind == "deploy"),
                     key=lambda r: r.id)
    held, alone = deploys[-2], deploys[-1]
    assert (held.version, held.status) == ("1.1.0", "stopped"), held
    assert (alone.version, alone.status) == ("1.0.0", "succeeded"), alone
    held_events, alone_events = j.node_events(held.id), j.node_events(alone.id)
    # The first stopped before its next node left the load balancer: the lock lost, no drain
    # of node2 or node3.
    assert node_phases(held_events, "lock") == ["lost"]
    assert "draining" not in node_phases(held_events, "node2") + node_phases(held_events, "node3")
    assert node_phases(held_events, "node1")[-1] == "done"
    # The second ran alone: every drain of the first came before the unlock, and so before any
    # drain of the second.
    unlock = next(r for r in j.deployments("lab", limit=10) if r.kind == "unlock")
    held_drains = [e.at for e in held_events if e.phase == "draining"]
    alone_drains = [e.at for e in alone_events if e.phase == "draining"]
    assert len(held_drains) == 1 and alone_drains, (held_drains, alone_drains)
    assert max(held_drains) < unlock.started_at < min(alone_drains)
    assert node_phases(alone_events, "node1")[-1] == "done"  # back from 1.1.0 to 1.0.0
    # The fleet ends consistent: every node in service, on one release.
    assert fleet(lab) == {n: ("1.0.0", "UP") for n in ("node1", "node2", "node3")}
