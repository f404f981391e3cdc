"""Times as deployer prints and records them."""

from __future__ import annotations

import time

__all__ = ["iso_utc"]


def iso_utc(t: float | None) -> str:
    """A wall-clock time (seconds since the epoch) as ``2026-11-30T21:40:08Z``; '' for None."""
    if t is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
