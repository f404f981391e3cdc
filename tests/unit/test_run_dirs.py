"""Run directories: scrubbed of secrets when a run ends, rotated to the newest few, never removed
while a run uses them; and one real ansible-runner run through the AnsibleRunner, checked file
by file."""

from __future__ import annotations

import json
import os
import stat
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from deployer.adapters.redaction import REDACTED, Redactor
from deployer.adapters.run_dirs import RunDirectory, remove_in_background, rotate, scrub
from deployer.adapters.runner import AnsibleRunner, RunnerEvent, RunRequest, close_runner

SECRET_ENV = "planted-aws-" + "0" * 20
SECRET_VAR = "planted-dsn-" + "1" * 20
SIGNATURE = "planted-signature-" + "2" * 20
URL = f"http://127.0.0.1:1/hello.tar.gz?X-Amz-Signature={SIGNATURE}"


def fake_run(root: Path, *, age: float = 0.0, scrubbed: bool = True) -> Path:
    """A run directory laid out as ansible-runner leaves it, ``age`` seconds old."""
    run = RunDirectory.create(root)
    path = run.path
    run.close()
    artifacts = path / "artifacts" / "ident"
    (artifacts / "job_events").mkdir(parents=True)
    (artifacts / "fact_cache").mkdir()
    (path / "env").mkdir()
    env = {"PATH": "/usr/bin", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": SECRET_ENV,
           "ANSIBLE_PIPELINING": "True", "ANSIBLE_VAULT_PASSWORD": SECRET_ENV,
           "ANSIBLE_HOST_KEY_CHECKING": "True",
           "ANSIBLE_SSH_EXTRA_ARGS": f"-o X={SECRET_ENV}", "LANG": "C.UTF-8"}
    (artifacts / "command").write_text(json.dumps(
        {"command": ["ansible-playbook", "-e", "@env/extravars"], "cwd": "/tmp", "env": env}))
    extravars = {"deployer_release_url": URL, "hello_dsn": SECRET_VAR}
    (path / "env" / "extravars").write_text(json.dumps(extravars))
    (path / "env" / "envvars").write_text(json.dumps({"PATH": "/usr/bin"}))
    (artifacts / "job_events" / "1-a.json").write_text(json.dumps({"stdout": f"msg {SECRET_VAR}"}))
    (artifacts / "job_events" / "2-b.json").write_text(json.dumps({"stdout": "clean"}))
    (artifacts / "job_events" / "c-partial.json").write_text(json.dumps({"res": URL}))
    (artifacts / "stdout").write_text(f"fatal: cannot download {URL}\n")
    (artifacts / "fact_cache" / "node1").write_text(json.dumps({"k": SECRET_VAR}))
    (artifacts / "rc").write_text("2")
    (artifacts / "stderr").write_text("")
    (artifacts / "stderr").chmod(0o644)
    if scrubbed:
        (path / "env" / "extravars").unlink()
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def everything(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def test_a_scrubbed_run_keeps_its_record_but_no_secret(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "runs", scrubbed=False)
    assert SECRET_VAR.encode() in everything(run)
    redactor = Redactor({SECRET_ENV, SECRET_VAR, SIGNATURE})
    scrub(run, redactor, recorded_env=("PATH", "ANSIBLE_PIPELINING"))
    data = everything(run)
    for secret in (SECRET_ENV, SECRET_VAR, SIGNATURE):
        assert secret.encode() not in data
    assert not (run / "env" / "extravars").exists()
    assert not list(run.rglob("*-partial.json"))
    command = json.loads((run / "artifacts" / "ident" / "command").read_text())
    assert command["command"] == ["ansible-playbook", "-e", "@env/extravars"]
    assert command["env"] == {
        "PATH": "/usr/bin", "ANSIBLE_PIPELINING": "True", "ANSIBLE_VAULT_PASSWORD": REDACTED,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_EXTRA_ARGS": f"-o X={REDACTED}",
    }  # HOME, LANG and the AWS key: the controller's, not recorded
    assert json.loads((run / "artifacts" / "ident" / "job_events" / "1-a.json").read_text()) == {
        "stdout": f"msg {REDACTED}"}
    assert (run / "artifacts" / "ident" / "stdout").read_text() == (
        f"fatal: cannot download http://127.0.0.1:1/hello.tar.gz?X-Amz-Signature={REDACTED}\n")
    assert (run / "artifacts" / "ident" / "rc").read_text() == "2"
    for p in run.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p


def test_rotation_keeps_the_newest_and_never_a_run_in_use(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    old = [fake_run(root, age=100 + i) for i in range(4)]  # old[0] is the newest
    newest = fake_run(root, age=1)
    (root / "notes.txt").write_text("not a run")
    (root / "other").mkdir()
    in_use = RunDirectory.create(root)  # a run of another deployer, still going
    os.utime(in_use.path, (time.time() - 1000, time.time() - 1000))
    aside = rotate(root, 2)
    assert sorted(root.glob("run-*")) == sorted([newest, old[0], in_use.path])
    assert sorted(p.name for p in aside) == sorted(f".removing-{p.name}" for p in old[1:])
    assert all(p.parent == root and p.is_dir() for p in aside)  # moved aside, the caller deletes
    assert (root / "notes.txt").exists() and (root / "other").is_dir()
    in_use.close()
    again = rotate(root, 2)  # what is still aside is handed out again, with the newly old
    assert sorted(root.glob("run-*")) == sorted([newest, old[0]])
    assert set(aside) < set(again) and len(again) == len(aside) + 1
    remove_in_background(again)
    deadline = time.monotonic() + 10
    while any(p.exists() for p in again) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(p.exists() for p in again)
    rotate(root, 0)
    assert list(root.glob("run-*")) == []
    assert rotate(tmp_path / "nowhere", 3) == []  # no runs yet: nothing to do


def test_rotation_scrubs_a_kept_run_nobody_scrubbed(tmp_path: Path) -> None:
    """A run that died (or a directory of an older deployer) still holds its variables file and
    the controller's environment: the next rotation finds the secrets in them and scrubs it."""
    root = tmp_path / "runs"
    left = fake_run(root, age=50, scrubbed=False)
    running = RunDirectory.create(root)
    (running.path / "env").mkdir()
    (running.path / "env" / "extravars").write_text(json.dumps({"hello_dsn": SECRET_VAR}))
    rotate(root, 5, secret_vars={"hello_dsn"})
    data = everything(left)
    for secret in (SECRET_ENV, SECRET_VAR, SIGNATURE):
        assert secret.encode() not in data, secret
    assert not (left / "env" / "extravars").exists()
    assert (running.path / "env" / "extravars").exists()  # in use: left alone
    running.close()


def test_run_directories_are_private(tmp_path: Path) -> None:
    with RunDirectory.create(tmp_path / "state" / "runs") as run:
        assert stat.S_IMODE(run.path.stat().st_mode) == 0o700
        assert stat.S_IMODE(run.path.parent.stat().st_mode) == 0o700


PLAYBOOK = """\
- name: Use the secrets
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Show a variable that holds a secret
      ansible.builtin.debug:
        msg: >-
          dsn={{ hello_dsn }} url={{ deployer_release_url }}
          env={{ lookup('env', 'AWS_SECRET_ACCESS_KEY') }}
    - name: Fail saying the secret
      ansible.builtin.fail:
        msg: "cannot use {{ hello_dsn }}"
"""


@pytest.fixture
def content(tmp_path: Path) -> Path:
    root = tmp_path / "content"
    (root / "playbooks").mkdir(parents=True)
    (root / "roles").mkdir()
    (root / "playbooks" / "secrets.yml").write_text(textwrap.dedent(PLAYBOOK))
    (root / "hosts.yml").write_text("all:\n  hosts:\n    localhost: {ansible_python_interpreter: python3}\n")
    return root


def test_a_real_run_leaves_no_secret_in_its_events_or_files(
    tmp_path: Path, content: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ENV)
    root = tmp_path / "state" / "runs"
    earlier = [fake_run(root, age=100 + i, scrubbed=False) for i in range(2)]
    runner = AnsibleRunner(content=content, artifacts_root=root, keep_runs=2, secret_vars={"hello_dsn"})
    events: list[RunnerEvent] = []
    try:
        result = runner.run(
            RunRequest("secrets.yml", content / "hosts.yml", ["localhost"],
                       {"hello_dsn": SECRET_VAR, "deployer_release_url": URL}),
            events.append, lambda: False,
        )
    finally:
        close_runner(runner)
    assert result.status == "failed" and result.failed_hosts == {"localhost"}
    [failed] = [e for e in events if e.kind == "failed"]
    assert failed.message == f"cannot use {REDACTED}"
    everything_heard: Any = [e.to_dict() for e in events]
    assert SECRET_VAR not in json.dumps(everything_heard)
    # This run and the newest earlier one are kept; the earlier one was scrubbed on the way.
    runs = sorted(root.glob("run-*"))
    assert len(runs) == 2 and earlier[0] in runs and earlier[1] not in runs
    [this] = [r for r in runs if r != earlier[0]]
    assert list(this.glob("artifacts/*/job_events/*.json")) and list(this.glob("artifacts/*/stdout"))
    assert b"dsn=" + REDACTED.encode() in everything(this)  # the events are there, redacted
    for run in runs:
        data = everything(run)
        for secret in (SECRET_ENV, SECRET_VAR, SIGNATURE):
            assert secret.encode() not in data, (run, secret)
        assert not (run / "env" / "extravars").exists()


def test_without_keeping_runs_nothing_is_left(tmp_path: Path, content: Path) -> None:
    root = tmp_path / "state" / "runs"
    runner = AnsibleRunner(content=content, artifacts_root=root, keep_runs=0)
    try:
        runner.run(RunRequest("secrets.yml", content / "hosts.yml", ["localhost"],
                              {"hello_dsn": "x", "deployer_release_url": URL}),
                   lambda e: None, lambda: False)
    finally:
        close_runner(runner)
    assert list(root.glob("run-*")) == []
