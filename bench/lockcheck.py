"""(g) What confirming the deployment lock at every safe point costs: 4 nodes, batches of 1, no
load, one deployment at a time, alternated between the lab (the lock in the lab's own
directory on this machine, beside HAProxy: the lock program's decision made in-process) and the
production-like lab (the lock on the load balancer's host lb1, reached over SSH as the deploy
user). Each safe point before anything leaves the load balancer confirms the lock with its host
(one renewal, waited for): ``before_start`` and ``before_batch`` of each of the 4 batches.

The deployments run in this process (the environment wired as the CLI wires it), so the
lifecycle's ``LockCheck.timings`` can be read after each: every confirmation's seconds."""

from __future__ import annotations

import time
from typing import Any

from deployer.cli._wiring import build_environment
from deployer.config import load_config

from ._harness import bench_lab, median, say, spread

NODES = 4
REPEATS = 3


def _deploy(config: Any, version: str) -> tuple[float, list[float], str]:
    """One deployment in this process: wall seconds, each lock confirmation's, the status."""
    environment = build_environment(load_config(config), "lab")
    try:
        t0 = time.monotonic()
        outcome = environment.lifecycle.deploy(version)
        wall = time.monotonic() - t0
    finally:
        environment.close()
    check = environment.lifecycle.lock_check
    return wall, list(check.timings) if check is not None else [], outcome.status


def run(*, nodes: int = NODES, repeats: int = REPEATS) -> dict[str, Any]:
    say(f"== lockcheck: the lock confirmed at every safe point, lab and production topology, "
        f"{nodes} nodes each, {repeats} alternated runs")
    walls: dict[str, list[float]] = {"lab": [], "production": []}
    confirms: dict[str, list[float]] = {"lab": [], "production": []}
    per_run: dict[str, list[float]] = {"lab": [], "production": []}
    points: dict[str, set[int]] = {"lab": set(), "production": set()}
    with bench_lab(nodes) as lab, bench_lab(nodes, topology="production") as prod:
        labs = {"lab": lab, "production": prod}
        configs = {name: b.config(f"lockcheck-{name}", batch_size="1", min_healthy="1")
                   for name, b in labs.items()}
        for i in range(repeats):
            order = ("lab", "production") if i % 2 == 0 else ("production", "lab")
            for name in order:
                wall, timings, status = _deploy(configs[name], labs[name].publish())
                if status != "succeeded":
                    raise RuntimeError(f"{name}: the deployment ended {status}")
                walls[name].append(wall)
                confirms[name] += timings
                per_run[name].append(sum(timings))
                points[name].add(len(timings))
                say(f"  run {i + 1} {name:<10} {wall:6.2f}s  {len(timings)} confirmations: "
                    + " ".join(f"{t * 1000:.0f}" for t in timings) + " ms")
    result: dict[str, Any] = {}
    for name in walls:
        share = median(per_run[name]) / median(walls[name])
        ms = [t * 1000 for t in confirms[name]]
        say(f"  {name:<10} per confirmation {median(ms):.1f} ms [{min(ms):.1f}-{max(ms):.1f}]; "
            f"per deployment {spread(per_run[name])} s of {spread(walls[name])} s "
            f"({share:.1%})")
        result[name] = {
            "confirmations_per_deployment": sorted(points[name]),
            "confirm_median_ms": round(median(confirms[name]) * 1000, 1),
            "confirm_max_ms": round(max(confirms[name]) * 1000, 1),
            "per_deployment_median_s": round(median(per_run[name]), 3),
            "wall_median_s": round(median(walls[name]), 2),
            "share_of_wall": round(share, 4),
        }
    return result
