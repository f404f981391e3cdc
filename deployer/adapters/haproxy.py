"""A small client for HAProxy's runtime API (the ``stats socket ... level admin``).

Used by the controller for read-only views (status, plan, capacity checks) and for the safety net
that puts nodes back into service after an interrupted run. The playbooks drive the same API
through the ``deployer_haproxy`` module of the ``deployer_lb_haproxy`` role.
"""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass

from .._errors import LoadBalancerError

__all__ = ["HAProxyRuntime", "ServerState"]


@dataclass(frozen=True)
class ServerState:
    backend: str
    server: str
    # HAProxy's status column: UP, DOWN, MAINT, DRAIN, "UP 1/2", "no check", ...
    status: str
    # Admin state as set through the runtime API: ready, drain or maint.
    admin: str
    sessions: int

    @property
    def in_service(self) -> bool:
        """True when the server takes new traffic: ready and passing its checks."""
        return self.admin == "ready" and self.status.split()[0] in ("UP", "no")

    @property
    def label(self) -> str:
        if self.admin != "ready":
            return self.admin.upper()
        return self.status


class HAProxyRuntime:
    """Talk to one HAProxy over a unix socket path or ``tcp://host:port``."""

    def __init__(self, address: str, *, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        try:
            if self.address.startswith("tcp://"):
                host, _, port = self.address[len("tcp://"):].rpartition(":")
                sock = socket.create_connection((host, int(port)), timeout=self.timeout)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self.address)
        except (OSError, ValueError) as exc:
            raise LoadBalancerError(
                f"cannot reach the HAProxy runtime API at {self.address}: {exc}",
                hint="is HAProxy running, and is load_balancer.socket right in the config?",
            ) from None
        return sock

    def command(self, line: str) -> str:
        """Send one runtime API command and return its full answer."""
        with self._connect() as sock:
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    raise LoadBalancerError(
                        f"HAProxy at {self.address} did not answer {line.split()[0]!r} in time"
                    ) from None
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")

    def servers(self, backend: str) -> dict[str, ServerState]:
        """The state of every server of ``backend``, keyed by server name."""
        stat = self.command("show stat")
        admin = self._admin_states(backend)
        reader = csv.DictReader(io.StringIO(stat.lstrip("# ")))
        found: dict[str, ServerState] = {}
        for row in reader:
            if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
                continue
            name = row["svname"]
            status = row.get("status", "")
            found[name] = ServerState(
                backend=backend,
                server=name,
                status=status,
                admin=admin.get(name, "maint" if status.startswith("MAINT") else "ready"),
                sessions=int(row.get("scur") or 0),
            )
        if not found:
            raise LoadBalancerError(f"HAProxy at {self.address} has no backend named {backend!r}")
        return found

    def _admin_states(self, backend: str) -> dict[str, str]:
        # `show servers state` column srv_admin_state is a bit field: 0x01 forced maint,
        # 0x02/0x04 inherited maint, 0x08 forced drain, 0x10 inherited drain.
        text = self.command(f"show servers state {backend}")
        lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        header = next((ln for ln in text.splitlines() if ln.startswith("# be_id")), "")
        cols = header.lstrip("# ").split()
        states: dict[str, str] = {}
        for ln in lines[1:] if lines and lines[0][0].isdigit() and " " not in lines[0] else lines:
            parts = ln.split()
            if len(parts) != len(cols) or not cols:
                continue
            row = dict(zip(cols, parts, strict=True))
            bits = int(row.get("srv_admin_state", "0"))
            if bits & 0x07:
                states[row["srv_name"]] = "maint"
            elif bits & 0x18:
                states[row["srv_name"]] = "drain"
            else:
                states[row["srv_name"]] = "ready"
        return states

    def set_state(self, backend: str, server: str, state: str) -> None:
        if state not in ("ready", "drain", "maint"):
            raise ValueError(state)
        answer = self.command(f"set server {backend}/{server} state {state}").strip()
        if answer:
            raise LoadBalancerError(f"HAProxy refused to set {backend}/{server} to {state}: {answer}")
