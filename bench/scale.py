"""(d) Scale: 4, 16 and 48 nodes in batches of 25% (so four batches each). Per-batch wall time
(one runner run per batch, from ansible-runner's files) should stay flat as the fleet grows; the
driver's peak memory is the ``deployer`` process's own VmHWM (not its ansible children)."""

from __future__ import annotations

import time
from typing import Any

from ._harness import bench_lab, check, median, run_deployer, runner_runs, say, spread

SIZES = (4, 16, 48)


def run(*, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    say(f"== scale: {', '.join(map(str, sizes))} nodes, batches of 25%")
    results: dict[str, Any] = {}
    for size in sizes:
        with bench_lab(size) as lab:
            config = lab.config("scale", batch_size="25%", min_healthy="1")
            since = time.time()
            result = check(run_deployer(lab, config, lab.publish()))
            runs = runner_runs(lab.dir / "state-scale", since)
        batches = [r.seconds for r in runs if r.playbook == "deploy.yml"]
        probe = [r.seconds for r in runs if r.playbook == "probe.yml"]
        prestage = [r.seconds for r in runs if r.playbook == "prestage.yml"]
        out = list(result.out_of_lb.values())
        say(
            f"  {size:>3} nodes: {result.seconds:6.1f}s total; probe {median(probe):.1f}s, "
            f"pre-stage {median(prestage):.1f}s, {len(batches)} batches of {max(1, size // 4)}: "
            f"{spread(batches)} each; out of LB {spread(out)}; driver peak {result.peak_rss_mb:.0f} MiB"
        )
        results[str(size)] = {
            "seconds": round(result.seconds, 2),
            "probe_seconds": probe,
            "prestage_seconds": prestage,
            "batch_seconds": batches,
            "out_of_lb_seconds": out,
            "driver_peak_rss_mib": round(result.peak_rss_mb, 1),
        }
    return results
