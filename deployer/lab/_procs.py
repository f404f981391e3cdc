"""Process bookkeeping for the lab: identify processes by PID *and* start time (so a recycled
PID is never mistaken for ours), stop processes and wait for them. A zombie counts as dead:
orphans here can wait a while to be reaped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

__all__ = [
    "ProcessRef",
    "free_ports",
    "mount_namespace_of",
    "port_accepts",
    "port_is_free",
    "stop_processes",
    "wait_until",
]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest  # rest[0] is the state (field 3), rest[19] the start time (field 22)


def _is_running(pid: int, start_time: int | None = None) -> bool:
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


@dataclass(frozen=True)
class ProcessRef:
    """A process the lab started, robust against PID reuse."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        fields = _stat_fields(pid)
        if fields is None:
            return None
        return cls(pid=pid, start_time=int(fields[19]))

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> ProcessRef:
        return cls(pid=int(data["pid"]), start_time=int(data["start_time"]))

    def to_dict(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time}

    def alive(self) -> bool:
        return _is_running(self.pid, self.start_time)


def mount_namespace_of(pid: int) -> str | None:
    """The identity of ``pid``'s mount namespace, such as ``mnt:[4026532301]``."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_processes(pids: Iterable[int], *, timeout: float = 5.0) -> list[int]:
    """SIGTERM ``pids``, SIGKILL whatever is left after ``timeout``; return those still alive."""
    targets = {pid: ProcessRef.of(pid) for pid in pids}
    refs = [ref for ref in targets.values() if ref is not None and ref.alive()]
    for ref in refs:
        _signal(ref.pid, signal.SIGTERM)
    if wait_until(lambda: not any(r.alive() for r in refs), timeout=timeout):
        return []
    for ref in refs:
        if ref.alive():
            _signal(ref.pid, signal.SIGKILL)
    wait_until(lambda: not any(r.alive() for r in refs), timeout=5.0)
    return [r.pid for r in refs if r.alive()]


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_accepts(host: str, port: int, *, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nobody listens on now, none of ``avoid``
    (the kernel's picks, each held until all are picked so that none comes back twice)."""
    held: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in avoid:
                ports.append(port)
        return ports
    finally:
        for sock in held:
            sock.close()


def port_is_free(host: str, port: int) -> bool:
    """True when a server could bind host:port now (the same way servers do, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
