"""What makes a lab look like production (`lab up --topology production`).

- A deploy user: deployer connects as ``deploy``, not root. Each host has private copies of
  ``/etc/passwd``, ``/etc/group`` and ``/etc/shadow`` (bind-mounted over the machine's, which the
  lab never changes) with that user in them, and a home holding the usual shell start-up files.
- sudo limited to what deployer needs: on the application nodes ``deploy`` may become root (and
  nobody else) without a password, for the release directories and the supervisor; on the
  load-balancer host it has no sudo at all, only the ``haproxy`` group that may use HAProxy's
  runtime socket.
- The load balancer on a host of its own (``lb1``): HAProxy runs in that host's namespace, its
  runtime socket in that host's private ``/run``, so only that host reaches it.
- Nodes cannot read the controller's artefact store directory: they pull over HTTP only.
- The environment's deployment lock on the load-balancer host, in deployer's default directory
  (``/var/lib/deployer/locks``, the lab's own, owned by the deploy user), where every controller
  of the lab meets.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..config import DEFAULT_LOCK_DIR

__all__ = [
    "DEPLOY_HOME", "DEPLOY_USER", "LB_CONFIG_DIR", "LB_HOST", "LB_LOCK_DIR", "LB_SOCKET",
    "ProductionHosts",
]

DEPLOY_USER = "deploy"
# Ids nothing on a Debian machine uses by default (system ids end at 999, users start at 1000).
_DEPLOY_UID = 2990
_HAPROXY_GID_FALLBACK = 2991
LB_HOST = "lb1"
# Where HAProxy's runtime socket lives on the load-balancer host (its private /run).
LB_SOCKET = "/run/haproxy/admin.sock"
# HAProxy's configuration directory on the load-balancer host.
LB_CONFIG_DIR = "/etc/haproxy"
# The deploy user's home inside every host (each host's own directory is mounted there).
DEPLOY_HOME = f"/home/{DEPLOY_USER}"
# Where the load-balancer host keeps deployment locks (deployer's default lock.dir).
LB_LOCK_DIR = DEFAULT_LOCK_DIR


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


@dataclass(frozen=True)
class ProductionHosts:
    """Files of the production-like topology, kept in ``<lab>/production``."""

    lab_dir: Path

    @property
    def root(self) -> Path:
        return self.lab_dir / "production"

    def haproxy_gid(self) -> int:
        for line in _lines(Path("/etc/group")):
            parts = line.split(":")
            if len(parts) >= 3 and parts[0] == "haproxy" and parts[2].isdigit():
                return int(parts[2])
        return _HAPROXY_GID_FALLBACK

    def home(self, host: str) -> Path:
        return self.lab_dir / "nodes" / host / "home-deploy"

    def lock_dir(self, host: str) -> Path:
        """The host directory that is ``LB_LOCK_DIR`` inside ``host``."""
        return self.root / host / "locks"

    def prepare(
        self, host: str, *, address: str, lb_host: bool, authorized_keys: Path
    ) -> list[tuple[Path, str]]:
        """Write ``host``'s user database, sudo rules and the deploy user's home (its shell
        start-up files and SSH key); return the bind mounts (host path, path inside the host)
        that put them in place."""
        files = self.root / host
        files.mkdir(parents=True, exist_ok=True)
        home = self.home(host)
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        shutil.copy(authorized_keys, home / ".ssh" / "authorized_keys")
        os.chmod(home / ".ssh", 0o700)
        os.chmod(home / ".ssh" / "authorized_keys", 0o600)
        for name in (".bashrc", ".profile", ".bash_logout"):
            skel = Path("/etc/skel") / name
            if skel.is_file() and not (home / name).exists():
                shutil.copy(skel, home / name)
        gid = self.haproxy_gid()
        passwd = [ln for ln in _lines(Path("/etc/passwd")) if not ln.startswith(f"{DEPLOY_USER}:")]
        passwd.append(f"{DEPLOY_USER}:x:{_DEPLOY_UID}:{_DEPLOY_UID}:deployer:{DEPLOY_HOME}:/bin/bash")
        group = [ln for ln in _lines(Path("/etc/group")) if not ln.startswith(f"{DEPLOY_USER}:")]
        group.append(f"{DEPLOY_USER}:x:{_DEPLOY_UID}:")
        if lb_host:
            # The runtime socket is group haproxy: the deploy user reads and drives it without sudo.
            if not any(ln.startswith("haproxy:") for ln in group):
                group.append(f"haproxy:x:{gid}:")
            group = [
                f"{ln}{',' if not ln.endswith(':') else ''}{DEPLOY_USER}" if ln.startswith("haproxy:") else ln
                for ln in group
            ]
        # "*": no password, yet not locked, so key logins work (sshd refuses locked accounts).
        shadow = [ln for ln in _lines(Path("/etc/shadow")) if not ln.startswith(f"{DEPLOY_USER}:")]
        shadow.append(f"{DEPLOY_USER}:*:20000:0:99999:7:::")
        # The host knows its own name (sudo looks it up), as a VM's /etc/hosts would say.
        hosts = [*_lines(Path("/etc/hosts")), f"{address} {host}"]
        for name, lines, mode in (("passwd", passwd, 0o644), ("group", group, 0o644),
                                  ("shadow", shadow, 0o640), ("hosts", hosts, 0o644)):
            path = files / name
            path.write_text("\n".join(lines) + "\n")
            os.chmod(path, mode)
        sudoers = files / "sudoers.d"
        sudoers.mkdir(exist_ok=True)
        rule = sudoers / DEPLOY_USER
        if lb_host:
            rule.unlink(missing_ok=True)  # no sudo on the load-balancer host
        else:
            rule.write_text(
                "# deployer's deploy user: become root (only root), no password, no tty. Ansible's\n"
                "# become runs its modules through a shell, so the command cannot be narrowed.\n"
                f"{DEPLOY_USER} ALL=(root) NOPASSWD: ALL\n"
                f"Defaults:{DEPLOY_USER} !requiretty\n"
            )
            os.chmod(rule, 0o440)
        os.chmod(home, 0o755)
        for path in [home, *home.rglob("*")]:
            os.chown(path, _DEPLOY_UID, _DEPLOY_UID)
        binds = [
            (home, DEPLOY_HOME),
            (files / "passwd", "/etc/passwd"),
            (files / "group", "/etc/group"),
            (files / "shadow", "/etc/shadow"),
            (files / "hosts", "/etc/hosts"),
        ]
        if Path("/etc/sudoers.d").is_dir():
            binds.append((sudoers, "/etc/sudoers.d"))
        if lb_host:
            # The deployment locks: the deploy user's to write, without sudo.
            locks = self.lock_dir(host)
            locks.mkdir(exist_ok=True)
            os.chmod(locks, 0o755)
            os.chown(locks, _DEPLOY_UID, _DEPLOY_UID)
            binds.append((locks, LB_LOCK_DIR))
        # The controller's store directory is not the nodes' to read: they pull over HTTP.
        empty = self.root / "empty"
        empty.mkdir(exist_ok=True)
        binds.append((empty, str(self.lab_dir / "store")))
        return binds
