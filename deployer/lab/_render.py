"""The text of every file the lab writes: node init script, sshd, HAProxy and nginx configs,
the Ansible inventory, the deployer configuration and the supervisord program file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._spec import LabSpec

__all__ = [
    "NodeLayout",
    "cgroup_launcher_script",
    "deployer_config",
    "haproxy_config",
    "inventory",
    "legs_map",
    "nginx_config",
    "node_init_script",
    "path_env_sections",
    "program_file",
    "prometheus_config",
    "sshd_config",
]


# The account the lab's application runs as (see inventory()).
LAB_RUN_AS = {"deployer_run_user": "nobody", "deployer_run_group": "nogroup", "deployer_create_user": False}


@dataclass(frozen=True)
class NodeLayout:
    """Where one node's private directories live on the host, and where they appear inside."""

    name: str
    address: str
    ssh_port: int
    root: Path  # <lab>/nodes/<name>

    def binds(self, app: str) -> list[tuple[Path, str]]:
        """(host directory, path inside the node) for each private bind mount."""
        return [
            (self.root / "opt", f"/opt/{app}"),
            (self.root / "etc", f"/etc/{app}"),
            (self.root / "log", f"/var/log/{app}"),
            (self.root / "supervisor-conf.d", "/etc/supervisor/conf.d"),
            (self.root / "supervisor-log", "/var/log/supervisor"),
        ]

    def masked_files(self) -> list[tuple[Path, str]]:
        """(empty host file, path inside the node) hiding the controller's shell start-up files,
        which would otherwise run on every SSH command (like a fresh VM, a node has none).
        /root itself stays visible: the lab directory may live under it."""
        return [
            (self.root / "empty-dotfile", path)
            for path in ("/root/.bashrc", "/root/.profile")
            if Path(path).is_file()
        ]

    @property
    def sshd_config(self) -> Path:
        return self.root / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"


def cgroup_launcher_script() -> str:
    """Moves itself into a cgroup, then becomes the command: the command and everything it
    starts belong to that cgroup from their first instruction."""
    return """#!/bin/sh
# Usage: in-cgroup CGROUP_PROCS_FILE COMMAND [ARG]...
set -eu
echo "$$" > "$1"
shift
exec "$@"
"""


def node_init_script() -> str:
    """Runs as the first process of a fresh mount + UTS namespace, then becomes sshd.

    Arguments: node name, sshd config, then pairs of (host directory, mount point)."""
    return """#!/bin/sh
# Turns a fresh mount + UTS namespace into a lab node, then becomes its sshd.
# Usage: node-init NAME SSHD_CONFIG [HOST_DIR MOUNT_POINT]...
set -eu
name=$1; sshd_config=$2; shift 2
hostname "$name"
# A private /run: supervisord's socket and pidfile, sshd's privilege separation directory.
mount -t tmpfs -o mode=0755,size=16m "lab-$name-run" /run
mkdir -p /run/sshd /run/lock
while [ "$#" -ge 2 ]; do
    mount --bind "$1" "$2"
    shift 2
done
exec /usr/sbin/sshd -D -e -f "$sshd_config"
"""


def sshd_config(node: NodeLayout, *, authorized_keys: Path, user_keys: bool = False) -> str:
    return f"""# sshd of lab node {node.name}
ListenAddress {node.address}:{node.ssh_port}
HostKey {node.host_key}
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile {authorized_keys}{" .ssh/authorized_keys" if user_keys else ""}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
PrintMotd no
# Many parallel Ansible connections (forks) on many nodes at once.
MaxStartups 512:30:1024
MaxSessions 256
LoginGraceTime 30
ClientAliveInterval 30
LogLevel ERROR
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
"""


def legs_map(spec: LabSpec) -> str:
    """The HAProxy map naming the live leg's backend (and the preview's): one runtime-API
    command (`set map FILE live BACKEND`) moves all live traffic at once."""
    return f"live {spec.backend('blue')}\npreview {spec.backend('green')}\n"


def haproxy_config(
    spec: LabSpec, nodes: list[NodeLayout], *, admin_socket: Path | str, legs_map_path: Path | str,
    socket_access: str = "mode 600",
) -> str:
    host, port = spec.frontend_address
    metrics_host, metrics_port = spec.metrics_address

    def backend(name: str, members: list[NodeLayout]) -> str:
        servers = "\n".join(f"    server {n.name} {n.address}:{spec.app_port}" for n in members)
        return f"""
backend {name}
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server check inter 500ms fastinter 100ms downinter 500ms rise 1 fall 2
{servers}
"""

    if spec.legs:
        blue, green = nodes[: spec.nodes], nodes[spec.nodes :]
        preview_host, preview_port = spec.preview_address
        routing = f"""frontend {spec.app}_front
    bind {host}:{port}
    use_backend %[str(live),map({legs_map_path},{spec.backend("blue")})]

# The idle leg, for smoke tests before it takes live traffic.
frontend {spec.app}_preview
    bind {preview_host}:{preview_port}
    use_backend %[str(preview),map({legs_map_path},{spec.backend("green")})]
"""
        backends = backend(spec.backend("blue"), blue) + backend(spec.backend("green"), green)
    else:
        routing = f"""frontend {spec.app}_front
    bind {host}:{port}
    default_backend {spec.app}
"""
        backends = backend(spec.app, nodes)
    return f"""# HAProxy in front of the lab nodes. Strict on purpose: no retries and no redispatch,
# so a request cut by a careless restart shows up as an error.
global
    maxconn 4096
    stats socket {admin_socket} {socket_access} level admin expose-fd listeners
    stats timeout 30s

defaults
    mode http
    retries 0
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s

{routing}
# HAProxy's own counters for Prometheus (and anyone else) to read.
frontend metrics
    bind {metrics_host}:{metrics_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    no log
{backends}"""


