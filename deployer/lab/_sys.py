"""Small helpers the lab's modules share: running commands with a plain system environment,
writing files atomically, reading a log's tail, probing an HTTP URL."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .._errors import LabError

__all__ = ["START_TIMEOUT", "SYSTEM_ENV", "atomic_write", "http_status", "run", "tail"]

# Processes the lab starts get a plain system environment, not the caller's (e.g. a venv).
SYSTEM_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
# How long a lab process may take to get ready.
START_TIMEOUT = 20.0


def tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of a log, on one line (empty when unreadable)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def http_status(url: str, *, timeout: float = 1.0) -> int | None:
    """The HTTP status ``url`` answers with, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def run(argv: list[str], *, what: str, timeout: float = 60.0) -> str:
    """Run a command to completion; a LabError naming ``what`` when it fails."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=SYSTEM_ENV, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{what} failed (exit {proc.returncode}): {' | '.join(detail[-3:])}")
    return proc.stdout
