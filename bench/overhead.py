"""(a) Overhead: ``deployer deploy`` against a plain ``ansible-playbook`` rolling playbook.

Same lab (4 nodes, no client load), same kind of change (a fresh release no node has seen), the
two tools alternated run after run. For each run: wall time of the command, and each node's time
out of the load balancer as HAProxy reports it. The app's own restart time is measured on the
same nodes so the out-of-LB time can be read against it.
"""

from __future__ import annotations

import time
from typing import Any

from ._harness import (
    DeployRun,
    app_restart_seconds,
    bench_lab,
    check,
    median,
    open_ssh_masters,
    run_baseline,
    run_deployer,
    say,
    spread,
    task_seconds,
)

SMOKE_TASKS = "deployer_smoke/tasks/main.yml"
NODES = 4
REPEATS = 3


def run(*, nodes: int = NODES, repeats: int = REPEATS) -> dict[str, Any]:
    say(f"== overhead: deployer vs plain ansible-playbook, {nodes} nodes, {repeats} alternated runs each")
    runs: dict[str, list[DeployRun]] = {"deployer": [], "baseline": []}
    smokes: list[float] = []
    with bench_lab(nodes) as lab:
        config = lab.config("overhead", batch_size="1", min_healthy="1")
        open_ssh_masters(lab, config)
        for i in range(repeats):
            order = ("deployer", "baseline") if i % 2 == 0 else ("baseline", "deployer")
            for tool in order:
                version = lab.publish()
                since = time.time()
                result = check(
                    run_deployer(lab, config, version) if tool == "deployer" else run_baseline(lab, version)
                )
                if tool == "deployer":
                    smokes += task_seconds(lab.dir / "state-overhead", since, SMOKE_TASKS)
                runs[tool].append(result)
                outs = " ".join(f"{n}={s:.2f}" for n, s in result.out_of_lb.items())
                say(f"  run {i + 1} {tool:<9} {result.seconds:6.2f}s  out of LB: {outs}")
        restarts = [app_restart_seconds(lab, n) for n in lab.nodes for _ in range(2)]

    wall = {tool: [r.seconds for r in rs] for tool, rs in runs.items()}
    out = {tool: [s for r in rs for s in r.out_of_lb.values()] for tool, rs in runs.items()}
    ratio = median(wall["deployer"]) / median(wall["baseline"])
    restart = median(restarts)
    smoke = median(smokes)
    say(f"  wall time      deployer {spread(wall['deployer'])}   plain {spread(wall['baseline'])}")
    say(f"  ratio          deployer / plain = {ratio:.2f}x (goal <= 0.80x)")
    say(f"  out of LB/node deployer {spread(out['deployer'])}   plain {spread(out['baseline'])}")
    say(f"  app restart    {spread(restarts)} (stop + start through supervisord until /health answers 200)")
    say(f"  smoke task     {spread(smokes)} (deployer's smoke check, as Ansible timed it)")
    say(
        f"  out of LB beyond restart + smoke: deployer {median(out['deployer']) - restart - smoke:.2f}s "
        f"(goal <= 0.50s); plain, beyond the restart: {median(out['baseline']) - restart:.2f}s"
    )
    return {
        "nodes": nodes,
        "repeats": repeats,
        "wall_seconds": wall,
        "out_of_lb_seconds": out,
        "app_restart_seconds": restarts,
        "smoke_seconds": smokes,
        "ratio": ratio,
    }
