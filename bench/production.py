"""(f) The production-like topology beside the lab's, in one run: 4 nodes each, batches of 1, no
load; ``deployer deploy`` alternated between a lab where deployer runs as root beside HAProxy
and one where it connects as a deploy user with sudo, reaches HAProxy only through its own host
over SSH, and each node runs its own smoke check (`lab up --topology production`). Wall time
and each node's time out of the load balancer as HAProxy reports it."""

from __future__ import annotations

from typing import Any

from ._harness import DeployRun, bench_lab, check, median, run_deployer, say, spread

NODES = 4
REPEATS = 3


def run(*, nodes: int = NODES, repeats: int = REPEATS) -> dict[str, Any]:
    say(f"== production: the production-like topology beside the lab's, {nodes} nodes each, "
        f"{repeats} alternated runs")
    runs: dict[str, list[DeployRun]] = {"lab": [], "production": []}
    with bench_lab(nodes) as lab, bench_lab(nodes, topology="production") as prod:
        labs = {"lab": lab, "production": prod}
        configs = {name: b.config(f"topology-{name}", batch_size="1", min_healthy="1")
                   for name, b in labs.items()}
        for i in range(repeats):
            order = ("lab", "production") if i % 2 == 0 else ("production", "lab")
            for name in order:
                result = check(run_deployer(labs[name], configs[name], labs[name].publish()))
                runs[name].append(result)
                outs = " ".join(f"{n}={s:.2f}" for n, s in result.out_of_lb.items())
                say(f"  run {i + 1} {name:<10} {result.seconds:6.2f}s  out of LB: {outs}")
    wall = {name: [r.seconds for r in rs] for name, rs in runs.items()}
    out = {name: [s for r in rs for s in r.out_of_lb.values()] for name, rs in runs.items()}
    for name in runs:
        say(f"  {name:<10} wall {spread(wall[name])}   out of LB/node {spread(out[name])}")
    ratio = median(wall["production"]) / median(wall["lab"])
    say(f"  production / lab wall time: {ratio:.2f}x")
    return {
        name: {"wall_s": [round(x, 2) for x in wall[name]], "wall_median_s": round(median(wall[name]), 2),
               "out_of_lb_median_s": round(median(out[name]), 3)}
        for name in runs
    } | {"production_over_lab": round(ratio, 2)}
