#!/usr/bin/python
"""Ansible module: point `current` at a staged release atomically. Standard library only."""

from __future__ import annotations

# ruff: noqa: E402  (Ansible modules put their documentation before the imports)

DOCUMENTATION = r"""
---
module: deployer_release_switch
short_description: Switch the current release atomically and prune old releases
description:
  - Points C(<base_dir>/current) at C(releases/<version>) by creating a temporary symlink and
    renaming it over C(current), so readers always see either the old or the new release.
  - Points C(<base_dir>/previous) at the release C(current) pointed to before the switch, or at
    O(previous) when given (used to undo a switch exactly).
  - Writes O(environment_file), then O(program_file), when given, after the links.
  - Then removes the oldest complete releases beyond O(keep_releases), never the current one,
    the previous one, nor the one C(previous) pointed to before the switch (going back exactly,
    when the release fails after the switch, needs it). Nothing changes when the links are
    already as wanted.
options:
  base_dir:
    description: The application's base directory (for example C(/opt/hello)).
    type: path
    required: true
  version:
    description: The staged release C(current) must point to.
    type: str
    required: true
  previous:
    description:
      - The release C(previous) must point to; an empty string removes C(previous).
      - When omitted, C(previous) becomes the release that was current before the switch.
    type: str
  keep_releases:
    description:
      - How many complete releases to keep (the newest); V(0) keeps all.
      - The current release, the previous one and the one C(previous) pointed to before the
        switch are kept besides.
    type: int
    default: 0
  program_file:
    description:
      - A file to write with O(program_content) together with the switch (the supervisord
        program file or systemd unit naming the release), replaced atomically when it differs.
    type: path
  program_content:
    description:
      - The content of O(program_file).
      - It may hold the application's environment, secrets included, so it is never shown in
        results or logs.
    type: str
  environment_file:
    description:
      - A file holding the application's environment that O(program_file) names (systemd's
        C(EnvironmentFile=)), written with O(environment_content) before it, readable by root
        alone (0600). With it, a systemd unit (O(supervisor=systemd)) is written world-readable
        (0644), as systemd expects of units; any other program file stays root's alone (0600).
    type: path
  environment_content:
    description:
      - The content of O(environment_file); never shown in results or logs.
    type: str
  restart_app:
    description:
      - After the switch, restart this program (O(supervisor=supervisord)) or the unit
        C(<restart_app>.service) (O(supervisor=systemd)) in the same task.
      - "supervisord: when its program
        file changed, the program is stopped, removed and added again with the new settings
        (what C(supervisorctl update) does), else it is stopped and started. One task instead
        of two on the path where the node is out of the load balancer. An empty string
        restarts nothing.
      - supervisord is asked through its XML-RPC interface on O(supervisor_socket), polling
        the program's state every 20 ms (supervisord's own waits run on a one-second loop);
        when that socket is not there or refuses the request, C(supervisorctl) is used."
      - "systemd: C(systemctl daemon-reload) when the unit file changed (or systemd asks for a
        reload), C(systemctl enable) when the unit is not enabled, then C(systemctl restart)."

      - When the restart fails the task fails, and still returns RV(current), RV(previous) and
        RV(switched_from), so the caller knows the links moved and can go back.
    type: str
    default: ''
  supervisor:
    description: What runs the application.
    type: str
    choices: [supervisord, systemd]
    default: supervisord
  supervisor_socket:
    description: supervisord's UNIX socket (C([unix_http_server] file) in its configuration).
    type: path
    default: /var/run/supervisor.sock
  run_user:
    description:
      - The user O(program_file) runs the application as; the task fails, changing nothing, when
        it does not exist on the node (so a preflight in check mode catches it).
    type: str
  run_group:
    description: The group O(program_file) names; checked like O(run_user).
    type: str
author: deployer
"""

EXAMPLES = r"""
- name: Switch the current symlink to release 1.1.0
  deployer_release_switch:
    base_dir: /opt/hello
    version: 1.1.0
    keep_releases: 5
"""

