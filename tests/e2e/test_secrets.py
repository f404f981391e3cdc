"""Secrets end to end: planted in the controller's environment, in the config's extra variables
and in the signed query of the download URL (an S3 store, moto's server on 127.0.0.1), they must
reach no process's command line during a deployment, and afterwards no file of the state
directory (kept run directories, the journal), no controller-side file of the lab, and no
output of deployer (the deploy's own, `history --json`, `status --json`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from deployer.lab import Lab
from deployer.lab._cgroup import Cgroup, cgroup2_root

pytestmark = pytest.mark.e2e

KEEP_RUNS = 2


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _planted() -> dict[str, str]:
    """Random values, each shaped like the real thing (an STS session token has '/', '+', '=')."""
    return {
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "AWS_SESSION_TOKEN": f"IQoJb3JpZ2lu/{secrets.token_hex(12)}+{secrets.token_hex(12)}==",
        "DEPLOYER_KEY_PASSWORD": "kp-" + secrets.token_hex(12),
        "HELLO_METRICS_API_TOKEN": "tok-" + secrets.token_hex(12),
        # Extra variables of the config: one named as a secret, one listed in runner.secret_vars
        # and given to the application's environment (so it is in a module's options).
        "hello_api_token": "api-" + secrets.token_hex(12),
        "hello_dsn": f"postgres://hello:pw-{secrets.token_hex(12)}@db.example.com/hello",
    }


def _forms(value: str) -> set[bytes]:
    """How a value may be written down: as is, URL-encoded, JSON-escaped."""
    return {
        value.encode(),
        urllib.parse.quote(value, safe="").encode(),
        urllib.parse.quote(value).encode(),
        urllib.parse.quote_plus(value).encode(),
        json.dumps(value)[1:-1].encode(),
    }


# The signed part of a presigned URL (either signature version), whatever its value.
_SIGNED = re.compile(
    rb"(?i)(?:X-Amz-Signature|X-Amz-Security-Token|X-Amz-Credential|Signature|AWSAccessKeyId)=[^<&\s\"']"
)


def _leaks(data: bytes, planted: dict[str, str]) -> list[str]:
    found = [name for name, value in planted.items() if any(f in data for f in _forms(value))]
    if _SIGNED.search(data):
        found.append("presigned query")
    return found


def _parents() -> dict[int, int]:
    """Every live process's parent, by PID."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _descends_from(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    seen: set[int] = set()
    while pid > 1 and pid not in seen:
        if pid == ancestor:
            return True
        seen.add(pid)
        pid = parents.get(pid, 0)
    return False


def _scan_processes(
    planted: dict[str, str], leaked: dict[str, list[str]], lab_cgroup: Cgroup,
) -> tuple[int, int]:
    """The command line of every process of this test (the controller, ansible-playbook, ssh...)
    and of the lab's nodes (other processes of the machine are none of deployer's business, and
    may well mention a signature). Returns how many ansible-playbook processes and how many of
    the lab's processes were read."""
    playbooks = on_nodes = 0
    parents = _parents()
    for pid in parents:
        in_lab = lab_cgroup.contains(pid)
        if not (in_lab or _descends_from(pid, os.getpid(), parents)):
            continue
        on_nodes += in_lab
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if b"ansible-playbook" in cmdline:
            playbooks += 1
        found = _leaks(cmdline, planted)
        if b"deployer_release_url" in cmdline or b"/hello/1.1.0/hello-1.1.0.tar.gz" in cmdline:
            found.append("a run's variables")  # none, secret or not: not even the plain URL
        if found:
            leaked.setdefault(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200], found)
    return playbooks, on_nodes


def _scan_files(root: Path, planted: dict[str, str], *, skip: Callable[[Path], bool]) -> dict[str, list[str]]:
    leaked: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if skip(path) or path.is_symlink() or not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found = _leaks(data, planted)
        if found:
            leaked[str(path.relative_to(root))] = found
    return leaked


