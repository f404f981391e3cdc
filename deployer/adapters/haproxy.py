"""Clients for HAProxy's runtime API (the ``stats socket ... level admin``).

Used by the controller for read-only views (status, plan, capacity checks) and for the safety net
that puts nodes back into service after an interrupted run. The playbooks drive the same API
through the ``deployer_haproxy`` module of the ``deployer_lb_haproxy`` role.

- :class:`HAProxyRuntime`: a unix socket on this machine, or ``tcp://host:port``;
- :class:`HAProxyOverSSH`: a unix socket (or ``tcp://`` address) that only the load-balancer host
  reaches: each read runs one small Python program there over SSH;
- :class:`LoadBalancerGroup`: several load balancers in front of the same servers (an HA pair),
  acting as one.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cached_property

from .._errors import LoadBalancerError
from ._haproxy_answers import admin_bits, admin_state, stat_rows
from .loadbalancer import ADMIN_STATES, LoadBalancer, ServerState
from .ssh import SshTarget

__all__ = ["HAProxyOverSSH", "HAProxyRuntime", "LoadBalancerGroup", "ServerState"]

_STATES = frozenset(ADMIN_STATES)


def _state_command(backend: str, server: str, state: str) -> str:
    if state not in _STATES:
        raise ValueError(state)
    return f"set server {backend}/{server} state {state}"


def _map_entry(where: str, map_file: str, key: str, answer: str) -> str | None:
    """The value of ``key`` in a ``show map FILE`` answer (lines: ``<id> <key> <value>``)."""
    text = answer.strip()
    if text.lower().startswith(("unknown map", "missing", "unknown")):
        raise LoadBalancerError(
            f"HAProxy at {where} has no map {map_file!r}: {text.splitlines()[0]}",
            hint="load_balancer.legs_map must be the map file exactly as HAProxy's config names it",
        )
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == key:
            return parts[2]
    return None


def _map_commands(map_file: str, key: str, backend: str, current: str | None) -> str:
    for value, what in ((map_file, "map file"), (key, "map key"), (backend, "backend")):
        if not value or any(c.isspace() or c in ";#\\" for c in value):
            raise LoadBalancerError(f"refusing a runtime-API command with this {what}: {value!r}")
    verb = "set" if current is not None else "add"
    return f"{verb} map {map_file} {key} {backend}"


def _persist_map(map_file: str, key: str, backend: str) -> None:
    """Write the new route into the map file too, where this machine can, so that an HAProxy
    restart keeps it (the runtime API changes only HAProxy's memory)."""
    import os

    path = map_file
    if not os.path.isfile(path) or not os.access(path, os.W_OK):
        return
    lines = []
    found = False
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == key:
                lines.append(f"{key} {backend}\n")
                found = True
            else:
                lines.append(line if line.endswith("\n") else line + "\n")
    if not found:
        lines.append(f"{key} {backend}\n")
    tmp = f"{path}.deployer-tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
    os.replace(tmp, path)


def _parse_servers(where: str, backend: str, stat: str, servers_state: str) -> dict[str, ServerState]:
    """Join ``show stat`` and ``show servers state BACKEND`` into one state per server."""
    rows = stat_rows(stat, backend)
    if rows is None:
        raise LoadBalancerError(f"HAProxy at {where} has no backend named {backend!r}")
    bits = admin_bits(servers_state, backend)
    found: dict[str, ServerState] = {}
    for name, row in rows.items():
        status = row.get("status", "")
        # A server the second answer does not list yet (added in between): its status says.
        admin = admin_state(bits[name]) if name in bits else (
            "maint" if status.startswith("MAINT") else "drain" if status.startswith("DRAIN") else "ready")
        found[name] = ServerState(
            backend=backend, server=name, status=status, admin=admin,
            sessions=int(row.get("scur") or 0),
        )
    return found


class HAProxyRuntime:
    """Talk to one HAProxy over a unix socket path or ``tcp://host:port`` from this machine."""

    def __init__(self, address: str, *, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout

    @property
    def where(self) -> str:
        return self.address

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
        return _parse_servers(self.address, backend, stat, self.command(f"show servers state {backend}"))

    def set_state(self, backend: str, server: str, state: str) -> None:
        answer = self.command(_state_command(backend, server, state)).strip()
        if answer:
            raise LoadBalancerError(f"HAProxy refused to set {backend}/{server} to {state}: {answer}")

    def route(self, map_file: str, key: str) -> str | None:
        return _map_entry(self.address, map_file, key, self.command(f"show map {map_file}"))

    def set_route(self, map_file: str, key: str, backend: str) -> None:
        line = _map_commands(map_file, key, backend, self.route(map_file, key))
        answer = self.command(line).strip()
        if answer:
            raise LoadBalancerError(f"HAProxy at {self.address} refused {line!r}: {answer}")
        if not self.address.startswith("tcp://"):
            _persist_map(map_file, key, backend)


# Runs on the load-balancer host with its own Python 3 (standard library only, old versions
# too): sends each command of argv[1] (JSON) on its own connection to the runtime API and
# prints the answers as JSON.
_REMOTE_PROGRAM = r"""
import json, socket, sys
req = json.loads(sys.argv[1])
addr, answers = req["socket"], []
try:
    for line in req["commands"]:
        if addr.startswith("tcp://"):
            host, _, port = addr[6:].rpartition(":")
            s = socket.create_connection((host, int(port)), req["timeout"])
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(req["timeout"])
            s.connect(addr)
        s.sendall(line.encode() + b"\n")
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
        s.close()
        answers.append(b"".join(chunks).decode("utf-8", "replace"))
except Exception as exc:
    print(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}))
else:
    print(json.dumps({"answers": answers}))
"""


class HAProxyOverSSH:
    """The runtime API of an HAProxy whose socket only its own host reaches: every read or change
    runs one small program on that host over SSH (one connection for all of a read's commands).
    """

    def __init__(
        self,
        host: str,
        address: str,
        target: Callable[[], SshTarget],
        *,
        timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.address = address
        self._target_factory = target
        self.timeout = timeout

    @property
    def where(self) -> str:
        return f"{self.address} on {self.host} (over SSH)"

    @cached_property
    def target(self) -> SshTarget:
        return self._target_factory()

    def commands(self, lines: Sequence[str]) -> list[str]:
        """Send runtime API commands from the load-balancer host; their answers in order."""
        request = json.dumps({"socket": self.address, "commands": list(lines), "timeout": self.timeout})
        argv = self.target.argv([self.target.python, "-c", _REMOTE_PROGRAM, request])
        limit = self.timeout * len(lines) + self.target.connect_timeout + 10
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            raise LoadBalancerError(
                f"the HAProxy runtime API at {self.where} did not answer within {limit:g}s"
            ) from None
        except OSError as exc:
            raise LoadBalancerError(f"cannot run {self.target.ssh!r} to reach {self.host}: {exc}") from None
        if done.returncode != 0:
            raise LoadBalancerError(
                f"cannot reach the HAProxy runtime API at {self.where}: "
                f"{_ssh_failure(done.returncode, done.stderr)}",
                hint=_ssh_hint(self.host, done.stderr),
            )
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise LoadBalancerError(
                f"unexpected answer from {self.host} while reading HAProxy: {done.stdout[-300:]!r} "
                f"{done.stderr[-300:]!r}"
            ) from None
        if "error" in answer:
            raise LoadBalancerError(
                f"cannot reach the HAProxy runtime API at {self.where}: {answer['error']}",
                hint="is HAProxy running there, and is load_balancer.socket right in the config?",
            )
        return [str(a) for a in answer["answers"]]

    def command(self, line: str) -> str:
        """One runtime API command, from the load-balancer host."""
        (answer,) = self.commands([line])
        return answer

    def servers(self, backend: str) -> dict[str, ServerState]:
        stat, state = self.commands(["show stat", f"show servers state {backend}"])
        return _parse_servers(self.where, backend, stat, state)

    def set_state(self, backend: str, server: str, state: str) -> None:
        (answer,) = self.commands([_state_command(backend, server, state)])
        if answer.strip():
            raise LoadBalancerError(
                f"HAProxy at {self.where} refused to set {backend}/{server} to {state}: {answer.strip()}"
            )

    def route(self, map_file: str, key: str) -> str | None:
        (answer,) = self.commands([f"show map {map_file}"])
        return _map_entry(self.where, map_file, key, answer)

    def set_route(self, map_file: str, key: str, backend: str) -> None:
        line = _map_commands(map_file, key, backend, self.route(map_file, key))
        (answer,) = self.commands([line])
        if answer.strip():
            raise LoadBalancerError(f"HAProxy at {self.where} refused {line!r}: {answer.strip()}")


def _ssh_failure(code: int, stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith("Warning:")]
    return "; ".join(lines[-3:]) or f"ssh exited {code}"


def _ssh_hint(host: str, stderr: str) -> str:
    if "Host key verification failed" in stderr or "host key" in stderr.lower():
        return (f"add {host}'s host key to the known_hosts file the inventory names "
                f"(e.g. ssh-keyscan {host} >> ~/.ssh/known_hosts, after checking its fingerprint)")
    if "sudo" in stderr:
        return f"the deploy user needs password-less sudo on {host} to read the runtime socket"
    return (f"check that this machine reaches {host} over SSH as the inventory says "
            "(address, port, user, key), and that it has python3")


class LoadBalancerGroup:
    """Several load balancers in front of the same servers (e.g. an HA pair), acting as one:
    changes go to every one of them, and a server is in service only if it is on all of them."""

    def __init__(self, members: Sequence[LoadBalancer]) -> None:
        if not members:
            raise ValueError("a load-balancer group needs at least one member")
        self.members = list(members)

    @property
    def where(self) -> str:
        return " and ".join(m.where for m in self.members)

    def servers(self, backend: str) -> dict[str, ServerState]:
        views = [(m, m.servers(backend)) for m in self.members]
        names: list[str] = []
        for _, view in views:
            names += [n for n in view if n not in names]
        merged: dict[str, ServerState] = {}
        for name in names:
            # A server that some member does not know is not in service there: leave it out,
            # so that whoever needs it says it is missing.
            if all(name in view for _, view in views):
                merged[name] = _merge([(m.where, view[name]) for m, view in views])
        return merged

    def set_state(self, backend: str, server: str, state: str) -> None:
        for member in self.members:
            member.set_state(backend, server, state)

    def route(self, map_file: str, key: str) -> str | None:
        routes = {m.where: m.route(map_file, key) for m in self.members}
        if len(set(routes.values())) > 1:
            seen = "; ".join(f"{where}: {r or 'unset'}" for where, r in routes.items())
            raise LoadBalancerError(
                f"the load balancers disagree on where {key!r} of {map_file} goes ({seen})",
                hint="make them agree (the same `set map` on each) before deploying",
            )
        return next(iter(routes.values()))

    def set_route(self, map_file: str, key: str, backend: str) -> None:
        for member in self.members:
            member.set_route(map_file, key, backend)


def _merge(states: Sequence[tuple[str, ServerState]]) -> ServerState:
    """One view of a server from several load balancers: the least in service wins."""

    def badness(s: ServerState) -> tuple[int, int]:
        return ADMIN_STATES.index(s.admin) if s.admin in ADMIN_STATES else 2, 0 if s.in_service else 1

    worst = max((s for _, s in states), key=badness)
    total = sum(s.sessions for _, s in states)
    if all(badness(s) == badness(worst) and s.status == worst.status for _, s in states):
        return replace(worst, sessions=total, where="")
    at = ", ".join(w for w, s in states if badness(s) == badness(worst))
    return replace(worst, sessions=total, where=at)
