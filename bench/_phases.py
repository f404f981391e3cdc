"""Where a deployment's time goes, phase by phase, the same way for deployer and for the plain
playbook, so that a regression shows where it is.

- deployer: its ``--events`` file (every node phase change, batch and lifecycle phase with its
  time) and the switch task's own ``restart_seconds`` (ansible-runner's files of the run);
- the plain playbook (and the same under Mitogen): the ``bench_timeline`` callback's task starts
  and ends per host.

Phases (seconds): ``startup`` (the command's start to the deployment recorded, or to the first
task), ``prestage`` (deployer's preflight: the load balancer and every node read, the release
pre-staged), then per batch ``gap`` (the previous batch's end, or the steps' start, to the
batch's start: the safe point's checks and the load balancer read), ``to_drain`` (the batch's
start to its first drain), and per node out of the load balancer ``drain``, ``switch`` (without
the restart), ``restart``, ``smoke``, ``rejoin``; ``finish`` (the last node back to the command's
exit). Besides (not a phase of its own: it spans them), ``batch``: each batch's start to its last
node done.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

NODE_PHASES = ("drain", "switch", "restart", "smoke", "rejoin")
PHASES = ("startup", "prestage", "gap", "to_drain", *NODE_PHASES, "finish")

# The plain playbook's tasks, by phase (bench/baseline/rolling.yml).
_PLAIN_TASKS = {
    "drain": ("Stop sending new requests to the node", "Wait until the node has no session left",
              "Put the node in maintenance"),
    "switch": ("Download the release, checking its digest", "Create the release directory",
               "Unpack the release", "Point current at the release", "Write the supervisord program"),
    "restart": ("Restart the application (update restarts a program whose file changed)",),
    "smoke": ("Wait until the node serves the release",),
    "rejoin": ("Put the node back into service", "Wait until HAProxy reports the node UP"),
}


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        if line.strip():
            events.append(json.loads(line))
    return events


def deployer_phases(events: Sequence[Mapping[str, Any]], *, started: float, ended: float,
                    restarts: Mapping[str, float]) -> dict[str, list[float]]:
    """Phases of one deployment from its events (``restarts``: each node's restart as the
    switch task reported it)."""
    out: dict[str, list[float]] = defaultdict(list)
    at: dict[tuple[str, str], float] = {}
    phase_at: dict[str, float] = {}
    batches: list[tuple[float, list[str]]] = []
    finished = ended
    for e in events:
        t = _at(str(e["at"]))
        kind = e.get("type")
        if kind == "deployment_started":
            out["startup"].append(t - started)
        elif kind == "phase":
            phase_at.setdefault(str(e["phase"]), t)
        elif kind == "batch" and not e.get("rollback"):
            batches.append((t, [str(n) for n in e["nodes"]]))
        elif kind == "node":
            at.setdefault((str(e["node"]), str(e["phase"])), t)
        elif kind == "deployment_finished":
            finished = t
    if "preflight" in phase_at and "plan" in phase_at:
        out["prestage"].append(phase_at["plan"] - phase_at["preflight"])
    previous_end = phase_at.get("steps")
    last_done = None
    for start, nodes in batches:
        if previous_end is not None:
            out["gap"].append(start - previous_end)
        drains = [at[(n, "draining")] for n in nodes if (n, "draining") in at]
        if drains:
            out["to_drain"].append(min(drains) - start)
        for n in nodes:
            marks = [at.get((n, p)) for p in ("draining", "deploying", "smoke", "rejoining", "done")]
            if any(m is None for m in marks):
                continue
            d, s, sm, r, done = (float(m) for m in marks if m is not None)
            restart = restarts.get(n, 0.0)
            out["drain"].append(s - d)
            out["switch"].append(max(0.0, sm - s - restart))
            out["restart"].append(restart)
            out["smoke"].append(r - sm)
            out["rejoin"].append(done - r)
        dones = [at[(n, "done")] for n in nodes if (n, "done") in at]
        if dones:
            previous_end = last_done = max(dones)
            out["batch"].append(last_done - start)
    if last_done is not None:
        out["finish"].append(ended - last_done)
    out["outcome"].append(ended - finished)
    return dict(out)


def read_timeline(path: Path) -> list[dict[str, Any]]:
    return read_events(path) if path.exists() else []


def plain_phases(timeline: Sequence[Mapping[str, Any]], *, started: float, ended: float,
                 ) -> dict[str, list[float]]:
    """Phases of one run of the plain playbook from its task timeline."""
    out: dict[str, list[float]] = defaultdict(list)
    phase_of = {task: phase for phase, tasks in _PLAIN_TASKS.items() for task in tasks}
    spans: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    order: list[str] = []
    for e in timeline:
        host, task = str(e.get("host")), str(e.get("task"))
        phase = phase_of.get(task)
        if phase is None:
            continue
        if host not in order:
            order.append(host)
        spans[host][phase].append(float(e["t"]))
    if not order:
        return {}
    first = min(min(v) for v in spans[order[0]].values())
    out["startup"].append(first - started)
    previous_end = None
    for host in order:
        phases = spans[host]
        begin = min(min(v) for v in phases.values())
        end = max(max(v) for v in phases.values())
        if previous_end is not None:
            out["gap"].append(begin - previous_end)
        for phase in NODE_PHASES:
            if phase in phases:
                out[phase].append(max(phases[phase]) - min(phases[phase]))
        previous_end = end
    if previous_end is not None:
        out["finish"].append(ended - previous_end)
    return dict(out)


def merge(runs: Iterable[Mapping[str, list[float]]]) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for phase, values in run.items():
            merged[phase] += values
    return dict(merged)


def restart_seconds(run_events: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each host's restart as the switch task reported it, from ansible-runner's events."""
    found: dict[str, float] = {}
    for e in run_events:
        if e.get("event") != "runner_on_ok":
            continue
        data = e.get("event_data") or {}
        res = data.get("res") or {}
        if isinstance(res, dict) and isinstance(res.get("restart_seconds"), int | float):
            found[str(data.get("host"))] = float(res["restart_seconds"])
    return found