RETURN = r"""
current:
  description: The version C(current) points to after the task.
  type: str
  returned: always
previous:
  description: The version C(previous) points to after the task, or an empty string.
  type: str
  returned: always
switched_from:
  description: The version C(current) pointed to before the task, or an empty string.
  type: str
  returned: always
previous_before:
  description: The version C(previous) pointed to before the task, or an empty string.
  type: str
  returned: always
program_changed:
  description: Whether O(program_file) was (or would be) rewritten.
  type: bool
  returned: always
environment_changed:
  description: Whether O(environment_file) was (or would be) rewritten.
  type: bool
  returned: always
pruned:
  description: The releases removed by O(keep_releases).
  type: list
  elements: str
  returned: always
restart_output:
  description: How O(restart_app) was restarted (the states it went through, or what supervisorctl said).
  type: str
  returned: when O(restart_app) is set
restart_seconds:
  description: How long the restart of O(restart_app) took.
  type: float
  returned: when O(restart_app) is set
ansible_facts:
  description: >-
    The node's facts C(deployer_release_current) and C(deployer_release_previous), as the links
    now are (also when the restart failed).
  type: dict
  returned: when the links were checked, not in check mode
"""

import grp
import json
import os
import pwd
import re
import socket
import stat
import time
import xml.parsers.expat
from collections.abc import Callable
from typing import Any

MARKER = ".deployer-release.json"
VERSION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,127}$")


class SwitchError(Exception):
    """The switch cannot be made; the message says why."""


def linked_version(base_dir: str, name: str) -> str:
    """The release the link ``<base_dir>/<name>`` (``current``, ``previous``) points to, by a
    relative or an absolute target: the name of a directory directly in ``<base_dir>/releases``
    (not a hidden staging one). '' when the link is missing, dangling, or points anywhere else.
    The same function is in deployer_release_info and deployer_release_switch (each module is
    sent to the node on its own); tests/unit/test_modules_release.py checks that they agree."""
    try:
        target = os.readlink(os.path.join(base_dir, name))
    except OSError:
        return ""
    resolved = os.path.normpath(os.path.join(base_dir, target))
    version = os.path.basename(resolved)
    if (
        os.path.dirname(resolved) != os.path.join(base_dir, "releases")
        or version.startswith(".")
        or not os.path.isdir(resolved)
    ):
        return ""
    return version


def is_staged(base_dir: str, version: str) -> bool:
    try:
        with open(os.path.join(base_dir, "releases", version, MARKER), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("version") == version


def replace_link(base_dir: str, name: str, version: str) -> None:
    """Make base_dir/name point to releases/<version> in one rename ('' removes the link)."""
    link = os.path.join(base_dir, name)
    if not version:
        if os.path.islink(link):
            os.unlink(link)
        return
    temporary = os.path.join(base_dir, f".{name}.{os.getpid()}.tmp")
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(os.path.join("releases", version), temporary)
    os.replace(temporary, link)


# A file holding the application's environment, secrets included, is root's alone (supervisord
# and systemd read it as root). A systemd unit that only names its environment file is readable
# by all: systemd shows every unit's settings to any local user anyway, and warns about units
# others cannot read.
SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644


def write_if_changed(path: str, content: str, check_mode: bool, mode: int = SECRET_FILE_MODE) -> bool:
    """Replace path with content in one rename when it differs, or give it ``mode`` when it
    has another; True when it did (or would)."""
    data = content.encode("utf-8")
    try:
        with open(path, "rb") as handle:
            if handle.read() == data:
                if stat.S_IMODE(os.fstat(handle.fileno()).st_mode) == mode:
                    return False
                if not check_mode:
                    os.chmod(path, mode)
                return True
    except FileNotFoundError:
        pass
    if check_mode:
        return True
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)
    return True


