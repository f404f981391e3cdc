"""The local lab: a VM-like fleet on one machine (`deployer lab up|down|status`), or one fleet
per environment of a path to live (`deployer lab up --envs preprod,prod`)."""

from __future__ import annotations

from ._dirs import default_lab_dir
from ._lab import SAMPLE_RELEASES, Lab, LabState, LabStatus, NodeState, NodeStatus
from ._path import PathLab, PathSpec, PathStatus
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
    "PathLab",
    "PathSpec",
    "PathStatus",
    "default_lab_dir",
]

