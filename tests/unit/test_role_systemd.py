"""The deployer_release role's systemd path, run by real Ansible through its own task files
(preflight, activate and, when the restart fails, revert) on this machine. systemd itself
cannot run here (no service manager as PID 1): systemctl is a script that records what it was
asked, which is all the role does with it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET = "tok-7c1e9b0d-planted"

SYSTEMCTL = """#!/bin/sh
# Records every call; is-enabled answers from a marker that enable creates; a restart fails
# when the environment file names the version written in the marker fail-version.
echo "$*" >> "$SYSTEMCTL_LOG"
case "$1" in
  is-enabled) [ -e "$SYSTEMCTL_STATE/enabled" ] ;;
  enable) touch "$SYSTEMCTL_STATE/enabled" ;;
  show) echo NeedDaemonReload=no ;;
  restart) [ ! -e "$SYSTEMCTL_STATE/fail-version" ] ||
           ! grep -qx "APP_VERSION=\\"$(cat "$SYSTEMCTL_STATE/fail-version")\\"" "$SYSTEMCTL_ENV_FILE" ;;
esac
"""

PLAYBOOK = """- hosts: localhost
  gather_facts: false
  tasks:
    - name: Check, then activate, the release
      ansible.builtin.include_role:
        name: deployer_release
        tasks_from: "{{ item }}"
      loop: [facts, preflight, activate]
"""

# render.yml ahead of the activation, then the activation: the switch must write what was
# rendered ahead (the node is out of the load balancer by then), not render it again.
PLAYBOOK_RENDERED_AHEAD = """- hosts: localhost
  gather_facts: false
  tasks:
    - name: Render the release's files while the node serves
      ansible.builtin.include_role:
        name: deployer_release
        tasks_from: render

    - name: Activate the release
      ansible.builtin.include_role:
        name: deployer_release
        tasks_from: activate
"""


def stage(base: Path, version: str) -> None:
    release = base / "releases" / version
    (release / "bin").mkdir(parents=True)
    (release / "bin" / "run").write_text("#!/bin/sh\n")
    (release / ".deployer-release.json").write_text(json.dumps({"version": version}))


@pytest.fixture
def node(tmp_path: Path) -> Path:
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    fake.write_text(SYSTEMCTL)
    fake.chmod(0o755)
    (tmp_path / "systemctl").mkdir()
    for version in ("1.0.0", "1.1.0"):
        stage(tmp_path / "opt" / "hello", version)
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    return tmp_path


def activate(
    node: Path, version: str, playbook: str = "play.yml", **more: object
) -> subprocess.CompletedProcess[str]:
    variables = {
        "deployer_release_app": "hello",
        "deployer_release_version": version,
        "deployer_release_supervisor": "systemd",
        "deployer_release_base_dir": str(node / "opt" / "hello"),
        "deployer_release_systemd_unit_dir": str(node / "system"),
        "deployer_release_systemd_environment_file": str(node / "etc" / "hello.env"),
        "deployer_release_log_dir": str(node / "log"),
        "deployer_release_state_dir": str(node / "state"),
        "deployer_release_run_user": "nobody",
        "deployer_release_run_group": "nogroup",
        "deployer_release_environment": {"HELLO_TOKEN": SECRET},
        "ansible_python_interpreter": sys.executable,
        **more,
    }
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-v", str(node / playbook),
         "-e", json.dumps(variables)],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "PATH": f"{node / 'bin'}:{BIN}:{os.environ.get('PATH', '')}",
             "ANSIBLE_CONFIG": str(ROOT / "playbooks" / "ansible.cfg"),
             "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
             "SYSTEMCTL_LOG": str(node / "systemctl.log"), "SYSTEMCTL_STATE": str(node / "systemctl"),
             "SYSTEMCTL_ENV_FILE": str(node / "etc" / "hello.env")},
    )


def environment_of(node: Path) -> dict[str, str]:
    lines = (node / "etc" / "hello.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_systemd_activation_keeps_the_environment_out_of_the_unit_and_goes_back_on_failure(
    node: Path,
) -> None:
    done = activate(node, "1.0.0")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    unit = node / "system" / "hello.service"
    environment = node / "etc" / "hello.env"
    # The unit names the environment file, readable by all as systemd expects; the file holding
    # the values is root's alone.
    assert f"EnvironmentFile={environment}" in unit.read_text().splitlines()
    assert SECRET not in unit.read_text()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert stat.S_IMODE(environment.stat().st_mode) == 0o600
    assert environment_of(node)["HELLO_TOKEN"] == f'"{SECRET}"'
    assert environment_of(node)["APP_VERSION"] == '"1.0.0"'
    assert (node / "systemctl.log").read_text().splitlines() == [
        "is-enabled --quiet hello.service", "daemon-reload", "enable hello.service", "restart hello.service",
    ]
    assert SECRET not in done.stdout + done.stderr

    # The next release fails to start: the role goes back, environment file included.
    calls_before = len((node / "systemctl.log").read_text().splitlines())
    (node / "systemctl" / "fail-version").write_text("1.1.0")
    failed = activate(node, "1.1.0")
    assert failed.returncode != 0
    assert "it went back to release 1.0.0" in failed.stdout
    assert os.readlink(node / "opt" / "hello" / "current") == "releases/1.0.0"
    assert environment_of(node)["APP_VERSION"] == '"1.0.0"'
    calls = (node / "systemctl.log").read_text().splitlines()[calls_before:]
    assert calls.count("restart hello.service") == 2 and calls[-1] == "restart hello.service"
    assert SECRET not in failed.stdout + failed.stderr


def test_the_activation_writes_the_files_rendered_ahead_without_rendering_them_again(node: Path) -> None:
    # The role's templates, each noting in a log when it is rendered.
    templates = ROOT / "roles" / "deployer_release" / "templates"
    renders = node / "renders.log"
    copies = {name: node / name for name in ("systemd.service.j2", "systemd.env.j2")}
    for name, copy in copies.items():
        note = f"{{{{ lookup('ansible.builtin.pipe', 'echo {name} >> {renders}') }}}}"
        copy.write_text((templates / name).read_text() + f"# {note}\n")
    (node / "ahead.yml").write_text(PLAYBOOK_RENDERED_AHEAD)
    service_files = {
        "systemd": {
            "template": str(copies["systemd.service.j2"]),
            "dest": str(node / "system" / "hello.service"),
            "environment_template": str(copies["systemd.env.j2"]),
            "environment_dest": str(node / "etc" / "hello.env"),
        }
    }
    done = activate(node, "1.1.0", "ahead.yml", __deployer_release_service_files=service_files)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # Each rendered once, ahead; the switch wrote what that gave.
    assert sorted(renders.read_text().split()) == ["systemd.env.j2", "systemd.service.j2"]
    assert environment_of(node)["APP_VERSION"] == '"1.1.0"'
    assert environment_of(node)["HELLO_TOKEN"] == f'"{SECRET}"'
    assert f"EnvironmentFile={node / 'etc' / 'hello.env'}" in (node / "system" / "hello.service").read_text()
    assert os.readlink(node / "opt" / "hello" / "current") == "releases/1.1.0"
