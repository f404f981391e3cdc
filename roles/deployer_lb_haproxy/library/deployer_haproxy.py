#!/usr/bin/python
"""Ansible module: put one HAProxy backend server in drain, maintenance or ready state.

Talks to the HAProxy runtime API (``stats socket ... level admin``) over a unix socket or
``tcp://host:port``. Standard library only.
"""

from __future__ import annotations

# ruff: noqa: E402  (Ansible modules put their documentation before the imports)

DOCUMENTATION = r"""
---
module: deployer_haproxy
short_description: Drain, disable or enable a server through the HAProxy runtime API
description:
  - Reads the server's state with C(show servers state) and C(show stat) and changes it only
    when needed, so repeated runs report no change.
  - C(state=drain) stops new traffic and waits until the server has no current or queued
    sessions.
  - C(state=maint) drains first (unless O(drain_timeout=0)), waits for sessions to end, then
    puts the server in maintenance.
  - C(state=ready) takes the server out of drain/maintenance and waits until HAProxy reports
    it UP.
  - C(state=query) only reports.
options:
  socket:
    description: The runtime API address, a unix socket path or V(tcp://host:port).
    type: str
    required: true
  backend:
    description:
      - The HAProxy backend name (letters, digits, C(.), C(:), C(_), C(-); anything else is
        refused before a command is sent).
    type: str
    required: true
  server:
    description: The server name inside O(backend) (checked as O(backend) is).
    type: str
    required: true
  state:
    description: The wanted administrative state.
    type: str
    choices: [drain, maint, ready, query]
    default: query
  drain_timeout:
    description: Seconds to wait for sessions to end after draining; V(0) skips draining.
    type: float
    default: 30
  up_timeout:
    description: Seconds to wait for HAProxy to report the server UP after O(state=ready).
    type: float
    default: 30
  poll_interval:
    description: Seconds between two reads of the server's state while waiting.
    type: float
    default: 0.05
  force_health_up:
    description:
      - With O(state=ready), also mark the server's health check as passed
        (C(set server B/S health up)), so HAProxy need not wait for its next checks. Use it
        only after the application was checked healthy.
    type: bool
    default: false
  command_timeout:
    description: Seconds one runtime API command may take.
    type: float
    default: 5
author: deployer
"""

EXAMPLES = r"""
- name: Take the node out of the load balancer once its sessions are finished
  deployer_haproxy:
    socket: /run/haproxy/admin.sock
    backend: hello
    server: node1
    state: maint
    drain_timeout: 30
  delegate_to: lb1
"""

RETURN = r"""
status:
  description: The server's status as C(show stat) reports it (UP, DOWN, MAINT, DRAIN, ...).
  type: str
  returned: always
admin_state:
  description: The administrative flags set on the server (maint, drain, ...).
  type: list
  elements: str
  returned: always
sessions:
  description: The server's current sessions (C(scur)).
  type: int
  returned: always
queued:
  description: The server's queued requests (C(qcur)).
  type: int
  returned: always
up:
  description: Whether HAProxy sends new traffic to the server.
  type: bool
  returned: always
drain_timed_out:
  description:
    - True when sessions were still open at O(drain_timeout) and the server was put in
      maintenance anyway.
  type: bool
  returned: always
waited:
  description: Seconds spent waiting for sessions to end or for the server to come UP.
  type: float
  returned: always
"""

import csv
import re
import socket
import time
from typing import Any

# How HAProxy's answers are read: the same functions as deployer/adapters/_haproxy_answers.py,
# the controller's reference (this module runs on the load balancer's host, where deployer is
# not installed, so it carries its own copy); tests/unit/test_haproxy_answers.py checks that
# both read a real HAProxy's answers alike.

# Bits of srv_admin_state in `show servers state` (HAProxy's SRV_ADMF_* flags).
ADMIN_FLAGS = {
    0x01: "maint",  # forced (set server ... state maint)
    0x02: "maint_inherited",  # from a tracked server
    0x04: "maint_config",  # `disabled` in the configuration
    0x08: "drain",  # forced (set server ... state drain)
    0x10: "drain_inherited",
    0x20: "maint_resolution",  # its address could not be resolved
    0x40: "maint_hostname",
}
MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
DRAIN_BITS = 0x08 | 0x10
# The flags this module sets and clears (`set server ... state maint|drain|ready`).
MAINT_MASK = 0x01
DRAIN_MASK = 0x08


