"""Zero downtime through a strict HAProxy (no retries, no redispatch): not one client request
fails while `deployer deploy` rolls a release through 3 nodes, nor while a failure on the last
node makes it revert that node and roll the first two back. Counts only, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.lab import Lab
from deployer.lab._load import LoadGenerator, LoadReport

pytestmark = pytest.mark.e2e

MIN_REQUESTS = 1500


def _config(lab: Lab) -> Path:
    """The lab's config, with batches of 2 (two runs per rollout) and a short health deadline
    so the faulty node fails fast."""
    data = yaml.safe_load(lab.config_path.read_text())
    data["environments"]["lab"]["app"]["health"]["deadline"] = 3
    data["environments"]["lab"]["strategy"]["batch_size"] = "2"
    path = lab.dir / "deployer-zero-downtime.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _deploy(config: Path, version: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", version,
         "--config", str(config), "--json", "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    start = proc.stdout.find("{")
    outcome: dict[str, Any] = json.loads(proc.stdout[start:]) if start >= 0 else {}
    return proc.returncode, outcome


def _under_load(lab: Lab, action: Callable[[], tuple[int, dict[str, Any]]]) -> tuple[
    LoadReport, tuple[int, dict[str, Any]]
]:
    load = LoadGenerator(
        lab.frontend_url, concurrency=10, max_requests=100_000, max_seconds=100,
        slow_share=0.2, slow_ms=300,
    ).start()
    try:
        time.sleep(0.3)
        result = action()
    finally:
        report = load.stop()
    return report, result


@pytest.mark.parametrize("topology", ["lab", "production"])
def test_no_request_fails_during_a_deploy_nor_during_a_rollback(
    make_lab: Callable[..., Lab], topology: str
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0", topology=topology)
    config = _config(lab)

    deployed, (rc, outcome) = _under_load(lab, lambda: _deploy(config, "1.1.0"))
    assert rc == 0, outcome
    assert outcome["status"] == "succeeded"
    assert deployed.failed == 0, deployed.line()
    assert set(deployed.versions) == {"1.0.0", "1.1.0"}, deployed.line()

    # 1.0.0 is unhealthy on node3 only: node1 and node2 (first batch) take it, node3 fails its
    # smoke check and goes back to 1.1.0, then node1 and node2 are rolled back to 1.1.0.
    (lab.dir / "nodes" / "node3" / "etc" / "fault").write_text("unhealthy 1.0.0\n")
    rolled, (rc, outcome) = _under_load(lab, lambda: _deploy(config, "1.0.0"))
    assert rc == 10, outcome  # failed; every node it took out is back in service
    assert outcome["status"] == "rolled_back", outcome
    assert rolled.failed == 0, rolled.line()
    assert rolled.versions["1.0.0"] > 0, rolled.line()  # the first nodes really served it

    assert deployed.sent + rolled.sent >= MIN_REQUESTS, (deployed.line(), rolled.line())
    status = lab.status()
    assert {n.app_version for n in status.nodes} == {"1.1.0"}
    assert all(n.lb_state is not None and n.lb_state.startswith("UP") for n in status.nodes)
