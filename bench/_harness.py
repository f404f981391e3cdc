"""What every benchmark shares: a lab of its own, fresh signed releases, the two tools to compare,
an HAProxy sampler that sees when each node leaves and rejoins the load balancer, and figures.

Both tools are measured the same way: wall time of the command, and each node's time out of the
load balancer as HAProxy itself reports it (``show stat`` polled every ~20 ms).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from deployer.artefacts import build_artefact, open_store, sign_manifest
from deployer.lab import Lab, LabSpec
from deployer.lab._procs import port_is_free

from . import _phases

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BASELINE_PLAYBOOK = ROOT / "bench" / "baseline" / "rolling.yml"
BASELINE_CONFIG = ROOT / "bench" / "baseline" / "ansible.cfg"
BUILD_SCRIPT = ROOT / "examples" / "hello-service" / "build.py"
# The benchmarks' own loopback networks (127.0.150.0/24 ... 127.0.190.0/24).
NETS = range(150, 191)
APP = "hello"
APP_PORT = 8000  # the lab's default (LabSpec.app_port)
SEED = "1.0.0"


# -- figures -----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """``median [min-max]`` of a series, in seconds."""
    if not values:
        return "-"
    return f"{median(values):6.2f}s [{min(values):.2f}-{max(values):.2f}]"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
        "load": load,
    }


def say(text: str) -> None:
    print(text, flush=True)


# -- the lab -----------------------------------------------------------------------------------


def _free_net(nodes: int) -> str:
    for octet in NETS:
        net = f"127.0.{octet}"
        if not any(not port_is_free(f"{net}.{i}", 22) for i in (*range(1, nodes + 1), 250)):
            return net
    raise RuntimeError("no free loopback network left in 127.0.150-190 for a benchmark lab")


@dataclass
class BenchLab:
    """A lab brought up for one benchmark, seeded with 1.0.0, and what it serves."""

    lab: Lab
    nodes: list[str]
    addresses: dict[str, str]
    frontend_url: str
    store_url: str
    published: int = 0
    # Wall time of `Lab.up` for this lab (nodes, supervisord, the app seeded, HAProxy, store).
    up_seconds: float = 0.0

    @property
    def dir(self) -> Path:
        return self.lab.dir

    @property
    def socket(self) -> Path:
        """HAProxy's runtime socket as this machine reaches it (on the production topology, in
        the load balancer host's private /run)."""
        return self.lab.admin_socket()

    def node_pid(self, node: str) -> int:
        """The node's sshd: its mount namespace is the node's view of the files."""
        state = json.loads(self.lab.state_path.read_text())
        for entry in state["nodes"]:
            if entry["name"] == node:
                return int(entry["sshd"]["pid"])
        raise KeyError(node)

    def in_node(self, node: str, argv: Sequence[str], *, timeout: float = 60) -> str:
        """Run a command inside a node (its namespace, as its own processes see it)."""
        proc = subprocess.run(
            ["nsenter", f"--target={self.node_pid(node)}", "--mount", "--uts", "--", *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{node}: {' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout}")
        return proc.stdout

    def publish(self, variant: str = "good") -> str:
        """Build, sign and publish a fresh release that no node has seen; return its version."""
        self.published += 1
        version = f"2.{os.getpid() % 1000}.{self.published}"
        state = json.loads(self.lab.state_path.read_text())
        secret = Path(state["release_key"])
        with tempfile.TemporaryDirectory(dir=self.dir, prefix=".bench-build-") as tmp:
            src = Path(tmp) / "src"
            subprocess.run(
                [sys.executable, str(BUILD_SCRIPT), "--version", version, "--variant", variant,
                 "--out", str(src)],
                check=True, capture_output=True,
            )
            built = build_artefact(src, app=APP, version=version, out_dir=Path(tmp) / "artefact")
            sign_manifest(built.manifest_path, secret)
            open_store(f"file://{self.lab.store_dir}").publish(built.dir)
        return version

    def manifest(self, version: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.lab.store_dir / APP / version / "manifest.json").read_text()
        )
        return data

    def set_fault(self, node: str, text: str | None) -> None:
        """The sample service's per-node fault file (/etc/hello/fault inside the node)."""
        path = self.dir / "nodes" / node / "etc" / "fault"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text + "\n")

    def health(self, node: str) -> tuple[int, str]:
        url = f"http://{self.addresses[node]}:{APP_PORT}/health"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return int(resp.status), str(json.loads(resp.read()).get("version", ""))
        except OSError:
            return 0, ""

    def config(self, name: str, **strategy: Any) -> Path:
        """A deployer config for this lab with its own journal and the given strategy."""
        data = yaml.safe_load(self.lab.config_path.read_text())
        data["state_dir"] = f"state-{name}"
        env = data["environments"]["lab"]
        env["strategy"].update({k: v for k, v in strategy.items() if v is not None})
        path = self.dir / f"deployer-{name}.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


@contextlib.contextmanager
def bench_lab(
    nodes: int, *, keep: bool = False, legs: bool = False, soak: float = 0.0,
    topology: str = "lab",
) -> Iterator[BenchLab]:
    """A fresh lab of ``nodes`` nodes (per leg, with ``legs``) seeded with 1.0.0; torn down
    afterwards. No soak analysis in its config unless ``soak`` seconds are asked for."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{nodes}n-", dir="/tmp"))
    # Its own directory and network: the lab picks free ports (never the default lab's).
    spec = LabSpec(
        nodes=nodes, net=_free_net(nodes * (2 if legs else 1)), seed=SEED, legs=legs, soak=soak,
        topology=topology,
    )
    lab = Lab(root / "lab")
    t0 = time.monotonic()
    try:
        spec = lab.up(spec).spec
        up_seconds = time.monotonic() - t0
        say(f"  lab: {nodes} node(s) on {spec.net}.0/24 up in {up_seconds:.1f}s ({lab.dir})")
        count = spec.total_nodes
        names = [spec.node_name(i) for i in range(1, count + 1)]
        yield BenchLab(
            lab=lab, nodes=names,
            addresses={spec.node_name(i): spec.node_address(i) for i in range(1, count + 1)},
            frontend_url=lab.frontend_url, store_url=lab.store_url,
            up_seconds=up_seconds,
        )
    finally:
        lab.down()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


# -- HAProxy sampler ---------------------------------------------------------------------------


def _show_stat(sock_path: Path) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        sock.connect(str(sock_path))
        sock.sendall(b"show stat\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


@dataclass
class Sampler:
    """Polls HAProxy's ``show stat`` and records when each server of ``backend`` is not UP."""

    socket: Path
    backend: str = APP
    interval: float = 0.02
    # server -> list of (start, end) wall-clock seconds spent out of the load balancer.
    intervals: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    samples: int = 0
    _out_since: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="haproxy-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        now = time.time()
        for server, since in self._out_since.items():
            self.intervals.setdefault(server, []).append((since, now))
        self._out_since.clear()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            try:
                text = _show_stat(self.socket)
            except OSError:
                self._stop.wait(self.interval)
                continue
            self.samples += 1
            for line in text.splitlines():
                cols = line.split(",")
                if len(cols) < 18 or cols[0] != self.backend or cols[1] in ("FRONTEND", "BACKEND"):
                    continue
                server, up = cols[1], cols[17].startswith("UP")
                if not up and server not in self._out_since:
                    self._out_since[server] = now
                elif up and server in self._out_since:
                    self.intervals.setdefault(server, []).append((self._out_since.pop(server), now))
            self._stop.wait(self.interval)

    def out_seconds(self, server: str) -> float:
        """Total time ``server`` spent out of the load balancer while sampled."""
        return sum(end - start for start, end in self.intervals.get(server, []))


# -- the two tools -----------------------------------------------------------------------------


@dataclass
class DeployRun:
    tool: str
    version: str
    seconds: float
    rc: int
    out_of_lb: dict[str, float]
    peak_rss_mb: float = 0.0
    outcome: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    # Wall clock at the start, and every (start, end) each node spent out of the load balancer.
    started_at: float = 0.0
    lb_intervals: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # CPU time of the tool's whole process tree (the deployer, ansible-playbook, its forks and
    # SSH clients), counted as each child is reaped.
    controller_cpu_seconds: float = 0.0
    # Seconds per phase (see _phases): a list per phase (one value per batch or node).
    phases: dict[str, list[float]] = field(default_factory=dict)


def _children_cpu_seconds() -> float:
    """User + system CPU of this process's children that have ended."""
    times = os.times()
    return times.children_user + times.children_system


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Stop a deployer still running when the benchmark is interrupted (as Ctrl-C twice would)."""
    if proc.poll() is not None:
        return
    for _ in range(2):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_COMPILED: set[Path] = set()


def compile_checkout(root: Path) -> None:
    """A checkout's own Python compiled to bytecode, as ``scripts/bootstrap.sh`` does and as pip
    does for an installed wheel; the plain playbook's Ansible is an installed package, compiled.
    Without it, where ``$PYTHONDONTWRITEBYTECODE`` is set, every run of the checkout's deployer
    would compile its modules, and every ansible-playbook worker the plugins of each task."""
    if root in _COMPILED:
        return
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                    *(str(root / d) for d in ("deployer", "playbooks", "roles"))],
                   check=True, stdout=subprocess.DEVNULL)
    _COMPILED.add(root)


def run_deployer(lab: BenchLab, config: Path, version: str, *, root: Path = ROOT) -> DeployRun:
    """``deployer deploy`` as an operator runs it (its events written with ``--events``, for the
    phases); also the driver process's peak memory. ``root``: the checkout whose deployer runs
    (its code and its playbooks), to measure another commit beside this one, compiled first
    (:func:`compile_checkout`)."""
    compile_checkout(root)
    events = Path(tempfile.mkstemp(prefix="bench-events-", suffix=".jsonl", dir=lab.dir)[1])
    argv = [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", version,
            "--config", str(config), "--json", "--quiet", "--events", str(events)]
    with Sampler(lab.socket) as sampler, tempfile.TemporaryFile() as out:
        started_at = time.time()
        t0 = time.monotonic()
        cpu0 = _children_cpu_seconds()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=str(root))
        peak = 0.0
        try:
            while proc.poll() is None:
                peak = max(peak, _peak_rss_mb(proc.pid))
                time.sleep(0.05)
        finally:
            _stop_child(proc)
        seconds = time.monotonic() - t0
        controller_cpu = _children_cpu_seconds() - cpu0
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    outcome: dict[str, Any] = {}
    start = text.find("{")
    with contextlib.suppress(ValueError):
        # The JSON outcome on stdout; an error line on stderr may follow it.
        outcome = json.JSONDecoder().raw_decode(text[start:])[0] if start >= 0 else {}
    state_dir = config.parent / str(yaml.safe_load(config.read_text()).get("state_dir", "state"))
    restarts: dict[str, float] = {}
    for run_files in runner_runs(state_dir, started_at - 1):
        restarts.update(_phases.restart_seconds(run_files.events))
    phases = _phases.deployer_phases(_phases.read_events(events), started=started_at,
                                     ended=started_at + seconds, restarts=restarts)
    events.unlink(missing_ok=True)
    return DeployRun(
        tool="deployer", version=version, seconds=seconds, rc=proc.returncode,
        out_of_lb={n: sampler.out_seconds(n) for n in lab.nodes}, peak_rss_mb=peak,
        outcome=outcome, output=text, started_at=started_at, lb_intervals=dict(sampler.intervals),
        controller_cpu_seconds=controller_cpu, phases=phases,
    )


def baseline_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["ANSIBLE_CONFIG"] = str(BASELINE_CONFIG)
    env["ANSIBLE_NOCOLOR"] = "1"
    # The task timeline, for the phases (written only where $BENCH_TIMELINE names a file).
    env["ANSIBLE_CALLBACK_PLUGINS"] = str(BASELINE_PLAYBOOK.parent / "callback_plugins")
    env["ANSIBLE_CALLBACKS_ENABLED"] = "bench_timeline"
    return env


# Mitogen for Ansible, in a virtualenv of the benchmarks' own (never the project's). mitogen
# 0.3.54 supports ansible-core 2.10 to 2.19 (its loader refuses older ones; 0.3.54 is the first
# release that runs 2.19's templating): pinned with the ansible-core the project's venv runs.
MITOGEN = "mitogen==0.3.54"
MITOGEN_ANSIBLE = "ansible-core==2.19.14"
MITOGEN_VENV = ROOT / ".bench-venvs" / "mitogen-0.3.54"


@dataclass(frozen=True)
class Mitogen:
    """The plain playbook's tools from the Mitogen virtualenv, with the ``mitogen_linear``
    strategy."""

    bin: Path
    strategy_plugins: Path

    def env(self) -> dict[str, str]:
        env = baseline_env()
        env["PATH"] = f"{self.bin}:{env['PATH']}"
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(self.strategy_plugins)
        env["ANSIBLE_STRATEGY"] = "mitogen_linear"
        return env


def mitogen() -> Mitogen:
    """The Mitogen virtualenv, created (with pip, from the package index) when missing."""
    python = MITOGEN_VENV / "bin" / "python"
    stamp = MITOGEN_VENV / ".installed"
    wanted = f"{MITOGEN} {MITOGEN_ANSIBLE}\n"
    if not stamp.exists() or stamp.read_text() != wanted:
        say(f"  creating {MITOGEN_VENV} ({MITOGEN}, {MITOGEN_ANSIBLE})")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(MITOGEN_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        MITOGEN, MITOGEN_ANSIBLE], check=True)
        stamp.write_text(wanted)
    found = subprocess.run(
        [str(python), "-c", "import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    return Mitogen(bin=MITOGEN_VENV / "bin", strategy_plugins=Path(found) / "plugins" / "strategy")


def run_baseline(lab: BenchLab, version: str, *, under: Mitogen | None = None) -> DeployRun:
    """The plain ``ansible-playbook`` rolling playbook on the same nodes (``under`` Mitogen's
    ``mitogen_linear`` strategy, from its own virtualenv, when given)."""
    m = lab.manifest(version)
    extra = {
        "version": version,
        "release_url": f"{lab.store_url}{APP}/{version}/{m['tarball']}",
        "release_sha256": m["sha256"],
        "haproxy_socket": str(lab.socket),
    }
    env = under.env() if under is not None else baseline_env()
    playbook = (under.bin if under is not None else VENV_BIN) / "ansible-playbook"
    argv = [str(playbook), "-i", str(lab.lab.inventory_path), str(BASELINE_PLAYBOOK), "-e", json.dumps(extra)]
    timeline = Path(tempfile.mkstemp(prefix="bench-timeline-", suffix=".jsonl", dir=lab.dir)[1])
    env["BENCH_TIMELINE"] = str(timeline)
    with Sampler(lab.socket) as sampler:
        started_at = time.time()
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        seconds = time.monotonic() - t0
    phases = _phases.plain_phases(_phases.read_timeline(timeline), started=started_at,
                                  ended=started_at + seconds)
    timeline.unlink(missing_ok=True)
    return DeployRun(
        tool="mitogen_linear" if under is not None else "plain ansible-playbook", version=version,
        seconds=seconds, rc=proc.returncode,
        out_of_lb={n: sampler.out_seconds(n) for n in lab.nodes},
        output=proc.stdout[-3000:] + proc.stderr[-2000:], started_at=started_at,
        lb_intervals=dict(sampler.intervals), phases=phases,
    )


def open_ssh_masters(lab: BenchLab, config: Path) -> None:
    """Open the SSH masters the plain playbook keeps between runs (ControlPersist), unmeasured,
    with an ``ansible -m ping`` with its settings. deployer closes its masters when each command
    ends (they are per command), so every deployer run is measured from cold connections; the
    ``deployer status`` here only warms the nodes' own caches the same way for both tools."""
    subprocess.run(
        [sys.executable, "-m", "deployer", "status", "--env", "lab", "--config", str(config), "--json"],
        capture_output=True, check=True, cwd=str(ROOT),
    )
    subprocess.run(
        [str(VENV_BIN / "ansible"), "-i", str(lab.lab.inventory_path), "all", "-m", "ansible.builtin.ping"],
        capture_output=True, check=True, env=baseline_env(),
    )


def check(run: DeployRun) -> DeployRun:
    if run.rc != 0:
        raise RuntimeError(
            f"{run.tool} deploying {run.version} failed (exit {run.rc}):\n{run.output[-3000:]}"
        )
    return run


# -- the app's own restart time ----------------------------------------------------------------


# Runs inside a node: stop and start the app through supervisord's XML-RPC socket, polling its
# state (each request wakes supervisord's loop), then poll /health until it answers 200. Timed
# from inside, so no tool's own start-up (supervisorctl's is ~0.25 s) counts as the app's.
_RESTART_PROBE = r"""
import http.client, socket, sys, time, urllib.request, xmlrpc.client
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect("/var/run/supervisor.sock")
class Transport(xmlrpc.client.Transport):
    def make_connection(self, host): return Conn("localhost")
rpc = xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=Transport()).supervisor
app, url = sys.argv[1], sys.argv[2]
def wait(states):
    while rpc.getProcessInfo(app)["statename"] not in states: time.sleep(0.01)
t0 = time.monotonic()
rpc.stopProcess(app, False); wait({"STOPPED", "EXITED"})
rpc.startProcess(app, False)
while True:
    try:
        if urllib.request.urlopen(url, timeout=1).status == 200: break
    except OSError: pass
    time.sleep(0.01)
print(time.monotonic() - t0)
"""


def app_restart_seconds(lab: BenchLab, node: str) -> float:
    """The app's own restart: stop + start through supervisord until /health answers 200, timed
    inside the node. The node is put in maintenance first (no client traffic), and back after.
    """
    from deployer.adapters.haproxy import HAProxyRuntime

    lb = HAProxyRuntime(str(lab.socket))
    lb.set_state(APP, node, "maint")
    try:
        url = f"http://{lab.addresses[node]}:{APP_PORT}/health"
        return float(lab.in_node(node, ["python3", "-c", _RESTART_PROBE, APP, url], timeout=60))
    finally:
        lb.set_state(APP, node, "ready")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = lb.servers(APP).get(node)
            if state is not None and state.in_service:
                break
            time.sleep(0.05)


# -- ansible-runner events ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunFiles:
    """One ansible-runner run of the deployer, read back from its private data dir."""

    playbook: str
    started: float
    ended: float
    events: list[Mapping[str, Any]]

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def _utc_seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()


def runner_runs(state_dir: Path, since: float = 0.0) -> list[RunFiles]:
    """The deployer's runner runs under ``state_dir/runs`` started after ``since``, oldest first."""
    runs = []
    for pdd in (state_dir / "runs").glob("run-*"):
        # ansible-runner makes artifacts/ as the run starts and leaves it alone afterwards (the
        # run's variables file, once the mark of a start, is removed when the run ends).
        artifacts = pdd / "artifacts"
        if not artifacts.exists() or artifacts.stat().st_mtime < since:
            continue
        rc_files = list(pdd.glob("artifacts/*/rc"))
        events: list[Mapping[str, Any]] = []
        for f in pdd.glob("artifacts/*/job_events/*.json"):
            with contextlib.suppress(OSError, ValueError):
                events.append(json.loads(f.read_text()))
        events.sort(key=lambda e: int(e.get("counter", 0)))
        playbook = ""
        for e in events:
            playbook = Path(str((e.get("event_data") or {}).get("playbook", ""))).name or playbook
            if playbook:
                break
        started = artifacts.stat().st_mtime
        ended = max((f.stat().st_mtime for f in rc_files), default=started)
        runs.append(RunFiles(playbook=playbook, started=started, ended=ended, events=events))
    return sorted(runs, key=lambda r: r.started)


def event_time(event: Mapping[str, Any]) -> float:
    return _utc_seconds(str(event["created"]))


def task_seconds(state_dir: Path, since: float, task_file: str) -> list[float]:
    """How long each host's run of the tasks in ``task_file`` (e.g. ``deployer_smoke/tasks/main.yml``)
    took in the deployer's runs since ``since``: ansible-runner's start and end events."""
    durations = []
    for run in runner_runs(state_dir, since):
        started: dict[tuple[str, str], float] = {}
        for e in run.events:
            data = e.get("event_data") or {}
            if task_file not in str(data.get("task_path", "")):
                continue
            key = (str(data.get("host")), str(data.get("task_uuid")))
            if e.get("event") == "runner_on_start":
                started[key] = event_time(e)
            elif e.get("event") in ("runner_on_ok", "runner_on_failed") and key in started:
                durations.append(event_time(e) - started.pop(key))
    return durations
