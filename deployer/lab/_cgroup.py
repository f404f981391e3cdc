"""Control groups (cgroup v2) that give each lab node an identity the kernel never recycles.

A node's processes (its sshd, every SSH session, its supervisord and the application) all live
in the node's own cgroup, ``deployer-lab/<lab id>/<node>``. A process enters it before it
execs and its children inherit it, so membership proves the process belongs to that node of
that lab. Unlike a namespace number, which the kernel hands to the next new namespace once the
old one is gone, the cgroup's path is the lab's own name: stopping a node signals exactly what
is in its cgroup and nothing else, even when the node's sshd died long ago.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

from .._errors import LabError, PrerequisiteError
from ._procs import wait_until

__all__ = ["Cgroup", "cgroup2_root", "new_lab_cgroup_name"]

# Under the cgroup v2 root: one directory per lab, one per node (and one for the services).
_LABS_DIR = "deployer-lab"


def _mountinfo_cgroup2(text: str) -> Path | None:
    """The first cgroup2 mount point in a /proc/self/mountinfo text."""
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            # Mount points escape spaces and the like as octal (\040).
            return Path(fields[4].encode().decode("unicode_escape"))
    return None


def cgroup2_root() -> Path:
    """Where the cgroup v2 hierarchy is mounted; a clear error when it is not usable."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        raise PrerequisiteError(f"cannot read /proc/self/mountinfo: {exc}") from None
    root = _mountinfo_cgroup2(text)
    if root is None:
        raise PrerequisiteError(
            "the lab needs the cgroup v2 hierarchy (it keeps each node's processes in a "
            "cgroup of its own), and none is mounted",
            hint="mount it, e.g. `mkdir -p /sys/fs/cgroup/unified && "
            "mount -t cgroup2 none /sys/fs/cgroup/unified`",
        )
    if not (root / "cgroup.procs").is_file() or not os.access(root, os.W_OK):
        raise PrerequisiteError(
            f"the cgroup v2 hierarchy at {root} is not writable here: the lab cannot give "
            "its nodes cgroups of their own",
            hint="run the lab as root on a machine (or privileged container) that can create cgroups",
        )
    return root


def new_lab_cgroup_name(lab_dir: Path) -> str:
    """A fresh, unique name for a lab's cgroup: readable (the lab directory's name) and never
    shared with another lab (a random suffix)."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in lab_dir.name)[:24] or "lab"
    return f"{_LABS_DIR}/{stem}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Cgroup:
    """One cgroup, named by its path under the cgroup v2 root (e.g. ``deployer-lab/x-1a2b/node1``)."""

    root: Path
    name: str

    @property
    def path(self) -> Path:
        return self.root / self.name

    @property
    def procs_file(self) -> Path:
        """Writing a PID here moves that process in (what the lab's launcher does for itself)."""
        return self.path / "cgroup.procs"

    def child(self, name: str) -> Cgroup:
        return Cgroup(self.root, f"{self.name}/{name}")

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LabError(f"cannot create the cgroup {self.path}: {exc}") from None

    def exists(self) -> bool:
        return self.procs_file.is_file()

    def pids(self) -> list[int]:
        """The processes in this cgroup and every cgroup below it (exited ones excluded)."""
        if not self.path.is_dir():
            return []
        found: list[int] = []
        for procs in self.path.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                found += [int(line) for line in procs.read_text().split()]
        return found

    def contains(self, pid: int) -> bool:
        """True when ``pid`` lives in this cgroup (or below it)."""
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return False
        for line in text.splitlines():
            if line.startswith("0::"):
                own = line[3:].strip().lstrip("/")
                return own == self.name or own.startswith(self.name + "/")
        return False

    def populated(self) -> bool:
        return bool(self.pids())

    def stop(self, *, timeout: float = 5.0) -> None:
        """SIGTERM everything in the cgroup, SIGKILL what is left after ``timeout``, wait until
        it is empty and remove it (and the cgroups below it)."""
        if not self.path.is_dir():
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not self.populated(), timeout=timeout):
            self.kill()
        if not wait_until(lambda: not self.populated(), timeout=5.0):
            left = ", ".join(map(str, self.pids()))
            raise LabError(f"these processes in the lab's cgroup {self.name} would not stop: {left}")
        self.remove()

    def kill(self) -> None:
        """SIGKILL every process in the cgroup at once, as a power cut would."""
        kill_file = self.path / "cgroup.kill"
        if kill_file.is_file():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
                return
        # Kernels before 5.14: one by one, until nothing is left (a fork may race the scan).
        for _ in range(10):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Remove the (empty) cgroup and every cgroup below it, deepest first."""
        if not self.path.is_dir():
            return
        dirs = sorted((p for p in self.path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for directory in [*dirs, self.path]:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise LabError(f"cannot remove the cgroup {directory}: {exc}") from None
