"""SSH connection sharing for playbook runs (and the controller's own calls to the load
balancer's and the lock's host): where the control sockets live, and closing them.

Ansible keeps one SSH master connection per node (``ControlMaster``/``ControlPersist``) so that
the batches of a deployment do not pay for a new handshake per task. Those masters belong to one
deployer process: their sockets live in a directory of their own under the state directory
(``<state_dir>/ssh/<run>/``, private to the user running deployer), and :meth:`SshMasters.close`
asks each master to exit when the command ends, so no master outlives the deployment (nor a host
key that changed since).

Asking through the sockets is not enough when a run was cancelled (Ctrl-C while pre-staging):
ansible-runner kills the run's process group while ssh may be between creating its socket
(under a temporary ``.XXXX`` name, then linked into place) and detaching into a master of its
own session, so a master can appear after the sockets were listed, or listen on a socket the
run directory's removal has unlinked; either would live on for ``ControlPersist``. So after the
directory is gone, :meth:`SshMasters.close` also ends every ssh process of this user whose
command line names the run's directory (only this run's: the directory is unique to it).

A unix socket path must fit in 107 bytes. When the state directory's path is too long for that,
the sockets go to ``/tmp/deployer-<uid>/<hash of the state dir>/<run>/`` instead (0700).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from .._errors import PrerequisiteError
from .process import processes_naming

__all__ = [
    "MAX_SOCKET_PATH",
    "SSH_PERSIST_ARGS",
    "SshMasters",
    "auth_hint",
    "control_root",
    "end_ssh_processes",
    "host_key_hint",
    "is_auth_failure",
    "is_host_key_failure",
    "known_hosts_file",
    "ssh_processes",
    "ssh_reason",
]

# sun_path holds 108 bytes including the final NUL.
MAX_SOCKET_PATH = 107
# Room a socket needs below its run directory: "/" + Ansible's 10-character name, plus the
# ".<16 random characters>" suffix ssh adds while it creates the socket.
_SOCKET_NAME_ROOM = 1 + 10 + 17
# The run directory's own name ("/" + mkdtemp's 8 characters).
_RUN_DIR_ROOM = 1 + 8
# A persistent master per node, opened by the first task and reused by every later one. These
# come after the inventory's own ssh arguments, so an inventory that sets ControlMaster,
# ControlPersist or ControlPath itself is obeyed (ssh takes the first value it is given).
# A master whose node stops answering (its network cut, its VM lost) would otherwise hold every
# command sent through it until TCP gives up, a quarter of an hour later: keepalives end it
# after 15 s, and the command fails as unreachable.
SSH_PERSIST_ARGS = ("-C -o ControlMaster=auto -o ControlPersist=300s "
                    "-o ServerAliveInterval=5 -o ServerAliveCountMax=3")


def _fits(root: Path) -> bool:
    return len(os.fsencode(str(root))) + _RUN_DIR_ROOM + _SOCKET_NAME_ROOM <= MAX_SOCKET_PATH


def _private_dir(path: Path) -> Path:
    """Create ``path`` (0700) or check that an existing one is ours and private."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PrerequisiteError(
            f"{path} is not a directory owned by this user; refusing to keep SSH control "
            "sockets there",
            hint=f"remove {path} (or set state_dir to another directory) and run again",
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def control_root(state_dir: Path, *, tmp: Path | None = None) -> Path:
    """The directory under which each run keeps its SSH control sockets, for ``state_dir``:
    ``<state_dir>/ssh`` when its path is short enough for a unix socket, else a short hashed
    directory under the system's temporary directory, per user."""
    state_dir = Path(os.path.abspath(state_dir))
    preferred = state_dir / "ssh"
    if _fits(preferred):
        return preferred
    digest = hashlib.sha256(os.fsencode(str(state_dir))).hexdigest()[:12]
    base = Path(tmp or tempfile.gettempdir()) / f"deployer-{os.geteuid()}"
    fallback = base / digest
    if not _fits(fallback):  # a temporary directory with a very long path
        fallback = Path("/tmp") / f"deployer-{os.geteuid()}" / digest
    return fallback


