"""Action plugin deployer_batch_gate: hold a rollout at the start of each batch until the
controller that runs it says go (see playbooks/rollout.yml).

It runs once per batch (``run_once``), on the controller, inside ansible-playbook's own process
tree: it connects to the unix socket the controller listens on (``socket``, in a private 0700
directory of the run's own), sends one JSON line — the batch as Ansible cut it and the hosts that
have failed so far — and blocks until the controller answers with one JSON line::

    {"decision": "go", "hosts": [...]}    run the batch on these hosts (the others end here)
    {"decision": "stop", "reason": "..."} end the play before anything more leaves the LB

A connection that closes without an answer (the controller died, or ended the run) fails the
task, and with it every host of the batch: nothing more is drained. :func:`ask` is the whole
client; the engine's tests drive the controller's gate through it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from typing import Any

from ansible.plugins.action import ActionBase

# One line each way; a controller's answer is small.
_MAX_ANSWER = 1 << 20


class GateClosed(Exception):
    """The controller did not answer (it is gone, or it closed the gate)."""


def ask(path: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """Send ``request`` to the controller's gate at ``path`` and wait for its answer, however
    long it decides (a soak, a pause between batches)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(json.dumps(dict(request)).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n") and len(data) < _MAX_ANSWER:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise GateClosed(f"cannot reach the controller's gate at {path}: {exc}") from None
    if not data.endswith(b"\n"):
        raise GateClosed("the controller closed the gate without an answer")
    answer = json.loads(data)
    if not isinstance(answer, dict) or answer.get("decision") not in ("go", "stop"):
        raise GateClosed(f"unexpected answer from the controller: {data[:200]!r}")
    return answer


class ActionModule(ActionBase):
    # Nothing runs on the batch's host: no connection is made for this task.
    _requires_connection = False

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        path = self._task.args.get("socket")
        if not isinstance(path, str) or not path:
            return {**result, "failed": True, "msg": "deployer_batch_gate needs socket: the gate's path"}
        batch = [str(h) for h in task_vars.get("ansible_play_batch", [])]
        alive = {str(h) for h in task_vars.get("ansible_play_hosts", [])}
        failed = [str(h) for h in task_vars.get("ansible_play_hosts_all", []) if h not in alive]
        try:
            answer = ask(path, {"batch": batch, "failed": failed})
        except (GateClosed, ValueError) as exc:
            return {**result, "failed": True, "msg": f"no go from the controller: {exc}"}
        hosts = [str(h) for h in answer.get("hosts") or []]
        return {**result, "changed": False, "decision": answer["decision"], "hosts": hosts,
                "reason": str(answer.get("reason") or "")}