def stat_rows(text: str, backend: str) -> dict[str, dict[str, str]] | None:
    """The rows of ``backend``'s servers in a ``show stat`` answer, by server name (values
    stripped); ``{}`` for a backend without servers, None when the answer has no such backend."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return None
    found: dict[str, dict[str, str]] | None = None
    for row in csv.DictReader([lines[0][2:], *lines[1:]]):
        if row.get("pxname") != backend:
            continue
        if found is None:
            found = {}
        name = row.get("svname") or ""
        if name in ("FRONTEND", "BACKEND"):
            continue
        found[name] = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str) and k}
    return found


def admin_bits(text: str, backend: str) -> dict[str, int]:
    """``srv_admin_state`` of each server of ``backend`` in a ``show servers state`` answer
    (of that backend or of all), by server name; ``{}`` when it lists none."""
    columns: list[str] = []
    bits: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            columns = line[2:].split()
            continue
        row = dict(zip(columns, line.split(), strict=False))
        if row.get("be_name") != backend or "srv_name" not in row:
            continue
        try:
            bits[row["srv_name"]] = int(row.get("srv_admin_state", ""))
        except ValueError:
            continue
    return bits


def admin_state(bits: int) -> str:
    """The administrative state the bits amount to: maint, drain or ready."""
    if bits & MAINT_BITS:
        return "maint"
    if bits & DRAIN_BITS:
        return "drain"
    return "ready"


def takes_traffic(status: str, admin: str) -> bool:
    """Whether HAProxy sends new traffic to a server: ready, and UP ('UP', or 'UP 1/3' on its
    way down) or without checks ('no check')."""
    return admin == "ready" and (status.split(" ")[0] == "UP" or status == "no check")


# What HAProxy accepts in a proxy or server name. Names are written into runtime-API commands,
# where a ';' or a newline would start another command: anything else is refused before any.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class RuntimeApiError(Exception):
    """The runtime API could not be reached or refused a command."""


def check_name(kind: str, value: str) -> str:
    """``value`` when it is a valid HAProxy backend or server name, else RuntimeApiError."""
    if not NAME_PATTERN.match(value):
        raise RuntimeApiError(
            f"{kind} {value!r} is not a valid HAProxy {kind} name: use 1 to 128 letters, digits, "
            "'.', ':', '_' or '-' (nothing else is sent to the runtime API)"
        )
    return value


class RuntimeApi:
    """One short connection per command, as HAProxy's non-interactive mode expects."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        if self.address.startswith("tcp://"):
            host, _, port = self.address[len("tcp://") :].rpartition(":")
            if not host or not port.isdigit():
                raise RuntimeApiError(f"socket {self.address!r} is not a valid tcp://host:port address")
            return socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        return sock

    def command(self, line: str) -> str:
        try:
            with self._connect() as sock:
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError as exc:
            raise RuntimeApiError(
                f"cannot reach the HAProxy runtime API at {self.address!r}: {exc}; check the "
                "socket address and that HAProxy runs with 'stats socket ... level admin'"
            ) from None
        return b"".join(chunks).decode("utf-8", "replace")

    def set_server(self, backend: str, server: str, what: str) -> None:
        command = f"set server {check_name('backend', backend)}/{check_name('server', server)} {what}"
        answer = self.command(command).strip()
        # A successful `set server` answers with an empty line; anything else is a refusal.
        if answer:
            raise RuntimeApiError(f"HAProxy refused '{command}': {answer}")


def read_server(api: RuntimeApi, backend: str, server: str) -> dict[str, Any]:
    """The server's admin flags (from `show servers state`) and stats (from `show stat`)."""
    check_name("server", server)
    state_text = api.command(f"show servers state {check_name('backend', backend)}")
    if state_text.lstrip().startswith(("Can't find backend", "Unknown command")):
        raise RuntimeApiError(f"HAProxy has no backend {backend!r}: {state_text.strip()}")
    bits = admin_bits(state_text, backend).get(server)
    if bits is None:
        raise RuntimeApiError(
            f"HAProxy backend {backend!r} has no server {server!r}; check the server name "
            "(deployer_lb_server, default: the inventory hostname)"
        )
    stats = (stat_rows(api.command("show stat"), backend) or {}).get(server, {})
    status = stats.get("status", "")
    return {
        "admin_bits": bits,
        "admin_state": [name for bit, name in ADMIN_FLAGS.items() if bits & bit],
        "status": status,
        "sessions": int(stats.get("scur") or 0),
        "queued": int(stats.get("qcur") or 0),
        "check_enabled": bool(stats.get("check_status")),
        "up": takes_traffic(status, admin_state(bits)),
    }


def wait_for(
    api: RuntimeApi,
    backend: str,
    server: str,
    done: Any,
    timeout: float,
    interval: float,
) -> tuple[dict[str, Any], bool, float]:
    """Poll the server until done(info) or timeout; returns (info, reached, seconds waited)."""
    start = time.monotonic()
    info = read_server(api, backend, server)
    while not done(info):
        if time.monotonic() - start >= timeout:
            return info, False, time.monotonic() - start
        time.sleep(interval)
        info = read_server(api, backend, server)
    return info, True, time.monotonic() - start


