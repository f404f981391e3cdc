"""The runner seam: how the engine runs a playbook and hears what happens on each node.

:class:`Runner` is the one swappable boundary of the engine. :class:`AnsibleRunner` drives
ansible-runner for real (one ``run()`` per playbook invocation, a fresh private_data_dir each
time); :class:`RecordingRunner` keeps every run's events, which
:class:`deployer.testing.ReplayRunner` replays so the engine can be unit-tested without nodes,
like an HTTP client's mock transport.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .._resources import content_dir
from .batch_gate import GATE_ACTIONS
from .process import processes_naming
from .redaction import Redactor, env_secrets, extravar_secrets
from .run_dirs import RunDirectory, remove_in_background, rotate, scrub
from .ssh_masters import SSH_PERSIST_ARGS, SshMasters, ssh_reason

__all__ = [
    "AnsibleRunner",
    "RecordingRunner",
    "RunRequest",
    "RunResult",
    "Runner",
    "RunnerEvent",
    "close_runner",
    "content_dir",
    "end_leftover_processes",
    "hosts_with",
]


_TASK_FILE = re.compile(r"roles/(?P<role>[^/]+)/tasks/(?P<file>[^/:]+)\.ya?ml")


@dataclass(frozen=True)
class RunnerEvent:
    """One event of a playbook run, reduced to what the engine needs."""

    # "task_start" | "ok" | "failed" | "skipped" | "unreachable" | "stats"; "item_ok": one item
    # of a loop went well (its own result, e.g. one load balancer's drain of the node); and
    # "gate": the play has reached a batch gate (rollout.yml), every event of the batch before it
    # sent.
    kind: str
    host: str | None = None
    task: str = ""
    role: str | None = None
    task_file: str | None = None  # e.g. "drain" for roles/deployer_lb_haproxy/tasks/drain.yml
    message: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)
    ignore_errors: bool = False
    changed: bool = False
    # The module's return values (minus bulky keys), e.g. a health check's status and version.
    result: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "host": self.host, "task": self.task, "role": self.role,
            "task_file": self.task_file, "message": self.message, "facts": dict(self.facts),
            "ignore_errors": self.ignore_errors, "changed": self.changed,
            "result": dict(self.result),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunnerEvent:
        return cls(**{k: d[k] for k in d if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class RunRequest:
    playbook: str  # file name under playbooks/
    inventory: Path
    hosts: Sequence[str]  # the --limit
    extravars: Mapping[str, Any]
    forks: int = 5
    envvars: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    status: str  # "successful" | "failed" | "canceled" | "timeout" | "error"
    rc: int
    failed_hosts: frozenset[str] = frozenset()
    unreachable_hosts: frozenset[str] = frozenset()
    # Why the run failed when no host did (a syntax error, a missing binary, ...).
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "successful" and not self.failed_hosts and not self.unreachable_hosts


EventSink = Callable[[RunnerEvent], None]
CancelCheck = Callable[[], bool]


class Runner(Protocol):
    def run(self, request: RunRequest, on_event: EventSink, cancelled: CancelCheck) -> RunResult:
        """Run one playbook and report its events; stop early when ``cancelled()`` is true."""
        ...


_TYPE_NOISE = re.compile(r": <class '[^']*'> cannot be converted to an? \w+")


def _message(res: Mapping[str, Any]) -> str:
    # A loop's result says only "One or more items failed": the failed items say what.
    items = res.get("results")
    if isinstance(items, list):
        failed = dict.fromkeys(_message(i) for i in items if isinstance(i, Mapping) and i.get("failed"))
        if any(failed):
            return "; ".join(m for m in failed if m)[:500]
    # validate_argument_spec: every wrong variable (once), not only the last line of its message,
    # without the name of Ansible's internal string class.
    errors = res.get("argument_errors")
    if isinstance(errors, list) and errors:
        unique = dict.fromkeys(_TYPE_NOISE.sub("", str(e)) for e in errors)
        return "; ".join(unique)[:500]
    for key in ("msg", "stderr", "reason"):
        v = res.get(key)
        if v:
            return str(v).strip().splitlines()[-1][:500] if isinstance(v, str) else str(v)[:500]
    return ""


def _unreachable_message(res: Mapping[str, Any]) -> str:
    # SSH's own reason ("root@10.0.1.11: Permission denied (publickey)."), not the last line of
    # what Ansible wraps around it, which may be its advice ("Make sure this host can be ...").
    msg = res.get("msg")
    if isinstance(msg, str) and msg.strip():
        return ssh_reason(msg)[:500]
    return _message(res)


def translate(raw: Mapping[str, Any]) -> RunnerEvent | None:
    """Turn one ansible-runner event dict into a RunnerEvent (None for events we ignore)."""
    name = raw.get("event", "")
    data: Mapping[str, Any] = raw.get("event_data") or {}
    kinds = {
        "runner_on_start": "task_start",
        "runner_on_ok": "ok",
        "runner_item_on_ok": "item_ok",
        "runner_on_failed": "failed",
        "runner_on_skipped": "skipped",
        "runner_on_unreachable": "unreachable",
        "playbook_on_stats": "stats",
    }
    kind = kinds.get(name)
    if name == "playbook_on_task_start" and data.get("task_action") in GATE_ACTIONS:
        # Announced by the play before its gate task asks the controller.
        return RunnerEvent(kind="gate", task=str(data.get("task") or ""))
    if kind is None:
        return None
    if kind == "stats":
        facts = {k: data.get(k) or {} for k in ("ok", "failures", "dark", "skipped", "changed")}
        return RunnerEvent(kind="stats", facts=facts)
    task_path = str(data.get("task_path") or "")
    m = _TASK_FILE.search(task_path)
    res: Mapping[str, Any] = data.get("res") or {}
    facts = res.get("ansible_facts") or {}
    return RunnerEvent(
        kind=kind,
        host=data.get("host"),
        task=str(data.get("task") or ""),
        role=m.group("role") if m else (data.get("role") or None),
        task_file=m.group("file") if m else None,
        message=(
            _message(res) if kind == "failed"
            else _unreachable_message(res) if kind == "unreachable" else ""
        ),
        facts={k: v for k, v in facts.items() if k.startswith("deployer_")},
        ignore_errors=bool(data.get("ignore_errors")),
        changed=bool(res.get("changed")),
        result={
            k: v for k, v in res.items()
            if not k.startswith("_") and k not in _BULKY and isinstance(v, _SCALARS)
        },
    )


_BULKY = frozenset({"invocation", "stdout_lines", "stderr_lines", "ansible_facts", "results"})
_SCALARS = (str, int, float, bool, type(None))


def _tail(stream: Any, lines: int = 6) -> str:
    try:
        text = stream.read() if stream is not None else ""
    except (OSError, ValueError):
        return ""
    kept = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])[:1000]


def hosts_with(stats: Mapping[str, Any], key: str) -> frozenset[str]:
    return frozenset(h for h, n in (stats.get(key) or {}).items() if n)


def close_runner(runner: Runner) -> None:
    """Release what a runner keeps between runs (SSH masters), if it keeps anything."""
    close = getattr(runner, "close", None)
    if callable(close):
        close()


def end_leftover_processes(run_dir: Path) -> list[int]:
    """SIGKILL what is left of a cancelled run: ansible-runner kills ``ansible-playbook``'s
    process group, but its workers start sessions of their own, and one blocked (a download that
    never ends, a pipe nobody reads) would stay behind. Every process of the run names its
    directory (``-e @<run_dir>/env/extravars``). The PIDs it signalled."""
    ended = []
    for pid, _, _ in processes_naming(os.fsencode(f"{run_dir}/")):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            ended.append(pid)
    return ended


class AnsibleRunner:
    """Run playbooks through ansible-runner, tuned for speed over SSH.

    SSH masters persist between the runs of one runner (the batches of a deployment); their
    control sockets live in a directory of this runner's own (see :mod:`deployer.adapters.ssh_masters`)
    and :meth:`close` shuts them. The inventory's own SSH settings come first and win.

    Each run has a private directory under ``artifacts_root`` (see :mod:`.run_dirs`). Secrets
    (see :mod:`.redaction`) are taken out of every event before the engine hears of it or
    ansible-runner writes it, and out of the whole directory when the run ends; the newest
    ``keep_runs`` directories are kept (none without ``artifacts_root``).
    """

    def __init__(
        self,
        *,
        content: Path | None = None,
        artifacts_root: Path | None = None,
        keep_runs: int = 20,
        secret_vars: Collection[str] = (),
        state_dir: Path | None = None,
    ) -> None:
        self.content = content or content_dir()
        self.artifacts_root = artifacts_root
        self.keep_runs = keep_runs if artifacts_root is not None else 0
        self.secret_vars = frozenset(secret_vars)
        root = state_dir or (artifacts_root.parent if artifacts_root else Path(".deployer"))
        self.ssh = SshMasters(root)
        self._atexit = False

    def close(self) -> None:
        """Close the SSH masters of this runner's runs (safe to call more than once)."""
        self.ssh.close()

    def _envvars(self, request: RunRequest) -> dict[str, str]:
        cp_dir = self.ssh.directory
        if not self._atexit:  # a backstop for callers that never close the runner
            atexit.register(self.close)
            self._atexit = True
        env = {
            "ANSIBLE_ROLES_PATH": str(self.content / "roles"),
            "ANSIBLE_PIPELINING": "True",
            # Nothing before the inventory's ansible_ssh_common_args: ssh keeps the first value
            # of an option, so the inventory's settings win and ours fill in what it leaves out.
            "ANSIBLE_SSH_ARGS": "",
            "ANSIBLE_SSH_EXTRA_ARGS": SSH_PERSIST_ARGS,
            "ANSIBLE_SFTP_EXTRA_ARGS": SSH_PERSIST_ARGS,
            "ANSIBLE_SCP_EXTRA_ARGS": SSH_PERSIST_ARGS,
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp_dir),
            "ANSIBLE_GATHERING": "explicit",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_TIMEOUT": "10",
            "ANSIBLE_NOCOLOR": "True",
            # The ansible-playbook next to this interpreter (the venv's), whatever PATH says.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        env.update(request.envvars)
        return env

    def _redactor(self, request: RunRequest, envvars: Mapping[str, str]) -> Redactor:
        """The secrets of one run: in the environment ansible-playbook gets, and in its variables."""
        return Redactor(
            env_secrets({**os.environ, **envvars}, self.secret_vars)
            | extravar_secrets(request.extravars, self.secret_vars)
        )

    def run(self, request: RunRequest, on_event: EventSink, cancelled: CancelCheck) -> RunResult:
        import ansible_runner  # slow import: only when a real run happens

        envvars = self._envvars(request)
        redactor = self._redactor(request, envvars)
        root, own_root = self.artifacts_root, None
        if root is None:  # nothing is kept: a throw-away root of the run's own
            root = own_root = Path(tempfile.mkdtemp(prefix="deployer-runs-"))
        # A fresh private_data_dir per run: ansible-runner re-reads settings it wrote before.
        run_dir = RunDirectory.create(root)
        pdd = run_dir.path
        lock = threading.Lock()

        def handler(raw: dict[str, Any]) -> bool:
            redactor.event(raw)  # before ansible-runner writes it and before the engine reads it
            ev = translate(raw)
            if ev is not None:
                with lock:
                    on_event(ev)
            return True  # keep the event, or ansible-runner's stats come back empty

        playbook = self.content / "playbooks" / request.playbook
        try:
            # The variables go in a file of the run's own (0600, in a 0700 directory), which
            # ansible-runner hands to ansible-playbook as `-e @file`: passed as a dict they would
            # be on its command line, where any local user reads them (`ps`), download URLs too.
            # It is removed when the run ends.
            env_dir = pdd / "env"
            env_dir.mkdir(mode=0o700)
            fd = os.open(env_dir / "extravars", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(dict(request.extravars), fh, default=str)
            r = ansible_runner.run(
                private_data_dir=str(pdd),
                playbook=str(playbook),
                inventory=str(request.inventory),
                limit=",".join(request.hosts) if request.hosts else None,
                forks=max(1, request.forks),
                envvars=envvars,
                event_handler=handler,
                cancel_callback=cancelled,
                quiet=True,
                json_mode=False,
                rotate_artifacts=0,
                # How often ansible-runner asks `cancelled` (default every 5 s): a second Ctrl-C
                # aborts the run within a quarter second. The run's end (EOF) is not delayed.
                settings={"pexpect_timeout": 0.25},
            )
            stats = r.stats or {}
            failed_hosts = hosts_with(stats, "failures")
            dark_hosts = hosts_with(stats, "dark")
            error = ""
            if r.status != "successful" and not failed_hosts and not dark_hosts:
                error = redactor.text(_tail(r.stdout))
            result = RunResult(
                status=str(r.status),
                rc=int(r.rc if r.rc is not None else -1),
                failed_hosts=failed_hosts,
                unreachable_hosts=dark_hosts,
                error=error,
            )
            if r.status in ("canceled", "timeout"):
                end_leftover_processes(pdd)
        except BaseException:
            end_leftover_processes(pdd)  # e.g. a second Ctrl-C raised in the middle of the run
            raise
        finally:
            self._finish(run_dir, redactor, recorded_env=envvars)
            if own_root is not None:
                shutil.rmtree(own_root, ignore_errors=True)
        return result

    def _finish(self, run_dir: RunDirectory, redactor: Redactor, *, recorded_env: Collection[str]) -> None:
        """Scrub the run's directory and keep it, or remove it; then rotate the others."""
        try:
            if self.keep_runs > 0:
                scrub(run_dir.path, redactor, recorded_env=recorded_env, events_redacted=True)
                os.utime(run_dir.path)  # rotation keeps the most recently finished runs
            else:
                shutil.rmtree(run_dir.path, ignore_errors=True)
        finally:
            run_dir.close()
        if self.artifacts_root is not None:
            remove_in_background(rotate(self.artifacts_root, self.keep_runs, secret_vars=self.secret_vars))


class RecordingRunner:
    """Wrap a runner and keep every run's events, to replay later with
    :class:`deployer.testing.ReplayRunner`."""

    def __init__(self, inner: Runner, path: Path) -> None:
        self.inner = inner
        self.path = path
        self.scripts: list[dict[str, Any]] = []

    def run(self, request: RunRequest, on_event: EventSink, cancelled: CancelCheck) -> RunResult:
        events: list[RunnerEvent] = []

        def keep(ev: RunnerEvent) -> None:
            events.append(ev)
            on_event(ev)

        result = self.inner.run(request, keep, cancelled)
        self.scripts.append({
            "playbook": request.playbook,
            "hosts": list(request.hosts),
            "status": result.status,
            "events": [e.to_dict() for e in events],
        })
        self.path.write_text(json.dumps(self.scripts, indent=1, sort_keys=True, default=str) + "\n")
        return result

    def close(self) -> None:
        close_runner(self.inner)
