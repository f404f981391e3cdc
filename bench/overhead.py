"""(a) Overhead: ``deployer deploy`` against a plain ``ansible-playbook`` rolling playbook, and the
same playbook under Mitogen's ``mitogen_linear`` strategy (in a virtualenv of its own).

Same lab (4 nodes, no client load), same kind of change (a fresh release no node has seen), the
three alternated run after run. For each run: wall time of the command, each node's time out of
the load balancer as HAProxy reports it, and where the time went, phase by phase (``_phases``).
The app's own restart time is measured on the same nodes so the out-of-LB time can be read
against it. With ``$BENCH_BEFORE`` naming another checkout of deployer (e.g. a worktree of the
commit before a change), its ``deployer deploy`` is a fourth tool in the same alternation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from . import _phases
from ._harness import (
    DeployRun,
    app_restart_seconds,
    bench_lab,
    check,
    median,
    mitogen,
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
TOOLS = ("deployer", "baseline", "mitogen")
LABELS = {"deployer": "deployer", "baseline": "plain", "mitogen": "mitogen_linear", "before": "before"}


def run(*, nodes: int = NODES, repeats: int = REPEATS) -> dict[str, Any]:
    say(f"== overhead: deployer vs the plain playbook (ansible-playbook, and under mitogen_linear), "
        f"{nodes} nodes, {repeats} alternated runs each")
    under = mitogen()
    before = Path(os.environ["BENCH_BEFORE"]) if os.environ.get("BENCH_BEFORE") else None
    tools = (*TOOLS, "before") if before is not None else TOOLS
    if before is not None:
        say(f"  before: the deployer of {before}")
    runs: dict[str, list[DeployRun]] = {tool: [] for tool in tools}
    smokes: list[float] = []
    with bench_lab(nodes) as lab:
        config = lab.config("overhead", batch_size="1", min_healthy="1")
        config_before = lab.config("overhead-before", batch_size="1", min_healthy="1")
        open_ssh_masters(lab, config)
        for i in range(repeats):
            # Each tool takes each place in the order in turn.
            order = tools[i % len(tools):] + tools[:i % len(tools)]
            for tool in order:
                version = lab.publish()
                since = time.time()
                if tool == "deployer":
                    result = check(run_deployer(lab, config, version))
                    smokes += task_seconds(lab.dir / "state-overhead", since, SMOKE_TASKS)
                elif tool == "before":
                    assert before is not None
                    result = check(run_deployer(lab, config_before, version, root=before))
                else:
                    result = check(run_baseline(lab, version, under=under if tool == "mitogen" else None))
                runs[tool].append(result)
                outs = " ".join(f"{n}={s:.2f}" for n, s in result.out_of_lb.items())
                say(f"  run {i + 1} {LABELS[tool]:<14} {result.seconds:6.2f}s  out of LB: {outs}")
        restarts = [app_restart_seconds(lab, n) for n in lab.nodes for _ in range(2)]

    wall = {tool: [r.seconds for r in rs] for tool, rs in runs.items()}
    out = {tool: [s for r in rs for s in r.out_of_lb.values()] for tool, rs in runs.items()}
    ratio = median(wall["deployer"]) / median(wall["baseline"])
    ratio_mitogen = median(wall["deployer"]) / median(wall["mitogen"])
    restart = median(restarts)
    smoke = median(smokes)
    for tool in tools:
        say(f"  wall time      {LABELS[tool]:<14} {spread(wall[tool])}   out of LB/node {spread(out[tool])}")
    say(f"  ratio          deployer / plain = {ratio:.2f}x (goal <= 0.30x); "
        f"deployer / mitogen_linear = {ratio_mitogen:.2f}x (goal <= 0.55x)")
    if before is not None:
        say(f"  before         before / plain = {median(wall['before']) / median(wall['baseline']):.2f}x; "
            f"before / mitogen_linear = {median(wall['before']) / median(wall['mitogen']):.2f}x")
    say(f"  app restart    {spread(restarts)} (stop + start through supervisord until /health answers 200)")
    say(f"  smoke task     {spread(smokes)} (deployer's smoke check, as Ansible timed it)")
    say(
        f"  out of LB beyond restart + smoke: deployer {median(out['deployer']) - restart - smoke:.2f}s "
        f"(goal <= 0.20s); plain, beyond the restart: {median(out['baseline']) - restart:.2f}s"
    )
    phases = {tool: _phases.merge(r.phases for r in rs) for tool, rs in runs.items()}
    say("  phases, median per run / batch / node (s):")
    say("    " + f"{'':<10}" + "".join(f"{LABELS[t]:>16}" for t in tools))
    for phase in (*_phases.PHASES, "outcome"):
        cells = []
        for tool in tools:
            values = phases[tool].get(phase, [])
            cells.append(f"{median(values):16.3f}" if values else f"{'-':>16}")
        say(f"    {phase:<10}" + "".join(cells))
    return {
        "nodes": nodes,
        "repeats": repeats,
        "wall_seconds": wall,
        "out_of_lb_seconds": out,
        "app_restart_seconds": restarts,
        "smoke_seconds": smokes,
        "ratio": ratio,
        "ratio_mitogen": ratio_mitogen,
        "ratio_before": median(wall["before"]) / median(wall["baseline"]) if before is not None else None,
        "phases": {tool: {k: round(median(v), 3) for k, v in ph.items() if v} for tool, ph in phases.items()},
    }
