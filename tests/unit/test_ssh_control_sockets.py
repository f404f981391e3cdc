"""Where SSH control sockets live (per user, per state directory, per run; short enough for a
unix socket), the inventory's SSH settings coming first, and the host-key hint."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer import PrerequisiteError
from deployer.adapters.runner import AnsibleRunner, RunRequest, close_runner
from deployer.adapters.ssh_masters import (
    MAX_SOCKET_PATH,
    SshMasters,
    control_root,
    host_key_hint,
    is_host_key_failure,
    known_hosts_file,
)

# Ansible names a socket with 10 characters; ssh adds ".<16 characters>" while creating it.
LONGEST_SOCKET_NAME = 10 + 17


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path (pytest's own are too long for a unix socket's)."""
    path = Path(tempfile.mkdtemp(prefix="dt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sockets_live_under_the_state_directory_when_its_path_is_short(short_tmp: Path) -> None:
    state = short_tmp / "state"
    masters = SshMasters(state)
    assert masters.root == state / "ssh"
    run_dir = masters.directory
    assert run_dir.parent == state / "ssh"
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "ssh").st_mode) == 0o700
    assert len(os.fsencode(f"{run_dir}/")) + LONGEST_SOCKET_NAME <= MAX_SOCKET_PATH
    # Each run (each deployer command) has its own directory: closing one never touches another.
    other = SshMasters(state)
    assert other.directory != run_dir and other.directory.parent == run_dir.parent
    masters.close()
    assert not run_dir.exists() and other.directory.is_dir()
    other.close()


def test_a_long_state_directory_gets_a_short_private_directory_per_user(
    tmp_path: Path, short_tmp: Path
) -> None:
    state = tmp_path / ("a-rather-long-directory-name-" * 4) / "state"
    tmp = short_tmp
    root = control_root(state, tmp=tmp)
    assert root.parent == tmp / f"deployer-{os.geteuid()}"
    assert root == control_root(state, tmp=tmp)  # stable for one state directory
    assert root != control_root(tmp_path / ("b-rather-long-directory-name-" * 4), tmp=tmp)
    masters = SshMasters(state, tmp=tmp)
    run_dir = masters.directory
    assert len(os.fsencode(f"{run_dir}/")) + LONGEST_SOCKET_NAME <= MAX_SOCKET_PATH
    for d in (root.parent, root, run_dir):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    # A socket really fits there (with ssh's temporary suffix).
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(run_dir / ("x" * LONGEST_SOCKET_NAME)))
    finally:
        sock.close()
    masters.close()
    assert not run_dir.exists()


def test_a_shared_directory_left_open_to_others_is_made_private(
    tmp_path: Path, short_tmp: Path
) -> None:
    state = tmp_path / ("a-rather-long-directory-name-" * 4)
    tmp = short_tmp
    base = tmp / f"deployer-{os.geteuid()}"
    base.mkdir(parents=True)
    base.chmod(0o777)
    SshMasters(state, tmp=tmp).directory  # noqa: B018 (creates it)
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create another user's directory")
def test_another_users_directory_is_refused(tmp_path: Path, short_tmp: Path) -> None:
    state = tmp_path / ("a-rather-long-directory-name-" * 4)
    tmp = short_tmp
    base = tmp / f"deployer-{os.geteuid()}"
    base.mkdir(parents=True)
    os.chown(base, 65534, 65534)
    with pytest.raises(PrerequisiteError, match="not a directory owned by this user"):
        SshMasters(state, tmp=tmp).directory  # noqa: B018


def test_the_runner_lets_the_inventory_settings_win(short_tmp: Path) -> None:
    tmp_path = short_tmp
    runner = AnsibleRunner(artifacts_root=tmp_path / "state" / "runs")
    assert not runner.ssh.opened  # nothing is created until a playbook runs
    env = runner._envvars(RunRequest("probe.yml", tmp_path / "hosts.yml", [], {}))
    # Nothing goes before the inventory's ansible_ssh_common_args (ssh keeps the first value).
    assert env["ANSIBLE_SSH_ARGS"] == ""
    assert "ControlPersist=" in env["ANSIBLE_SSH_EXTRA_ARGS"]
    cp_dir = Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"])
    assert cp_dir.parent == tmp_path / "state" / "ssh" and cp_dir.is_dir()
    # Later runs of the same runner (the batches of one deployment) share the masters.
    again = runner._envvars(RunRequest("deploy_batch.yml", tmp_path / "hosts.yml", [], {}))
    assert again["ANSIBLE_SSH_CONTROL_PATH_DIR"] == str(cp_dir)
    close_runner(runner)
    assert not cp_dir.exists()
    close_runner(runner)  # twice is fine


def test_the_known_hosts_file_and_the_fix_for_a_host_key_failure() -> None:
    hv = {"ansible_ssh_common_args": "-o UserKnownHostsFile=/srv/kh -o StrictHostKeyChecking=yes"}
    assert known_hosts_file(hv) == "/srv/kh"
    assert known_hosts_file({"ansible_ssh_extra_args": "-o 'UserKnownHostsFile /k2'"}) == "/k2"
    assert known_hosts_file({"ansible_ssh_args": "-oUserKnownHostsFile=/k3"}) == "/k3"
    assert known_hosts_file({"ansible_ssh_common_args": "-o ControlPersist=60s"}) is None
    assert is_host_key_failure("Failed to connect to the host via ssh: Host key verification failed.")
    assert not is_host_key_failure("Failed to connect to the host via ssh: Connection refused")
    hint = host_key_hint("10.0.1.11", 2222, "/srv/kh")
    assert "ssh-keyscan -p 2222 10.0.1.11 >> /srv/kh" in hint
    assert "ssh-keygen -R [10.0.1.11]:2222 -f /srv/kh" in hint
    assert "~/.ssh/known_hosts" in host_key_hint("web1", None, None)