def test_planted_secrets_reach_no_command_line_run_file_output_or_journal(
    make_lab: Callable[..., Lab], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    from deployer.artefacts import open_store

    the_lab = make_lab(nodes=2, seed="1.0.0")
    planted = _planted()
    env = {
        **os.environ,
        "COLUMNS": "200",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        **{k: v for k, v in planted.items() if k.isupper()},
    }
    env.pop("AWS_PROFILE", None)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    # The release, published to S3 (the session's credentials sign the nodes' download URLs).
    bucket = f"releases-{uuid.uuid4().hex[:12]}"
    for name in (k for k in env if k.startswith("AWS_")):
        monkeypatch.setenv(name, env[name])
    boto3.client("s3").create_bucket(Bucket=bucket)
    assert open_store(f"s3://{bucket}/releases").publish(the_lab.store_dir / "hello" / "1.1.0").created

    config = yaml.safe_load(the_lab.config_path.read_text())
    config["runner"] = {"keep_runs": KEEP_RUNS, "secret_vars": ["hello_dsn"]}
    lab_env = config["environments"]["lab"]
    lab_env["store"] = {"url": f"s3://{bucket}/releases", "presign_ttl": 600}
    lab_env["extra_vars"] = {
        "hello_api_token": planted["hello_api_token"],
        "hello_dsn": planted["hello_dsn"],
        "deployer_release_environment": {"HELLO_DSN": "{{ hello_dsn }}"},
    }
    the_lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deployer", *args, "--config", str(the_lab.config_path)],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )

    # The deployment, its processes' command lines sampled while it runs.
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", "1.1.0",
         "--config", str(the_lab.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    on_command_lines: dict[str, list[str]] = {}
    playbooks_seen = lab_processes_seen = 0
    modes: set[tuple[str, int]] = set()  # of the run directories and variables files, meanwhile
    runs_root = the_lab.dir / "state" / "runs"
    lab_cgroup_name = the_lab.status().cgroup
    assert lab_cgroup_name, "the lab keeps no cgroup: its nodes' processes cannot be told apart"
    lab_cgroup = Cgroup(cgroup2_root(), lab_cgroup_name)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        playbooks, on_nodes = _scan_processes(planted, on_command_lines, lab_cgroup)
        playbooks_seen += playbooks
        lab_processes_seen += on_nodes
        for path in [*runs_root.glob("run-*"), *runs_root.glob("run-*/env/extravars")]:
            with contextlib.suppress(OSError):
                modes.add((path.name, path.stat().st_mode & 0o777))
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"{out}\n{err}"
    assert playbooks_seen, "no ansible-playbook process was seen: nothing was checked"
    assert lab_processes_seen, "no process of the lab's nodes was seen: their side was not checked"
    assert on_command_lines == {}
    assert {mode for name, mode in modes if name == "extravars"} == {0o600}
    assert {mode for name, mode in modes if name != "extravars"} == {0o700}

    # The release really came through the presigned URLs, and the application got the secret.
    status = cli("status", "--env", "lab", "--json")
    assert status.returncode == 0, status.stderr
    assert {n["node"]: n["version"] for n in json.loads(status.stdout)["nodes"]} == {
        "node1": "1.1.0", "node2": "1.1.0"}
    program = the_lab.dir / "nodes" / "node1"
    assert any(planted["hello_dsn"].encode() in p.read_bytes()
               for p in program.rglob("hello.conf") if p.is_file()), "the app's environment lacks HELLO_DSN"

    # What deployer printed and keeps.
    history = cli("history", "--env", "lab", "--json")
    assert history.returncode == 0, history.stderr
    last = json.loads(history.stdout)[0]
    events = cli("history", "--env", "lab", "--json", "--deployment", str(last["id"]))
    assert events.returncode == 0, events.stderr
    outputs = {
        "deploy": out + err, "status": status.stdout + status.stderr,
        "history": history.stdout + history.stderr, "history --deployment": events.stdout + events.stderr,
    }
    assert {name: _leaks(text.encode(), planted) for name, text in outputs.items()} == {
        name: [] for name in outputs}

    # Every file of the state directory (kept runs, the journal) and of the lab's controller side.
    state = the_lab.dir / "state"
    journal = b"".join(p.read_bytes() for p in state.glob("journal.sqlite*"))
    assert b"hello-1.1.0.tar.gz?<signed query not recorded>" in journal  # the URL, not its query
    runs = sorted((state / "runs").glob("run-*"))
    assert runs and all(list(r.glob("artifacts/*/job_events/*.json")) for r in runs), runs
    assert len(runs) == KEEP_RUNS  # the deploy and the status made more runs than that
    for run in runs:
        assert run.stat().st_mode & 0o777 == 0o700
        assert (run / "artifacts").is_dir() and not (run / "env" / "extravars").exists()
    # The nodes' own files hold the application's environment, and the config holds the extra
    # variables where the operator put them: neither is deployer's to clean.
    nodes_dir, config_file = the_lab.dir / "nodes", the_lab.config_path
    leaked = _scan_files(the_lab.dir, planted, skip=lambda p: p.is_relative_to(nodes_dir) or p == config_file)
    assert leaked == {}
