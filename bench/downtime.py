"""(b) Zero downtime: failed requests through the strict HAProxy (no retries, no redispatch)
while ``deployer deploy`` rolls a release through the fleet, and while a failure on the last
node makes it revert that node and roll the earlier ones back.

A bounded load generator sends a mix of quick and slow (300 ms) requests from the start of each
command to its end; every request without a complete 2xx answer counts as failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from deployer.lab._load import LoadGenerator, LoadReport

from ._harness import BenchLab, DeployRun, bench_lab, check, run_deployer, say

NODES = 4
CONCURRENCY = 16
MIN_REQUESTS = 5000


def under_load(
    lab: BenchLab, action: Callable[[], DeployRun], *, concurrency: int, min_requests: int
) -> tuple[LoadReport, DeployRun]:
    """Run ``action`` with load on the frontend from before it starts until it ends.

    If the action ended before ``min_requests`` were sent, the load carries on until then (the
    fleet is back to steady state by then, so this only makes the count comparable).
    """
    load = LoadGenerator(
        lab.frontend_url, concurrency=concurrency, max_requests=1_000_000, max_seconds=900,
        slow_share=0.2, slow_ms=300,
    ).start()
    time.sleep(0.5)
    try:
        result = action()
        while load.report.sent < min_requests:
            time.sleep(0.1)
    finally:
        report = load.stop()
    return report, result


def _line(what: str, report: LoadReport, result: DeployRun) -> str:
    status = result.outcome.get("status", f"exit {result.rc}")
    return f"  {what:<22} {report.line()}; deploy {status} in {result.seconds:.1f}s"


def run(
    *, nodes: int = NODES, concurrency: int = CONCURRENCY, min_requests: int = MIN_REQUESTS
) -> dict[str, Any]:
    say(f"== downtime: failed requests under load ({concurrency} clients, 20% slow), {nodes} nodes")
    with bench_lab(nodes) as lab:
        config = lab.config("downtime", batch_size="1", min_healthy="1")
        version = lab.publish()
        deployed, deploy_run = under_load(
            lab, lambda: check(run_deployer(lab, config, version)),
            concurrency=concurrency, min_requests=min_requests,
        )
        say(_line("rolling deploy:", deployed, deploy_run))

        bad = lab.publish()
        last = lab.nodes[-1]
        lab.set_fault(last, f"unhealthy {bad}")
        rolled, rollback_run = under_load(
            lab, lambda: run_deployer(lab, config, bad), concurrency=concurrency, min_requests=min_requests,
        )
        lab.set_fault(last, None)
        say(_line(f"rollback ({last} fails):", rolled, rollback_run))
        if rollback_run.outcome.get("status") != "rolled_back":
            raise RuntimeError(f"expected a rollback, got: {rollback_run.output[-2000:]}")
    total_failed = deployed.failed + rolled.failed
    sent = deployed.sent + rolled.sent
    say(f"  failed requests: {total_failed} of {sent} (goal: 0 of >= {min_requests} in each)")
    return {
        "nodes": nodes,
        "concurrency": concurrency,
        "deploy": {**deployed.to_dict(), "deploy_seconds": round(deploy_run.seconds, 2)},
        "rollback": {**rolled.to_dict(), "deploy_seconds": round(rollback_run.seconds, 2)},
    }

