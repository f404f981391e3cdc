"""Run short commands on a host over SSH with paramiko, connecting as the inventory says Ansible
does (address, port, user, key, become) and trusting only the host keys the inventory's
known_hosts file (its ``UserKnownHostsFile``, else ``~/.ssh/known_hosts``) holds: an unknown or
changed key is refused, never recorded.

For the few things the controller does on a host itself in a game day (a fault file written, a
filesystem mounted, a socket moved); deployments go through Ansible.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .._errors import DeployerError
from .ssh import SshTarget
from .ssh_masters import known_hosts_file

__all__ = ["RemoteResult", "RemoteShell"]


@dataclass(frozen=True)
class RemoteResult:
    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


class RemoteShell:
    """One SSH connection to ``target``, opened on first use; ``close`` ends it."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self._client: object | None = None

    @property
    def known_hosts(self) -> Path:
        found = known_hosts_file({"ansible_ssh_common_args": shlex.join(self.target.ssh_args)})
        return Path(os.path.expanduser(found or "~/.ssh/known_hosts"))

    def _connect(self) -> object:
        import paramiko

        if self._client is not None:
            return self._client
        target = self.target
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        where = f"{target.user + '@' if target.user else ''}{target.address}:{target.port or 22}"
        try:
            client.load_host_keys(str(self.known_hosts))
        except OSError as exc:
            raise DeployerError(f"{target.host}: cannot read the known hosts file "
                                   f"{self.known_hosts}: {exc.strerror}") from None
        try:
            client.connect(
                target.address, port=target.port or 22, username=target.user or None,
                key_filename=target.private_key or None, timeout=target.connect_timeout,
                banner_timeout=target.connect_timeout, auth_timeout=target.connect_timeout,
                allow_agent=target.private_key is None, look_for_keys=target.private_key is None,
            )
        except paramiko.BadHostKeyException:
            raise DeployerError(
                f"{target.host} ({where}): its SSH host key is not the one in {self.known_hosts}",
                hint="check its fingerprint out of band, then record it in that file") from None
        except paramiko.SSHException as exc:
            # RejectPolicy: a host whose key the file does not hold at all.
            raise DeployerError(f"{target.host} ({where}): {exc}",
                                   hint=f"the host key must be in {self.known_hosts}") from None
        except (TimeoutError, OSError) as exc:
            raise DeployerError(f"{target.host} ({where}): cannot connect: {exc}") from None
        self._client = client
        return client

    def run(self, command: str, *, stdin: str | None = None, timeout: float = 30.0) -> RemoteResult:
        """Run ``command`` (a shell command line) on the host, as root through sudo when the
        inventory says Ansible becomes root there."""
        import paramiko

        client = self._connect()
        assert isinstance(client, paramiko.SSHClient)
        if self.target.become_user:
            command = shlex.join(["sudo", "-n", "-u", self.target.become_user, "--",
                                  "/bin/sh", "-c", command])
        try:
            channel_in, channel_out, channel_err = client.exec_command(command, timeout=timeout)
            if stdin is not None:
                channel_in.write(stdin)
            channel_in.channel.shutdown_write()
            out = channel_out.read().decode(errors="replace")
            err = channel_err.read().decode(errors="replace")
            status = channel_out.channel.recv_exit_status()
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            self.close()
            raise DeployerError(f"{self.target.host}: `{command}` failed: {exc}") from None
        return RemoteResult(status, out, err)

    def close(self) -> None:
        client, self._client = self._client, None
        close = getattr(client, "close", None)
        if callable(close):
            close()
