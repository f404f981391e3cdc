"""The local lab: a VM-like fleet on one machine (`deployer lab up|down|status`)."""

from __future__ import annotations

import os
from pathlib import Path

from ._lab import SAMPLE_RELEASES, Lab, LabState, LabStatus, NodeState, NodeStatus
from ._spec import MAX_NODES, LabSpec

__all__ = [
    "MAX_NODES",
    "SAMPLE_RELEASES",
    "Lab",
    "LabSpec",
    "LabState",
    "LabStatus",
    "NodeState",
    "NodeStatus",
    "default_lab_dir",
]


def default_lab_dir() -> Path:
    env = os.environ.get("DEPLOYER_LAB_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "deployer" / "lab"
