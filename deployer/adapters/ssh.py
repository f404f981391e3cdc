"""Run one command on a host over SSH the way the inventory says Ansible connects to it.

For the few reads the controller makes itself on a host that is not a node (the load balancer's
runtime API); everything else goes through Ansible.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SshTarget"]


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
        argv += [*self.ssh_args, self.address, shlex.join(command)]
        return argv
