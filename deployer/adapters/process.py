"""Who this process is, and whether a process recorded earlier still runs.

A PID alone does not name a process: the kernel hands a PID out again once its process is gone.
A process is its host, its PID and its PID's start time (``/proc/<pid>/stat``, field 22: clock
ticks after boot); a live PID with another start time is another process.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Identity", "actor", "pid_start", "process_alive", "processes_naming"]


def pid_start(pid: int) -> str:
    """The start time of ``pid`` (clock ticks after boot), or "" when it does not run."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_alive(pid: int, start: str | None = None) -> bool:
    """True if ``pid`` runs (zombies count as dead) and, when given, started at ``start``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    if not fields or fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


def actor() -> str:
    """``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): fall back to the uid
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Identity:
    """One process: who runs it (``user@host``), its host, PID and the PID's start time."""

    owner: str
    host: str
    pid: int
    pid_start: str

    @classmethod
    def of(cls, pid: int) -> Identity:
        """Process ``pid`` of this host."""
        return cls(owner=actor(), host=socket.gethostname(), pid=pid, pid_start=pid_start(pid))

    @classmethod
    def current(cls) -> Identity:
        return cls.of(os.getpid())

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "pid": self.pid, "pid_start": self.pid_start}

    def gone(self) -> bool:
        """True when this is a process of this host that no longer runs (its PID gone, or
        reused by a process started at another time). A process of another host: False, it
        cannot be seen from here."""
        return self.host == socket.gethostname() and not process_alive(self.pid, self.pid_start)


def processes_naming(needle: bytes, *, proc: Path = Path("/proc")) -> Iterator[tuple[int, bytes, bytes]]:
    """This user's processes whose command line holds ``needle``: each PID, its ``comm`` and
    its command line (none where there is no /proc)."""
    try:
        entries = list(proc.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.geteuid():
                continue
            cmdline = (entry / "cmdline").read_bytes()
            if needle not in cmdline:
                continue
            comm = (entry / "comm").read_bytes().strip()
        except OSError:  # gone meanwhile
            continue
        yield int(entry.name), comm, cmdline