def prune(base_dir: str, keep: int, protected: set[str]) -> list[str]:
    """Remove the oldest complete releases beyond `keep`, never a protected one."""
    releases = os.path.join(base_dir, "releases")
    dated: list[tuple[float, str]] = []
    for name in os.listdir(releases):
        if name.startswith(".") or not is_staged(base_dir, name):
            continue
        dated.append((os.stat(os.path.join(releases, name, MARKER)).st_mtime, name))
    dated.sort(reverse=True)
    kept = {name for _, name in dated[:keep]} | protected
    removed = []
    for _, name in dated:
        if name not in kept:
            import shutil  # here: only when there is a release to remove (the node is out)

            shutil.rmtree(os.path.join(releases, name))
            removed.append(name)
    return sorted(removed)


def run(params: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    base_dir = os.path.abspath(params["base_dir"])
    version = params["version"]
    wanted_previous = params.get("previous")
    keep = int(params.get("keep_releases") or 0)
    for label, value in (("version", version), ("previous", wanted_previous or "")):
        if value and not VERSION_PATTERN.match(value):
            raise SwitchError(f"{label} {value!r} is not a valid release version")
    for kind, lookup, name in (("user", pwd.getpwnam, params.get("run_user")),
                               ("group", grp.getgrnam, params.get("run_group"))):
        if name:
            try:
                lookup(name)
            except KeyError:
                raise SwitchError(
                    f"the application's {kind} {name!r} does not exist on the node (staging creates "
                    "it when deployer_release_create_user is true)"
                ) from None
    if not is_staged(base_dir, version):
        raise SwitchError(
            f"release {version} is not staged in {base_dir}/releases/{version} (no complete "
            f"{MARKER}); stage it first"
        )
    if wanted_previous and not os.path.isdir(os.path.join(base_dir, "releases", wanted_previous)):
        raise SwitchError(f"release {wanted_previous} (wanted as previous) is not in {base_dir}/releases")
    current = linked_version(base_dir, "current")
    previous = linked_version(base_dir, "previous")
    if wanted_previous is None:
        wanted_previous = current if current and current != version else previous
    changed = current != version or previous != wanted_previous
    if changed and not check_mode:
        # `previous` first: while `current` moves, `previous` already names the way back.
        replace_link(base_dir, "previous", wanted_previous)
        replace_link(base_dir, "current", version)
    environment_changed = program_changed = False
    if params.get("environment_file"):
        # Before the program file that names it: a restart never reads a stale environment.
        environment_changed = write_if_changed(
            params["environment_file"], params.get("environment_content") or "", check_mode
        )
    if params.get("program_file"):
        public = bool(params.get("environment_file")) and params.get("supervisor") == "systemd"
        program_changed = write_if_changed(
            params["program_file"], params.get("program_content") or "", check_mode,
            PUBLIC_FILE_MODE if public else SECRET_FILE_MODE,
        )
    pruned: list[str] = []
    if keep > 0 and not check_mode:
        # What `previous` named before the switch is kept too: if the release fails after this
        # switch, going back restores both links as they were.
        pruned = prune(base_dir, keep, {version, wanted_previous, previous or ""} - {""})
    return {
        "changed": changed or program_changed or environment_changed or bool(pruned),
        "program_changed": program_changed,
        "environment_changed": environment_changed,
        "current": version,
        "previous": wanted_previous,
        "switched_from": current,
        "previous_before": previous,
        "pruned": pruned,
    }


CommandRunner = Callable[[list[str]], tuple[int, str, str]]


def restart_supervisord(run_command: CommandRunner, app: str) -> tuple[bool, str]:
    """Restart ``app`` exactly once with supervisorctl: ``update`` rereads the config and
    restarts the program when its file changed (or adds it); when nothing changed, restart it
    explicitly."""
    _, out, err = run_command(["supervisorctl", "update", app])
    output = (out + err).strip()
    if "process group" not in output:
        _, out, err = run_command(["supervisorctl", "restart", app])
        output = (out + err).strip()
    return ("process group" in output or "started" in output), output


def restart_systemd(run_command: CommandRunner, app: str, reload: bool) -> tuple[bool, str]:
    """Restart the unit ``<app>.service`` once: reload systemd when its unit file changed,
    enable the unit when it is not, then restart it."""
    unit = f"{app}.service"
    steps = []
    if not reload:
        _, out, _ = run_command(["systemctl", "show", "--property=NeedDaemonReload", unit])
        reload = out.strip().endswith("=yes")
    commands = [["systemctl", "daemon-reload"]] if reload else []
    rc, _, _ = run_command(["systemctl", "is-enabled", "--quiet", unit])
    if rc != 0:
        commands.append(["systemctl", "enable", unit])
    commands.append(["systemctl", "restart", unit])
    for argv in commands:
        rc, out, err = run_command(argv)
        steps.append(" ".join(argv[1:]))
        if rc != 0:
            return False, f"{' '.join(argv)} failed (rc {rc}): {(out + err).strip()}"
    return True, f"{unit}: " + ", ".join(steps)


# supervisord's XML-RPC interface, spoken over its UNIX socket with the standard library's expat:
# xmlrpc.client would import http.client, ssl and email, ~0.02 s of the node's CPU on each switch,
# while the node is out of the load balancer. What supervisord's methods take (strings,
# booleans) is written; what they answer (strings, integers, booleans, arrays, structs, faults)
# is read.


class RpcError(Exception):
    """supervisord's XML-RPC interface did not answer with a result."""


class RpcProtocolError(RpcError):
    """Not an XML-RPC answer: an HTTP error (e.g. 401 when the socket needs a password), or a
    body that cannot be read."""


class RpcFault(RpcError):
    """A fault supervisord answered with (its supervisor.xmlrpc.Faults)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"fault {code}: {text}")
        self.code = code


def _rpc_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def rpc_request(method: str, params: tuple[str | bool, ...]) -> bytes:
    """The methodCall for ``method`` with string and boolean parameters."""
    values = "".join(
        f"<param><value><boolean>{int(p)}</boolean></value></param>" if isinstance(p, bool)
        else f"<param><value><string>{_rpc_escape(p)}</string></value></param>"
        for p in params
    )
    return (
        f"<?xml version='1.0'?><methodCall><methodName>{_rpc_escape(method)}</methodName>"
        f"<params>{values}</params></methodCall>"
    ).encode()


class _RpcReply:
    """Reads a methodResponse with expat: finished values on a stack, each open array or struct
    marking where its items start; a struct's names are on the stack before their values."""

    SCALARS: dict[str, Callable[[str], Any]] = {
        "string": str, "int": int, "i4": int, "i8": int, "double": float,
        "boolean": lambda text: text.strip() == "1", "nil": lambda text: None,
    }

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.marks: list[int] = []
        self.text: list[str] = []
        self.typed = False
        self.fault = False

    def start(self, tag: str, attrs: Any) -> None:
        self.text = []
        if tag in ("array", "struct"):
            self.marks.append(len(self.values))
        elif tag == "value":
            self.typed = False
        elif tag == "fault":
            self.fault = True

    def data(self, text: str) -> None:
        self.text.append(text)

    def end(self, tag: str) -> None:
        text = "".join(self.text)
        self.text = []
        if tag in self.SCALARS:
            self.values.append(self.SCALARS[tag](text))
            self.typed = True
        elif tag == "name":
            self.values.append(text)
        elif tag in ("array", "struct"):
            mark = self.marks.pop()
            items = self.values[mark:]
            del self.values[mark:]
            self.values.append(items if tag == "array" else dict(zip(items[::2], items[1::2], strict=True)))
            self.typed = True
        elif tag == "value" and not self.typed:
            self.values.append(text)  # a value without a type is a string
            self.typed = True


def rpc_result(body: bytes) -> Any:
    """The value a methodResponse holds; RpcFault for a fault."""
    reply = _RpcReply()
    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = reply.start
    parser.EndElementHandler = reply.end
    parser.CharacterDataHandler = reply.data
    try:
        parser.Parse(body, True)
        if len(reply.values) != 1:
            raise RpcProtocolError(f"an answer with {len(reply.values)} values")
        if reply.fault:
            fault = reply.values[0]
            code, text = int(fault["faultCode"]), str(fault["faultString"])
    except (xml.parsers.expat.ExpatError, KeyError, TypeError, ValueError) as exc:
        raise RpcProtocolError(f"an answer that is not XML-RPC ({exc})") from None
    if reply.fault:
        raise RpcFault(code, text)
    return reply.values[0]


def _read_http_answer(sock: socket.socket) -> tuple[str, bytes]:
    """The status line and body of an HTTP/1.0 answer, read to its Content-Length (else to the
    end of the connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RpcProtocolError("the connection closed before an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    while length is None or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines[0], body if length is None else body[:length]


def rpc_call(socket_path: str, timeout: float, method: str, *params: str | bool) -> Any:
    """Call ``method`` on the XML-RPC interface on the UNIX socket ``socket_path``."""
    body = rpc_request(method, params)
    head = (
        "POST /RPC2 HTTP/1.0\r\nHost: localhost\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("ascii")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(head + body)
        status, answer = _read_http_answer(sock)
    if status.split(" ")[1:2] != ["200"]:
        raise RpcProtocolError(f"supervisord answered {status!r}")
    return rpc_result(answer)


class SupervisorUnreachable(Exception):
    """supervisord's XML-RPC interface cannot be used (no socket, refused, authentication)."""


# supervisor.xmlrpc.Faults and supervisor.states.ProcessStates
_FAULT_BAD_NAME = 10
_FAULT_ALREADY_STARTED = 60
_FAULT_NOT_RUNNING = 70
_FAULT_STILL_RUNNING = 91
_STOPPED_STATES = {"STOPPED", "EXITED", "FATAL", "ABSENT"}
_RUNNING_STATES = {"STARTING", "RUNNING", "BACKOFF"}
_SETTLED_STATES = {"RUNNING", "EXITED", "BACKOFF", "FATAL"}


class SupervisorRPC:
    """Restarts one program through supervisord's XML-RPC interface on its UNIX socket."""

    def __init__(self, socket_path: str, *, timeout: float = 30.0, poll: float = 0.02) -> None:
        if not os.path.exists(socket_path):
            raise SupervisorUnreachable(f"no supervisord socket at {socket_path}")
        self._socket = socket_path
        self._timeout = timeout
        self._poll = poll
        try:
            self._call("getState")
        except (OSError, RpcProtocolError) as exc:
            raise SupervisorUnreachable(f"supervisord at {socket_path}: {exc}") from exc

    def _call(self, method: str, *params: str | bool) -> Any:
        return rpc_call(self._socket, 10.0, f"supervisor.{method}", *params)

    def _state(self, app: str) -> str:
        try:
            return str(self._call("getProcessInfo", app)["statename"])
        except RpcFault as exc:
            if exc.code == _FAULT_BAD_NAME:
                return "ABSENT"
            raise

    def _wait(
        self,
        app: str,
        done: Callable[[str], bool],
        what: str,
        nudge: Callable[[str], None] | None = None,
    ) -> str:
        """Poll the program's state until ``done``; ``nudge`` is called with every other state."""
        # Each request also wakes supervisord's loop, which reaps and spawns on its way round.
        deadline = time.monotonic() + self._timeout
        while True:
            state = self._state(app)
            if done(state):
                return state
            if nudge is not None:
                nudge(state)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{app} did not {what} within {self._timeout:.0f}s (state {state})")
            time.sleep(self._poll)

    def _ask_to_stop(self, app: str, state: str) -> None:
        # Asked again while supervisord restarts a crashing process behind our back.
        if state in _RUNNING_STATES:
            try:
                self._call("stopProcess", app, False)
            except RpcFault as exc:
                if exc.code not in (_FAULT_NOT_RUNNING, _FAULT_BAD_NAME):
                    raise

    def _stop(self, app: str) -> None:
        self._wait(
            app, lambda s: s in _STOPPED_STATES, "stop", lambda s: self._ask_to_stop(app, s)
        )

    def _start(self, app: str) -> str:
        try:
            self._call("startProcess", app, False)
        except RpcFault as exc:
            if exc.code != _FAULT_ALREADY_STARTED:
                raise
        # Started after the switch: EXITED, BACKOFF or FATAL from here on means it crashed.
        return self._wait(app, lambda s: s in _SETTLED_STATES, "start")

    def _remove(self, app: str) -> None:
        # An exited process may be started again by autorestart between the stop and the
        # removal: stop it again and retry.
        deadline = time.monotonic() + self._timeout
        while True:
            self._stop(app)
            try:
                self._call("removeProcessGroup", app)
                return
            except RpcFault as exc:
                if exc.code != _FAULT_STILL_RUNNING or time.monotonic() > deadline:
                    raise

    def restart(self, app: str) -> tuple[bool, str]:
        """Restart ``app`` once, with its program file's current settings."""
        added, changed, removed = self._call("reloadConfig")[0]
        steps = []
        if app in changed or app in removed:
            self._remove(app)
            steps.append("removed")
        if app in changed or app in added:
            self._call("addProcessGroup", app)
            steps.append("added")
        elif app not in removed:
            self._stop(app)
            steps.append("stopped")
        if app in removed:
            return True, f"{app}: removed (no program file any more)"
        state = self._start(app)
        steps.append(state)
        return state == "RUNNING", f"{app}: " + ", ".join(steps).lower()


def restart_program(socket_path: str, run_command: CommandRunner, app: str) -> tuple[bool, str]:
    """Restart ``app`` through supervisord's socket, or with supervisorctl when it cannot be used."""
    try:
        rpc = SupervisorRPC(socket_path)
    except SupervisorUnreachable:
        return restart_supervisord(run_command, app)
    try:
        return rpc.restart(app)
    except (OSError, TimeoutError, RpcError) as exc:
        return False, f"{app}: {exc}"


ARGUMENT_SPEC: dict[str, Any] = {
    "base_dir": {"type": "path", "required": True},
    "version": {"type": "str", "required": True},
    "previous": {"type": "str"},
    "keep_releases": {"type": "int", "default": 0},
    "program_file": {"type": "path"},
    # no_log: the application's environment is in it (database passwords, API tokens).
    "program_content": {"type": "str", "no_log": True},
    "environment_file": {"type": "path"},
    "environment_content": {"type": "str", "no_log": True},
    "restart_app": {"type": "str", "default": ""},
    "supervisor": {"type": "str", "choices": ["supervisord", "systemd"], "default": "supervisord"},
    "supervisor_socket": {"type": "path", "default": "/var/run/supervisor.sock"},
    "run_user": {"type": "str"},
    "run_group": {"type": "str"},
}


def run_in_c_locale(argv: list[str]) -> tuple[int, str, str]:
    """Run a command in the C locale, so its output can be read."""
    import subprocess  # here: only systemd, or supervisord without its socket, needs it

    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
    except OSError as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def execute(params: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    """The whole task on validated parameters: the result, with ``failed`` and ``msg`` when it failed."""
    try:
        result = run(params, check_mode=check_mode)
    except (SwitchError, OSError) as exc:
        return {"failed": True, "msg": f"cannot switch {params['base_dir']}/current: {exc}"}
    if not check_mode:
        # The links as they now are, as the node's facts (also when the restart below fails).
        result["ansible_facts"] = {
            "deployer_release_current": result["current"],
            "deployer_release_previous": result["previous"],
        }
    app = params["restart_app"]
    if app and not check_mode:
        started = time.monotonic()
        if params["supervisor"] == "systemd":
            ok, output = restart_systemd(run_in_c_locale, app, reload=result["program_changed"])
        else:
            ok, output = restart_program(params["supervisor_socket"], run_in_c_locale, app)
        result.update(
            changed=True, restart_output=output, restart_seconds=round(time.monotonic() - started, 3)
        )
        if not ok:
            result.update(failed=True, msg=f"{params['supervisor']} did not (re)start {app}: {output}")
    return result


def main() -> None:
    # Imported here: the deployer_release action plugin runs execute() on a bare interpreter.
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = execute(module.params, check_mode=module.check_mode)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
