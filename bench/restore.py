"""(c) Time to restore: from the failed smoke check of a bad release on a node to that node
serving its old release in the load balancer again.

The sample service's per-node fault file makes the new release answer 503 on /health on the
first node only, so the first batch fails and the node reverts inside the same run. The moment
of failure is the smoke task's ``runner_on_failed`` event (ansible-runner's own timestamp);
the moment of recovery is the first HAProxy sample showing the node UP again. The app's own
restart time is measured on the same node.
"""

from __future__ import annotations

import time
from typing import Any

from ._harness import (
    app_restart_seconds,
    bench_lab,
    event_time,
    median,
    run_deployer,
    runner_runs,
    say,
    spread,
)

NODES = 3
REPEATS = 3


def _smoke_failed_at(events: list[Any], node: str) -> float | None:
    for e in events:
        data = e.get("event_data") or {}
        if (
            e.get("event") == "runner_on_failed"
            and data.get("host") == node
            and "deployer_smoke/tasks/main.yml" in str(data.get("task_path", ""))
        ):
            return event_time(e)
    return None


def run(*, nodes: int = NODES, repeats: int = REPEATS) -> dict[str, Any]:
    say(f"== restore: failed smoke check -> old release back in the load balancer, {repeats} runs")
    restores: list[float] = []
    with bench_lab(nodes) as lab:
        node = lab.nodes[0]
        config = lab.config("restore", batch_size="1", min_healthy="1")
        state_dir = lab.dir / "state-restore"
        restarts = [app_restart_seconds(lab, node) for _ in range(3)]
        for i in range(repeats):
            bad = lab.publish()
            lab.set_fault(node, f"unhealthy {bad}")
            since = time.time()
            result = run_deployer(lab, config, bad)
            lab.set_fault(node, None)
            if result.rc == 0:
                raise RuntimeError(f"the faulty release {bad} was accepted on {node}")
            failed_at = None
            for r in runner_runs(state_dir, since):
                if r.playbook in ("deploy.yml", "deploy_batch.yml", "rollout.yml"):
                    failed_at = _smoke_failed_at(list(r.events), node) or failed_at
            back = None
            if failed_at is not None:
                ends = [e for s, e in result.lb_intervals.get(node, []) if e >= failed_at]
                back = min(ends) if ends else None
            status, version = lab.health(node)
            if failed_at is None or back is None or version == bad:
                raise RuntimeError(f"run {i + 1}: could not time the restore of {node} ({status}, {version})")
            restores.append(back - failed_at)
            say(f"  run {i + 1}: restored in {back - failed_at:.2f}s (node serves {version} again)")
    restart = median(restarts)
    say(f"  time to restore {spread(restores)}; app restart {spread(restarts)}")
    say(f"  beyond the app's restart: {median(restores) - restart:.2f}s (goal <= 2s)")
    return {"nodes": nodes, "restore_seconds": restores, "app_restart_seconds": restarts}