def prometheus_config(spec: LabSpec) -> str:
    """Prometheus scraping HAProxy's exporter every second (the lab's soaks are short)."""
    host, port = spec.metrics_address
    return f"""# Prometheus of the local lab, written by `deployer lab up --prometheus`.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: haproxy
    static_configs:
      - targets: ["{host}:{port}"]
"""


def nginx_config(spec: LabSpec, *, store_dir: Path, work_dir: Path) -> str:
    host, port = spec.store_address
    tmp = work_dir / "tmp"
    return f"""# Serves the lab's artefact store read-only over HTTP.
daemon off;
master_process on;
worker_processes 1;
user root;
pid {work_dir / "nginx.pid"};
error_log {work_dir / "error.log"} warn;
events {{ worker_connections 512; }}
http {{
    access_log {work_dir / "access.log"};
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{
        application/json json;
        application/gzip gz;
        text/plain minisig pub txt;
    }}
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen {host}:{port};
        root {store_dir};
        autoindex on;
    }}
}}
"""


def inventory(
    spec: LabSpec, nodes: list[NodeLayout], *, private_key: Path, known_hosts: Path,
    lb_host: NodeLayout | None = None, deploy_user: str = "root",
) -> str:
    def hosts(members: list[NodeLayout]) -> dict[str, Any]:
        return {
            n.name: {
                "ansible_host": n.address,
                "ansible_port": n.ssh_port,
                "deployer_app_host": n.address,
                "deployer_lb_server": n.name,
            }
            for n in members
        }

    connection = {
        "ansible_user": deploy_user,
        "ansible_ssh_private_key_file": str(private_key),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_pipelining": True,
    }
    group: dict[str, Any] = {
        "vars": {
            "ansible_user": deploy_user,
            **({"ansible_become": True} if deploy_user != "root" else {}),
            "ansible_ssh_private_key_file": str(private_key),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
            ),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_pipelining": True,
            # The app runs unprivileged. Nodes share the host's /etc/passwd, so the role must
            # not create a user: the lab uses nobody, its state under /opt/<app>.
            **LAB_RUN_AS,
            "deployer_state_dir": f"/opt/{spec.app}/state",
        },
    }
    if spec.legs:
        group["children"] = {
            spec.leg_group("blue"): {"hosts": hosts(nodes[: spec.nodes])},
            spec.leg_group("green"): {"hosts": hosts(nodes[spec.nodes :])},
        }
    else:
        group["hosts"] = hosts(nodes)
    children: dict[str, Any] = {spec.group: group}
    if lb_host is not None:
        # The load balancer's own host: reached as the deploy user, no become (no sudo there).
        children["lb"] = {"hosts": {lb_host.name: {"ansible_host": lb_host.address,
                                                   "ansible_port": lb_host.ssh_port,
                                                   **connection}}}
    data = {"all": {"children": children}}
    header = "# The local lab fleet, written by `deployer lab up`.\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def deployer_config(
    spec: LabSpec, *, inventory_path: Path, store_url: str, trusted_key: Path,
    haproxy_socket: Path | str, legs_map_path: Path | str, lb_host: str | None = None,
    lock_dir: str | None = None, pointer_path: Path = Path("pointer/lab.json"),
) -> str:
    data = {
        "state_dir": "state",
        "environments": {
            spec.env: {
                "inventory": str(inventory_path),
                "group": spec.group,
                "app": {
                    "name": spec.app,
                    "entry_point": "bin/run",
                    "port": spec.app_port,
                    "supervisor": "supervisord",
                    # The sample service is healthy within a second of starting: a short
                    # deadline makes a bad release fail (and be reverted) quickly. The
                    # controller reaches the nodes' loopback addresses, so it runs the check
                    # itself, like the load balancer sees the node.
                    "health": {"path": "/health", "deadline": 10, "interval": 0.05,
                               "run_from": "controller"},
                },
                "store": {"url": store_url},
                "trusted_keys": [str(trusted_key)],
                "load_balancer": {
                    "kind": "haproxy",
                    "socket": str(haproxy_socket),
                    "backend": spec.app,
                    "host": "localhost",
                    "drain_timeout": 30,
                },
                "strategy": {"batch_size": "1", "min_healthy": "1", "on_failure": "rollback"},
                # The deployment lock, on the load balancer's host: every controller using
                # this lab meets there (its default directory; the plain lab's is its own).
                "lock": {"at": "load_balancer", **({"dir": lock_dir} if lock_dir else {})},
                # What the environment's runner (`deployer agent`) deploys, written with
                # `deployer pointer set`; its status is published beside it.
                "pointer": {"kind": "file", "path": str(pointer_path)},
                "agent": {"interval": 5, "jitter": 0.2},
                # A lab is where failures are rehearsed: game days may inject faults here,
                # deploying the sample service's two good releases back and forth.
                "gameday": {
                    "allowed": True,
                    "releases": ["1.0.0", "1.1.0"],
                    "load_url": "http://{}:{}/".format(*spec.frontend_address),
                    "store_dir": "store",
                },
            }
        },
    }
    lab: dict[str, Any] = data["environments"][spec.env]  # type: ignore[index]
    if lb_host is not None:
        # Production-like: the runtime API only on the load balancer's host, read over SSH; the
        # smoke check runs on each node itself.
        lab["load_balancer"].update(host=lb_host, connect="ssh")
        lab["app"]["health"]["run_from"] = "node"
    if spec.soak > 0:
        # Catches the sample service's 1.3.0-errors (healthy, then 500 on `/` a few seconds
        # after it starts), with or without other traffic: the further smoke test through the
        # frontend is traffic of its own. A quiet lab has no other data: that passes.
        lab["analysis"] = {
            "when": "after_canary",
            "target_url": "http://{}:{}".format(*spec.frontend_address),
            "duration": spec.soak,
            "interval": 1,
            "window": 5,
            "failure_limit": 2,
            "min_samples": 10,
            "no_data": "pass",
            "rules": [{"indicator": "http_5xx_share", "max": "1%"}],
            "smoke": {"interval": 1, "failure_limit": 1,
                      "http": [{"url": "{target_url}/", "expect_status": 200}]},
        }
    if not spec.legs and spec.nodes == 1:
        # One node cannot be replaced without downtime: the lab's config says it accepts that,
        # as a real environment's must (the decision-record gate refuses it otherwise).
        lab["gates"] = {"decision_record": {
            "id": "LAB-1", "ref": "README.md#the-lab: a lab of one node is out of service while "
            "it is replaced, accepted for a lab"}}
    if spec.legs:
        lab["load_balancer"]["backend"] = spec.backend("blue")
        lab["load_balancer"]["legs_map"] = str(legs_map_path)
        lab["strategy"] = {
            "kind": "blue-green",
            "legs": {
                leg: {"group": spec.leg_group(leg), "backend": spec.backend(leg)}
                for leg in ("blue", "green")
            },
            "preview_url": "http://{}:{}/".format(*spec.preview_address),
            "after_soak": "keep",
        }
    header = "# deployer configuration for the local lab, written by `deployer lab up`.\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def program_file(spec: LabSpec, *, address: str, version: str) -> str:
    """The supervisord program of the app on one node (the release role writes the same)."""
    app = spec.app
    env = ",".join(
        f'{k}="{v}"' for k, v in (("HOST", address), ("PORT", spec.app_port), ("APP_VERSION", version))
    )
    return f"""[program:{app}]
command=/opt/{app}/current/bin/run
directory=/opt/{app}/current
environment={env}
user={LAB_RUN_AS["deployer_run_user"]}
autostart=true
autorestart=true
startsecs=0
stopsignal=TERM
stopwaitsecs=10
stdout_logfile=/var/log/{app}/app.log
redirect_stderr=true
"""


def path_env_sections(
    env: str, *, previous: str | None, promotion_store: str, ssm_endpoint: str | None,
) -> dict[str, Any]:
    """What a path-to-live lab adds to one environment's config: its pointer (SSM in moto when
    asked; else the file pointer every lab has), its runner's polling, and its promotion: the
    previous environment's public key, its own signing key, the shared promotion store."""
    sections: dict[str, Any] = {"agent": {"interval": 3, "jitter": 0.2}}
    if ssm_endpoint is not None:
        sections["pointer"] = {
            "kind": "ssm", "parameter": f"/deployer/{env}/version",
            "status_parameter": f"/deployer/{env}/status", "region": "us-east-1",
            "endpoint_url": ssm_endpoint, "profile": f"deployer-{env}",
            "credentials_file": "aws/credentials",
        }
    promotion: dict[str, Any] = {"signing_key": "keys/promotion.key", "store": promotion_store}
    if previous is not None:
        promotion = {"after": previous, "trusted_keys": [f"keys/{previous}-promotion.pub"], **promotion}
    sections["promotion"] = promotion
    return sections
