"""Helpers for end-to-end tests that drive the `deployer` CLI against a lab: its config with
some fields changed, commands run to the end or in the background, the journal's view of the
last deployment, and each node's release and load-balancer state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from deployer.adapters.journal import Journal, NodeEvent
from deployer.lab import Lab


def configured(lab: Lab, name: str, **sections: dict[str, Any] | None) -> Path:
    """The lab's config with some fields of the lab environment's sections changed (a section
    given as None is removed), written beside it (same state directory, so the same journal)."""
    data = yaml.safe_load(lab.config_path.read_text())
    env = data["environments"]["lab"]
    for section, fields in sections.items():
        if fields is None:
            env.pop(section, None)
        else:
            env.setdefault(section, {}).update(fields)
    path = lab.dir / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def deployer(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, **(env or {})},
    )


def start(config: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """A command running in the background; its live progress is readable from stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "deployer", *args, "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )


def read_until(proc: subprocess.Popen[str], *words: str) -> str:
    """Read the command's stderr up to the first line holding every word; what was read."""
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if all(w in line for w in words):
            return seen
    raise AssertionError(f"no line with {words} before the command ended:\n{seen}")


def journal(lab: Lab) -> Journal:
    return Journal(lab.dir / "state" / "journal.sqlite")


def last_deployment(lab: Lab) -> tuple[str, list[NodeEvent]]:
    """The newest deployment's status and its node events (exact times, unlike `history`)."""
    j = journal(lab)
    record = j.deployments("lab", limit=1)[0]
    return record.status, j.node_events(record.id)


def node_phases(events: list[NodeEvent], node: str) -> list[str]:
    return [e.phase for e in events if e.node == node]


def fleet(lab: Lab) -> dict[str, tuple[str | None, str | None]]:
    """Each node's release and load-balancer state ('UP 1/2', a node just back, is UP)."""
    return {
        n.name: (n.app_version, n.lb_state.split(" ")[0] if n.lb_state else None)
        for n in lab.status().nodes
    }


def all_serving(lab: Lab, version: str) -> dict[str, tuple[str | None, str | None]]:
    return dict.fromkeys(fleet(lab), (version, "UP"))


def set_fault(lab: Lab, node: str, text: str) -> None:
    """Game-day fault of the sample service: `unhealthy [VERSION...]` fails its /health."""
    (lab.dir / "nodes" / node / "etc" / "fault").write_text(text + "\n")
