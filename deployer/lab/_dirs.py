"""Where labs live: the default lab's directory, and the one commands use without --dir."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_lab_dir", "standard_lab_dir"]


def standard_lab_dir() -> Path:
    """The default lab's directory: $XDG_DATA_HOME/deployer/lab (~/.local/share/deployer/lab)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "deployer" / "lab"


def default_lab_dir() -> Path:
    """The lab that commands use without --dir: $DEPLOYER_LAB_DIR, else the default lab's."""
    env = os.environ.get("DEPLOYER_LAB_DIR")
    return Path(env) if env else standard_lab_dir()
