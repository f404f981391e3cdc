"""The lab's shared services: HAProxy in front of the nodes, nginx serving the artefact store
and, on request, Prometheus scraping HAProxy. All start through the lab's cgroup launcher, into
the lab's ``services`` cgroup."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from .._errors import LabError
from ._cgroup import Cgroup
from ._procs import ProcessRef, port_accepts, stop_processes, wait_until
from ._render import NodeLayout, haproxy_config, legs_map, nginx_config, prometheus_config
from ._spec import LabSpec
from ._sys import START_TIMEOUT, SYSTEM_ENV, atomic_write, run, tail

__all__ = ["start_haproxy", "start_haproxy_on_host", "start_nginx", "start_prometheus"]


def _wait_started(
    proc: subprocess.Popen[bytes], what: str, log_path: Path, ready: Callable[[], bool]
) -> ProcessRef:
    def check() -> bool:
        if proc.poll() is not None:
            raise LabError(f"{what} exited at start (code {proc.returncode}): {tail(log_path)}")
        return bool(ready())

    if not wait_until(check, timeout=START_TIMEOUT):
        stop_processes([proc.pid])
        raise LabError(f"{what} did not get ready in {START_TIMEOUT:.0f} s: {tail(log_path)}")
    ref = ProcessRef.of(proc.pid)
    if ref is None:
        raise LabError(f"{what} exited right after start: {tail(log_path)}")
    return ref


def start_haproxy(
    spec: LabSpec, nodes: list[NodeLayout], *, work: Path, admin_socket: Path,
    launcher: Path, cgroup: Cgroup,
) -> ProcessRef:
    config = work / "haproxy.cfg"
    map_path = work / "legs.map"
    if spec.legs and not map_path.is_file():
        # Kept when HAProxy restarts: the live leg is whatever the last switch wrote there.
        atomic_write(map_path, legs_map(spec))
    atomic_write(config, haproxy_config(spec, nodes, admin_socket=admin_socket, legs_map_path=map_path))
    admin_socket.unlink(missing_ok=True)
    run(["haproxy", "-c", "-q", "-f", str(config)], what=f"checking {config}")
    log_path = work / "haproxy.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(launcher), str(cgroup.procs_file), "haproxy", "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=SYSTEM_ENV, cwd=str(work),
        )
    listening = [spec.frontend_address, spec.metrics_address]
    if spec.legs:
        listening.append(spec.preview_address)
    return _wait_started(
        proc, "HAProxy", log_path,
        lambda: admin_socket.exists()
        and all(port_accepts(host, port, timeout=0.2) for host, port in listening),
    )


def start_nginx(
    spec: LabSpec, *, work: Path, store_dir: Path, launcher: Path, cgroup: Cgroup
) -> ProcessRef:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    config = work / "nginx.conf"
    atomic_write(config, nginx_config(spec, store_dir=store_dir, work_dir=work))
    log_path = work / "nginx.out"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(launcher), str(cgroup.procs_file),
             "nginx", "-e", str(work / "error.log"), "-p", str(work), "-c", str(config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=SYSTEM_ENV, cwd=str(work),
        )
    host, port = spec.store_address
    return _wait_started(proc, "nginx", work / "error.log", lambda: port_accepts(host, port, timeout=0.2))


def start_prometheus(spec: LabSpec, *, work: Path, launcher: Path, cgroup: Cgroup) -> ProcessRef:
    address = spec.prometheus_listen
    assert address is not None
    (work / "data").mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    atomic_write(config, prometheus_config(spec))
    log_path = work / "prometheus.log"
    host, port = address
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(launcher), str(cgroup.procs_file), "/usr/bin/prometheus",
             f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address={host}:{port}", "--storage.tsdb.retention.time=1d"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=SYSTEM_ENV, cwd=str(work),
        )
    return _wait_started(proc, "Prometheus", log_path, lambda: port_accepts(host, port, timeout=0.2))


def start_haproxy_on_host(
    spec: LabSpec, nodes: list[NodeLayout], *, host_root: Path, host_pid: int, launcher: Path,
    cgroup: Cgroup, socket: str, config_dir: str, socket_gid: int,
) -> ProcessRef:
    """HAProxy inside the load balancer's own host (its mount namespace and cgroup): its
    configuration in the host's ``config_dir``, its runtime socket in the host's private /run."""
    work = host_root / "haproxy"  # mounted at config_dir inside the host
    work.mkdir(parents=True, exist_ok=True)
    inside_map = f"{config_dir}/legs.map"
    if spec.legs and not (work / "legs.map").is_file():
        atomic_write(work / "legs.map", legs_map(spec))
    atomic_write(work / "haproxy.cfg", haproxy_config(
        spec, nodes, admin_socket=socket, legs_map_path=inside_map,
        socket_access=f"mode 660 gid {socket_gid}",
    ))
    enter = ["nsenter", f"--target={host_pid}", "--mount", "--uts", "--"]
    run([*enter, "haproxy", "-c", "-q", "-f", f"{config_dir}/haproxy.cfg"],
        what=f"checking HAProxy's configuration on {host_root.name}")
    socket_dir = socket.rsplit("/", 1)[0]
    run([*enter, "mkdir", "-p", "-m", "0755", socket_dir], what=f"creating {socket_dir} on {host_root.name}")
    seen_socket = Path(f"/proc/{host_pid}/root{socket}")
    seen_socket.unlink(missing_ok=True)
    log_path = host_root / "haproxy.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(launcher), str(cgroup.procs_file), *enter, "haproxy", "-db", "-f",
             f"{config_dir}/haproxy.cfg"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=SYSTEM_ENV, cwd="/",
        )
    listening = [spec.frontend_address, spec.metrics_address]
    if spec.legs:
        listening.append(spec.preview_address)
    return _wait_started(
        proc, f"HAProxy on {host_root.name}", log_path,
        lambda: seen_socket.exists()
        and all(port_accepts(host, port, timeout=0.2) for host, port in listening),
    )
