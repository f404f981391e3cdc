"""Run one command on a host over SSH the way the inventory says Ansible connects to it.

For the few calls the controller makes itself on a host that is not a node (the load balancer's
runtime API, the deployment lock); everything else goes through Ansible. A deployment makes
such a call at every safe point, so a target given a ``control_path`` shares one connection
between them (``ControlMaster``/``ControlPersist``, its socket in the deployment's own SSH
directory, closed with the playbook runs' masters when the command ends: see
:class:`~deployer.adapters.ssh_masters.SshMasters`): each call then costs a round trip, not a
new SSH handshake.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CONTROL_PERSIST", "SshTarget"]

# How long a shared connection outlives its last call (the command closes it before that).
CONTROL_PERSIST = "300s"


@dataclass(frozen=True)
class SshTarget:
    """How to run a command on a host over SSH, as the inventory says Ansible connects to it."""

    host: str  # the name in the config (and the inventory)
    address: str
    port: int | None = None
    user: str | None = None
    private_key: str | None = None
    ssh_args: tuple[str, ...] = ()
    python: str = "python3"
    become_user: str | None = None  # run as this user through sudo (ansible_become)
    ssh: str = "ssh"
    connect_timeout: int = 10
    # Ansible runs this host's tasks on this machine: run the command here, without SSH.
    local: bool = False
    # A control socket to share one connection between calls (None: a connection per call).
    control_path: str | None = None

    def argv(self, remote: Sequence[str]) -> list[str]:
        """The argv that runs ``remote`` (a command and its arguments) on the host."""
        command = list(remote)
        if self.become_user:
            command = ["sudo", "-n", "-u", self.become_user, "--", *command]
        if self.local:
            return command
        argv = [self.ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        if self.private_key:
            argv += ["-i", self.private_key]
        argv += list(self.ssh_args)
        if self.control_path:
            # After the inventory's arguments: ssh keeps the first value of an option, so an
            # inventory that sets its own connection sharing is obeyed.
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPersist={CONTROL_PERSIST}",
                     "-o", f"ControlPath={self.control_path}"]
        argv += [self.address, shlex.join(command)]
        return argv

    def connection_key(self) -> str:
        """What makes two targets one connection (a control socket's name is made from it)."""
        return f"{self.user or ''}@{self.address}:{self.port or ''}:{self.private_key or ''}:{self.ssh}"
