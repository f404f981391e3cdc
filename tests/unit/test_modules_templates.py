"""The program-file templates of deployer_release, rendered by real Ansible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEMPLATES = ROOT / "roles" / "deployer_release" / "templates"


def render(tmp_path: Path, template: str, **extra: object) -> str:
    out = tmp_path / "rendered"
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        f"""- hosts: localhost
  gather_facts: false
  vars_files: [{ROOT}/roles/deployer_release/defaults/main.yml]
  tasks:
    - ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.template', '{TEMPLATES}/{template}') }}}}"
        dest: {out}
        mode: "0644"
"""
    )
    variables = {
        "deployer_release_app": "hello",
        "deployer_release_base_dir": "/opt/hello",
        "deployer_release_app_host": "127.0.1.3",
        "__deployer_release_program_version": "1.1.0",
        "ansible_python_interpreter": sys.executable,
        **extra,
    }
    subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            str(playbook),
            "-e",
            json.dumps(variables),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
        timeout=120,
    )
    return out.read_text()


def test_supervisord_program_file_has_the_expected_format(tmp_path: Path) -> None:
    assert render(tmp_path, "supervisord.conf.j2").rstrip("\n") == "\n".join(
        [
            "[program:hello]",
            "command=/opt/hello/current/bin/run",
            "directory=/opt/hello/current",
            'environment=HOST="127.0.1.3",PORT="8000",APP_VERSION="1.1.0"',
            "autostart=true",
            "autorestart=true",
            "startsecs=0",
            "stopsignal=TERM",
            "stopwaitsecs=10",
            "stdout_logfile=/var/log/hello/app.log",
            "redirect_stderr=true",
        ]
    )


def test_systemd_unit_has_the_same_command_and_environment(tmp_path: Path) -> None:
    unit = render(tmp_path, "systemd.service.j2", deployer_release_environment={"MODE": "a%b"})
    lines = unit.splitlines()
    assert "ExecStart=/opt/hello/current/bin/run" in lines
    assert "WorkingDirectory=/opt/hello/current" in lines
    for pair in ("HOST=127.0.1.3", "PORT=8000", "APP_VERSION=1.1.0", "MODE=a%b"):
        assert f'Environment="{pair}"' in lines
    assert "StandardOutput=append:/var/log/hello/app.log" in lines