class SshMasters:
    """The SSH control sockets of one deployer run: created on first use, closed at the end."""

    def __init__(self, state_dir: Path, *, tmp: Path | None = None) -> None:
        self.root = control_root(state_dir, tmp=tmp)
        # The per-user directory under the temporary directory, when the state dir's is too long.
        self._shared_base = None if self.root.name == "ssh" else self.root.parent
        self._dir: Path | None = None
        # Runs may start side by side (a rollout's run while the nodes are pre-staged): one
        # directory for all of them, or close() would miss the masters of the others.
        self._creating = threading.Lock()

    @property
    def directory(self) -> Path:
        """This run's own directory (created, 0700, on first use)."""
        with self._creating:
            if self._dir is None:
                if self._shared_base is not None:
                    _private_dir(self._shared_base)
                _private_dir(self.root)
                self._dir = Path(tempfile.mkdtemp(prefix="", dir=self.root))
            return self._dir

    @property
    def opened(self) -> bool:
        return self._dir is not None

    def control_path(self, key: str) -> str:
        """The control socket for the controller's own connection named by ``key`` (e.g. to
        the load balancer's host), in this run's directory: ``c`` and 9 hex digits, as short as
        Ansible's names, so that it fits a unix socket's path."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:9]
        return str(self.directory / f"c{digest}")

    def sockets(self) -> list[Path]:
        if self._dir is None or not self._dir.is_dir():
            return []
        return sorted(p for p in self._dir.iterdir() if p.is_socket())

    def close(self) -> None:
        """Ask every master of this run to exit, then remove the run's directory."""
        if self._dir is None:
            return
        # Every master asked at once (each answer is a round trip through its socket); one that
        # does not answer dies with its ControlPersist timeout, or below.
        asked: list[subprocess.Popen[bytes]] = []
        for sock in self.sockets():
            with contextlib.suppress(OSError):
                asked.append(subprocess.Popen(
                    ["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "deployer-master"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
        deadline = time.monotonic() + 10
        for proc in asked:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        run_dir, self._dir = self._dir, None
        # Removed first: a master still setting up cannot bind its socket there any more (ssh
        # then gives up), so the processes ended below are all there will be.
        shutil.rmtree(run_dir, ignore_errors=True)
        end_ssh_processes(run_dir)


# How long close() keeps looking for ssh processes of a run (a master forks as it detaches).
_END_WAIT = 2.0
_END_POLL = 0.05


def ssh_processes(directory: Path, *, proc: Path = Path("/proc")) -> list[int]:
    """PIDs of this user's ssh processes whose command line names ``directory``: clients given
    a ControlPath in it (``-o ControlPath=<dir>/...``) and masters (``ssh: <dir>/... [mux]``)."""
    return [pid for pid, comm, cmdline in processes_naming(os.fsencode(f"{directory}/"), proc=proc)
            if comm == b"ssh" or cmdline.startswith(b"ssh")]


def end_ssh_processes(directory: Path, *, wait: float = _END_WAIT) -> list[int]:
    """End (SIGTERM) every ssh process of this user naming ``directory``, until none is seen
    for a moment (a master forks as it detaches: the child is caught by the next look).
    Returns the PIDs signalled. When the first look finds none, there is no process left to
    fork one (nothing starts a new ssh naming the directory once it is removed): done."""
    ended: list[int] = []
    deadline = time.monotonic() + wait
    quiet_looks = 0
    while time.monotonic() < deadline and quiet_looks < 3:
        pids = [p for p in ssh_processes(directory) if p not in ended]
        if not pids and not ended:
            break
        quiet_looks = 0 if pids else quiet_looks + 1
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
                ended.append(pid)
        time.sleep(_END_POLL)
    return ended


# -- why ssh failed -------------------------------------------------------------------------------

# What Ansible puts before ssh's own words when it cannot reach a host (on one line or several).
_ANSIBLE_PREFIX = re.compile(
    r'^(?:Task failed:\s*)?(?:Data could not be sent to remote host "[^"]*"\.\s*)?'
    r"(?:Make sure this host can be reached over ssh:\s*)?(?:Failed to connect to the host via ssh:\s*)?"
)
# Lines in which ssh says why it gave up (it prints the fatal one last).
_SSH_FAILURES = (
    "permission denied", "host key verification failed", "too many authentication failures",
    "connection refused", "connection timed out", "operation timed out", "no route to host",
    "network is unreachable", "could not resolve hostname", "connection closed by",
    "connection reset by", "kex_exchange_identification", "load key", "bad owner or permissions",
    "identity file", "remote host identification has changed", "host key is known",
)


def ssh_reason(message: str) -> str:
    """SSH's own reason in the message of an unreachable host, without what Ansible wraps
    around it ("Task failed: Data could not be sent to remote host ... Make sure this host
    can be reached over ssh:"): the last line in which ssh says why it gave up, else the last
    line that is not one of its warnings or banners."""
    lines = [_ANSIBLE_PREFIX.sub("", ln.strip()).strip() for ln in message.splitlines()]
    lines = [ln for ln in lines if ln]
    for line in reversed(lines):
        if any(marker in line.lower() for marker in _SSH_FAILURES):
            return line
    for line in reversed(lines):
        if not line.startswith(("Warning:", "@")):
            return line
    if lines:
        return lines[-1]
    said = [ln.strip() for ln in message.splitlines() if ln.strip()]  # Ansible's words alone
    return said[-1] if said else ""


def is_auth_failure(reason: str) -> bool:
    """Whether the node refused the user's credentials (a wrong or missing key)."""
    text = reason.lower()
    return "permission denied (" in text or "too many authentication failures" in text


def auth_hint(
    address: str, port: int | None, user: str | None, private_key: str | None, *, reason: str = ""
) -> str:
    """How to find out why a node refused the SSH key, for an error message (with ssh's words
    from ``reason``, e.g. "Permission denied (publickey)")."""
    who = f"{user}@{address}" if user else address
    said = re.search(r"(permission denied \([^)]*\)|too many authentication failures)", reason, re.I)
    port_flag = f"-p {port} " if port is not None and port != 22 else ""
    if private_key:
        key = f"the inventory's ansible_ssh_private_key_file ({private_key})"
        try_it = f"ssh -i {private_key} {port_flag}{who} true"
    else:
        key = ("the inventory's ansible_ssh_private_key_file (not set: ssh offers this user's "
               "default keys and its agent's)")
        try_it = f"ssh {port_flag}{who} true"
    return (
        f"the node refused the SSH key{f' ({said.group(1)})' if said else ''}: check {key} and "
        f"that its public key is in the authorized_keys of {who}; try it with '{try_it}'"
    )


# -- host keys ----------------------------------------------------------------------------------

_HOST_KEY_FAILURES = (
    "host key verification failed",
    "remote host identification has changed",
    "no ecdsa host key is known",
    "no ed25519 host key is known",
    "no rsa host key is known",
    "host key for",
)


def is_host_key_failure(reason: str) -> bool:
    text = reason.lower()
    return any(marker in text for marker in _HOST_KEY_FAILURES)


def _ssh_option(args: str, name: str) -> str | None:
    """The first value of ``-o Name=value`` (or ``-oName value``) in ssh arguments."""
    try:
        words = shlex.split(args)
    except ValueError:
        return None
    for i, word in enumerate(words):
        opt = word[2:] if word.startswith("-o") and len(word) > 2 else None
        if word == "-o" and i + 1 < len(words):
            opt = words[i + 1]
        if opt is None:
            continue
        key, _, value = opt.replace(" ", "=", 1).partition("=")
        if key.strip().lower() == name.lower():
            return value.strip().strip('"')
    return None


def known_hosts_file(host_vars: Mapping[str, object]) -> str | None:
    """The known_hosts file the inventory points ssh at (UserKnownHostsFile), if it does."""
    for var in ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args"):
        value = host_vars.get(var)
        if isinstance(value, str):
            found = _ssh_option(value, "UserKnownHostsFile")
            if found:
                return found.split()[0]
    return None


def host_key_hint(address: str, port: int | None, known_hosts: str | None) -> str:
    """How to record a node's host key, for an error message."""
    target = known_hosts or "~/.ssh/known_hosts"
    custom_port = port is not None and port != 22
    port_flag = f"-p {port} " if custom_port else ""
    entry = f"[{address}]:{port}" if custom_port else address
    return (
        f"the node's SSH host key is not in {target} (or it changed): check its fingerprint "
        f"out of band, then record it with 'ssh-keyscan {port_flag}{address} >> {target}' "
        f"(a changed key: first remove the old one with 'ssh-keygen -R {entry} -f {target}')"
    )
