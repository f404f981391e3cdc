"""The program-file templates of deployer_release, rendered by real Ansible; the rendered files
read back by supervisord's own parser and checked by the real ``systemd-analyze verify``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLE = ROOT / "roles" / "deployer_release"
TEMPLATES = ROLE / "templates"
SYSTEM_PYTHON = "/usr/bin/python3"

# Reads a program file on stdin with supervisord's own parser (Debian's supervisor package, on
# the system Python) and prints what supervisord would run.
SUPERVISOR_PARSE = """
import json, sys
from supervisor.options import ServerOptions, UnhosedConfigParser
options = ServerOptions()
options.here = "/tmp"
parser = UnhosedConfigParser()
parser.expansions = options.environ_expansions
parser.read_string(sys.stdin.read())
config = options.process_groups_from_parser(parser)[0].process_configs[0]
print(json.dumps({"name": config.name, "command": config.command, "uid": config.uid,
                  "directory": config.directory, "environment": config.environment, "umask": config.umask,
                  "stdout_logfile": config.stdout_logfile}))
"""


def render_result(tmp_path: Path, template: str, **extra: object) -> tuple[str | None, str]:
    """(the rendered file or None when Ansible refused it, Ansible's output)."""
    out = tmp_path / "rendered"
    out.unlink(missing_ok=True)
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        f"""- hosts: localhost
  gather_facts: false
  vars_files: [{ROLE}/defaults/main.yml]
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
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook),
         "-e", json.dumps(variables)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_FILTER_PLUGINS": str(ROLE / "filter_plugins")},
    )
    if done.returncode != 0:
        return None, done.stdout + done.stderr
    return out.read_text(), done.stdout


def render(tmp_path: Path, template: str, **extra: object) -> str:
    text, output = render_result(tmp_path, template, **extra)
    assert text is not None, output
    return text


def refused(tmp_path: Path, template: str, **extra: object) -> str:
    text, output = render_result(tmp_path, template, **extra)
    assert text is None, f"rendered although it should be refused:\n{text}"
    return " ".join(output.split())


def supervisor_reads(program: str) -> dict[str, Any]:
    if not Path(SYSTEM_PYTHON).is_file():
        pytest.skip("no system Python with Debian's supervisor package")
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", SUPERVISOR_PARSE], input=program, capture_output=True, text=True,
        timeout=60, check=False,
    )
    if "No module named 'supervisor'" in done.stderr:
        pytest.skip("Debian's supervisor package is not installed")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_supervisord_program_file_has_the_expected_format(tmp_path: Path) -> None:
    assert render(tmp_path, "supervisord.conf.j2").rstrip("\n") == "\n".join(
        [
            "[program:hello]",
            "command=setpriv --no-new-privs /opt/hello/current/bin/run",
            "directory=/opt/hello/current",
            'environment=HOST="127.0.1.3",PORT="8000",APP_VERSION="1.1.0"',
            "user=hello",
            "umask=027",
            "autostart=true",
            "autorestart=true",
            "startsecs=0",
            "stopsignal=TERM",
            "stopwaitsecs=10",
            "stdout_logfile=/var/log/hello/app.log",
            "redirect_stderr=true",
        ]
    )


def test_systemd_unit_has_the_same_command_and_user_and_names_its_environment_file(tmp_path: Path) -> None:
    unit = render(tmp_path, "systemd.service.j2", deployer_release_environment={"TOKEN": "s3cret"})
    lines = unit.splitlines()
    assert "ExecStart=/opt/hello/current/bin/run" in lines
    assert "WorkingDirectory=/opt/hello/current" in lines
    assert "User=hello" in lines and "Group=hello" in lines
    assert "StandardOutput=append:/var/log/hello/app.log" in lines
    # The environment is not in the unit (systemd shows Environment= to every local user).
    assert "EnvironmentFile=/etc/deployer/hello.env" in lines
    assert not [line for line in lines if line.startswith("Environment=")]
    assert "s3cret" not in unit
    environment = render(tmp_path, "systemd.env.j2", deployer_release_environment={"TOKEN": "s3cret"})
    assert [line for line in environment.splitlines() if not line.startswith("#")] == [
        'HOST="127.0.1.3"', 'PORT="8000"', 'APP_VERSION="1.1.0"', 'TOKEN="s3cret"',
    ]


def test_systemd_unit_is_sandboxed_with_its_own_directories_writable(tmp_path: Path) -> None:
    lines = render(tmp_path, "systemd.service.j2").splitlines()
    for setting in ("NoNewPrivileges=yes", "UMask=027", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateTmp=yes", "RestrictSUIDSGID=yes"):
        assert setting in lines
    assert "ReadWritePaths=-/var/log/hello -/var/lib/hello" in lines


def test_systemd_hardening_can_be_loosened_setting_by_setting(tmp_path: Path) -> None:
    lines = render(
        tmp_path, "systemd.service.j2", deployer_release_no_new_privileges=False,
        deployer_release_systemd_hardening={"ProtectSystem": "full", "ProtectHome": None,
                                            "ReadOnlyPaths": ["/etc", "/usr"]},
    ).splitlines()
    assert "NoNewPrivileges=no" in lines
    assert "ProtectSystem=full" in lines and "ReadOnlyPaths=/etc /usr" in lines
    assert not [line for line in lines if line.startswith(("ProtectHome=", "ReadWritePaths=",
                                                            "PrivateTmp="))]


def test_hardening_settings_that_cannot_be_written_are_refused_by_name(tmp_path: Path) -> None:
    output = refused(tmp_path, "systemd.service.j2",
                     deployer_release_systemd_hardening={"Bad Name\nUser": "root"})
    assert "deployer_release_systemd_hardening.Bad Name" in output
    output = refused(tmp_path, "supervisord.conf.j2", deployer_release_umask="0x22")
    assert "deployer_release_umask" in output and "three octal digits" in output


def test_supervisord_runs_the_command_without_new_privileges(tmp_path: Path) -> None:
    # supervisord checks that the user and the log file's directory exist
    nobody = {"deployer_release_run_user": "nobody", "deployer_release_log_dir": str(tmp_path)}
    parsed = supervisor_reads(render(tmp_path, "supervisord.conf.j2", **nobody))
    assert parsed["command"].split() == ["setpriv", "--no-new-privs", "/opt/hello/current/bin/run"]
    plain = supervisor_reads(render(tmp_path, "supervisord.conf.j2", **nobody,
                                    deployer_release_no_new_privileges=False))
    assert plain["command"] == "/opt/hello/current/bin/run"


TRICKY = {
    "PERCENT": "100% %(here)s %b",
    "QUOTES": 'say "hi" twice',
    "APOSTROPHE": "it's",
    "COMMA": "a,b=c",
    "BACKSLASH": "C:\\dir\\",
    "DOLLAR": "$HOME ${PATH}",
}


def test_supervisord_reads_back_exactly_the_values_given(tmp_path: Path) -> None:
    program = render(
        tmp_path, "supervisord.conf.j2", deployer_release_environment=TRICKY,
        deployer_release_run_user="nobody", deployer_release_log_dir=str(tmp_path),
        deployer_release_base_dir="/opt/my app",
    )
    read = supervisor_reads(program)
    assert read["environment"] == {
        "HOST": "127.0.1.3", "PORT": "8000", "APP_VERSION": "1.1.0", **TRICKY,
    }
    assert read["name"] == "hello" and read["uid"] == 65534
    # The path is one word when supervisord splits the command.
    assert read["command"] == "setpriv --no-new-privs '/opt/my app/current/bin/run'"
    assert read["umask"] == 0o027
    assert read["directory"] == "/opt/my app/current"
    assert read["stdout_logfile"] == f"{tmp_path}/app.log"


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ({"deployer_release_environment": {"X": "a\nautorestart=false"}}, "deployer_release_environment.X"),
        ({"deployer_release_environment": {"X": "a ;b"}}, "deployer_release_environment.X"),
        ({"deployer_release_environment": {"X": "both ' and \""}}, "deployer_release_environment.X"),
        ({"deployer_release_environment": {"X": '"quoted"'}}, "deployer_release_environment.X"),
        ({"deployer_release_environment": {"A B": "1"}}, "deployer_release_environment.A B"),
        ({"deployer_release_run_user": "app\nuser=root"}, "deployer_release_run_user"),
        ({"deployer_release_log_dir": "/var/log/%(here)s"}, "deployer_release_log_dir"),
        ({"deployer_release_base_dir": "/opt/x\n[program:evil]"}, "deployer_release_base_dir"),
    ],
)
def test_supervisord_values_that_cannot_be_written_are_refused_by_name(
    tmp_path: Path, extra: dict[str, object], names: str
) -> None:
    message = refused(tmp_path, "supervisord.conf.j2", **extra)
    assert names in message and "cannot be written into" in message


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ({"deployer_release_run_group": "staff\nUser=root"}, "deployer_release_run_group"),
        ({"deployer_release_log_dir": "/var/log/x\nExecStartPre=/bin/evil"}, "deployer_release_log_dir"),
        ({"deployer_release_entry_point": "bin/run\nUser=root"}, "deployer_release_entry_point"),
    ],
)
def test_systemd_values_that_cannot_be_written_are_refused_by_name(
    tmp_path: Path, extra: dict[str, object], names: str
) -> None:
    assert names in refused(tmp_path, "systemd.service.j2", **extra)


@pytest.mark.parametrize(
    ("template", "environment"),
    [
        ("systemd.env.j2", {"A B": "s3cret-value"}),
        ("systemd.env.j2", {"X": "s3cret-value\0"}),
        ("systemd.env.j2", {"X": "s3cret-value\ufeff"}),
        ("supervisord.conf.j2", {"X": "s3cret-value\nautorestart=false"}),
        ("supervisord.conf.j2", {"X": "s3cret-value ;b"}),
        ("supervisord.conf.j2", {"X": "'s3cret-value'"}),
    ],
)
def test_an_environment_value_refused_is_named_not_shown(
    tmp_path: Path, template: str, environment: dict[str, str]
) -> None:
    message = refused(tmp_path, template, deployer_release_environment=environment)
    assert f"deployer_release_environment.{next(iter(environment))}" in message
    assert "cannot be written into" in message
    assert "s3cret-value" not in message.replace("'A B'", "")


def test_systemd_environment_file_escapes_quotes_backslashes_dollars_and_backticks(tmp_path: Path) -> None:
    environment = render(
        tmp_path, "systemd.env.j2",
        deployer_release_environment={"A": 'x"y\\z', "B": "line1\nUser=root", "C": "%b $HOME `id`"},
    )
    lines = environment.splitlines()
    assert 'A="x\\"y\\\\z"' in lines
    assert lines[-3:-1] == ['B="line1', 'User=root"']  # one value spanning two lines, inside its quotes
    assert 'C="%b \\$HOME \\`id\\`"' in lines  # no specifiers in an environment file: % stays


def environment_d_generator() -> Path:
    """systemd's environment.d generator: it reads files with the parser EnvironmentFile= uses
    (systemd's env-file parser) and prints what it read."""
    for directory in ("/usr/lib/systemd", "/lib/systemd"):
        generator = Path(directory) / "user-environment-generators" / "30-systemd-environment-d-generator"
        if generator.is_file():
            return generator
    pytest.skip("systemd's environment.d generator is not installed (apt-get install systemd)")


def _unquote_generator_value(text: str) -> str:
    """A value as the generator prints it: plain, or double-quoted with C escapes."""
    if not (text.startswith('"') and text.endswith('"')):
        return text
    escapes = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
    out, chars = [], iter(text[1:-1])
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars)
        if following == "x":
            out.append(chr(int(next(chars) + next(chars), 16)))
        else:
            out.append(escapes.get(following, following))
    return "".join(out)


def test_systemd_reads_the_environment_file_back_exactly(tmp_path: Path) -> None:
    # Every value but those with '$' (environment.d files, unlike EnvironmentFile=, expand
    # variables after parsing).
    values = {k: v for k, v in TRICKY.items() if "$" not in v} | {
        "NEWLINE": "a\nUser=root", "TAB": "a\tb", "BELL": "\a", "BACKTICK": "`id`",
        "TRAILING_BACKSLASH": "end\\", "UNICODE": "caf\u00e9 \u2603", "SPACES": "  padded  ",
    }
    environment = render(tmp_path, "systemd.env.j2", deployer_release_environment=values)
    config = tmp_path / "config" / "environment.d"
    config.mkdir(parents=True)
    (config / "50-hello.conf").write_text(environment)
    done = subprocess.run(
        [str(environment_d_generator())], capture_output=True, text=True, timeout=60, check=False,
        env={"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CONFIG_DIRS": str(tmp_path / "none")},
    )
    assert done.returncode == 0, done.stderr
    read = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition("=")
        read[name] = _unquote_generator_value(value)
    expected = {"HOST": "127.0.1.3", "PORT": "8000", "APP_VERSION": "1.1.0", **values}
    assert {name: read.get(name) for name in expected} == expected


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return binary


@pytest.mark.parametrize("run_user", ["hello", "root"])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path, run_user: str) -> None:
    binary = systemd_analyze()
    # ExecStart must name an existing executable, under a base directory that needs quoting.
    base = tmp_path / "opt" / "my app%b"
    (base / "current" / "bin").mkdir(parents=True)
    run = base / "current" / "bin" / "run"
    run.write_text("#!/bin/sh\nexit 0\n")
    run.chmod(0o755)
    unit = render(
        tmp_path, "systemd.service.j2", deployer_release_base_dir=str(base),
        deployer_release_log_dir=str(tmp_path / "log"), deployer_release_run_user=run_user,
        deployer_release_environment=TRICKY | {"NEWLINE": "a\nb", "TAB": "a\tb", "BELL": "\a"},
    )
    path = tmp_path / "hello.service"
    path.write_text(unit)
    done = subprocess.run(
        [binary, "verify", "--man=no", "--recursive-errors=no", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if done.returncode != 0 and "Failed to" in done.stderr and "hello.service" not in done.stderr:
        pytest.skip(f"systemd-analyze cannot run in this sandbox: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    assert 'ExecStart="' + str(base).replace("%", "%%") + '/current/bin/run"' in unit.splitlines()


def test_an_injected_line_would_be_seen_by_systemd_analyze(tmp_path: Path) -> None:
    # The check above can fail: the same unit with a raw newline in a value is an error.
    binary = systemd_analyze()
    run = tmp_path / "run"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    path = tmp_path / "raw.service"
    path.write_text(f'[Service]\nExecStart={run}\nEnvironment="A=x\nBogus=1"\n')
    done = subprocess.run(
        [binary, "verify", "--man=no", "--recursive-errors=no", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode != 0 or done.stderr.strip(), "systemd-analyze saw nothing wrong"
