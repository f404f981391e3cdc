"""The controller's side of the batch gate: where one ansible-playbook run of a whole rollout
(``playbooks/rollout.yml``) waits, at the start of each batch, for the controller's decision.

The play's gate task (the ``deployer_batch_gate`` action plugin, run once per batch inside
ansible-playbook's process tree) connects to a unix socket this :class:`GateServer` listens on,
sends one JSON line — ``{"batch": [hosts], "failed": [hosts]}``: the batch as Ansible cut it and
the hosts that have failed so far — and blocks until it reads one JSON line back:
``{"decision": "go", "hosts": [...]}`` or ``{"decision": "stop", "reason": "..."}``.

The socket lives in a directory of its own (0700, under the system's temporary directory so that
its path fits a unix socket's 107 bytes), removed by :meth:`GateServer.close`; so does what else
the controller hands the run (the plan's file). A controller killed outright leaves its directory
behind: the next server removes those whose socket no longer has a listener. Closing the server
closes every gate still waiting without an answer, which fails it; so does the controller's
death (the kernel closes its sockets): the play then ends, nothing more is drained.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GATE_ACTIONS", "GateRequest", "GateServer"]

# The gate task's action, as the run's events name it (the playbook's short name, or its full
# name in the collection).
GATE_ACTIONS = frozenset({"deployer_batch_gate", "deployer.vm.deployer_batch_gate"})

_MAX_REQUEST = 1 << 20
_PREFIX = "deployer-gate-"


@dataclass
class GateRequest:
    """One gate waiting for the controller: the batch Ansible is about to run."""

    batch: tuple[str, ...]
    failed: tuple[str, ...]
    _conn: socket.socket = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    answered: str = ""

    def go(self, hosts: Sequence[str]) -> bool:
        """Run the batch on ``hosts`` (the batch's other hosts end there). False when the gate
        was gone already (the run ended or was cancelled)."""
        return self._answer({"decision": "go", "hosts": list(hosts)})

    def stop(self, reason: str = "") -> bool:
        """End the play here."""
        return self._answer({"decision": "stop", "reason": reason})

    def close(self) -> None:
        """Close without an answer: the gate fails."""
        with self._lock:
            if not self.answered:
                self.answered = "closed"
            with contextlib.suppress(OSError):
                self._conn.close()

    def _answer(self, answer: dict[str, Any]) -> bool:
        with self._lock:
            if self.answered:
                return False
            self.answered = str(answer["decision"])
            try:
                self._conn.sendall(json.dumps(answer).encode() + b"\n")
                return True
            except OSError:
                return False
            finally:
                with contextlib.suppress(OSError):
                    self._conn.close()


class GateServer:
    """Listens for the gates of one run; each request is handed to ``on_request`` (from the
    server's own thread) and waits there until it is answered or closed."""

    def __init__(self, on_request: Callable[[GateRequest], None]) -> None:
        self._on_request = on_request
        remove_abandoned_directories(Path(tempfile.gettempdir()))
        # The run's private directory (0700): the socket, and any file the run reads from the
        # controller (the plan).
        self.directory = Path(tempfile.mkdtemp(prefix=_PREFIX))
        self.path = self.directory / "gate.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self._listener.listen(4)
        self._pending: list[GateRequest] = []
        self._mutex = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="batch-gate", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                request = _read_request(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            gate = GateRequest(batch=tuple(str(h) for h in request.get("batch") or ()),
                               failed=tuple(str(h) for h in request.get("failed") or ()),
                               _conn=conn)
            with self._mutex:
                if self._closed:
                    gate.close()
                    return
                self._pending.append(gate)
            self._on_request(gate)

    def close(self) -> None:
        """Stop listening, fail every gate still waiting, remove the socket's directory."""
        with self._mutex:
            self._closed = True
            pending, self._pending = self._pending, []
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        for gate in pending:
            gate.close()
        self._thread.join(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def remove_abandoned_directories(parent: Path) -> None:
    """Remove this user's gate directories under ``parent`` whose socket refuses connections:
    their controller died without closing them (SIGKILL), leaving the socket and the plan's file
    (node names, versions). A live run's socket accepts; a directory without a socket yet (its
    server being set up) is left alone."""
    for directory in parent.glob(f"{_PREFIX}*"):
        path = directory / "gate.sock"
        try:
            if directory.stat().st_uid != os.getuid() or not path.is_socket():
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1)
                probe.connect(str(path))
        except ConnectionRefusedError:
            shutil.rmtree(directory, ignore_errors=True)
        except OSError:
            continue  # gone meanwhile, or busy: not judged


def _read_request(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk or len(data) > _MAX_REQUEST:
            raise ValueError("no request")
        data += chunk
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("not an object")
    return request
