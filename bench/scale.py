"""(d) Scale: 4, 16 and 48 nodes in batches of 25% (so four batches each), then the 48 nodes
again in batches of 4 (25% of 16), to tell the fleet's size from the batch's own size. How
long each lab took to come up (`lab up`, seeded) is reported too. Per-batch wall time (each
batch's start to its last node back, from the deployment's events) should stay flat as the fleet
grows; the driver's peak memory is the ``deployer`` process's own VmHWM (not its ansible children). The
machine's busy CPU time during the deploy (from /proc/stat: controller, nodes and apps together)
shows whether the run was bound by this machine's cores rather than by the deployer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._harness import (
    BenchLab,
    DeployRun,
    bench_lab,
    check,
    median,
    run_deployer,
    say,
    spread,
)

_TICK = float(os.sysconf("SC_CLK_TCK"))


def _cpu_busy_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores, all processes)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK

SIZES = (4, 16, 48)
FIXED_BATCH = 4


def _deploy(lab: BenchLab, name: str, batch_size: str) -> tuple[DeployRun, float]:
    """One deployment of a fresh release: the run and the machine's busy CPU during it."""
    config = lab.config(name, batch_size=batch_size, min_healthy="1")
    version = lab.publish()
    busy = _cpu_busy_seconds()
    result = check(run_deployer(lab, config, version))
    busy = _cpu_busy_seconds() - busy
    return result, busy


def _batches(result: DeployRun) -> list[float]:
    """Each batch's start to its last node back (the deployment's events)."""
    return list(result.phases.get("batch", []))


def run(*, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    say(f"== scale: {', '.join(map(str, sizes))} nodes, batches of 25%")
    results: dict[str, Any] = {}
    cores = os.cpu_count() or 1
    for size in sizes:
        with bench_lab(size) as lab:
            up_seconds = lab.up_seconds
            result, busy = _deploy(lab, "scale", "25%")
            # A fleet larger than 4 batches of FIXED_BATCH again in batches of FIXED_BATCH (what
            # 25% is at 4 * FIXED_BATCH nodes): does the fleet's size itself slow a batch down,
            # or only the batch's own size?
            fixed = None
            if size > 4 * FIXED_BATCH:
                fixed, _ = _deploy(lab, "scale-fixed", str(FIXED_BATCH))
        batches = _batches(result)
        prestage = list(result.phases.get("prestage", []))
        out = list(result.out_of_lb.values())
        controller = result.controller_cpu_seconds
        say(
            f"  {size:>3} nodes: lab up in {up_seconds:.1f}s; {result.seconds:6.1f}s total; "
            f"pre-stage {median(prestage):.1f}s, "
            f"{len(batches)} batches of {max(1, size // 4)}: {spread(batches)} each; "
            f"out of LB {spread(out)}; driver peak {result.peak_rss_mb:.0f} MiB; "
            f"machine CPU busy {busy:.0f}s = {busy / result.seconds / cores:.0%} of {cores} cores, "
            f"{busy / size:.1f}s per node, of which the controller (deployer + Ansible) "
            f"{controller / size:.1f}s"
        )
        results[str(size)] = {
            "lab_up_seconds": round(up_seconds, 2),
            "seconds": round(result.seconds, 2),
            "cpu_busy_seconds": round(busy, 1),
            "controller_cpu_seconds": round(controller, 1),
            "prestage_seconds": prestage,
            "batch_seconds": batches,
            "out_of_lb_seconds": out,
            "driver_peak_rss_mib": round(result.peak_rss_mb, 1),
        }
        if fixed is not None:
            fixed_batches = _batches(fixed)
            say(
                f"       the same {size} nodes in batches of {FIXED_BATCH}: {len(fixed_batches)} batches, "
                f"{spread(fixed_batches)} each; driver peak {fixed.peak_rss_mb:.0f} MiB"
            )
            results[str(size)][f"batch_seconds_in_batches_of_{FIXED_BATCH}"] = fixed_batches
    return results
