"""The local lab: a VM-like fleet on one machine (placeholder until the lab lands)."""

from __future__ import annotations

import os
from pathlib import Path


def default_lab_dir() -> Path:
    env = os.environ.get("DEPLOYER_LAB_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "deployer" / "lab"