def _no_sessions(info: dict[str, Any]) -> bool:
    return bool(info["sessions"] == 0 and info["queued"] == 0)


def _is_up(info: dict[str, Any]) -> bool:
    return bool(info["up"])


def _report(info: dict[str, Any], **extra: Any) -> dict[str, Any]:
    result = {key: value for key, value in info.items() if key != "admin_bits"}
    result.update(extra)
    return result


def run(params: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    """Apply params['state'] to the server; raises RuntimeApiError on any failure."""
    api = RuntimeApi(params["socket"], float(params.get("command_timeout", 5)))
    backend, server = params["backend"], params["server"]
    state = params.get("state", "query")
    interval = max(0.01, float(params.get("poll_interval", 0.05)))
    drain_timeout = max(0.0, float(params.get("drain_timeout", 30)))
    info = read_server(api, backend, server)
    bits = info["admin_bits"]
    changed = False
    waited = 0.0
    timed_out = False

    if state == "query":
        return _report(info, changed=False, drain_timed_out=False, waited=0.0)

    if state in ("drain", "maint"):
        if bits & MAINT_MASK:
            return _report(info, changed=False, drain_timed_out=False, waited=0.0)
        if state == "drain" and bits & DRAIN_MASK and _no_sessions(info):
            return _report(info, changed=False, drain_timed_out=False, waited=0.0)
        if check_mode:
            return _report(info, changed=True, drain_timed_out=False, waited=0.0)
        if drain_timeout > 0 or state == "drain":
            if not bits & DRAIN_MASK:
                api.set_server(backend, server, "state drain")
                changed = True
            info, reached, waited = wait_for(api, backend, server, _no_sessions, drain_timeout, interval)
            timed_out = not reached
        if state == "maint":
            api.set_server(backend, server, "state maint")
            changed = True
            info = read_server(api, backend, server)
        return _report(info, changed=changed, drain_timed_out=timed_out, waited=round(waited, 3))

    if state == "ready":
        if bits & (MAINT_MASK | DRAIN_MASK):
            if check_mode:
                return _report(info, changed=True, drain_timed_out=False, waited=0.0)
            api.set_server(backend, server, "state ready")
            changed = True
            if params.get("force_health_up") and info["check_enabled"]:
                api.set_server(backend, server, "health up")
        elif check_mode:
            return _report(info, changed=False, drain_timed_out=False, waited=0.0)
        up_timeout = max(0.0, float(params.get("up_timeout", 30)))
        info, reached, waited = wait_for(api, backend, server, _is_up, up_timeout, interval)
        if not reached:
            raise RuntimeApiError(
                f"HAProxy still reports {backend}/{server} as {info['status'] or 'unknown'!r} "
                f"{up_timeout:g}s after it was made ready; check the node's health (HAProxy "
                "checks) or raise the up timeout"
            )
        return _report(info, changed=changed, drain_timed_out=False, waited=round(waited, 3))

    raise RuntimeApiError(f"unknown state {state!r}; use drain, maint, ready or query")


ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "socket": {"type": "str", "required": True},
    "backend": {"type": "str", "required": True},
    "server": {"type": "str", "required": True},
    "state": {
        "type": "str",
        "default": "query",
        "choices": ["drain", "maint", "ready", "query"],
    },
    "drain_timeout": {"type": "float", "default": 30},
    "up_timeout": {"type": "float", "default": 30},
    "poll_interval": {"type": "float", "default": 0.05},
    "force_health_up": {"type": "bool", "default": False},
    "command_timeout": {"type": "float", "default": 5},
}


def drain_warning(params: dict[str, Any], result: dict[str, Any]) -> str:
    """The warning for a server put in maintenance with sessions still open ('' if none)."""
    if not result.get("drain_timed_out"):
        return ""
    return (
        f"{params['backend']}/{params['server']} still had {result['sessions']} session(s) after "
        f"{params['drain_timeout']:g}s of draining; it was put in maintenance anyway"
    )


def main() -> None:
    # Imported here: the action plugin may run this file's run() on a plain interpreter.
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run(module.params, check_mode=module.check_mode)
    except RuntimeApiError as exc:
        module.fail_json(msg=str(exc), backend=module.params["backend"], server=module.params["server"])
    warning = drain_warning(module.params, result)
    if warning:
        module.warn(warning)
    module.exit_json(backend=module.params["backend"], server=module.params["server"], **result)


if __name__ == "__main__":
    main()
